"""File-feed partitions have a lifecycle (docs/file-feeds.md, "Partitions").

A landed file is a partition while it waits, while its run is in progress, while it is refused
(error/, duplicate/, held/) and for the retention after its last load; then its sensor deletes the
partition. Its history stays findable: the audit row, archive/, the materialization events. A file
landed again under the same key is a partition again and loads.

The sensor is evaluated in process and its result applied as Dagster's sensor daemon applies it
(partition requests first, then each run request whose run key is new), on a local instance of
deploy/dagster.local.yaml, a local landing zone, and DuckDB or the PostgreSQL server; and once
through Dagster's own sensor daemon and webserver, which apply the deletions and record them on the tick.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import dagster as dg
import pytest

from etl_assets import environment
from etl_assets.files.assets import external_feed_loads
from etl_assets.files.external import PREFIX
from etl_assets.files.sensors import (
    DEFAULT_RETENTION_DAYS,
    RETENTION_VARIABLE,
    LifecycleCursor,
    build_landed_files_sensor,
    partition_lifecycle,
    retention_seconds,
)
from etl_assets.landing.zone import LocalLandingZone
from etl_assets.notifications import Notifier
from etl_assets.settings import SettingsError
from etl_assets_tests import live
from etl_assets.warehouse.audit import find_loads
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets_tests.helpers import LOCAL_YAML, finished_runs, stack

ASSET = external_feed_loads
HOUR = 3600.0
HEADER = "txn_id|account|amount|currency|booked_at"

# Runs that must be caught in progress wait inside the landing zone, at the read of their file, until
# the test releases them: {landing key: (entered, release)}.
GATES: dict[str, tuple[threading.Event, threading.Event]] = {}


class GatedLandingZone(LocalLandingZone):
    """A local landing zone whose read of a gated key waits for the test (a run held in progress)."""

    def local_copy(self, key: str):
        for gated, (entered, release) in list(GATES.items()):
            if key.endswith(gated):
                entered.set()
                assert release.wait(120), "the test never released the run"
        return super().local_copy(key)


def bank_file(first: int, rows: int = 2, trailer: int | None = None, bad: bool = False) -> str:
    body = "".join(f"{i}|ACC{i % 7:03d}|{'x' if bad else f'{i}.25'}|EUR|2024-05-01T00:00:00Z\n"
                   for i in range(first, first + rows))
    return f"{HEADER}\n{body}TRL|{rows if trailer is None else trailer}\n"


class Feed:
    """A landing zone, a warehouse, an instance, and the sensor's ticks applied as the daemon does."""

    def __init__(self, root: Path, home: Path, warehouse):
        self.root, self.warehouse = root, warehouse
        self.zone = GatedLandingZone(root=str(root))
        home.mkdir()
        shutil.copy(LOCAL_YAML, home / "dagster.yaml")
        self.instance = dg.DagsterInstance.from_config(str(home))
        self.cursor: str | None = None
        self.run_keys: set[str] = set()
        self.logs: list[str] = []

    def land(self, key: str, text: str) -> str:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return key

    def has(self, key: str) -> bool:
        return (self.root / key).is_file()

    def partitions(self) -> set[str]:
        return set(self.instance.get_dynamic_partitions(ASSET.partitions_def.name))

    def materialize(self, key: str, tags: dict | None = None) -> dg.ExecuteInProcessResult:
        return dg.materialize([ASSET], partition_key=key, instance=self.instance, raise_on_error=False, tags=tags,
                              resources={"landing_zone": self.zone, "warehouse": self.warehouse,
                                         "notifier": Notifier()})

    def tick(self, retention: float, run: bool = True) -> dg.SensorResult:
        """One evaluation of external_files_sensor with `retention` (seconds), then what the daemon does
        with it: add and delete partitions, then run each request with a new run key to its end."""
        sensor = build_landed_files_sensor("external", PREFIX, ASSET, retention=retention)
        with dg.build_sensor_context(instance=self.instance, resources={"landing_zone": self.zone},
                                     cursor=self.cursor) as context:
            result = sensor(context)
        for request in result.dynamic_partitions_requests or []:
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            else:
                for key in request.partition_keys:
                    self.instance.delete_dynamic_partition(request.partitions_def_name, key)
        self.cursor = result.cursor
        for request in result.run_requests if run else []:
            if request.run_key not in self.run_keys:
                self.run_keys.add(request.run_key)
                self.materialize(request.partition_key, dict(request.tags))
        return result

    def loads(self, key: str) -> list[dict]:
        return [row for row in find_loads(self.warehouse) if row["source_key"] == key]

    def materializations(self, key: str) -> list:
        return list(self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=ASSET.key, asset_partitions=[key]), limit=100).records)


