"""Issue 17 (1): a folder run through the daemon keeps one asset per object, and its speed comes
from Dagster's executors, not from merging objects.

- The code location's executor follows the warehouse: in_process on the embedded DuckDB (one
  writer, so steps would wait for each other anyway; the code location is loaded once per run),
  Dagster's multiprocess executor with `forkserver` on PostgreSQL (steps in parallel, forked from a
  process that has imported the code location).
- On DuckDB, through a real webserver and daemon (runs submitted over GraphQL, as the UI does): a
  folder whose Contact file is refused still loads every other object, each with its own
  materialization and its three check results, and the refused one fails alone without retries.
- On PostgreSQL with the pool at 3, the steps of one folder run at the same time in separate
  processes forked from the run's fork server.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dagster as dg
import pytest

from etl_assets.execution import default_executor, forkserver_executor
from etl_assets.salesforce.assets import (
    NO_REJECTED_ROWS,
    NO_SCHEMA_DRIFT,
    NO_TRUNCATED_VALUES,
)
from etl_assets.tools.bench.folder_run import (
    add_partitions,
    asset_paths,
    instance_yaml,
    launch_folder_run,
    step_summary,
    wait_run,
    write_folders,
)
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets_tests.conftest import _free_port
from etl_assets_tests.helpers import (
    REPO,
    Service,
    location_loaded,
    print_run_diagnostics,
    stop_default_instigators,
    wait_for_services,
)

BIN = Path(sys.executable).parent
FOLDER = "20240601_Differential"
LOADED = ["Account", "Case", "Lead"]
REFUSED = "Contact"
CHECKS = {NO_SCHEMA_DRIFT, NO_REJECTED_ROWS, NO_TRUNCATED_VALUES}


def test_executor_follows_the_warehouse():
    assert default_executor({}) is dg.in_process_executor
    assert default_executor({"ETL_ASSETS_WAREHOUSE": "duckdb"}) is dg.in_process_executor
    assert default_executor({"ETL_ASSETS_WAREHOUSE": "postgres"}) is forkserver_executor
    assert default_executor({"ETL_ASSETS_WAREHOUSE": "redshift"}) is forkserver_executor
    # An explicit choice wins; `multiprocess` is Dagster's own default (spawn).
    assert default_executor({"ETL_ASSETS_WAREHOUSE": "postgres", "ETL_ASSETS_EXECUTOR": "in_process"}) \
        is dg.in_process_executor
    assert default_executor({"ETL_ASSETS_EXECUTOR": "multiprocess"}) is None


def _env(tmp_path: Path, warehouse: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_ASSETS_", "DAGSTER_"))}
    env.update({"ETL_ASSETS_LANDING_ZONE": "local", "ETL_ASSETS_LANDING_ROOT": str(tmp_path / "landing"),
                "DAGSTER_HOME": str(tmp_path / "home"), "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
                **warehouse})
    return env


def _start(tmp_path: Path, env: dict, pool_limit: int) -> tuple[list[Service], str]:
    """Webserver first (it creates the SQLite instance), then the daemon."""
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_text(instance_yaml(pool_limit))
    port = _free_port()
    url = f"http://127.0.0.1:{port}/graphql"
    workspace = str(REPO / "workspace.yaml")
    services = [Service("webserver", [str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1",
                                      "-p", str(port)], env, tmp_path)]
    wait_for_services(lambda: location_loaded(url), 300, "the webserver to load the code location", services)
    stop_default_instigators(url)
    services.append(Service("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], env, tmp_path))
    return services, url


def _events(instance: dg.DagsterInstance, run_id: str, event_type) -> list:
    return [e.dagster_event for e in instance.all_logs(run_id, of_type=event_type)]


@pytest.mark.slow
def test_a_refused_file_fails_only_its_object_in_an_in_process_folder_run(tmp_path):
    write_folders(tmp_path / "landing", [FOLDER], LOADED, 100)
    refused = tmp_path / "landing" / "backup" / FOLDER / REFUSED / "contact_part1.csv"
    refused.parent.mkdir(parents=True)
    refused.write_text("")  # an empty file has no header: the reader refuses it
    duckdb_path = tmp_path / "warehouse.duckdb"
    env = _env(tmp_path, {"ETL_ASSETS_WAREHOUSE": "duckdb", "ETL_ASSETS_DUCKDB_PATH": str(duckdb_path)})
    services, url = _start(tmp_path, env, pool_limit=1)
    try:
        add_partitions(url, [FOLDER])
        run_id = launch_folder_run(url, FOLDER, asset_paths([*LOADED, REFUSED]))
        run = wait_run(url, run_id, 600, alive=lambda: all(s.alive() for s in services))
        steps = {s["stepKey"]: s["status"] for s in run["stepStats"]}
        assert run["status"] == "FAILURE", run
        assert {k for k, v in steps.items() if v == "SUCCESS"} == {f"salesforce__{n.lower()}" for n in LOADED}, steps
        assert steps[f"salesforce__{REFUSED.lower()}"] == "FAILURE"
        with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
            # Every step ran in the run's own process (the in-process executor), one after another.
            engine = [e.message or "" for e in _events(instance, run_id, dg.DagsterEventType.ENGINE_EVENT)]
            assert any("in process" in m.lower() for m in engine), engine
            materialized = {tuple(e.asset_key.path) for e in
                            _events(instance, run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)}
            assert materialized == {("salesforce", n.lower()) for n in LOADED}
            evaluations = _events(instance, run_id, dg.DagsterEventType.ASSET_CHECK_EVALUATION)
            for name in LOADED:
                own = {e.event_specific_data.check_name for e in evaluations
                       if e.event_specific_data.asset_key == dg.AssetKey(["salesforce", name.lower()])}
                assert own == CHECKS, (name, own)
            failures = _events(instance, run_id, dg.DagsterEventType.STEP_FAILURE)
            assert [e.step_key for e in failures] == [f"salesforce__{REFUSED.lower()}"]  # once: not retried
            assert not _events(instance, run_id, dg.DagsterEventType.STEP_UP_FOR_RETRY)
    except BaseException:
        with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
            print_run_diagnostics(services, instance)
        raise
    finally:
        for service in services:
            service.stop()
    warehouse = DuckDBWarehouse(path=str(duckdb_path))
    for name in LOADED:
        assert len(warehouse.read_table("salesforce", name.lower())) > 0


@pytest.mark.slow
def test_objects_of_a_folder_load_in_parallel_on_postgres(tmp_path, postgres_server, postgres_database):
    objects = ["Account", "Contact", "Case", "Lead", "Opportunity", "User"]
    write_folders(tmp_path / "landing", [FOLDER], objects, 20_000)  # long enough steps to overlap
    env = _env(tmp_path, {"ETL_ASSETS_WAREHOUSE": "postgres", "ETL_ASSETS_PG_HOST": postgres_database["host"],
                          "ETL_ASSETS_PG_PORT": str(postgres_database["port"]),
                          "ETL_ASSETS_PG_USER": postgres_database["user"],
                          "ETL_ASSETS_PG_DATABASE": postgres_database["database"]})
    services, url = _start(tmp_path, env, pool_limit=3)
    try:
        add_partitions(url, [FOLDER])
        run_id = launch_folder_run(url, FOLDER, asset_paths(objects))
        run = wait_run(url, run_id, 900, alive=lambda: all(s.alive() for s in services))
        assert run["status"] == "SUCCESS", run
        summary = step_summary(run)
        assert summary["steps_succeeded"] == len(objects)
        # At most the pool's 3 at once (and the executor's CPU count), and more than one.
        assert 2 <= summary["parallel_peak"] <= 3, summary
        with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
            engine = [e.message or "" for e in _events(instance, run_id, dg.DagsterEventType.ENGINE_EVENT)]
            assert any("multiprocess executor" in m for m in engine), engine
            pids = {e.event_specific_data.metadata["pid"].value for e in
                    _events(instance, run_id, dg.DagsterEventType.STEP_WORKER_STARTED)
                    if e.event_specific_data and e.event_specific_data.metadata.get("pid")}
            assert pids == set() or len(pids) == len(objects)
    except BaseException:
        with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
            print_run_diagnostics(services, instance)
        raise
    finally:
        for service in services:
            service.stop()
