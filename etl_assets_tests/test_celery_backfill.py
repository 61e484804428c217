"""More than one machine: steps run on Celery workers (dagster-celery, Redis broker).

Two workers are started as separate processes with the documented command
(`dagster-celery worker start -A dagster_celery.app -y deploy/celery.yaml -q <queue>`), each in
its own session, against the real Redis on this machine. The run processes and the workers share
the production instance (deploy/dagster.production.yaml: run, event and schedule storage in the
real PostgreSQL server), as workers on other hosts would. A backfill of twelve folders runs as one
Dagster run per folder, two runs at a time, with the code location's executor chosen by
ETL_ASSETS_EXECUTOR=celery. Every run succeeds, every step ran in a pool process of one of the two
workers (both took work), and the PostgreSQL warehouse tables equal a sequential in-process run of
the same folders.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import shlex
import shutil
import subprocess
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import dagster as dg
import pytest
import redis

from etl_assets.landing.zone import LocalLandingZone
from etl_assets.salesforce.partitions import differential_folders
from etl_assets.settings import build_executor
from etl_assets_tests import live
from etl_assets.samples.salesforce import generate_sample
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets.warehouse.postgres import PostgresWarehouse
from etl_assets_tests import helpers
from etl_assets_tests.backfill_job import run_folders

REPO, BIN = live.REPO, live.BIN
REDIS_URL = os.environ.get("ETL_ASSETS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_START = ('redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
               "--dir /var/lib/redis --logfile /var/log/redis/ci.log")
OBJECTS = ["Task", "User"]
FOLDERS = 12
WORKER_START_TIMEOUT = 90


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping())
    except redis.RedisError:
        return False


def _require_redis() -> None:
    """The broker: the Redis server this machine kind runs, started here if it is down (as the
    PostgreSQL fixture does), otherwise the test fails saying how to start it."""
    if _redis_up():
        return
    if REDIS_URL.startswith("redis://127.0.0.1:6379/") and shutil.which("redis-server"):
        subprocess.run(shlex.split(REDIS_START), check=False, timeout=30,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            live.wait_for(_redis_up, 10, "redis-server to answer", 0.2)
            return
        except live.LiveError:
            pass
    pytest.fail(f"Redis (the Celery broker) is not reachable at {REDIS_URL}. Start it with `{REDIS_START}`, "
                "or point ETL_ASSETS_TEST_REDIS_URL at a Redis server.", pytrace=False)


def run_folders_on_celery(folders: list[str], objects: list[str]) -> list[tuple[str, bool, int]]:
    """One run per folder with the code location's executor (Celery); the run process only orchestrates."""
    return [(folder, ok, os.getpid()) for folder, ok in run_folders(folders, objects, run_config=None)]


def _step_failures() -> list[str]:
    """Why steps failed, from the instance's event log (written by the workers)."""
    lines = []
    with dg.DagsterInstance.get() as instance:
        for record in instance.get_run_records():
            for entry in instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
                error = entry.dagster_event.step_failure_data.error
                lines.append(f"{record.dagster_run.tags.get('dagster/partition')} {entry.step_key}: "
                             f"{error.message.strip() if error else entry.message}")
    return lines


def _start_worker(name: str, queue: str, env: dict, log_dir: Path) -> live.Service:
    """The documented command, in a process group of its own (the CLI, the celery main process, its pool)."""
    return live.Service(name, [BIN / "dagster-celery", "worker", "start", "-A", "dagster_celery.app",
                               "-y", REPO / "deploy" / "celery.yaml", "-q", queue, "-n", name,
                               # import the code location once in the worker, before it forks its pool
                               "-i", "etl_assets.definitions",
                               # celery worker options: one step at a time per worker, no chatter with other workers
                               "--", "--concurrency=1", "--without-mingle", "--without-gossip"], env, log_dir)


def _ready(worker: live.Service) -> bool:
    return bool(re.search(rf"{re.escape(worker.name)}@\S+ ready\.", worker.log_text()))


