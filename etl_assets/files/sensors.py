"""Start one run per landed file, delete the partitions of files long settled, and notify about runs that die.

Loaded files leave their landing prefix (to archive/ or error/), so a landing
prefix only ever holds files still to do and the sensor lists it whole. A run key
of the file's key, size and time means a file is requested once, and again only
if a new version of it lands.

Partitions have a lifecycle (docs/file-feeds.md, "Partitions"): every file is a
partition while it waits, while its run is in progress, while it is refused (its
copy is in error/, duplicate/ or held/, so it can be re-run from the UI), and for
the retention (ETL_ASSETS_FILE_PARTITION_RETENTION_DAYS, default 7) after its last
load; then the sensor deletes the partition. The file's history stays where it was:
the audit row, archive/, and the materialization events (Dagster keeps a deleted
partition's events). A file landed again under the same key is a partition again.
"""

import json
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import dagster as dg

from etl_assets.files.assets import (
    DUPLICATE,
    ERROR,
    HELD,
    csv_to_parquet_loads,
    datalake_loads,
    external_feed_loads,
    placed,
)
from etl_assets.files.csv_parquet import PREFIX as CSV_PREFIX
from etl_assets.files.datalake import PREFIX as DATALAKE_PREFIX
from etl_assets.files.external import PREFIX as EXTERNAL_PREFIX
from etl_assets.landing.zone import LandedFile, LandingZone, UnsafeKey
from etl_assets.notifications import Notifier
from etl_assets.settings import SettingsError

ROUTES = (
    ("datalake", DATALAKE_PREFIX, datalake_loads),
    ("external", EXTERNAL_PREFIX, external_feed_loads),
    ("csv", CSV_PREFIX, csv_to_parquet_loads),
)

RETENTION_VARIABLE = "ETL_ASSETS_FILE_PARTITION_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 7.0
# At most this many partitions are deleted per tick and asset: the daemon deletes them one by one
# (two statements each), so a backlog (the first ticks on an instance that kept every partition)
# drains over several ticks instead of making one long one.
DELETIONS_PER_TICK = 1_000
REFUSED_PLACES = (ERROR, DUPLICATE, HELD)
PARTITION_TAG = "dagster/partition"  # the tag Dagster gives the run of one partition


def retention_seconds(env=None) -> float:
    """How long a settled file keeps its partition: ETL_ASSETS_FILE_PARTITION_RETENTION_DAYS (a number of
    days, fractions allowed; 0 deletes it at the first tick after its load), default 7. Read when the code
    location loads; a bad value is a SettingsError naming it."""
    raw = ((os.environ if env is None else env).get(RETENTION_VARIABLE) or "").strip()
    if not raw:
        return DEFAULT_RETENTION_DAYS * 86400
    try:
        days = float(raw)
    except ValueError:
        days = -1.0
    if not math.isfinite(days) or days < 0:
        raise SettingsError(f"{RETENTION_VARIABLE}={raw!r}: expected a number of days, 0 or more (e.g. 7, "
                            "or 0.5 for 12 hours)")
    return days * 86400


def waiting_files(landing_zone: LandingZone, prefix: str) -> list[LandedFile]:
    """The files waiting under `prefix` (a folder with nothing in it is not a file)."""
    return [f for f in landing_zone.list_files(prefix) if not f.key.endswith("/")]


def landed_file_requests(landing_zone: LandingZone, prefix: str, partitions: dg.DynamicPartitionsDefinition,
                         files: list[LandedFile] | None = None):
    """(run requests, partition additions) for every file waiting under `prefix` (`files`, when already listed)."""
    keys = waiting_files(landing_zone, prefix) if files is None else files
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


# ---------------------------------------------------------------- the partitions' lifecycle


@dataclass
class Lifecycle:
    """What one tick decided about an asset's partitions: the keys to delete, where the walk over old
    materializations stopped (the sensor's cursor), how many partitions there were, and why partitions
    the tick looked at were kept (waiting, running, refused, failed, recent)."""

    delete: list[str]
    cursor: int
    partitions: int
    kept: Counter = field(default_factory=Counter)

    def summary(self, retention: float) -> str:
        kept = ", ".join(f"{n} {why}" for why, n in sorted(self.kept.items()))
        return (f"{len(self.delete)} of {self.partitions} partition(s) deleted: their files settled more than "
                f"{retention / 86400:g} day(s) ago (history: etl-assets audit, archive/, the asset's events)"
                + (f"; kept {kept}" if kept else ""))


def refused_names(landing_zone: LandingZone, prefix: str) -> set[str]:
    """Every name under error/, duplicate/ and held/ for `prefix`: the files still refused (and their
    reasons). Listing them costs what is refused, not the feed's history."""
    return {f.key for place in REFUSED_PLACES for f in landing_zone.list_files(place + prefix)}


def is_refused(landing_zone: LandingZone, key: str, names: set[str]) -> bool:
    try:
        return any(placed(landing_zone, place, key) in names for place in REFUSED_PLACES)
    except UnsafeKey:  # a key no run could move: it was never put in a refused folder
        return False


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _materialized_since(instance: dg.DagsterInstance, asset_key: dg.AssetKey, keys: list[str],
                        cutoff: float) -> set[str]:
    """Which of `keys` were materialized after `cutoff` (a re-run within the retention)."""
    recent: set[str] = set()
    for chunk in _chunks(keys, 500):
        cursor = None
        while True:
            page = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=chunk, after_timestamp=cutoff),
                limit=1000, cursor=cursor)
            recent.update(r.partition_key for r in page.records)
            if not page.has_more:
                break
            cursor = page.cursor
    return recent


