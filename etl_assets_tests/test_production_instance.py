"""The production deployment, run the production way, against the real PostgreSQL server.

A temporary DAGSTER_HOME holds deploy/dagster.production.yaml itself (a symlink to the repo's
file), pointed by DAGSTER_PG_* at a fresh PostgreSQL database for Dagster's storage; the
warehouse is a second fresh database (ETL_ASSETS_WAREHOUSE=postgres) and the landing zone a copy
of the sample. `dagster-webserver -w workspace.yaml` and `dagster-daemon run -w workspace.yaml`
run as separate processes on that instance, with the repo's own workspace.yaml.

Through the webserver's GraphQL API the test stops every sensor and schedule that runs by default,
starts the daemon, then turns on salesforce_backup_sensor. It proves:

- one sensor tick, evaluated by the daemon, adds both backup folders as dynamic partitions and
  requests one run per folder for exactly the objects the folder holds;
- each run goes through the queued run coordinator: QUEUED, then STARTING when the daemon's run
  queue launches it, STARTED, SUCCESS, in that order, and the warehouse tables in PostgreSQL
  hold exactly the rows the CSVs say (newest version of each Id);
- the record is in PostgreSQL: the runs, event log, dynamic partitions, sensor ticks, daemon
  heartbeats and the `warehouse` pool (with the file's default limit) are rows of the Dagster
  storage database, and DAGSTER_HOME holds no SQLite storage.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml
from dagster._core.events import DagsterEventType

from etl_assets.salesforce.partitions import differential_folders
from etl_assets.warehouse.postgres import PostgresWarehouse
from etl_assets_tests.conftest import _free_port
from etl_assets_tests.helpers import (
    REPOSITORY_SELECTOR,
    Service,
    assert_matches_truth,
    folders_in,
    graphql,
    location_loaded,
    print_run_diagnostics,
    stop_default_instigators,
    wait_for_services,
)

REPO = Path(__file__).resolve().parents[1]
PRODUCTION_YAML = REPO / "deploy" / "dagster.production.yaml"
BIN = Path(sys.executable).parent
SENSOR = "salesforce_backup_sensor"
FOLDERS = 2  # two runs through the queue
OBJECTS = ("Task",)  # one warehouse step per run: every process imports the code location (~7 s of CPU)
# QUEUED (submitted to the queued run coordinator), STARTING (dequeued and launched by the daemon),
# STARTED (the run worker is up), SUCCESS.
QUEUE_PATH = [DagsterEventType.RUN_ENQUEUED, DagsterEventType.RUN_STARTING, DagsterEventType.RUN_START,
              DagsterEventType.RUN_SUCCESS]


START_SENSOR = """mutation($selector: SensorSelector!) { startSensor(sensorSelector: $selector) { __typename
  ... on Sensor { sensorState { status } } ... on PythonError { message } } }"""
SENSOR_TICKS = """query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  ... on Sensor { sensorState { status ticks(limit: 10) { status runIds error { message }
    dynamicPartitionsRequestResults { partitionsDefName partitionKeys type } } } } } }"""


def storage_query(database: dict, sql: str, params=None) -> list[tuple]:
    connection = psycopg2.connect(host=database["host"], port=database["port"], user=database["user"],
                                  dbname=database["database"])
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    finally:
        connection.close()


def keep_only(landing_root: Path, folders: list[str], objects: tuple[str, ...]) -> None:
    for folder in folders_in(landing_root):
        if folder not in folders:
            shutil.rmtree(landing_root / "backup" / folder)
            continue
        for directory in (landing_root / "backup" / folder).iterdir():
            if directory.name not in objects:
                shutil.rmtree(directory)


@pytest.mark.slow
def test_the_production_instance_runs_the_sensor_and_queued_runs_on_postgres(
        tmp_path, landing_root, postgres_database, dagster_storage_database, monkeypatch):
    started = time.monotonic()
    folders = folders_in(landing_root)[:FOLDERS]
    keep_only(landing_root, folders, OBJECTS)
    assert all((landing_root / "backup" / f / o).is_dir() for f in folders for o in OBJECTS)

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(PRODUCTION_YAML)  # the repo's file itself, not a copy
    instance_env = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": dagster_storage_database["host"],
        "DAGSTER_PG_PORT": str(dagster_storage_database["port"]),
        "DAGSTER_PG_DB": dagster_storage_database["database"],
        "DAGSTER_PG_USER": dagster_storage_database["user"],
        "DAGSTER_PG_PASSWORD": "",  # trust auth on this machine
    }
    for key, value in instance_env.items():
        monkeypatch.setenv(key, value)  # the test reads the same instance
    env = {key: value for key, value in os.environ.items() if not key.startswith("ETL_ASSETS_")}
    env.update(instance_env)
    env.update({
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ETL_ASSETS_LANDING_ZONE": "local",
        "ETL_ASSETS_LANDING_ROOT": str(landing_root),
        "ETL_ASSETS_WAREHOUSE": "postgres",
        "ETL_ASSETS_PG_HOST": postgres_database["host"],
        "ETL_ASSETS_PG_PORT": str(postgres_database["port"]),
        "ETL_ASSETS_PG_USER": postgres_database["user"],
        "ETL_ASSETS_PG_DATABASE": postgres_database["database"],
        # Nothing in the repo's data/ directory is touched, whatever else might run.
        "ETL_ASSETS_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "ETL_ASSETS_TOTESYS_DUCKDB_PATH": str(tmp_path / "totesys.duckdb"),
    })
    workspace = str(REPO / "workspace.yaml")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/graphql"
    sensor_selector = {**REPOSITORY_SELECTOR, "sensorName": SENSOR}

    services: list[Service] = []
    instance = None
    passed = False
    try:
        services.append(Service("webserver", [str(BIN / "dagster-webserver"), "-w", workspace,
                                              "-h", "127.0.0.1", "-p", str(port)], env, tmp_path))
        wait_for_services(lambda: location_loaded(url), 120, "the webserver to load the code location", services)
        stopped = stop_default_instigators(url)
        assert SENSOR in stopped and "totesys_extract_schedule" in stopped, stopped

        instance = dg.DagsterInstance.from_config(str(home))
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"

        services.append(Service("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], env, tmp_path))
        wanted_daemons = ["SENSOR", "QUEUED_RUN_COORDINATOR", "MONITORING"]
        wait_for_services(lambda: all(s.healthy for s in instance.get_daemon_statuses(wanted_daemons).values()), 120,
                 f"the daemon's {', '.join(wanted_daemons)} heartbeats", services)
        ticks = graphql(url, SENSOR_TICKS, {"selector": sensor_selector})["sensorOrError"]["sensorState"]["ticks"]
        assert ticks == [], "the sensor ticked before it was turned on"

        result = graphql(url, START_SENSOR, {"selector": sensor_selector})["startSensor"]
        assert result["sensorState"]["status"] == "RUNNING", result

        def finished_tick():
            state = graphql(url, SENSOR_TICKS, {"selector": sensor_selector})["sensorOrError"]["sensorState"]
            done = [t for t in state["ticks"] if t["status"] != "STARTED"]
            return done[-1] if done else None  # ticks are newest first; the first one is last
        tick = wait_for_services(finished_tick, 90, f"a finished tick of {SENSOR}", services)
        assert tick["status"] == "SUCCESS", tick
        assert tick["dynamicPartitionsRequestResults"] == [
            {"partitionsDefName": differential_folders.name, "partitionKeys": folders, "type": "ADD_PARTITIONS"}]
        assert set(instance.get_dynamic_partitions(differential_folders.name)) == set(folders)
        run_ids = tick["runIds"]
        assert len(run_ids) == FOLDERS, tick

        def all_finished():
            records = instance.get_run_records(dg.RunsFilter(run_ids=run_ids))
            return records if len(records) == FOLDERS and all(r.dagster_run.is_finished for r in records) else None
        records = wait_for_services(all_finished, 180, "the sensor's runs to finish", services, interval=1)
        runs = {r.dagster_run.tags["salesforce/folder"]: r.dagster_run for r in records}
        assert sorted(runs) == folders
        for folder, run in runs.items():
            assert run.status == dg.DagsterRunStatus.SUCCESS, f"{folder}: {run.status}"
            assert run.tags["dagster/sensor_name"] == SENSOR
            assert run.tags["salesforce/objects"] == ",".join(sorted(OBJECTS))
            path = [e.dagster_event.event_type for e in instance.all_logs(run.run_id, of_type=set(QUEUE_PATH))]
            assert path == QUEUE_PATH, f"{folder}: {path}"
            materialized = {(e.dagster_event.asset_key.to_user_string(), e.dagster_event.partition)
                            for e in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)}
            assert materialized == {(f"salesforce/{o.lower()}", folder) for o in OBJECTS}

        launched = re.findall(r"QueuedRunCoordinatorDaemon - \S*INFO\S* - Launched (\d+) runs?", services[1].tail(10**7))
        assert sum(map(int, launched)) == FOLDERS, f"the daemon's run queue launched {launched} run(s)"

        warehouse = PostgresWarehouse(host=postgres_database["host"], port=postgres_database["port"],
                                      user=postgres_database["user"], database=postgres_database["database"])
        for api_name in OBJECTS:
            assert assert_matches_truth(warehouse, landing_root, api_name, folders) > 0

        # Dagster's own record is rows in the PostgreSQL storage database, not files in DAGSTER_HOME.
        assert sorted(storage_query(dagster_storage_database, "SELECT run_id, status FROM runs")) == sorted(
            (run_id, "SUCCESS") for run_id in run_ids)
        [(materializations,)] = storage_query(
            dagster_storage_database, "SELECT COUNT(*) FROM event_logs WHERE run_id = ANY(%s) "
            "AND dagster_event_type = 'ASSET_MATERIALIZATION'", [run_ids])
        assert materializations == FOLDERS * len(OBJECTS)
        assert sorted(storage_query(dagster_storage_database, "SELECT partition FROM dynamic_partitions "
                                    "WHERE partitions_def_name = %s", [differential_folders.name])) == [
            (f,) for f in folders]
        assert storage_query(dagster_storage_database,
                             "SELECT COUNT(*) FROM job_ticks WHERE type = 'SENSOR' AND status = 'SUCCESS'")[0][0] >= 1
        assert storage_query(dagster_storage_database, "SELECT COUNT(*) FROM daemon_heartbeats")[0][0] >= 3
        pool_limit = yaml.safe_load(PRODUCTION_YAML.read_text())["concurrency"]["pools"]["default_limit"]
        assert storage_query(dagster_storage_database,
                             'SELECT concurrency_key, "limit" FROM concurrency_limits') == [("warehouse", pool_limit)]
        sqlite_files = [p.name for p in home.rglob("*") if p.suffix in (".db", ".sqlite")]
        assert sqlite_files == [], f"SQLite storage in DAGSTER_HOME: {sqlite_files}"
        for service in services:  # the instance file's keys are current: nothing deprecated is reported
            assert "deprecat" not in service.tail(10**7).lower(), service.tail()
        passed = True
        print(f"production instance test: {time.monotonic() - started:.1f}s")
    finally:
        for service in reversed(services):
            service.stop()
        if not passed:
            print_run_diagnostics(services, instance)
        if instance is not None:
            instance.dispose()