@pytest.fixture
def feed(tmp_path, warehouse):
    feed = Feed(tmp_path / "landing", tmp_path / "dagster_home", warehouse)
    yield feed
    feed.instance.dispose()


def deleted_by(result: dg.SensorResult) -> list[str]:
    return [key for request in result.dynamic_partitions_requests or []
            if isinstance(request, dg.DeleteDynamicPartitionsRequest) for key in request.partition_keys]


def test_settled_partitions_go_after_the_retention_and_unsettled_ones_stay(feed):
    loaded = feed.land("external/inbound/bank_txn_1.csv", bank_file(1))
    failed = feed.land("external/inbound/bank_txn_2.csv", bank_file(10, bad=True))
    duplicate = feed.land("external/inbound/bank_txn_3.csv", bank_file(1))  # bank_txn_1's bytes
    held = feed.land("external/inbound/headcount_202405.csv", "branch,month,headcount\n")
    running = feed.land("external/inbound/bank_txn_4.csv", bank_file(20))
    feed.tick(HOUR)
    assert feed.has(f"archive/{loaded}") and feed.has(f"archive/{running}")
    assert feed.has(f"error/{failed}") and feed.has(f"duplicate/{duplicate}") and feed.has(f"held/{held}")
    assert [row["status"] for row in feed.loads(duplicate)] == ["DUPLICATE"]
    everything = {loaded, failed, duplicate, held, running}
    assert feed.partitions() == everything

    waiting = feed.land("external/inbound/bank_txn_5.csv", bank_file(30))
    assert deleted_by(feed.tick(HOUR, run=False)) == [], "within the retention every partition stays"
    assert feed.partitions() == everything | {waiting}

    # A re-run of an archived file, held in progress inside its read of the file.
    GATES[running] = (threading.Event(), threading.Event())
    rerun = threading.Thread(target=feed.materialize, args=(running,))
    rerun.start()
    try:
        assert GATES[running][0].wait(120), "the re-run never reached its file"
        result = feed.tick(0, run=False)  # every load so far is past a retention of 0
    finally:
        GATES[running][1].set()
        rerun.join(120)
        del GATES[running]
    assert deleted_by(result) == [loaded]
    assert feed.partitions() == {failed, duplicate, held, running, waiting}, \
        "waiting, running, failed, duplicate and held files keep their partitions"

    # The re-run ended (loaded again): past the retention its partition goes too.
    assert deleted_by(feed.tick(0, run=False)) == [running]
    # An operator gives up on a refused file by removing it from error/: its partition goes.
    (feed.root / f"error/{failed}").unlink()
    (feed.root / f"error/{failed}.reason.txt").unlink()
    assert deleted_by(feed.tick(0, run=False)) == [failed]
    assert feed.partitions() == {duplicate, held, waiting}
    # The waiting file runs and loads; then it settles like the others.
    feed.tick(HOUR)
    assert deleted_by(feed.tick(0, run=False)) == [waiting]
    assert feed.partitions() == {duplicate, held}


