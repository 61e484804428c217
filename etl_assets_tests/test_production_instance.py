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

import re
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.events import DagsterEventType

from etl_assets.salesforce.partitions import differential_folders
from etl_assets_tests import live
from etl_assets.warehouse.postgres import PostgresWarehouse
from etl_assets_tests.helpers import (
    PRODUCTION_YAML,
    assert_matches_truth,
    events,
    finished_runs,
    folders_in,
    pg_rows,
    production_deployment,
    stack,
)

SENSOR = "salesforce_backup_sensor"
FOLDERS = 2  # two runs through the queue
OBJECTS = ("Task",)  # one warehouse step per run: every process imports the code location (~7 s of CPU)
# QUEUED (submitted to the queued run coordinator), STARTING (dequeued and launched by the daemon),
# STARTED (the run worker is up), SUCCESS.
QUEUE_PATH = [DagsterEventType.RUN_ENQUEUED, DagsterEventType.RUN_STARTING, DagsterEventType.RUN_START,
              DagsterEventType.RUN_SUCCESS]
DAEMONS = ("SENSOR", "QUEUED_RUN_COORDINATOR", "MONITORING")


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
    folders = folders_in(landing_root)[:FOLDERS]
    keep_only(landing_root, folders, OBJECTS)
    assert all((landing_root / "backup" / f / o).is_dir() for f in folders for o in OBJECTS)

    home, env = production_deployment(tmp_path, landing_root, dagster_storage_database, postgres_database,
                                       monkeypatch)
    with stack(home, env, tmp_path) as dagster:
        dagster.start_webserver(timeout=120)
        assert SENSOR in dagster.stopped and "totesys_extract_schedule" in dagster.stopped, dagster.stopped
        with dg.DagsterInstance.from_config(str(home)) as instance:  # after the webserver: it creates the storage
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"

            dagster.start_daemon(timeout=120, daemons=DAEMONS)
            assert live.sensor_state(dagster.url, SENSOR)["ticks"] == [], "the sensor ticked before it was turned on"
            assert live.start_sensor(dagster.url, SENSOR) == "RUNNING"

            tick = dagster.wait(lambda: live.first_finished_tick(dagster.url, SENSOR), 90, f"a finished tick of {SENSOR}")
            assert tick["status"] == "SUCCESS", tick
            assert tick["dynamicPartitionsRequestResults"] == [
                {"partitionsDefName": differential_folders.name, "partitionKeys": folders, "type": "ADD_PARTITIONS"}]
            assert set(instance.get_dynamic_partitions(differential_folders.name)) == set(folders)
            run_ids = tick["runIds"]
            assert len(run_ids) == FOLDERS, tick

            records = dagster.wait(lambda: finished_runs(instance, run_ids, FOLDERS), 180, "the sensor's runs to finish", 1)
            runs = {r.dagster_run.tags["salesforce/folder"]: r.dagster_run for r in records}
            assert sorted(runs) == folders
            for folder, run in runs.items():
                assert run.status == dg.DagsterRunStatus.SUCCESS, f"{folder}: {run.status}"
                assert run.tags["dagster/sensor_name"] == SENSOR
                assert run.tags["salesforce/objects"] == ",".join(sorted(OBJECTS))
                path = [e.event_type for e in events(instance, run.run_id, set(QUEUE_PATH))]
                assert path == QUEUE_PATH, f"{folder}: {path}"
                materialized = {(e.asset_key.to_user_string(), e.partition)
                                for e in events(instance, run.run_id, DagsterEventType.ASSET_MATERIALIZATION)}
                assert materialized == {(f"salesforce/{o.lower()}", folder) for o in OBJECTS}

            daemon_log = dagster.services[1].log_text()
            launched = re.findall(r"QueuedRunCoordinatorDaemon - \S*INFO\S* - Launched (\d+) runs?", daemon_log)
            assert sum(map(int, launched)) == FOLDERS, f"the daemon's run queue launched {launched} run(s)"

            warehouse = PostgresWarehouse(host=postgres_database["host"], port=postgres_database["port"],
                                          user=postgres_database["user"], database=postgres_database["database"])
            for api_name in OBJECTS:
                assert assert_matches_truth(warehouse, landing_root, api_name, folders) > 0

            # Dagster's own record is rows in the PostgreSQL storage database, not files in DAGSTER_HOME.
            assert sorted(pg_rows(dagster_storage_database, "SELECT run_id, status FROM runs")) == sorted(
                (run_id, "SUCCESS") for run_id in run_ids)
            [(materializations,)] = pg_rows(
                dagster_storage_database, "SELECT COUNT(*) FROM event_logs WHERE run_id = ANY(%s) "
                "AND dagster_event_type = 'ASSET_MATERIALIZATION'", [run_ids])
            assert materializations == FOLDERS * len(OBJECTS)
            assert sorted(pg_rows(dagster_storage_database, "SELECT partition FROM dynamic_partitions "
                                        "WHERE partitions_def_name = %s", [differential_folders.name])) == [
                (f,) for f in folders]
            assert pg_rows(dagster_storage_database,
                                 "SELECT COUNT(*) FROM job_ticks WHERE type = 'SENSOR' AND status = 'SUCCESS'")[0][0] >= 1
            assert pg_rows(dagster_storage_database, "SELECT COUNT(*) FROM daemon_heartbeats")[0][0] >= 3
            pool_limit = yaml.safe_load(PRODUCTION_YAML.read_text())["concurrency"]["pools"]["default_limit"]
            assert pg_rows(dagster_storage_database,
                                 'SELECT concurrency_key, "limit" FROM concurrency_limits') == [("warehouse", pool_limit)]
            sqlite_files = [p.name for p in home.rglob("*") if p.suffix in (".db", ".sqlite")]
            assert sqlite_files == [], f"SQLite storage in DAGSTER_HOME: {sqlite_files}"
            for service in dagster.services:  # the instance file's keys are current: nothing deprecated is reported
                assert "deprecat" not in service.log_text().lower(), service.tail()
