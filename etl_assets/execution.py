"""Where steps run, and how a local instance notices a run whose process died.

Executors (`ETL_ASSETS_EXECUTOR`, read and validated with the rest of the deployment in
etl_assets/settings.py; docs/runs-and-executors.md says what runs in which process):

- unset (`auto`): chosen by the warehouse. The embedded DuckDB warehouse (the local default) has a
  single writer, so its steps run one at a time anyway: `in_process` runs them all in the run's
  process, which loads the code location once (~4 s of CPU) instead of once per step. Any other
  warehouse (PostgreSQL, Redshift) takes writers in parallel up to the `warehouse` pool's limit:
  `forkserver` (below).
- `in_process`: every step of a run in the run's own process, one after another; a failed step
  still leaves the others to run, and each keeps its retries.
- `forkserver`: Dagster's multiprocess executor with `start_method: forkserver` preloading
  `etl_assets.definitions`: the code location is imported once per run in the fork server, and
  each step is a fork of it (milliseconds, not a fresh interpreter that imports everything again).
  Steps run in parallel, as many at once as the `warehouse` pool has slots, each in its own process.
- `multiprocess`: Dagster's default (`spawn`: a fresh interpreter per step).
- `celery`: dagster-celery's `celery_executor`: the run process only orchestrates, and each step
  is a Celery task that a worker (`dagster-celery worker start -A dagster_celery.app -y
  deploy/celery.yaml`), on this host or another, picks up from the broker. The broker and result
  backend are URLs read from the environment when a run starts (`ETL_ASSETS_CELERY_BROKER`,
  `ETL_ASSETS_CELERY_BACKEND`), so a password in them never enters code or run config; the
  workers read the same variables through deploy/celery.yaml. `ETL_ASSETS_CELERY_QUEUE` (default
  `dagster`) names the queue steps are sent to; workers listen on it with `-q`.

`LocalRunLauncher` is Dagster's DefaultRunLauncher plus the run-worker health check that run
monitoring needs to fail a STARTED run whose process is gone (deploy/dagster.local.yaml).
"""

from __future__ import annotations

import os
import re

import dagster as dg
from dagster._core.definitions.executor_definition import (
    MULTI_PROC_CONFIG,
    _core_multiprocess_executor_creation,
)
from dagster._core.launcher import (
    CheckRunHealthResult,
    DefaultRunLauncher,
    WorkerStatus,
)
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import GRPC_INFO_TAG

CODE_LOCATION_MODULE = "etl_assets.definitions"
CELERY_BROKER = "ETL_ASSETS_CELERY_BROKER"
CELERY_BACKEND = "ETL_ASSETS_CELERY_BACKEND"

# Steps forked from a server that has already imported the code location (and with it dagster,
# pandas, pyarrow, duckdb, psycopg2): a step starts in milliseconds instead of ~4 s.
# At most this many step processes per run. The `warehouse` pool is what limits loads (a step waiting
# for a slot holds no process), and a loading step mostly waits on the database, so the executor must
# not cap them lower: Dagster's default, the CPU count, ran 2 of a pool of 3 at once on 2 cores.
MAX_STEP_PROCESSES = 8
WAREHOUSE_POOL = "warehouse"


def step_processes(instance: dg.DagsterInstance) -> int:
    """Step processes for a run: the `warehouse` pool's limit (at most MAX_STEP_PROCESSES).

    A step the pool blocks re-checks its claim after 1 s, then less and less often (Dagster's backoff
    to 15 s), so with more processes than slots a finished step's slot sat idle for ~1 s before the
    next step of the same run took it (a folder of 10 small objects on PostgreSQL, pool 3: three
    1-s gaps in a 13-s run). Launching only as many steps as the pool has slots, the executor starts
    the next one the moment one ends; the pool still arbitrates between runs."""
    limits = {pool.name: pool.limit for pool in instance.event_log_storage.get_pool_limits()}
    limit = limits.get(WAREHOUSE_POOL)
    if limit is None:
        limit = instance.get_concurrency_config().pool_config.default_pool_limit
    return max(1, min(MAX_STEP_PROCESSES, limit)) if limit else MAX_STEP_PROCESSES


