"""The warehouse interface every engine implements, and the SCD Type 1 merge.

Domains use only a narrow part of `Warehouse`: `ensure_table` (the platform's own
tables), `load` (a staged batch, by its mode), `upsert_steps` (bookkeeping rows
committed with a load), `count_rows`, `select`, `has_table` and `column_types`;
`audit.report_load` records an outcome. They write no SQL: the engines differ only
behind these, in how they stage files (`staged`, `stage_steps`), their dialect
(types, locks, the merge's statements) and their limits (`check_limits`).

A load is a plan of SQL steps in two phases. `prepare` is idempotent DDL (schema,
table, new columns, wider columns) committed on its own: Redshift cannot widen a
column inside a transaction, and a table that exists empty harms nothing. The
`transaction` then bulk-loads a staging table, keeps the newest version of each
key, updates the rows it beats, inserts the new keys and replaces the partition's
rejects: whatever fails, it rolls back and the table is as it was.

"Newest" is decided by (version column, source partition, source file, source
line), compared left to right: the same rows win whatever order partitions are
loaded in, and loading a partition twice changes nothing the second time.

A table whose spec tracks deletions also carries `_deleted_in_source_at`: a full
snapshot of the source (a batch with `full_snapshot_date`) is evidence that the
rows it lacks, if not newer than it, were deleted in the source. The merge keeps
that evidence (which snapshots exist, and the newest snapshot holding each key)
and recomputes the mark from it, so the mark too is the same whatever the order
of loads (docs/full-backups-and-hard-deletes.md).

Because a load is a plan, `etl-assets sql` can print exactly what would run.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import ClassVar

import dagster as dg
import pandas as pd

from etl_assets.warehouse.batch import RestartStream, StagedBatch, StreamedBatch
from etl_assets.warehouse.spec import (
    LINEAGE_COLUMNS,
    LOADED_AT,
    REJECTS_SCHEMA,
    SOURCE_FILE,
    SOURCE_PARTITION,
    Column,
    ColumnType,
    TableSpec,
    TextLimits,
    quote,
)

STAGING = "etl_staging"
LATEST = "etl_latest"
DELETED = "etl_deleted"  # the keys a load finds deleted in source, while it runs
DELETED_IN_SOURCE_AT = "_deleted_in_source_at"
FULL_BACKUPS = "etl_full_backups"  # per schema: one row per full snapshot loaded into a table
FULL_BACKUP_IDS = "_full_backup_ids"  # per table: the newest full snapshot holding each key
# A snapshot's date is local to an unknown time zone; the earliest zone (UTC+14) starts it this long
# before midnight UTC, so a version older than that certainly precedes the snapshot.
EARLIEST_ZONE_OFFSET = timedelta(hours=14)
REJECTS_COLUMNS = tuple(REJECTS_SCHEMA.names)


# information_schema's data_type spellings (PostgreSQL, DuckDB, Redshift) of the types tables are made of.
_TYPES_BY_NAME = {
    "bigint": ColumnType.INTEGER, "smallint": ColumnType.BOOLEAN, "double precision": ColumnType.FLOAT,
    "double": ColumnType.FLOAT, "date": ColumnType.DATE, "timestamp with time zone": ColumnType.DATETIME,
}


class WarehouseLimitError(ValueError):
    """A table the target cannot hold (too many columns, a value too wide)."""


class WarehouseUnreachable(ConnectionError):
    """The warehouse cannot be reached at all: fail at once, naming where it was looked for."""


class WarehouseBusy(TimeoutError):
    """A lock another session or process held was waited for as long as allowed: worth a retry later."""


class CannotWrite(dg.Failure):
    """A write refused for a reason only a person can fix: no permission, a read-only file or database,
    a full disk. Waiting cannot help, so it is a `dg.Failure` no RetryPolicy retries, wherever in a step
    it is raised; the description says what to fix and the database's own error is its `__cause__`."""

    def __init__(self, description: str):
        super().__init__(description=description, allow_retries=False)


# errno values a person must act on, and what each asks of them.
_FILE_FIXES = {
    errno.ENOSPC: "the disk is full: free space on it",
    errno.EDQUOT: "the disk quota is used up: free space or raise the quota",
    errno.EROFS: "the file system is read-only: remount it read-write, or write elsewhere",
    errno.EACCES: "permission denied: give this process's user access to it",
    errno.EPERM: "the operation is not permitted (an immutable file? `lsattr` shows it, `chattr -i` clears it)",
}


def roll_back(connection, error: BaseException) -> None:
    """Roll back after `error`. If that fails too (a commit that failed already ended the transaction,
    a session the server killed), `error` is still what the caller raises: the rollback's own error
    becomes a note on it, never the error."""
    try:
        connection.rollback()
    except Exception as rollback_error:  # noqa: BLE001 - whatever it is, the first cause wins
        error.add_note(f"(rolling back then failed too: {type(rollback_error).__name__}: {rollback_error})")


