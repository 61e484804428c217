"""What an engine can do (`Capabilities`), and how it spells the statements of a load (`Dialect`).

The load plan (plan.py) is the same story on every engine; the capabilities choose its paths and
the dialect writes its statements. `Dialect` spells them as PostgreSQL does; DuckDB and Redshift
override where they differ (types, how staged rows are read, locks, the rows a batch beats).
Identifiers come from validated specs and are quoted; values travel as parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from etl_assets.warehouse.batch import StagedBatch
from etl_assets.warehouse.spec import (
    DELETED_IN_SOURCE_AT,
    FULL_BACKUP_IDS,
    FULL_BACKUPS,
    LINEAGE_COLUMNS,
    LOADED_AT,
    REJECTS_SCHEMA,
    Column,
    ColumnType,
    TableSpec,
    TextLimits,
    quote,
)
from etl_assets.warehouse.steps import Step, StreamStep

STAGING = "etl_staging"  # the temporary table staged rows are copied into
LATEST = "etl_latest"  # the newest staged version of each key
CHUNK = "etl_chunk"  # the temporary table a chunk of streamed rows is merged from
REJECTS_COLUMNS = tuple(REJECTS_SCHEMA.names)


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do, which decides how its loads are planned (dlt's destination capabilities)."""

    param: str = "%s"  # the driver's placeholder
    text_limits: TextLimits = TextLimits()  # the longest text it stores: a batch's rows are cut or refused to fit
    max_columns: int | None = None
    # Sessions run a transaction's steps one by one in this process, so a step can use the results
    # before it (Deferred parameters, Branches); not Redshift's Data API, which sends a batch at once.
    runs_steps_in_order: bool = False
    # Rows not read yet can be read inside the load's statements; else they are staged to Parquet first.
    streams_rows: bool = False
    # ... and are better streamed than staged into a table that exists (not DuckDB's, see duckdb.py).
    streams_into_existing_tables: bool = True
    # A first load of staged files whose keys are distinct COPYs them straight into the new table (PostgreSQL).
    copies_into_new_tables: bool = False
    # Streamed rows for a table that exists are merged a chunk at a time as they arrive (PostgreSQL).
    merges_streamed_chunks: bool = False
    # (Streamed rows that go straight into a table that exists: the dialect's `merges_in_place`, DuckDB's.)


def table(spec: TableSpec) -> str:
    return f"{quote(spec.schema)}.{quote(spec.name)}"


def rejects_table(spec: TableSpec) -> str:
    return f"{quote(spec.schema)}.{quote(spec.rejects_name)}"


def full_backups_table(spec: TableSpec) -> str:
    return f"{quote(spec.schema)}.{quote(FULL_BACKUPS)}"


def full_backup_ids_table(spec: TableSpec) -> str:
    return f"{quote(spec.schema)}.{quote(spec.name + FULL_BACKUP_IDS)}"


def staged_columns(spec: TableSpec) -> tuple[str, ...]:
    return tuple(c.name for c in spec.columns) + tuple(name for name, _ in LINEAGE_COLUMNS)


def column_list(spec: TableSpec) -> str:
    return ", ".join(quote(c) for c in staged_columns(spec))


def version_order(spec: TableSpec) -> list[str]:
    """Newest first by the version column, then the later partition, file and line (the only order
    of a table without a version column: the later folder wins, still the same whatever the load order)."""
    return [spec.version_column] * bool(spec.version_column) + [name for name, _ in LINEAGE_COLUMNS]


def newer(spec: TableSpec, new: str, old: str) -> str:
    """`new` beats `old` on the version order, as a portable boolean expression."""
    columns = version_order(spec)
    expression = f"{new}.{quote(columns[-1])} > {old}.{quote(columns[-1])}"
    for column in reversed(columns[:-1]):
        a, b = f"{new}.{quote(column)}", f"{old}.{quote(column)}"
        expression = f"({a} > {b} OR ({a} = {b} AND {expression}))"
    return expression


