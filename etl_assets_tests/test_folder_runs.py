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

from pathlib import Path

import dagster as dg
import pytest

from etl_assets.execution import (
    MAX_STEP_PROCESSES,
    WAREHOUSE_POOL,
    forkserver_executor,
    step_processes,
)
from etl_assets.salesforce.assets import (
    NO_REJECTED_ROWS,
    NO_SCHEMA_DRIFT,
    NO_TRUNCATED_VALUES,
)
from etl_assets.settings import default_executor
from etl_assets_tests import live
from benchmarks.folder_run import (
    add_partitions,
    asset_paths,
    instance_yaml,
    launch_folder_run,
    step_summary,
    write_folders,
)
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets_tests.helpers import events, stack

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


def test_the_forkserver_executor_runs_as_many_steps_as_the_warehouse_pool_has_slots(tmp_path):
    for pool_limit, processes in ((1, 1), (3, 3), (50, MAX_STEP_PROCESSES)):
        home = tmp_path / str(pool_limit)
        home.mkdir()
        (home / "dagster.yaml").write_text(instance_yaml(pool_limit))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert step_processes(instance) == processes
            # A limit set on the instance (`dagster instance concurrency set warehouse N`) wins.
            instance.event_log_storage.set_concurrency_slots(WAREHOUSE_POOL, 2)
            assert step_processes(instance) == 2


def folder_run(tmp_path: Path, warehouse: dict, pool_limit: int, objects: list[str], timeout: float):
    """A webserver and daemon on a local instance with the pool at `pool_limit` (deploy/dagster.local.yaml),
    one run of FOLDER for `objects` submitted over GraphQL; the run's record (GraphQL) and its instance."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(pool_limit))
    with stack(home, live.environment(landing=tmp_path / "landing", **warehouse), tmp_path) as dagster:
        dagster.start(timeout=300)
        add_partitions(dagster.url, [FOLDER])
        run_id = launch_folder_run(dagster.url, FOLDER, asset_paths(objects))
        run = live.wait_run(dagster.url, run_id, timeout, dagster.services)
    return run, dg.DagsterInstance.from_config(str(home))


@pytest.mark.slow
def test_a_refused_file_fails_only_its_object_in_an_in_process_folder_run(tmp_path):
    write_folders(tmp_path / "landing", [FOLDER], LOADED, 100)
    refused = tmp_path / "landing" / "backup" / FOLDER / REFUSED / "contact_part1.csv"
    refused.parent.mkdir(parents=True)
    refused.write_text("")  # an empty file has no header: the reader refuses it
    duckdb_path = tmp_path / "warehouse.duckdb"
    run, instance = folder_run(tmp_path, live.duckdb_warehouse(duckdb_path), 1, [*LOADED, REFUSED], 600)
    run_id = run["runId"]
    steps = {s["stepKey"]: s["status"] for s in run["stepStats"]}
    assert run["status"] == "FAILURE", run
    assert {k for k, v in steps.items() if v == "SUCCESS"} == {f"salesforce__{n.lower()}" for n in LOADED}, steps
    assert steps[f"salesforce__{REFUSED.lower()}"] == "FAILURE"
    with instance:
        # Every step ran in the run's own process (the in-process executor), one after another.
        engine = [e.message or "" for e in events(instance, run_id, dg.DagsterEventType.ENGINE_EVENT)]
        assert any("in process" in m.lower() for m in engine), engine
        materialized = {tuple(e.asset_key.path) for e in
                        events(instance, run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)}
        assert materialized == {("salesforce", n.lower()) for n in LOADED}
        evaluations = events(instance, run_id, dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        for name in LOADED:
            own = {e.event_specific_data.check_name for e in evaluations
                   if e.event_specific_data.asset_key == dg.AssetKey(["salesforce", name.lower()])}
            assert own == CHECKS, (name, own)
        failures = events(instance, run_id, dg.DagsterEventType.STEP_FAILURE)
        assert [e.step_key for e in failures] == [f"salesforce__{REFUSED.lower()}"]  # once: not retried
        assert not events(instance, run_id, dg.DagsterEventType.STEP_UP_FOR_RETRY)
    warehouse = DuckDBWarehouse(path=str(duckdb_path))
    for name in LOADED:
        assert len(warehouse.read_table("salesforce", name.lower())) > 0


@pytest.mark.slow
def test_objects_of_a_folder_load_in_parallel_on_postgres(tmp_path, postgres_server, postgres_database):
    objects = ["Account", "Contact", "Case", "Lead", "Opportunity", "User"]
    write_folders(tmp_path / "landing", [FOLDER], objects, 20_000)  # long enough steps to overlap
    run, instance = folder_run(tmp_path, live.postgres_warehouse(postgres_database), 3, objects, 900)
    assert run["status"] == "SUCCESS", run
    summary = step_summary(run)
    assert summary["steps_succeeded"] == len(objects)
    # At most the pool's 3 at once, and more than one.
    assert 2 <= summary["parallel_peak"] <= 3, summary
    with instance:
        engine = [e.message or "" for e in events(instance, run["runId"], dg.DagsterEventType.ENGINE_EVENT)]
        assert any("multiprocess executor" in m for m in engine), engine
        # The executor launched as many steps as the pool has slots: none waited on the pool (a step
        # that does re-checks its claim only after 1 s or more, leaving the slot idle meanwhile).
        assert not [m for m in engine if "blocked by limit for pool" in m], engine
        pids = {e.event_specific_data.metadata["pid"].value for e in
                events(instance, run["runId"], dg.DagsterEventType.STEP_WORKER_STARTED)
                if e.event_specific_data and e.event_specific_data.metadata.get("pid")}
        assert pids == set() or len(pids) == len(objects)
