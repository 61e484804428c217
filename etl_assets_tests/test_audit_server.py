"""The audit endpoint stays up while a read waits for a load's lock (issue 25), on DuckDB and PostgreSQL.

The lock is real: on DuckDB another process opens the warehouse file for writing (its single-writer
lock, as a load holds it); on PostgreSQL another session holds `etl_audit.loads` in ACCESS EXCLUSIVE
mode (as the DDL that adds a column does). A read of /loads then waits in a worker thread, while
/healthz answers; it ends with the lock (200) or after the endpoint's lock timeout (503, saying why).
The endpoint's token, filters and read-only rules are proved in test_files.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2

from etl_assets.audit_api import build_server
from etl_assets.warehouse.audit import LoadRecord, record_load
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets_tests.helpers import wait_for

TOKEN = "s3cret"


def get(base: str, path: str, timeout: float = 10) -> tuple[int, dict, dict | list]:
    """(status, headers by lower-case name, JSON body) of a GET with the token."""
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, json.loads(error.read())


@contextmanager
def serving(warehouse, lock_timeout_seconds: float) -> Iterator[tuple[str, object]]:
    """(base URL, uvicorn server) of the endpoint, run in a thread for the block."""
    server, sock = build_server(warehouse, "127.0.0.1", 0, token=TOKEN, lock_timeout_seconds=lock_timeout_seconds)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 30, "the audit endpoint to start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        thread.join(30)


@contextmanager
def load_lock_held(warehouse) -> Iterator[None]:
    """The lock a load takes, held by someone else for the block."""
    if isinstance(warehouse, DuckDBWarehouse):
        holder = subprocess.Popen(
            [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
             "sys.stdin.readline()", warehouse.path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "locked"
            yield
        finally:
            holder.communicate("\n", timeout=30)
        return
    session = psycopg2.connect(host=warehouse.host, port=warehouse.port, user=warehouse.user,
                               dbname=warehouse.database)
    try:
        session.cursor().execute("LOCK TABLE etl_audit.loads IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        session.rollback()
        session.close()


def audited(warehouse) -> LoadRecord:
    return record_load(warehouse, LoadRecord(domain="salesforce", source_key="backup/20240501_Differential/Task/",
                                             target_table="salesforce.task", action="merge", rows_read=3))


def test_healthz_answers_while_a_read_waits_for_a_loads_lock(warehouse):
    """A read used to run on the event loop: waiting for DuckDB's lock (up to 600 s) or a PostgreSQL
    table lock (no limit), it stopped every other request, /healthz included."""
    record = audited(warehouse)
    with serving(warehouse, lock_timeout_seconds=120) as (base, server):
        answer: dict = {}
        with load_lock_held(warehouse):
            reader = threading.Thread(target=lambda: answer.update(loads=get(base, "/loads", timeout=120)))
            reader.start()
            wait_for(lambda: len(server.server_state.tasks) == 1, 30, "the server to take the /loads request")
            status, _, body = get(base, "/healthz", timeout=5)  # bounded: it must not wait for the read
            assert (status, body) == (200, {"ok": True})
            assert reader.is_alive(), "the read ended while the lock was still held"
        reader.join(120)  # the lock is released: the read gets in
    status, _, rows = answer["loads"]
    assert status == 200 and [r["load_id"] for r in rows] == [record.load_id]


def test_a_read_that_waits_out_the_lock_timeout_is_a_503_saying_why(warehouse):
    audited(warehouse)
    with serving(warehouse, lock_timeout_seconds=0.5) as (base, _):
        with load_lock_held(warehouse):
            status, headers, body = get(base, "/loads?table=salesforce.task")
            assert status == 503 and headers["retry-after"] == "5"
            assert body == {"error": "the warehouse is busy: a load held its lock for the 0.5 s this read waited; "
                                     "try again shortly"}
            assert get(base, "/healthz")[0] == 200
        status, _, rows = get(base, "/loads?table=salesforce.task")
        assert status == 200 and len(rows) == 1