def test_a_deleted_partitions_file_is_still_findable(feed):
    key = feed.land("external/inbound/bank_txn_1.csv", bank_file(1, rows=3))
    feed.tick(HOUR)
    assert deleted_by(feed.tick(0)) == [key] and key not in feed.partitions()

    [row] = feed.loads(key)
    assert (row["status"], row["rows_loaded"], row["target_table"]) == ("FINISHED", 3, "finance.bank_transactions")
    assert feed.has(f"archive/{key}")
    [materialization] = feed.materializations(key)  # Dagster keeps a deleted partition's events
    metadata = materialization.asset_materialization.metadata
    assert materialization.run_id == row["run_id"]
    assert metadata["archived_as"].value == str(feed.root / "archive" / key)
    assert metadata["rows_loaded"].value == 3


def test_a_file_landed_again_under_the_same_key_loads_again(feed):
    key = feed.land("external/inbound/bank_txn_1.csv", bank_file(1, rows=2))
    feed.tick(HOUR)
    assert deleted_by(feed.tick(0)) == [key]

    feed.land(key, bank_file(1, rows=4))  # a corrected version, under the same key
    result = feed.tick(HOUR)
    assert [r.partition_key for r in result.run_requests] == [key]
    assert key in feed.partitions()
    assert [row["status"] for row in feed.loads(key)] == ["FINISHED", "FINISHED"]
    assert feed.loads(key)[0]["rows_loaded"] == 4  # newest first
    assert sorted(r[0] for r in feed.warehouse.query("SELECT txn_id FROM finance.bank_transactions")) == [1, 2, 3, 4]
    assert len(feed.materializations(key)) == 2
    assert deleted_by(feed.tick(HOUR, run=False)) == [], "the new load starts a new retention"
    assert deleted_by(feed.tick(0, run=False)) == [key]


def test_a_backlog_drains_a_bounded_number_per_tick_in_load_order(feed):
    """An instance that kept every partition (before this lifecycle): each tick deletes at most its limit,
    oldest loads first, and the cursor carries the walk to the next tick."""
    keys = [f"external/inbound/bank_txn_{i:02d}.csv" for i in range(7)]
    feed.instance.add_dynamic_partitions(ASSET.partitions_def.name, keys)
    for key in keys:
        feed.instance.report_runless_asset_event(dg.AssetMaterialization(ASSET.key, partition=key))
    now = 4102444800.0  # 2100-01-01: every load is older than the cutoff
    cursor, drained = LifecycleCursor(), []
    while True:
        lifecycle = partition_lifecycle(feed.instance, ASSET, feed.zone, PREFIX, set(), cursor, cutoff=now, now=now,
                                        limit=3)
        assert len(lifecycle.delete) <= 3
        if not lifecycle.delete:
            break
        for key in lifecycle.delete:
            feed.instance.delete_dynamic_partition(ASSET.partitions_def.name, key)
        drained.append(lifecycle.delete)
        cursor = lifecycle.cursor
    assert drained == [keys[0:3], keys[3:6], keys[6:7]]
    assert feed.partitions() == set()


def test_the_given_up_sweep_runs_when_the_refused_folders_change_or_an_hour_passed(feed):
    """Reading every partition's status costs the asset's history after a change of partitions, so a tick
    sweeps for given-up files only when error/, duplicate/ or held/ changed, or once an hour."""
    failed = feed.land("external/inbound/bank_txn_2.csv", bank_file(10, bad=True))
    feed.tick(HOUR)
    assert feed.has(f"error/{failed}")
    by_hand = "external/inbound/added_in_the_ui.csv"  # a partition someone added and never ran: left alone
    feed.instance.add_dynamic_partitions(ASSET.partitions_def.name, [by_hand])

    def lifecycle(cursor: LifecycleCursor, now: float):
        return partition_lifecycle(feed.instance, ASSET, feed.zone, PREFIX, set(), cursor, cutoff=now, now=now)

    now = 4102444800.0
    first = lifecycle(LifecycleCursor(), now)
    assert first.swept and first.delete == [] and first.kept == {"refused": 1, "never run": 1}
    quiet = lifecycle(first.cursor, now + 60)
    assert not quiet.swept and quiet.cursor == first.cursor
    assert lifecycle(first.cursor, now + 3600).swept, "at least once an hour"
    (feed.root / f"error/{failed}").unlink()
    (feed.root / f"error/{failed}.reason.txt").unlink()
    given_up = lifecycle(first.cursor, now + 60)
    assert given_up.swept and given_up.delete == [failed]
    assert given_up.kept == {"never run": 1}