@dataclass(frozen=True)
class Step:
    """One SQL statement of a load.

    `files` are staged Parquet files streamed into the statement (COPY FROM STDIN);
    `rows` a StreamedBatch read into it (PostgreSQL: COPY FROM STDIN; DuckDB: the
    statement reads the Arrow stream `etl_rows`), which also sets the results
    `keys_repeat` and `rejected` once read; with `distinct_keys` the statement writes
    straight into the table, so a repeated key restarts the load on the general path.
    `each_chunk` are statements run after each chunk of `rows` is written (the chunk
    merged from a staging table, then emptied), their results summed over the chunks.
    `result` names the value to keep: the affected-row count, or with `fetch` the
    single value the statement returns (a tuple of names: the values of its one row).
    `when` / `unless` name earlier results (one
    name or several) the step runs only if all are true / none is: a plan's shortcut and
    the general path it replaces are both in the plan, and the transaction takes one of
    them (only engines that run steps one by one, `Warehouse.runs_steps_in_order`, get
    such steps).
    """

    sql: str
    params: tuple = ()
    files: tuple[Path, ...] = ()
    columns: tuple[str, ...] = ()
    result: str | tuple[str, ...] | None = None
    fetch: bool = False
    label: str = ""  # named in the error when the statement fails (a feed's post-load SQL)
    when: str | tuple[str, ...] = ""
    unless: str | tuple[str, ...] = ""
    rows: StreamedBatch | None = field(default=None, compare=False, repr=False)
    distinct_keys: bool = False
    each_chunk: tuple[Step, ...] = ()

    def skipped(self, results: dict[str, int]) -> bool:
        when = (self.when,) if isinstance(self.when, str) else self.when
        unless = (self.unless,) if isinstance(self.unless, str) else self.unless
        return any(name and not results[name] for name in when) or any(name and results[name] for name in unless)


def guarded(steps: Sequence[Step], when: str = "", unless: str = "") -> list[Step]:
    """`steps` that also need result `when` true and result `unless` false."""
    def more(old: str | tuple[str, ...], name: str) -> str | tuple[str, ...]:
        old = (old,) if isinstance(old, str) else old
        return tuple(n for n in (*old, name) if n) if name else old
    return [replace(step, when=more(step.when, when), unless=more(step.unless, unless)) for step in steps]


@dataclass(frozen=True)
class Deferred:
    """A step parameter known only once the earlier steps of its transaction ran: `value(results)`
    gets the results kept so far (`Step.result`). The audit row a load writes in its own transaction
    counts the rows that load merged. Only engines whose sessions run steps one by one resolve it
    (`Warehouse.runs_steps_in_order`); Redshift's Data API sends a whole batch at once."""

    value: Callable[[dict[str, int]], object]


def rows_merged(results: dict[str, int]) -> int:
    """The rows a load's transaction wrote (inserted or updated; DuckDB counts its replaced rows as inserted)."""
    return results.get("inserted", 0) + results.get("updated", 0)


class StepFailed(RuntimeError):
    """A labelled step of a load failed; the load's transaction was rolled back."""


@dataclass
class LoadPlan:
    prepare: list[Step] = field(default_factory=list)
    transaction: list[Step] = field(default_factory=list)
    added_columns: tuple[str, ...] = ()

    def statements(self) -> list[Step]:
        return self.prepare + self.transaction


@dataclass(frozen=True)
class LoadResult:
    keys_staged: int
    rows_rejected: int
    inserted: int
    updated: int
    added_columns: tuple[str, ...]
    deleted: int = 0  # rows an append of the same file, or a replace, removed first

    @property
    def unchanged(self) -> int:
        """Staged keys whose warehouse row was already as new or newer."""
        return max(self.keys_staged - self.inserted - self.updated, 0)


class Session:
    """An open connection; `run` executes steps in the session's current transaction."""

    param = "%s"

    def execute(self, sql: str, params: Sequence = ()) -> int:
        """Run one statement; return the number of rows it affected."""
        raise NotImplementedError

    def fetchall(self, sql: str, params: Sequence = ()) -> list[tuple]:
        raise NotImplementedError

    def copy_files(self, step: Step) -> int | None:
        """Stream the step's Parquet files into its COPY statement; return the rows copied."""
        raise NotImplementedError(f"{type(self).__name__} cannot stream local files")

    def copy_rows(self, step: Step) -> int:
        """Read the step's StreamedBatch into its statement; return the rows written."""
        raise NotImplementedError(f"{type(self).__name__} cannot load streamed rows")

    def copy_chunks(self, step: Step, results: dict[str, int]) -> int:
        """Read the step's StreamedBatch into its statement a chunk at a time, running `step.each_chunk`
        after each chunk and adding their results to `results`; return the rows written."""
        raise NotImplementedError(f"{type(self).__name__} cannot merge streamed rows by chunk")

    def run_streamed(self, step: Step, results: dict[str, int]) -> int:
        """`copy_rows` (or `copy_chunks`), with the error the batch's source raised (the database names it
        only in words)."""
        batch = step.rows
        try:
            copied = self.copy_chunks(step, results) if step.each_chunk else self.copy_rows(step)
        except RestartStream:
            raise
        except Exception as error:
            if batch.error is not None and batch.error is not error:
                raise batch.error from None
            raise
        if step.distinct_keys and batch.keys_repeat:
            raise RestartStream(f"a key repeats in {batch.spec.name}'s batch: it cannot go straight into the table")
        results.update(keys_repeat=bool(batch.keys_repeat), rejected=batch.rejected_rows > 0)
        return copied

    def lock_table(self, spec: TableSpec) -> None:
        """Serialize concurrent loads of one table, where the engine needs it."""

    def lock_catalog(self) -> None:
        """Serialize schema and table DDL across tables, where the engine needs it: on PostgreSQL
        `CREATE SCHEMA/TABLE IF NOT EXISTS` run by two transactions at once fails in the second."""

    def run_ddl(self, steps: Sequence[Step]) -> None:
        """Run a plan's `prepare` statements; Redshift commits each on its own (it cannot alter a
        column's type inside a transaction block)."""
        self.run(steps)

    def run(self, steps: Sequence[Step]) -> dict[str, int]:
        results: dict[str, int] = {}
        for step in steps:
            if step.skipped(results):
                continue
            if step.rows is not None:
                copied = self.run_streamed(step, results)
                if step.result:
                    results[step.result] = copied
                continue
            if step.files:
                copied = self.copy_files(step)
                if step.result:
                    results[step.result] = copied
                continue
            params = step.params
            if any(isinstance(p, Deferred) for p in params):
                params = tuple(p.value(results) if isinstance(p, Deferred) else p for p in params)
            try:
                if step.fetch:
                    row = self.fetchall(step.sql, params)[0]
                    value = row if isinstance(step.result, tuple) else row[0]
                else:
                    value = self.execute(step.sql, params)
            except Exception as error:
                if not step.label:
                    raise
                raise StepFailed(f"{step.label} failed: {type(error).__name__}: {str(error).strip()}") from error
            if isinstance(step.result, tuple):
                results.update(zip(step.result, value, strict=True))
            elif step.result:
                results[step.result] = value
        return results


