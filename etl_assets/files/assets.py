"""One asset per kind of file feed; every landed file is a partition of its asset.

A materialization finds the file (still in its landing prefix, or in archive/ or
error/ when re-run on demand), loads it all or nothing, moves it to archive/ or
to error/ with a `.reason.txt` beside it, writes the audit row and sends the
notification. These assets load through the shared warehouse resource directly
rather than an IO manager, because moving the file and recording the outcome must
follow the load, including when it fails.
"""

import datetime as dt
from collections.abc import Callable

import dagster as dg

from etl_assets.files.csv_parquet import PREFIX as CSV_PREFIX
from etl_assets.files.csv_parquet import csv_dataset_table, load_csv_file
from etl_assets.files.datalake import PREFIX as DATALAKE_PREFIX
from etl_assets.files.datalake import datalake_table, load_datalake_file
from etl_assets.files.external import PREFIX as EXTERNAL_PREFIX
from etl_assets.files.external import external_table, load_external_file
from etl_assets.files.loading import FileRefused, Outcome
from etl_assets.resources.audit import LoadRecord, record_load
from etl_assets.resources.landing_zone import LandingZone
from etl_assets.resources.notifications import Notifier
from etl_assets.resources.warehouse.base import Warehouse
from etl_assets.resources.warehouse.spec import quote

GROUP = "files"
ARCHIVE, ERROR = "archive/", "error/"
SCHEMA_DRIFT = "no_schema_drift"


def locate(landing_zone: LandingZone, key: str) -> str:
    """Where the file is now: landed, or already archived / in error when re-run on demand."""
    for candidate in (key, ARCHIVE + key, ERROR + key):
        if landing_zone.exists(candidate):
            return candidate
    raise dg.Failure(description=f"{key} is not in the landing zone, {ARCHIVE} or {ERROR}", allow_retries=False)


def process_file(
    context: dg.AssetExecutionContext,
    kind: str,
    key: str,
    load: Callable[..., Outcome],
    target: Callable[[str], str],
    landing_zone: LandingZone,
    warehouse: Warehouse,
    notifier: Notifier,
) -> Outcome:
    current = locate(landing_zone, key)
    record = LoadRecord(domain=f"files.{kind}", source_key=key, target_table="", action=kind, run_id=context.run.run_id)
    try:  # named up front, so a refused file's audit row and notification say which table it was for
        record.target_table = target(key)
    except FileRefused:
        pass  # no feed claims the key: the load below refuses it with the reason
    for landed in landing_zone.list_files(current.rsplit("/", 1)[0] + "/"):
        if landed.key == current:
            record.landed_at = dt.datetime.fromtimestamp(landed.modified, dt.timezone.utc)
    outcome, failure = None, None
    try:
        with landing_zone.local_copy(current) as path:
            outcome = load(path, key)
        record.target_table, record.action = outcome.table, outcome.action
        record.rows_read, record.rows_loaded = outcome.rows_read, outcome.rows_loaded
    except FileRefused as refused:
        record.status, record.error, failure = refused.status, str(refused), refused
    except Exception as error:  # the database refused the load, or the file vanished: still audited
        record.status, record.error, failure = "FAILED", f"{type(error).__name__}: {error}", error

    destination = ARCHIVE + key if failure is None else ERROR + key
    if current != destination:
        landing_zone.move(current, destination)
    if failure is None and landing_zone.exists(ERROR + key + ".reason.txt"):
        landing_zone.move(ERROR + key + ".reason.txt", ARCHIVE + key + ".previous-failure.txt")
    if failure is not None:
        landing_zone.put_text(ERROR + key + ".reason.txt", f"{record.status}: {record.error}\n")
    record_load(warehouse, record)
    try:
        notifier.publish(
            {"file": key, "table": record.target_table, "status": record.status, "reason": record.error,
             "rows_loaded": record.rows_loaded, "run_id": context.run.run_id},
            log=context.log,
        )
    except Exception as error:  # the load and its audit row stand; say loudly that the alert did not go out
        context.log.error(f"Notification for {key} ({record.status}) could not be sent: {error}")
    if failure is not None:
        raise dg.Failure(
            description=f"{key}: {record.error}",
            metadata={"status": record.status, "moved_to": landing_zone.location(destination), "notified": True},
            allow_retries=False,
        ) from failure
    context.log.info(f"{key} -> {outcome.table}: {outcome.rows_loaded} rows ({outcome.action})")
    return outcome


