"""`etl-assets bench` runs end to end at a tiny size (figures are not asserted: it is not a timed test).

One default run (every part but the sensor: loads, encodings, column policies and history, on both engines and
the JSON baseline) is shared by the tests that assert on its output (`default_bench`, module-scoped; conftest.py's
SHARED_FIXTURES keeps those tests on one pytest-xdist worker), so the benchmark's parts each run once."""

import json
import subprocess
import sys

import pytest

ROWS = 2000


@pytest.fixture(scope="module")
def default_bench(tmp_path_factory, postgres_server) -> dict:
    """`etl-assets bench` as `make bench` runs it, at ROWS rows and one round, without the sensor, the load variants
    and history's loads in the benchmark's process rather than 13 and 16 fresh ones (fresh ones: the load variants
    of test_bench_measures_a_users_csv_typed_by_discovery, and the history load of the test after the history
    test): its output folder, what it printed and its data folder (the generated backups)."""
    root = tmp_path_factory.mktemp("bench")
    result = subprocess.run(
        [sys.executable, "-m", "etl_assets.cli", "bench", "--rows", str(ROWS), "--rounds", "1", "--skip-sensor",
         "--targets", "pg,duckdb,baseline", "--loads-one-process", "--history-one-process", "--data", str(root / "data"),
         "--out", str(root / "out")],
        capture_output=True, text=True, timeout=900,
    )
    return {"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr, "out": root / "out",
            "data": root / "data"}


def _ran(bench: dict) -> None:
    assert bench["returncode"] == 0, bench["stdout"][-2000:] + bench["stderr"][-3000:]


def test_bench_produces_every_variant_with_ratios(default_bench):
    _ran(default_bench)
    out = default_bench["out"]
    report = json.loads((out / "loads.json").read_text())
    text = json.dumps(report)
    for variant in ("raw_pg_copy", "pipeline_pg_first", "pipeline_pg_reload", "raw_duckdb_csv",
                    "pipeline_duckdb_first", "pipeline_duckdb_reload", "json_baseline_pg"):
        assert variant in text, f"{variant} missing from the report"
    assert (out / "loads.md").read_text().count("|") > 20
    assert report["loads"]["one_process"] and "--loads-one-process" in (out / "loads.md").read_text()


def test_the_reload_variants_do_what_they_say_and_the_floors_are_printed(default_bench):
    """Re-run: nothing changes; the differential: 30% new Ids, 70% updates; each engine's floor updates every
    row (PostgreSQL: both statements timed); every pipeline variant loads with history off."""
    _ran(default_bench)
    loads = json.loads((default_bench["out"] / "loads.json").read_text())["loads"]
    variants = loads["variants"]
    assert loads["history"].startswith("off")
    from benchmarks.loads import HISTORY_OFF
    from etl_assets.salesforce.catalog import HISTORY_ENV, HISTORY_SETTINGS
    assert HISTORY_OFF[0] == HISTORY_ENV and HISTORY_SETTINGS[HISTORY_OFF[1]] is False
    for engine in ("pg", "duckdb"):
        assert (variants[f"pipeline_{engine}_reload"]["inserted"], variants[f"pipeline_{engine}_reload"]["updated"]) \
            == (0, ROWS)
        assert (variants[f"pipeline_{engine}_rerun"]["inserted"], variants[f"pipeline_{engine}_rerun"]["updated"]) \
            == (0, 0)
        mixed = variants[f"pipeline_{engine}_mixed"]
        assert (mixed["inserted"], mixed["updated"], mixed["rows_in_table"]) == (600, 1400, ROWS + 600)
        assert variants[f"pipeline_{engine}_reload"]["ratio_to_floor"] > 0
    assert variants["floor_pg_update"]["updated"] == ROWS
    assert set(variants["floor_pg_update"]["statements_s"]) == {"update_from", "insert_on_conflict"}
    assert variants["floor_duckdb_merge"]["updated"] == ROWS
    printed = default_bench["stdout"]
    assert "re-run of the same file (nothing changes)" in printed and "the engine's own work" in printed


