"""Where steps run, who runs a run, and how a run that lost its process lets go of the pool.

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

Runs and their processes (docs/runs-and-executors.md, "Killed runs, waiting and signals"):

- `run_process`: the process that executes a run, from the run's tags (`etl_assets/pid`, `/host`,
  `/process_started`, written by `SupervisedRuns` for the runs of `etl-assets` commands) or from the
  pid Dagster stores on the run's RUN_START event (a run worker launched by the daemon or the UI).
  Never from log text.
- `recover_abandoned_runs`: a run left in progress by a process that no longer exists (on this
  host) is marked FAILURE (CANCELED if it was canceling) and its pool slots are freed, as are the
  slots still held by runs that ended. `etl-assets` commands call it when they start and while
  they wait for a slot; `LocalRunLauncher` gives the daemon's run monitoring the same check.
- `SupervisedRuns`: how an `etl-assets` command executes its runs. Each run executes in a forked
  child process; the command's own process watches it: it prints (and writes to the run's log)
  which run holds the pool slot the run waits for, and on SIGTERM or Ctrl-C it marks the run
  CANCELING, interrupts it, and ends it CANCELED with its slots freed within GRACE_SECONDS.
- etl_assets/dagster_internals.py (imported here) fixes Dagster's wait for a pool slot, which spun a
  CPU core and ignored interrupts (Dagster 1.13 only), and holds the health check's private types.
"""

from __future__ import annotations

import json
import multiprocessing.util
import os
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import dagster as dg

# The private names this module needs (the health check's result types, the code-server tag) and the
# pool-wait fix live in the one fenced module (imported here, so every process that imports this one,
# run workers and `etl-assets` commands, has the fix).
from etl_assets.dagster_internals import GRPC_INFO_TAG, CheckRunHealthResult, WorkerStatus

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
    """Dagster's multiprocess executor, its `max_concurrent` (unless run config sets it) from the pool."""
    config = dict(init_context.executor_config)
    if not config.get("max_concurrent"):
        config["max_concurrent"] = step_processes(init_context.instance)
    return dg.multiprocess_executor.executor_creation_fn(init_context._replace(executor_config=config))


forkserver_executor = dg.ExecutorDefinition(
    name="multiprocess_forkserver",
    config_schema=dg.multiprocess_executor.config_schema,
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


# ---------------------------------------------------------------- the process that runs a run

PID_TAG = "etl_assets/pid"
HOST_TAG = "etl_assets/host"
PROCESS_STARTED_TAG = "etl_assets/process_started"
IN_PROGRESS = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
               dg.DagsterRunStatus.CANCELING]
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


def process_tags(pid: int | None = None) -> dict[str, str]:
    """Run tags naming this process (or `pid`): pid, host and start time, so that another process can
    tell later whether the run's process still exists (a reused pid has another start time)."""
    pid = os.getpid() if pid is None else pid
    tags = {PID_TAG: str(pid), HOST_TAG: socket.gethostname()}
    started = _start_time(pid)
    if started is not None:
        tags[PROCESS_STARTED_TAG] = f"{started:.2f}"
    return tags


@dataclass(frozen=True)
class RunProcess:
    """The process that executes a run: its pid, its host, and what is known of when it started."""

    pid: int
    host: str
    started: float | None = None  # its start time as recorded (exact: a reused pid differs)
    started_before: float | None = None  # it must have started before this (when it reported the run's start)

    @property
    def local(self) -> bool:
        return self.host in (*_LOCAL_HOSTS, socket.gethostname())

    def alive(self) -> bool:
        """Whether this process still exists (on this host; call only when `local`)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, another user's: the start time below decides
            pass
        if _process_state(self.pid) in ("Z", "X"):  # killed, not yet reaped by its parent
            return False
        started = _start_time(self.pid)
        if started is None:  # no /proc (macOS): the pid exists, trust it
            return True
        if self.started is not None:
            return abs(started - self.started) < 0.5
        return self.started_before is None or started <= self.started_before + 2

    def describe(self) -> str:
        return f"process {self.pid}" + ("" if self.local else f" on {self.host}")


def run_process(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunProcess | None:
    """The process executing `run`: from its tags (runs of `etl-assets` commands), else the pid on
    its RUN_START event (Dagster records the emitting process's pid on every event; a run worker
    reports the run's start itself). None while the run has not started."""
    tags = run.tags
    if tags.get(PID_TAG, "").isdigit():
        started = tags.get(PROCESS_STARTED_TAG)
        return RunProcess(int(tags[PID_TAG]), tags.get(HOST_TAG) or "localhost",
                          started=float(started) if started else None)
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_START, limit=1).records
    if not records:
        return None
    entry = records[0].event_log_entry
    pid = entry.dagster_event.pid if entry.dagster_event else None
    if pid is None:
        return None
    return RunProcess(pid, _launch_host(run), started_before=entry.timestamp)


