"""Faults mid-load, with real processes, the real PostgreSQL server and real HTTP.

- A load killed with SIGKILL between staging and merge: the child `etl-assets
  materialize` is caught at a precise point (its transaction has COPYed the staging
  table and waits to UPDATE the main table, which the test holds in SHARE mode, as
  pg_stat_activity and pg_locks show), killed, and the table is unchanged; the next
  run loads exactly the right rows.
- A connection dropped during COPY: a TCP relay in front of PostgreSQL holds the
  COPY's data while the test calls pg_terminate_backend on the copying backend;
  the asset's RetryPolicy loads exactly the right rows on its second attempt.
- S3 throttling and 500s: an HTTP relay in front of moto answers 503 SlowDown and
  500 to the first requests; boto3's own retry configuration (dagster-aws
  S3Resource, standard mode) retries them, as its attempt headers show.
- An unreachable warehouse fails fast with a message naming where it looked.

"Not retried" is proved from the run's own events (one attempt, one failure, no
retry), never from how long the run took: a loaded machine makes timings lie.
"""

from __future__ import annotations

import http.client
import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import botocore.exceptions
import dagster as dg
import psycopg2
import pytest

from etl_assets.landing.zone import LocalLandingZone, S3LandingZone
from etl_assets.salesforce.catalog import load_catalog
from etl_assets.salesforce.staging import SourceFile, stage_object
from etl_assets.settings import build_s3
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets.warehouse.errors import WarehouseUnreachable
from etl_assets.warehouse.postgres import PostgresWarehouse
from etl_assets_tests.conftest import S3_CREDENTIALS, upload_tree
from etl_assets_tests.helpers import (
    assert_matches_truth,
    folders_in,
    materialize_folders,
    resources,
    table_digest,
    wait_for,
)

CLI = str(Path(sys.executable).with_name("etl-assets"))


def task_folders(root: Path) -> list[str]:
    return [f for f in folders_in(root) if (root / "backup" / f / "Task").is_dir()]


def pg(database: dict, autocommit: bool = True):
    connection = psycopg2.connect(host=database["host"], port=database["port"], user=database["user"],
                                  dbname=database["database"])
    connection.autocommit = autocommit
    return connection


def warehouse_for(database: dict, port: int | None = None) -> PostgresWarehouse:
    return PostgresWarehouse(host=database["host"], port=port or database["port"], user=database["user"],
                             database=database["database"])


