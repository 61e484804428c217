"""`etl-assets bench --only catalog` at a tiny size: the figures are produced and the sensor's list
calls stay O(new) with discovered objects (counts are asserted, never seconds: not a timed test)."""

import json
import subprocess
import sys

import yaml

from etl_assets.salesforce.catalog import CATALOG_PATH, load_catalog
from etl_assets.salesforce.sensors import OPEN_FOLDERS
from benchmarks.catalog import generate_objects, write_state

OBJECTS, FOLDERS = 20, 6


def test_generated_state_is_a_realistic_mix_the_catalog_loads(tmp_path):
    """The state must be what discovery writes and what the code location merges, or the figures mean nothing."""
    state = write_state(tmp_path, OBJECTS)
    names = list(yaml.safe_load(state.read_text())["objects"])
    assert len(names) == OBJECTS
    assert any("__" not in n for n in names) and any(n.count("__") == 1 for n in names)
    assert len({n.split("__")[0] for n in names if n.count("__") >= 2}) >= 3
    fields = [len(e["columns"]) for e in generate_objects(OBJECTS).values()]
    assert min(fields) >= 10 and max(fields) <= 150
    catalog = load_catalog(CATALOG_PATH, state)
    assert set(names) <= set(catalog)
    assert {"salesforce", "salesforce_custom"} <= {o.group for o in catalog.values()}


def test_catalog_bench_produces_figures_and_o_new_list_calls(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "etl_assets.cli", "bench", "--only", "catalog", "--catalog-objects", str(OBJECTS),
         "--catalog-folders", str(FOLDERS), "--rounds", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    c = json.loads((out / "catalog.json").read_text())["catalog"]
    base, found = c["load"]["baseline"], c["load"]["discovered"]
    assert found["salesforce_assets"] - base["salesforce_assets"] == OBJECTS
    assert found["asset_checks"] - base["asset_checks"] == 3 * OBJECTS
    assert isinstance(found["total_s"], float) and found["peak_rss_bytes"] > 0  # a figure, not a bound

    objects = OBJECTS + base["salesforce_assets"]  # the declared objects are in the landing zone too
    local, s3 = c["sensor"]
    assert local["first_tick"]["run_requests"] == FOLDERS and local["one_new_folder"]["run_requests"] == 1
    # Local: one listing of backup/, then each open folder and each of its object folders; a new folder adds one set.
    assert local["first_tick"]["list_calls"] == 1 + FOLDERS * (1 + objects)
    assert local["unchanged_tick"]["list_calls"] == 1 + OPEN_FOLDERS * (1 + objects)
    assert local["one_new_folder"]["list_calls"] - local["unchanged_tick"]["list_calls"] == 1 + objects
    # S3: pages of 1,000 keys of the open folders (+ the new one): a handful, whatever the history.
    assert s3["unchanged_tick"]["list_calls"] == 1 and s3["one_new_folder"]["list_calls"] == 1
    assert s3["one_new_folder"]["run_requests"] == 1

    ui = {q["name"]: q for q in c["graphql"]["discovered"]["queries"]}
    assert ui["LocationWorkspaceAssetsQuery"]["result"].startswith(f"{found['assets']} nodes")
    assert all(len(q["seconds"]) == 1 for q in ui.values()), "one timing per query per round"
    assert "| LocationWorkspaceAssetsQuery |" in (out / "catalog.md").read_text()
