"""Issue 17 (3): a local instance heals itself after `dg dev` is killed hard mid-run.

`dg dev` on a temporary DAGSTER_HOME holding deploy/dagster.local.yaml (as `make dev` copies it)
starts a run whose Task object is large enough to be mid-step when the whole dev server (webserver,
daemon, code server, run worker: one process group) gets SIGKILL. The run is left STARTED, holding
the `warehouse` pool's only slot. A new `dg dev` on the same instance must fail that run (run
monitoring, with LocalRunLauncher's worker health check), free its slot, and run a new folder to
success. Asserted on run states and events, never on elapsed time.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import dagster as dg
import pytest

from etl_assets.tools.bench.folder_run import (
    add_partitions,
    asset_paths,
    launch_folder_run,
    run_record,
    write_folders,
)
from etl_assets.tools.salesforce_sample import write_object_csv
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
LOCAL_YAML = REPO / "deploy" / "dagster.local.yaml"
BIG, SMALL = "20240601_Differential", "20240602_Differential"
BIG_ROWS = 400_000  # enough for the Task step to be running when the server is killed


def dev_server(name: str, home: Path, env: dict, tmp_path: Path) -> tuple[Service, str]:
    port = _free_port()
    service = Service(name, [str(BIN / "dg"), "dev", "--host", "127.0.0.1", "--port", str(port)],
                      {**env, "DAGSTER_HOME": str(home)}, tmp_path)
    url = f"http://127.0.0.1:{port}/graphql"
    wait_for_services(lambda: location_loaded(url), 300, f"{name} to load the code location", [service])
    stop_default_instigators(url)
    return service, url


def run_status(url: str, run_id: str) -> str:
    return run_record(url, run_id).get("status", "")


def step_running(url: str, run_id: str) -> bool:
    return any(s["status"] == "IN_PROGRESS" for s in run_record(url, run_id).get("stepStats") or [])


@pytest.mark.slow
def test_a_dev_server_killed_mid_run_leaves_no_run_blocking_the_queue(tmp_path):
    home, landing = tmp_path / "home", tmp_path / "landing"
    home.mkdir()
    (home / "dagster.yaml").write_text(LOCAL_YAML.read_text())
    write_object_csv(landing / "backup" / BIG / "Task" / "task_part1.csv", "Task", BIG_ROWS)
    write_folders(landing, [SMALL], ["Account", "Contact"], 100)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_ASSETS_", "DAGSTER_"))}
    env.update({"ETL_ASSETS_LANDING_ZONE": "local", "ETL_ASSETS_LANDING_ROOT": str(landing),
                "ETL_ASSETS_WAREHOUSE": "duckdb", "ETL_ASSETS_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "VIRTUAL_ENV": str(BIN.parent)})
    services: list[Service] = []
    try:
        first, url = dev_server("dev1", home, env, tmp_path)
        services.append(first)
        add_partitions(url, [BIG, SMALL])
        stuck = launch_folder_run(url, BIG, asset_paths(["Task"]))
        wait_for_services(lambda: step_running(url, stuck), 300, "the Task step to be running", [first])

        os.killpg(first.process.pid, signal.SIGKILL)  # the laptop's processes gone, no shutdown of any kind
        first.process.wait(timeout=30)
        services.remove(first)
        first.stop()
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert instance.get_run_by_id(stuck).status == dg.DagsterRunStatus.STARTED  # what used to stay forever

        second, url = dev_server("dev2", home, env, tmp_path)
        services.append(second)
        fresh = launch_folder_run(url, SMALL, asset_paths(["Account", "Contact"]))
        # The new run needs the pool slot the killed run held: it can only finish once monitoring has
        # failed the killed run and freed the slot.
        wait_for_services(lambda: run_status(url, fresh) in ("SUCCESS", "FAILURE", "CANCELED"), 600,
                          "the new run to finish", [second])
        assert run_status(url, fresh) == "SUCCESS"
        assert run_status(url, stuck) == "FAILURE"
        with dg.DagsterInstance.from_config(str(home)) as instance:
            failure = next(e for e in instance.all_logs(stuck) if e.dagster_event
                           and e.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE)
            assert "run worker process" in (failure.dagster_event.message or failure.user_message)
            assert instance.event_log_storage.get_concurrency_info("warehouse").claimed_slots == []
    except BaseException:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            print_run_diagnostics(services, instance)
        raise
    finally:
        for service in services:
            service.stop()
