"""Names are data, never structure (issue 25): object folders named by no rule sit next to good
objects; `catalog refresh`, the code location, the sensor and a load all go on, and every good
object loads. The rule (docs/salesforce-objects.md#object-names): an object is a Salesforce API
name; anything else is refused for that object only, with its reason; a long API name gets a
shortened table name."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from etl_assets.landing.zone import LocalLandingZone
from etl_assets.salesforce.assets import build_object_asset
from etl_assets.salesforce.catalog import (
    CATALOG_PATH,
    NOT_AN_OBJECT_NAME,
    load_catalog,
    refused_objects,
    table_name,
)
from etl_assets.salesforce.discovery import load_state, refresh_command
from etl_assets.salesforce.sensors import BackupCursor, scan_backups
from etl_assets.samples.salesforce import salesforce_id
from etl_assets_tests.helpers import materialize_folders, resources

FOLDER = "20240501_Differential"
LONG = "averylongnamespace__" + "Inspection_Checklist_Item_Record_" + "x" * 8 + "__c"  # 62 characters
ZOO = ["My Object", "x.y", "...", "O'Brien__c", "a" * 200, "Caf\u00e9__c", "tab\there", "1st__c", "-dash",
       "semi;colon", "new\nline"]
GOOD = ["Good__c", "Other__c", LONG]


def _csv(n: int) -> str:
    stamp = "2024-05-01T06:32:11.000Z"
    return "Id,Name,SystemModstamp\n" + "".join(f"{salesforce_id('a0X', n * 10 + i)},row {i},{stamp}\n" for i in range(3))


@pytest.fixture
def zoo(tmp_path) -> Path:
    root = tmp_path / "landing"
    for n, name in enumerate(ZOO + GOOD):
        directory = root / "backup" / FOLDER / name
        directory.mkdir(parents=True)
        (directory / "data.csv").write_text(_csv(n))
    return root


def test_the_rule():
    assert table_name("litify_pm__Matter__c") == "litify_pm__matter__c"
    short = table_name(LONG)
    assert len(short + "_full_backup_ids") <= 63 and len(short + "_rejects") <= 63
    assert short.startswith(LONG.lower()[:38])
    assert table_name(LONG + "y") != short  # a hash of the whole name keeps long names apart


def test_a_zoo_of_names_never_stops_refresh_the_code_location_the_sensor_or_a_load(zoo, tmp_path, monkeypatch,
                                                                                  capsys, warehouse):
    state = tmp_path / "discovered.yaml"
    assert refresh_command(argparse.Namespace(state=str(state), sample_rows=1000), LocalLandingZone(root=str(zoo))) == 0
    out = capsys.readouterr().out
    assert set(load_state(state)) == set(GOOD)  # nothing of the zoo reaches the state
    for name in ZOO:
        assert f"refused: {name!r} (in {FOLDER}): {NOT_AN_OBJECT_NAME}" in out, name

    # A state edited by hand (or written before the rule) with bad names: the catalog loads without them.
    document = yaml.safe_load(state.read_text())
    document["objects"]["My Object"] = {"source": "inferred", "columns": {"Id": {"type": "id", "source": "inferred"}}}
    document["objects"]["Weird__c"] = {"source": "inferred", "columns": "not a mapping"}
    state.write_text(yaml.safe_dump(document))
    load_catalog.cache_clear()
    try:
        catalog = load_catalog(CATALOG_PATH, state)
        refused = refused_objects(CATALOG_PATH, state)
    finally:
        load_catalog.cache_clear()
    assert set(GOOD) <= set(catalog) and "My Object" not in catalog and "Weird__c" not in catalog
    assert refused["My Object"] == NOT_AN_OBJECT_NAME and "Weird__c" in refused

    # The sensor requests the good objects and names the refused ones (they are not pending forever).
    scan = scan_backups(LocalLandingZone(root=str(zoo)), BackupCursor(), catalog)
    assert {k.path[-1] for r in scan.run_requests for k in r.asset_selection} == {table_name(n) for n in GOOD}
    assert set(scan.refused) == set(ZOO) and not scan.unknown_objects and not scan.cursor.pending

    # Every good object loads, the long one into its shortened table.
    assets = [build_object_asset(catalog[name]) for name in GOOD]
    [result] = materialize_folders([FOLDER], resources(LocalLandingZone(root=str(zoo)), warehouse), assets=assets)
    assert result.success
    for name in GOOD:
        assert warehouse.query(f"SELECT count(*) FROM salesforce.{table_name(name)}") == [(3,)]


def test_the_code_location_loads_with_a_state_full_of_bad_names(tmp_path):
    """The real import, in a fresh process, with warnings as errors: one bad entry must not take every
    asset and sensor of every domain down."""
    state = tmp_path / "discovered.yaml"
    state.write_text(yaml.safe_dump({"objects": {
        "My Object": {"source": "inferred", "columns": {"Id": {"type": "id", "source": "inferred"}}},
        "x" * 200: {"source": "inferred", "columns": {"Id": {"type": "id", "source": "inferred"}}},
        "Good__c": {"source": "inferred", "columns": {"Id": {"type": "id", "source": "inferred"},
                                                      "\u540d\u524d": {"type": "string", "source": "inferred"}}},
    }}))
    code = ("import warnings; warnings.simplefilter('error'); import etl_assets.definitions as d; "
            "keys = {k.to_user_string() for k in d.defs.resolve_all_asset_keys()}; "
            "assert 'salesforce/good__c' in keys and 'salesforce/task' in keys, keys; print(len(keys))")
    done = subprocess.run([sys.executable, "-c", code], env={**_env(), "ETL_ASSETS_SALESFORCE_DISCOVERED": str(state)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("ETL_ASSETS_")}


def test_materialize_names_the_refused_folders(zoo, tmp_path, monkeypatch):
    """The CLI says, for each refused object folder, that it was not loaded and why."""
    state = tmp_path / "discovered.yaml"
    state.write_text("objects: {}\n")
    env = {**_env(), "ETL_ASSETS_LANDING_ROOT": str(zoo), "ETL_ASSETS_SALESFORCE_DISCOVERED": str(state),
           "ETL_ASSETS_DUCKDB_PATH": str(tmp_path / "w.duckdb"), "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    done = subprocess.run([str(Path(sys.executable).with_name("etl-assets")), "materialize", "--ephemeral"], env=env,
                          capture_output=True, text=True, timeout=600)
    for name in ZOO:
        assert f"not loaded: {name!r} in {FOLDER}: {NOT_AN_OBJECT_NAME}" in done.stderr, (name, done.stderr[-2000:])
    assert dg.AssetKey  # the CLI ran its scan; nothing to load (no object is known): exit 0
    assert done.returncode == 0, done.stderr[-2000:]
