"""The warehouse interface every engine implements, and the SCD Type 1 merge.

A load is one transaction: ensure the tables (and any new columns), bulk-load a
staging table, keep the newest version of each key, update the rows it beats,
insert the new keys, and replace the rejects of the partition. Whatever fails,
the transaction rolls back and the table is as it was.

"Newest" is decided by (version column, source partition, source file, source
line), compared left to right: the same rows win whatever order partitions are
loaded in, and loading a partition twice changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import dagster as dg
import pandas as pd

from etl_assets.resources.warehouse.batch import StagedBatch
from etl_assets.resources.warehouse.spec import (
    LINEAGE_COLUMNS,
    LOADED_AT,
    SOURCE_FILE,
    SOURCE_LINE,
    SOURCE_PARTITION,
    Column,
    ColumnType,
    TableSpec,
    quote,
)

STAGING = "etl_staging"
LATEST = "etl_latest"


@dataclass(frozen=True)
class LoadResult:
    keys_staged: int
    rows_rejected: int
    inserted: int
    updated: int
    added_columns: tuple[str, ...]

    @property
    def unchanged(self) -> int:
        """Staged keys whose warehouse row was already as new or newer."""
        return self.keys_staged - self.inserted - self.updated


class Session:
    """One open transaction on an engine; engines subclass it."""

    param = "%s"

    def execute(self, sql: str, params: Sequence = ()) -> int:
        """Run one statement; return the number of rows it affected."""
        raise NotImplementedError

    def fetchall(self, sql: str, params: Sequence = ()) -> list[tuple]:
        raise NotImplementedError

    def bulk_load(self, table: str, columns: Sequence[str], files: Sequence[Path]) -> None:
        """Append the Parquet `files` (whose columns are `columns`) to `table`."""
        raise NotImplementedError

    def lock_table(self, spec: TableSpec) -> None:
        """Serialize concurrent loads of one table, where the engine needs it."""


class Warehouse(dg.ConfigurableResource):
    """Base class of the engines; see `DuckDBWarehouse` and `PostgresWarehouse`."""

    type_names: ClassVar[dict[ColumnType, str]] = {
        ColumnType.STRING: "TEXT",
        ColumnType.DATETIME: "TIMESTAMPTZ",
        ColumnType.DATE: "DATE",
        ColumnType.BOOLEAN: "SMALLINT",
        ColumnType.INTEGER: "BIGINT",
        ColumnType.FLOAT: "DOUBLE PRECISION",
    }
    primary_key_constraint: ClassVar[bool] = True

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def load(self, batch: StagedBatch) -> LoadResult:
        spec = batch.spec
        with self.session() as session:
            session.lock_table(spec)
            added = self._ensure_tables(session, spec)
            source, params = self.stage(session, spec, batch.files)
            session.execute(self.latest_sql(spec, source), params)
            staged_keys = session.fetchall(f"SELECT COUNT(*) FROM {LATEST}")[0][0]
            updated = session.execute(self.update_sql(spec))
            inserted = session.execute(self.insert_sql(spec))
            if batch.partition is not None:
                session.execute(
                    f"DELETE FROM {self.rejects_table(spec)} WHERE {quote(SOURCE_PARTITION)} = {session.param}",
                    [batch.partition],
                )
            rejects_columns = [SOURCE_PARTITION, SOURCE_FILE, SOURCE_LINE, "column_name", "reason", "raw_record"]
            session.bulk_load(self.rejects_table(spec), rejects_columns, batch.reject_files)
            session.execute(f"DROP TABLE {LATEST}")
            session.execute(f"DROP TABLE IF EXISTS {STAGING}")
        return LoadResult(staged_keys, batch.rejected_rows, inserted, updated, added)

    def stage(self, session: Session, spec: TableSpec, files: Sequence[Path]) -> tuple[str, list]:
        """Bulk-load the staged files; return the SQL source to read them from, and its parameters."""
        staged = [c.name for c in spec.columns] + [name for name, _ in LINEAGE_COLUMNS]
        session.execute(self.create_staging_sql(spec))
        session.bulk_load(STAGING, staged, files)
        return STAGING, []

    def _ensure_tables(self, session: Session, spec: TableSpec) -> tuple[str, ...]:
        session.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(spec.schema)}")
        existing = self.table_columns(session, spec.schema, spec.name)
        added: list[str] = []
        if not existing:
            session.execute(self.create_table_sql(spec))
        else:
            for column in spec.columns:
                if column.name not in existing:
                    session.execute(
                        f"ALTER TABLE {self.table(spec)} ADD COLUMN {quote(column.name)} {self.type_names[column.type]}"
                    )
                    added.append(column.name)
        session.execute(self.create_rejects_sql(spec))
        return tuple(added)

    def table_columns(self, session: Session, schema: str, table: str) -> list[str]:
        rows = session.fetchall(
            "SELECT column_name FROM information_schema.columns "
            f"WHERE table_schema = {session.param} AND table_name = {session.param} ORDER BY ordinal_position",
            [schema, table],
        )
        return [r[0] for r in rows]

    def table(self, spec: TableSpec) -> str:
        return f"{quote(spec.schema)}.{quote(spec.name)}"

    def rejects_table(self, spec: TableSpec) -> str:
        return f"{quote(spec.schema)}.{quote(spec.rejects_name)}"

    def _column_defs(self, columns: Sequence[Column]) -> list[str]:
        return [
            f"{quote(c.name)} {self.type_names[c.type]}" + ("" if c.nullable else " NOT NULL") for c in columns
        ]

    def _lineage_defs(self) -> list[str]:
        return [
            f"{quote(SOURCE_PARTITION)} {self.type_names[ColumnType.STRING]}",
            f"{quote(SOURCE_FILE)} {self.type_names[ColumnType.STRING]}",
            f"{quote(SOURCE_LINE)} {self.type_names[ColumnType.INTEGER]}",
        ]

    def create_table_sql(self, spec: TableSpec) -> str:
        defs = self._column_defs(spec.columns) + self._lineage_defs()
        defs.append(f"{quote(LOADED_AT)} {self.type_names[ColumnType.DATETIME]}")
        if self.primary_key_constraint:
            defs.append(f"PRIMARY KEY ({quote(spec.primary_key)})")
        return f"CREATE TABLE {self.table(spec)} (\n  " + ",\n  ".join(defs) + "\n)"

    def create_rejects_sql(self, spec: TableSpec) -> str:
        text, integer = self.type_names[ColumnType.STRING], self.type_names[ColumnType.INTEGER]
        return (
            f"CREATE TABLE IF NOT EXISTS {self.rejects_table(spec)} ("
            f"{quote(SOURCE_PARTITION)} {text}, {quote(SOURCE_FILE)} {text}, {quote(SOURCE_LINE)} {integer}, "
            f'"column_name" {text}, "reason" {text}, "raw_record" {text})'
        )

    def create_staging_sql(self, spec: TableSpec) -> str:
        columns = [Column(c.name, c.type) for c in spec.columns]
        return f"CREATE TEMPORARY TABLE {STAGING} (" + ", ".join(self._column_defs(columns) + self._lineage_defs()) + ")"

    def _version_order(self, spec: TableSpec) -> list[str]:
        return [spec.version_column, SOURCE_PARTITION, SOURCE_FILE, SOURCE_LINE]

    def latest_sql(self, spec: TableSpec, source: str = STAGING) -> str:
        """The newest staged version of each key."""
        names = ", ".join(quote(c.name) for c in spec.columns)
        lineage = ", ".join(quote(n) for n, _ in LINEAGE_COLUMNS)
        order = ", ".join(f"{quote(c)} DESC" for c in self._version_order(spec))
        return (
            f"CREATE TEMPORARY TABLE {LATEST} AS SELECT {names}, {lineage} FROM ("
            f"SELECT *, ROW_NUMBER() OVER (PARTITION BY {quote(spec.primary_key)} ORDER BY {order}) AS etl_rank "
            f"FROM {source}) ranked WHERE etl_rank = 1"
        )

    def _newer(self, spec: TableSpec, new: str, old: str) -> str:
        """`new` beats `old` on the version order, as a portable boolean expression."""
        columns = self._version_order(spec)
        expression = f"{new}.{quote(columns[-1])} > {old}.{quote(columns[-1])}"
        for column in reversed(columns[:-1]):
            a, b = f"{new}.{quote(column)}", f"{old}.{quote(column)}"
            expression = f"({a} > {b} OR ({a} = {b} AND {expression}))"
        return expression

    def update_sql(self, spec: TableSpec) -> str:
        assigned = [c.name for c in spec.columns if c.name != spec.primary_key] + [n for n, _ in LINEAGE_COLUMNS]
        sets = ", ".join(f"{quote(n)} = s.{quote(n)}" for n in assigned)
        key = quote(spec.primary_key)
        return (
            f"UPDATE {self.table(spec)} AS t SET {sets}, {quote(LOADED_AT)} = CURRENT_TIMESTAMP "
            f"FROM {LATEST} AS s WHERE t.{key} = s.{key} AND {self._newer(spec, 's', 't')}"
        )

    def insert_sql(self, spec: TableSpec) -> str:
        names = [quote(c.name) for c in spec.columns] + [quote(n) for n, _ in LINEAGE_COLUMNS]
        key = quote(spec.primary_key)
        return (
            f"INSERT INTO {self.table(spec)} ({', '.join(names)}, {quote(LOADED_AT)}) "
            f"SELECT {', '.join('s.' + n for n in names)}, CURRENT_TIMESTAMP FROM {LATEST} AS s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {self.table(spec)} AS t WHERE t.{key} = s.{key})"
        )

    def read_table(self, schema: str, table: str) -> pd.DataFrame:
        raise NotImplementedError

    def query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self.session() as session:
            return session.fetchall(sql, params)
