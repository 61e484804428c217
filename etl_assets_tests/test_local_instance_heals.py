"""Issue 17 (3): a local instance heals itself after `dg dev` is killed hard mid-run.

`dg dev` on a temporary DAGSTER_HOME holding deploy/dagster.local.yaml (as `make dev` copies it)
starts a run whose Task step is mid-step when the whole dev server (webserver, daemon, code server, run
worker: one process group) gets SIGKILL: the test holds the DuckDB warehouse's writer lock, so the step,
holding the pool slot, waits for it, and is killed once its run log says so (an event, not a time). The
run is left STARTED, holding the `warehouse` pool's only slot. A new `dg dev` on the same instance must
fail that run (run monitoring, with LocalRunLauncher's worker health check), free its slot, and run a
new folder to success. Asserted on run states and events, never on elapsed time.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from etl_assets_tests import live
from benchmarks.folder_run import (
    add_partitions,
    asset_paths,
    launch_folder_run,
    write_folders,
)
from etl_assets.samples.salesforce import write_object_csv
from etl_assets_tests.helpers import LOCAL_YAML, diagnosed

STUCK, FRESH = "20240601_Differential", "20240602_Differential"
WAITING = "another process holds its writer lock"  # the step's run log while the test holds the warehouse


def dev_server(name: str, env: dict, log_dir: Path) -> live.Server:
    """`dg dev` (webserver, daemon, code server: one process group) with every sensor and schedule stopped."""
    server = live.Server(name, env, log_dir, kind="dg")
    server.wait_loaded(300)
    live.stop_instigators(server.url)
    return server


def run_status(url: str, run_id: str) -> str:
    return live.run_record(url, run_id).get("status", "")


def step_running(url: str, run_id: str) -> bool:
    return any(s["status"] == "IN_PROGRESS" for s in live.run_record(url, run_id).get("stepStats") or [])


def logged(home: Path, run_id: str, text: str) -> bool:
    """Whether the run's log holds `text` yet (read from the instance's storage, as the UI reads it)."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return any(text in (entry.user_message or "") for entry in instance.all_logs(run_id))


@pytest.mark.slow
def test_a_dev_server_killed_mid_run_leaves_no_run_blocking_the_queue(tmp_path):
    home, landing, warehouse = tmp_path / "home", tmp_path / "landing", tmp_path / "warehouse.duckdb"
    home.mkdir()
    (home / "dagster.yaml").write_text(LOCAL_YAML.read_text())
    landing.mkdir()
    env = live.environment(landing=landing, home=home, **live.duckdb_warehouse(warehouse))
    with diagnosed(home) as services:
        first = dev_server("dev1", env, tmp_path)
        services.append(first)
        # Landed once the sensors are stopped: only the runs launched here load them.
        write_object_csv(landing / "backup" / STUCK / "Task" / "task_part1.csv", "Task", 1000)
        write_folders(landing, [FRESH], ["Account", "Contact"], 100)
        add_partitions(first.url, [STUCK, FRESH])
        lock = duckdb.connect(str(warehouse))  # the warehouse's writer lock, held by this process
        try:
            stuck = launch_folder_run(first.url, STUCK, asset_paths(["Task"]))
            live.wait_for(lambda: step_running(first.url, stuck) and logged(home, stuck, WAITING), 300,
                          "the Task step to wait for the warehouse", 0.25, [first])
            first.kill()  # the laptop's processes gone, no shutdown of any kind, mid-step
        finally:
            lock.close()
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert instance.get_run_by_id(stuck).status == dg.DagsterRunStatus.STARTED  # what used to stay forever

        second = dev_server("dev2", env, tmp_path)
        services.append(second)
        fresh = launch_folder_run(second.url, FRESH, asset_paths(["Account", "Contact"]))
        # The new run needs the pool slot the killed run held: it can only finish once monitoring has
        # failed the killed run and freed the slot.
        assert live.wait_run(second.url, fresh, 600, [second])["status"] == "SUCCESS"
        assert run_status(second.url, stuck) == "FAILURE"
        with dg.DagsterInstance.from_config(str(home)) as instance:
            failure = next(e for e in instance.all_logs(stuck) if e.dagster_event
                           and e.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE)
            assert "run worker process" in (failure.dagster_event.message or failure.user_message)
            assert instance.event_log_storage.get_concurrency_info("warehouse").claimed_slots == []
