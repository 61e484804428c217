"""Dagster's own processes, live: one helper per concept, for the tests and the benchmark.

- `free_port`, `moto_server`: a port of 127.0.0.1 nobody listens on; moto's AWS API over HTTP.
- `environment` (+ `duckdb_warehouse`, `postgres_warehouse`, `postgres_storage`): a child's variables.
- `Service`: a process in a process group of its own (its code servers and run workers are its
  children, in the same group), logging to a file; `Server`: one serving Dagster's GraphQL API
  (`dagster-webserver`, `dg dev`, `dagster dev`); `Stack`: a webserver and a daemon on one instance.
- `graphql`: one POST to the GraphQL API. `wait_for`: poll until a state is reached, failing at
  once (with the logs) when a process it depends on has exited.
- The GraphQL the tests and the benchmark send: the location's load status, sensors and schedules,
  dynamic partitions, runs and backfills, and waiting for a run or a backfill to finish.

It lives with the tests: pipeline code never imports it; the benchmarks do (a development install).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKSPACE = REPO / "workspace.yaml"
HOST = "127.0.0.1"
LOCATION, REPOSITORY = "etl_assets", "__repository__"
REPOSITORY_SELECTOR = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
RUN_FINISHED = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
BACKFILL_FINISHED = frozenset({"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"})


class LiveError(RuntimeError):
    """A Dagster process exited, a request failed, or a state was not reached in time."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's AWS API (S3, SNS, SQS) over HTTP on a free port, served by a thread; yields its endpoint."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.stop()


# ---------------------------------------------------------------- environments


def environment(landing: Path | None = None, home: Path | None = None, **settings: str) -> dict:
    """This process's variables without any ETL_ASSETS_* or DAGSTER_* one, the venv's bin first on
    PATH (dbt, dg, etl-assets), a local landing zone at `landing`, DAGSTER_HOME, then `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_ASSETS_", "DAGSTER_"))}
    env.update({"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "VIRTUAL_ENV": str(BIN.parent)})
    if landing is not None:
        env.update({"ETL_ASSETS_LANDING_ZONE": "local", "ETL_ASSETS_LANDING_ROOT": str(landing)})
    if home is not None:
        env["DAGSTER_HOME"] = str(home)
    env.update(settings)
    return env


def duckdb_warehouse(path: Path) -> dict:
    return {"ETL_ASSETS_WAREHOUSE": "duckdb", "ETL_ASSETS_DUCKDB_PATH": str(path)}


def postgres_warehouse(database: dict) -> dict:
    """The code location's warehouse in `database` ({host, port, user, database})."""
    return {"ETL_ASSETS_WAREHOUSE": "postgres", "ETL_ASSETS_PG_HOST": database["host"],
            "ETL_ASSETS_PG_PORT": str(database["port"]), "ETL_ASSETS_PG_USER": database["user"],
            "ETL_ASSETS_PG_DATABASE": database["database"]}


def postgres_storage(database: dict) -> dict:
    """deploy/dagster.production.yaml's DAGSTER_PG_* for Dagster's storage in `database` (trust auth)."""
    return {"DAGSTER_PG_HOST": database["host"], "DAGSTER_PG_PORT": str(database["port"]),
            "DAGSTER_PG_DB": database["database"], "DAGSTER_PG_USER": database["user"], "DAGSTER_PG_PASSWORD": ""}


# ---------------------------------------------------------------- processes


