"""DuckDB: the embedded default warehouse, a single file under data/."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import duckdb
import pyarrow as pa
from pydantic import Field

from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.batch import StagedBatch
from etl_assets.warehouse.dialect import (
    LATEST,
    REJECTS_COLUMNS,
    STAGING,
    Capabilities,
    Dialect,
    column_list,
    newer,
    rejects_table,
    staged_columns,
    table,
)
from etl_assets.warehouse.duckdb_files import connect_waiting, transaction
from etl_assets.warehouse.errors import roll_back
from etl_assets.warehouse.history import VALID_FROM, VALID_TO, keeps_history, staged_names, superseded_table, version_steps
from etl_assets.warehouse.rows import RowStream
from etl_assets.warehouse.session import Session
from etl_assets.warehouse.spec import DELETED_IN_SOURCE_AT, LOADED_AT, ColumnType, quote
from etl_assets.warehouse.steps import Deferred, PlanStep, Step, StreamStep


class DuckDBSession(Session):
    param = "?"

    def __init__(self, connection: duckdb.DuckDBPyConnection, stream_memory_limit: str = "250MB"):
        self.connection = connection
        self.stream_memory_limit = stream_memory_limit

    def execute(self, sql: str, params: Sequence = ()) -> int:
        result = self.connection.execute(sql, list(params)).fetchall()
        # DML returns one row holding the affected count; DDL returns nothing.
        return int(result[0][0]) if result and len(result[0]) == 1 and isinstance(result[0][0], int) else 0

    def fetchall(self, sql: str, params: Sequence = ()) -> list[tuple]:
        return self.connection.execute(sql, list(params)).fetchall()

    def copy_rows(self, step: StreamStep) -> int:
        """The statement reads the batch's rows as the Arrow stream `etl_rows`: DuckDB pulls each chunk
        while the source's thread prepares the next; nothing is written to disk first. Meanwhile the
        buffer pool is `stream_memory_limit`: the source's chunks are in this process at the same time."""
        stream = step.rows
        rows = pa.RecordBatchReader.from_batches(stream.batch.spec.arrow_schema(), iter(stream))
        limit = self.connection.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        self.connection.execute("SET memory_limit = ?", [self.stream_memory_limit])
        self.connection.register(STREAMED_ROWS, rows)
        try:
            copied = int(self.connection.execute(step.sql).fetchall()[0][0])
            self.connection.unregister(STREAMED_ROWS)  # after a failure the rollback drops it
        finally:
            rows.close()
            # The buffer pool is the database's, not the transaction's: restored through a cursor of its
            # own, since after a failed statement this transaction refuses even SET, and that refusal
            # ("Current transaction is aborted") would replace the statement's error.
            with self.connection.cursor() as other:
                other.execute("SET memory_limit = ?", [limit])
        return copied


# Words of DuckDB's message -> what a person must fix.
_DUCKDB_FIXES = (
    (("No space left on device", "Disk quota exceeded", "max_temp_directory_size"),
     "the disk holding it is full: free space on it (a load also writes the .wal and spills to the .tmp "
     "beside it), or set ETL_ASSETS_DUCKDB_PATH to a disk with room"),
    (("Read-only file system",),
     "it is on a read-only file system: remount it read-write, or set ETL_ASSETS_DUCKDB_PATH to a writable place"),
    (("Permission denied",), "this process may not write it: give its user write access to the file and its folder"),
    (("Operation not permitted",), "it may not be written: is it immutable? `lsattr` shows it, `chattr -i` clears it"),
    (("read-only mode",), "it was opened read-only: open it read-write to load"),
)
MATCHED = "etl_matched"  # a merge's staged keys found in the table: the rows they beat, the keys that lose
OLDER_ROWS = "etl_older_rows"  # an in-place merge's new rows older than their record's newest (history mode)
ROWS_BEFORE = "rows_before"  # an in-place merge's result: the table's highest row id before its rows went in
STREAMED_ROWS = "etl_rows"  # the name a streamed batch's Arrow rows are registered under for its statement
_HELD = threading.local()  # path -> the connection held for this thread (None until a session opens it)


def _held_connections() -> dict[str, duckdb.DuckDBPyConnection | None]:
    if not hasattr(_HELD, "connections"):
        _HELD.connections = {}
    return _HELD.connections


def replaces_rows(batch: StagedBatch, existing: dict[str, int | None]) -> bool:
    """Whether the merge may replace the rows a batch beats (DELETE, then INSERT) rather than UPDATE them:
    only when the batch carries every column of the table, since an UPDATE leaves columns the batch
    lacks as they were and a re-insert would not. `_deleted_in_source_at` does not count: the same
    transaction recomputes it for every staged key."""
    return not set(existing) - {*staged_columns(batch.spec), LOADED_AT, DELETED_IN_SOURCE_AT}


