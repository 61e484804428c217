"""Running Salesforce folders through Dagster, and the expected tables computed independently."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import pandas as pd

from etl_assets.landing.zone import LandingZone
from etl_assets.salesforce.assets import salesforce_object_assets
from etl_assets.salesforce.catalog import load_catalog
from etl_assets.salesforce.partitions import differential_folders
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.io_manager import WarehouseIOManager

CATALOG = load_catalog()
REPO = Path(__file__).resolve().parents[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy (returned), or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def resources(landing_zone: LandingZone, warehouse: Warehouse) -> dict:
    return {"landing_zone": landing_zone, "warehouse": warehouse,
            "warehouse_io_manager": WarehouseIOManager(warehouse=warehouse)}


def folders_in(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "backup").iterdir() if p.is_dir())


def materialize_folders(folders, resource_defs, instance=None, objects=None, raise_on_error=True, assets=None):
    """Materialize every selected object asset for each folder, in the given order. `assets`: object
    assets built from another catalog (default: the code location's)."""
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(differential_folders.name, list(folders))
    wanted = {o.lower() for o in objects} if objects else None
    assets = [a for a in (assets or salesforce_object_assets) if wanted is None or a.key.path[-1] in wanted]
    results = []
    for folder in folders:
        result = dg.materialize(
            assets, partition_key=folder, resources=resource_defs, instance=instance, raise_on_error=raise_on_error
        )
        results.append(result)
    return results


def _typed(value: str, type_: str):
    if value == "":
        return "" if type_ == "string" else None
    if type_ == "boolean":
        return 1 if value.lower() == "true" else 0
    if type_ == "datetime":
        return pd.Timestamp(value).tz_convert("UTC").to_pydatetime()
    if type_ == "date":
        return dt.date.fromisoformat(value)
    if type_ == "integer":
        return int(value)
    if type_ == "float":
        return float(value)
    return value


def expected_table(root: Path, api_name: str, folders: list[str] | None = None) -> dict[str, dict]:
    """Id -> typed row, newest SystemModstamp winning (then the later folder), read with the csv module."""
    obj = CATALOG[api_name]
    types = {c.api_name: c.type.value for c in obj.columns}
    best: dict[str, tuple] = {}
    for folder in folders or folders_in(root):
        directory = root / "backup" / folder / api_name
        for path in sorted(directory.glob("*.csv")) if directory.is_dir() else []:
            with open(path, newline="", encoding="utf-8") as f:
                for record in csv.DictReader(f):
                    row = {k.lower(): _typed(v, types.get(k, "string")) for k, v in record.items()}
                    rank = (row["systemmodstamp"], folder, path.name)
                    if record["Id"] not in best or rank > best[record["Id"]][0]:
                        best[record["Id"]] = (rank, row)
    return {key: row for key, (_, row) in best.items()}


def _normalize(value):
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)
    if hasattr(value, "item"):
        return value.item()
    return value


def warehouse_rows(warehouse: Warehouse, table: str) -> dict[str, dict]:
    frame = warehouse.read_table("salesforce", table)
    return {
        record["id"]: {k: _normalize(v) for k, v in record.items()}
        for record in frame.astype(object).to_dict("records")
    }


def assert_matches_truth(warehouse: Warehouse, root: Path, api_name: str, folders=None) -> int:
    expected = expected_table(root, api_name, folders)
    actual = warehouse_rows(warehouse, api_name.lower())
    assert set(actual) == set(expected), f"{api_name}: key sets differ"
    for key, row in expected.items():
        got = actual[key]
        for column, value in row.items():
            want = _normalize(value)
            if isinstance(want, dt.date) and not isinstance(want, dt.datetime) and isinstance(got[column], dt.datetime):
                got_value = got[column].date()
            else:
                got_value = got[column]
            assert got_value == want, f"{api_name} {key}.{column}: {got_value!r} != {want!r}"
    return len(expected)


def _canonical(value) -> str:
    """One spelling per value whichever engine or driver returned it."""
    value = _normalize(value)
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0) and value.tzinfo in (None, dt.timezone.utc):
            return value.date().isoformat()  # DuckDB hands DATE columns to pandas as midnight timestamps
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # pandas turns nullable integers into floats
    return repr(value)


