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

import hashlib
import json
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
from etl_assets.environment import CHECKS, VARIABLES
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
DEFAULT_RETENTION_DAYS = float(VARIABLES[RETENTION_VARIABLE].default)
# At most this many partitions are deleted per tick and asset: the daemon deletes them one by one
# (two statements each), so a backlog (the first ticks on an instance that kept every partition)
# drains over several ticks instead of making one long one.
DELETIONS_PER_TICK = 1_000
REFUSED_PLACES = (ERROR, DUPLICATE, HELD)
PARTITION_TAG = "dagster/partition"  # the tag Dagster gives the run of one partition
# The sweep for given-up files (their latest run failed and an operator took the file out of the refused
# folders) reads every partition's status, which costs the asset's history after a change of partitions
# (Dagster rebuilds its status cache): it runs when the refused folders change, and at least this often.
SWEEP_SECONDS = 3600.0


def retention_seconds(env=None) -> float:
    """How long a settled file keeps its partition: ETL_ASSETS_FILE_PARTITION_RETENTION_DAYS (a number of
    days, fractions allowed; 0 deletes it at the first tick after its load), default 7. Read when the code
    location loads; a bad value is a SettingsError naming it."""
    raw = ((os.environ if env is None else env).get(RETENTION_VARIABLE) or "").strip()
    if not raw:
        return DEFAULT_RETENTION_DAYS * 86400
    variable = VARIABLES[RETENTION_VARIABLE]
    problem = CHECKS[variable.kind](variable, raw)  # the rule `etl-assets` checks the environment with
    if problem:
        raise SettingsError(problem)
    return float(raw) * 86400


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
class LifecycleCursor:
    """The sensor's cursor: the storage id of the last materialization the walk over settled loads has
    looked at, when the given-up sweep last ran, and a digest of the refused folders' names then."""

    settled_after: int = 0
    swept_at: float = 0.0
    refused: str = ""

    @classmethod
    def parse(cls, raw: str | None) -> "LifecycleCursor":
        try:
            value = json.loads(raw) if raw else {}
            return cls(int(value.get("settled_after", 0)), float(value.get("swept_at", 0.0)),
                       str(value.get("refused", "")))
        except (ValueError, TypeError, AttributeError):
            return cls()

    def dump(self) -> str:
        return json.dumps({"settled_after": self.settled_after, "swept_at": self.swept_at, "refused": self.refused})


@dataclass
class Lifecycle:
    """What one tick decided about an asset's partitions: the keys to delete, the next cursor, and why
    the partitions it looked at were kept (waiting, running, refused, failed, loaded again, never run)."""

    delete: list[str]
    cursor: LifecycleCursor
    kept: Counter = field(default_factory=Counter)
    swept: bool = False

    def summary(self, retention: float) -> str:
        kept = ", ".join(f"{n} {why}" for why, n in sorted(self.kept.items()))
        return (f"{len(self.delete)} partition(s) deleted, their files settled more than {retention / 86400:g} "
                "day(s) ago (their history: etl-assets audit, archive/, the asset's events)"
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


def _digest(names: set[str]) -> str:
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]


def _materialized_since(instance: dg.DagsterInstance, asset_key: dg.AssetKey, keys: list[str],
                        cutoff: float) -> set[str]:
    """Which of `keys` were materialized after `cutoff` (a re-run within the retention)."""
    recent: set[str] = set()
    for start in range(0, len(keys), 500):
        cursor = None
        while True:
            page = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=keys[start:start + 500],
                                      after_timestamp=cutoff), limit=1000, cursor=cursor)
            recent.update(r.partition_key for r in page.records)
            if not page.has_more:
                break
            cursor = page.cursor
    return recent


def _latest_runs(instance: dg.DagsterInstance, keys: list[str]) -> dict:
    """The most recent run (its RunRecord) of each partition of `keys` that has one: one query per 500 keys."""
    latest: dict = {}
    for start in range(0, len(keys), 500):
        for record in instance.get_run_records(dg.RunsFilter(tags={PARTITION_TAG: keys[start:start + 500]})):
            key = record.dagster_run.tags.get(PARTITION_TAG)
            if key not in latest or record.storage_id > latest[key].storage_id:
                latest[key] = record
    return latest


