"""PostgreSQL: a real server, loaded with COPY FROM STDIN."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pandas as pd
import psycopg2
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import Field

from etl_assets.resources.warehouse.base import Session, Step, Warehouse
from etl_assets.resources.warehouse.spec import TableSpec, quote

COPY_BATCH_ROWS = 100_000
# Quote every non-null value so an empty string stays distinct from NULL in COPY's CSV.
CSV_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")


class PostgresSession(Session):
    def __init__(self, connection):
        self.connection = connection
        self.cursor = connection.cursor()

    def execute(self, sql: str, params: Sequence = ()) -> int:
        self.cursor.execute(sql, list(params) or None)
        return max(self.cursor.rowcount, 0)

    def fetchall(self, sql: str, params: Sequence = ()) -> list[tuple]:
        self.cursor.execute(sql, list(params) or None)
        return self.cursor.fetchall()

    def copy_files(self, step: Step) -> None:
        for path in step.files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=COPY_BATCH_ROWS, columns=list(step.columns)):
                buffer = io.BytesIO()
                pacsv.write_csv(batch, buffer, CSV_OPTIONS)
                buffer.seek(0)
                self.cursor.copy_expert(step.sql, buffer)

    def lock_table(self, spec: TableSpec) -> None:
        digest = hashlib.blake2b(f"{spec.schema}.{spec.name}".encode(), digest_size=8).digest()
        self.execute("SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest, "big", signed=True)])


class PostgresWarehouse(Warehouse):
    """A PostgreSQL database; the password comes from the environment (EnvVar)."""

    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "postgres"
    user: str = "postgres"
    password: str = Field(default="", description="Set with dagster.EnvVar; never logged.")
    connect_timeout_seconds: int = 10

    def _transient(self, error: BaseException) -> bool:
        # OperationalError: the server went away, refused the connection, or cancelled for a deadlock.
        return isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError))

    def describe(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def connect(self):
        return psycopg2.connect(
            host=self.host,
            port=self.port,
            dbname=self.database,
            user=self.user,
            password=self.password or None,
            connect_timeout=self.connect_timeout_seconds,
            application_name="etl_assets",
        )

    @contextmanager
    def session(self) -> Iterator[PostgresSession]:
        connection = self.connect()
        try:
            with connection:  # commits on success, rolls back on error
                yield PostgresSession(connection)
        finally:
            connection.close()

    def read_table(self, schema: str, table: str) -> pd.DataFrame:
        with self.session() as session:
            session.cursor.execute(f"SELECT * FROM {quote(schema)}.{quote(table)}")
            names = [d.name for d in session.cursor.description]
            return pd.DataFrame(session.cursor.fetchall(), columns=names)
