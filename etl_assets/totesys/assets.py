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
never arrives before the staff row it references). A window with no rows
produces no output: no snapshot, no warehouse work, no new materialization, so
dbt models downstream are not triggered either.
"""


import datetime as dt
import tempfile
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from etl_assets.resources.landing_zone import LandingZone
from etl_assets.resources.warehouse.batch import StagedBatchWriter
from etl_assets.resources.warehouse.spec import SOURCE_FILE, SOURCE_LINE, SOURCE_PARTITION
from etl_assets.totesys.source import TotesysSource, select_window_sql
from etl_assets.totesys.tables import RAW_SCHEMA, TABLES, TotesysTable

GROUP = "totesys"
SOURCE_PREFIX = "totesys"  # asset keys of the OLTP tables, and the landing zone prefix of the snapshots
CODE_VERSION = "1"
WATERMARK_TO = "watermark_to"
WATERMARK_FROM = "watermark_from"


class ExtractionConfig(dg.Config):
    settle_seconds: int = 0
    """Leave out rows changed in the last N seconds before the run started, for sources whose
    transactions commit well after they stamp last_updated (or whose clock runs ahead)."""


def source_asset_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([SOURCE_PREFIX, table])


def raw_asset_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([RAW_SCHEMA, table])


def previous_watermark(instance: dg.DagsterInstance, key: dg.AssetKey) -> dt.datetime | None:
    """The cut-off of the last successful extraction, or None before the first one."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get(WATERMARK_TO)
    return dt.datetime.fromisoformat(value.value) if value is not None else None


def run_cut_off(context: dg.AssetExecutionContext, settle_seconds: int) -> dt.datetime:
    """When the run was created (UTC, naive like the source), less the settle time."""
    record = context.instance.get_run_record_by_id(context.run.run_id)
    created = record.create_timestamp if record else dt.datetime.now(dt.timezone.utc)
    return created.astimezone(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(seconds=settle_seconds)


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


def build_extraction_asset(table: TotesysTable) -> dg.AssetsDefinition:
    key = raw_asset_key(table.name)
    spec = table.table_spec()

    @dg.asset(
        key=key,
        deps=[source_asset_key(table.name)],
        description=f"{table.description}\n\nRows of totesys `{table.name}` changed since the last run "
        f"(last_updated in [watermark, run start)), snapshotted to the landing zone and merged "
        f"(SCD Type 1 by `{table.primary_key}`, newest `last_updated` wins) into `{RAW_SCHEMA}.{table.name}`.",
        group_name=GROUP,
        io_manager_key="warehouse_io_manager",
        output_required=False,
        kinds={"postgres", "parquet"},
        tags={"domain": "totesys"},
        owners=["team:data-engineering"],
        code_version=CODE_VERSION,
        pool="warehouse",
        retry_policy=dg.RetryPolicy(max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL),
        metadata={"source_table": table.name, "primary_key": table.primary_key},
    )
    def extract(
        context: dg.AssetExecutionContext,
        config: ExtractionConfig,
        totesys_source: TotesysSource,
        landing_zone: LandingZone,
    ):
        start = previous_watermark(context.instance, key)
        cut_off = run_cut_off(context, config.settle_seconds)
        if start is not None and cut_off <= start:
            context.log.info(f"{table.name}: window [{start}, {cut_off}) is empty; nothing to read")
            return
        params = [start, cut_off] if start is not None else [cut_off]
        with totesys_source.connect(read_only=True) as source:
            sql = select_window_sql(table.name, table.column_names, source.param, start is not None)
            batches = [to_arrow(table, rows) for rows in source.stream(sql, params)]
        rows = pa.concat_tables(batches) if batches else to_arrow(table, [])
        context.log.info(f"{table.name}: {rows.num_rows} row(s) with last_updated in [{start}, {cut_off})")
        if rows.num_rows == 0:
            return

        landed = snapshot_key(table.name, cut_off)
        with tempfile.TemporaryDirectory(prefix=f"totesys_{table.name}_") as directory:
            path = Path(directory) / "snapshot.parquet"
            pq.write_table(rows, path, compression="snappy")
            landing_zone.put_file(landed, path)
        writer = StagedBatchWriter(spec, partition=window_label(cut_off))
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
        yield dg.Output(
            writer.close(),
            metadata={
                WATERMARK_FROM: start.isoformat() if start else "",
                WATERMARK_TO: cut_off.isoformat(),
                "rows_read": rows.num_rows,
                "snapshot": landing_zone.location(landed),
                "source": totesys_source.describe(),
            },
        )

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
