"""A load that waits for the DuckDB warehouse's writer lock says so in its run's log (issue 25:
nothing waits silently), naming the process that holds the lock, and loads once it is free."""

from __future__ import annotations

import subprocess
import sys
import threading

import dagster as dg

from etl_assets.landing.zone import LocalLandingZone
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets_tests.helpers import folders_in, materialize_folders, resources


def _messages(instance: dg.DagsterInstance) -> list[str]:
    """The run logs so far, read from another thread than the run's: the ephemeral instance's in-memory
    SQLite may be busy with the run's own writes ("database table is locked"), then read next time."""
    try:
        return [e.user_message or "" for run_id in instance.get_run_ids() for e in instance.all_logs(run_id)]
    except Exception as error:
        if "locked" not in str(error):
            raise
        return []


def _release_when(instance: dg.DagsterInstance, text: str, release) -> threading.Thread:
    """A started thread that calls `release` (the lock's holder lets go) once a run log says `text`, or
    after a minute (then the load goes on and the test fails): whatever happens, the load never waits
    for ever."""
    def wait_then_release() -> None:
        try:
            for _ in range(600):
                if any(text in m for m in _messages(instance)):
                    break
                threading.Event().wait(0.1)
        finally:
            release()

    thread = threading.Thread(target=wait_then_release)
    thread.start()
    return thread


def test_a_load_waiting_for_the_duckdb_lock_says_so_in_its_run_log(landing_root, tmp_path):
    path = tmp_path / "warehouse.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(path)!r}); print('held', flush=True); "
         "sys.stdin.readline()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        instance = dg.DagsterInstance.ephemeral()
        folder = next(f for f in folders_in(landing_root) if (landing_root / "backup" / f / "User").is_dir())

        def release() -> None:
            holder.stdin.write("\n")
            holder.stdin.flush()

        releaser = _release_when(instance, "waiting for the DuckDB warehouse", release)
        [result] = materialize_folders([folder], resources(LocalLandingZone(root=str(landing_root)),
                                                           DuckDBWarehouse(path=str(path))),
                                       instance=instance, objects=["User"])
        releaser.join(timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert result.success
    messages = [e.user_message or "" for e in instance.all_logs(result.run_id)]
    waited = [m for m in messages if "waiting for the DuckDB warehouse" in m]
    assert waited and f"(PID {holder.pid})" in waited[0], messages[-20:]


def test_a_postgres_load_waiting_for_another_load_of_its_table_says_so(landing_root, postgres_database):
    """A second load of a table waits for the first's per-table lock (test_concurrency.py proves the
    order); while it waits, its run's log names the server process of the load it waits for."""
    import hashlib

    import psycopg2

    from etl_assets.warehouse.postgres import PostgresWarehouse

    warehouse = PostgresWarehouse(host=postgres_database["host"], port=postgres_database["port"],
                                  user=postgres_database["user"], database=postgres_database["database"])
    digest = hashlib.blake2b(b"salesforce.user", digest_size=8).digest()
    holder = psycopg2.connect(host=postgres_database["host"], port=postgres_database["port"],
                              user=postgres_database["user"], dbname=postgres_database["database"])
    cursor = holder.cursor()
    cursor.execute("SELECT pg_advisory_xact_lock(%s), pg_backend_pid()", [int.from_bytes(digest, "big", signed=True)])
    [(_, holder_pid)] = cursor.fetchall()
    instance = dg.DagsterInstance.ephemeral()

    releaser = _release_when(instance, "waiting for the load lock of salesforce.user", holder.rollback)
    try:
        folder = next(f for f in folders_in(landing_root) if (landing_root / "backup" / f / "User").is_dir())
        [result] = materialize_folders([folder], resources(LocalLandingZone(root=str(landing_root)), warehouse),
                                       instance=instance, objects=["User"])
    finally:
        releaser.join(timeout=60)
        holder.close()
    assert result.success
    waited = [e.user_message for e in instance.all_logs(result.run_id)
              if "waiting for the load lock of salesforce.user" in (e.user_message or "")]
    assert waited and f"server process {holder_pid}" in waited[0], waited
