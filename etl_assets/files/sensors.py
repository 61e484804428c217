"""Start one run per landed file, and notify about runs that die.

Loaded files leave their landing prefix (to archive/ or error/), so a landing
prefix only ever holds files still to do and the sensor lists it whole. A run key
of the file's key, size and time means a file is requested once, and again only
if a new version of it lands.
"""

import dagster as dg

from etl_assets.files.assets import (
    csv_to_parquet_loads,
    datalake_loads,
    external_feed_loads,
)
from etl_assets.files.csv_parquet import PREFIX as CSV_PREFIX
from etl_assets.files.datalake import PREFIX as DATALAKE_PREFIX
from etl_assets.files.external import PREFIX as EXTERNAL_PREFIX
from etl_assets.landing.zone import LandingZone
from etl_assets.notifications import Notifier

ROUTES = (
    ("datalake", DATALAKE_PREFIX, datalake_loads),
    ("external", EXTERNAL_PREFIX, external_feed_loads),
    ("csv", CSV_PREFIX, csv_to_parquet_loads),
)


def landed_file_requests(landing_zone: LandingZone, prefix: str, partitions: dg.DynamicPartitionsDefinition):
    """(run requests, partition additions) for every file waiting under `prefix`."""
    keys = [f for f in landing_zone.list_files(prefix) if not f.key.endswith("/")]
    if prefix == DATALAKE_PREFIX:
        keys = schema_files_first(keys)
    requests = [dg.RunRequest(run_key=f.fingerprint, partition_key=f.key, tags={"files/key": f.key[:250]})
                for f in keys]
    additions = [partitions.build_add_request([f.key for f in keys])] if keys else []
    return requests, additions


def schema_files_first(files: list) -> list:
    """A table's pending schema file is requested before its data files, which wait a tick."""
    pending_schema = {tuple(f.key.split("/")[1:4:2]) for f in files if f.key.split("/")[2:3] == ["schema"]}
    return [f for f in files
            if f.key.split("/")[2:3] == ["schema"] or tuple(f.key.split("/")[1:4:2]) not in pending_schema]


def build_landed_files_sensor(kind: str, prefix: str, asset: dg.AssetsDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{kind}_files_sensor",
        description=f"Requests a load of every file under {prefix} (one partition per file); "
        "loaded files move to archive/ or error/.",
        target=asset,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def landed_files_sensor(context: dg.SensorEvaluationContext, landing_zone: LandingZone):
        requests, additions = landed_file_requests(landing_zone, prefix, asset.partitions_def)
        return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=additions)

    return landed_files_sensor


landed_files_sensors = [build_landed_files_sensor(*route) for route in ROUTES]


@dg.run_failure_sensor(
    name="notify_on_run_failure",
    description="Sends a notification for every run that fails, unless its failed steps already sent one.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def notify_on_run_failure(context: dg.RunFailureSensorContext, notifier: Notifier):
    steps = context.get_step_failure_events()
    if steps and all(
        (e.step_failure_data.user_failure_data and e.step_failure_data.user_failure_data.metadata.get("notified"))
        for e in steps
    ):
        return
    notifier.publish(
        {"job": context.dagster_run.job_name, "run_id": context.dagster_run.run_id, "status": "FAILED",
         "reason": context.failure_event.message},
        log=context.log,
    )