class Warehouse(dg.ConfigurableResource):
    """Base class of the engines; see `DuckDBWarehouse`, `PostgresWarehouse`, `RedshiftWarehouse`."""

    type_names: ClassVar[dict[ColumnType, str]] = {
        ColumnType.STRING: "TEXT",
        ColumnType.DATETIME: "TIMESTAMPTZ",
        ColumnType.DATE: "DATE",
        ColumnType.BOOLEAN: "SMALLINT",
        ColumnType.INTEGER: "BIGINT",
        ColumnType.FLOAT: "DOUBLE PRECISION",
    }
    primary_key_constraint: ClassVar[bool] = True
    max_columns: ClassVar[int | None] = None
    param: ClassVar[str] = "%s"  # the driver's placeholder
    copy_format: ClassVar[str] = "csv"  # how Session.copy_files encodes staged rows for COPY FROM STDIN
    text_limits: ClassVar[TextLimits] = TextLimits()  # DuckDB and PostgreSQL hold any Salesforce text
    # Whether `Session.run` runs a transaction's steps one by one in this process, so a step's
    # `Deferred` parameters can be resolved from the results before it (not Redshift's batch API).
    runs_steps_in_order: ClassVar[bool] = False
    loaded_at_default: ClassVar[str] = ""  # PostgreSQL: what a COPY straight into a new table sets `_loaded_at` to
    # Whether `load` takes a StreamedBatch (reads its rows inside the transaction); Redshift needs staged files.
    streams_rows: ClassVar[bool] = False
    # Whether a batch for a table that exists is better streamed than staged (see DuckDBWarehouse).
    streams_into_existing_tables: ClassVar[bool] = True

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        raise NotImplementedError

    @contextmanager
    def held(self) -> Iterator[None]:
        """Within the block, this thread's sessions of this warehouse share one connection, opened
        at the start and closed at the end: each session is still its own transaction. One step's
        load, audit row and row counts then cost one connect instead of five (DuckDB: ~35 ms to
        open the file, ~30 ms to close it). Hold it for one step's work, no longer: on DuckDB an
        open connection is the file's single-writer lock, which other processes wait for. The base
        class opens a connection per session."""
        yield

    def describe(self) -> str:
        raise NotImplementedError

    def is_transient(self, error: BaseException) -> bool:
        """Whether retrying may help: a lost connection or a lock wait, not a statement the database refused,
        nor a permission or a full disk (`what_to_fix`)."""
        cause = error
        while cause is not None:
            if isinstance(cause, (WarehouseUnreachable, CannotWrite)) or self._what_to_fix(cause):
                return False
            if isinstance(cause, (ConnectionError, TimeoutError)) or self._transient(cause):
                return True
            cause = cause.__cause__
        return False

    def _transient(self, error: BaseException) -> bool:
        return False

    def what_to_fix(self, error: BaseException) -> str | None:
        """What a person must fix, naming where, when `error` (or what caused it) is a permission or a
        full disk; else None."""
        cause = error
        while cause is not None:
            if isinstance(cause, CannotWrite):
                return cause.description
            fix = self._what_to_fix(cause)
            if fix:
                return fix
            cause = cause.__cause__
        return None

    def _what_to_fix(self, error: BaseException) -> str | None:
        """The engine's reading of one error; here, a local file this process could not write (a
        streamed batch's rejects, the staged files)."""
        if isinstance(error, OSError) and error.errno in _FILE_FIXES:
            return f"{error.filename or 'a local file'}: {_FILE_FIXES[error.errno]} ({error.strerror})"
        return None

    def _busy(self, error: BaseException) -> bool:
        """Whether `error` is the engine giving up waiting for a lock another session holds."""
        return False

    @contextmanager
    def named_errors(self) -> Iterator[None]:
        """Around a session: a permission or a full disk raises CannotWrite (not retried, says what to
        fix), a lock waited out WarehouseBusy (retried); the database's error is their cause."""
        try:
            yield
        except (CannotWrite, WarehouseBusy, WarehouseUnreachable):
            raise
        except Exception as error:
            fix = self.what_to_fix(error)
            if fix:
                raise CannotWrite(fix) from error
            if self._busy(error):
                raise WarehouseBusy(f"{self.describe()} is busy: {str(error).strip()}") from error
            raise

    def with_lock_timeout(self, seconds: float) -> Warehouse:
        """This warehouse, waiting at most `seconds` for a lock another session holds (then WarehouseBusy):
        for readers that must answer soon, such as the audit endpoint."""
        return self

    # --- What domains use: ensure a table, load a staged batch, count and select rows. ---------------
    # Everything below this block is how an engine builds and runs the SQL behind them.

    def ensure_table(self, spec: TableSpec) -> None:
        """Create a table the platform keeps for itself (the audit trail, registries), or add the
        columns an older version of it lacks. A read first, so an existing table costs no lock and
        no DDL. Text is the engine's widest text type: these rows hold messages and JSON."""
        existing = self.column_types(spec.schema, spec.name)
        if existing and all(c.name in existing for c in spec.columns):
            return
        table = self.table(spec)
        with self.session() as session:
            session.lock_catalog()
            present = self.table_columns(session, spec.schema, spec.name)
            if not present:
                columns = ", ".join(f"{quote(c.name)} {self.type_names[c.type]}" for c in spec.columns)
                session.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(spec.schema)}")
                session.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
                return
            for c in spec.columns:
                if c.name not in present:
                    session.execute(f"ALTER TABLE {table} ADD COLUMN {quote(c.name)} {self.type_names[c.type]}")

    def load(self, batch: StagedBatch, after: Sequence[Step] = ()) -> LoadResult:
        """Load `batch` by its mode (merge, append, replace); `after` runs inside the same transaction
        (a file feed's post-load SQL, bookkeeping rows from `upsert_steps`), so the rows and everything
        that follows them commit or roll back together."""
        while True:
            spec = batch.spec
            self.check_limits(spec)
            try:
                with self.staged(batch):
                    with self.session() as session:
                        session.lock_table(spec)
                        session.lock_catalog()
                        plan = self.plan(batch, self.table_columns(session, spec.schema, spec.name), after=after)
                        session.run_ddl(plan.prepare)
                    with self.session() as session:
                        session.lock_table(spec)
                        results = session.run(plan.transaction)
            except RestartStream:
                continue  # rolled back; the batch now knows what the next plan needs (its types, repeated keys)
            return self.result(batch, results, plan)

    def upsert_steps(self, spec: TableSpec, row: dict, key: Sequence[str] = ()) -> list[Step]:
        """Steps (for `load(after=...)`) that replace the rows sharing `row`'s values of `key` with
        `row` (no key: only insert it): a bookkeeping row that exists exactly when its load committed."""
        p, table = self.param, self.table(spec)
        steps = []
        if key:
            where = " AND ".join(f"{quote(k)} = {p}" for k in key)
            steps.append(Step(f"DELETE FROM {table} WHERE {where}", tuple(row[k] for k in key)))
        names = ", ".join(quote(n) for n in row)
        steps.append(Step(f"INSERT INTO {table} ({names}) VALUES ({', '.join([p] * len(row))})", tuple(row.values())))
        return steps

    def count_rows(self, schema: str, table: str, non_null: str | None = None) -> int:
        """The table's rows, or those where column `non_null` is set."""
        counted = f"COUNT({quote(non_null)})" if non_null else "COUNT(*)"
        return self.query(f"SELECT {counted} FROM {quote(schema)}.{quote(table)}")[0][0]

    def select(self, schema: str, table: str, columns: Sequence[str], where: dict | None = None,
               at_least: dict | None = None) -> list[tuple]:
        """`columns` of the rows whose values equal `where`'s (a list or set: any of its values) and are
        at least `at_least`'s. Values always travel as parameters, never as SQL text."""
        clauses, params = [], []
        for column, value in (where or {}).items():
            if isinstance(value, (list, tuple, set, frozenset)):
                if not value:
                    return []
                clauses.append(f"{quote(column)} IN ({', '.join([self.param] * len(value))})")
                params += list(value)
            else:
                clauses.append(f"{quote(column)} = {self.param}")
                params.append(value)
        for column, value in (at_least or {}).items():
            clauses.append(f"{quote(column)} >= {self.param}")
            params.append(value)
        condition = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        names = ", ".join(quote(c) for c in columns)
        return self.query(f"SELECT {names} FROM {quote(schema)}.{quote(table)}{condition}", params)

    def has_table(self, schema: str, table: str) -> bool:
        return bool(self.column_types(schema, table))

    def column_types(self, schema: str, table: str) -> dict[str, ColumnType]:
        """Column name -> type of an existing table ({} if there is none), read back from the catalog
        views, so a column widened by an earlier load is never narrowed by a later one."""
        with self.session() as session:
            rows = session.fetchall(
                "SELECT column_name, data_type FROM information_schema.columns "
                f"WHERE table_schema = {session.param} AND table_name = {session.param}", [schema, table])
        return {name: _TYPES_BY_NAME.get(data_type.lower(), ColumnType.STRING) for name, data_type in rows}

    # --- How engines differ: staging, dialect, limits. -------------------------------------------

    @contextmanager
    def staged(self, batch: StagedBatch) -> Iterator[None]:
        """Around a load: put the staged files where the engine reads them. DuckDB and PostgreSQL read
        them where they are; Redshift uploads them to S3 first."""
        yield

    @staticmethod
    def result(batch: StagedBatch, results: dict[str, int], plan: LoadPlan) -> LoadResult:
        if batch.mode != "merge":
            deleted = sum(v for k, v in results.items() if k.startswith("deleted"))
            return LoadResult(batch.rows, batch.rejected_rows, results["inserted"], 0, plan.added_columns, deleted)
        # A merge of distinct keys counts no keys (they are the batch's rows); a first load copied
        # straight into its new table updates nothing.
        return LoadResult(results.get("keys_staged", batch.rows), batch.rejected_rows, results["inserted"],
                          results.get("updated", 0), plan.added_columns)

    def plan(self, batch: StagedBatch, existing: dict[str, int | None], after: Sequence[Step] = ()) -> LoadPlan:
        """Every statement a load of `batch` runs, given the table's current columns (name -> width);
        `after` ends the transaction."""
        spec = batch.spec
        plan = LoadPlan()
        plan.prepare.append(Step(f"CREATE SCHEMA IF NOT EXISTS {quote(spec.schema)}"))
        if not existing:
            plan.prepare.append(Step(self.create_table_sql(spec, batch)))
            plan.prepare += self.marked_rows_index_steps(spec)
        else:
            added = [c for c in spec.columns if c.name not in existing]
            plan.prepare += [
                Step(f"ALTER TABLE {self.table(spec)} ADD COLUMN {quote(c.name)} {self.column_type(c, batch)}")
                for c in added
            ]
            plan.prepare += self.widen_steps(spec, batch, existing)
            plan.prepare += self.retype_steps(batch)
            plan.added_columns = tuple(c.name for c in added)
            if spec.track_deletions and DELETED_IN_SOURCE_AT not in existing:
                plan.prepare.append(Step(f"ALTER TABLE {self.table(spec)} ADD COLUMN {quote(DELETED_IN_SOURCE_AT)} "
                                         f"{self.type_names[ColumnType.DATETIME]}"))
                plan.added_columns += (DELETED_IN_SOURCE_AT,)
                plan.prepare += self.marked_rows_index_steps(spec)
        source, params, staging = self.stage_steps(batch)
        plan.transaction += self.lock_steps(spec)
        if batch.mode != "merge":
            plan.transaction += staging + self.append_steps(batch, source, params)
            plan.transaction += [Step(f"DROP TABLE IF EXISTS {STAGING}"), *after]
            return plan
        plan.prepare.append(Step(self.create_rejects_sql(spec)))
        if spec.track_deletions:
            plan.prepare += self.create_deletion_tables_steps(spec)
        plan.transaction += self.marks_check_steps(batch)
        streamed = isinstance(batch, StreamedBatch)
        if streamed:
            merge, drop_latest = self.streamed_merge_steps(batch, existing)
            plan.transaction += merge
        elif self.runs_steps_in_order and batch.keys_repeat is False and batch.files:
            plan.transaction += self.distinct_keys_merge_steps(batch, existing, source, params, staging)
            drop_latest = [Step(f"DROP VIEW {LATEST}")]
        else:
            plan.transaction += staging + self.latest_steps(spec, source, params) + [
                Step(f"SELECT COUNT(*) FROM {LATEST}", result="keys_staged", fetch=True),
                self.update_step(batch, existing),
                Step(self.insert_sql(spec), result="inserted"),
            ]
            drop_latest = [Step(f"DROP TABLE {LATEST}")]
        plan.transaction += self.deletion_steps(batch)
        if batch.partition is not None:
            plan.transaction.append(
                Step(f"DELETE FROM {self.rejects_table(spec)} WHERE {quote(SOURCE_PARTITION)} = {self.param}",
                     (batch.partition,))
            )
        plan.transaction += guarded(self.rejects_steps(batch), when="rejected") if streamed else self.rejects_steps(batch)
        plan.transaction += [*drop_latest, Step(f"DROP TABLE IF EXISTS {STAGING}")]
        plan.transaction += self.after_merge_steps(spec) + list(after)
        return plan

    def distinct_keys_merge_steps(self, batch: StagedBatch, existing: dict[str, int | None], source: str,
                                  params: tuple, staging: list[Step]) -> list[Step]:
        """The merge of a batch in which no key repeats (`StagedBatch.keys_repeat` is False, counted when
        it was staged). Every staged row is then already its key's newest staged version, so LATEST is a
        view of the staged rows (no ROW_NUMBER pass, nothing copied) and the staged keys are the staged
        rows (no COUNT); the update and the insert are the general path's, so the table ends the same."""
        spec = batch.spec
        return staging + [
            Step(f"CREATE TEMPORARY VIEW {LATEST} AS SELECT {self._names(spec)} FROM {self.view_source(batch, source)}"),
            self.update_step(batch, existing),
            Step(self.insert_sql(spec), result="inserted"),
        ]

    def streamed_merge_steps(self, batch: StreamedBatch, existing: dict[str, int | None]
                             ) -> tuple[list[Step], list[Step]]:
        """The merge of a StreamedBatch, and the steps that drop its LATEST; whether keys repeat is known
        only once the rows were read, so both ways are in the plan and the result `keys_repeat` picks one.

        The rows go into the staging table; with no repeated key LATEST is a view of it (no newest-version
        pass), else the general one. Into the table this load created (`existing` empty), while it is still
        empty inside the transaction (result `direct`), they go straight into the table instead: written
        once, no staging table, UPDATE or anti-join INSERT. A repeated key found there restarts the load
        (RestartStream: the transaction rolls back) with `keys_repeat` known, on the general path; so does a
        table another load filled between the two transactions, on the `unless direct` steps."""
        spec = batch.spec
        general = [Step(self.create_staging_sql(batch)), self.stream_step(batch, STAGING, direct=False)]
        general += guarded(self.latest_steps(spec, STAGING, ()), when="keys_repeat")
        general += [
            Step(f"SELECT COUNT(*) FROM {LATEST}", result="keys_staged", fetch=True, when="keys_repeat"),
            Step(f"CREATE TEMPORARY VIEW {LATEST} AS SELECT {self._names(spec)} FROM {STAGING}", unless="keys_repeat"),
            self.update_step(batch, existing),
            Step(self.insert_sql(spec), result="inserted"),
        ]
        drops = [Step(f"DROP TABLE {LATEST}", when="keys_repeat"), Step(f"DROP VIEW {LATEST}", unless="keys_repeat")]
        if existing or batch.keys_repeat:
            return general, drops
        table = self.table(spec)
        direct = [
            Step(f"SELECT NOT EXISTS (SELECT 1 FROM {table})", fetch=True, result="direct"),
            *guarded(self.direct_load_steps(batch), when="direct"),
            Step(f"CREATE TEMPORARY VIEW {LATEST} AS SELECT {self._names(spec)} FROM {table}", when="direct"),
        ]
        return direct + guarded(general, unless="direct"), [Step(f"DROP VIEW {LATEST}", when="direct"),
                                                            *guarded(drops, unless="direct")]

    def direct_load_steps(self, batch: StreamedBatch) -> list[Step]:
        """The rows straight into the empty table (result `inserted`); a repeated key restarts the load."""
        return [replace(self.stream_step(batch, self.table(batch.spec), direct=True), distinct_keys=True,
                        result="inserted")]

    def stream_step(self, batch: StreamedBatch, target: str, direct: bool) -> Step:
        """The statement that reads the batch's rows into `target` (the staging table, or with `direct`
        the table itself, whose `_loaded_at` it sets as the merge's INSERT does)."""
        raise NotImplementedError(f"{type(self).__name__} does not load streamed rows")

    def marked_rows_index_steps(self, spec: TableSpec) -> list[Step]:
        """Where the engine has partial indexes: one on the rows marked deleted in source, so the
        `marks_check_steps` lookup reads no unmarked row. Made with the table or its mark column."""
        return []

    def view_source(self, batch: StagedBatch, source: str) -> str:
        """`source` as a view can read it (DuckDB: the files named in the SQL, a view takes no parameters)."""
        return source

    def marks_check_steps(self, batch: StagedBatch) -> list[Step]:
        """Whether the deletion marks can change (result `marks`): a load that is not a full snapshot
        only recomputes marks, and a mark needs a full snapshot of the table as evidence or is one to
        clear. With no snapshot recorded for the table and no row marked, the recompute would find
        nothing, so `deletion_steps` skips it. Asked before the merge: the merge never sets a mark, so
        no row is marked after it that was not before; and under the load's table lock, so no other
        load records a snapshot of this table meanwhile."""
        spec = batch.spec
        if not spec.track_deletions or batch.full_snapshot_date is not None or not self.runs_steps_in_order:
            return []
        return [Step(f'SELECT EXISTS (SELECT 1 FROM {self.full_backups_table(spec)} WHERE "table_name" = {self.param}) '
                     f"OR EXISTS (SELECT 1 FROM {self.table(spec)} WHERE {quote(DELETED_IN_SOURCE_AT)} IS NOT NULL)",
                     (spec.name,), fetch=True, result="marks")]

    def full_backup_ids_table(self, spec: TableSpec) -> str:
        return f"{quote(spec.schema)}.{quote(spec.name + FULL_BACKUP_IDS)}"

    def full_backups_table(self, spec: TableSpec) -> str:
        return f"{quote(spec.schema)}.{quote(FULL_BACKUPS)}"

    def create_deletion_tables_steps(self, spec: TableSpec) -> list[Step]:
        """The evidence the marks are computed from: which full snapshots were loaded, with the newest
        version each one holds (its cutoff), and the newest snapshot holding each key."""
        text, _ = self.lineage_types()
        stamp = self.type_names[ColumnType.DATETIME]
        key_column = spec.column(spec.primary_key)
        key_type = text if key_column.type is ColumnType.STRING else self.column_type(key_column)
        key = quote(spec.primary_key)
        constraint = f", PRIMARY KEY ({key})" if self.primary_key_constraint else ""
        return [
            Step(f"CREATE TABLE IF NOT EXISTS {self.full_backups_table(spec)} ("
                 f'"table_name" {text}, "partition" {text}, "cutoff" {stamp}, "backup_at" {stamp})'),
            Step(f"CREATE TABLE IF NOT EXISTS {self.full_backup_ids_table(spec)} ("
                 f'{key} {key_type} NOT NULL, "last_full_partition" {text}{constraint})'),
        ]

    def deletion_steps(self, batch: StagedBatch) -> list[Step]:
        """After the merge: record a full snapshot's evidence, then recompute `_deleted_in_source_at`.

        A row is deleted in source iff a full snapshot of its table has a cutoff at or after the row's
        version and is newer than the newest snapshot holding its key; the mark is the earliest such
        snapshot's date. The evidence only grows whatever the load order, so recomputing the mark of
        every row a load can affect (all of them after a full snapshot, the staged keys otherwise)
        leaves the same table in any order. A snapshot with rejected rows records the keys it holds
        but is no evidence of deletions: its rejected keys would look deleted."""
        spec = batch.spec
        if not spec.track_deletions:
            return []
        p, key, version = self.param, quote(spec.primary_key), quote(spec.version_column)
        table, ids, backups = self.table(spec), self.full_backup_ids_table(spec), self.full_backups_table(spec)
        mark = quote(DELETED_IN_SOURCE_AT)
        full = batch.full_snapshot_date is not None
        steps = []
        if full:
            if batch.partition is None:
                raise ValueError(f"a full snapshot of {spec.name} needs a partition to be recorded under")
            backup_at = datetime.combine(batch.full_snapshot_date, time(0), timezone.utc)
            steps.append(Step(f'DELETE FROM {backups} WHERE "table_name" = {p} AND "partition" = {p}',
                              (spec.name, batch.partition)))
            streamed = isinstance(batch, StreamedBatch)  # its rejects are counted as the transaction reads it
            if streamed or not batch.rejected_rows:
                steps.append(Step(
                    f'INSERT INTO {backups} ("table_name", "partition", "cutoff", "backup_at") SELECT {p}, {p}, '
                    f"COALESCE(MAX({version}), CAST({p} AS TIMESTAMPTZ)), CAST({p} AS TIMESTAMPTZ) FROM {LATEST}",
                    (spec.name, batch.partition, _timestamp(backup_at - EARLIEST_ZONE_OFFSET), _timestamp(backup_at)),
                    unless="rejected" if streamed else ""))
            steps += [
                Step(f'DELETE FROM {ids} WHERE "last_full_partition" < {p} AND {key} IN (SELECT {key} FROM {LATEST})',
                     (batch.partition,)),
                Step(f'INSERT INTO {ids} ({key}, "last_full_partition") SELECT s.{key}, {p} FROM {LATEST} AS s '
                     f"WHERE NOT EXISTS (SELECT 1 FROM {ids} AS i WHERE i.{key} = s.{key})", (batch.partition,)),
            ]
        # The new mark of every row in scope that is marked or qualifies (NULL: clear it), then one UPDATE of
        # those whose mark differs: the table's unmarked, unqualified rows are never looked up one by one.
        staged_only = "" if full else f" JOIN {LATEST} AS s ON s.{key} = r.{key}"
        qualifies = '(i."last_full_partition" IS NULL OR f."partition" > i."last_full_partition")'
        when = "marks" if self.marks_check_steps(batch) else ""
        steps += [replace(step, when=when) for step in [
            Step(f"CREATE TEMPORARY TABLE {DELETED} AS SELECT r.{key} AS {key}, "
                 f'MIN(CASE WHEN {qualifies} THEN f."backup_at" END) AS "deleted_at" FROM {table} AS r{staged_only} '
                 f'LEFT JOIN {backups} AS f ON f."table_name" = {p} AND f."cutoff" >= r.{version} '
                 f"LEFT JOIN {ids} AS i ON i.{key} = r.{key} "
                 f'WHERE r.{mark} IS NOT NULL OR (f."partition" IS NOT NULL AND {qualifies}) GROUP BY r.{key}',
                 (spec.name,)),
            Step(f'UPDATE {table} AS t SET {mark} = d."deleted_at" FROM {DELETED} AS d WHERE t.{key} = d.{key} '
                 f'AND (t.{mark} <> d."deleted_at" OR (t.{mark} IS NULL AND d."deleted_at" IS NOT NULL) '
                 f'OR (t.{mark} IS NOT NULL AND d."deleted_at" IS NULL))'),
            Step(f"DROP TABLE {DELETED}"),
        ]]
        return steps

    def append_steps(self, batch: StagedBatch, source: str, params: tuple) -> list[Step]:
        """`replace`: empty the table; `append`: remove earlier rows of these source files; then insert."""
        table = self.table(batch.spec)
        if batch.mode == "replace":
            steps = [Step(f"DELETE FROM {table}", result="deleted")]
        else:
            files = sorted(batch.source_files)
            steps = [
                Step(f"DELETE FROM {table} WHERE {quote(SOURCE_FILE)} = {self.param}", (f,), result=f"deleted:{f}")
                for f in files
            ]
        names = ", ".join(quote(c) for c in self.staged_columns(batch.spec))
        steps.append(Step(
            f"INSERT INTO {table} ({names}, {quote(LOADED_AT)}) SELECT {names}, CURRENT_TIMESTAMP FROM {source}",
            params, result="inserted",
        ))
        return steps

    def stage_steps(self, batch: StagedBatch) -> tuple[str, tuple, list[Step]]:
        """Steps that fill the staging table; returns (source to read staged rows from, its params, steps)."""
        columns = self.staged_columns(batch.spec)
        copy = f"COPY {STAGING} ({', '.join(quote(c) for c in columns)}) FROM STDIN WITH (FORMAT {self.copy_format})"
        steps = [Step(self.create_staging_sql(batch))]
        if batch.files:
            steps.append(Step(copy, files=tuple(batch.files), columns=columns))
        return STAGING, (), steps

    def rejects_steps(self, batch: StagedBatch) -> list[Step]:
        if not batch.reject_files:
            return []
        names = ", ".join(quote(c) for c in REJECTS_COLUMNS)
        copy = f"COPY {self.rejects_table(batch.spec)} ({names}) FROM STDIN WITH (FORMAT {self.copy_format})"
        return [Step(copy, files=tuple(batch.reject_files), columns=REJECTS_COLUMNS)]

    def lock_steps(self, spec: TableSpec) -> list[Step]:
        return []

    def widen_steps(self, spec: TableSpec, batch: StagedBatch, existing: dict[str, int | None]) -> list[Step]:
        return []

    def after_merge_steps(self, spec: TableSpec) -> list[Step]:
        return []

    def check_limits(self, spec: TableSpec) -> None:
        total = len(spec.columns) + len(LINEAGE_COLUMNS) + 1
        if self.max_columns is not None and total > self.max_columns:
            raise WarehouseLimitError(
                f"{spec.schema}.{spec.name} would have {total} columns; {self.describe()} allows {self.max_columns}"
            )

    def table_columns(self, session: Session, schema: str, table: str) -> dict[str, int | None]:
        """Column name -> character width (None where unbounded) of an existing table; {} if there is none."""
        rows = session.fetchall(
            "SELECT column_name, character_maximum_length FROM information_schema.columns "
            f"WHERE table_schema = {session.param} AND table_name = {session.param} ORDER BY ordinal_position",
            [schema, table],
        )
        return {name: width for name, width in rows}

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
            steps.append(Step(f"ALTER TABLE {self.table(batch.spec)} ALTER COLUMN {column} "
                              f"TYPE {self.type_names[new]} USING {cast}"))
        return steps

    @staticmethod
    def staged_columns(spec: TableSpec) -> tuple[str, ...]:
        return tuple(c.name for c in spec.columns) + tuple(name for name, _ in LINEAGE_COLUMNS)

    def table(self, spec: TableSpec) -> str:
        return f"{quote(spec.schema)}.{quote(spec.name)}"

    def rejects_table(self, spec: TableSpec) -> str:
        return f"{quote(spec.schema)}.{quote(spec.rejects_name)}"

    def column_type(self, column: Column, batch: StagedBatch | None = None) -> str:
        return self.type_names[column.type]

    def _column_defs(self, columns: Sequence[Column], batch: StagedBatch | None, not_null: bool = True) -> list[str]:
        return [
            f"{quote(c.name)} {self.column_type(c, batch)}" + ("" if c.nullable or not not_null else " NOT NULL")
            for c in columns
        ]

    def _lineage_defs(self) -> list[str]:
        text, integer = self.lineage_types()
        return [f'"_source_partition" {text}', f'"_source_file" {text}', f'"_source_line" {integer}']

    def lineage_types(self) -> tuple[str, str]:
        return self.type_names[ColumnType.STRING], self.type_names[ColumnType.INTEGER]

    def table_attributes(self, spec: TableSpec) -> str:
        return ""

    def create_table_sql(self, spec: TableSpec, batch: StagedBatch | None = None) -> str:
        defs = self._column_defs(spec.columns, batch) + self._lineage_defs()
        defs.append(f"{quote(LOADED_AT)} {self.type_names[ColumnType.DATETIME]}{self.loaded_at_default}")
        if spec.track_deletions:
            defs.append(f"{quote(DELETED_IN_SOURCE_AT)} {self.type_names[ColumnType.DATETIME]}")
        if self.primary_key_constraint and spec.primary_key:
            defs.append(self.primary_key_sql(spec))
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table(spec)} (\n  " + ",\n  ".join(defs) + "\n)"
            + self.table_attributes(spec)
        )

    def primary_key_sql(self, spec: TableSpec) -> str:
        return f"PRIMARY KEY ({quote(spec.primary_key)})"

    def rejects_types(self) -> tuple[str, str]:
        return self.type_names[ColumnType.STRING], self.type_names[ColumnType.INTEGER]

    def create_rejects_sql(self, spec: TableSpec) -> str:
        text, integer = self.rejects_types()
        return (
            f"CREATE TABLE IF NOT EXISTS {self.rejects_table(spec)} ("
            f'"_source_partition" {text}, "_source_file" {text}, "_source_line" {integer}, '
            f'"column_name" {text}, "reason" {text}, "raw_record" {text})'
        )

    def create_staging_sql(self, batch: StagedBatch, name: str = STAGING) -> str:
        columns = [replace(c, nullable=True) for c in batch.spec.columns]  # keeps each column's long_text
        defs = self._column_defs(columns, batch) + self._lineage_defs()
        return f"CREATE TEMPORARY TABLE {name} (" + ", ".join(defs) + ")"

    def _version_order(self, spec: TableSpec) -> list[str]:
        """Newest first by the version column, then the later partition, file and line (the only order
        of a table without a version column: the later folder wins, still the same whatever the load order)."""
        return [spec.version_column] * bool(spec.version_column) + [name for name, _ in LINEAGE_COLUMNS]

    def latest_steps(self, spec: TableSpec, source: str, params: tuple) -> list[Step]:
        """Steps that leave the newest staged version of each key in LATEST."""
        return [Step(self.latest_sql(spec, source), params)]

    def _names(self, spec: TableSpec) -> str:
        return ", ".join(quote(c) for c in self.staged_columns(spec))

    def latest_sql(self, spec: TableSpec, source: str = STAGING) -> str:
        """The newest staged version of each key."""
        names = self._names(spec)
        order = ", ".join(f"{quote(c)} DESC" for c in self._version_order(spec))
        return (
            f"CREATE TEMPORARY TABLE {LATEST} AS SELECT {names} FROM ("
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

    def update_step(self, batch: StagedBatch, existing: dict[str, int | None]) -> Step:
        """The merge's update of the rows the batch beats (DuckDB replaces them instead)."""
        return Step(self.update_sql(batch.spec), result="updated")

    def update_sql(self, spec: TableSpec) -> str:
        assigned = [c for c in self.staged_columns(spec) if c != spec.primary_key]
        sets = ", ".join(f"{quote(n)} = s.{quote(n)}" for n in assigned)
        key = quote(spec.primary_key)
        return (
            f"UPDATE {self.table(spec)} AS t SET {sets}, {quote(LOADED_AT)} = CURRENT_TIMESTAMP "
            f"FROM {LATEST} AS s WHERE t.{key} = s.{key} AND {self._newer(spec, 's', 't')}"
        )

    def insert_sql(self, spec: TableSpec) -> str:
        names = [quote(c) for c in self.staged_columns(spec)]
        key = quote(spec.primary_key)
        return (
            f"INSERT INTO {self.table(spec)} ({', '.join(names)}, {quote(LOADED_AT)}) "
            f"SELECT {', '.join('s.' + n for n in names)}, CURRENT_TIMESTAMP FROM {LATEST} AS s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {self.table(spec)} AS t WHERE t.{key} = s.{key})"
        )

    def read_table(self, schema: str, table: str) -> pd.DataFrame:
        """A whole table as a frame (tests compare tables across engines with it)."""
        with self.session() as session:
            columns = list(self.table_columns(session, schema, table))
            rows = session.fetchall(f"SELECT * FROM {quote(schema)}.{quote(table)}")
        return pd.DataFrame(rows, columns=columns)

    def query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        """Any read, for operators and tests; domain code uses the methods above instead."""
        with self.session() as session:
            return session.fetchall(sql, params)


def _timestamp(value: datetime) -> str:
    """A UTC time as text that every target casts to TIMESTAMPTZ (and the Data API can render)."""
    return f"{value:%Y-%m-%d %H:%M:%S}+00"
