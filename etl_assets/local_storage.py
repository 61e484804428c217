"""The local instance's SQLite storage, without a checkpoint per event (deploy/dagster.local.yaml).

Dagster's SQLite event log opens a new connection for every event it stores (SQLAlchemy's
`NullPool`) and closes it afterwards. In WAL mode the last connection to close a database
checkpoints its write-ahead log into the file and syncs it, so every event paid a checkpoint and
two or three fsyncs: ~5 ms for a log line and ~20-40 ms for a materialization (mirrored into the
index shard). A folder of small objects writes a dozen events per object, and profiled in process
that was most of each step (docs/runs-and-executors.md).

`LocalInstance` (the yaml's `instance_class`) is Dagster's instance whose default storage is
`LocalSqliteStorage`: Dagster's `DagsterSqliteStorage`, the same files in the instance's directory
(an existing local instance keeps its history), with an event log that keeps one connection open
per database it uses (the index shard and the most recently used run shards), and commits with
`synchronous=NORMAL`: in WAL mode a commit is then durable against a crash of the process, and the
last commits can be lost only if the machine loses power; the file is never corrupted. SQLite
still checkpoints on its own every 1,000 pages. Run and schedule storage are Dagster's own.

Production uses PostgreSQL storage (deploy/dagster.production.yaml) and none of this.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import sqlalchemy as db
import yaml
from dagster._config import StringSource
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool, StaticPool

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
        return {"base_dir": StringSource}

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> LocalSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)


class LocalInstance(dg.DagsterInstance):
    """Dagster's instance; when its yaml names no storage, `LocalSqliteStorage` in the instance's
    own directory is the default (Dagster's hook for a custom instance class: `config_defaults`), so
    the storage needs no path of its own and an instance opened from any directory finds its files."""

    @classmethod
    def config_schema(cls) -> dict:
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> dict:
        storage = ConfigurableClassData(__name__, LocalSqliteStorage.__name__,
                                        yaml.dump({"base_dir": base_dir}, default_flow_style=False))
        return {**InstanceRef.config_defaults(base_dir), "storage": storage}
