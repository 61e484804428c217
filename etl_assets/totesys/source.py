"""The totesys OLTP database: PostgreSQL in production, an embedded DuckDB file by default.

Both engines are reached through DB-API cursors and the same SQL (schema.sql,
the seeder's statements, the extraction queries), so the code `make run`
exercises on the embedded file is the code that reads the production server.
DuckDB rather than SQLite: it has real TIMESTAMP, DATE and NUMERIC types, so
windows on last_updated compare times, not strings, exactly as in PostgreSQL.

Which source a deployment reads (ETL_ASSETS_TOTESYS_SOURCE and its connection variables) is
decided in etl_assets/settings.py (`build_totesys_source`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import psycopg2
from pydantic import Field

from etl_assets.warehouse.duckdb_files import connect_waiting, transaction
from etl_assets.warehouse.spec import quote

SCHEMA_SQL = Path(__file__).with_name("schema.sql")

__all__ = [
    "SCHEMA_SQL",
    "DuckDBTotesysSource",
    "PostgresTotesysSource",
    "SourceConnection",
    "TotesysSource",
    "select_window_sql",
]


class SourceConnection:
    """One open transaction on the source, with the engine's parameter marker."""

    current_schema_sql = "current_schema()"

    def __init__(self, connection, param: str):
        self.connection = connection
        self.param = param

    def execute(self, sql: str, params: Sequence = ()) -> None:
        cursor = self.connection.cursor()
        cursor.execute(sql, list(params) or None)

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> None:
        if rows:
            self.connection.cursor().executemany(sql, [list(r) for r in rows])

    def fetchall(self, sql: str, params: Sequence = ()) -> list[tuple]:
        cursor = self.connection.cursor()
        cursor.execute(sql, list(params) or None)
        return cursor.fetchall()

    def stream(self, sql: str, params: Sequence = (), batch_rows: int = 50_000) -> Iterator[list[tuple]]:
        """Rows in batches, so memory stays bounded on a first full read."""
        cursor = self.connection.cursor()
        cursor.execute(sql, list(params) or None)
        while batch := cursor.fetchmany(batch_rows):
            yield batch

    def apply_schema(self) -> None:
        """Run schema.sql (idempotent: every statement is IF NOT EXISTS)."""
        lines = [line for line in SCHEMA_SQL.read_text().splitlines() if not line.lstrip().startswith("--")]
        for statement in "\n".join(lines).split(";"):
            if statement.strip():
                self.execute(statement)

    def table_exists(self, table: str) -> bool:
        rows = self.fetchall(
            f"SELECT COUNT(*) FROM information_schema.tables WHERE table_name = {self.param}"
            f" AND table_schema = {self.current_schema_sql}",
            [table],
        )
        return rows[0][0] > 0


class TotesysSource(dg.ConfigurableResource):
    """Base class; see `DuckDBTotesysSource` and `PostgresTotesysSource`."""

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[SourceConnection]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class DuckDBTotesysSource(TotesysSource):
    """An embedded DuckDB file standing in for the OLTP server (`make run`)."""

    path: str = Field(description="The DuckDB file (etl_assets/settings.py defaults it to data/totesys.duckdb).")
    lock_timeout_seconds: float = 120.0

    def describe(self) -> str:
        return f"duckdb:{self.path}"

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """Open the file, waiting while the seeder (another process) holds DuckDB's writer lock."""
        if read_only and not Path(self.path).exists():
            raise FileNotFoundError(f"{self.path} does not exist: fill it with `etl-assets seed-totesys`")
        return connect_waiting(self.path, self.lock_timeout_seconds, read_only)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[SourceConnection]:
        with transaction(self._open(read_only)) as connection:
            yield SourceConnection(connection, "?")


class PostgresTotesysSource(TotesysSource):
    """The totesys PostgreSQL server; the password comes from the environment (EnvVar)."""

    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "totesys"
    user: str = "postgres"
    password: str = Field(default="", description="Set with dagster.EnvVar; never logged.")

    def describe(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[SourceConnection]:
        connection = psycopg2.connect(
            host=self.host,
            port=self.port,
            dbname=self.database,
            user=self.user,
            password=self.password or None,
            connect_timeout=10,
            application_name="etl_assets_totesys",
        )
        connection.set_session(readonly=read_only)
        try:
            with connection:  # commits on success, rolls back on error
                yield SourceConnection(connection, "%s")
        finally:
            connection.close()


def select_window_sql(table: str, columns: Sequence[str], param: str, has_lower_bound: bool) -> str:
    """Rows whose last_updated is in [from, to); the first run has no lower bound."""
    names = ", ".join(quote(c) for c in columns)
    where = f'"last_updated" < {param}'
    if has_lower_bound:
        where = f'"last_updated" >= {param} AND {where}'
    return f'SELECT {names} FROM {quote(table)} WHERE {where} ORDER BY "last_updated", {quote(columns[0])}'
