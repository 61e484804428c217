"""The warehouse every domain loads into and reads from, whatever the engine.

Domains use a narrow part of `Warehouse`: `ensure_table` (the platform's own tables), `load` (a
batch, by its mode), `upsert_steps` (bookkeeping rows committed with a load), and the reads
`count_rows`, `select`, `has_table` and `column_types`; `audit.report_load` records an outcome.
They write no SQL and do not choose how rows travel: a batch not read yet is streamed into its
load where the engine can, else staged first, decided here from the engine's `Capabilities`.

Engines differ behind this in three places: their capabilities and `Dialect` (how each statement
of the load plan, plan.py, is spelled), their sessions (how a statement or a COPY reaches the
database), and how they name the errors a person must act on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar

import dagster as dg
import pandas as pd

from etl_assets.warehouse.batch import ReadAgain, StagedBatch
from etl_assets.warehouse.dialect import Capabilities, Dialect
from etl_assets.warehouse.dialect import table as qualified
from etl_assets.warehouse.errors import (
    CannotWrite,
    WarehouseBusy,
    WarehouseLimitError,
    WarehouseUnreachable,
    file_fix,
)
from etl_assets.warehouse.history import HistoryNow, history_now, keeps_history
from etl_assets.warehouse.plan import load_result, plan_load
from etl_assets.warehouse.rows import RowStream, stage
from etl_assets.warehouse.session import Session
from etl_assets.warehouse.spec import LINEAGE_COLUMNS, ColumnType, TableSpec, TextLimits, quote
from etl_assets.warehouse.steps import LoadPlan, LoadResult, PlanStep, Step

# information_schema's data_type spellings (PostgreSQL, DuckDB, Redshift) of the types tables are made of.
_TYPES_BY_NAME = {
    "bigint": ColumnType.INTEGER, "smallint": ColumnType.BOOLEAN, "double precision": ColumnType.FLOAT,
    "double": ColumnType.FLOAT, "date": ColumnType.DATE, "timestamp with time zone": ColumnType.DATETIME,
}


class Warehouse(dg.ConfigurableResource):
    """Base class of the engines; see `DuckDBWarehouse`, `PostgresWarehouse`, `RedshiftWarehouse`."""

    capabilities: ClassVar[Capabilities] = Capabilities()

    # What domains call.

    def ensure_table(self, spec: TableSpec) -> None:
        """Create a table the platform keeps for itself (the audit trail, registries), or add the
        columns an older version of it lacks. A read first, so an existing table costs no lock and
        no DDL. Text is the engine's widest text type: these rows hold messages and JSON."""
        existing = self.column_types(spec.schema, spec.name)
        if existing and all(c.name in existing for c in spec.columns):
            return
        types = self.dialect().type_names
        with self.session() as session:
            session.lock_catalog()
            present = session.table_columns(spec.schema, spec.name)
            if not present:
                columns = ", ".join(f"{quote(c.name)} {types[c.type]}" for c in spec.columns)
                session.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(spec.schema)}")
                session.execute(f"CREATE TABLE IF NOT EXISTS {qualified(spec)} ({columns})")
                return
            for c in spec.columns:
                if c.name not in present:
                    session.execute(f"ALTER TABLE {qualified(spec)} ADD COLUMN {quote(c.name)} {types[c.type]}")

    def load(self, batch: StagedBatch, after: Sequence[PlanStep] = ()) -> LoadResult:
        """Load `batch` by its mode (merge, append, replace); `after` runs inside the same transaction
        (a file feed's post-load SQL, bookkeeping rows from `upsert_steps`), so the rows and everything
        that follows them commit or roll back together. Rows not read yet are read here: streamed into
        the load where this engine can (`_streams`), else staged to Parquet first."""
        with self.held():  # one connection for the look-ups, the plan and the transaction (DuckDB: one open)
            return self._load(batch, after)

    def _load(self, batch: StagedBatch, after: Sequence[PlanStep]) -> LoadResult:
        limits = self.capabilities.text_limits
        if batch.source is not None and not self._streams(batch):
            stage(batch, limits)
        dialect = self.dialect()
        while True:
            spec = batch.spec
            self.check_limits(spec)
            rows = RowStream(batch, limits) if batch.source is not None else None
            try:
                with self._staged(batch):
                    with self.session() as session:
                        session.lock_table(spec)
                        session.lock_catalog()
                        plan = plan_load(dialect, batch, session.table_columns(spec.schema, spec.name), after, rows,
                                         history_now(session, spec) if keeps_history(spec) else None)
                        session.run_ddl(plan.prepare)
                    with self.session() as session:
                        session.lock_table(spec)
                        results = session.run(plan.transaction)
            except ReadAgain:
                continue  # rolled back; the batch now knows what the next plan needs (its types, repeated keys)
            return load_result(batch, results, plan)

    def upsert_steps(self, spec: TableSpec, row: dict, key: Sequence[str] = ()) -> list[Step]:
        """Steps (for `load(after=...)`) that replace the rows sharing `row`'s values of `key` with
        `row` (no key: only insert it): a bookkeeping row that exists exactly when its load committed."""
        p = self.param
        steps = []
        if key:
            where = " AND ".join(f"{quote(k)} = {p}" for k in key)
            steps.append(Step(f"DELETE FROM {qualified(spec)} WHERE {where}", tuple(row[k] for k in key)))
        names = ", ".join(quote(n) for n in row)
        steps.append(Step(f"INSERT INTO {qualified(spec)} ({names}) VALUES ({', '.join([p] * len(row))})",
                          tuple(row.values())))
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

    @property
    def param(self) -> str:
        """The placeholder `query` takes for a value."""
        return self.capabilities.param

    @property
    def text_limits(self) -> TextLimits:
        """The longest text this engine stores; the rows a batch reads are cut or refused to fit."""
        return self.capabilities.text_limits

    # For operators and tests.

    def query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        """Any read, for operators and tests; domain code uses the methods above instead."""
        with self.session() as session:
            return session.fetchall(sql, params)

    def read_table(self, schema: str, table: str) -> pd.DataFrame:
        """A whole table as a frame (tests compare tables across engines with it)."""
        with self.session() as session:
            columns = list(session.table_columns(schema, table))
            rows = session.fetchall(f"SELECT * FROM {quote(schema)}.{quote(table)}")
        return pd.DataFrame(rows, columns=columns)

    def plan(self, batch: StagedBatch, existing: dict[str, int | None], after: Sequence[PlanStep] = (),
             history: HistoryNow | None = None) -> LoadPlan:
        """Every statement a load of `batch` runs into a table with the columns `existing` (name -> width)
        and, where it keeps history, the versions' tables as `history` says (None: created if absent);
        `etl-assets sql` prints it."""
        rows = RowStream(batch, self.capabilities.text_limits) if batch.source is not None else None
        return plan_load(self.dialect(), batch, existing, after, rows, history)

    def check_limits(self, spec: TableSpec) -> None:
        """Refuse, before any DDL, a table this engine cannot hold."""
        total = len(spec.columns) + len(LINEAGE_COLUMNS) + 1
        if keeps_history(spec):  # the versions table: _valid_from, _valid_to, _is_current, _deleted_at, _loaded_at
            total = max(total, len(spec.columns) + len(LINEAGE_COLUMNS) + 5)
        limit = self.capabilities.max_columns
        if limit is not None and total > limit:
            raise WarehouseLimitError(f"{spec.schema}.{spec.name} would have {total} columns; {self.describe()} "
                                      f"allows {limit}")

    def reclaim_space(self, tables: Sequence[tuple[str, str]], on_wait: Callable[[str], None] | None = None) -> str:
        """After a rewrite that replaced or dropped values (a column policy turned on), leave none of the old
        values readable in the database's files where the engine can; says what it did. Engines reuse the
        space of replaced rows but do not clear it, so without this the old bytes stay in their files.
        `on_wait` is told, as a line of text, what the reclaim waits for; an engine that cannot finish it
        raises SpaceNotReclaimed (errors.py) saying what still holds the old values."""
        return (f"{self.describe()}: the replaced values stay in free space until the engine reuses it; "
                "reclaim it with the engine's own command (docs/personal-data.md)")

    def describe(self) -> str:
        raise NotImplementedError

    def dialect(self) -> Dialect:
        """How this engine spells a load's statements (with the settings they name)."""
        return Dialect(self.capabilities)

    # Sessions.

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises, the error that caused
        the rollback being the one raised (`errors.roll_back`). On every engine alike, a permission or a
        full disk raises CannotWrite (not retried, says what to fix), a lock waited out WarehouseBusy."""
        with self._named_errors(), self._transaction() as session:
            yield session

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        """The engine's transaction (see `session`)."""
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

    def with_lock_timeout(self, seconds: float) -> Warehouse:
        """This warehouse, waiting at most `seconds` for a lock another session holds (then WarehouseBusy):
        for readers that must answer soon, such as the audit endpoint."""
        return self

    @contextmanager
    def _staged(self, batch: StagedBatch) -> Iterator[None]:
        """Around a load: put the staged files where the engine reads them. DuckDB and PostgreSQL read
        them where they are; Redshift uploads them to S3 first."""
        yield

    def _streams(self, batch: StagedBatch) -> bool:
        """Whether rows not read yet go straight into the load's statements rather than being staged
        first: where the engine can, for a merge, and into a table that exists only where that is the
        faster way (`Capabilities.streams_into_existing_tables`, or the dialect's `merges_in_place`)."""
        capabilities = self.capabilities
        if not capabilities.streams_rows or batch.mode != "merge":
            return False
        if capabilities.streams_into_existing_tables:
            return True
        existing = self.column_types(batch.spec.schema, batch.spec.name)
        return not existing or self.dialect().merges_in_place(batch, existing)

    # Errors: what a person must fix, and what a retry may cure.

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

    def _transient(self, error: BaseException) -> bool:
        return False

    def _what_to_fix(self, error: BaseException) -> str | None:
        """The engine's reading of one error; here, a local file this process could not write (a
        batch's rejects, the staged files)."""
        return file_fix(error)

    def _busy(self, error: BaseException) -> bool:
        """Whether `error` is the engine giving up waiting for a lock another session holds."""
        return False

    @contextmanager
    def _named_errors(self) -> Iterator[None]:
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
