"""PostgreSQL: a real server, loaded with COPY FROM STDIN."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import ClassVar

import dagster as dg
import psycopg2
import psycopg2.errors
import pyarrow as pa
import pyarrow.parquet as pq
from pgpq import ArrowToPostgresBinaryEncoder
from pydantic import Field

from etl_assets.warehouse.base import (
    DELETED_IN_SOURCE_AT,
    LATEST,
    STAGING,
    Session,
    Step,
    Warehouse,
    WarehouseUnreachable,
    guarded,
    roll_back,
)
from etl_assets.warehouse.batch import RestartStream, StagedBatch, StreamedBatch
from etl_assets.warehouse.prefetch import prefetch
from etl_assets.warehouse.spec import LOADED_AT, TableSpec, quote

# Staged Parquet is read back in batches of about this many bytes of Arrow data (50k rows of 33-column
# Task, 12k of 120 columns): sized in bytes, so what the encoder holds does not grow with the width.
COPY_BATCH_BYTES = 32 << 20
COPY_QUEUE_BATCHES = 1  # encoded batches waiting for the server (streamed, the source holds more besides)
COPY_READ_BYTES = 1 << 20
# A streamed merge into an existing table COPYs this many bytes of Arrow rows (~25k rows of 33-column
# Task) into its chunk table before merging them; the next chunk is read and encoded meanwhile.
MERGE_CHUNK_BYTES = 16 << 20
CHUNK = "etl_chunk"  # the temporary table a chunk of streamed rows is merged from


def _parquet_batches(files: Sequence, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    for path in files:
        source = pq.ParquetFile(path)
        meta = source.metadata
        size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        rows = max(1_000, COPY_BATCH_BYTES * meta.num_rows // max(size, 1))
        yield from source.iter_batches(batch_size=rows, columns=list(columns))


def _binary_chunks(batches: Iterable[pa.RecordBatch], schema: pa.Schema, columns: Sequence[str]) -> Iterator[bytes]:
    """Arrow batches (staged Parquet read back, or a StreamedBatch's rows) as one stream in PostgreSQL's
    binary COPY format, encoded by pgpq.

    Binary, not CSV: the server parsing typed CSV (timestamps, integers) was the slowest part of a
    load (7-9 s for 1M Task rows against 4.4 s binary); the staged Arrow types are the table's own
    (string TEXT, int16 SMALLINT, int64 BIGINT, float64 DOUBLE PRECISION, date32 DATE, and UTC
    timestamps, whose binary form is the same for TIMESTAMPTZ), so nothing is converted twice."""
    columns = list(columns)
    encoder = ArrowToPostgresBinaryEncoder(pa.schema([schema.field(c) for c in columns]))
    yield encoder.write_header()
    for batch in batches:
        yield encoder.write_batch(batch.select(columns))
    yield encoder.finish()


def _binary_groups(batches: Iterable[pa.RecordBatch], schema: pa.Schema, columns: Sequence[str],
                   group_bytes: int) -> Iterator[list[bytes]]:
    """Arrow batches as complete binary COPY payloads (header, rows, trailer) of about `group_bytes`
    of Arrow data each: one COPY per group, so each can be merged before the next is sent."""
    columns = list(columns)
    schema = pa.schema([schema.field(c) for c in columns])
    encoder, payload, size = None, [], 0
    for batch in batches:
        if encoder is None:
            encoder = ArrowToPostgresBinaryEncoder(schema)
            payload, size = [encoder.write_header()], 0
        payload.append(encoder.write_batch(batch.select(columns)))
        size += batch.nbytes
        if size >= group_bytes:
            payload.append(encoder.finish())
            yield payload
            encoder = None
    if encoder is not None:
        payload.append(encoder.finish())
        yield payload


class _BytesStream(io.RawIOBase):
    """A readable stream over a list of byte strings, for one COPY."""

    def __init__(self, parts: Iterable[bytes]):
        super().__init__()
        self._parts = iter(parts)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._pending:
            part = next(self._parts, None)
            if part is None:
                return b""
            self._pending = memoryview(part)
        size = len(self._pending) if size is None or size < 0 else size
        data, self._pending = self._pending[:size], self._pending[size:]
        return bytes(data)


class _CopyStream(_BytesStream):
    """A readable COPY stream, encoded from Arrow batches one batch ahead by a thread."""

    def __init__(self, batches: Iterable[pa.RecordBatch], schema: pa.Schema, columns: Sequence[str]):
        self._chunks = prefetch(_binary_chunks(batches, schema, columns), depth=COPY_QUEUE_BATCHES,
                                name="copy-encoder")
        super().__init__(self._chunks)

    def close(self) -> None:
        self._chunks.close()  # stops the encoding thread if the COPY ended early
        super().close()


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
        with _CopyStream(_parquet_batches(step.files, step.columns), schema, step.columns) as stream:
            self.cursor.copy_expert(step.sql, stream, size=COPY_READ_BYTES)
        return max(self.cursor.rowcount, 0)

    def copy_rows(self, step: Step) -> int:
        """One binary COPY fed by the batch's stream: the source reads and transforms the next chunk
        in one thread and pgpq encodes in another while the server stores the previous one. COPYed
        straight into a table (`distinct_keys`), a repeated key fails the primary key: a restart."""
        batch = step.rows
        try:
            with _CopyStream(batch.stream(), batch.spec.arrow_schema(), step.columns) as stream:
                self.cursor.copy_expert(step.sql, stream, size=COPY_READ_BYTES)
        except psycopg2.errors.UniqueViolation:
            if not step.distinct_keys or batch.error is not None:
                raise
            batch.keys_repeat = True
            raise RestartStream(f"a key repeats in {batch.spec.name}'s batch: it cannot go straight into the table")
        return max(self.cursor.rowcount, 0)

    def copy_chunks(self, step: Step, results: dict[str, int]) -> int:
        """A binary COPY of each chunk of the batch into the step's chunk table, then its `each_chunk`
        statements (the merge of the chunk into the table, and emptying the chunk table), while threads
        read, transform and encode the next chunk: the server's merge overlaps the client's work instead
        of following all of it. A key repeated inside a chunk fails the merge (ON CONFLICT cannot update
        a row twice): a restart, as a key repeated across chunks is once the stream ends."""
        batch, copied = step.rows, 0
        for each in step.each_chunk:  # a batch of no rows merged none
            for name in (each.result,) if isinstance(each.result, str) else each.result or ():
                results.setdefault(name, 0)
        groups = prefetch(_binary_groups(batch.stream(), batch.spec.arrow_schema(), step.columns, MERGE_CHUNK_BYTES),
                          depth=COPY_QUEUE_BATCHES, name="copy-encoder")
        try:
            for payload in groups:
                self.cursor.copy_expert(step.sql, _BytesStream(payload), size=COPY_READ_BYTES)
                copied += max(self.cursor.rowcount, 0)
                for name, value in self.run(step.each_chunk).items():
                    results[name] = results.get(name, 0) + value
        except psycopg2.errors.CardinalityViolation:
            if batch.error is not None:
                raise
            batch.keys_repeat = True
            raise RestartStream(f"a key repeats in a chunk of {batch.spec.name}'s batch: it cannot be merged by chunk")
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


def _primary_key_name(spec: TableSpec) -> str:
    name = f"{spec.name}_pkey"
    if len(name.encode()) <= 63:  # NAMEDATALEN - 1
        return name
    return f"{spec.name.encode()[:48].decode(errors='ignore')}_{hashlib.blake2b(spec.name.encode(), digest_size=4).hexdigest()}_pkey"


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


class PostgresWarehouse(Warehouse):
    """A PostgreSQL database; the password comes from the environment (EnvVar)."""

    max_columns: ClassVar[int] = 1600
    copy_format: ClassVar[str] = "binary"
    runs_steps_in_order: ClassVar[bool] = True
    loaded_at_default: ClassVar[str] = " DEFAULT CURRENT_TIMESTAMP"
    streams_rows: ClassVar[bool] = True

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

    def _transient(self, error: BaseException) -> bool:
        # A connection lost mid-load or a deadlock is worth a retry; a server that cannot be reached
        # at all (WarehouseUnreachable) fails at once with its address, and a full disk (an
        # OperationalError too) at once with what to fix (`_what_to_fix`, asked first).
        return isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError))

    def _busy(self, error: BaseException) -> bool:
        return isinstance(error, psycopg2.errors.LockNotAvailable)  # lock_timeout expired

    def _what_to_fix(self, error: BaseException) -> str | None:
        if not isinstance(error, psycopg2.Error) or error.pgcode not in _POSTGRES_FIXES:
            return super()._what_to_fix(error)
        detail = (error.diag.message_primary or str(error)).strip()
        return f"{self.describe()}: {_POSTGRES_FIXES[error.pgcode].format(user=self.user)} ({detail})"

    def with_lock_timeout(self, seconds: float) -> PostgresWarehouse:
        return self.model_copy(update={"lock_timeout_seconds": seconds})

    def lock_steps(self, spec: TableSpec) -> list[Step]:
        # JIT compiling the merge's plans cost ~1 s a statement and saved nothing on these scans.
        steps = [Step("SELECT set_config('jit', 'off', true)", fetch=True)]
        if self.merge_work_mem:
            steps.append(Step("SELECT set_config('work_mem', %s, true)", (self.merge_work_mem,), fetch=True))
        return steps

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
                 f"WHERE s.{key} = d.{key} AND n.{key} = d.{key} AND {self._newer(spec, 'n', 's')}"),
            Step(f"ALTER TABLE {STAGING} RENAME TO {LATEST}"),
        ]

    def distinct_keys_merge_steps(self, batch: StagedBatch, existing: dict[str, int | None], source: str,
                                  params: tuple, staging: list[Step]) -> list[Step]:
        """A first load of distinct keys into the table this load created (`existing` was empty) COPYs
        its rows straight into the table when it is still empty inside the transaction (result
        `direct`): every row is new and the newest of its key, so the staging table, the UPDATE and the
        anti-join INSERT would write the same rows a second time. `_loaded_at` comes from the column's
        default, CURRENT_TIMESTAMP, as the INSERT sets it. LATEST is then a view of the table, which holds
        exactly the batch. A table another load filled between the two transactions takes the general
        steps (`unless` direct); so does any table created before the default existed."""
        general = super().distinct_keys_merge_steps(batch, existing, source, params, staging)
        if existing:
            return general
        spec, table = batch.spec, self.table(batch.spec)
        columns = self.staged_columns(spec)
        copy = f"COPY {table} ({', '.join(quote(c) for c in columns)}) FROM STDIN WITH (FORMAT {self.copy_format})"
        return [
            Step(f"SELECT NOT EXISTS (SELECT 1 FROM {table})", fetch=True, result="direct"),
            Step(copy, files=tuple(batch.files), columns=columns, result="inserted", when="direct"),
            Step(f"CREATE TEMPORARY VIEW {LATEST} AS SELECT {self._names(spec)} FROM {table}", when="direct"),
            *(replace(step, unless="direct") for step in general),
        ]

    def primary_key_sql(self, spec: TableSpec) -> str:
        """Named as PostgreSQL names it (`<table>_pkey`; a long table name shortened with a digest, names
        of indexes are unique per schema), so the first load can drop and rebuild it by name."""
        return f"CONSTRAINT {quote(_primary_key_name(spec))} PRIMARY KEY ({quote(spec.primary_key)})"

    def direct_load_steps(self, batch: StreamedBatch) -> list[Step]:
        """The empty table's primary key is dropped for the COPY and built once after it: one sort of the
        keys instead of a B-tree insert per row (~30% of the COPY's server time). A repeated key is found
        by the client as the stream ends (a restart, which rolls the drop back); the rebuild would refuse
        one too. Only for tables this load created: they carry the key under `_primary_key_name`."""
        spec = batch.spec
        name, table = quote(_primary_key_name(spec)), self.table(spec)
        return [Step(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}"),
                *super().direct_load_steps(batch),
                Step(f"ALTER TABLE {table} ADD CONSTRAINT {name} PRIMARY KEY ({quote(spec.primary_key)})")]

    def stream_step(self, batch: StreamedBatch, target: str, direct: bool) -> Step:
        """A binary COPY of the rows into `target`; straight into the table `_loaded_at` is the column's
        default, CURRENT_TIMESTAMP (tables the load creates have it)."""
        columns = self.staged_columns(batch.spec)
        return Step(f"COPY {target} ({', '.join(quote(c) for c in columns)}) FROM STDIN WITH (FORMAT {self.copy_format})",
                    rows=batch, columns=columns)

    def streamed_merge_steps(self, batch: StreamedBatch, existing: dict[str, int | None]
                             ) -> tuple[list[Step], list[Step]]:
        """A batch for a table that exists is merged a chunk at a time as it streams (`copy_chunks`): each
        chunk is COPYed into a small temporary table and merged with one `INSERT ... ON CONFLICT DO UPDATE
        ... WHERE <newer>`, so the server merges one chunk while the client prepares the next, one index
        probe per row, and only rows the batch beats are rewritten. The merge's statements and the update
        condition are the general path's, so the table ends the same. Measured on 1M all-update Task rows:
        34 s end to end staged (the UPDATE of every row after all were read) against 26-28 s merged by
        chunk (docs/big-file-loads.md). A key repeated in the batch restarts the load on the general
        path; so does a table without its primary key (ON CONFLICT needs it), found by the first step."""
        general, drops = super().streamed_merge_steps(batch, existing)
        spec = batch.spec
        if not existing or batch.keys_repeat or not spec.primary_key:
            return general, drops
        version = spec.version_column
        columns = self.staged_columns(spec)
        chunk = [
            Step("SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = to_regclass(%s) AND indisprimary)",
                 (self.table(spec),), fetch=True, result="keyed"),
            Step(self.create_staging_sql(batch, CHUNK), when="keyed"),
        ]
        each_chunk = [Step(self.chunk_merge_sql(spec), fetch=True, result=("inserted", "updated"))]
        if spec.track_deletions:  # the deletion marks' steps read the batch's keys and versions from LATEST
            kept = ", ".join(quote(c) for c in (spec.primary_key, *([version] if version else [])))
            chunk.append(Step(f"CREATE TEMPORARY TABLE {LATEST} AS SELECT {kept} FROM {CHUNK} WITH NO DATA",
                              when="keyed"))
            each_chunk.append(Step(f"INSERT INTO {LATEST} SELECT {kept} FROM {CHUNK}"))
        each_chunk.append(Step(f"TRUNCATE {CHUNK}"))
        copy = f"COPY {CHUNK} ({', '.join(quote(c) for c in columns)}) FROM STDIN WITH (FORMAT {self.copy_format})"
        chunk.append(Step(copy, rows=batch, columns=columns, distinct_keys=True, each_chunk=tuple(each_chunk),
                          when="keyed"))
        chunk_drops = [Step(f"DROP TABLE IF EXISTS {LATEST}", when="keyed"),
                       Step(f"DROP TABLE {CHUNK}", when="keyed")]
        return chunk + guarded(general, unless="keyed"), chunk_drops + guarded(drops, unless="keyed")

    def chunk_merge_sql(self, spec: TableSpec) -> str:
        """Merge the chunk table into the table: new keys inserted, rows the chunk beats updated (the
        general path's UPDATE and INSERT in one statement); returns (inserted, updated). A row's `xmax`
        is 0 when this statement inserted it and this transaction's id when it updated it."""
        names = ", ".join(quote(c) for c in self.staged_columns(spec))
        sets = ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in self.staged_columns(spec) if c != spec.primary_key)
        loaded_at = quote(LOADED_AT)
        return (
            f"WITH merged AS (INSERT INTO {self.table(spec)} AS t ({names}, {loaded_at}) "
            f"SELECT {names}, CURRENT_TIMESTAMP FROM {CHUNK} "
            f"ON CONFLICT ({quote(spec.primary_key)}) DO UPDATE SET {sets}, {loaded_at} = CURRENT_TIMESTAMP "
            f"WHERE {self._newer(spec, 'EXCLUDED', 't')} RETURNING (t.xmax = 0) AS inserted) "
            "SELECT COUNT(*) FILTER (WHERE inserted), COUNT(*) FILTER (WHERE NOT inserted) FROM merged"
        )

    def marked_rows_index_steps(self, spec: TableSpec) -> list[Step]:
        if not spec.track_deletions:
            return []
        mark = quote(DELETED_IN_SOURCE_AT)
        return [Step(f"CREATE INDEX IF NOT EXISTS {quote(spec.name + '_marked')} ON {self.table(spec)} "
                     f"({quote(spec.primary_key)}) WHERE {mark} IS NOT NULL")]

    def describe(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

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
    def session(self) -> Iterator[PostgresSession]:
        with self.named_errors():
            held, key = _held_connections(), self.describe()
            if key not in held:
                with psycopg2_session(key, PostgresSession, **self._connect_args()) as session:
                    yield session
                return
            if held[key] is None or held[key].closed:
                held[key] = psycopg2_connect(key, **self._connect_args())
            with psycopg2_transaction(held[key], PostgresSession) as session:
                yield session


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