def test_bench_measures_a_users_csv_typed_by_discovery(tmp_path):
    """`--csv`: an object the catalog does not declare is typed from the file's header and rows (discovery); each
    variant in a fresh process, as a default `make bench` runs them, each reporting its own peak RSS."""
    from etl_assets.samples.salesforce import write_object_csv

    export = tmp_path / "export" / "Widget__c" / "Widget__c.csv"
    write_object_csv(export, "Task", 2000)
    result = subprocess.run(
        [sys.executable, "-m", "etl_assets.cli", "bench", "--only", "loads", "--csv", str(export), "--rounds", "1",
         "--targets", "duckdb", "--no-peers", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loads = json.loads((tmp_path / "out" / "loads.json").read_text())["loads"]
    assert loads["object"] == "Widget__c" and "not in the catalog" in loads["source"]
    variants = loads["variants"]
    assert variants["pipeline_duckdb_first"]["inserted"] == 2000
    assert variants["pipeline_duckdb_reload"]["updated"] == 2000  # the version column moved later
    assert not loads["one_process"] and all(v["peak_rss_bytes"] > 0 for v in variants.values())


def test_bench_measures_what_column_policies_add_to_a_load(default_bench):
    _ran(default_bench)
    policies = json.loads((default_bench["out"] / "policies.json").read_text())["policies"]
    assert policies["rows"] == 2000 and policies["hash_seconds"] > 0 and policies["mask_seconds"] > 0
    assert policies["load_hash_seconds"] > 0 and policies["load_keep_seconds"] > 0
    assert "hashing 2,000 e-mails adds under 1 s to a load" in default_bench["stdout"]


def test_bench_measures_what_history_costs(default_bench):
    """History: every load off and on, on both engines and on a PostgreSQL 18 server the benchmark starts;
    the versions are what the folders hold."""
    _ran(default_bench)
    history = json.loads((default_bench["out"] / "history.json").read_text())["history"]
    loads = {(x["engine"], x["load"]): x for x in history["loads"]}
    assert set(loads) == {(e, load) for e in ("duckdb", "pg", "pg18") for load in ("first", "changed10")}
    assert history["server_versions"]["pg18"].startswith("18.")
    assert all(x["off_s"] > 0 and x["on_s"] > 0 and x["peak_rss_on_bytes"] > 0 for x in loads.values())
    changed = {step: c["changed"] for step, c in history["changed"].items()}
    assert 100 <= changed["changed10"] <= 300 and 5 <= changed["changed1"] <= 50  # about 10% and 1% of 2,000
    storage = {(x["engine"], x["after"]): x for x in history["storage"]}
    for engine in ("duckdb", "pg", "pg18"):  # the unchanged rows add no version; each changed row adds one
        assert storage[engine, "first"]["versions"] == 2000
        assert storage[engine, "changed10"]["versions"] == 2000 + changed["changed10"]
        assert storage[engine, "changed1"]["versions"] == 2000 + changed["changed10"] + changed["changed1"]
        assert isinstance(storage[engine, "changed1"]["bytes_per_version"], float)
    assert storage["pg", "changed10"]["added_bytes"] > 0  # the versions a reload adds take room, whatever the layout
    sample = {x["engine"]: x for x in history["sample"]["results"]}
    assert sample["duckdb"]["versions"] == sample["pg"]["versions"] == sample["pg18"]["versions"] > 0
    assert sample["duckdb"]["objects"] == 10 and sample["pg"]["added_bytes"] > 0
    text = (default_bench["out"] / "history.md").read_text()
    assert "history adds <= 20% to a PostgreSQL reload, 10% changed" in text and text.count("\n|") > 10
    assert "history adds <= 20% to a PostgreSQL 18 reload, 10% changed" in text


def test_a_history_load_in_a_fresh_process_reports_its_own_figures(default_bench, tmp_path):
    """What a default `make bench` does for each history load (the shared run above does them in its own process):
    the load in a fresh `python -m benchmarks.history` child, its result read back from the RESULT line."""
    from benchmarks.history import OBJECT, _child
    from benchmarks.loads import FIRST_DAY, backup_path

    _ran(default_bench)
    first = backup_path(default_bench["data"], OBJECT, ROWS, FIRST_DAY)
    result = _child(["--engine", "duckdb", "--target", str(tmp_path / "history.duckdb"), "--history", "on",
                     "--file", str(first), "--measure"], timeout=600)
    assert result["rows"] == result["inserted"] == ROWS and result["versions"] == {"task": ROWS}
    assert result["startup_s"] > 0 and result["peak_rss_bytes"] > 0 and result["bytes"] > 0
