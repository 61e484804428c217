"""One software-defined asset per catalog object, partitioned by backup folder.

Each materialization reads every CSV of its object in its folder, transforms
and validates it (rejects kept, good rows loaded) and hands the staged batch to
the warehouse IO manager, which merges it into salesforce.<object>; unless the
loaded-files ledger (loaded_files.py) holds every one of those files as it is now,
and then nothing is read or written.
"""

from collections.abc import Iterator
from contextlib import ExitStack

import dagster as dg

from etl_assets.accepted_warnings import accepting
from etl_assets.landing.archives import ArchiveError
from etl_assets.landing.csv_reader import CsvFormatError, choose_encoding
from etl_assets.landing.zone import LandingZone, fingerprint_files
from etl_assets.salesforce.backup_files import ObjectFile, Unreadable, list_object_files
from etl_assets.salesforce.catalog import SalesforceObject, load_catalog
from etl_assets.salesforce.encodings import SETTING_HINT, folder_encoding
from etl_assets.salesforce.loaded_files import (
    applied_fingerprint,
    bookkeeping,
    force_requested,
    look_up,
    skip_metadata,
    skip_reason,
)
from etl_assets.salesforce.personal_data import HashKey
from etl_assets.salesforce.partitions import (
    BACKUP_PREFIX,
    differential_folders,
    full_backup_date,
)
from etl_assets.salesforce.staging import SourceFile, StageReport, stream_object
from etl_assets.warehouse.audit import LoadRecord, report_load
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.batch import AlreadyLoaded, StagedBatch, StagedPartitions
from etl_assets.warehouse.errors import CannotWrite
from etl_assets.warehouse.history import HISTORY_SUFFIX

DOMAIN = "salesforce"  # the audit trail's domain; asset groups are per kind of object (SalesforceObject.group)
CODE_VERSION = "1"
NO_SCHEMA_DRIFT = "no_schema_drift"
NO_REJECTED_ROWS = "no_rejected_rows"
NO_TRUNCATED_VALUES = "no_truncated_values"
SOURCE_FINGERPRINT = "source_fingerprint"


def object_asset_key(obj: SalesforceObject) -> dg.AssetKey:
    return dg.AssetKey([obj.schema, obj.table])


def object_files(landing_zone: LandingZone, folder: str, obj: SalesforceObject) -> list[ObjectFile]:
    """The object's CSV files in a folder: in its object folder (matched ignoring case) and the
    members of the folder's zip archives named after it. An archive that cannot be opened is a
    CsvFormatError: nothing in the folder can be known to be complete without it."""
    files = []
    for item in list_object_files(landing_zone, f"{BACKUP_PREFIX}/{folder}/"):
        if isinstance(item, Unreadable):
            raise CsvFormatError(item.key, None, item.reason)
        if isinstance(item, ObjectFile) and item.object_name.lower() == obj.api_name.lower():
            files.append(item)
    return files


def drift_reason(obj: SalesforceObject, folder: str, drift_columns, widened: dict[str, str] | None = None) -> str:
    """The check's verdict in words, shown where the UI shows the evaluation."""
    parts = []
    if drift_columns:
        parts.append(f"{len(drift_columns)} column(s) of {obj.api_name} in {folder} not in the catalog: "
                     f"{', '.join(drift_columns)} (loaded as text; add them to catalog.yaml to type them)")
    if widened:
        parts.append(f"{len(widened)} inferred column(s) of {obj.api_name} widened in {folder}: "
                     + "; ".join(f"{name} {why}" for name, why in widened.items())
                     + " (no row was rejected; declare the type in catalog.yaml to pin it)")
    return " ".join(parts) or f"Every column of {obj.api_name} in {folder} is in the catalog with its type."


def rejects_reason(obj: SalesforceObject, folder: str, rows_rejected: int, samples: list[dict]) -> str:
    if not rows_rejected:
        return f"Every row of {obj.api_name} in {folder} passed validation."
    first = samples[0] if samples else {}
    example = (f"; first: {first.get('_source_file')} line {first.get('_source_line')}, "
               f"column {first.get('column_name')}: {first.get('reason')}") if first else ""
    return (f"{rows_rejected} row(s) of {obj.api_name} in {folder} rejected into "
            f"{obj.schema}.{obj.table}_rejects{example}")


