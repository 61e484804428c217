"""Issue 13's "done when": every object of a backup is an asset and a typed table, with no
hand-written line for it.

A backup of 33 objects that catalog.yaml does not name (standard objects with their recorded field
lists, `*History` objects without SystemModstamp, objects without IsDeleted, a custom object and a
namespaced one; fixtures/salesforce_describe/README.md says where each came from) goes through the
product the way an operator runs it:

a. `etl-assets catalog refresh --state <state>` (the real CLI) infers every object into the state;
   Campaign's booleans are empty in its first 1,200 rows, past the 1,000 sampled, and still typed.
b. `dagster-webserver` and `dagster-daemon` on a temporary production instance (PostgreSQL storage)
   load the code location with `ETL_ASSETS_SALESFORCE_DISCOVERED=<state>`; salesforce_backup_sensor
   ticks and requests the folder's run; every run it requested succeeds and every object has a table
   in a fresh PostgreSQL warehouse, one row per distinct Id of its CSV.
c. Each table's column types are the describe's (mapped by `columns_from_describe` and the catalog's
   rules), except exactly the KNOWN_DIFFERENCES, where values cannot tell the type.
d. The same backup typed by `etl-assets catalog import-describe`: the merged catalog has every column
   with the describe's type, and loading the folder in-process gives the describe's types everywhere.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml

from etl_assets.landing.zone import LocalLandingZone
from etl_assets.salesforce.assets import build_object_asset
from etl_assets.salesforce.catalog import CATALOG_PATH, DISCOVERED_ENV, parse_catalog
from etl_assets.salesforce.discovery import columns_from_describe, load_state
from etl_assets.salesforce.partitions import differential_folders
from etl_assets_tests import live
from etl_assets.warehouse.postgres import PostgresWarehouse
from etl_assets.warehouse.spec import ColumnType, column_name
from etl_assets_tests.conftest import _fresh_database
from etl_assets_tests.helpers import (
    REPO,
    finished_runs,
    materialize_folders,
    materialized_keys,
    pg_rows,
    production_deployment,
    resources,
    stack,
)

FIXTURES = Path(__file__).parent / "fixtures" / "salesforce_describe"
SENSOR = "salesforce_backup_sensor"
FOLDER = "20240601_Differential"
OBJECTS = (
    # Recorded v29.0 describes (sharpforce)
    "AccountContactRole", "Asset", "Attachment", "BusinessHours", "Campaign", "CampaignMember", "CaseComment",
    "CaseHistory", "ContentVersion", "Contract", "Document", "EmailTemplate", "EntitySubscription", "Group",
    "GroupMember", "Holiday", "Idea", "LoginHistory", "OpportunityHistory", "OpportunityLineItem", "Period",
    "Pricebook2", "PricebookEntry", "Product2", "RecordType", "Solution", "Topic",
    # CumulusCI's recorded cassettes, and the ones built from the Object Reference
    "Event", "OpportunityContactRole", "Custom__c", "AccountHistory", "UserRole", "acme__Inspection__c",
)
ROWS = 40
LATE = "Campaign"  # booleans empty in the first BLANK_ROWS of LATE_ROWS rows
LATE_ROWS, BLANK_ROWS = 1400, 1200
CATALOG_TO_WAREHOUSE = {"id": ColumnType.STRING, "time": ColumnType.STRING, "string": ColumnType.STRING,
                        "boolean": ColumnType.BOOLEAN, "integer": ColumnType.INTEGER, "float": ColumnType.FLOAT,
                        "date": ColumnType.DATE, "datetime": ColumnType.DATETIME}
# (object, column) -> (the type inferred from the export, why values cannot tell the describe's type).
KNOWN_DIFFERENCES: dict[tuple[str, str], tuple[ColumnType, str]] = {
    ("Event", "groupeventtype"): (ColumnType.INTEGER, "a picklist whose values are the codes 0-3: numbers in the file"),
    ("Event", "recurrence2patternversion"): (ColumnType.INTEGER, "a picklist whose values are the codes 1 and 2"),
    ("acme__Inspection__c", "acme__visits__c"): (ColumnType.INTEGER, "a double with scale 0: every exported "
                                                  "value is integral, so nothing shows it is a double"),
}


def describe_of(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def describe_types(describe: dict) -> dict[str, ColumnType]:
    """Warehouse column -> the type the describe implies (catalog type mapped to the warehouse's)."""
    return {column_name(api): CATALOG_TO_WAREHOUSE[c["type"]]
            for api, c in columns_from_describe(describe).columns.items()}


def table_types(warehouse: PostgresWarehouse, table: str) -> dict[str, ColumnType]:
    """The table's data columns (lineage columns, all `_`-prefixed, left out)."""
    return {name: t for name, t in warehouse.column_types("salesforce", table).items() if not name.startswith("_")}


def distinct_ids(path: Path) -> int:
    with open(path, newline="", encoding="utf-8") as f:
        return len({record["Id"] for record in csv.DictReader(f)})


def row_count(database: dict, table: str) -> int:
    return pg_rows(database, f'SELECT COUNT(*) FROM salesforce."{table}"')[0][0]


def warehouse_of(database: dict) -> PostgresWarehouse:
    return PostgresWarehouse(host=database["host"], port=database["port"], user=database["user"],
                             database=database["database"])


def cli(args: list[str], env: dict) -> str:
    result = subprocess.run([str(live.BIN / "etl-assets"), *args], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"etl-assets {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def differences(expected: dict[str, ColumnType], actual: dict[str, ColumnType]) -> dict[str, tuple]:
    """Column -> (expected, actual) wherever they differ (a missing column is None)."""
    return {name: (expected.get(name), actual.get(name)) for name in sorted(set(expected) | set(actual))
            if expected.get(name) is not actual.get(name)}


@pytest.mark.slow
def test_every_object_of_a_backup_becomes_a_typed_table(tmp_path, postgres_server, postgres_database,
                                                         dagster_storage_database, monkeypatch):
    from etl_assets_tests.salesforce_export import build_backup

    describes = {name: describe_of(name) for name in OBJECTS}
    catalog_yaml = yaml.safe_load(CATALOG_PATH.read_text(encoding="utf-8"))
    declared = {name.lower() for name in catalog_yaml["objects"]}
    assert len(OBJECTS) >= 30 and not declared & {name.lower() for name in OBJECTS}
    landing = tmp_path / "landing"
    files = build_backup(landing, [d for n, d in describes.items() if n != LATE], rows=ROWS, seed=13, folder=FOLDER)
    files |= build_backup(landing, [describes[LATE]], rows=LATE_ROWS, seed=13, folder=FOLDER,
                          blank_booleans=(LATE, BLANK_ROWS))

    state = tmp_path / "discovered.yaml"
    home, env = production_deployment(
        tmp_path, landing, dagster_storage_database, postgres_database, monkeypatch, **{DISCOVERED_ENV: str(state)},
        # One process per run, not per step: 33 small objects in one folder (each step process would load
        # the code location again, ~4 s of CPU each).
        ETL_ASSETS_EXECUTOR="in_process")

    # a. The real CLI infers every object; the late booleans are typed.
    cli(["catalog", "refresh", "--state", str(state)], env)
    inferred = load_state(state)
    assert sorted(inferred) == sorted(OBJECTS)
    late_booleans = [f["name"] for f in describes[LATE]["fields"] if f["type"] == "boolean"]
    assert late_booleans and {inferred[LATE]["columns"][n]["type"] for n in late_booleans} == {"boolean"}
    catalog = parse_catalog(catalog_yaml, yaml.safe_load(state.read_text(encoding="utf-8")))
    tables = {name: catalog[name].table for name in OBJECTS}

    # b. The daemon's sensor loads the folder on the production instance.
    with stack(home, env, tmp_path) as dagster:
        dagster.start_webserver(timeout=180, keep=(SENSOR,))  # the sensor itself runs by default
        dagster.start_daemon(daemons=())
        with dg.DagsterInstance.from_config(str(home)) as instance:
            def finished_tick():
                assert live.sensor_state(dagster.url, SENSOR)["status"] == "RUNNING"
                return live.first_finished_tick(dagster.url, SENSOR)
            tick = dagster.wait(finished_tick, 180, f"a finished tick of {SENSOR}")
            assert tick["status"] == "SUCCESS" and tick["runIds"], tick
            assert instance.get_dynamic_partitions(differential_folders.name) == [FOLDER]

            records = dagster.wait(lambda: finished_runs(instance), 900, "the sensor's runs to finish", interval=1)
            assert {r.dagster_run.run_id for r in records} == set(tick["runIds"]), "runs nobody requested"
            materialized = set()
            for record in records:
                run = record.dagster_run
                assert run.status == dg.DagsterRunStatus.SUCCESS, f"{run.run_id} {run.tags}: {run.status}"
                materialized |= materialized_keys(instance, run.run_id)
            assert materialized == {f"salesforce/{table}" for table in tables.values()}

    # c. The tables' types are the describes', but where values cannot tell.
    warehouse = warehouse_of(postgres_database)
    found = {}
    for name in OBJECTS:
        assert row_count(postgres_database, tables[name]) == distinct_ids(files[name]), name
        for column, pair in differences(describe_types(describes[name]), table_types(warehouse, tables[name])).items():
            found[(name, column)] = pair
    expected = {key: (describe_types(describes[key[0]])[key[1]], inferred_type)
                for key, (inferred_type, _) in KNOWN_DIFFERENCES.items()}
    assert found == expected

    # d. The describes typed through import-describe: exactly the describe's types, in the catalog and tables.
    described_state = tmp_path / "described.yaml"
    cli(["catalog", "import-describe", *[str(FIXTURES / f"{n}.json") for n in OBJECTS],
         "--state", str(described_state)], env)
    described = parse_catalog(catalog_yaml, yaml.safe_load(described_state.read_text(encoding="utf-8")))
    for name in OBJECTS:
        want = columns_from_describe(describes[name]).columns
        got = {c.api_name: c.catalog_type for c in described[name].columns}
        assert got == {api: c["type"] for api, c in want.items()}, name
        assert {c.source for c in described[name].columns} == {"described"}, name
    with _fresh_database(postgres_server, "etl_test_") as second:
        second_warehouse = warehouse_of(second)
        assets = [build_object_asset(described[name]) for name in OBJECTS]
        [result] = materialize_folders([FOLDER], resources(LocalLandingZone(root=str(landing)), second_warehouse),
                                       assets=assets)
        assert result.success
        for name in OBJECTS:
            table = described[name].table
            assert differences(describe_types(describes[name]), table_types(second_warehouse, table)) == {}, name
            assert row_count(second, table) == distinct_ids(files[name]), name
