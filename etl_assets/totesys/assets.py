"""One extraction asset per totesys table: incremental by last_updated, into raw_totesys.

The watermark is Dagster's own record, kept in each materialization's metadata
(`watermark_to`): a run reads the window [previous watermark_to, cut-off) and
records the cut-off as the new watermark. Metadata rather than time-window
partitions because the windows are irregular (the first run reads every row,
later ones only what changed since the last successful load) and a partition
per five minutes would be a huge, mostly empty partition space; rather than a
sensor cursor because the watermark then belongs to the asset, so a run launched
from the schedule, the UI or the CLI all continue from the same point, and it
only moves when the warehouse load succeeded (the metadata is recorded with the
materialization, after the IO manager committed).

The cut-off is the moment the run was created, the same for every table of the
run, so the tables of one run are a consistent cut of the source (a sales order
never arrives before the staff row it references).

Each window starts `overlap_seconds` (default 600) before the previous cut-off: a
source transaction stamps last_updated when it starts (PostgreSQL's now()) and
may commit after the previous run's read, so a row stamped just before that
cut-off would otherwise be skipped for good. Re-reading is safe because a row
whose (key, last_updated) is already in raw_totesys is dropped before landing;
only new versions go on. A window with no new versions produces no output: no
snapshot, no warehouse work, no new materialization, so dbt models downstream
are not triggered either.

Tables that facts are built from (sales_order, purchase_order, payment) also
append every new version to `raw_totesys.<table>_history`, an append-only log
the facts are built from: with raw_totesys.<table> holding only current state,
a version extracted and superseded between two dbt builds would otherwise never
reach its fact. The history is loaded before the current state, so the
watermark (on the current-state asset) never moves past a window whose versions
are not in the history.
"""


import datetime as dt
import tempfile
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from etl_assets.landing.zone import LandingZone
from etl_assets.totesys.source import TotesysSource, select_window_sql
from etl_assets.totesys.tables import RAW_SCHEMA, TABLES, VERSION_COLUMN, TotesysTable
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.batch import StagedBatch, StagedBatchWriter
from etl_assets.warehouse.spec import (
    SOURCE_FILE,
    SOURCE_LINE,
    SOURCE_PARTITION,
    TableSpec,
)

GROUP = "totesys"
SOURCE_PREFIX = "totesys"  # asset keys of the OLTP tables, and the landing zone prefix of the snapshots
CODE_VERSION = "1"
WATERMARK_TO = "watermark_to"
WATERMARK_FROM = "watermark_from"


DEFAULT_OVERLAP_SECONDS = 600
HISTORY_SUFFIX = "_history"


class ExtractionConfig(dg.Config):
    overlap_seconds: int = DEFAULT_OVERLAP_SECONDS
    """Re-read the last N seconds before the previous cut-off. Must exceed the longest source
    write transaction (plus any clock skew between Dagster and the source): a row stamped
    before the cut-off but committed after the read is then read by the next run."""


def source_asset_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([SOURCE_PREFIX, table])


def raw_asset_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([RAW_SCHEMA, table])


def history_asset_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([RAW_SCHEMA, table + HISTORY_SUFFIX])