def truncation_reason(obj: SalesforceObject, folder: str, count: int, samples: list[dict]) -> str:
    if not count:
        return f"No text value of {obj.api_name} in {folder} was over the warehouse's text limit."
    where = "; ".join(f"{s['file']} line {s['line']} column {s['column']} ({s['bytes']} bytes)" for s in samples)
    return (f"{count} text value(s) of {obj.api_name} in {folder} were cut to the warehouse's text limit "
            f"(recorded in each row's _load_changes; set `long_text: super` on the column to keep them whole): {where}")


_SOURCE_WORDS = {"declared": "declared in catalog.yaml", "described": "typed by the describe",
                 "inferred": "inferred from sampled rows (pin them in catalog.yaml)"}


def object_description(obj: SalesforceObject) -> str:
    """What the asset is, how it merges, and where each column's type came from."""
    newest = (f"newest `{obj.version_column}` wins" if obj.version_column
              else "no version column: the later folder, file and line wins")
    sources = obj.column_sources()
    typed = "; ".join(f"{len(sources[s])} {_SOURCE_WORDS[s]}" + (f": {', '.join(sources[s][:20])}"
                                                                 + (", ..." if len(sources[s]) > 20 else ""))
                      for s in ("declared", "described", "inferred") if s in sources)
    return (f"{obj.description}\n\nSalesforce `{obj.api_name}` merged (SCD Type 1 by `{obj.primary_key}`, "
            f"{newest}) into `{obj.schema}.{obj.table}`.\n\n{history_description(obj)}\n\nColumns: {typed}."
            f"{policy_description(obj)}")


def policy_description(obj: SalesforceObject) -> str:
    """The column policies that apply to the object (docs/personal-data.md): its own, and the rules."""
    if obj.policies is None:
        return ""
    own = [f"`{field}` {action.value}" for field, action in obj.policies.own.items() if action.value != "keep"]
    rules = [f"`{rule.pattern}` {rule.action.value}" for rule in obj.policies.rules]
    parts = ([f"this object's: {', '.join(own)}"] if own else []) + ([f"rules: {', '.join(rules)}"] if rules else [])
    return f"\n\nColumn policies (docs/personal-data.md): {'; '.join(parts)}." if parts else ""


def history_table_name(obj: SalesforceObject) -> str | None:
    """The object's versions view (history mode), or None when it keeps none."""
    return f"{obj.schema}{HISTORY_SUFFIX}.{obj.table}" if obj.keeps_history else None


def history_description(obj: SalesforceObject) -> str:
    if obj.keeps_history:
        return (f"History: every version by `{obj.primary_key}` and `{obj.version_column}` readable in "
                f"`{history_table_name(obj)}` (`history: false` in catalog.yaml turns it off; docs/history.md).")
    why = "no version column" if obj.version_column is None else "turned off (catalog.yaml or ETL_ASSETS_SALESFORCE_HISTORY)"
    return f"History: not kept ({why})."


def warn_unless_none(check: str, counted: str, count: int, description: str, samples: list[dict],
                     fields: tuple[str, ...], **metadata) -> dg.AssetCheckResult:
    """A WARN check that passes when nothing was counted, showing the first samples' `fields`."""
    return dg.AssetCheckResult(
        check_name=check, passed=count == 0, severity=dg.AssetCheckSeverity.WARN, description=description,
        metadata={counted: count, **metadata,
                  "examples": dg.MetadataValue.json([{k: s[k] for k in fields} for s in samples])},
    )


def object_kind(obj: SalesforceObject) -> str:
    return "managed" if obj.namespace else "custom" if "__" in obj.api_name else "standard"


# A backfill of many folders runs as a few runs of up to this many folders each (Dagster's
# BackfillPolicy), each object's step loading its folders in order: a 30-folder backfill is 3 runs
# (3 code-location imports, 30 steps), not 30 runs of 10 steps contending for the warehouse pool.
# Runs of one folder (the sensor's, a UI launch of one partition) are unchanged.
MAX_FOLDERS_PER_RUN = 10
BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_FOLDERS_PER_RUN)


def audit_failed(context: dg.AssetExecutionContext, warehouse: Warehouse, obj: SalesforceObject, folder: str,
                 error: str) -> None:
    """The same FAILED audit row and message as a failed load's (the IO manager's), for a step that fails
    before its load; with no notifier here the message is logged, and the run-failure sensor sends the
    run's notification. An audit that fails too is logged, never raised over the step's own error."""
    try:
        report_load(warehouse, LoadRecord(
            domain=DOMAIN, source_key=f"{BACKUP_PREFIX}/{folder}/{obj.api_name}/", action="merge",
            target_table=f"{obj.schema}.{obj.table}", status="FAILED", error=error, run_id=context.run.run_id,
        ), None, context.log)
    except Exception as audit_error:
        context.log.error(f"Could not record the failed load in the audit table: {audit_error}")