def assert_failed_once_without_retry(instance: dg.DagsterInstance, run_id: str,
                                     step_key: str = "salesforce__task") -> dg.DagsterEvent:
    """The step had a RetryPolicy, ran exactly one attempt and failed for good; returns its failure event.

    Dagster records every retry (STEP_UP_FOR_RETRY, STEP_RESTARTED, one more attempt in the
    step stats), so their absence is the proof that a refusal was not retried, whatever the clock says.
    """
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.FAILURE, run
    events = [entry.dagster_event for entry in instance.all_logs(run_id)
              if entry.dagster_event is not None and entry.dagster_event.step_key == step_key]
    kinds = [e.event_type for e in events]
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY not in kinds, "the step was retried"
    assert dg.DagsterEventType.STEP_RESTARTED not in kinds, "the step was retried"
    assert kinds.count(dg.DagsterEventType.STEP_START) == 1
    failures = [e for e in events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert len(failures) == 1, kinds
    [stats] = instance.get_run_step_stats(run_id, step_keys=[step_key])
    assert stats.attempts == 1, f"{stats.attempts} attempts"
    from etl_assets.salesforce.assets import salesforce_object_assets

    [asset] = [a for a in salesforce_object_assets if a.op.name == step_key]
    assert asset.op.retry_policy.max_retries >= 1, "a step without retries proves nothing"
    # The IO manager raises dg.Failure(allow_retries=False) for a refusal; Dagster keeps its description.
    assert failures[0].step_failure_data.user_failure_data is not None, "the failure is the deliberate dg.Failure"
    return failures[0]


def cli_env(database: dict, landing_root: Path) -> dict:
    return {**os.environ, "ETL_ASSETS_WAREHOUSE": "postgres", "ETL_ASSETS_PG_HOST": database["host"],
            "ETL_ASSETS_PG_PORT": str(database["port"]), "ETL_ASSETS_PG_USER": database["user"],
            "ETL_ASSETS_PG_DATABASE": database["database"], "ETL_ASSETS_LANDING_ROOT": str(landing_root),
            "ETL_ASSETS_LANDING_ZONE": "local"}


@pytest.mark.slow
def test_a_load_killed_between_staging_and_merge_changes_nothing_and_the_next_run_completes(
        landing_root, postgres_database):
    first, second = task_folders(landing_root)[:2]
    warehouse = warehouse_for(postgres_database)
    materialize_folders([first], resources(LocalLandingZone(root=str(landing_root)), warehouse), objects=["Task"])
    before = table_digest(warehouse, "task")

    blocker = pg(postgres_database, autocommit=False)
    blocker.cursor().execute("LOCK TABLE salesforce.task IN SHARE MODE")  # readers pass, the merge's write waits
    command = [CLI, "materialize", "--ephemeral", "--folder", second, "--object", "Task"]
    child = subprocess.Popen(command, env=cli_env(postgres_database, landing_root),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    watcher = pg(postgres_database)
    try:
        def merge_waiting():
            with watcher.cursor() as cursor:
                cursor.execute(
                    "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = 'etl_assets' AND wait_event_type = 'Lock' "
                    "AND (query LIKE 'UPDATE %%' OR query LIKE 'WITH merged AS (INSERT INTO %%')")
                return cursor.fetchone()
        pid, query = wait_for(merge_waiting, 90, "the child's merge to wait on the table lock", 0.1)
        # A re-load streams and merges its first chunk (ON CONFLICT DO UPDATE); a staged one UPDATEs.
        assert query.startswith(('UPDATE "salesforce"."task"', 'WITH merged AS (INSERT INTO "salesforce"."task"'))
        with watcher.cursor() as cursor:
            cursor.execute("SELECT locktype, granted FROM pg_locks WHERE pid = %s ORDER BY 1", [pid])
            locks = set(cursor.fetchall())
        assert ("advisory", True) in locks, "the child holds its per-table load lock: it is inside the transaction"
        assert ("relation", False) in locks, "and waits for the main table: its merge has written nothing"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        blocker.rollback()
        blocker.close()

    def backend_gone():
        with watcher.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = %s", [pid])
            return cursor.fetchone()[0] == 0
    wait_for(backend_gone, 30, "the killed client's backend to end")
    with watcher.cursor() as cursor:
        # pg_locks is the server's: other tests' loads (xdist workers) hold theirs in their own databases
        cursor.execute("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' "
                       "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
        assert cursor.fetchone()[0] == 0, "no lock outlives the killed load"
    watcher.close()
    assert table_digest(warehouse, "task") == before, "the killed load changed the table"

    rerun = subprocess.run(command, env=cli_env(postgres_database, landing_root), capture_output=True, text=True,
                           timeout=180)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert assert_matches_truth(warehouse, landing_root, "Task", [first, second]) > 0
    assert table_digest(warehouse, "task") != before


class HoldingRelay:
    """A TCP relay to PostgreSQL that, once, stops forwarding the client's bytes after it sees a COPY query."""

    def __init__(self, target_port: int, trigger: bytes = b"COPY etl_chunk"):
        self.target_port, self.trigger = target_port, trigger
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.copy_sent, self.release = threading.Event(), threading.Event()
        self.armed = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                if from_client and self.armed and self.trigger in data:
                    self.armed = False
                    self.copy_sent.set()
                    self.release.wait(60)  # the COPY's rows stay here while the test drops the connection
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.release.set()
        self.listener.close()


@pytest.mark.slow
def test_a_connection_dropped_during_copy_is_retried_and_loads_exactly_the_right_rows(
        landing_root, postgres_database):
    first, second = task_folders(landing_root)[:2]
    zone = LocalLandingZone(root=str(landing_root))
    materialize_folders([first], resources(zone, warehouse_for(postgres_database)), objects=["Task"])
    direct = warehouse_for(postgres_database)
    before = table_digest(direct, "task")
    relay = HoldingRelay(postgres_database["port"])
    outcome = {}
    instance = dg.DagsterInstance.ephemeral()

    def run():
        outcome["result"] = materialize_folders([second], resources(zone, warehouse_for(postgres_database, relay.port)),
                                                instance=instance, objects=["Task"], raise_on_error=False)[0]
    runner = threading.Thread(target=run)
    runner.start()
    watcher = pg(postgres_database)
    try:
        assert relay.copy_sent.wait(60), "the load never reached its COPY"

        def copying():
            with watcher.cursor() as cursor:
                cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                               "AND state = 'active' AND query LIKE 'COPY etl_chunk%%'")  # a re-load's first chunk
                return cursor.fetchone()
        (pid,) = wait_for(copying, 10, "the backend to be in COPY")
        with watcher.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
            assert cursor.fetchone()[0] is True
        wait_for(lambda: not copying(), 10, "the COPY backend to end")
        assert table_digest(direct, "task") == before, "the dropped load changed the table"
    finally:
        relay.release.set()
        runner.join(120)
        relay.close()
        watcher.close()
    result = outcome["result"]
    assert result.success
    events = [e.event_type for e in result.all_events if e.step_key == "salesforce__task"]
    assert events.count(dg.DagsterEventType.STEP_UP_FOR_RETRY) == 1, "the dropped connection was retried once"
    assert events.count(dg.DagsterEventType.STEP_SUCCESS) == 1
    retry = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY)
    error, causes = retry.event_specific_data.error, []
    while error is not None:
        causes.append(error.cls_name)
        error = error.cause or error.context
    assert "OperationalError" in causes, causes
    assert assert_matches_truth(direct, landing_root, "Task", [first, second]) > 0


class FlakyS3Relay(http.server.ThreadingHTTPServer):
    """HTTP relay to moto that answers the first requests with throttling and server errors."""

    def __init__(self, target: str, failures: list[int]):
        self.target, self.failures, self.seen = target, list(failures), []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _RelayHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RelayHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _relay(self):
        server: FlakyS3Relay = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with server.lock:
            status = server.failures.pop(0) if server.failures else None
            attempt = re.search(r"attempt=\d+; max=\d+", self.headers.get("amz-sdk-request") or "")
            server.seen.append((self.command, self.path.split("?")[0], attempt and attempt.group(), status))
        if status:
            code = "SlowDown" if status == 503 else "InternalError"
            payload = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        host, port = server.target.removeprefix("http://").split(":")
        upstream = http.client.HTTPConnection(host, int(port), timeout=30)
        upstream.request(self.command, self.path, body=body or None,
                         headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
        response = upstream.getresponse()
        payload = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        upstream.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay


def test_s3_throttling_and_500s_are_retried_by_the_clients_own_retry_configuration(
        landing_root, s3_endpoint, s3_bucket, tmp_path):
    client, bucket = s3_bucket
    upload_tree(client, bucket, landing_root)
    relay = FlakyS3Relay(s3_endpoint, failures=[503, 500, 503])
    env = {"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "ETL_ASSETS_S3_ENDPOINT_URL": relay.url}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        s3 = build_s3(env)  # exactly what the code location builds
        zone = S3LandingZone(s3=s3, bucket=bucket, prefix="")
        warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
        first = task_folders(landing_root)[0]
        [result] = materialize_folders([first], resources(zone, warehouse), objects=["Task"])
    assert result.success
    first_request = [s for s in relay.seen if s[:2] == relay.seen[0][:2]][:4]
    assert [(attempt, status) for *_, attempt, status in first_request] == [
        ("attempt=1; max=6", 503), ("attempt=2; max=6", 500), ("attempt=3; max=6", 503), ("attempt=4; max=6", None)]
    assert assert_matches_truth(warehouse, landing_root, "Task", [first]) > 0
    relay.shutdown()

    exhausted = FlakyS3Relay(s3_endpoint, failures=[503] * 10)
    client = boto3.client("s3", endpoint_url=exhausted.url,
                          config=botocore.config.Config(retries={"max_attempts": 3, "mode": "standard"}),
                          **S3_CREDENTIALS)
    with pytest.raises(botocore.exceptions.ClientError, match="SlowDown.*reached max retries: 3"):
        client.list_objects_v2(Bucket=bucket)
    assert [s[2] for s in exhausted.seen] == ["attempt=1; max=4", "attempt=2; max=4", "attempt=3; max=4", "attempt=4; max=4"]
    exhausted.shutdown()


def _raised(call, *args) -> BaseException | None:
    try:
        call(*args)
    except BaseException as error:  # noqa: BLE001 - the test inspects whatever the call raised
        return error
    return None


def test_an_unreachable_warehouse_fails_fast_with_a_clear_message(landing_root, tmp_path):
    folder = task_folders(landing_root)[0]
    obj = load_catalog()["Task"]
    files = [SourceFile(p.name, p) for p in sorted((landing_root / "backup" / folder / "Task").glob("*.csv"))]
    batch, _ = stage_object(obj, files, folder)

    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed_port = probe.getsockname()[1]  # nothing listens once the probe closes
    # A long connect timeout: the refusal, not the timeout, is what ends the attempt ("Connection refused").
    refused = PostgresWarehouse(host="127.0.0.1", port=closed_port, connect_timeout_seconds=60)
    with pytest.raises(WarehouseUnreachable) as error:
        refused.load(batch)
    assert str(error.value).startswith(f"postgresql://postgres@127.0.0.1:{closed_port}/postgres is unreachable")
    assert "Connection refused" in str(error.value)
    assert not refused.is_transient(error.value), "not left to the RetryPolicy: it fails at once"

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts TCP, never answers: a black hole
        hole = PostgresWarehouse(host="127.0.0.1", port=silent.getsockname()[1], connect_timeout_seconds=2)
        # The behaviour is libpq's own connect_timeout firing ("timeout expired"), not a hang: the load
        # runs in a thread so a missing timeout fails the test at a deadline instead of hanging it.
        outcome: list[BaseException] = []
        worker = threading.Thread(target=lambda: outcome.append(_raised(hole.load, batch)), daemon=True)
        worker.start()
        worker.join(120)
        assert not worker.is_alive(), "the load against a silent server never gave up: no connect timeout"
        [error] = outcome
        assert isinstance(error, WarehouseUnreachable) and "timeout expired" in str(error), error
        assert not hole.is_transient(error)
    batch.discard()

    # Through Dagster: the asset's RetryPolicy does not retry it, and the failure names the address.
    instance = dg.DagsterInstance.ephemeral()
    [result] = materialize_folders([folder], resources(LocalLandingZone(root=str(landing_root)), refused),
                                   instance=instance, objects=["Task"], raise_on_error=False)
    assert not result.success
    failure = assert_failed_once_without_retry(instance, result.run_id)
    message = str(failure.step_failure_data.error)
    assert f"postgresql://postgres@127.0.0.1:{closed_port}/postgres is unreachable" in message
    assert "Connection refused" in message
