"""Feeds that must not get in each other's way (issue 25): two loads of the same content at the same
moment load it once (the other is DUPLICATE), and one bad entry in feeds.yaml refuses only its own files.
On DuckDB and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg
import pytest

import etl_assets.files.external as external
from etl_assets.files.assets import external_feed_loads
from etl_assets.landing.zone import LocalLandingZone
from etl_assets.notifications import Notifier
from etl_assets.warehouse.audit import find_loads

RACE_FEEDS = """
external_feeds:
  readings:
    pattern: "readings_*.csv"
    table: meters.readings
    mode: append
    header: [meter, reading]
    columns: {meter: string, reading: integer}
    required: [meter, reading]
"""


def readings(rows: int, first: int = 0) -> str:
    return "meter,reading\n" + "".join(f"M{i},{i}\n" for i in range(first, first + rows))


def load(key: str, root: Path, warehouse):
    with dg.DagsterInstance.ephemeral() as instance:  # closed in the thread that made it
        instance.add_dynamic_partitions(external_feed_loads.partitions_def.name, [key])
        return dg.materialize([external_feed_loads], partition_key=key, instance=instance, raise_on_error=False,
                              resources={"landing_zone": LocalLandingZone(root=str(root)), "warehouse": warehouse,
                                         "notifier": Notifier()})


def test_two_loads_of_the_same_content_at_once_load_it_once(tmp_path, warehouse, monkeypatch):
    """Both loads pass the duplicate check before either commits (a barrier holds each one there until
    the other arrives): the claim in the load's own transaction lets one commit; the other is DUPLICATE."""
    (tmp_path / "feeds.yaml").write_text(RACE_FEEDS)
    monkeypatch.setenv("ETL_ASSETS_FEEDS", str(tmp_path / "feeds.yaml"))
    root = tmp_path / "landing"
    (root / "external/inbound").mkdir(parents=True)
    (root / "external/inbound/readings_0.csv").write_text(readings(3, first=5000))
    assert load("external/inbound/readings_0.csv", root, warehouse).success  # tables exist before the race

    same = readings(2000)
    keys = ["external/inbound/readings_a.csv", "external/inbound/readings_b.csv"]
    for key in keys:
        (root / key).write_text(same)
    both_checked = threading.Barrier(2)
    check_content = external.check_content

    def checked_then_wait(*args, **kwargs):
        fingerprint = check_content(*args, **kwargs)
        both_checked.wait(timeout=120)  # a safety net if the other load never arrives; not what is asserted
        return fingerprint

    monkeypatch.setattr(external, "check_content", checked_then_wait)
    results = {}
    threads = [threading.Thread(target=lambda k=k: results.update({k: load(k, root, warehouse)})) for k in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(r.success for r in results.values()) == [False, True]
    [winner] = [k for k, r in results.items() if r.success]
    [loser] = [k for k in keys if k != winner]
    audit = {a["source_key"]: a for a in find_loads(warehouse)}
    assert (audit[winner]["status"], audit[winner]["rows_loaded"]) == ("FINISHED", 2000)
    assert (audit[loser]["status"], audit[loser]["rows_loaded"]) == ("DUPLICATE", 0), audit[loser]
    assert audit[loser]["error"].startswith(f"duplicate of {winner}: the same content"), audit[loser]
    assert warehouse.count_rows("meters", "readings") == 3 + 2000
    assert warehouse.query("SELECT COUNT(DISTINCT meter) FROM meters.readings") == [(3 + 2000,)]
    assert (root / "archive" / winner).is_file() and (root / "duplicate" / loser).is_file()
    assert (root / "duplicate" / f"{loser}.reason.txt").read_text().startswith("DUPLICATE: duplicate of")


def test_a_load_that_may_repeat_content_claims_nothing(tmp_path, warehouse, monkeypatch):
    """`duplicates: allow` (and the override) load repeated content; they neither hold nor need a claim, and a
    re-run of a key whose content changed gives its old content back to others."""
    (tmp_path / "feeds.yaml").write_text(RACE_FEEDS + "    duplicates: allow\n")
    monkeypatch.setenv("ETL_ASSETS_FEEDS", str(tmp_path / "feeds.yaml"))
    root = tmp_path / "landing"
    (root / "external/inbound").mkdir(parents=True)
    for name in ("readings_a.csv", "readings_b.csv"):
        (root / "external/inbound" / name).write_text(readings(2))
        assert load(f"external/inbound/{name}", root, warehouse).success
    assert warehouse.count_rows("meters", "readings") == 4
    assert warehouse.query("SELECT COUNT(*) FROM etl_audit.content_claims") == [(0,)]


BROKEN_ENTRY = """
  bank_transactions:
    pattern: "bank_txn_*.csv"
    table: finance.bank_transactions
    mode: upsert
    header: [txn_id, amount]
    columns: {txn_id: integer, amount: float}
  no_pattern:
    table: finance.nothing
"""


def test_one_bad_feed_entry_refuses_only_its_own_files(tmp_path, warehouse, monkeypatch):
    from etl_assets.files.config import FEEDS_PATH

    bundled = Path(FEEDS_PATH).read_text(encoding="utf-8")
    start = bundled.index("  bank_transactions:")
    end = bundled.index("  branch_headcount:")
    (tmp_path / "feeds.yaml").write_text(bundled[:start] + BROKEN_ENTRY.lstrip("\n") + bundled[end:])
    monkeypatch.setenv("ETL_ASSETS_FEEDS", str(tmp_path / "feeds.yaml"))
    root = tmp_path / "landing"
    (root / "external/inbound").mkdir(parents=True)
    (root / "external/inbound/bank_txn_20240501.csv").write_text("txn_id,amount\n1,2.5\n")
    (root / "external/inbound/headcount_2024-05.csv").write_text("branch,month,headcount\nLeeds,2024-05-01,12\n")

    assert load("external/inbound/headcount_2024-05.csv", root, warehouse).success
    assert warehouse.count_rows("hr", "branch_headcount") == 1
    assert not load("external/inbound/bank_txn_20240501.csv", root, warehouse).success
    [audit] = [a for a in find_loads(warehouse) if a["source_key"] == "external/inbound/bank_txn_20240501.csv"]
    expected = ("feed 'bank_transactions' in feeds.yaml is invalid, so its files are not loaded: "
                "external_feeds.bank_transactions: mode must be one of ('append', 'replace')")
    assert (audit["status"], audit["error"]) == ("ABORTED", expected)
    reason = root / "error/external/inbound/bank_txn_20240501.csv.reason.txt"
    assert reason.read_text() == f"ABORTED: {expected}\n"


def test_the_cli_loads_the_good_feeds_and_says_where_each_refused_file_is(tmp_path):
    from etl_assets.files.config import FEEDS_PATH

    (tmp_path / "feeds.yaml").write_text(Path(FEEDS_PATH).read_text().replace(
        "    mode: replace\n    delimiter: \",\"", "    mode: upsert\n    delimiter: \",\"", 1))  # branch_headcount
    root = tmp_path / "landing"
    (root / "external/inbound").mkdir(parents=True)
    (root / "external/inbound/headcount_2024-05.csv").write_text("branch,month,headcount\nLeeds,2024-05-01,12\n")
    (root / "external/inbound/bank_txn_20240501.csv").write_text(
        "txn_id|account|amount|currency|booked_at\n1|ACC1|10.5|EUR|2024-05-01T10:00:00Z\nTRL|1\n")
    env = {"ETL_ASSETS_LANDING_ROOT": str(root), "ETL_ASSETS_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
           "ETL_ASSETS_FEEDS": str(tmp_path / "feeds.yaml")}
    done = subprocess.run([sys.executable, "-m", "etl_assets.cli", "files", "--ephemeral"], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=600)
    assert done.returncode == 1, done.stderr
    assert "external/inbound/bank_txn_20240501.csv: loaded" in done.stdout, done.stdout
    assert ("external/inbound/headcount_2024-05.csv: REFUSED (see error/)\n  external/inbound/headcount_2024-05.csv: "
            "feed 'branch_headcount' in feeds.yaml is invalid") in done.stdout, done.stdout
    assert (root / "error/external/inbound/headcount_2024-05.csv").is_file()
