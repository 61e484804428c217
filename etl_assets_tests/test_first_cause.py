"""The first cause wins (issue 25): real refusals, on DuckDB and PostgreSQL, reported as themselves.

Every failure here is real, none is a mock of a database:
- a full disk: a small tmpfs, mounted by the test (the suite runs as root, as `make test`
  does) and filled with a file; DuckDB keeps its file there, PostgreSQL a tablespace that is the
  test database's default and temporary tablespace;
- a read-only warehouse: the DuckDB file on a tmpfs remounted read-only, or made immutable with
  `chattr +i` (root ignores file modes, not these); a PostgreSQL user with SELECT only;
- a rollback that fails: DuckDB's after a commit the full disk refused, PostgreSQL's on a session
  ended by `pg_terminate_backend` in the middle of its transaction;
- a Dagster instance (DAGSTER_HOME) on a full disk, under a real `etl-assets materialize` process.

What is asserted: the error raised is the one that caused the rollback, a permission or a full disk
fails the step once (no retry, from the run's own events) saying what to fix, and the table is as it
was. "Not retried" is read from events, never from a clock.
"""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import dagster as dg
import duckdb
import psycopg2
import pyarrow as pa
import pytest

from etl_assets.landing.zone import LocalLandingZone
from etl_assets.warehouse.batch import RowSource, StagedBatch
from etl_assets.warehouse.dialect import Capabilities
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets.warehouse.errors import CannotWrite
from etl_assets.warehouse.postgres import PostgresWarehouse
from etl_assets.warehouse.spec import REJECTS_SCHEMA, Column, ColumnType, TableSpec
from etl_assets_tests.helpers import (
    assert_matches_truth,
    assert_the_first_cause_outlives_an_ended_session,
    materialize_folders,
    resources,
    table_digest,
)
from etl_assets_tests.test_faults import assert_failed_once_without_retry, task_folders

DISK_SIZE = "32m"
REPO = Path(__file__).resolve().parents[1]
LOCAL_YAML = REPO / "deploy" / "dagster.local.yaml"


@contextmanager
def tiny_disk(size: str = DISK_SIZE, owner: str | None = None) -> Iterator[Path]:
    """A tmpfs of `size`, mounted for the block: a disk the test can fill or make read-only. Under /tmp,
    so the PostgreSQL server's user can reach it when it is `owner`."""
    path = Path(tempfile.mkdtemp(prefix="etl_tiny_disk_", dir="/tmp"))
    options = f"size={size}"
    if owner:
        user = pwd.getpwnam(owner)
        options += f",uid={user.pw_uid},gid={user.pw_gid},mode=0700"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                             text=True)
    if mounted.returncode:
        path.rmdir()
        pytest.fail(f"cannot mount a tmpfs ({mounted.stderr.strip()}): these tests need root, as `make test` runs")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)
        path.rmdir()


def fill(disk: Path) -> Path:
    """Write a file until the disk has no byte left; remove it to free the space."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(descriptor, b"\0" * 65536)
    except OSError as error:
        assert error.errno == errno.ENOSPC, error
    finally:
        os.close(descriptor)
    return filler


def admin(sql: list[str], server: dict, database: str = "postgres") -> None:
    """Run statements as the server's superuser, each on its own (CREATE TABLESPACE refuses a transaction)."""
    connection = psycopg2.connect(host=server["host"], port=server["port"], user=server["user"], dbname=database)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for statement in sql:
                cursor.execute(statement)
    finally:
        connection.close()


@contextmanager
def postgres_on(disk: Path, server: dict) -> Iterator[PostgresWarehouse]:
    """A database whose tables and temporary tables live in a tablespace on `disk`."""
    name = f"etl_tiny_{uuid.uuid4().hex[:10]}"
    admin([f"CREATE TABLESPACE {name} LOCATION '{disk}'", f"CREATE DATABASE {name}",
           f"ALTER DATABASE {name} SET default_tablespace = {name}",
           f"ALTER DATABASE {name} SET temp_tablespaces = {name}"], server)
    try:
        yield PostgresWarehouse(host=server["host"], port=server["port"], user=server["user"], database=name)
    finally:
        admin([f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"DROP TABLESPACE IF EXISTS {name}"], server)


@pytest.fixture(params=["duckdb", "postgres"])
def on_tiny_disk(request) -> Iterator[tuple[DuckDBWarehouse | PostgresWarehouse, Path]]:
    """(a warehouse whose data lives on a small disk of its own, that disk)."""
    if request.param == "duckdb":
        with tiny_disk() as disk:
            yield DuckDBWarehouse(path=str(disk / "warehouse.duckdb")), disk
        return
    server = request.getfixturevalue("postgres_server")
    with tiny_disk(owner="postgres") as disk, postgres_on(disk, server) as warehouse:
        yield warehouse, disk