def partition_lifecycle(instance: dg.DagsterInstance, asset: dg.AssetsDefinition, landing_zone: LandingZone,
                        prefix: str, waiting: set[str], cursor: LifecycleCursor, cutoff: float, now: float,
                        limit: int = DELETIONS_PER_TICK, sweep_every: float = SWEEP_SECONDS) -> Lifecycle:
    """The partitions of `asset` to delete now: files settled before `cutoff` (a timestamp).

    A partition is kept while its file waits under `prefix` (`waiting`), while a run of it is queued or
    in progress, while its file is refused (in error/, duplicate/ or held/: re-runnable from the UI),
    and while its last load is more recent than `cutoff`. A file settles in one of two ways:
    - loaded: its materializations older than `cutoff` are walked oldest first from the cursor (at most
      `limit` a tick); a partition whose latest run succeeded and that has no materialization since the
      cutoff is deleted. Each tick costs what aged since the last one, not the history.
    - given up: the sweep (every `sweep_every` seconds, and whenever the refused folders change) reads
      the partitions' statuses; one whose latest run failed or was canceled, whose file is in no refused
      folder any more (an operator took it out), and whose run ended before `cutoff` is deleted.
    """
    name, kept = asset.partitions_def.name, {}
    refused = refused_names(landing_zone, prefix)

    def held(key: str) -> str | None:
        if key in waiting:
            return "waiting"
        if is_refused(landing_zone, key, refused):
            return "refused"
        return None

    # Loaded files: the walk over the materializations older than the cutoff.
    page = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset.key, after_storage_id=cursor.settled_after or None,
                              before_timestamp=cutoff), limit=limit, ascending=True)
    aged = [key for key in dict.fromkeys(r.partition_key for r in page.records if r.partition_key is not None)
            if instance.has_dynamic_partition(name, key)]
    runs = _latest_runs(instance, aged) if aged else {}
    candidates: list[str] = []
    for key in aged:
        reason, latest = held(key), runs.get(key)
        if reason is None and latest is not None and not latest.dagster_run.is_finished:
            reason = "running"
        elif reason is None and latest is not None and latest.dagster_run.status != dg.DagsterRunStatus.SUCCESS:
            reason = "failed"
        if reason:
            kept[key] = reason
        else:
            candidates.append(key)
    recent = _materialized_since(instance, asset.key, candidates, cutoff) if candidates else set()
    kept.update((key, "loaded again within the retention") for key in recent)
    delete = [key for key in candidates if key not in recent]
    settled_after = page.records[-1].storage_id if page.records else cursor.settled_after

    # Given-up files: the sweep over the partitions' statuses.
    digest, swept = _digest(refused), False
    if now - cursor.swept_at >= sweep_every or digest != cursor.refused:
        existing = instance.get_dynamic_partitions(name)
        status = instance.get_status_by_partition(asset.key, existing, asset.partitions_def) or {}
        settled = (dg.AssetPartitionStatus.MATERIALIZED, dg.AssetPartitionStatus.IN_PROGRESS)
        swept = True
        unsettled = [key for key in sorted(set(existing) - set(delete) - set(kept)) if status.get(key) not in settled]
        runs = _latest_runs(instance, [key for key in unsettled if held(key) is None])
        for key in unsettled:  # a loaded partition is the walk's; a running one stays
            if len(delete) >= limit:
                swept = False  # the rest next tick
                break
            reason = held(key)
            if reason is None:
                latest = runs.get(key)
                if latest is None:
                    reason = "never run"
                elif not latest.dagster_run.is_finished or (latest.end_time or now) >= cutoff:
                    reason = "failed within the retention"
            if reason:
                kept[key] = reason
            else:
                delete.append(key)
    next_cursor = LifecycleCursor(settled_after, now if swept else cursor.swept_at,
                                  digest if swept else cursor.refused)
    return Lifecycle(delete, next_cursor, Counter(kept.values()), swept)


def build_landed_files_sensor(kind: str, prefix: str, asset: dg.AssetsDefinition, retention: float | None = None,
                              clock=time.time) -> dg.SensorDefinition:
    """The sensor of one kind of feed; `retention` in seconds (default: `retention_seconds()`); `clock`, the
    time now (the tests and the benchmark move it)."""
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
        now = clock()
        lifecycle = partition_lifecycle(context.instance, asset, landing_zone, prefix, {f.key for f in files},
                                        LifecycleCursor.parse(context.cursor), now - retention, now)
        if lifecycle.delete:
            context.log.info(lifecycle.summary(retention))
        deletions = [asset.partitions_def.build_delete_request(lifecycle.delete)] if lifecycle.delete else []
        return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=additions + deletions,
                               cursor=lifecycle.cursor.dump())

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