def unreadable_file(context: dg.AssetExecutionContext, warehouse: Warehouse, obj: SalesforceObject, folder: str,
                    error: CsvFormatError | ArchiveError) -> dg.Failure:
    """A file that cannot be read: audited as FAILED; the failure of the step (no retry)."""
    if isinstance(error, ArchiveError):  # a zip member's data found corrupt while it was read
        key, _, detail = str(error).partition(": ")  # ArchiveError's message is "<key>: <reason>"
        error = CsvFormatError(key, None, detail)
    audit_failed(context, warehouse, obj, folder, str(error))
    return dg.Failure(
        description=f"{obj.api_name} in {folder} was not loaded: {error}",
        metadata={"file": error.file, "line": error.line, "column": error.column, "reason": error.detail},
        allow_retries=False,
    )


def stage_folder(context: dg.AssetExecutionContext, landing_zone: LandingZone, warehouse: Warehouse,
                 obj: SalesforceObject, folder: str, hash_key: bytes | None = None,
                 ) -> tuple[StagedBatch | AlreadyLoaded, StageReport, dict]:
    """The object's files in one folder as a batch, with the metadata of its materialization known
    now. Its rows are read when the IO manager loads it, which fills the report and adds the rest of
    the metadata (`report_metadata`). A file that cannot be read, now or then, is audited as FAILED
    and fails the step (no retry); so does a staging disk that is full or read-only, saying so.
    Files the loaded-files ledger holds as they are now are not read at all (AlreadyLoaded, with the
    report of the load that read them), unless the run has the FORCE_RELOAD_TAG (loaded_files.py)."""
    try:
        landed = object_files(landing_zone, folder, obj)
    except (CsvFormatError, ArchiveError) as error:
        raise unreadable_file(context, warehouse, obj, folder, error) from error
    keys = [f.key for f in landed]
    if context.has_partition_key:  # a step over several folders logs them once (each log line is an event)
        context.log.info(f"{obj.api_name} in {folder}: {len(keys)} file(s)")
    configured = folder_encoding(folder)  # a bad setting fails here, naming the variable
    metadata = {
        "source_files": [landing_zone.location(k) for k in keys],
        # The sensor compares this with the files it sees to know the folder is done.
        SOURCE_FINGERPRINT: fingerprint_files([f.landed for f in landed]),
        "encoding": configured.encoding,
    }
    applied = applied_fingerprint(obj, configured, hash_key)
    forced = force_requested(context.run.tags)
    try:
        earlier = look_up(warehouse, obj, folder, landed, applied, forced)
    except dg.Failure as refused:  # a warehouse error no retry cures: audited like the load's own would be
        audit_failed(context, warehouse, obj, folder, refused.description or str(refused))
        raise
    if earlier is not None:  # the checks show what the load that read the files found
        return AlreadyLoaded(obj.table_spec(), folder, f"{BACKUP_PREFIX}/{folder}/{obj.api_name}/",
                             skip_reason(obj, folder, earlier), skip_metadata(earlier)), \
            earlier[0].folder_report, metadata
    if forced:
        metadata["forced_reload"] = True
    encodings: dict[str, str] = {}  # file -> the encoding it was read in, where not the folder's

    def failure(error: BaseException) -> BaseException | None:
        """What the step fails with when reading the files does: an unreadable file audited as FAILED,
        a full or read-only disk for what staging writes saying what to fix; else the load's own."""
        if isinstance(error, (CsvFormatError, ArchiveError)):
            return unreadable_file(context, warehouse, obj, folder, error)
        fix = warehouse.what_to_fix(error) if isinstance(error, OSError) else None
        if fix is None:
            return None
        return CannotWrite(f"{obj.api_name} in {folder} was not loaded, and retrying cannot help: {fix}")

    try:
        with ExitStack() as stack:
            files = []
            for item in landed:
                source = stack.enter_context(item.source(landing_zone))
                chosen = choose_encoding(source, item.key, configured.encoding, configured.fallback, SETTING_HINT)
                if chosen.note:
                    encodings[item.key] = chosen.note
                    context.log.warning(f"{item.key}: {chosen.note}")
                files.append(SourceFile(item.key, source, chosen.encoding))
            # An inferred column the table already holds wider stays wider.
            inferred = files and any(not c.strict for c in obj.columns)
            table_types = warehouse.column_types(obj.schema, obj.table) if inferred else {}
            batch, report = stream_object(obj, files, partition=folder, table_types=table_types, hash_key=hash_key)
            batch.source.resources = stack.pop_all()  # the local copies live until the rows were read
    except Exception as error:
        reason = failure(error)
        if reason is None:
            raise
        raise reason from error
    batch.source.on_failure = failure
    batch.source.metadata = lambda: report_metadata(report)
    batch.source_key = f"{BACKUP_PREFIX}/{folder}/{obj.api_name}/"
    # A full folder is a snapshot of the objects it holds files for (even header-only), not of the others.
    batch.full_snapshot_date = full_backup_date(folder) if landed else None
    batch.bookkeeping = bookkeeping(warehouse, obj, folder, landed, applied, context.run.run_id, batch, report)
    if encodings:
        metadata["encoding_fallbacks"] = dg.MetadataValue.json(encodings)
    return batch, report, metadata