def partition_lifecycle(instance: dg.DagsterInstance, asset: dg.AssetsDefinition, landing_zone: LandingZone,
                        prefix: str, waiting: set[str], after: int, cutoff: float,
                        limit: int = DELETIONS_PER_TICK) -> Lifecycle:
    """The partitions of `asset` to delete now: files settled before `cutoff` (a timestamp).

    A partition is kept while its file waits under `prefix` (`waiting`), while a run of it is in
    progress, while its file is refused (in error/, duplicate/ or held/, re-runnable from the UI), and
    while its last load is more recent than `cutoff`. Two ways a file settles:
    - loaded: its materializations older than `cutoff` are walked oldest first from the storage id
      `after` (the sensor's cursor; at most `limit` a tick), and a partition whose status is
      materialized (its latest run succeeded) and that has no later materialization is deleted;
    - given up: a partition whose latest run failed or was canceled, whose file is in no refused
      folder any more (an operator removed it), and whose run ended before `cutoff` is deleted.
    """
    existing = set(instance.get_dynamic_partitions(asset.partitions_def.name))
    if not existing:
        return Lifecycle([], after, 0)
    refused = refused_names(landing_zone, prefix)
    status = instance.get_status_by_partition(asset.key, sorted(existing), asset.partitions_def) or {}
    loaded, running = dg.AssetPartitionStatus.MATERIALIZED, dg.AssetPartitionStatus.IN_PROGRESS
    kept: dict[str, str] = {}  # key -> why it stays

    def held(key: str) -> str | None:
        if key in waiting:
            return "waiting"
        if status.get(key) == running:
            return "running"
        if is_refused(landing_zone, key, refused):
            return "refused"
        return None

    # Loaded files: the walk over materializations older than the cutoff, from where the last tick stopped.
    page = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset.key, after_storage_id=after or None, before_timestamp=cutoff),
        limit=limit, ascending=True)
    cursor = page.records[-1].storage_id if page.records else after
    candidates: list[str] = []
    for key in dict.fromkeys(r.partition_key for r in page.records if r.partition_key in existing):
        reason = held(key) or (None if status.get(key) == loaded else "failed")
        if reason:
            kept[key] = reason
        else:
            candidates.append(key)
    recent = _materialized_since(instance, asset.key, candidates, cutoff) if candidates else set()
    kept.update((key, "loaded again within the retention") for key in recent)
    delete = [key for key in candidates if key not in recent]

    # Given-up files: the latest run failed (or was canceled), and the file is no longer in a refused
    # folder (an operator removed it): deleted once that run ended before the cutoff.
    for key in sorted(existing - set(delete) - set(kept)):
        if len(delete) >= limit:
            break
        if status.get(key) in (loaded, running):
            continue  # a loaded file is the walk's; a running one stays
        reason = held(key)
        if reason is None:
            runs = instance.get_run_records(dg.RunsFilter(tags={PARTITION_TAG: key}), limit=1)
            if not runs:
                reason = "never run"
            elif not runs[0].dagster_run.is_finished or runs[0].end_time is None or runs[0].end_time >= cutoff:
                reason = "failed within the retention"
        if reason:
            kept[key] = reason
        else:
            delete.append(key)
    return Lifecycle(delete, cursor, len(existing), Counter(kept.values()))


def _cursor(raw: str | None) -> int:
    try:
        return int(json.loads(raw)["settled_after"]) if raw else 0
    except (ValueError, KeyError, TypeError):
        return 0


def build_landed_files_sensor(kind: str, prefix: str, asset: dg.AssetsDefinition,
                              retention: float | None = None) -> dg.SensorDefinition:
    """The sensor of one kind of feed; `retention` in seconds (default: `retention_seconds()`)."""
    retention = retention_seconds() if retention is None else retention

    @dg.sensor(
        name=f"{kind}_files_sensor",
        description=f"Requests a load of every file under {prefix} (one partition per file); "
        "loaded files move to archive/ or error/. Deletes the partition of a file settled more than "
        f"{retention / 86400:g} day(s) ago ({RETENTION_VARIABLE}); a waiting, running or refused file keeps it.",
        target=asset,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def landed_files_sensor(context: dg.SensorEvaluationContext, landing_zone: LandingZone):
        files = waiting_files(landing_zone, prefix)
        requests, additions = landed_file_requests(landing_zone, prefix, asset.partitions_def, files)
        lifecycle = partition_lifecycle(context.instance, asset, landing_zone, prefix, {f.key for f in files},
                                        _cursor(context.cursor), time.time() - retention)
        if lifecycle.delete:
            context.log.info(lifecycle.summary(retention))
        deletions = [asset.partitions_def.build_delete_request(lifecycle.delete)] if lifecycle.delete else []
        return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=additions + deletions,
                               cursor=json.dumps({"settled_after": lifecycle.cursor}))

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