class DuckDBDialect(Dialect):
    """DuckDB reads staged Parquet in place and replaces the rows a batch beats instead of updating them."""

    type_names: ClassVar[dict[ColumnType, str]] = {
        **Dialect.type_names,
        ColumnType.STRING: "VARCHAR",
        ColumnType.FLOAT: "DOUBLE",
    }
    # An ART index on every key costs memory and load time and buys nothing here:
    # keys are unique by construction of the merge.
    primary_key_constraint: ClassVar[bool] = False

    def stage_steps(self, batch: StagedBatch) -> tuple[str, tuple, list[Step]]:
        """DuckDB scans the staged Parquet in place: no copy into a staging table first."""
        if not batch.files:
            return STAGING, (), [Step(self.create_staging_sql(batch))]
        return "read_parquet(?)", ([str(f) for f in batch.files],), []

    def stream_step(self, rows: RowStream, target: str, direct: bool) -> StreamStep:
        names = column_list(rows.batch.spec)
        loaded_at = (f", {quote(LOADED_AT)}", ", CURRENT_TIMESTAMP") if direct else ("", "")
        return StreamStep(f"INSERT INTO {target} ({names}{loaded_at[0]}) SELECT {names}{loaded_at[1]} "
                          f"FROM {STREAMED_ROWS}", rows=rows)

    def view_source(self, batch: StagedBatch, source: str) -> str:
        """The staged files named in the view's SQL (our own temporary paths, quoted as literals)."""
        if not batch.files:
            return source
        return "read_parquet([" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in batch.files) + "])"

    def merges_in_place(self, batch: StagedBatch, existing: dict) -> bool:
        """Streamed rows go straight into a table that exists (`in_place_merge_steps`) when the merge may
        replace rows (`replaces_rows`) and it has a key."""
        spec = batch.spec
        return bool(spec.primary_key) and not batch.keys_repeat and replaces_rows(batch, existing)

    def in_place_merge_steps(self, batch: StagedBatch, rows: RowStream) -> tuple[list[PlanStep], list[PlanStep]]:
        """A merge into a table that exists, its rows written once: streamed straight into the table (as a
        first load's), then each key found twice, its table row (row id up to the table's highest before
        the load, `rows_before`) and its new one (above it: DuckDB numbers a transaction's own rows after
        every committed one), is matched once, on the key and version columns alone, and the older of the
        two deleted by row id. The same rows as staging them and deleting the rows they beat, without the
        Parquet files (written, then read back) and their join with the table: staging 1M rows of 33
        columns cost ~3 s before the merge's ~5 s.

        A table keeping history takes its versions from the same match, before the losing rows go: a
        table row a new version displaces is copied into the superseded table, closed at that version;
        a new row older than its record's newest is kept apart, and once the table holds one row a key
        again goes where `version_steps` puts a batch's older versions (re-closing its neighbours), as
        in the staged merge, which found the same versions from the batch's rows apart from the table's.

        The rows must be distinct by key (a repeated key reads them again on the general path, as a first
        load's). Where the table tracks deletions, the batch's keys and versions are kept as LATEST for
        the marks' recompute before the losing rows go."""
        spec = batch.spec
        key, target = quote(spec.primary_key), table(spec)
        history = keeps_history(spec)
        before = Deferred(lambda results: results[ROWS_BEFORE])
        # With history, the pair itself and how its two versions compare, for the versions' steps.
        version = quote(spec.version_column) if history else ""
        compared = (f", n.{version} AS etl_next, n.{version} > o.{version} AS etl_displaces, "
                    f"n.{version} < o.{version} AS etl_older") if history else ""
        pair = ", etl_old, etl_new, etl_next, etl_displaces, etl_older" if history else ""
        steps: list[PlanStep] = [
            Step(f"SELECT COALESCE(MAX(rowid), -1) FROM {target}", fetch=True, result=ROWS_BEFORE),
            replace(self.stream_step(rows, target, direct=True), distinct_keys=True, result="streamed"),
            Step(f"CREATE TEMPORARY TABLE {MATCHED} AS SELECT CASE WHEN etl_wins THEN etl_old ELSE etl_new END "
                 f"AS etl_row, etl_wins{pair} FROM (SELECT o.rowid AS etl_old, n.rowid AS etl_new, "
                 f"COALESCE({newer(spec, 'n', 'o')}, false) AS etl_wins{compared} FROM {target} AS n "
                 f"JOIN {target} AS o ON o.{key} = n.{key} WHERE n.rowid > ? AND o.rowid <= ?) AS m", (before, before)),
        ]
        drops: list[PlanStep] = []
        if spec.track_deletions:
            kept = ", ".join(quote(c) for c in (spec.primary_key, *[spec.version_column] * bool(spec.version_column)))
            steps.append(Step(f"CREATE TEMPORARY TABLE {LATEST} AS SELECT {kept} FROM {target} WHERE rowid > ?",
                              (before,)))
            drops.append(Step(f"DROP TABLE {LATEST}"))
        older: list[PlanStep] = []
        if history:
            names = [quote(n) for n in staged_names(spec)]
            listed = ", ".join(names)
            steps += [
                Step(f"INSERT INTO {superseded_table(spec)} ({listed}, {quote(VALID_FROM)}, {quote(VALID_TO)}, "
                     f"{quote(LOADED_AT)}) SELECT {', '.join('c.' + n for n in names)}, c.{version}, "
                     f"m.etl_next, c.{quote(LOADED_AT)} FROM {target} AS c JOIN {MATCHED} AS m ON c.rowid = m.etl_old "
                     f"WHERE m.etl_displaces", result="versions_displaced"),
                Step(f"CREATE TEMPORARY TABLE {OLDER_ROWS} AS SELECT {listed} FROM {target} "
                     f"WHERE rowid IN (SELECT etl_new FROM {MATCHED} WHERE etl_older)"),
            ]
            older = [*version_steps(self, spec, OLDER_ROWS, displaced=False), Step(f"DROP TABLE {OLDER_ROWS}")]
        steps += [
            # The rows written that were no key's yet are the inserted ones; those that beat a row, updated.
            Step(f"SELECT COUNT(*) FILTER (WHERE etl_wins), ? - COUNT(*) FROM {MATCHED}",
                 (Deferred(lambda results: results["streamed"]),), fetch=True, result=("updated", "inserted")),
            Step(f"DELETE FROM {target} WHERE rowid IN (SELECT etl_row FROM {MATCHED})"),
            Step(f"DROP TABLE {MATCHED}"),
            *older,
        ]
        return steps, drops

    def merge_steps(self, batch: StagedBatch, existing: dict[str, int | None]) -> list[Step]:
        """The merge's UPDATE becomes a DELETE of the rows the batch beats, whose new versions the INSERT of
        keys not in the table then writes: the same rows. DuckDB keeps an UPDATE's old versions in memory,
        so updating a million wide rows failed under memory_limit (Out of Memory at 1 GB); a DELETE is a
        bitmap and an INSERT spills like any load. Only when the batch carries every column of the table
        (`replaces_rows`); else the UPDATE.

        LATEST is joined with the table once, on the key and the version columns alone, into MATCHED: the
        row id of each row the batch beats, the key of each staged row that does not beat its table row.
        The DELETE then finds its rows by row id, and the INSERT leaves out those keys only, so neither
        joins the table again (1M updated rows: 0.2 s for the DELETE by row id, against 4-5 s for
        `DELETE ... USING` LATEST, and the INSERT's anti-join against the whole table is gone)."""
        if not replaces_rows(batch, existing):
            return super().merge_steps(batch, existing)
        spec = batch.spec
        key, target, names = quote(spec.primary_key), table(spec), column_list(spec)
        return [
            Step(f"CREATE TEMPORARY TABLE {MATCHED} AS SELECT CASE WHEN etl_wins THEN etl_row END AS etl_row, "
                 f"CASE WHEN etl_wins THEN NULL ELSE {key} END AS {key} FROM (SELECT t.rowid AS etl_row, "
                 f"s.{key} AS {key}, COALESCE({newer(spec, 's', 't')}, false) AS etl_wins FROM {LATEST} AS s "
                 f"JOIN {target} AS t ON t.{key} = s.{key}) AS m"),
            Step(f"DELETE FROM {target} WHERE rowid IN (SELECT etl_row FROM {MATCHED} WHERE etl_row IS NOT NULL)",
                 result="replaced"),
            Step(f"INSERT INTO {target} ({names}, {quote(LOADED_AT)}) SELECT {names}, CURRENT_TIMESTAMP "
                 f"FROM {LATEST} AS s WHERE NOT EXISTS (SELECT 1 FROM {MATCHED} AS m WHERE m.{key} = s.{key})",
                 result="inserted"),
            Step(f"DROP TABLE {MATCHED}"),
        ]

    def rejects_steps(self, batch: StagedBatch) -> list[Step]:
        if not batch.reject_files:
            return []
        names = ", ".join(quote(c) for c in REJECTS_COLUMNS)
        insert = f"INSERT INTO {rejects_table(batch.spec)} ({names}) SELECT {names} FROM read_parquet(?)"
        return [Step(insert, ([str(f) for f in batch.reject_files],))]