def _forkserver_executor(init_context: dg.InitExecutorContext):
    config = dict(init_context.executor_config)
    if not config.get("max_concurrent"):  # run config may still set it
        config["max_concurrent"] = step_processes(init_context.instance)
    return _core_multiprocess_executor_creation(config)


forkserver_executor = dg.ExecutorDefinition(
    name="multiprocess_forkserver",
    config_schema=MULTI_PROC_CONFIG,
    executor_creation_fn=_forkserver_executor,
    requirements=dg.multiple_process_executor_requirements(),
    description="Dagster's multiprocess executor, steps forked from a server that preloaded the code "
                "location, as many at once as the warehouse pool has slots.",
).configured({"start_method": {"forkserver": {"preload_modules": [CODE_LOCATION_MODULE]}}},
             name="multiprocess_forkserver")


def executor_for(choice: str, celery_queue: str = "dagster") -> dg.ExecutorDefinition | None:
    """The executor named `choice` (chosen and validated in etl_assets/settings.py, `auto` already
    resolved); None means Dagster's default (multiprocess, spawn)."""
    if choice == "multiprocess":
        return None
    if choice == "in_process":
        return dg.in_process_executor
    if choice == "forkserver":
        return forkserver_executor
    from dagster_celery import celery_executor  # only imported when Celery is chosen

    return celery_executor.configured(
        {
            # Resolved by Dagster when a run starts, in the run process and in each worker.
            "broker": {"env": CELERY_BROKER},
            "backend": {"env": CELERY_BACKEND},
            # The queue steps are sent to; workers must listen on it (`-q`).
            "config_source": {"task_default_queue": celery_queue},
        },
        name="celery",
    )


class LocalRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher that can tell run monitoring whether a run's worker process is alive.

    The default launcher cannot, so Dagster's run monitoring leaves a STARTED run whose process was
    killed (`dg dev` stopped hard, the laptop's processes gone) STARTED forever, holding its
    `warehouse` pool slot and so every later run in the queue. A run worker writes its pid to the
    run's log ("Started process for run (pid: N)"); on the machine that launched it (a local
    instance: daemon, code server and run workers on one host) the process either still exists,
    started before that event (a reused pid is not the worker), or the worker is gone and
    monitoring fails the run and frees its slots. A worker on another host cannot be checked here
    and is reported RUNNING (monitoring then leaves it alone, as with the default launcher).
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = _worker_pid(self._instance, run.run_id)
        if worker is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no pid recorded yet", transient=True)
        pid, logged_at = worker
        if not _local_launch(run):
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker on another host: not checked")
        if _process_alive(pid, logged_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        return CheckRunHealthResult(WorkerStatus.FAILED,
                                    f"run worker process {pid} no longer exists (its server was stopped or killed)",
                                    run_worker_id=str(pid))


def _worker_pid(instance, run_id: str) -> tuple[int, float] | None:
    """The run worker's pid and when it logged it (the newest "Started process for run" event)."""
    from dagster._core.events import DagsterEventType

    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT).records
    for record in reversed(records):
        entry = record.event_log_entry
        message = entry.dagster_event.message or "" if entry.dagster_event else ""
        match = re.match(r"Started process for run \(pid: (\d+)\)", message)
        if match:
            return int(match.group(1)), entry.timestamp
    return None


def _local_launch(run: DagsterRun) -> bool:
    """Whether the code server that launched the run (its dagster/grpc_info tag) is on this host."""
    import json
    import socket

    info = json.loads(run.tags.get(GRPC_INFO_TAG) or "{}")
    host = info.get("host") or "localhost"
    return "socket" in info or host in ("localhost", "127.0.0.1", "::1", "0.0.0.0", socket.gethostname())


def _process_alive(pid: int, logged_at: float) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else: not our worker unless it started before the log
        pass
    started = _start_time(pid)
    return started is None or started <= logged_at + 2


def _start_time(pid: int) -> float | None:
    """A process's start (epoch seconds) from /proc, or None where there is no /proc (macOS)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError, IndexError):
        return None