def report_metadata(report: StageReport) -> dict:
    """What reading the files found, for the materialization."""
    return {
        "rows_read": report.rows_read,
        "rows_loaded": report.rows_valid,
        "rows_rejected": report.rows_rejected,
        "values_truncated": report.values_truncated,
        "schema_drift": list(report.drift_columns),
        # Header fields loaded under a normalized name (docs/salesforce-values.md); also in the column schema.
        "renamed_columns": dg.MetadataValue.json(report.renamed_columns),
        "widened_columns": dg.MetadataValue.json(report.widened_columns),
        # Checkboxes exported empty (an API export writes `1` or nothing): read as false, noted per row.
        "empty_checkboxes_as_false": report.empty_as_false,
        **({"version_column": dg.MetadataValue.json({"compared": report.version_column or "(none: the later "
                                                    "folder, file and line wins)", "why": report.version_notes})}
           if report.version_notes else {}),
    }


def check_results(obj: SalesforceObject, reports: dict[str, StageReport]) -> Iterator[dg.AssetCheckResult]:
    """The three checks of a step. Over several folders (a multi-partition run) each check is one
    result for them all (Dagster records a check once per step): it passes when every folder passes,
    and says which did not. A folder already loaded is checked by what its load found."""
    if len(reports) == 1:
        ((folder, report),) = reports.items()
        yield dg.AssetCheckResult(
            check_name=NO_SCHEMA_DRIFT,
            passed=not report.drift_columns and not report.widened_columns,
            severity=dg.AssetCheckSeverity.WARN,
            description=drift_reason(obj, folder, report.drift_columns, report.widened_columns),
            metadata={
                "columns_not_in_catalog": list(report.drift_columns),
                "widened_columns": dg.MetadataValue.json(report.widened_columns),
                "handling": "loaded as text columns; add them to catalog.yaml to type them",
            },
        )
        yield warn_unless_none(
            NO_TRUNCATED_VALUES, "values_truncated", report.values_truncated,
            truncation_reason(obj, folder, report.values_truncated, report.truncated_samples),
            report.truncated_samples, ("file", "line", "column", "bytes"))
        yield warn_unless_none(
            NO_REJECTED_ROWS, "rows_rejected", report.rows_rejected,
            rejects_reason(obj, folder, report.rows_rejected, report.reject_samples),
            report.reject_samples, ("_source_file", "_source_line", "column_name", "reason"),
            rejects_table=f"{obj.schema}.{obj.table}_rejects")
        return
    drifted = {f: r for f, r in reports.items() if r.drift_columns or r.widened_columns}
    yield dg.AssetCheckResult(
        check_name=NO_SCHEMA_DRIFT, passed=not drifted, severity=dg.AssetCheckSeverity.WARN,
        description=" ".join(drift_reason(obj, f, r.drift_columns, r.widened_columns) for f, r in drifted.items())
        or f"Every column of {obj.api_name} in {len(reports)} folders is in the catalog with its type.",
        metadata={
            "columns_not_in_catalog": sorted({c for r in reports.values() for c in r.drift_columns}),
            "widened_columns": dg.MetadataValue.json({f: r.widened_columns for f, r in drifted.items()}),
            "folders": sorted(reports), "handling": "loaded as text columns; add them to catalog.yaml to type them",
        },
    )
    truncated = {f: r for f, r in reports.items() if r.values_truncated}
    yield warn_unless_none(
        NO_TRUNCATED_VALUES, "values_truncated", sum(r.values_truncated for r in reports.values()),
        " ".join(truncation_reason(obj, f, r.values_truncated, r.truncated_samples) for f, r in truncated.items())
        or f"No text value of {obj.api_name} in {len(reports)} folders was over the warehouse's text limit.",
        [s for r in truncated.values() for s in r.truncated_samples][:10], ("file", "line", "column", "bytes"),
        folders=sorted(reports))
    rejected = {f: r for f, r in reports.items() if r.rows_rejected}
    yield warn_unless_none(
        NO_REJECTED_ROWS, "rows_rejected", sum(r.rows_rejected for r in reports.values()),
        " ".join(rejects_reason(obj, f, r.rows_rejected, r.reject_samples) for f, r in rejected.items())
        or f"Every row of {obj.api_name} in {len(reports)} folders passed validation.",
        [s for r in rejected.values() for s in r.reject_samples][:10],
        ("_source_file", "_source_line", "column_name", "reason"),
        rejects_table=f"{obj.schema}.{obj.table}_rejects", folders=sorted(reports))


