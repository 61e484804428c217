"""PostgreSQL: a real server, loaded with binary COPY FROM STDIN (copy_stream.py)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar

import dagster as dg
import psycopg2
import psycopg2.errors
import pyarrow.parquet as pq
from pydantic import Field

from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.batch import ReadAgain
from etl_assets.warehouse.copy_stream import COPY_QUEUE_BATCHES, COPY_READ_BYTES, BytesStream, CopyStream, \
    copy_payloads, parquet_batches
from etl_assets.warehouse.dialect import (
    CHUNK,
    LATEST,
    STAGING,
    Capabilities,
    Dialect,
    column_list,
    newer,
    staged_columns,
    table,
    version_order,
)
from etl_assets.warehouse.errors import WarehouseUnreachable, roll_back
from etl_assets.warehouse.history import merged_returning, merged_version_ctes
from etl_assets.warehouse.postgres_reclaim import WAIT_SECONDS as RECLAIM_WAIT_SECONDS
from etl_assets.warehouse.postgres_reclaim import vacuum_full
from etl_assets.warehouse.prefetch import prefetch
from etl_assets.warehouse.rows import RowStream
from etl_assets.warehouse.session import Session
from etl_assets.warehouse.spec import DELETED_IN_SOURCE_AT, LOADED_AT, TableSpec, quote
from etl_assets.warehouse.steps import Step, StreamStep

# A streamed merge into an existing table COPYs this many bytes of Arrow rows (~25k rows of 33-column
# Task) into its chunk table before merging them; the next chunk is read and encoded meanwhile.
MERGE_CHUNK_BYTES = 16 << 20


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

    def copy_files(self, step: Step) -> int:
        """One binary COPY for all the step's files, fed while it runs: a thread encodes the next
        batches while the server stores the previous ones, so client and server work on the two
        cores at once instead of taking turns. Returns the rows copied."""
        schema = pq.ParquetFile(step.files[0]).schema_arrow
        with CopyStream(parquet_batches(step.files, step.columns), schema, step.columns) as stream:
            self.cursor.copy_expert(step.sql, stream, size=COPY_READ_BYTES)
        return max(self.cursor.rowcount, 0)

    def copy_rows(self, step: StreamStep) -> int:
        """One binary COPY fed by the batch's stream: the source reads and transforms the next chunk
        in one thread and pgpq encodes in another while the server stores the previous one. COPYed
        straight into a table (`distinct_keys`), a repeated key fails the primary key: read again."""
        stream = step.rows
        batch = stream.batch
        try:
            with CopyStream(iter(stream), batch.spec.arrow_schema(), step.columns) as copying:
                self.cursor.copy_expert(step.sql, copying, size=COPY_READ_BYTES)
        except psycopg2.errors.UniqueViolation:
            if not step.distinct_keys or stream.error is not None:
                raise
            batch.keys_repeat = True
            raise ReadAgain(f"a key repeats in {batch.spec.name}'s batch: it cannot go straight into the table")
        return max(self.cursor.rowcount, 0)

    def copy_chunks(self, step: StreamStep, results: dict[str, int]) -> int:
        """A binary COPY of each chunk of the batch into the step's chunk table, then its `each_chunk`
        statements (the merge of the chunk into the table, and emptying the chunk table), while threads
        read, transform and encode the next chunk: the server's merge overlaps the client's work instead
        of following all of it. A key repeated inside a chunk fails the merge (ON CONFLICT cannot update
        a row twice): read again, as a key repeated across chunks is once the stream ends."""
        stream, copied = step.rows, 0
        batch = stream.batch
        for each in step.each_chunk:  # a batch of no rows merged none
            for name in (each.result,) if isinstance(each.result, str) else each.result or ():
                results.setdefault(name, 0)
        groups = prefetch(copy_payloads(iter(stream), batch.spec.arrow_schema(), step.columns, MERGE_CHUNK_BYTES),
                          depth=COPY_QUEUE_BATCHES, name="copy-encoder")
        quiet = False  # the last chunk changed fewer than half its rows: probe before merging the next
        try:
            for payload in groups:
                self.cursor.copy_expert(step.sql, BytesStream(payload), size=COPY_READ_BYTES)
                rows = max(self.cursor.rowcount, 0)
                copied += rows
                merged = self.run(step.each_quiet_chunk if quiet and step.each_quiet_chunk else step.each_chunk)
                for name, value in merged.items():
                    results[name] = results.get(name, 0) + value
                quiet = (merged.get("inserted", 0) + merged.get("updated", 0)) * 2 < rows
        except psycopg2.errors.CardinalityViolation:
            if stream.error is not None:
                raise
            batch.keys_repeat = True
            raise ReadAgain(f"a key repeats in a chunk of {batch.spec.name}'s batch: it cannot be merged by chunk")
        finally:
            groups.close()
        return copied

    def lock_table(self, spec: TableSpec) -> None:
        """The table's load lock, held to the end of the transaction. A load that must wait for another
        load of the table says so first (the run's log in the UI, the CLI's output), naming that load's
        server process, then waits."""
        digest = hashlib.blake2b(f"{spec.schema}.{spec.name}".encode(), digest_size=8).digest()
        key = int.from_bytes(digest, "big", signed=True)
        [(taken,)] = self.fetchall("SELECT pg_try_advisory_xact_lock(%s)", [key])
        if taken:
            return
        holders = self.fetchall(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() "
            "AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = %s", [key])  # a bigint key's halves
        who = f" (server process {', '.join(str(pid) for (pid,) in holders)})" if holders else ""
        dg.get_dagster_logger().warning(
            f"waiting for the load lock of {spec.schema}.{spec.name}: another load of it is in progress{who}")
        self.execute("SELECT pg_advisory_xact_lock(%s)", [key])

    def lock_catalog(self) -> None:
        digest = hashlib.blake2b(b"etl_assets:catalog", digest_size=8).digest()
        self.execute("SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest, "big", signed=True)])


# SQLSTATE -> what a person must fix: disk_full, insufficient_privilege, read_only_sql_transaction.
_POSTGRES_FIXES = {
    "53100": "the server's disk is full: free space where it keeps its data (the data directory, or the "
             "tablespace the error names)",
    "42501": "user {user} lacks a privilege: GRANT it (CREATE on the database for a new schema, USAGE and CREATE "
             "on the schema, SELECT, INSERT, UPDATE and DELETE on its tables), or set ETL_ASSETS_PG_USER to a "
             "user that has it",
    "25006": "the database accepts no writes: set ETL_ASSETS_PG_HOST to the primary server, not a standby, or "
             "turn default_transaction_read_only off",
}
_HELD = threading.local()  # describe() -> the connection held for this thread (None until a session opens it)


def _held_connections() -> dict:
    if not hasattr(_HELD, "connections"):
        _HELD.connections = {}
    return _HELD.connections


class PostgresDialect(Dialect):
    """PostgreSQL: binary COPY, a named primary key, settings for the load's transaction, a partial index
    on the rows marked deleted, and a newest-version pass that deletes instead of rewriting."""

    copy_format: ClassVar[str] = "binary"
    loaded_at_default: ClassVar[str] = " DEFAULT CURRENT_TIMESTAMP"

    def __init__(self, capabilities: Capabilities, merge_work_mem: str = ""):
        super().__init__(capabilities)
        self.merge_work_mem = merge_work_mem

    def primary_key_sql(self, spec: TableSpec) -> str:
        """Named as PostgreSQL names it (`<table>_pkey`; a long table name shortened with a digest, names
        of indexes are unique per schema), so the first load can drop and rebuild it by name."""
        return f"CONSTRAINT {quote(self.primary_key_name(spec))} PRIMARY KEY ({quote(spec.primary_key)})"

    def primary_key_name(self, spec: TableSpec) -> str:
        name = f"{spec.name}_pkey"
        if len(name.encode()) <= 63:  # NAMEDATALEN - 1
            return name
        digest = hashlib.blake2b(spec.name.encode(), digest_size=4).hexdigest()
        return f"{spec.name.encode()[:48].decode(errors='ignore')}_{digest}_pkey"

    def marked_rows_index_steps(self, spec: TableSpec) -> list[Step]:
        if not spec.track_deletions:
            return []
        mark = quote(DELETED_IN_SOURCE_AT)
        return [Step(f"CREATE INDEX IF NOT EXISTS {quote(spec.name + '_marked')} ON {table(spec)} "
                     f"({quote(spec.primary_key)}) WHERE {mark} IS NOT NULL")]

    def lock_steps(self, spec: TableSpec) -> list[Step]:
        # JIT compiling the merge's plans cost ~1 s a statement and saved nothing on these scans.
        steps = [Step("SELECT set_config('jit', 'off', true)", fetch=True)]
        if self.merge_work_mem:
            steps.append(Step("SELECT set_config('work_mem', %s, true)", (self.merge_work_mem,), fetch=True))
        return steps

    def stream_step(self, rows: RowStream, target: str, direct: bool) -> StreamStep:
        """A binary COPY of the rows into `target`; straight into the table `_loaded_at` is the column's
        default, CURRENT_TIMESTAMP (tables the load creates have it)."""
        columns = staged_columns(rows.batch.spec)
        return StreamStep(f"COPY {target} ({', '.join(quote(c) for c in columns)}) FROM STDIN WITH "
                          f"(FORMAT {self.copy_format})", rows=rows, columns=columns)

    def latest_steps(self, spec: TableSpec, source: str, params: tuple) -> list[Step]:
        """Delete the staged rows another staged row of the same key beats, then use the staging table as LATEST.

        The portable CREATE TABLE AS ... ROW_NUMBER() sorts and rewrites every staged row (12.7 s for
        1M Task rows); keys staged more than once are found by a narrow hash aggregate and, in the
        usual batch where there are none, nothing else runs (1.7 s)."""
        if source != STAGING:
            return super().latest_steps(spec, source, params)
        key = quote(spec.primary_key)
        repeated = f"SELECT {key} FROM {STAGING} GROUP BY {key} HAVING COUNT(*) > 1"
        return [
            Step(f"DELETE FROM {STAGING} AS s USING ({repeated}) AS d, {STAGING} AS n "
                 f"WHERE s.{key} = d.{key} AND n.{key} = d.{key} AND {newer(spec, 'n', 's')}"),
            Step(f"ALTER TABLE {STAGING} RENAME TO {LATEST}"),
        ]

    def chunk_merge_sql(self, spec: TableSpec, probe: bool = False, gathered: str | None = None) -> str:
        """Merge the chunk table into the table: new keys inserted, rows the chunk beats updated (the
        general path's UPDATE and INSERT in one statement); returns (inserted, updated). A row's `xmax`
        is 0 when this statement inserted it and this transaction's id when it updated it.

        `probe`: first look each key up (one index probe, no lock) and pass on only the rows that are
        new or newer. ON CONFLICT locks every row it meets, even one its WHERE then leaves, and a lock
        is a write of the row's page (with its WAL): a re-run of a 1M-row file wrote the whole table
        again. The probe costs a lookup a row, so it is taken after a chunk that changed little.

        `gathered` (PostgreSQL 18 and later, a table keeping history): the versions kept by the same
        statement (`merged_version_ctes`); returns (inserted, updated, displaced, gathered)."""
        names = column_list(spec)
        sets = ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in staged_columns(spec) if c != spec.primary_key)
        loaded_at = quote(LOADED_AT)
        rows = f"SELECT {names}, CURRENT_TIMESTAMP FROM {CHUNK}"
        if probe:
            key = quote(spec.primary_key)
            held = ", ".join(f"o.{quote(c)}" for c in (spec.primary_key, *version_order(spec)))
            rows = (f"SELECT {', '.join('c.' + quote(c) for c in staged_columns(spec))}, CURRENT_TIMESTAMP "
                    f"FROM {CHUNK} AS c LEFT JOIN LATERAL (SELECT {held} FROM {table(spec)} AS o "
                    f"WHERE o.{key} = c.{key} LIMIT 1) AS o ON TRUE WHERE o.{key} IS NULL OR {newer(spec, 'c', 'o')}")
        returned, versions, counted = "", "", ""
        if gathered is not None:
            returned = merged_returning(spec)
            versions, counts = merged_version_ctes(spec, CHUNK, gathered)
            counted = ", " + counts
        return (
            f"WITH merged AS (INSERT INTO {table(spec)} AS t ({names}, {loaded_at}) {rows} "
            f"ON CONFLICT ({quote(spec.primary_key)}) DO UPDATE SET {sets}, {loaded_at} = CURRENT_TIMESTAMP "
            f"WHERE {newer(spec, 'EXCLUDED', 't')} RETURNING {returned}(t.xmax = 0) AS inserted){versions} "
            f"SELECT COUNT(*) FILTER (WHERE inserted), COUNT(*) FILTER (WHERE NOT inserted){counted} FROM merged"
        )


class PostgresWarehouse(Warehouse):
    """A PostgreSQL database; the password comes from the environment (EnvVar)."""

    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "postgres"
    user: str = "postgres"
    password: str = Field(default="", description="Set with dagster.EnvVar; never logged.")
    connect_timeout_seconds: int = 10
    lock_timeout_seconds: float = Field(
        default=0, description="How long a statement waits for a lock another session holds before it fails "
        "(PostgreSQL's lock_timeout); 0: as long as the server's own setting says (no limit by default).")
    merge_work_mem: str = Field(
        default="256MB",
        description="work_mem for the load transaction only (SET LOCAL): the newest-version sort and the "
        "UPDATE/INSERT hash joins of a million-row batch stay in memory instead of spilling to disk.",
    )

    capabilities: ClassVar[Capabilities] = Capabilities(
        max_columns=1600, runs_steps_in_order=True, streams_rows=True, copies_into_new_tables=True,
        merges_streamed_chunks=True)

    def describe(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def dialect(self) -> PostgresDialect:
        return PostgresDialect(self.capabilities, self.merge_work_mem)

    def _transient(self, error: BaseException) -> bool:
        # A connection lost mid-load or a deadlock is worth a retry; a server that cannot be reached
        # at all (WarehouseUnreachable) fails at once with its address, and a full disk (an
        # OperationalError too) at once with what to fix (`_what_to_fix`, asked first).
        return isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError))

    def _busy(self, error: BaseException) -> bool:
        return isinstance(error, psycopg2.errors.LockNotAvailable)  # lock_timeout expired

    def _what_to_fix(self, error: BaseException) -> str | None:
        fix = sqlstate_fix(error, _POSTGRES_FIXES, user=self.user)
        return f"{self.describe()}: {fix}" if fix else super()._what_to_fix(error)

    def reclaim_space(self, tables: Sequence[tuple[str, str]], on_wait: Callable[[str], None] | None = None) -> str:
        """VACUUM FULL writes each table anew and removes the old files, once no transaction older than the
        rewrite can still read the old row versions (postgres_reclaim.py; it takes an ACCESS EXCLUSIVE lock
        for its time, and runs outside a transaction). The WAL, replicas and backups taken before still hold
        the old values: docs/personal-data.md."""
        connection = psycopg2_connect(self.describe(), **self._connect_args())
        try:
            connection.autocommit = True
            return f"{self.describe()}: " + vacuum_full(connection, tables, RECLAIM_WAIT_SECONDS, on_wait)
        finally:
            connection.close()

    def with_lock_timeout(self, seconds: float) -> PostgresWarehouse:
        return self.model_copy(update={"lock_timeout_seconds": seconds})

    def _connect_args(self) -> dict:
        args = dict(host=self.host, port=self.port, dbname=self.database, user=self.user,
                    password=self.password or None, connect_timeout=self.connect_timeout_seconds)
        if self.lock_timeout_seconds:
            args["options"] = f"-c lock_timeout={round(self.lock_timeout_seconds * 1000)}"
        return args

    @contextmanager
    def held(self) -> Iterator[None]:
        """One connection for this thread's sessions of this database until the block ends (nested
        blocks share the outer one); each session is still its own transaction. It is opened by the
        first session, so an unreachable server fails there, as without the block."""
        held, key = _held_connections(), self.describe()
        if key in held:
            yield
            return
        held[key] = None
        try:
            yield
        finally:
            connection = held.pop(key)
            if connection is not None:
                connection.close()

    @contextmanager
    def _transaction(self) -> Iterator[PostgresSession]:
        held, key = _held_connections(), self.describe()
        if key not in held:
            with psycopg2_session(key, PostgresSession, **self._connect_args()) as session:
                yield session
            return
        if held[key] is None or held[key].closed:
            held[key] = psycopg2_connect(key, **self._connect_args())
        with psycopg2_transaction(held[key], PostgresSession) as session:
            yield session


def sqlstate_fix(error: BaseException, fixes: dict[str, str], **names) -> str | None:
    """What to fix for a server error whose SQLSTATE is one of `fixes`, with the server's own words."""
    if not isinstance(error, psycopg2.Error) or error.pgcode not in fixes:
        return None
    detail = (error.diag.message_primary or str(error)).strip()
    return f"{fixes[error.pgcode].format(**names)} ({detail})"