def _default_signals() -> None:
    # Started from a script (or in the background), Dagster's CLIs inherit SIGINT ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Service:
    """A long-running process in its own process group, logging to `log_dir/<name>.log`."""

    stop_signal = signal.SIGTERM

    def __init__(self, name: str, command: list[str], env: dict, log_dir: Path, cwd: Path = REPO):
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.started = time.monotonic()
        self.process = subprocess.Popen([str(c) for c in command], cwd=cwd, env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, preexec_fn=_default_signals)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, chars: int = 6000) -> str:
        return f"----- {self.name} (exit {self.process.poll()}) {self.log_path} -----\n{self.log_text()[-chars:]}"

    def kill(self) -> None:
        """SIGKILL to the whole group at once: no shutdown of any kind."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)

    def stop(self, grace: float = 15.0) -> None:
        """`stop_signal` to the group, then SIGKILL to whatever is left of it (a run worker)."""
        for sig in (self.stop_signal, signal.SIGKILL):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=grace)
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
            break
        self._log.close()


def wait_for(predicate: Callable, timeout: float, what: str, interval: float = 0.05,
             services: Iterable[Service] = ()):
    """Poll `predicate` until it returns something truthy (returned); fail naming `what` when
    `timeout` seconds pass, or at once when one of `services` has exited (with its log)."""
    services = list(services)
    deadline = time.monotonic() + timeout
    while True:
        for service in services:
            if not service.alive():
                raise LiveError(f"{service.name} exited while waiting for {what}\n{service.tail()}")
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            tails = "".join(f"\n{s.tail(3000)}" for s in services)
            raise LiveError(f"timed out after {timeout:.0f} s waiting for {what}{tails}")
        time.sleep(interval)


def graphql(url: str, query: str, variables: dict | None = None, timeout: float = 60.0,
            idempotent: bool = False) -> dict:
    """One GraphQL request; its `data`, or LiveError with the errors. A query, or a mutation that is
    `idempotent` (not one that must not run twice, such as a launch), is retried a few times on a
    server error: the webserver answers 500 while SQLite storage is busy."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    attempts = 1 if query.lstrip().startswith("mutation") and not idempotent else 5
    for attempt in range(attempts):
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = json.load(response)
            break
        except urllib.error.HTTPError as error:
            if error.code < 500 or attempt == attempts - 1:
                raise
            time.sleep(1)
    if payload.get("errors"):
        raise LiveError(f"GraphQL errors: {payload['errors']}")
    return payload["data"]


_LOCATION_STATUS = """{ workspaceOrError { ... on Workspace { locationEntries { name
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def location_loaded(url: str, location: str = LOCATION) -> bool:
    """Whether the server has loaded the code location; LiveError if it could not."""
    try:
        entries = graphql(url, _LOCATION_STATUS, timeout=10)["workspaceOrError"]["locationEntries"]
    except OSError:  # not listening yet (URLError, HTTPError and socket timeouts are OSErrors)
        return False
    status = {e["name"]: (e["locationOrLoadError"] or {}).get("__typename") for e in entries}
    if status.get(location) == "PythonError":
        raise LiveError(f"the code location failed to load: {entries}")
    return status.get(location) == "RepositoryLocation"


class Server(Service):
    """A process serving Dagster's UI and GraphQL API on a free port: `dagster-webserver` (kind
    "webserver", on workspace.yaml), `dg dev` ("dg") or `dagster dev` ("dagster", stopped by SIGINT,
    its own clean shutdown)."""

    def __init__(self, name: str, env: dict, log_dir: Path, kind: str = "webserver", workspace: Path = WORKSPACE):
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.url = f"{self.base_url}/graphql"
        commands = {
            "webserver": [BIN / "dagster-webserver", "-w", workspace, "-h", HOST, "-p", self.port],
            "dg": [BIN / "dg", "dev", "--host", HOST, "--port", self.port],
            "dagster": [BIN / "dagster", "dev", "--host", HOST, "--port", self.port],
        }
        if kind == "dagster":
            self.stop_signal = signal.SIGINT
        super().__init__(name, commands[kind], env, log_dir)

    def query(self, query: str, variables: dict | None = None, timeout: float = 60.0) -> dict:
        return graphql(self.url, query, variables, timeout)

    def wait_loaded(self, timeout: float) -> float:
        """Until the code location is loaded; the seconds since the process started."""
        wait_for(lambda: location_loaded(self.url), timeout, f"{self.name} to load the code location",
                 interval=0.25, services=[self])
        return time.monotonic() - self.started


def daemon(env: dict, log_dir: Path, workspace: Path = WORKSPACE) -> Service:
    return Service("daemon", [BIN / "dagster-daemon", "run", "-w", workspace], env, log_dir)


# ---------------------------------------------------------------- sensors and schedules

_INSTIGATORS = """query($repo: RepositorySelector!) {
  sensorsOrError(repositorySelector: $repo) { ... on Sensors { results { id name
    sensorState { status ticks(limit: 1) { id } } } } }
  schedulesOrError(repositorySelector: $repo) { ... on Schedules { results { id name scheduleState { status } } } }
}"""
_STOP_SENSOR = """mutation($id: String) { stopSensor(id: $id) { __typename
  ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }"""
_STOP_SCHEDULE = """mutation($id: String) { stopRunningSchedule(id: $id) { __typename
  ... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } } }"""
_START_SENSOR = """mutation($selector: SensorSelector!) { startSensor(sensorSelector: $selector) { __typename
  ... on Sensor { sensorState { status } } ... on PythonError { message } } }"""
_SENSOR_STATE = """query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  __typename ... on Sensor { sensorState { status ticks(limit: 10) { status runIds error { message }
    dynamicPartitionsRequestResults { partitionsDefName partitionKeys type } } } } } }"""


def stop_instigators(url: str, keep: tuple[str, ...] = (), first_tick_timeout: float = 0.0) -> list[str]:
    """Stop every running sensor and schedule except `keep`, so nothing else ticks (a tick is CPU on
    a 2-core machine, and the backup sensor would load every folder by itself); their names. With
    `first_tick_timeout`, every running sensor has ticked once first, so the daemon's first tick
    cannot race the stop."""
    def instigators():
        return graphql(url, _INSTIGATORS, {"repo": REPOSITORY_SELECTOR})

    def every_sensor_ticked():
        data = instigators()
        running = [s for s in data["sensorsOrError"]["results"] if s["sensorState"]["status"] == "RUNNING"]
        return data if all(s["sensorState"]["ticks"] for s in running) else None

    data = wait_for(every_sensor_ticked, first_tick_timeout, "every sensor's first tick", 1.0) \
        if first_tick_timeout else instigators()
    stopped = []
    for listing, state, mutation, field, result_state in (
            ("sensorsOrError", "sensorState", _STOP_SENSOR, "stopSensor", "instigationState"),
            ("schedulesOrError", "scheduleState", _STOP_SCHEDULE, "stopRunningSchedule", "scheduleState")):
        for item in data[listing]["results"]:
            if item[state]["status"] == "RUNNING" and item["name"] not in keep:
                # Stopping a stopped sensor or schedule leaves it stopped: safe to retry on a busy server.
                result = graphql(url, mutation, {"id": item["id"]}, idempotent=True)[field]
                if result.get(result_state, {}).get("status") != "STOPPED":
                    raise LiveError(f"stopping {item['name']}: {result}")
                stopped.append(item["name"])
    return stopped


def start_sensor(url: str, name: str) -> str:
    """Turn a sensor on; its status."""
    result = graphql(url, _START_SENSOR, {"selector": {**REPOSITORY_SELECTOR, "sensorName": name}})["startSensor"]
    return result.get("sensorState", {}).get("status", str(result))


def sensor_state(url: str, name: str) -> dict:
    """The sensor's status and its last ten ticks, newest first."""
    return graphql(url, _SENSOR_STATE, {"selector": {**REPOSITORY_SELECTOR, "sensorName": name}}
                   )["sensorOrError"]["sensorState"]


