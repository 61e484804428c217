"""The warehouse IO manager every domain hands its rows to.

Unlike dagster-duckdb's IO managers, which delete a partition's slice and
insert it again, this one merges (SCD Type 1): a partition adds or updates
keys, it does not own rows. Asset keys name tables as [schema, table].
"""

from __future__ import annotations

import time

import dagster as dg
import pyarrow.parquet as pq

from etl_assets.notifications import Notifier
from etl_assets.warehouse.audit import (
    LoadRecord,
    ensure_audit_table,
    notify_load,
    record_load,
    record_steps,
    report_load,
    utcnow,
)
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.batch import AlreadyLoaded, StagedBatch, StagedPartitions
from etl_assets.warehouse.history import history_spec, keeps_history
from etl_assets.warehouse.spec import (
    DELETED_IN_SOURCE_AT,
    LINEAGE_COLUMNS,
    LOADED_AT,
    ColumnType,
    TableSpec,
)
from etl_assets.warehouse.steps import Deferred, rows_merged


def table_schema(spec: TableSpec) -> dg.TableSchema:
    columns = [
        dg.TableColumn(
            c.name,
            c.type.value,
            description="; ".join(filter(None, [f"source column `{c.source_name}`" if c.source_name else None,
                                                f"policy: {c.policy}" if c.policy else None])) or None,
            constraints=dg.TableColumnConstraints(nullable=c.nullable, unique=c.name == spec.primary_key),
        )
        for c in spec.columns
    ]
    columns += [dg.TableColumn(name, "lineage") for name, _ in LINEAGE_COLUMNS]
    columns.append(dg.TableColumn(LOADED_AT, ColumnType.DATETIME.value))
    if spec.track_deletions:
        columns.append(dg.TableColumn(DELETED_IN_SOURCE_AT, ColumnType.DATETIME.value,
                                      description="set when a full snapshot showed the row deleted in source"))
    return dg.TableSchema(columns=columns)


PREVIEW_ROWS = 5
PREVIEW_WIDTH = 40


def batch_preview(batch: StagedBatch, rows: int = PREVIEW_ROWS) -> dg.MarkdownMetadataValue:
    """The first few staged rows as a Markdown table: the first rows a streamed load read, or read
    from the head of the first Parquet part (one small record batch); never from the warehouse table."""
    head = batch.head
    for path in batch.files:
        with pq.ParquetFile(path) as part:
            head = next(part.iter_batches(batch_size=rows), None)
        if head is not None and head.num_rows:
            break
    if head is None or not head.num_rows:
        return dg.MetadataValue.md("_no rows staged_")

    def cell(value) -> str:
        text = "" if value is None else str(value)
        text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
        return text if len(text) <= PREVIEW_WIDTH else text[: PREVIEW_WIDTH - 1] + "…"
    names = head.schema.names
    lines = ["| " + " | ".join(cell(n) for n in names) + " |", "|" + "---|" * len(names)]
    for record in head.slice(0, rows).to_pylist():
        lines.append("| " + " | ".join(cell(record[n]) for n in names) + " |")
    return dg.MetadataValue.md("\n".join(lines))