def psycopg2_connect(where: str, **connect):
    """A psycopg2 connection; a server that cannot be reached at all fails at once with its address."""
    try:
        return psycopg2.connect(application_name="etl_assets", **connect)
    except psycopg2.OperationalError as error:
        raise WarehouseUnreachable(f"{where} is unreachable: {str(error).strip()}") from None


@contextmanager
def psycopg2_transaction(connection, session_type: type[PostgresSession]) -> Iterator[PostgresSession]:
    """One transaction on an open connection: committed when the block ends, rolled back if it raises."""
    try:
        yield session_type(connection)
        connection.commit()
    except BaseException as error:
        if not connection.closed:  # closed: known dead, nothing to roll back
            roll_back(connection, error)  # a session the server ended unnoticed fails to: `error` stays
        raise


@contextmanager
def psycopg2_session(where: str, session_type: type[PostgresSession], **connect) -> Iterator[PostgresSession]:
    """A psycopg2 connection as one transaction (PostgreSQL, and Redshift's cluster endpoint):
    committed when the block ends, rolled back if it raises, closed either way. A server that
    cannot be reached at all fails at once with its address."""
    connection = psycopg2_connect(where, **connect)
    try:
        with psycopg2_transaction(connection, session_type) as session:
            yield session
    finally:
        connection.close()
