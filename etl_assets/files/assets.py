"""One asset per kind of file feed; every landed file is a partition of its asset.

A materialization finds the file (still in its landing prefix, or in archive/,
error/, duplicate/ or held/ when re-run on demand), loads it all or nothing, moves
it to archive/ (loaded), error/ (ABORTED, FAILED), duplicate/ (DUPLICATE) or held/
(HELD) with a `.reason.txt` beside it, writes the audit row and sends the
notification. A file that loads moves any earlier refused copy of itself out of
error/, duplicate/ and held/ into archive/ (docs/file-feeds.md). These assets load through the shared warehouse resource directly
rather than an IO manager, because moving the file and recording the outcome must
follow the load, including when it fails.
"""

import datetime as dt
import json
import unicodedata
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from etl_assets.files.csv_parquet import PREFIX as CSV_PREFIX
from etl_assets.files.csv_parquet import csv_dataset_table, load_csv_file
from etl_assets.files.datalake import PREFIX as DATALAKE_PREFIX
from etl_assets.files.datalake import datalake_table, load_datalake_file, parse_key
from etl_assets.files.external import PREFIX as EXTERNAL_PREFIX
from etl_assets.files.external import external_table, feed_for_key, load_external_file
from etl_assets.files.loading import OVERRIDE_TAG, FileLoad, FileRefused, Outcome
from etl_assets.landing.zone import LandingZone, UnsafeKey
from etl_assets.notifications import Notifier
from etl_assets.warehouse.audit import LoadRecord, report_load
from etl_assets.warehouse.base import Warehouse

GROUP = "files"
ARCHIVE, ERROR, DUPLICATE, HELD = "archive/", "error/", "duplicate/", "held/"
PLACE_FOR = {"ABORTED": ERROR, "FAILED": ERROR, "DUPLICATE": DUPLICATE, "HELD": HELD}
LABEL = {ERROR: "failure", DUPLICATE: "duplicate", HELD: "held"}  # archive/<key>.previous-<label>
OVERRIDES = ("guards", "duplicates")
SCHEMA_DRIFT = "no_schema_drift"


def placed(landing_zone: LandingZone, place: str, key: str, suffix: str = "") -> str:
    """The key of a file's copy or reason under `place` (archive/, error/, ...): `place + key + suffix`, cut to
    the zone's name limits when it is too long (a hash keeps it unique; the audit row keeps the full key)."""
    return landing_zone.fit(place + key, suffix)


def reason_key(landing_zone: LandingZone, place: str, key: str) -> str:
    return placed(landing_zone, place, key, ".reason.txt")


def previous_keys(landing_zone: LandingZone, place: str, key: str) -> tuple[str, str]:
    """Where an earlier refused copy under `place`, and its reason, go once the file loads."""
    label = LABEL[place]
    return (placed(landing_zone, ARCHIVE, key, f".previous-{label}"),
            placed(landing_zone, ARCHIVE, key, f".previous-{label}.txt"))


def check_keys(landing_zone: LandingZone, key: str) -> None:
    """Every key a run of `key` may touch resolves inside the landing zone, or UnsafeKey is raised: checked
    before any file moves."""
    landing_zone.check(key)
    for place in (ARCHIVE, ERROR, DUPLICATE, HELD):
        landing_zone.check(placed(landing_zone, place, key))
        if place != ARCHIVE:
            landing_zone.check(reason_key(landing_zone, place, key))
            for name in previous_keys(landing_zone, place, key):
                landing_zone.check(name)


def locate(landing_zone: LandingZone, key: str) -> str:
    """Where the file is now: landed, or already archived / refused when re-run on demand."""
    for candidate in (key, *(placed(landing_zone, place, key) for place in (ARCHIVE, ERROR, DUPLICATE, HELD))):
        if landing_zone.exists(candidate):
            return candidate
    raise dg.Failure(description=f"{key} is not in the landing zone, {ARCHIVE}, {ERROR}, {DUPLICATE} or {HELD}",
                     allow_retries=False)


def printable(key: str) -> str:
    """`key` with control characters escaped (`\\n`, `\\x00`): an audit row or a message can hold it."""
    return "".join(c.encode("unicode_escape").decode() if unicodedata.category(c) == "Cc" else c for c in key)


def run_overrides(tags: dict) -> frozenset:
    """What the operator allowed for this run (the run tag files/override=guards,duplicates)."""
    values = frozenset(v.strip() for v in tags.get(OVERRIDE_TAG, "").split(",") if v.strip())
    unknown = values - set(OVERRIDES)
    if unknown:
        raise dg.Failure(description=f"run tag {OVERRIDE_TAG}: unknown override(s) {sorted(unknown)}; "
                                     f"use {', '.join(OVERRIDES)}", allow_retries=False)
    return values


def clear_refused_copies(landing_zone: LandingZone, key: str, current: str) -> None:
    """After a load, an earlier refused copy of the file (and its reason) would say the file is still
    refused: it moves to archive/<key>.previous-<status>[.txt], kept as history."""
    for place in (ERROR, DUPLICATE, HELD):
        copy, reason = placed(landing_zone, place, key), reason_key(landing_zone, place, key)
        previous_copy, previous_reason = previous_keys(landing_zone, place, key)
        if copy != current and landing_zone.exists(copy):
            landing_zone.move(copy, previous_copy)
        if landing_zone.exists(reason):
            landing_zone.move(reason, previous_reason)