def previous_watermark(instance: dg.DagsterInstance, key: dg.AssetKey) -> dt.datetime | None:
    """The cut-off of the last successful extraction, or None before the first one."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get(WATERMARK_TO)
    return dt.datetime.fromisoformat(value.value) if value is not None else None


def run_cut_off(context: dg.AssetExecutionContext) -> dt.datetime:
    """When the run was created (UTC, naive like the source): the same for every table and every
    retry of the run, so a retry lands the same snapshot file."""
    record = context.instance.get_run_record_by_id(context.run.run_id)
    created = record.create_timestamp if record else dt.datetime.now(dt.timezone.utc)
    return created.astimezone(dt.timezone.utc).replace(tzinfo=None)


def naive_utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def loaded_versions(warehouse: Warehouse, table: TotesysTable, since: dt.datetime) -> set[tuple]:
    """(key, last_updated) of the current-state rows stamped at or after `since`: what the
    overlap of a window re-reads and must not land twice. Empty before the first load."""
    spec = table.table_spec()
    if not warehouse.has_table(spec.schema, spec.name):
        return set()
    rows = warehouse.select(spec.schema, spec.name, [table.primary_key, VERSION_COLUMN],
                            at_least={VERSION_COLUMN: since.replace(tzinfo=dt.timezone.utc)})
    return {(key, naive_utc(stamp)) for key, stamp in rows}


def new_versions(rows: pa.Table, table: TotesysTable, loaded: set[tuple]) -> pa.Table:
    """The rows whose (key, last_updated) is not loaded yet."""
    if not loaded or rows.num_rows == 0:
        return rows
    keys = rows.column(table.primary_key).to_pylist()
    stamps = rows.column(VERSION_COLUMN).to_pylist()
    keep = [(k, naive_utc(s)) not in loaded for k, s in zip(keys, stamps)]
    return rows.filter(pa.array(keep, pa.bool_()))


def window_label(cut_off: dt.datetime) -> str:
    """A sortable name for a window, used as snapshot file name and lineage partition."""
    return cut_off.strftime("%Y%m%dT%H%M%S.%fZ")


def snapshot_key(table: str, cut_off: dt.datetime) -> str:
    return f"{SOURCE_PREFIX}/{table}/{window_label(cut_off)}.parquet"


def to_arrow(table: TotesysTable, rows: list[tuple]) -> pa.Table:
    schema = table.snapshot_schema()
    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    return pa.Table.from_arrays([pa.array(list(c), type=f.type) for c, f in zip(columns, schema)], schema=schema)


def for_warehouse(rows: pa.Table) -> pa.Table:
    """Money as the nearest double (Arrow's direct decimal cast is off by an ulp: 2.78 -> 2.7800000000000002)."""
    for index, field in enumerate(rows.schema):
        if pa.types.is_decimal(field.type):
            exact = rows.column(index).cast(pa.string()).cast(pa.float64())
            rows = rows.set_column(index, field.name, exact)
    return rows


def staged(spec: TableSpec, rows: pa.Table, cut_off: dt.datetime, landed: str, mode: str) -> StagedBatch:
    """The window's rows with their lineage (window label, snapshot file, line) as one batch."""
    writer = StagedBatchWriter(spec, partition=window_label(cut_off), mode=mode)
    try:
        writer.write(
            for_warehouse(rows)
            .append_column(SOURCE_PARTITION, pa.array([window_label(cut_off)] * rows.num_rows, pa.string()))
            .append_column(SOURCE_FILE, pa.array([landed] * rows.num_rows, pa.string()))
            .append_column(SOURCE_LINE, pa.array(range(1, rows.num_rows + 1), pa.int64()))
        )
    except Exception:
        writer.abort()
        raise
    return writer.close()


def build_extraction_asset(table: TotesysTable) -> dg.AssetsDefinition:
    key = raw_asset_key(table.name)
    common = dict(
        group_name=GROUP,
        kinds={"postgres", "parquet"},
        tags={"domain": "totesys"},
        owners=["team:data-engineering"],
        code_version=CODE_VERSION,
        skippable=True,
    )
    specs = [dg.AssetSpec(
        key,
        deps=[source_asset_key(table.name)],
        description=f"{table.description}\n\nRows of totesys `{table.name}` changed since the last run "
        f"(last_updated in [watermark - overlap, run start), versions already loaded left out), snapshotted "
        f"to the landing zone and merged (SCD Type 1 by `{table.primary_key}`, newest `last_updated` wins) "
        f"into `{RAW_SCHEMA}.{table.name}`.",
        metadata={"source_table": table.name, "primary_key": table.primary_key},
        **common,
    ).with_io_manager_key("warehouse_io_manager")]
    if table.keeps_history:
        specs.insert(0, dg.AssetSpec(
            history_asset_key(table.name),
            deps=[source_asset_key(table.name)],
            description=f"Every extracted version of totesys `{table.name}`, append-only (one snapshot file "
            f"per window; a version re-read by a window's overlap may appear twice, and dbt keeps the first "
            f"by (`{table.primary_key}`, `last_updated`)). The facts are built from it, so every version "
            f"reaches them however many extractions run between two dbt builds, and a full refresh "
            f"rebuilds the same facts.",
            metadata={"source_table": table.name, "version_key": [table.primary_key, VERSION_COLUMN]},
            **common,
        ).with_io_manager_key("warehouse_io_manager"))

    @dg.multi_asset(
        name=f"extract_{table.name}",
        specs=specs,
        pool="warehouse",
        retry_policy=dg.RetryPolicy(max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL),
    )
    def extract(
        context: dg.AssetExecutionContext,
        config: ExtractionConfig,
        totesys_source: TotesysSource,
        landing_zone: LandingZone,
        warehouse: Warehouse,
    ):
        start = previous_watermark(context.instance, key)
        cut_off = run_cut_off(context)
        if start is not None and cut_off <= start:
            context.log.info(f"{table.name}: window [{start}, {cut_off}) is empty; nothing to read")
            return
        read_from = start - dt.timedelta(seconds=config.overlap_seconds) if start is not None else None
        params = [read_from, cut_off] if read_from is not None else [cut_off]
        with totesys_source.connect(read_only=True) as source:
            sql = select_window_sql(table.name, table.column_names, source.param, read_from is not None)
            batches = [to_arrow(table, rows) for rows in source.stream(sql, params)]
        read = pa.concat_tables(batches) if batches else to_arrow(table, [])
        rows = new_versions(read, table, loaded_versions(warehouse, table, read_from) if read_from else set())
        context.log.info(f"{table.name}: {read.num_rows} row(s) with last_updated in [{read_from}, {cut_off}), "
                         f"{rows.num_rows} of them new versions")
        if rows.num_rows == 0:
            return

        landed = snapshot_key(table.name, cut_off)
        with tempfile.TemporaryDirectory(prefix=f"totesys_{table.name}_") as directory:
            path = Path(directory) / "snapshot.parquet"
            pq.write_table(rows, path, compression="snappy")
            landing_zone.put_file(landed, path)
        window = {
            WATERMARK_FROM: start.isoformat() if start else "",
            WATERMARK_TO: cut_off.isoformat(),
            "read_from": read_from.isoformat() if read_from else "",
            "rows_read": rows.num_rows,
            "rows_reread": read.num_rows - rows.num_rows,
            "snapshot": landing_zone.location(landed),
            "source": totesys_source.describe(),
        }
        if table.keeps_history:  # first: the watermark below must not pass versions the history lacks
            yield dg.Output(staged(table.history_spec(), rows, cut_off, landed, "append"),
                            output_name=history_asset_key(table.name).to_python_identifier(), metadata=window)
        yield dg.Output(staged(table.table_spec(), rows, cut_off, landed, "merge"),
                        output_name=key.to_python_identifier(), metadata=window)

    return extract


totesys_source_tables = [
    dg.AssetSpec(
        source_asset_key(t.name),
        description=f"totesys OLTP table `{t.name}`: {t.description}",
        group_name=GROUP,
        kinds={"postgres"},
        tags={"domain": "totesys"},
        owners=["team:data-engineering"],
        code_version=CODE_VERSION,
        metadata={"primary_key": t.primary_key},
    )
    for t in TABLES.values()
]
totesys_extraction_assets = [build_extraction_asset(t) for t in TABLES.values()]