# A step over several partitions keeps one warehouse connection for at most this long before it lets
# go for RELEASE_PAUSE_SECONDS: on DuckDB the connection is the file's writer lock, which a reader (the
# audit endpoint, `etl-assets audit`) or another process's load may be waiting for.
HOLD_SECONDS = 5.0
RELEASE_PAUSE_SECONDS = 0.25  # duckdb_files.MAX_WAIT_INTERVAL_SECONDS: a waiting process tries within it


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Bulk-loads StagedBatch outputs into the configured warehouse and merges them."""

    warehouse: Warehouse
    notifier: Notifier | None = None  # None: outcomes are only audited and logged

    def _record(self, context: dg.OutputContext, batch: StagedBatch, **outcome) -> LoadRecord:
        spec = batch.spec
        return LoadRecord(
            domain=context.asset_key.path[0], source_key=batch.source_key or batch.partition or "",
            target_table=f"{spec.schema}.{spec.name}", action=batch.mode,
            rows_read=batch.rows + batch.rejected_rows, rows_rejected=batch.rejected_rows, run_id=context.run_id,
            **outcome,
        )

    def handle_output(self, context: dg.OutputContext, obj: StagedBatch | StagedPartitions) -> None:
        if isinstance(obj, StagedPartitions):
            # A step over several partitions: each staged, loaded and audited in turn, its metadata on
            # its own partition's materialization. The first that fails stops the step (those before it
            # are committed: loads are idempotent merges, so the retry or a re-run loads them again).
            # One connection serves several partitions, released every HOLD_SECONDS (then a pause lets
            # a process waiting for DuckDB's writer lock in).
            pending = list(obj.partitions)
            while pending:
                with self.warehouse.held():
                    started = time.monotonic()
                    while pending and time.monotonic() - started < HOLD_SECONDS:
                        partition = pending.pop(0)
                        batch, metadata = obj.stage(partition)
                        self._store(context, batch, partition, metadata)
                if pending:
                    time.sleep(RELEASE_PAUSE_SECONDS)
            return
        if not isinstance(obj, (StagedBatch, AlreadyLoaded)):
            raise TypeError(f"WarehouseIOManager stores StagedBatch outputs, got {type(obj).__name__}")
        # One connection for the load, its audit row and the counts (DuckDB: one open and close of the
        # file per step, not five), released when the output is stored.
        with self.warehouse.held():
            self._store(context, obj)

    def _store(self, context: dg.OutputContext, obj: StagedBatch | AlreadyLoaded, partition: str | None = None,
               staged_metadata: dict | None = None) -> None:
        """Load one batch; its metadata goes on the output's materialization, or with `partition` on
        that partition's materialization only, after `staged_metadata` (what staging it found). A batch
        not read yet is read by the load: its counts, preview and the domain's metadata come after it."""
        if isinstance(obj, AlreadyLoaded):
            self._skip(context, obj, partition, staged_metadata)
            return
        spec = obj.spec
        source = obj.source  # the domain's rows, and what it reports once they are read
        record = self._record(context, obj)
        try:
            after = []
            if self.warehouse.capabilities.runs_steps_in_order:
                # The audit row in the load's own transaction: it exists exactly when the rows committed.
                ensure_audit_table(self.warehouse)
                after = record_steps(self.warehouse, record, rows_loaded=Deferred(rows_merged),
                                     rows_read=Deferred(lambda results: obj.rows + obj.rejected_rows),
                                     rows_rejected=Deferred(lambda results: obj.rejected_rows))
            result = self.warehouse.load(obj, after=after)
        except Exception as error:
            failure = source.on_failure(error) if source is not None else None
            if obj.source is not None:
                obj.discard()  # nothing to keep: its rows are in the source
            if failure is not None:
                raise failure from error  # the domain's own failure (a file it cannot read), audited by it
            fix = self.warehouse.what_to_fix(error)  # a permission or a full disk: a person must act
            try:
                report_load(self.warehouse, self._record(context, obj, status="FAILED",
                                                         error=fix or f"{type(error).__name__}: {error}"),
                            self.notifier, context.log)
            except Exception as audit_error:  # never let the audit hide why the load failed
                context.log.error(f"Could not record the failed load in the audit table: {audit_error}")
            if obj.source is None:
                context.log.error(f"Load of {spec.schema}.{spec.name} failed; staged files kept in {obj.directory}")
            if self.warehouse.is_transient(error):
                raise  # the asset's RetryPolicy tries again
            reason = (f"{spec.schema}.{spec.name} was not loaded, and retrying cannot help: {fix}" if fix
                      else f"{self.warehouse.describe()} refused the load of {spec.schema}.{spec.name}: {error}")
            raise dg.Failure(description=reason, allow_retries=False) from error
        preview = batch_preview(obj)
        record.rows_read, record.rows_rejected = obj.rows + obj.rejected_rows, obj.rejected_rows
        if source is not None:
            staged_metadata = {**(staged_metadata or {}), **source.metadata()}
        obj.discard()
        record.rows_loaded = result.inserted + result.updated
        if after:
            record.finished_at = record.finished_at or utcnow()
            notify_load(record, self.notifier, context.log)
        else:
            report_load(self.warehouse, record, self.notifier, context.log)
        metadata = (
            {
                **(staged_metadata or {}),
                "dagster/table_name": f"{spec.schema}.{spec.name}",
                "dagster/row_count": self.warehouse.count_rows(spec.schema, spec.name),
                "dagster/column_schema": table_schema(spec),
                "preview": preview,
                "warehouse": self.warehouse.describe(),
                "rows_staged": obj.rows,
                "keys_staged": result.keys_staged,
                "rows_rejected": result.rows_rejected,
                "inserted": result.inserted,
                "updated": result.updated,
                "unchanged": result.unchanged,
                "deleted": result.deleted,
                **({"rows_deleted_in_source": self.warehouse.count_rows(spec.schema, spec.name, DELETED_IN_SOURCE_AT)}
                   if spec.track_deletions else {}),
                **(self._history_metadata(spec, result.versions_added) if keeps_history(spec) else {}),
                "load_mode": obj.mode,
                "added_columns": list(result.added_columns),
            }
        )
        if partition is None:
            context.add_output_metadata(metadata)
        else:
            context.step_context.add_asset_metadata(metadata, asset_key=context.asset_key, partition_key=partition)

    def _skip(self, context: dg.OutputContext, skipped: AlreadyLoaded, partition: str | None,
              staged_metadata: dict | None) -> None:
        """A partition already loaded as it is: audited SKIPPED (no notification: nothing changed), logged,
        and shown on its materialization; the table is only counted."""
        spec = skipped.spec
        record_load(self.warehouse, LoadRecord(
            domain=context.asset_key.path[0], source_key=skipped.source_key, target_table=f"{spec.schema}.{spec.name}",
            action="merge", status="SKIPPED", error=skipped.reason, run_id=context.run_id))
        context.log.info(skipped.reason)
        metadata = {**(staged_metadata or {}), **skipped.metadata,
                    "dagster/table_name": f"{spec.schema}.{spec.name}",
                    "dagster/row_count": self.warehouse.count_rows(spec.schema, spec.name),
                    "warehouse": self.warehouse.describe(), "load_mode": "skipped",
                    **(self._history_metadata(spec, 0) if keeps_history(spec) else {})}
        if partition is None:
            context.add_output_metadata(metadata)
        else:
            context.step_context.add_asset_metadata(metadata, asset_key=context.asset_key, partition_key=partition)

    def _history_metadata(self, spec: TableSpec, added: int) -> dict:
        """The versions table (history mode): its name, the versions this load added, the versions it holds."""
        versions = history_spec(spec)
        return {"history_table": f"{versions.schema}.{versions.name}", "versions_added": added,
                "versions": self.warehouse.count_rows(versions.schema, versions.name)}

    def load_input(self, context: dg.InputContext):
        """Nothing reads a loaded table as an asset input: dbt and SQL read the warehouse itself."""
        raise TypeError(f"{context.asset_key.to_user_string()} is a warehouse table: read it with SQL (dbt), "
                        "not as an asset input")