def causes(error: BaseException) -> list[BaseException]:
    """`error` and what caused it, through `raise ... from`."""
    chain = []
    while error is not None:
        chain.append(error)
        error = error.__cause__
    return chain


def error_lines(info) -> list[str]:
    """The first line of every message of a Dagster error, its causes and contexts (later lines hold
    notes, such as a rollback that failed after the error)."""
    lines, stack = [], [info]
    while stack:
        item = stack.pop()
        if item is not None:
            lines.append(f"{item.cls_name}: {item.message.strip().splitlines()[0]}")
            stack += [item.cause, item.context]
    return lines


def test_a_full_disk_fails_the_load_once_saying_so_and_the_table_is_unchanged(on_tiny_disk, landing_root):
    """DuckDB: the commit fails writing its WAL, and the rollback that follows ("cannot rollback - no
    transaction is active") used to replace that error. PostgreSQL: disk_full (53100) is an
    OperationalError, which was retried as if the connection had dropped."""
    warehouse, disk = on_tiny_disk
    first, second = task_folders(landing_root)[:2]
    zone = LocalLandingZone(root=str(landing_root))
    materialize_folders([first], resources(zone, warehouse), objects=["Task"])
    before = table_digest(warehouse, "task")

    filler = fill(disk)
    instance = dg.DagsterInstance.ephemeral()
    [result] = materialize_folders([second], resources(zone, warehouse), instance=instance, objects=["Task"],
                                   raise_on_error=False)
    failure = assert_failed_once_without_retry(instance, result.run_id)
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("salesforce.task was not loaded, and retrying cannot help: ")
    assert "the disk holding it is full" in description or "the server's disk is full" in description
    assert "free space" in description
    errors = error_lines(failure.step_failure_data.error)
    assert any("No space left on device" in e or e.startswith("DiskFull") for e in errors), errors
    assert not any("cannot rollback" in e or "Exceeded max_retries" in e for e in errors), errors

    filler.unlink()
    assert table_digest(warehouse, "task") == before, "the refused load changed the table"
    [again] = materialize_folders([second], resources(zone, warehouse), objects=["Task"])
    assert again.success
    assert assert_matches_truth(warehouse, landing_root, "Task", [first, second]) > 0


STREAMED = TableSpec("etl_test", "streamed", "id", None, (Column("id", ColumnType.STRING),
                                                          Column("body", ColumnType.STRING)))


def streamed_batch(directory: Path, rows: int) -> StagedBatch:
    """`rows` rows of ~300 bytes, read while the warehouse loads them."""
    def source(batch, limits):
        for start in range(0, rows, 10_000):
            ids = range(start, min(start + 10_000, rows))
            yield (pa.table({"id": [f"k{i:09d}" for i in ids], "body": [f"{i:0300d}" for i in ids],
                             "_source_partition": ["p"] * len(ids), "_source_file": ["f.csv"] * len(ids),
                             "_source_line": list(ids)}),
                   REJECTS_SCHEMA.empty_table())
    directory.mkdir(parents=True, exist_ok=True)
    return StagedBatch(STREAMED, "p", directory, source=RowSource(source))


class DuckDBStreamingIntoTables(DuckDBWarehouse):
    """DuckDB streaming rows into a table that exists too (it stages them, being faster so): the
    second load below must stream."""

    capabilities: ClassVar[Capabilities] = replace(DuckDBWarehouse.capabilities, streams_into_existing_tables=True)


def test_a_streamed_load_that_finds_no_room_says_so(on_tiny_disk, tmp_path):
    """DuckDB spills the streamed rows beyond its buffer pool to `<file>.tmp`; with no room there the
    statement fails, and restoring the buffer pool's size afterwards used to fail too ("Current
    transaction is aborted") and replace that error."""
    warehouse, disk = on_tiny_disk
    if isinstance(warehouse, DuckDBWarehouse):  # spills after 4 MB
        warehouse = DuckDBStreamingIntoTables(path=warehouse.path, stream_memory_limit="4MB")
    warehouse.load(streamed_batch(tmp_path / "first", 10))
    before = warehouse.read_table("etl_test", "streamed")

    filler = fill(disk)
    with pytest.raises(CannotWrite) as refused:
        warehouse.load(streamed_batch(tmp_path / "second", 100_000))  # ~30 MB
    message = str(refused.value)
    assert "is full" in message and "free space" in message, message
    assert "aborted" not in message
    original = causes(refused.value)[1]
    assert type(original).__name__ in ("OutOfMemoryException", "DiskFull"), repr(original)
    assert not warehouse.is_transient(refused.value)

    filler.unlink()
    assert warehouse.read_table("etl_test", "streamed").equals(before)