class Dialect:
    """The statements of a load as PostgreSQL spells them; engines override what differs."""

    type_names: ClassVar[dict[ColumnType, str]] = {
        ColumnType.STRING: "TEXT",
        ColumnType.DATETIME: "TIMESTAMPTZ",
        ColumnType.DATE: "DATE",
        ColumnType.BOOLEAN: "SMALLINT",
        ColumnType.INTEGER: "BIGINT",
        ColumnType.FLOAT: "DOUBLE PRECISION",
    }
    primary_key_constraint: ClassVar[bool] = True
    copy_format: ClassVar[str] = "csv"  # how Session.copy_files encodes staged rows for COPY FROM STDIN
    # Redshift: views that bind their tables when read, so the tables can be altered under them.
    late_binding_views: ClassVar[bool] = False
    late_binding_clause: ClassVar[str] = ""
    loaded_at_default: ClassVar[str] = ""  # PostgreSQL: what a COPY straight into a new table sets `_loaded_at` to

    def __init__(self, capabilities: Capabilities):
        self.capabilities = capabilities
        self.param = capabilities.param

    # Tables: their columns, DDL and limits.

    def column_type(self, column: Column, batch: StagedBatch | None = None) -> str:
        return self.type_names[column.type]

    def create_table_sql(self, spec: TableSpec, batch: StagedBatch | None = None) -> str:
        defs = self._column_defs(spec.columns, batch) + self._lineage_defs()
        defs.append(f"{quote(LOADED_AT)} {self.type_names[ColumnType.DATETIME]}{self.loaded_at_default}")
        if spec.track_deletions:
            defs.append(f"{quote(DELETED_IN_SOURCE_AT)} {self.type_names[ColumnType.DATETIME]}")
        if self.primary_key_constraint and spec.primary_key:
            defs.append(self.primary_key_sql(spec))
        return (
            f"CREATE TABLE IF NOT EXISTS {table(spec)} (\n  " + ",\n  ".join(defs) + "\n)"
            + self._table_attributes(spec)
        )

    def primary_key_sql(self, spec: TableSpec) -> str:
        return f"PRIMARY KEY ({quote(spec.primary_key)})"

    def primary_key_name(self, spec: TableSpec) -> str | None:
        """The name of the table's primary key constraint, where the DDL names it (else None)."""
        return None

    def create_rejects_sql(self, spec: TableSpec) -> str:
        text, integer = self._rejects_types()
        return (
            f"CREATE TABLE IF NOT EXISTS {rejects_table(spec)} ("
            f'"_source_partition" {text}, "_source_file" {text}, "_source_line" {integer}, '
            f'"column_name" {text}, "reason" {text}, "raw_record" {text})'
        )

    def create_staging_sql(self, batch: StagedBatch, name: str = STAGING) -> str:
        columns = [replace(c, nullable=True) for c in batch.spec.columns]  # keeps each column's long_text
        defs = self._column_defs(columns, batch) + self._lineage_defs()
        return f"CREATE TEMPORARY TABLE {name} (" + ", ".join(defs) + ")" + self.temporary_attributes(batch.spec)

    def temporary_attributes(self, spec: TableSpec) -> str:
        """What a load's temporary tables of rows (staging, LATEST) add after their columns (Redshift:
        the table's distribution, so the merge's joins stay on each slice)."""
        return ""

    def create_deletion_tables_steps(self, spec: TableSpec) -> list[Step]:
        """The evidence the deletion marks are computed from: which full snapshots were loaded, with the
        newest version each one holds (its cutoff), and the newest snapshot holding each key."""
        text, _ = self._lineage_types()
        stamp = self.type_names[ColumnType.DATETIME]
        key_column = spec.column(spec.primary_key)
        key_type = text if key_column.type is ColumnType.STRING else self.column_type(key_column)
        key = quote(spec.primary_key)
        constraint = f", PRIMARY KEY ({key})" if self.primary_key_constraint else ""
        return [
            Step(f"CREATE TABLE IF NOT EXISTS {full_backups_table(spec)} ("
                 f'"table_name" {text}, "partition" {text}, "cutoff" {stamp}, "backup_at" {stamp})'),
            Step(f"CREATE TABLE IF NOT EXISTS {full_backup_ids_table(spec)} ("
                 f'{key} {key_type} NOT NULL, "last_full_partition" {text}{constraint})'),
        ]

    def marked_rows_index_steps(self, spec: TableSpec) -> list[Step]:
        """Where the engine has partial indexes: one on the rows marked deleted in source, so the marks
        check reads no unmarked row. Made with the table or its mark column."""
        return []

    def widen_steps(self, spec: TableSpec, batch: StagedBatch, existing: dict[str, int | None]) -> list[Step]:
        """Wider text columns, where the engine's text has a width (Redshift)."""
        return []

    def retype_steps(self, batch: StagedBatch) -> list[Step]:
        """Widen table columns to the batch's types (an inferred type a value did not fit). Old values
        are cast; booleans (0/1) become `true`/`false`, so the column reads as the CSV did."""
        steps = []
        for name, (old, new) in batch.retyped.items():
            column = quote(name)
            cast = f"{column}::{self.type_names[new]}"
            if old is ColumnType.BOOLEAN and new is ColumnType.STRING:
                cast = f"CASE {column} WHEN 1 THEN 'true' WHEN 0 THEN 'false' END"
            elif old is ColumnType.DATE and new is ColumnType.DATETIME:  # midnight UTC, whatever the session's zone
                cast = f"timezone('UTC', {column}::timestamp)"
            steps.append(Step(f"ALTER TABLE {table(batch.spec)} ALTER COLUMN {column} "
                              f"TYPE {self.type_names[new]} USING {cast}"))
        return steps

    # The load's statements.

    def lock_steps(self, spec: TableSpec) -> list[Step]:
        """First in the load's transaction: what serializes loads of the table, or tunes the session for it."""
        return []

    def copy_files_step(self, target: str, files: Sequence[Path], columns: Sequence[str]) -> Step:
        """The staged Parquet files streamed into `target` (COPY FROM STDIN)."""
        names = ", ".join(quote(c) for c in columns)
        return Step(f"COPY {target} ({names}) FROM STDIN WITH (FORMAT {self.copy_format})",
                    files=tuple(files), columns=tuple(columns))

    def stage_steps(self, batch: StagedBatch) -> tuple[str, tuple, list[Step]]:
        """Steps that fill the staging table; returns (source to read staged rows from, its params, steps)."""
        steps = [Step(self.create_staging_sql(batch))]
        if batch.files:
            steps.append(self.copy_files_step(STAGING, batch.files, staged_columns(batch.spec)))
        return STAGING, (), steps

    def stream_step(self, rows, target: str, direct: bool) -> StreamStep:
        """The statement that reads a batch's rows (a RowStream) into `target`: the staging table, or with
        `direct` the table itself, whose `_loaded_at` it sets as the merge's INSERT does."""
        raise NotImplementedError(f"{type(self).__name__} does not load streamed rows")

    def view_source(self, batch: StagedBatch, source: str) -> str:
        """`source` as a view can read it (DuckDB: the files named in the SQL, a view takes no parameters)."""
        return source

    def latest_steps(self, spec: TableSpec, source: str, params: tuple) -> list[Step]:
        """Steps that leave the newest staged version of each key in LATEST."""
        order = ", ".join(f"{quote(c)} DESC" for c in version_order(spec))
        return [Step(
            f"CREATE TEMPORARY TABLE {LATEST}{self.temporary_attributes(spec)} AS SELECT {column_list(spec)} FROM ("
            f"SELECT *, ROW_NUMBER() OVER (PARTITION BY {quote(spec.primary_key)} ORDER BY {order}) AS etl_rank "
            f"FROM {source}) ranked WHERE etl_rank = 1", params)]

    def merges_in_place(self, batch: StagedBatch, existing: dict) -> bool:
        """Whether this batch's rows, streamed, go straight into the table (with the columns `existing`), the
        losing version of each key deleted after (`in_place_merge_steps`): no engine's but DuckDB's."""
        return False

    def in_place_merge_steps(self, batch: StagedBatch, rows) -> tuple[list, list]:
        """The merge of streamed rows written straight into the table, and the steps that drop its LATEST."""
        raise NotImplementedError(f"{type(self).__name__} does not merge streamed rows in place")

    def merge_steps(self, batch: StagedBatch, existing: dict[str, int | None]) -> list[Step]:
        """The merge of LATEST into the table: the rows it beats updated (result `updated`), the keys the
        table lacks inserted (result `inserted`)."""
        return [self.update_step(batch, existing), Step(self.insert_sql(batch.spec), result="inserted")]

    def update_step(self, batch: StagedBatch, existing: dict[str, int | None]) -> Step:
        """The merge's update of the rows the batch beats."""
        spec = batch.spec
        sets = ", ".join(f"{quote(n)} = s.{quote(n)}" for n in staged_columns(spec) if n != spec.primary_key)
        key = quote(spec.primary_key)
        return Step(f"UPDATE {table(spec)} AS t SET {sets}, {quote(LOADED_AT)} = CURRENT_TIMESTAMP "
                    f"FROM {LATEST} AS s WHERE t.{key} = s.{key} AND {newer(spec, 's', 't')}", result="updated")

    def insert_sql(self, spec: TableSpec) -> str:
        """The merge's insert of the keys the table lacks."""
        names = [quote(c) for c in staged_columns(spec)]
        key = quote(spec.primary_key)
        return (
            f"INSERT INTO {table(spec)} ({', '.join(names)}, {quote(LOADED_AT)}) "
            f"SELECT {', '.join('s.' + n for n in names)}, CURRENT_TIMESTAMP FROM {LATEST} AS s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {table(spec)} AS t WHERE t.{key} = s.{key})"
        )

    def chunk_merge_sql(self, spec: TableSpec, probe: bool = False, gathered: str | None = None) -> str:
        """Where `Capabilities.merges_streamed_chunks`: merge the CHUNK table into the table; returns
        (inserted, updated). `probe`: pass on only the chunk's rows that are new or newer, looked up first.
        `gathered`: keep the table's versions in the same statement (and return their counts too)."""
        raise NotImplementedError(f"{type(self).__name__} does not merge by chunk")

    def rejects_steps(self, batch: StagedBatch) -> list[Step]:
        if not batch.reject_files:
            return []
        return [self.copy_files_step(rejects_table(batch.spec), batch.reject_files, REJECTS_COLUMNS)]

    def after_merge_steps(self, spec: TableSpec) -> list[Step]:
        """Last in a merge's transaction, before the caller's own steps (Redshift: the object's procedure)."""
        return []

    def _column_defs(self, columns: Sequence[Column], batch: StagedBatch | None) -> list[str]:
        return [f"{quote(c.name)} {self.column_type(c, batch)}" + ("" if c.nullable else " NOT NULL")
                for c in columns]

    def _lineage_defs(self) -> list[str]:
        text, integer = self._lineage_types()
        return [f'"_source_partition" {text}', f'"_source_file" {text}', f'"_source_line" {integer}']

    def _lineage_types(self) -> tuple[str, str]:
        return self.type_names[ColumnType.STRING], self.type_names[ColumnType.INTEGER]

    def _rejects_types(self) -> tuple[str, str]:
        return self.type_names[ColumnType.STRING], self.type_names[ColumnType.INTEGER]

    def _table_attributes(self, spec: TableSpec) -> str:
        return ""

