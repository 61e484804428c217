"""Every use of Dagster's private API in etl_assets, fenced here (issue 27: public API only, or one place).

Dagster 1.13 has no public way to do the three things below. Each private name is listed with why;
they were read against the Dagster release line `DAGSTER_CHECKED`. On another line `version_problem()`
says so, the pool-wait fix is not applied (a warning at import), and
etl_assets_tests/test_dagster_internals.py fails with a message naming this module, until someone has
re-read each name against the new release.

1. The local instance's storage (`LocalInstance`, named by deploy/dagster.local.yaml). Dagster's SQLite
   event log opens a new connection for every event it stores (SQLAlchemy's `NullPool`) and closes it
   afterwards; in WAL mode the last connection to close checkpoints its write-ahead log into the file
   and syncs it, so every event paid a checkpoint and two or three fsyncs: ~5 ms for a log line and
   ~20-40 ms for a materialization. A folder of small objects writes a dozen events per object
   (docs/runs-and-executors.md). `OpenConnectionEventLogStorage` keeps one connection open per
   database it uses (the index shard and the most recently used run shards) and commits with
   `synchronous=NORMAL`: durable against a crash of the process; the last commits can be lost only if
   the machine loses power; the file is never corrupted. The same files as Dagster's default, so an
   existing local instance keeps its history. `ETL_ASSETS_LOCAL_STORAGE=dagster` runs the instance on
   Dagster's stock SQLite storage instead (slower, nothing private on the storage path).
   Private names: `SqliteEventLogStorage` (subclassed), its `_connect` (replaced), `_db_lock`,
   `_initialized_dbs` and `_initdb` (used as `_connect` uses them), `conn_string_for_shard`,
   `INDEX_SHARD_NAME`; `DagsterSqliteStorage` and `_event_logs_directory` (the storage's layout);
   `SQLITE_BUSY_TIMEOUT_SECONDS`; `InstanceRef.config_defaults` and `ConfigurableClassData` (the hook
   that makes it the default storage of the instance class).
2. The run-worker health check (`etl_assets.execution.LocalRunLauncher`): a run launcher answers run
   monitoring with `CheckRunHealthResult` and `WorkerStatus`, which `dagster` does not export; and
   `GRPC_INFO_TAG` (".dagster/grpc_info"), the tag naming the code server that launched a run, tells a
   run worker on this host from one elsewhere. The health check reads the run's tags and its
   RUN_START event's pid, never log text.
3. The wait for a pool slot (`POOL_WAIT_FIX`, applied when this module is imported): it spun a CPU core
   and ignored interrupts (below, and docs/runs-and-executors.md). Private names: `ActiveExecution`
   (`get_steps_to_execute`, `get_next_step`, `sleep_til_ready`, `sleep_interval`, `_in_flight`,
   `_instance_concurrency_context`, `_pending_claims`, `_pending_timeouts`, `mark_interrupted`),
   `InstanceConcurrencyContext` (`interval_to_next_pending_claim_check`, `has_pending_claims`,
   `_instance`, `_run_id`), `check_captured_interrupt` and `pop_captured_interrupt`.

Production uses PostgreSQL storage (deploy/dagster.production.yaml) and none of 1.

Outside this module, one class leans on dagster-dbt's private members without importing a private name:
`etl_assets.dbt_project.project.DbtCli` overrides `DbtCliResource._cli_version` (a `dbt --version`
subprocess per resource, ~3 s a dbt command) and `_initialize_dbt_core_adapter` (an adapter and every
macro loaded in-process, ~2 s a command, used only by `fetch_row_counts`/`fetch_column_metadata`).
test_dagster_internals.py checks both still exist on the installed dagster-dbt: renamed, the overrides
would silently stop saving anything, not break.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg
import sqlalchemy as db
import yaml
from dagster._core.instance.ref import InstanceRef
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
)
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._serdes import ConfigurableClassData
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool, StaticPool

__all__ = ["CheckRunHealthResult", "DAGSTER_CHECKED", "GRPC_INFO_TAG", "LocalInstance", "POOL_WAIT_FIX",
           "WorkerStatus", "version_problem"]

DAGSTER_CHECKED = "1.13."  # the release line every private name here was read against
LOCAL_STORAGE = "ETL_ASSETS_LOCAL_STORAGE"  # `etl_assets` (default) or `dagster`: Dagster's stock SQLite storage


def version_problem() -> str | None:
    """Why the private names here may not hold on the installed Dagster, or None."""
    if dg.__version__.startswith(DAGSTER_CHECKED):
        return None
    return (f"Dagster {dg.__version__} is installed; etl_assets/dagster_internals.py was written against the "
            f"{DAGSTER_CHECKED}x line: re-check each private name its docstring lists, then update DAGSTER_CHECKED")


# ---------------------------------------------------------------- 1. the local instance's storage

# Run shards kept open besides the index shard: a run worker writes one; the webserver and daemon
# read recent ones. Older ones are closed (and checkpointed) when a newer one is opened.
OPEN_RUN_SHARDS = 8


class OpenConnectionEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` whose connection to each shard stays open between events.

    Every use of a connection already runs under the storage's own lock (`_db_lock`), so one
    connection per shard, shared by the process's threads, is what the storage used before,
    without the open, checkpoint and close around each event. A forked child opens its own.
    """

    def __init__(self, base_dir: str, inst_data=None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_pid = os.getpid()
        self._engines_lock = threading.Lock()
        self._tables_found: set[str] = set()
        super().__init__(base_dir, inst_data=inst_data)

    def has_table(self, table_name: str) -> bool:
        """Dagster asks before every materialization's tags are stored, on a connection of its own
        (a cached one would deadlock on `_db_lock`); a table once found stays."""
        if table_name not in self._tables_found and super().has_table(table_name):
            self._tables_found.add(table_name)
        return table_name in self._tables_found

    def _engine(self, shard: str) -> Engine:
        with self._engines_lock:
            if self._engines_pid != os.getpid():  # a fork: the parent's connections are not ours
                for engine in self._engines.values():
                    engine.dispose(close=False)
                self._engines.clear()
                self._engines_pid = os.getpid()
            engine = self._engines.get(shard)
            if engine is not None:
                self._engines.move_to_end(shard)
                return engine
            engine = db.create_engine(
                self.conn_string_for_shard(shard),
                poolclass=StaticPool,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            db.event.listen(engine, "connect", _commit_without_full_sync)
            self._engines[shard] = engine
            run_shards = [s for s in self._engines if s != INDEX_SHARD_NAME]
            while len(run_shards) > OPEN_RUN_SHARDS:
                self._engines.pop(run_shards.pop(0)).dispose()
            return engine

    def _close_all(self) -> None:
        with self._engines_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            if shard not in self._initialized_dbs:
                # Creating the shard (first use in this process) as Dagster does, on a throwaway engine.
                init_engine = db.create_engine(self.conn_string_for_shard(shard), poolclass=NullPool,
                                               connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
                self._initdb(init_engine)
                init_engine.dispose()
                self._initialized_dbs.add(shard)
            with self._engine(shard).connect() as conn, conn.begin():
                yield conn

    def wipe(self) -> None:
        self._close_all()  # before the run shards' files are deleted
        super().wipe()

    def upgrade(self) -> None:
        self._close_all()
        super().upgrade()

    def dispose(self) -> None:
        super().dispose()
        self._close_all()


def _commit_without_full_sync(dbapi_connection, _record) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


class LocalSqliteStorage(DagsterSqliteStorage):
    """Dagster's SQLite storage under `base_dir`, with `OpenConnectionEventLogStorage` as its event log."""

    def __init__(self, base_dir: str, inst_data=None):
        super().__init__(base_dir, inst_data=inst_data)
        self._event_log_storage = OpenConnectionEventLogStorage(_event_logs_directory(base_dir))

    @classmethod
    def config_type(cls):
        return {"base_dir": dg.StringSource}

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> LocalSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)


class LocalInstance(dg.DagsterInstance):
    """Dagster's instance; when its yaml names no storage, `LocalSqliteStorage` in the instance's
    own directory is the default (Dagster's hook for a custom instance class: `config_defaults`), so
    the storage needs no path of its own and an instance opened from any directory finds its files.
    With ETL_ASSETS_LOCAL_STORAGE=dagster, Dagster's own default storage over the same files."""

    @classmethod
    def config_schema(cls) -> dict:
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> dict:
        choice = (os.environ.get(LOCAL_STORAGE) or "etl_assets").strip().lower()
        if choice == "dagster":
            return InstanceRef.config_defaults(base_dir)
        if choice != "etl_assets":
            raise dg.DagsterInvariantViolationError(
                f"{LOCAL_STORAGE}={choice!r}: expected etl_assets (the default) or dagster")
        storage = ConfigurableClassData(__name__, LocalSqliteStorage.__name__,
                                        yaml.dump({"base_dir": base_dir}, default_flow_style=False))
        return {**InstanceRef.config_defaults(base_dir), "storage": storage}


# ---------------------------------------------------------------- 3. the wait for a pool slot
#
# Dagster 1.13's executors wait for a pool slot in a loop that never sleeps:
# `InstanceConcurrencyContext.interval_to_next_pending_claim_check` returns
# `min([0, *time_left])`, never more than 0, so `ActiveExecution.sleep_til_ready` never sleeps, and
# a run whose step waits for a slot spins a CPU core at 100% (in process, and in the multiprocess
# executor's loop, which does not sleep at all) between the claim's own checks (after 1 s, growing
# to 15 s). The in-process executor also checks for an interrupt only when a step starts, so a run
# waiting for a slot ignored SIGTERM, Ctrl-C and a termination from the UI; and an interrupted step
# with a RetryPolicy becomes a retry (Dagster "respects the retry policy when interrupts occur"),
# after which the in-process executor ran the run's other steps and the retry as if nothing had
# happened. The fix, applied in every process that imports this module (the code location: run
# workers and `etl-assets` commands):
# - the interval to the next claim check is the real one (the earliest pending claim's, at least 0);
# - a plan with nothing in flight and nothing ready sleeps until then, in slices of
#   INTERRUPT_CHECK_SECONDS so that an interrupt is seen at once, instead of asking again at once;
# - in process, the wait is an interrupt checkpoint as a step's start is, and a run marked CANCELING
#   (by `SupervisedRuns`, or Dagster's own termination, before they interrupt it) starts no further
#   step: DagsterExecutionInterruptedError is raised there and the run ends CANCELED.

INTERRUPT_CHECK_SECONDS = 0.1
STATUS_CHECK_SECONDS = 1.0  # how often a waiting in-process run reads whether it is being canceled
POOL_WAIT_FIX: str | None = None  # why the fix is not applied; None once it is


def _fix_pool_wait() -> str | None:
    if version_problem():
        return version_problem()
    from dagster._core.execution.plan.active import ActiveExecution
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
    from dagster._utils.interrupts import check_captured_interrupt, pop_captured_interrupt

    if getattr(ActiveExecution, "_etl_assets_fixed", False):
        return None
    stopping = (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)

    def interval_to_next_pending_claim_check(self) -> float:
        if not self._pending_claims:
            return 0.0
        now = time.time()
        ready = [self._pending_timeouts.get(step_key) for step_key in self._pending_claims]
        if any(at is None for at in ready):  # a claim not yet tried: try it now
            return 0.0
        return max(0.0, min(ready) - now)

    def canceling(active) -> bool:
        """Whether the run is being canceled (read from the instance: the signal may be long gone)."""
        context = active._instance_concurrency_context
        if context is None:
            return False
        run = context._instance.get_run_by_id(context._run_id)
        return run is not None and run.status in stopping

    def wait(seconds: float, stop: Callable[[], bool] = lambda: False) -> None:
        deadline = now = time.monotonic()
        deadline += seconds
        next_stop_check = now + STATUS_CHECK_SECONDS
        while not check_captured_interrupt():
            now = time.monotonic()
            if now >= deadline:
                return
            if now >= next_stop_check:
                if stop():
                    return
                next_stop_check = now + STATUS_CHECK_SECONDS
            time.sleep(min(deadline - now, INTERRUPT_CHECK_SECONDS))

    original_get_steps = ActiveExecution.get_steps_to_execute
    original_get_next_step = ActiveExecution.get_next_step

    def get_steps_to_execute(self, limit=None):
        steps = original_get_steps(self, limit)
        if not steps and limit is not None and not self._in_flight \
                and self._instance_concurrency_context is not None \
                and self._instance_concurrency_context.has_pending_claims():
            wait(self.sleep_interval())  # nothing to do until a claim may be granted or a retry is due
        return steps

    def get_next_step(self):  # the in-process executor's only way to a step
        if canceling(self):
            return None  # the loop then waits: sleep_til_ready raises
        return original_get_next_step(self)

    def sleep_til_ready(self) -> None:
        wait(max(0.0, self.sleep_interval()), stop=lambda: canceling(self))
        if pop_captured_interrupt() or canceling(self):
            self.mark_interrupted()
            raise dg.DagsterExecutionInterruptedError("Run interrupted before its next step (canceled, or "
                                                      "interrupted while waiting for a pool slot).")

    InstanceConcurrencyContext.interval_to_next_pending_claim_check = interval_to_next_pending_claim_check
    ActiveExecution.get_steps_to_execute = get_steps_to_execute
    ActiveExecution.get_next_step = get_next_step
    ActiveExecution.sleep_til_ready = sleep_til_ready
    ActiveExecution._etl_assets_fixed = True
    return None


POOL_WAIT_FIX = _fix_pool_wait()
if POOL_WAIT_FIX is not None:
    warnings.warn(f"etl_assets.dagster_internals: the fix for Dagster's wait for a pool slot (a spinning CPU, "
                  f"interrupts ignored) is not applied: {POOL_WAIT_FIX}. Re-check it against this "
                  "version (docs/runs-and-executors.md).", stacklevel=1)