def refuse_unsafe_key(context, kind: str, key: str, unsafe: UnsafeKey, warehouse: Warehouse,
                      notifier: Notifier) -> dg.Failure:
    """A key that would reach outside the landing zone: nothing moves or is read; the refusal is audited and
    notified like any other (the key with its control characters escaped)."""
    record = LoadRecord(domain=f"files.{kind}", source_key=printable(key), target_table="", action=kind,
                        run_id=context.run.run_id, status="ABORTED", error=str(unsafe))
    report_load(warehouse, record, notifier, context.log)
    return dg.Failure(description=f"{printable(key)}: {unsafe}", allow_retries=False,
                      metadata={"status": "ABORTED", "moved_to": "nothing was moved", "notified": True})


def process_file(
    context: dg.AssetExecutionContext,
    kind: str,
    key: str,
    load: Callable[[FileLoad], Outcome],
    target: Callable[[str], str],
    landing_zone: LandingZone,
    warehouse: Warehouse,
    notifier: Notifier,
    action_of: Callable[[str], str] = lambda key: "",
) -> Outcome:
    overrides = run_overrides(context.run.tags)
    try:
        check_keys(landing_zone, key)
    except UnsafeKey as unsafe:
        raise refuse_unsafe_key(context, kind, key, unsafe, warehouse, notifier) from None
    current = locate(landing_zone, key)
    record = LoadRecord(domain=f"files.{kind}", source_key=key, target_table="", action=kind, run_id=context.run.run_id)
    try:  # named up front, so a refused file's audit row and notification say which table and action
        record.target_table = target(key)
        record.action = action_of(key) or kind
    except FileRefused:
        pass  # no feed claims the key: the load below refuses it with the reason
    for landed in landing_zone.list_files(current.rsplit("/", 1)[0] + "/"):
        if landed.key == current:
            record.landed_at = dt.datetime.fromtimestamp(landed.modified, dt.timezone.utc)
    outcome, failure = None, None
    try:
        with landing_zone.local_copy(current) as path:
            outcome = load(FileLoad(Path(path), key, warehouse, overrides))
        record.target_table, record.action = outcome.table, outcome.action
        record.rows_read, record.rows_loaded = outcome.rows_read, outcome.rows_loaded
        drift = outcome.metadata.get("schema_drift")
        record.schema_drift = json.dumps(drift, sort_keys=True) if drift else None
    except FileRefused as refused:
        record.status, record.error, failure = refused.status, str(refused), refused
        record.rows_read = refused.rows_read
        record.schema_drift = json.dumps(refused.schema_drift, sort_keys=True) if refused.schema_drift else None
    except Exception as error:  # the database refused the load, or the file vanished: still audited
        record.status, record.error, failure = "FAILED", f"{type(error).__name__}: {error}", error

    place = ARCHIVE if failure is None else PLACE_FOR[record.status]
    destination = placed(landing_zone, place, key)
    if current != destination:
        landing_zone.move(current, destination)
    if failure is None:
        clear_refused_copies(landing_zone, key, current)
    else:
        for other in set(PLACE_FOR.values()) - {place}:  # one reason, where the file is
            if landing_zone.exists(reason_key(landing_zone, other, key)):
                landing_zone.move(reason_key(landing_zone, other, key), previous_keys(landing_zone, other, key)[1])
        reason = reason_key(landing_zone, place, key)
        named = "" if reason == f"{place}{key}.reason.txt" else f"key: {key}\n"  # a shortened name says whose it is
        landing_zone.put_text(reason, f"{record.status}: {record.error}\n{named}")
    report_load(warehouse, record, notifier, context.log)
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
        "archived_as": landing_zone.location(placed(landing_zone, ARCHIVE, key)),
        **{k: dg.MetadataValue.json(v) if isinstance(v, (dict, list)) else v for k, v in outcome.metadata.items()},
    }


def build_file_asset(name: str, kind: str, description: str, kinds: set[str], load, target, action_of, checks=()):
    """The asset for one kind of feed: each file is a partition; `load(file, landing_zone)` loads it
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
        outcome = process_file(context, kind, file_key, lambda file: load(file, landing_zone),
                               target, landing_zone, warehouse, notifier, action_of)
        metadata = _metadata(outcome, landing_zone, file_key)
        metadata["dagster/row_count"] = warehouse.count_rows(*outcome.table.split(".", 1))
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
    {"csv", "json", "s3"}, lambda file, zone: load_datalake_file(file),
    datalake_table, lambda key: parse_key(key)[1],
)
external_feed_loads = build_file_asset(
    "external_feed_loads", "external",
    f"Files under `{EXTERNAL_PREFIX}` matched to a feed in feeds.yaml: header and trailer checks, split in parts "
    "over the feed's size threshold, loaded, then the feed's post-load SQL; one partition per file.",
    {"csv", "s3"}, lambda file, zone: load_external_file(file),
    external_table, lambda key: feed_for_key(key).mode,
)
csv_to_parquet_loads = build_file_asset(
    "csv_to_parquet_loads", "csv",
    f"CSV files under `{CSV_PREFIX}<dataset>/`: schema discovered and registered, nulls checked, selected columns "
    "written as Parquet and loaded; one partition per file.",
    {"csv", "parquet", "s3"}, load_csv_file, csv_dataset_table, lambda key: "append",
    checks=[(SCHEMA_DRIFT, "The file's discovered schema matches the dataset's previous file.")],
)