def _launch_host(run: dg.DagsterRun) -> str:
    """The host of the code server that launched the run (its GRPC_INFO_TAG): run workers start on
    that host."""
    try:
        info = json.loads(run.tags.get(GRPC_INFO_TAG) or "{}")
    except ValueError:
        info = {}
    if "socket" in info:
        return "localhost"
    return info.get("host") or "localhost"


def process_gone(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """Why `run` can no longer progress: its process (on this host) no longer exists; None if it
    exists, has not been recorded yet, or runs on another host (which cannot be checked from here)."""
    process = run_process(instance, run)
    if process is None or not process.local or process.alive():
        return None
    return f"its {process.describe()} no longer exists (killed, crashed, or its machine restarted)"


def _holds_slots(instance: dg.DagsterInstance, run_id: str) -> bool:
    storage = instance.event_log_storage
    return storage.supports_global_concurrency_limits and run_id in storage.get_concurrency_run_ids()


def free_slots(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Free every pool slot (claimed, or waited for) of `run_id`; whether it held any."""
    if not _holds_slots(instance, run_id):
        return False
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    return True


def recover_abandoned_runs(instance: dg.DagsterInstance, run_ids: Iterable[str] | None = None) -> list[str]:
    """Let go of what runs whose process is gone still hold; one line per run acted on.

    - A run in progress (not started, starting, started or canceling) whose process no longer exists
      on this host is marked FAILURE (CANCELED if it was canceling) with the reason, and its pool
      slots are freed. Runs on other hosts and runs whose process is not known yet are left alone.
    - A run that ended (or no longer exists) but still holds pool slots has them freed, once it has
      been over for the instance's `free_slots_after_run_end_seconds` (what the daemon waits).

    `run_ids`: only these runs (the holders of a slot a run waits for); None: every run.
    """
    only = None if run_ids is None else set(run_ids)
    if only is not None and not only:
        return []
    lines = []
    records = instance.get_run_records(dg.RunsFilter(statuses=IN_PROGRESS, run_ids=sorted(only) if only else None))
    for record in records:
        run = record.dagster_run
        reason = process_gone(instance, run)
        if reason is None:
            continue
        message = f"Run {run.run_id} left {run.status.value}: {reason}."
        if run.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message)
            outcome = "CANCELED"
        else:
            instance.report_run_failed(run, message)
            outcome = "FAILURE"
        freed = free_slots(instance, run.run_id)
        lines.append(f"run {run.run_id[:8]} was left {run.status.value}: {reason}: marked {outcome}"
                     + (", its pool slots freed" if freed else ""))
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return lines
    holders = storage.get_concurrency_run_ids()
    if only is not None:
        holders &= only
    grace = float((instance.run_monitoring_settings or {}).get("free_slots_after_run_end_seconds") or 0)
    for run_id in sorted(holders):
        record = next(iter(instance.get_run_records(dg.RunsFilter(run_ids=[run_id]), limit=1)), None)
        if record is None:
            storage.free_concurrency_slots_for_run(run_id)
            lines.append(f"run {run_id[:8]} no longer exists: freed the pool slots it still held")
        elif record.dagster_run.is_finished and (record.end_time or 0) + grace <= time.time():
            storage.free_concurrency_slots_for_run(run_id)
            lines.append(f"run {run_id[:8]} ended {record.dagster_run.status.value}: freed the pool slots "
                         "it still held")
    return lines


class LocalRunLauncher(dg.DefaultRunLauncher):
    """DefaultRunLauncher that can tell run monitoring whether a run's process is alive, and can
    terminate a run of an `etl-assets` command.

    The default launcher cannot, so Dagster's run monitoring left a STARTED run whose process was
    killed (`dg dev` stopped hard, an `etl-assets materialize` killed) STARTED forever, holding its
    `warehouse` pool slot and so every later run. Which process runs a run is `run_process`: the
    run's tags for runs of `etl-assets` commands, the pid on its RUN_START event for run workers
    launched through a code server. On this host that process either still exists (the same start
    time: a reused pid is not it), or monitoring fails the run and frees its slots. A run on another
    host cannot be checked here and is reported RUNNING (monitoring then leaves it alone, as with
    the default launcher).
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        process = run_process(self._instance, run)
        if process is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no process recorded yet", transient=True)
        if not process.local:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker on {process.host}: not checked")
        if process.alive():
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(process.pid))
        return CheckRunHealthResult(WorkerStatus.FAILED,
                                    f"run worker process {process.pid} no longer exists (killed, crashed, "
                                    "or its server was stopped)", run_worker_id=str(process.pid))

    def terminate(self, run_id: str) -> bool:
        """A run of an `etl-assets` command (tagged with its process) is canceled as Dagster cancels a
        run worker: marked CANCELING, then interrupted; it ends CANCELED and frees its slots."""
        run = self._instance.get_run_by_id(run_id)
        process = run_process(self._instance, run) if run and PID_TAG in run.tags else None
        if run is None or run.is_finished or process is None or not process.local or not process.alive():
            return super().terminate(run_id)
        self._instance.report_run_canceling(run)
        os.kill(process.pid, signal.SIGINT)
        return True


# ---------------------------------------------------------------- runs of etl-assets commands

GRACE_SECONDS = 10.0  # a run asked to stop that has not ended by then is killed
POLL_SECONDS = 0.2  # how often the command looks at its run's process
WAIT_CHECK_SECONDS = 1.0  # how often it looks at the pools (what the run waits for, who holds it)
WAIT_REMINDER_SECONDS = 60.0  # a waiting line again after this long, even if nothing changed


class StopRequested(Exception):
    """The command got SIGTERM or SIGINT: what it was running is canceled; it must stop now."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@dataclass
class RunOutcome:
    """How a supervised run ended, read back from the instance: what `execute_in_process` returns,
    for what the commands print (success, materializations, step failures)."""

    run_id: str
    status: dg.DagsterRunStatus | None
    events: list = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what the supervisor saw: the process died, a stop

    @property
    def success(self) -> bool:
        return self.status == dg.DagsterRunStatus.SUCCESS

    def get_asset_materialization_events(self) -> list:
        return [e for e in self.events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION]

    def get_step_failure_events(self) -> list:
        return [e for e in self.events if e.event_type == dg.DagsterEventType.STEP_FAILURE]

    def get_asset_check_evaluations(self) -> list[dg.AssetCheckEvaluation]:
        return [e.event_specific_data for e in self.events
                if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION]


Execute = Callable[[dg.DagsterInstance, str, dict], object]  # (instance, run_id, tags) -> anything


class SupervisedRuns:
    """How an `etl-assets` command executes its runs, so that nothing it starts waits forever.

    Entering: the runs of the instance whose process is gone are failed and their slots freed
    (`recover_abandoned_runs`), and SIGTERM and SIGINT are taken over until exit.

    `execute(label, fn)`: `fn(instance, run_id, tags)` must execute exactly one run with that run id
    and those tags (`job.execute_in_process(run_id=..., tags=...)`). On a persistent instance it runs
    in a forked child process (its own process group, killed with this process), while this process:

    - every second, if the run waits for a pool slot, prints which run holds it (and writes the same
      line to the run's log in the UI), and fails any holder whose process is gone, freeing its slots;
    - on SIGTERM or SIGINT marks the run CANCELING, then interrupts it (SIGINT: Dagster's own
      termination): it stops at its next checkpoint (a step, or the wait for a slot) and ends
      CANCELED. If it has not ended GRACE_SECONDS later, or on a second signal, it is killed and
      marked CANCELED here. `execute` then returns its outcome and `StopRequested` follows at the
      next `execute` or `check_stop`;
    - if the child dies for any reason, marks the run FAILURE (CANCELED after a stop) and frees its
      slots at once.

    On an ephemeral instance (nothing shared, no pools) or without `os.fork`, `fn` runs in this
    process and signals keep their usual meaning.
    """

    def __init__(self, instance: dg.DagsterInstance, out=None, isolate: bool | None = None,
                 grace_seconds: float = GRACE_SECONDS):
        self.instance = instance
        self.out = out
        self.isolate = (instance.is_persistent and hasattr(os, "fork")) if isolate is None else isolate
        self.grace_seconds = grace_seconds
        self.signals: list[int] = []
        self._child: int | None = None  # the run's process while one executes (-1 while it is forked)
        self._handlers: dict[int, object] = {}

    # -- set-up

    def __enter__(self) -> SupervisedRuns:
        if self.isolate and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._handlers[signum] = signal.signal(signum, self._on_signal)
        for line in recover_abandoned_runs(self.instance):
            self._say(line)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)
        self._handlers.clear()

    def _on_signal(self, signum: int, _frame) -> None:
        self.signals.append(signum)
        if self._child is None:  # nothing executing: stop right here
            raise StopRequested(signum)
        # A run executes: the supervising loop cancels it (no storage work inside a signal handler).

    def check_stop(self) -> None:
        if self.signals:
            raise StopRequested(self.signals[0])

    def _say(self, line: str) -> None:
        print(line, file=self.out or sys.stdout, flush=True)

    # -- one run

    def execute(self, label: str, fn: Execute) -> RunOutcome:
        self.check_stop()
        run_id = str(uuid.uuid4())
        if not self.isolate:
            fn(self.instance, run_id, process_tags())
            return self._outcome(run_id, [])
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self._child = -1  # from here a signal is the supervising loop's to handle, until the run is settled
        try:
            parent = os.getpid()
            pid = os.fork()
            if pid == 0:
                self._child_main(fn, run_id, parent)  # never returns
            self._child = pid
            ended = self._supervise(pid, run_id, label)
            return self._finish(run_id, pid, ended)
        finally:
            self._child = None

    def _child_main(self, fn: Execute, run_id: str, parent: int) -> None:
        code = 1
        try:
            os.setpgid(0, 0)  # a Ctrl-C at the terminal reaches the command, which cancels the run first
            _die_with_parent(parent)
            for signum in self._handlers:
                signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
            self._handlers = {}
            instance = dg.DagsterInstance.from_ref(self.instance.get_ref())  # no storage shared across the fork
            with instance:
                fn(instance, run_id, process_tags())
            code = 0
        except KeyboardInterrupt:
            code = 128 + signal.SIGINT
        except BaseException:  # noqa: BLE001: whatever it is, the command reports it; the child only exits
            traceback.print_exc()
        finally:
            # os._exit skips multiprocessing's exit hook: release what the run made (dbt's semaphores),
            # or the resource tracker warns of a leak at the command's end. Finalizers made before the
            # fork belong to the parent and are skipped by multiprocessing itself (their pid differs).
            try:
                multiprocessing.util._run_finalizers(0)
            except Exception:  # noqa: BLE001
                pass
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001
                    pass
            os._exit(code)

    def _supervise(self, pid: int, run_id: str, label: str) -> str:
        """Wait for the child to end, cancel it on a signal, report what it waits for. How it ended."""
        waiting = _PoolWait(self.instance, run_id, label, self._say)
        canceled_at = None
        next_look = 0.0
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return _exit_description(status)
            now = time.monotonic()
            if self.signals and canceled_at is None:
                self._cancel(pid, run_id, label)
                canceled_at = now
            if canceled_at is not None and (len(self.signals) > 1 or now - canceled_at > self.grace_seconds):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                why = ("a second signal" if len(self.signals) > 1
                       else f"it had not stopped after {self.grace_seconds:.0f} s")
                self._say(f"{label}: killed run {run_id[:8]}'s process ({why})")
                return f"was killed ({why})"
            if canceled_at is None and now >= next_look:
                try:
                    waiting.look()
                except Exception as error:  # noqa: BLE001: the run goes on; saying what it waits for is a bonus
                    if not waiting.failed:
                        self._say(f"{label}: cannot read the instance's pools: {error}")
                    waiting.failed = True
                next_look = now + WAIT_CHECK_SECONDS
            time.sleep(POLL_SECONDS)

    def _cancel(self, pid: int, run_id: str, label: str) -> None:
        name = signal.Signals(self.signals[0]).name
        self._say(f"{label}: {name} received: canceling run {run_id[:8]}")
        run = self.instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            self.instance.report_run_canceling(run, f"etl-assets received {name}: canceling the run.")
        try:
            os.kill(pid, signal.SIGINT)  # Dagster's termination: the run raises at its next checkpoint
        except ProcessLookupError:
            pass

    def _finish(self, run_id: str, pid: int, ended: str) -> RunOutcome:
        problems = []
        run = self.instance.get_run_by_id(run_id)
        stopped = signal.Signals(self.signals[0]).name if self.signals else None
        if run is not None and not run.is_finished:
            if stopped:
                message = f"etl-assets received {stopped}; the run's process {pid} {ended}."
                self.instance.report_run_canceled(run, message)
            else:
                message = f"The run's process {pid} {ended} without finishing the run."
                self.instance.report_run_failed(run, message)
            problems.append(message)
        elif run is None:
            problems.append(f"the run's process {pid} {ended} before it started the run (see the error above)")
        free_slots(self.instance, run_id)
        return self._outcome(run_id, problems)

    def _outcome(self, run_id: str, problems: list[str]) -> RunOutcome:
        run = self.instance.get_run_by_id(run_id)
        if run is None:
            return RunOutcome(run_id, None, [], problems)
        events = [entry.dagster_event for entry in self.instance.all_logs(run_id) if entry.dagster_event]
        return RunOutcome(run_id, run.status, events, problems)


class _PoolWait:
    """What a run waits for: says which run holds the slot, and frees slots a dead run holds."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str, label: str, say: Callable[[str], None]):
        self.instance, self.run_id, self.label, self.say = instance, run_id, label, say
        self.since: float | None = None
        self.said: tuple | None = None
        self.said_at = 0.0
        self.failed = False

    def look(self) -> None:
        storage = self.instance.event_log_storage
        if not storage.supports_global_concurrency_limits:
            return
        pools = sorted(storage.get_concurrency_keys())
        infos = storage.get_concurrency_infos(pools) if pools else {}
        waiting = {pool: info for pool, info in infos.items()
                   if any(p.run_id == self.run_id and p.assigned_timestamp is None for p in info.pending_steps)}
        now = time.monotonic()
        if not waiting:
            if self.since is not None:
                self.say(f"{self.label}: got a slot of pool {_names(self.said[0])} after {now - self.since:.0f} s")
            self.since, self.said = None, None
            return
        holders: dict[str, list[str]] = {}
        for info in waiting.values():
            for slot in info.claimed_slots:
                if slot.run_id != self.run_id:
                    holders.setdefault(slot.run_id, []).append(slot.step_key)
        for line in recover_abandoned_runs(self.instance, holders):
            self.say(f"{self.label}: {line}")
        if self.since is None:
            self.since = now
        key = (tuple(waiting), tuple(sorted(holders)))
        if key == self.said and now - self.said_at < WAIT_REMINDER_SECONDS:
            return
        limits = ", ".join(f"'{pool}' (limit {info.slot_count})" for pool, info in waiting.items())
        held = "; ".join(self._describe(run_id, steps) for run_id, steps in sorted(holders.items()))
        message = (f"waiting for a slot of pool {limits}"
                   + (f" held by {held}" if held else ": queued behind earlier claims")
                   + (f" (waiting {now - self.since:.0f} s)" if now - self.since >= 1 else ""))
        if key != self.said:  # the run's log first: whoever reads the command's line finds it there too
            run = self.instance.get_run_by_id(self.run_id)
            if run is not None and not run.is_finished:
                self.instance.report_engine_event(f"etl-assets: {message}", run)
        self.say(f"{self.label}: {message}")
        self.said, self.said_at = key, now

    def _describe(self, run_id: str, steps: list[str]) -> str:
        run = self.instance.get_run_by_id(run_id)
        if run is None:
            return f"run {run_id[:8]} (gone)"
        process = run_process(self.instance, run)
        parts = [", ".join(sorted(steps)), run.status.value]
        if process is not None:
            parts.append(process.describe())
        if run.tags.get("etl_assets/launched_by"):
            parts.append(run.tags["etl_assets/launched_by"])
        return f"run {run_id[:8]} ({'; '.join(parts)})"


def _names(pools: Iterable[str]) -> str:
    return ", ".join(f"'{pool}'" for pool in pools)


def _exit_description(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _die_with_parent(parent: int) -> None:
    """Linux: this process gets SIGKILL when the command's process dies (a `kill -9` of the command
    ends its run's process too; the next command or run monitoring then fails the run)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def _process_state(pid: int) -> str | None:
    """The process's state letter from /proc (Z: a zombie, killed but not reaped), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


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