class DuckDBWarehouse(Warehouse):
    """A DuckDB database file; created on first use."""

    path: str = "data/warehouse.duckdb"
    lock_timeout_seconds: float = 600.0
    memory_limit: str = Field(
        default="600MB",
        description="DuckDB's buffer pool; it spills to disk beyond this. It runs inside the asset's process, "
        "after staging: 600 MB keeps a 1M-row load under 1 GiB of peak RSS (921 MiB measured; 1.33 GiB with 1 GB).",
    )
    stream_memory_limit: str = Field(
        default="250MB",
        description="DuckDB's buffer pool while a streamed batch is read: the reader, transform and their "
        "queued chunks are in the same process at the same time (1.15 GiB peak at 1M rows with 600 MB; at 5M "
        "rows 1,151 MiB with 400 MB, 998 MiB with 250 MB, as fast).",
    )

    capabilities: ClassVar[Capabilities] = Capabilities(
        param="?", runs_steps_in_order=True, streams_rows=True,
        # The general merge into an existing table reads the batch twice (the rows it beats, the INSERT):
        # streamed, that copy is a temporary table under the buffer pool, which spilled and cost ~1.7x the
        # CPU of DuckDB scanning staged Parquet (1M rows: DELETE 5.6 s against 3.2 s). So rows stream into
        # a new table, and into an existing one only straight into the table itself, where the dialect's
        # `merges_in_place` says so (no history kept); other re-loads are staged to Parquet first.
        streams_into_existing_tables=False,
    )

    def describe(self) -> str:
        return f"duckdb:{self.path}"

    def dialect(self) -> DuckDBDialect:
        return DuckDBDialect(self.capabilities)

    def _transient(self, error: BaseException) -> bool:
        return isinstance(error, duckdb.IOException)  # e.g. the file lock was still held

    def _busy(self, error: BaseException) -> bool:
        return isinstance(error, duckdb.IOException) and "lock" in str(error).lower()

    def _what_to_fix(self, error: BaseException) -> str | None:
        """DuckDB names the operating system's refusal only in words (an IOException, a failed commit, a
        spill that found no room)."""
        if not isinstance(error, duckdb.Error):
            return super()._what_to_fix(error)
        message = str(error)
        for words, fix in _DUCKDB_FIXES:
            if any(w in message for w in words):
                detail = message.strip().splitlines()[0]
                return f"{self.describe()}: {fix} ({detail})"
        return None

    def reclaim_space(self, tables: Sequence[tuple[str, str]], on_wait: Callable[[str], None] | None = None) -> str:
        """DuckDB reuses a freed block without clearing it, and no CHECKPOINT or VACUUM gives the file back:
        the old values stay readable in it. So the whole database is copied into a new file (live rows
        only) that replaces this one while this process still holds the writer lock, so every later open,
        including one waiting on that lock, finds the new file. Needs free disk space for the copy."""
        path = Path(self.path)
        fresh = path.with_name(path.name + ".compacting")
        fresh.unlink(missing_ok=True)
        before = path.stat().st_size
        connection = self.connect()
        try:
            connection.execute("CHECKPOINT")
            [(name,)] = connection.execute("SELECT current_database()").fetchall()
            connection.execute(f"ATTACH '{str(fresh).replace(chr(39), chr(39) * 2)}' AS etl_compacted")
            try:
                connection.execute(f"COPY FROM DATABASE {quote(name)} TO etl_compacted")
            finally:
                connection.execute("DETACH etl_compacted")
            os.replace(fresh, path)
        finally:
            fresh.unlink(missing_ok=True)
            connection.close()
        return (f"{self.describe()}: copied into a new file holding live rows only ({before:,} -> "
                f"{path.stat().st_size:,} bytes); the replaced values are no longer in it")

    def with_lock_timeout(self, seconds: float) -> DuckDBWarehouse:
        return self.model_copy(update={"lock_timeout_seconds": seconds})

    def connect(self, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """Open the file, waiting while another process holds DuckDB's single-writer lock."""
        config = {"memory_limit": self.memory_limit, "preserve_insertion_order": False}
        return connect_waiting(self.path, self.lock_timeout_seconds, read_only, config)

    @contextmanager
    def held(self) -> Iterator[None]:
        """One connection for this thread's sessions of this file until the block ends (nested blocks
        share the outer one), opened by the first session. It holds DuckDB's writer lock meanwhile,
        so hold it for a step's work."""
        held = _held_connections()
        if self.path in held:
            yield
            return
        held[self.path] = None
        try:
            yield
        finally:
            connection = held.pop(self.path)
            if connection is not None:
                connection.close()

    @contextmanager
    def _transaction(self) -> Iterator[DuckDBSession]:
        held = _held_connections()
        if self.path not in held:
            with transaction(self.connect()) as connection:
                yield DuckDBSession(connection, self.stream_memory_limit)
            return
        if held[self.path] is None:
            held[self.path] = self.connect()
        connection = held[self.path]
        connection.begin()
        try:
            yield DuckDBSession(connection, self.stream_memory_limit)
            connection.commit()
        except BaseException as error:
            roll_back(connection, error)
            raise
