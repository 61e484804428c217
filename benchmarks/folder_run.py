"""Folder runs through the daemon: the daily case of one backup folder of many small objects.

A real `dagster-webserver` and `dagster-daemon` on a temporary instance (deploy/dagster.local.yaml,
so the local run queue, pool and executor choice are the ones measured), a landing zone of generated
folders (~100 rows per object, the project's sample generator), and runs submitted over GraphQL as
the UI, a sensor or a backfill submits them: one folder of 10, 50 and 100 objects, and a backfill of
30 folders of 10. Each run's start, end and step times are read back over GraphQL; the benchmark
prints wall time (run start to end, and submission to end) against the sum of its steps' own times.

The 10-object folders use the catalog's own objects (a new user's `make dev`); 50 and 100 add
generated discovered objects (benchmarks/catalog.py) through ETL_ASSETS_SALESFORCE_DISCOVERED.
With `postgres`, the same folder of 10 and the backfill go to a fresh PostgreSQL database with the pool at 3 and
the forkserver executor, and the benchmark reports how many steps ran at once.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from etl_assets_tests import live

REPO = live.REPO
LOCAL_YAML = REPO / "deploy" / "dagster.local.yaml"
BIN = live.BIN
DISCOVERED_ENV = "ETL_ASSETS_SALESFORCE_DISCOVERED"
JOB = "salesforce_backup_job"
PARTITIONS_DEF = "salesforce_differential_folders"
FIRST_DAY = datetime.date(2024, 6, 1)


def folder_name(index: int) -> str:
    return f"{FIRST_DAY + datetime.timedelta(days=index):%Y%m%d}_Differential"


def object_names(count: int) -> list[str]:
    """The first `count` objects of the code location's catalog (this process's environment)."""
    from etl_assets.salesforce.catalog import load_catalog

    names = list(load_catalog())
    if len(names) < count:
        raise ValueError(f"the catalog has {len(names)} objects, fewer than {count}")
    return names[:count]


def write_folders(landing: Path, folders: list[str], objects: list[str], rows: int) -> None:
    """One CSV of `rows` records per object per folder (the sample generator; the catalog of this
    process's environment must know every object)."""
    from etl_assets.samples.salesforce import write_object_csv

    for i, folder in enumerate(folders):
        day = FIRST_DAY + datetime.timedelta(days=i)
        for name in objects:
            write_object_csv(landing / "backup" / folder / name / f"{name.lower()}_part1.csv", name, rows,
                             seed=11, day=day, first_index=i * rows // 2)  # half updates, half new


def asset_paths(objects: list[str]) -> list[dict]:
    from etl_assets.salesforce.assets import object_asset_key
    from etl_assets.salesforce.catalog import load_catalog

    catalog = load_catalog()
    return [{"path": list(object_asset_key(catalog[name]).path)} for name in objects]


def add_partitions(url: str, folders: list[str]) -> None:
    live.add_partitions(url, PARTITIONS_DEF, folders)


def launch_folder_run(url: str, folder: str, assets: list[dict]) -> str:
    """A run of salesforce_backup_job for one folder and the given objects, as the UI launches it."""
    return live.launch_run(url, JOB, assets, partition=folder)


def step_summary(run: dict) -> dict:
    """Wall time against the steps' own times, and how many steps ever ran at once."""
    steps = [s for s in run["stepStats"] if s["startTime"] and s["endTime"]]
    events = sorted([(s["startTime"], 1) for s in steps] + [(s["endTime"], -1) for s in steps])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    step_sum = sum(s["endTime"] - s["startTime"] for s in steps)
    return {
        "run_id": run["runId"], "status": run["status"], "steps": len(run["stepStats"]),
        "steps_succeeded": sum(1 for s in run["stepStats"] if s["status"] == "SUCCESS"),
        "wall_s": run["endTime"] - run["startTime"] if run["startTime"] and run["endTime"] else None,
        "submit_to_end_s": run["endTime"] - run["creationTime"] if run["endTime"] else None,
        "to_first_step_s": (min(s["startTime"] for s in steps) - run["startTime"]) if steps else None,
        "step_sum_s": step_sum, "step_max_s": max((s["endTime"] - s["startTime"] for s in steps), default=0.0),
        "parallel_peak": peak,
    }


# ---------------------------------------------------------------- setups


def instance_yaml(pool_limit: int) -> str:
    text = LOCAL_YAML.read_text()
    return text.replace("    default_limit: 1", f"    default_limit: {pool_limit}") if pool_limit != 1 else text


def _postgres_database(name: str) -> dict:
    import psycopg2

    from benchmarks.postgres import PG

    connection = psycopg2.connect(dbname="postgres", **PG)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    return live.postgres_warehouse({**PG, "database": name})


def _setup_env(root: Path, warehouse: str, state: Path | None) -> dict:
    settings = {DISCOVERED_ENV: str(state)} if state else {}
    if warehouse == "duckdb":
        settings.update(live.duckdb_warehouse(root / "warehouse.duckdb"))
    else:
        settings.update(_postgres_database(f"bench_folder_run_{os.getpid()}"))
    return live.environment(landing=root / "landing", **settings)


def _objects_in(env: dict, count: int) -> list[str]:
    """Object names as the code location of `env` sees them (the discovered state may add objects)."""
    code = ("import json, sys; from benchmarks.folder_run import object_names, asset_paths; "
            f"n = object_names({count}); print(json.dumps([n, asset_paths(n)]))")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _write(env: dict, landing: Path, folders: list[str], objects: list[str], rows: int) -> None:
    code = ("import json, sys; from pathlib import Path; from benchmarks.folder_run import write_folders; "
            "a = json.loads(sys.argv[1]); write_folders(Path(a[0]), a[1], a[2], a[3])")
    done = subprocess.run([sys.executable, "-c", code, json.dumps([str(landing), folders, objects, rows])],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])


def measure_setup(name: str, warehouse: str, discovered: int, scales: list[int], backfill: int, rows: int,
                  log=print, keep: bool = False) -> dict:
    """Start a webserver and daemon for one configuration and time its folder runs (and backfill)."""
    from benchmarks.catalog import write_state

    root = Path(tempfile.mkdtemp(prefix=f"etl_assets_folder_run_{name}_"))
    home = root / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(3 if warehouse == "postgres" else 1))
    # Discovered objects: CSVs written from a generated state, then typed the way a user types them,
    # `etl-assets catalog refresh` inferring the state from those files (so values fit their types).
    generated = write_state(root, discovered) if discovered else None
    state = root / "discovered.yaml" if discovered else None
    env = _setup_env(root, warehouse, generated)
    result = {"setup": name, "warehouse": warehouse, "discovered_objects": discovered, "rows_per_object": rows,
              "pool_limit": 3 if warehouse == "postgres" else 1, "runs": [], "backfill": None}
    stack = None
    try:
        most = max(scales + ([10] if backfill else []))
        objects, assets = _objects_in(env, most)
        runs_folders = [folder_name(i) for i in range(len(scales))]
        backfill_folders = [folder_name(100 + i) for i in range(backfill)]
        started = time.perf_counter()
        for folder, scale in zip(runs_folders, scales):
            _write(env, root / "landing", [folder], objects[:scale], rows)
        if backfill:
            _write(env, root / "landing", backfill_folders, objects[:10], rows)
        if state:
            env[DISCOVERED_ENV] = str(state)
            done = subprocess.run([str(BIN / "etl-assets"), "catalog", "refresh", "--state", str(state)], env=env,
                                  cwd=REPO, capture_output=True, text=True, timeout=900)
            if done.returncode:
                raise RuntimeError(f"etl-assets catalog refresh: {done.stdout[-2000:]} {done.stderr[-2000:]}")
            objects, assets = _objects_in(env, most)
        log(f"  [{name}] generated {len(runs_folders) + len(backfill_folders)} folder(s) in "
            f"{time.perf_counter() - started:.1f} s; starting dagster-webserver and dagster-daemon")
        stack = live.Stack({**env, "DAGSTER_HOME": str(home)}, root)
        result["startup_s"] = stack.start()  # no sensor or schedule ticks (a tick is CPU on a 2-core machine)
        add_partitions(stack.url, runs_folders + backfill_folders)
        for folder, scale in zip(runs_folders, scales):
            load = os.getloadavg()
            run_id = launch_folder_run(stack.url, folder, assets[:scale])
            run = live.wait_run(stack.url, run_id, timeout=1800, services=stack.services)
            summary = {"objects": scale, "folder": folder, **step_summary(run), "loadavg_before": load,
                       "loadavg_after": os.getloadavg()}
            result["runs"].append(summary)
            log(f"  [{name}] {scale} objects: {summary['status']} wall {summary['wall_s']:.1f} s "
                f"(submit->end {summary['submit_to_end_s']:.1f} s), steps {summary['step_sum_s']:.1f} s, "
                f"peak {summary['parallel_peak']} at once; load {load[0]:.2f}")
        if backfill:
            load = os.getloadavg()
            submitted = time.time()
            backfill_id = live.launch_backfill(stack.url, backfill_folders, assets[:10])
            done = live.wait_backfill(stack.url, backfill_id, timeout=3600, services=stack.services)
            runs = done["runs"]
            ended = max(r["endTime"] or 0 for r in runs)
            result["backfill"] = {
                "folders": backfill, "objects_per_folder": 10, "status": done["status"], "runs": len(runs),
                "runs_succeeded": sum(1 for r in runs if r["status"] == "SUCCESS"),
                "wall_s": ended - submitted,
                "first_run_start_to_end_s": ended - min(r["startTime"] or ended for r in runs),
                "step_sum_s": sum(step_summary(r)["step_sum_s"] for r in runs),
                "run_wall_mean_s": sum(step_summary(r)["wall_s"] or 0 for r in runs) / max(1, len(runs)),
                "loadavg_before": load, "loadavg_after": os.getloadavg(),
            }
            b = result["backfill"]
            log(f"  [{name}] backfill {backfill} folders: {b['status']} {b['runs_succeeded']}/{b['runs']} runs, "
                f"wall {b['wall_s']:.1f} s, steps {b['step_sum_s']:.1f} s; load {load[0]:.2f}")
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {error}"
        if stack:
            result["logs"] = stack.tail()
        log(f"  [{name}] failed: {result['error']}")
    finally:
        if stack:
            stack.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return result


def run_folder_run_benchmark(scales=(10, 50, 100), backfill: int = 30, rows: int = 100, postgres: bool = True,
                             log=print) -> dict:
    """Every setup in turn: catalog objects on DuckDB (10 and the backfill), discovered objects on
    DuckDB (50, 100), and the folder of 10 and the backfill on PostgreSQL with the pool at 3."""
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    small = [s for s in scales if s <= 10]
    large = [s for s in scales if s > 10]
    setups = []
    log(f"Folder-run benchmark: folders of {', '.join(map(str, scales))} objects x {rows} rows, "
        f"a backfill of {backfill} folders; load average {os.getloadavg()[0]:.2f}")
    if small or backfill:
        setups.append(measure_setup("duckdb_catalog", "duckdb", 0, small, backfill, rows, log))
    if large:
        setups.append(measure_setup("duckdb_discovered", "duckdb", max(large) - 10, large, 0, rows, log))
    if postgres:
        setups.append(measure_setup("postgres_pool3", "postgres", 0, [10], backfill, rows, log))
    return {"started_at": started, "scales": list(scales), "rows_per_object": rows, "backfill_folders": backfill,
            "setups": setups}