def _metadata(outcome: Outcome, landing_zone: LandingZone, key: str) -> dict:
    return {
        "dagster/table_name": outcome.table,
        "action": outcome.action,
        "rows_read": outcome.rows_read,
        "rows_loaded": outcome.rows_loaded,
        "archived_as": landing_zone.location(ARCHIVE + key),
        **{k: dg.MetadataValue.json(v) if isinstance(v, (dict, list)) else v for k, v in outcome.metadata.items()},
    }


def build_file_asset(name: str, kind: str, description: str, kinds: set[str], load, target, checks=()):
    """The asset for one kind of feed: each file is a partition; `load(path, key, resources)` loads it
    into the table `target(key)` names."""
    key = dg.AssetKey(["files", name])
    partitions = dg.DynamicPartitionsDefinition(name=f"{kind}_files")

    @dg.asset(
        key=key,
        description=description,
        partitions_def=partitions,
        kinds=kinds,
        group_name=GROUP,
        owners=["team:data-engineering"],
        code_version="1",
        pool="warehouse",
        tags={"domain": "files"},
        check_specs=[dg.AssetCheckSpec(check, asset=key, description=text) for check, text in checks],
    )
    def file_asset(context: dg.AssetExecutionContext, landing_zone: LandingZone, warehouse: Warehouse,
                   notifier: Notifier):
        file_key = context.partition_key
        outcome = process_file(context, kind, file_key, lambda path, k: load(path, k, warehouse, landing_zone),
                               target, landing_zone, warehouse, notifier)
        metadata = _metadata(outcome, landing_zone, file_key)
        schema, table = outcome.table.split(".", 1)
        metadata["dagster/row_count"] = warehouse.query(f"SELECT COUNT(*) FROM {quote(schema)}.{quote(table)}")[0][0]
        yield dg.MaterializeResult(metadata=metadata)
        if checks:
            drift = outcome.metadata.get("schema_drift", {})
            yield dg.AssetCheckResult(
                check_name=SCHEMA_DRIFT, passed=not drift, severity=dg.AssetCheckSeverity.WARN,
                metadata={"drift": dg.MetadataValue.json(drift),
                          "discovered_schema": dg.MetadataValue.json(outcome.metadata["discovered_schema"])},
            )

    return file_asset


datalake_loads = build_file_asset(
    "datalake_loads", "datalake",
    f"Files under `{DATALAKE_PREFIX}<db>/<append|truncate|schema>/<table>/<file>`: schema files create or evolve "
    "tables, append CSVs add rows, truncate CSVs replace them; one partition per file.",
    {"csv", "json", "s3"}, lambda path, key, warehouse, zone: load_datalake_file(path, key, warehouse),
    datalake_table,
)
external_feed_loads = build_file_asset(
    "external_feed_loads", "external",
    f"Files under `{EXTERNAL_PREFIX}` matched to a feed in feeds.yaml: header and trailer checks, split in parts "
    "over the feed's size threshold, loaded, then the feed's post-load SQL; one partition per file.",
    {"csv", "s3"}, lambda path, key, warehouse, zone: load_external_file(path, key, warehouse),
    external_table,
)
csv_to_parquet_loads = build_file_asset(
    "csv_to_parquet_loads", "csv",
    f"CSV files under `{CSV_PREFIX}<dataset>/`: schema discovered and registered, nulls checked, selected columns "
    "written as Parquet and loaded; one partition per file.",
    {"csv", "parquet", "s3"}, load_csv_file, csv_dataset_table,
    checks=[(SCHEMA_DRIFT, "The file's discovered schema matches the dataset's previous file.")],
)