def build_object_asset(obj: SalesforceObject) -> dg.AssetsDefinition:
    key = object_asset_key(obj)
    tags = {"domain": "salesforce", "salesforce/kind": object_kind(obj)}
    if obj.namespace:
        tags["salesforce/namespace"] = obj.namespace

    with accepting("backfill_policy"):  # a beta parameter of @asset (etl_assets/accepted_warnings.py)
        @dg.asset(
            key=key,
            description=object_description(obj),
            group_name=obj.group,
            partitions_def=differential_folders,
            io_manager_key="warehouse_io_manager",
            kinds={"salesforce", "pandas", "csv"},
            tags=tags,
            owners=["team:data-engineering"],
            code_version=CODE_VERSION,
            pool="warehouse",
            backfill_policy=BACKFILL_POLICY,
            # Transient faults (S3 throttling, a dropped connection) are retried; bad files are not.
            retry_policy=dg.RetryPolicy(max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL),
            metadata={"salesforce_object": obj.api_name, "primary_key": obj.primary_key,
                      "version_column": obj.version_column or "(none)",
                      "history_table": history_table_name(obj) or "(off)",
                      "column_sources": dg.MetadataValue.json(obj.column_sources())},
            check_specs=[
                dg.AssetCheckSpec(NO_SCHEMA_DRIFT, asset=key, description="Every CSV column is in the catalog, and no inferred type had to widen."),
                dg.AssetCheckSpec(NO_REJECTED_ROWS, asset=key, description="Every row passed validation."),
                dg.AssetCheckSpec(NO_TRUNCATED_VALUES, asset=key,
                                  description="No text value was cut to fit the warehouse (Redshift's 65,535-byte VARCHAR)."),
            ],
        )
        def salesforce_object(context: dg.AssetExecutionContext, landing_zone: LandingZone, warehouse: Warehouse,
                              column_policy_key: HashKey):
            folders = list(context.partition_keys)
            key = column_policy_key.for_object(obj)  # a short key fails here, before any file is read
            if len(folders) == 1:
                # One connection for the step's look-ups and, nested, the IO manager's load, audit row and counts
                # (it stores the output before this generator resumes): DuckDB opens the file once a step.
                with warehouse.held():
                    batch, report, metadata = stage_folder(context, landing_zone, warehouse, obj, folders[0], key)
                    yield dg.Output(batch, metadata=metadata)
                yield from check_results(obj, {folders[0]: report})
                return
            # A multi-partition run (a backfill, under BACKFILL_POLICY): one step loads every folder in
            # order, each its own staged batch, transaction, audit row and materialization metadata.
            reports: dict[str, StageReport] = {}

            def stage(folder: str) -> tuple[StagedBatch | AlreadyLoaded, dict]:
                batch, reports[folder], metadata = stage_folder(context, landing_zone, warehouse, obj, folder, key)
                return batch, metadata  # on the folder's materialization, with the load's

            context.log.info(f"{obj.api_name}: {len(folders)} folders, {folders[0]} to {folders[-1]} "
                             "(each folder's files are in its materialization's source_files)")
            yield dg.Output(StagedPartitions(folders, stage), metadata={"folders_in_run": len(folders)})
            yield from check_results(obj, reports)

    return salesforce_object


salesforce_object_assets = [build_object_asset(obj) for obj in load_catalog().values()]
# Every object asset, whatever its group (standard, custom, one per managed package).
salesforce_objects = dg.AssetSelection.assets(*[a.key for a in salesforce_object_assets])