@pytest.mark.slow
def test_a_backfill_through_two_celery_workers_equals_a_sequential_run(tmp_path, postgres_database,
                                                                       dagster_storage_database, monkeypatch):
    _require_redis()
    root = tmp_path / "landing"
    generate_sample(root, folders=FOLDERS, rows=8, seed=31, objects=OBJECTS)
    folders = helpers.folders_in(root)
    assert len(folders) == FOLDERS

    # The instance the run processes and every worker share: the production instance file, its
    # storage in PostgreSQL as workers on other hosts would share it.
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.production.yaml", home / "dagster.yaml")
    storage = dagster_storage_database
    queue = f"etl_assets_test_{uuid.uuid4().hex[:10]}"  # parallel runs of this test never share tasks
    settings = {
        "DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": storage["host"], "DAGSTER_PG_PORT": str(storage["port"]),
        "DAGSTER_PG_DB": storage["database"], "DAGSTER_PG_USER": storage["user"], "DAGSTER_PG_PASSWORD": "",
        "ETL_ASSETS_EXECUTOR": "celery", "ETL_ASSETS_CELERY_BROKER": REDIS_URL,
        "ETL_ASSETS_CELERY_BACKEND": REDIS_URL, "ETL_ASSETS_CELERY_QUEUE": queue,
        "ETL_ASSETS_WAREHOUSE": "postgres", "ETL_ASSETS_LANDING_ZONE": "local", "ETL_ASSETS_LANDING_ROOT": str(root),
        "ETL_ASSETS_PG_HOST": postgres_database["host"], "ETL_ASSETS_PG_PORT": str(postgres_database["port"]),
        "ETL_ASSETS_PG_USER": postgres_database["user"], "ETL_ASSETS_PG_DATABASE": postgres_database["database"],
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(differential_folders.name, folders)
        # A deployment step (README): set the pool's limit once, as `dagster instance concurrency
        # set warehouse 3` does. Left to the default, the first claims of a fresh PostgreSQL
        # instance race in Dagster itself (dagster-io/dagster#33552: two runs both insert the
        # pool's row; the loser's transaction aborts and its run fails).
        instance.event_log_storage.set_concurrency_slots("warehouse", 3)

    # Workers need the code (importable from the repo), the same variables and the instance.
    worker_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                  "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    names = [f"{queue}_a", f"{queue}_b"]
    workers: dict[str, live.Service] = {}
    try:
        for name in names:
            workers[name] = _start_worker(name, queue, worker_env, tmp_path)
        live.wait_for(lambda: all(_ready(w) for w in workers.values()), WORKER_START_TIMEOUT,
                      "both Celery workers to be ready", 0.5, workers.values())

        shuffled = folders[:]
        random.Random(5).shuffle(shuffled)
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_folders_on_celery, shuffled[i::2], OBJECTS) for i in range(2)]
            outcomes = [o for future in futures for o in future.result()]
        failed = sorted(f for f, ok, _ in outcomes if not ok)
        assert not failed, f"runs failed for {failed}:\n" + "\n".join(_step_failures())
        assert sorted(f for f, _, _ in outcomes) == folders
        orchestrator_pids = {pid for _, _, pid in outcomes}

        # Where every step ran: the worker's own engine event names it, and the step's process is
        # a pool process in that worker's process group (each worker was started in its own session).
        worker_of_step, pid_of_step, submitted = {}, {}, 0
        with dg.DagsterInstance.get() as instance:
            records = instance.get_run_records()
            assert len(records) == FOLDERS
            for record in records:
                run_id = record.dagster_run.run_id
                for entry in instance.all_logs(run_id):
                    event = entry.dagster_event
                    if event is None or event.step_key is None:
                        continue
                    key = (run_id, event.step_key)
                    if event.event_type == dg.DagsterEventType.ENGINE_EVENT:
                        if event.message.startswith("Submitting celery task") and f'queue "{queue}"' in event.message:
                            submitted += 1
                        worker = event.engine_event_data.metadata.get("Celery worker")
                        if worker is not None:
                            worker_of_step[key] = worker.value.split("@")[0]
                    elif event.event_type == dg.DagsterEventType.STEP_START:
                        pid_of_step[key] = event.pid
        steps = FOLDERS * len(OBJECTS)
        assert submitted == steps, "every step was sent to the run's Celery queue"
        assert len(worker_of_step) == len(pid_of_step) == steps
        assert set(worker_of_step) == set(pid_of_step)
        per_worker = Counter(worker_of_step.values())
        assert set(per_worker) == set(names), f"both workers took work: {dict(per_worker)}"
        group_of = {workers[name].pid: name for name in names}
        for key, pid in pid_of_step.items():
            assert pid not in orchestrator_pids and pid != os.getpid()
            assert group_of.get(os.getpgid(pid)) == worker_of_step[key], (
                f"step {key} ran in pid {pid}, not in the process group of worker {worker_of_step[key]}")
        # The workers' own logs agree, task by task.
        for name in names:
            succeeded = len(re.findall(r"Task execute_plan\[[0-9a-f-]+\] succeeded",
                                       workers[name].log_text()))
            assert succeeded == per_worker[name], (name, succeeded, per_worker[name])
    finally:
        for worker in workers.values():
            worker.stop(grace=20)
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        for key in client.scan_iter(f"*{queue}*"):  # the queue and kombu's bindings of it
            client.delete(key)

    # The same folders, one after another, in-process, into an embedded DuckDB warehouse.
    reference = DuckDBWarehouse(path=str(tmp_path / "sequential.duckdb"))
    zone = LocalLandingZone(root=str(root))
    results = helpers.materialize_folders(folders, helpers.resources(zone, reference), objects=OBJECTS)
    assert all(r.success for r in results)
    warehouse = PostgresWarehouse(host=postgres_database["host"], port=postgres_database["port"],
                                  user=postgres_database["user"], database=postgres_database["database"])
    for api_name in OBJECTS:
        assert helpers.table_digest(warehouse, api_name.lower()) == helpers.table_digest(reference, api_name.lower())
        assert helpers.assert_matches_truth(warehouse, root, api_name) > 0
    print(f"celery backfill: {FOLDERS} folders, {steps} steps on {dict(per_worker)}")


def test_the_executor_is_chosen_by_the_environment():
    assert build_executor({}) is None  # Dagster's default: a process per step on the run's machine
    assert build_executor({"ETL_ASSETS_EXECUTOR": "multiprocess"}) is None
    assert build_executor({"ETL_ASSETS_EXECUTOR": "in_process"}) is dg.in_process_executor
    urls = {"ETL_ASSETS_CELERY_BROKER": "redis://b:6379/0", "ETL_ASSETS_CELERY_BACKEND": "redis://b:6379/1"}
    assert build_executor({"ETL_ASSETS_EXECUTOR": "celery", **urls}).name == "celery"
    with pytest.raises(ValueError, match="needs ETL_ASSETS_CELERY_BROKER and ETL_ASSETS_CELERY_BACKEND"):
        build_executor({"ETL_ASSETS_EXECUTOR": "celery"})
    with pytest.raises(ValueError, match="expected one of multiprocess, in_process, celery"):
        build_executor({"ETL_ASSETS_EXECUTOR": "k8s"})