def first_finished_tick(url: str, name: str) -> dict | None:
    """The sensor's oldest tick that has finished (of its last ten), or None."""
    done = [t for t in sensor_state(url, name)["ticks"] if t["status"] != "STARTED"]
    return done[-1] if done else None


# ---------------------------------------------------------------- daemons, partitions, runs, backfills

_DAEMON_HEALTH = """{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"""
_ADD_PARTITION = """mutation($name: String!, $key: String!, $repo: RepositorySelector!) {
  addDynamicPartition(partitionsDefName: $name, partitionKey: $key, repositorySelector: $repo) {
  __typename ... on PythonError { message } ... on DuplicateDynamicPartitionError { partitionName } } }"""
_LAUNCH = """mutation($params: ExecutionParams!) { launchPipelineExecution(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } } } }"""
_BACKFILL = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
_BACKFILL_STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename ... on PartitionBackfill { status timestamp endTimestamp } ... on PythonError { message } } }"""
_RUN_FIELDS = """runId status creationTime startTime endTime tags { key value }
  stepStats { stepKey status startTime endTime }"""
_RUNS = "query($filter: RunsFilter) { runsOrError(filter: $filter) { ... on Runs { results { %s } } } }" % _RUN_FIELDS
_RUN = "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { %s } } }" % _RUN_FIELDS


def daemons_healthy(url: str, daemons: Iterable[str] = ("QUEUED_RUN_COORDINATOR",)) -> bool:
    statuses = graphql(url, _DAEMON_HEALTH)["instance"]["daemonHealth"]["allDaemonStatuses"]
    healthy = {d["daemonType"] for d in statuses if d["healthy"]}
    return set(daemons) <= healthy


def add_partitions(url: str, partitions_def: str, keys: list[str]) -> None:
    for key in keys:
        result = graphql(url, _ADD_PARTITION, {"name": partitions_def, "key": key, "repo": REPOSITORY_SELECTOR})
        if result["addDynamicPartition"]["__typename"] not in ("AddDynamicPartitionSuccess",
                                                               "DuplicateDynamicPartitionError"):
            raise LiveError(f"adding partition {key}: {result}")


def launch_run(url: str, job: str, assets: list[dict], partition: str | None = None) -> str:
    """A run of `job` for the given asset keys ({"path": [...]}) and partition, as the UI launches one."""
    tags = [{"key": "dagster/partition", "value": partition}] if partition else []
    params = {"selector": {**REPOSITORY_SELECTOR, "jobName": job, "assetSelection": assets},
              "executionMetadata": {"tags": tags}}
    result = graphql(url, _LAUNCH, {"params": params})["launchPipelineExecution"]
    if result["__typename"] != "LaunchRunSuccess":
        raise LiveError(f"launching {job} {partition or ''}: {result}")
    return result["run"]["runId"]


def launch_backfill(url: str, partitions: list[str], assets: list[dict]) -> str:
    """An asset backfill of the partitions, as the UI's backfill dialog launches one (its runs are as
    the assets' BackfillPolicy groups the partitions: up to 10 folders a run for Salesforce objects)."""
    params = {"partitionNames": partitions, "assetSelection": assets, "fromFailure": False}
    result = graphql(url, _BACKFILL, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise LiveError(f"backfill: {result}")
    return result["backfillId"]


def run_record(url: str, run_id: str) -> dict:
    """A run's status, times, tags and step stats ({} while the webserver does not know it yet)."""
    return graphql(url, _RUN, {"id": run_id})["runOrError"]


def runs(url: str, tags: dict | None = None) -> list[dict]:
    """Every run (with the given tags), newest first."""
    run_filter = {"tags": [{"key": k, "value": v} for k, v in tags.items()]} if tags else None
    return graphql(url, _RUNS, {"filter": run_filter})["runsOrError"]["results"]


def backfill_status(url: str, backfill_id: str) -> str:
    return graphql(url, _BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"].get("status", "")


def wait_run(url: str, run_id: str, timeout: float, services: Iterable[Service] = ()) -> dict:
    """Until the run has finished (success, failure or canceled); its record."""
    return wait_for(lambda: (run := run_record(url, run_id)).get("status") in RUN_FINISHED and run, timeout,
                    f"run {run_id} to finish", interval=0.25, services=services)


def wait_backfill(url: str, backfill_id: str, timeout: float, services: Iterable[Service] = ()) -> dict:
    """Until the backfill and each of its runs have finished; its status with "runs"."""
    def finished():
        status = backfill_status(url, backfill_id)
        if status not in BACKFILL_FINISHED:
            return None
        its_runs = runs(url, {"dagster/backfill": backfill_id})
        return all(r["status"] in RUN_FINISHED for r in its_runs) and {"status": status, "runs": its_runs}

    return wait_for(finished, timeout, f"backfill {backfill_id} to finish", interval=1.0, services=services)


# ---------------------------------------------------------------- a deployment


class Stack:
    """`dagster-webserver` and `dagster-daemon` on the instance of env's DAGSTER_HOME (workspace.yaml),
    each in its own process group; a context manager that stops both."""

    def __init__(self, env: dict, log_dir: Path):
        self.env, self.log_dir = env, Path(log_dir)
        self.services: list[Service] = []
        self.webserver: Server | None = None
        self.stopped: list[str] = []

    @property
    def url(self) -> str:
        return self.webserver.url

    def start_webserver(self, timeout: float = 300.0, keep: tuple[str, ...] = ()) -> float:
        """The webserver first (it creates the instance's SQLite storage: two processes creating it
        at once can both write its schema version); then every sensor and schedule but `keep` is
        stopped (`stopped` names them). The seconds until the location was loaded."""
        self.webserver = Server("webserver", self.env, self.log_dir)
        self.services.append(self.webserver)
        seconds = self.webserver.wait_loaded(timeout)
        self.stopped = stop_instigators(self.url, keep)
        return seconds

    def start_daemon(self, timeout: float = 300.0, daemons: tuple[str, ...] = ("QUEUED_RUN_COORDINATOR",)) -> None:
        """The daemon, until it reports `daemons` healthy (none: no wait)."""
        self.services.append(daemon(self.env, self.log_dir))
        if daemons:
            self.wait(lambda: daemons_healthy(self.url, daemons), timeout,
                      f"the daemon's {', '.join(daemons)} heartbeats")

    def start(self, timeout: float = 300.0, keep: tuple[str, ...] = ()) -> float:
        """Both, in that order; the seconds until the daemon's run queue was healthy."""
        started = time.monotonic()
        self.start_webserver(timeout, keep)
        self.start_daemon(timeout)
        return time.monotonic() - started

    def wait(self, predicate: Callable, timeout: float, what: str, interval: float = 0.5):
        return wait_for(predicate, timeout, what, interval, self.services)

    def alive(self) -> bool:
        return all(s.alive() for s in self.services)

    def tail(self, chars: int = 3000) -> str:
        return "\n".join(s.tail(chars) for s in self.services)

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