@pytest.fixture(params=["read-only mount", "immutable file"])
def read_only_duckdb(request, landing_root) -> Iterator[DuckDBWarehouse]:
    """A DuckDB warehouse holding Task's first folder, then made unwritable as root cannot ignore."""
    with tiny_disk() as disk:
        warehouse = DuckDBWarehouse(path=str(disk / "warehouse.duckdb"))
        first = task_folders(landing_root)[0]
        materialize_folders([first], resources(LocalLandingZone(root=str(landing_root)), warehouse), objects=["Task"])
        if request.param == "read-only mount":
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        else:
            subprocess.run(["chattr", "+i", warehouse.path], check=True)
        try:
            yield warehouse
        finally:
            if request.param == "immutable file":
                subprocess.run(["chattr", "-i", warehouse.path], check=True)


def task_rows_read_only(warehouse: DuckDBWarehouse) -> list[tuple]:
    """salesforce.task's rows, read through a read-only open (the one a read-only file allows)."""
    with duckdb.connect(warehouse.path, read_only=True) as connection:
        return connection.execute("SELECT * EXCLUDE (_loaded_at) FROM salesforce.task ORDER BY id").fetchall()


def refused_load_of_the_second_folder(warehouse, landing_root: Path) -> dg.DagsterEvent:
    """Task's second folder loaded into `warehouse` (holding the first), which refuses to write: the
    step's failure, once the run's events show that it failed once, not retried."""
    second = task_folders(landing_root)[1]
    instance = dg.DagsterInstance.ephemeral()
    [result] = materialize_folders([second], resources(LocalLandingZone(root=str(landing_root)), warehouse),
                                   instance=instance, objects=["Task"], raise_on_error=False)
    return assert_failed_once_without_retry(instance, result.run_id)


def test_a_read_only_duckdb_warehouse_fails_at_once_saying_what_to_fix(read_only_duckdb, landing_root):
    """The IOException of a file DuckDB may not open for writing was taken for the lock of another
    process: retried with the asset's RetryPolicy (15 s, then 30 s) and reported as Exceeded max_retries."""
    warehouse = read_only_duckdb
    before = task_rows_read_only(warehouse)
    failure = refused_load_of_the_second_folder(warehouse, landing_root)
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("salesforce.task was not loaded, and retrying cannot help: "
                                  f"duckdb:{warehouse.path}: "), description
    assert "remount it read-write" in description or "chattr -i" in description, description
    assert not any("Exceeded max_retries" in e for e in error_lines(failure.step_failure_data.error))
    assert task_rows_read_only(warehouse) == before


def postgres_as(database: dict, user: str) -> PostgresWarehouse:
    return PostgresWarehouse(host=database["host"], port=database["port"], user=user, database=database["database"])


@pytest.fixture(params=["insufficient_privilege", "read_only_sql_transaction"])
def refusing_postgres(request, postgres_database, landing_root) -> Iterator[PostgresWarehouse]:
    """A database holding Task's first folder, then refusing this warehouse's writes: a user with SELECT
    only (42501), or a database whose sessions are read-only, as on a standby (25006)."""
    server, name = postgres_database, postgres_database["database"]
    owner = postgres_as(server, server["user"])
    first = task_folders(landing_root)[0]
    materialize_folders([first], resources(LocalLandingZone(root=str(landing_root)), owner), objects=["Task"])
    if request.param == "read_only_sql_transaction":
        admin([f"ALTER DATABASE {name} SET default_transaction_read_only = on"], server)
        yield owner
        return
    reader = f"etl_reader_{uuid.uuid4().hex[:8]}"
    admin([f"CREATE ROLE {reader} LOGIN"], server)
    admin([f"GRANT USAGE ON SCHEMA salesforce, etl_audit TO {reader}",
           f"GRANT SELECT ON ALL TABLES IN SCHEMA salesforce, etl_audit TO {reader}"], server, database=name)
    try:
        yield postgres_as(server, reader)
    finally:
        admin([f"DROP OWNED BY {reader}"], server, database=name)
        admin([f"DROP ROLE {reader}"], server)