def table_digest(warehouse: Warehouse, table: str, schema: str = "salesforce") -> list[tuple]:
    """Every row except the load timestamp, sorted: equal digests mean equal tables, on any engine."""
    frame = warehouse.read_table(schema, table).drop(columns=["_loaded_at"], errors="ignore")
    frame = frame[sorted(frame.columns)]  # an ALTER-added column sits last; compare by name
    frame = frame.astype(object).where(frame.notna(), None)
    return sorted(tuple(map(_canonical, row)) for row in frame.itertuples(index=False))


# --- Dagster's own processes (webserver, daemon) on a temporary instance ---------------------------

def _default_sigint() -> None:
    # Started from a script, Dagster's CLIs inherit SIGINT ignored; give them the default back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Service:
    """A long-running Dagster process in its own process group (its code servers and run workers
    are its children, in the same group), logging to a file."""

    def __init__(self, name: str, command: list[str], env: dict, log_dir: Path, cwd: Path = REPO):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True, preexec_fn=_default_sigint)

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, chars: int = 6000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"----- {self.name} (exit {self.process.poll()}) {self.log_path} -----\n{text[-chars:]}"

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL to whatever is left of it (a run worker)."""
        for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=grace)
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
            break
        self._log.close()


def wait_for_services(predicate, timeout: float, what: str, services: list[Service], interval: float = 0.5):
    """wait_for, failing at once (naming it) when one of the services has exited."""
    def check():
        for service in services:
            if not service.alive():
                raise AssertionError(f"{service.name} exited while waiting for {what}")
        return predicate()
    return wait_for(check, timeout, what, interval)


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.load(response)
    assert not payload.get("errors"), payload["errors"]
    return payload["data"]


LOCATION, REPOSITORY = "etl_assets", "__repository__"
REPOSITORY_SELECTOR = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
_LOCATION_STATUS = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
_INSTIGATORS = """query($repo: RepositorySelector!) {
  sensorsOrError(repositorySelector: $repo) { ... on Sensors { results { id name sensorState { status } } } }
  schedulesOrError(repositorySelector: $repo) { ... on Schedules { results { id name scheduleState { status } } } }
}"""
_STOP_SENSOR = """mutation($id: String) { stopSensor(id: $id) { __typename
  ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }"""
_STOP_SCHEDULE = """mutation($id: String) { stopRunningSchedule(id: $id) { __typename
  ... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } } }"""


def location_loaded(url: str) -> bool:
    """Whether the webserver has loaded the code location (fails if it could not)."""
    try:
        entries = graphql(url, _LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
    except (OSError, urllib.error.URLError):
        return False
    status = {e["name"]: (e["locationOrLoadError"] or {}).get("__typename") for e in entries}
    assert status.get(LOCATION) != "PythonError", f"the code location failed to load: {entries}"
    return status.get(LOCATION) == "RepositoryLocation"


def stop_default_instigators(url: str, keep: tuple[str, ...] = ()) -> list[str]:
    """Stop every running sensor and schedule except `keep`, so nothing else ticks in a test."""
    data = graphql(url, _INSTIGATORS, {"repo": REPOSITORY_SELECTOR})
    stopped = []
    for sensor in data["sensorsOrError"]["results"]:
        if sensor["sensorState"]["status"] == "RUNNING" and sensor["name"] not in keep:
            result = graphql(url, _STOP_SENSOR, {"id": sensor["id"]})["stopSensor"]
            assert result["instigationState"]["status"] == "STOPPED", result
            stopped.append(sensor["name"])
    for schedule in data["schedulesOrError"]["results"]:
        if schedule["scheduleState"]["status"] == "RUNNING" and schedule["name"] not in keep:
            result = graphql(url, _STOP_SCHEDULE, {"id": schedule["id"]})["stopRunningSchedule"]
            assert result["scheduleState"]["status"] == "STOPPED", result
            stopped.append(schedule["name"])
    return stopped


def print_run_diagnostics(services: list[Service], instance: dg.DagsterInstance | None) -> None:
    """What a CI failure needs: each process's log, and every run's status and failures."""
    from dagster._core.events import DagsterEventType

    for service in services:
        print(service.tail())
    if instance is None:
        return
    try:
        for record in instance.get_run_records():
            run = record.dagster_run
            print(f"run {run.run_id} {run.status.value} tags={dict(run.tags)}")
            for entry in instance.all_logs(run.run_id):
                event = entry.dagster_event
                if event and (event.is_failure or event.event_type == DagsterEventType.ENGINE_EVENT):
                    print(f"  {event.event_type_value} {event.step_key or ''}: {event.message or entry.user_message}")
    except Exception as error:  # diagnostics must not hide the original failure
        print(f"(could not read runs: {error!r})")