def test_the_retention_is_a_number_of_days_read_from_the_environment():
    assert retention_seconds({}) == DEFAULT_RETENTION_DAYS * 86400 == 7 * 86400
    assert retention_seconds({RETENTION_VARIABLE: "0.5"}) == 43200
    assert retention_seconds({RETENTION_VARIABLE: " 0 "}) == 0
    for bad in ("seven", "-1", "nan", "inf"):
        with pytest.raises(SettingsError, match=f"{RETENTION_VARIABLE}='{bad}': expected a number of days"):
            retention_seconds({RETENTION_VARIABLE: bad})
    # `etl-assets` checks the environment with the same rule before any command (one line, exit 2).
    assert environment.problems({RETENTION_VARIABLE: "seven"}) == [
        f"{RETENTION_VARIABLE}='seven': expected a number of days, 0 or more (e.g. 7, or 0.5 for 12 hours)"]
    assert environment.problems({RETENTION_VARIABLE: "0.5"}) == []


@pytest.mark.slow
def test_the_daemon_deletes_the_partition_of_a_loaded_file_and_its_tick_records_it(tmp_path):
    """dagster-daemon runs external_files_sensor with a retention of 0: one tick adds the file's partition
    and requests its run; once the run loaded the file, a later tick deletes the partition, and the tick's
    record (what the UI's tick history shows) names it."""
    sensor = "external_files_sensor"
    landing, home = tmp_path / "landing", tmp_path / "home"
    key = "external/inbound/bank_txn_1.csv"
    (landing / key).parent.mkdir(parents=True)
    (landing / key).write_text(bank_file(1, rows=3))
    home.mkdir()
    shutil.copy(LOCAL_YAML, home / "dagster.yaml")
    env = live.environment(landing=landing, **live.duckdb_warehouse(tmp_path / "warehouse.duckdb"),
                           **{RETENTION_VARIABLE: "0"})
    with stack(home, env, tmp_path) as dagster:
        dagster.start_webserver(timeout=120)
        assert sensor in dagster.stopped
        dagster.start_daemon(timeout=120, daemons=("SENSOR", "QUEUED_RUN_COORDINATOR"))
        assert live.start_sensor(dagster.url, sensor) == "RUNNING"

        def results(kind: str) -> list:
            return [r for t in live.sensor_state(dagster.url, sensor)["ticks"]
                    for r in t["dynamicPartitionsRequestResults"] if r["type"] == kind]

        added = dagster.wait(lambda: results("ADD_PARTITIONS"), 120, "the tick adding the file's partition")
        assert added == [{"partitionsDefName": ASSET.partitions_def.name, "partitionKeys": [key],
                          "type": "ADD_PARTITIONS"}]
        with dg.DagsterInstance.from_config(str(home)) as instance:
            [run] = dagster.wait(lambda: finished_runs(instance, None, 1), 240, "the file's run", 1)
            assert run.dagster_run.status == dg.DagsterRunStatus.SUCCESS
            assert run.dagster_run.tags["dagster/partition"] == key
            deleted = dagster.wait(lambda: results("DELETE_PARTITIONS"), 180, "a tick deleting the partition", 1)
            assert deleted == [{"partitionsDefName": ASSET.partitions_def.name, "partitionKeys": [key],
                                "type": "DELETE_PARTITIONS"}]
            assert instance.get_dynamic_partitions(ASSET.partitions_def.name) == []
            [materialization] = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=ASSET.key, asset_partitions=[key]), limit=10).records
            assert materialization.run_id == run.dagster_run.run_id
    [row] = [r for r in find_loads(DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))) if r["source_key"] == key]
    assert (row["status"], row["rows_loaded"], row["run_id"]) == ("FINISHED", 3, run.dagster_run.run_id)
    assert (landing / "archive" / key).is_file()