def test_a_postgres_warehouse_that_refuses_writes_fails_at_once_saying_what_to_fix(refusing_postgres, landing_root,
                                                                                  postgres_database):
    """Not retried before either (they are not OperationalErrors), but the message was the server's alone."""
    warehouse = refusing_postgres
    owner = postgres_as(postgres_database, postgres_database["user"])
    before = table_digest(owner, "task")
    failure = refused_load_of_the_second_folder(warehouse, landing_root)
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("salesforce.task was not loaded, and retrying cannot help: "), description
    assert ("GRANT it" in description and "ETL_ASSETS_PG_USER" in description) or \
        ("not a standby" in description and "default_transaction_read_only" in description), description
    assert table_digest(owner, "task") == before


def test_a_rollback_on_a_session_the_server_ended_keeps_the_error_that_caused_it(postgres_database):
    """A session ended by the server mid-transaction (pg_terminate_backend: a failover, an operator)
    cannot roll back: the rollback's "server closed the connection" used to replace the error the
    block raised. Both ways a session is opened: on its own, and on a step's held connection."""
    warehouse = postgres_as(postgres_database, postgres_database["user"])

    @contextmanager
    def on_the_held_connection():
        with warehouse.held(), warehouse.session() as session:
            yield session

    for open_session in (warehouse.session, on_the_held_connection):
        assert_the_first_cause_outlives_an_ended_session(open_session, postgres_database)
        assert not warehouse.has_table("public", "half_made")


def test_an_instance_that_cannot_write_leaves_no_half_made_run(landing_root, tmp_path):
    """`etl-assets materialize` records its runs in DAGSTER_HOME. On a disk with room for a run's row but
    not for its events, Dagster created the run (NOT_STARTED), failed writing its first event, and the
    command ended in a raw traceback, leaving that run behind for ever."""
    first = task_folders(landing_root)[0]
    with tiny_disk("128m") as home:  # room for a first run, and above a "keep 64 MiB free" guard
        shutil.copy(LOCAL_YAML, home / "dagster.yaml")
        env = {**os.environ, "DAGSTER_HOME": str(home), "ETL_ASSETS_WAREHOUSE": "duckdb",
               "ETL_ASSETS_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"), "ETL_ASSETS_LANDING_ZONE": "local",
               "ETL_ASSETS_LANDING_ROOT": str(landing_root)}
        command = [sys.executable, "-m", "etl_assets.cli", "materialize", "--folder", first, "--object", "Task",
                   "--log-level", "CRITICAL"]
        made = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert made.returncode == 0, made.stderr
        filler = fill(home)
        os.truncate(filler, filler.stat().st_size - 128 * 1024)  # room for a run's row, not for its events
        refused = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
        filler.unlink()
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            statuses = [run.status for run in instance.get_runs()]
        finally:
            instance.dispose()
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr, refused.stderr
    assert str(home) in refused.stderr and "free space" in refused.stderr, refused.stderr
    assert statuses == [dg.DagsterRunStatus.SUCCESS], "a run was left half made"


def test_a_full_staging_directory_fails_the_salesforce_step_once_saying_so(landing_root, tmp_path, monkeypatch):
    """A DuckDB re-load into a table holding a column the batch lacks (a field an earlier export carried)
    keeps that column's values, so it spills the rows to Parquet in the temporary directory first instead
    of streaming them in place; when that disk is full the step says what to fix and is not retried (an
    OSError of the asset body itself)."""
    warehouse = DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))
    first, second = task_folders(landing_root)[:2]
    zone = LocalLandingZone(root=str(landing_root))
    materialize_folders([first], resources(zone, warehouse), objects=["Task"])
    with warehouse.session() as session:
        session.execute('ALTER TABLE salesforce.task ADD COLUMN "legacy_field__c" VARCHAR')
    before = table_digest(warehouse, "task")
    with tiny_disk() as disk:
        filler = fill(disk)
        monkeypatch.setattr(tempfile, "tempdir", str(disk))
        instance = dg.DagsterInstance.ephemeral()
        [result] = materialize_folders([second], resources(zone, warehouse), instance=instance, objects=["Task"],
                                       raise_on_error=False)
        failure = assert_failed_once_without_retry(instance, result.run_id)
        description = failure.step_failure_data.user_failure_data.description
        assert description.startswith(f"Task in {second} was not loaded, and retrying cannot help: "), description
        assert "the disk is full: free space on it" in description
        filler.unlink()
        [again] = materialize_folders([second], resources(zone, warehouse), objects=["Task"])
        monkeypatch.undo()
    assert again.success and table_digest(warehouse, "task") != before
