"""Concurrency and idempotency at scale.

- A backfill of 20 folders runs as 20 Dagster runs with the multiprocess executor,
  three runs at a time in separate processes, against the real PostgreSQL server,
  on an instance configured by the repo's deploy/dagster.local.yaml (pool limit).
  It gives the same tables as the same folders loaded one by one in a shuffled order.
- Two loads of one table are serialized by the per-table lock (pg_locks shows the wait).
- The full sample set materialized three times gives identical table checksums.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml

from etl_assets.landing.zone import LocalLandingZone
from etl_assets.salesforce.catalog import load_catalog
from etl_assets.salesforce.partitions import differential_folders
from etl_assets.salesforce.staging import SourceFile, stage_object
from etl_assets.samples.salesforce import generate_sample
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets.warehouse.postgres import PostgresWarehouse
from etl_assets_tests.backfill_job import run_folders
from etl_assets_tests.helpers import (
    assert_matches_truth,
    folders_in,
    materialize_folders,
    resources,
    table_digest,
)

REPO = Path(__file__).resolve().parents[1]
CATALOG = load_catalog()
OBJECTS = ["Task", "User"]


def load_one_by_one(root: Path, folders: list[str], warehouse, objects) -> None:
    """The sequential reference: each folder's objects staged and merged, one load at a time."""
    for folder in folders:
        for api_name in objects:
            directory = root / "backup" / folder / api_name
            paths = sorted(directory.glob("*.csv")) if directory.is_dir() else []
            if not paths:
                continue
            batch, _ = stage_object(CATALOG[api_name], [SourceFile(f"backup/{folder}/{api_name}/{p.name}", p)
                                                        for p in paths], folder)
            warehouse.load(batch)
            batch.discard()


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = best = 0
    for _, delta in edges:
        current += delta
        best = max(best, current)
    return best


@pytest.mark.slow
def test_a_parallel_multiprocess_backfill_of_20_folders_equals_one_by_one_loads(tmp_path, postgres_database,
                                                                               monkeypatch):
    root = tmp_path / "landing"
    generate_sample(root, folders=20, rows=12, seed=23, objects=OBJECTS)
    folders = folders_in(root)
    assert len(folders) == 20
    home = tmp_path / "dagster_home"
    home.mkdir()
    # The repo's instance config, with the pool limit a PostgreSQL warehouse allows (the local
    # default is 1: DuckDB has a single writer); the pool mechanism is what is under test.
    config = yaml.safe_load((REPO / "deploy" / "dagster.local.yaml").read_text())
    config["concurrency"]["pools"]["default_limit"] = limit = 3
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    env = {"DAGSTER_HOME": str(home), "ETL_ASSETS_WAREHOUSE": "postgres", "ETL_ASSETS_LANDING_ZONE": "local",
           "ETL_ASSETS_LANDING_ROOT": str(root), "ETL_ASSETS_PG_HOST": postgres_database["host"],
           "ETL_ASSETS_PG_PORT": str(postgres_database["port"]), "ETL_ASSETS_PG_USER": postgres_database["user"],
           "ETL_ASSETS_PG_DATABASE": postgres_database["database"]}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(differential_folders.name, folders)

    shuffled = folders[:]
    random.Random(4).shuffle(shuffled)
    groups = [shuffled[i::3] for i in range(3)]
    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn")) as pool:
        outcomes = [o for future in [pool.submit(run_folders, g, OBJECTS) for g in groups] for o in future.result()]
    assert sorted(outcomes) == [(f, True) for f in folders]

    warehouse = PostgresWarehouse(host=postgres_database["host"], port=postgres_database["port"],
                                  user=postgres_database["user"], database=postgres_database["database"])
    reference = DuckDBWarehouse(path=str(tmp_path / "one_by_one.duckdb"))
    order = folders[:]
    random.Random(99).shuffle(order)
    load_one_by_one(root, order, reference, OBJECTS)
    for api_name in OBJECTS:
        assert table_digest(warehouse, api_name.lower()) == table_digest(reference, api_name.lower()), api_name
        assert assert_matches_truth(warehouse, root, api_name) > 0

    with dg.DagsterInstance.get() as instance:
        spans, pids = defaultdict(dict), set()
        for record in instance.get_run_records():
            for entry in instance.all_logs(record.dagster_run.run_id):
                event = entry.dagster_event
                if event is None or event.step_key is None:
                    continue
                if event.event_type == dg.DagsterEventType.STEP_START:
                    spans[(record.dagster_run.run_id, event.step_key)]["start"] = entry.timestamp
                    pids.add(event.pid)
                elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
                    spans[(record.dagster_run.run_id, event.step_key)]["end"] = entry.timestamp
        assert len(spans) == 20 * len(OBJECTS)
        assert len(pids) > 3, "steps ran in processes of their own (multiprocess executor)"
        overlap = max_overlap([(s["start"], s["end"]) for s in spans.values()])
        assert 1 < overlap <= limit, f"{overlap} warehouse steps ran at once; the pool allows {limit}"


def test_two_loads_of_one_table_are_serialized_by_the_table_lock(landing_root, postgres_database):
    warehouse = PostgresWarehouse(host=postgres_database["host"], port=postgres_database["port"],
                                  user=postgres_database["user"], database=postgres_database["database"])
    folders = [f for f in folders_in(landing_root) if (landing_root / "backup" / f / "Task").is_dir()][:2]
    batches = []
    for folder in folders:
        paths = sorted((landing_root / "backup" / folder / "Task").glob("*.csv"))
        batches.append(stage_object(CATALOG["Task"], [SourceFile(f"backup/{folder}/Task/{p.name}", p)
                                                      for p in paths], folder)[0])
    warehouse.load(batches[0])
    watcher = psycopg2.connect(host=postgres_database["host"], port=postgres_database["port"],
                               user=postgres_database["user"], dbname=postgres_database["database"])
    watcher.autocommit = True
    errors = []
    with warehouse.session() as holder:
        holder.lock_table(batches[1].spec)  # what a concurrent load of salesforce.task holds
        loader = threading.Thread(target=lambda: errors.extend(_load(warehouse, batches[1])))
        loader.start()
        deadline = time.monotonic() + 30
        while True:
            with watcher.cursor() as cursor:
                cursor.execute("SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                               "WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = current_database()")
                if cursor.fetchone()[0] == 1:
                    break
            assert time.monotonic() < deadline, "the second load never waited for the table lock"
            time.sleep(0.05)
        assert loader.is_alive()
    loader.join(60)
    watcher.close()
    assert errors == []
    assert assert_matches_truth(warehouse, landing_root, "Task", folders) > 0


def _load(warehouse, batch) -> list:
    try:
        warehouse.load(batch)
        return []
    except Exception as error:  # reported to the test thread
        return [error]


@pytest.mark.slow
def test_the_full_sample_materialized_three_times_gives_identical_checksums(landing_root, tmp_path):
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    zone = LocalLandingZone(root=str(landing_root))
    folders = folders_in(landing_root)
    digests = []
    for _ in range(3):
        assert all(r.success for r in materialize_folders(folders, resources(zone, warehouse)))
        digests.append({api.lower(): table_digest(warehouse, api.lower()) for api in CATALOG})
    assert digests[0] == digests[1] == digests[2]
    assert all(digests[0][api.lower()] for api in CATALOG), "every table holds rows"
    for api_name in CATALOG:
        assert_matches_truth(warehouse, landing_root, api_name)
