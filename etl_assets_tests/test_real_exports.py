"""Issue 24, "Real Salesforce exports land": files written by Salesforce's own tools load whole.

Each fixture folder of fixtures/salesforce_exports/ holds what one tool writes (its README.md says
where each trait is documented): the Data Export service (quoted CRLF CSVs, `YYYY-MM-DD 00:00:00`
dates, header-only files, an ISO-8859-1 variant, one with line breaks kept), Data Loader
(upper-case headers, `.000Z`, relationship columns, no SystemModstamp), Bulk API 2.0 results, the
`sf` CLI (`data export bulk`, `data query`) and a backup tool (daily folders; and an API export:
`1`/empty checkboxes, `+0000`, `3.5E8`, 15-character Ids, a BOM). For each, on DuckDB and on
PostgreSQL, the files are landed under backup/, discovered (`refresh_state` into a temporary state
file, the one ETL_ASSETS_SALESFORCE_DISCOVERED names), materialized, and then:

- every record lands: each table holds exactly the fixture's distinct Ids, and no row is rejected;
- the interesting columns are typed (EXPECTED_TYPES), and every value of every file is what the
  records were (make_fixtures.py's `expected`: é, ñ, ü and 山田太郎 as themselves, a Data Export
  `2024-05-01 00:00:00` the date 2024-05-01, an empty API-export checkbox false, 15-character Ids
  in their 18-character form);
- header-only objects make empty tables, and a second materialize changes nothing.

Then: one backup through salesforce_backup_sensor, one through the real `etl-assets` CLI, the
Latin-1 export with and without the windows-1252 fallback, 50 good objects beside one unreadable
file, and a Data Export delivered as .zip archives.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
import zipfile
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
import yaml

from etl_assets.landing.zone import LocalLandingZone
from etl_assets.salesforce.assets import build_object_asset
from etl_assets.salesforce.catalog import CATALOG_PATH, DISCOVERED_ENV, load_catalog, parse_catalog
from etl_assets.salesforce.discovery import declared_objects, refresh_state
from etl_assets.salesforce.ids import eighteen_character_id
from etl_assets.salesforce.sensors import salesforce_backup_sensor
from etl_assets_tests import live
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets.warehouse.spec import ColumnType, column_name
from etl_assets_tests.helpers import (
    REPO,
    _canonical,
    _normalize,
    materialize_folders,
    resources,
    table_digest,
    warehouse_rows,
)

FIXTURES = Path(__file__).parent / "fixtures" / "salesforce_exports"
_spec = importlib.util.spec_from_file_location("salesforce_export_fixtures", FIXTURES / "make_fixtures.py")
make_fixtures = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = make_fixtures  # dataclasses look their module up while the file executes
_spec.loader.exec_module(make_fixtures)

LANDINGS = make_fixtures.landings()
TOOLS = ["data_export", "data_export_multiline", "data_export_latin1", "data_loader", "bulk_api_2", "sf_cli",
         "backup_tool", "backup_tool_api_export"]
ENCODING_SETTINGS = ("ETL_ASSETS_SALESFORCE_ENCODING", "ETL_ASSETS_SALESFORCE_FOLDER_ENCODINGS",
                     "ETL_ASSETS_SALESFORCE_FALLBACK_ENCODING")
SETTING = re.compile(r"ETL_ASSETS_SALESFORCE_(FALLBACK_|FOLDER_)?ENCODINGS?")

S, DT, D, B, I, F = (ColumnType.STRING, ColumnType.DATETIME, ColumnType.DATE, ColumnType.BOOLEAN,
                     ColumnType.INTEGER, ColumnType.FLOAT)
# (object, warehouse column) -> type, checked wherever a tool's files have the column. Declared
# columns (catalog.yaml) and columns typed by discovery alike; Ids are text (18 characters).
EXPECTED_TYPES: dict[str, dict[str, ColumnType]] = {
    "Account": {"id": S, "isdeleted": B, "name": S, "type": S, "recordtypeid": S, "parentid": S,
                "billingpostalcode": S, "shippingpostalcode": S, "billinglatitude": F, "billinglongitude": F,
                "annualrevenue": F, "numberofemployees": I, "description": S, "ownerid": S, "owner_name": S,
                "createddate": DT, "lastmodifieddate": DT, "systemmodstamp": DT, "lastactivitydate": D,
                "founded__c": D, "customer_score__c": F, "is_partner__c": B, "sla_expiration__c": D},
    "Contact": {"id": S, "accountid": S, "account_name": S, "name": S, "email": S, "birthdate": D,
                "hasoptedoutofemail": B, "isdeleted": B, "mailingpostalcode": S, "createddate": DT,
                "lastmodifieddate": DT, "systemmodstamp": DT, "lastactivitydate": D, "emailbounceddate": DT,
                "owner_name": S},
    "Opportunity": {"id": S, "accountid": S, "name": S, "closedate": D, "amount": F, "expectedrevenue": F,
                    "probability": F, "isclosed": B, "iswon": B, "hasopportunitylineitem": B, "fiscalyear": I,
                    "fiscalquarter": I, "fiscal": S, "createddate": DT, "lastmodifieddate": DT,
                    "systemmodstamp": DT},
    "Case": {"id": S, "casenumber": S, "subject": S, "description": S, "isclosed": B, "closeddate": DT,
             "isescalated": B, "contactid": S, "createddate": DT, "systemmodstamp": DT},
    "Task": {"id": S, "whoid": S, "whatid": S, "activitydate": D, "calldurationinseconds": I, "isclosed": B,
             "ishighpriority": B, "isreminderset": B, "reminderdatetime": DT, "completeddatetime": DT,
             "isarchived": B, "systemmodstamp": DT},
    "User": {"id": S, "username": S, "isactive": B, "lastlogindate": DT, "communitynickname": S, "postalcode": S,
             "managerid": S, "systemmodstamp": DT},
    "AccountHistory": {"id": S, "accountid": S, "createddate": DT, "field": S, "oldvalue": S, "newvalue": S,
                       "isdeleted": B},
    "ns__Thing__c": {"id": S, "name": S, "ns__account__c": S, "ns__due_date__c": D, "ns__quantity__c": F,
                     "ns__unit_price__c": F, "ns__active__c": B, "ns__expires_at__c": DT, "ns__notes__c": S,
                     "systemmodstamp": DT},
    "Lead": {"id": S, "isconverted": B, "converteddate": D, "numberofemployees": I, "createddate": DT},
}


# --- landing, discovery, loading ------------------------------------------------------------------

def land(name: str, root: Path) -> Path:
    """The landing's fixture files copied to `root/backup/<folder>/<Object>/<file>`."""
    for f in LANDINGS[name].files:
        target = root / "backup" / f.key
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIXTURES / f.fixture, target)
    return root


@pytest.fixture(autouse=True)
def default_encoding_settings(monkeypatch):
    """Every test starts from the defaults: UTF-8, windows-1252 as the fallback."""
    for name in ENCODING_SETTINGS:
        monkeypatch.delenv(name, raising=False)


def discover(root: Path, state: Path, monkeypatch) -> tuple[dict, dict]:
    """`etl-assets catalog refresh` in-process into `state` (the code location's discovered state
    for this test), and the catalog merged from catalog.yaml and that state."""
    monkeypatch.setenv(DISCOVERED_ENV, str(state))
    summary = refresh_state(LocalLandingZone(root=str(root)), state, declared=declared_objects())
    document = yaml.safe_load(CATALOG_PATH.read_text(encoding="utf-8"))
    discovered = yaml.safe_load(state.read_text(encoding="utf-8")) if state.exists() else None
    return summary, parse_catalog(document, discovered)


def entry(catalog: dict, api_name: str):
    found = [obj for name, obj in catalog.items() if name.lower() == api_name.lower()]
    assert found, f"{api_name} is not in the catalog after the refresh (catalog.yaml nor the discovered state)"
    return found[0]


def assets_for(catalog: dict, names) -> list[dg.AssetsDefinition]:
    return [build_object_asset(entry(catalog, name)) for name in names]


def failures(result) -> dict[str, str]:
    """Step key -> why it failed, for every failed step of a run."""
    found = {}
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        found[event.step_key] = " ".join(filter(None, [
            data.user_failure_data.description if data.user_failure_data else None,
            data.error.message if data.error else None]))
    return found


def assert_succeeded(results) -> None:
    problems = {k: v for result in results for k, v in failures(result).items()}
    assert all(r.success for r in results) and not problems, f"steps failed: {json.dumps(problems, indent=1)}"


def materializations(result) -> dict[str, dict]:
    """Table -> the metadata of its materialization in a run."""
    return {e.asset_key.path[-1]: e.step_materialization_data.materialization.metadata
            for e in result.get_asset_materialization_events()}


def row_count(warehouse: Warehouse, table: str) -> int | None:
    """Rows of a table; None when there is no such table."""
    if not warehouse.column_types("salesforce", table):
        return None
    return len(warehouse.read_table("salesforce", table))


# --- what a correct load holds --------------------------------------------------------------------

def same(got, want) -> bool:
    got = _normalize(got)
    if want is None:
        return got in (None, "")
    if want == make_fixtures.EMPTY_REFERENCE:  # an empty lookup: kept as written, or null
        return got in (None, "", make_fixtures.EMPTY_REFERENCE)
    if isinstance(want, bool):
        return got is not None and not isinstance(got, str) and bool(got) is want
    if isinstance(want, dt.datetime):
        return isinstance(got, dt.datetime) and got == want
    if isinstance(want, dt.date):
        return isinstance(got, dt.date) and (got.date() if isinstance(got, dt.datetime) else got) == want
    if isinstance(want, (int, float)):
        return (got not in (None, "") and not isinstance(got, (str, bool, dt.date))
                and math.isclose(float(got), float(want), rel_tol=1e-12, abs_tol=1e-9))
    return got == want


def check_landing(name: str, warehouse: Warehouse, catalog: dict) -> list[str]:
    """Every problem with the tables of a loaded landing (empty: every record, type and value right)."""
    landing = LANDINGS[name]
    problems: list[str] = []
    for api in landing.objects:
        table = entry(catalog, api).table
        expected = landing.final_rows(api)
        count = row_count(warehouse, table)
        if count is None:
            problems.append(f"{api}: no table salesforce.{table}")
            continue
        rejected = row_count(warehouse, f"{table}_rejects") or 0
        if rejected:
            reasons = warehouse.read_table("salesforce", f"{table}_rejects")[["column_name", "reason"]]
            problems.append(f"{api}: {rejected} row(s) rejected, e.g. {reasons.head(3).to_dict('records')}")
        rows = warehouse_rows(warehouse, table) if count else {}
        if set(rows) != set(expected):
            missing, extra = sorted(set(expected) - set(rows))[:3], sorted(set(rows) - set(expected))[:3]
            problems.append(f"{api}: {len(rows)} rows, expected the fixture's {len(expected)} distinct Ids "
                            f"(missing {missing}, extra {extra})")
        types = warehouse.column_types("salesforce", table)
        headers = {column_name(h) for f in landing.files if f.api_name == api for h in f.header}
        for column, want in EXPECTED_TYPES.get(api, {}).items():
            if column in headers and types.get(column) is not want:
                problems.append(f"{api}.{column}: typed {getattr(types.get(column), 'value', None)}, "
                                f"expected {want.value}")
        wrong = []
        for key, row in expected.items():
            if key not in rows:
                continue
            for field, want in row.items():
                got = rows[key].get(column_name(field), "<no column>")
                if not same(got, want):
                    wrong.append(f"{api} {key} {field}: {got!r} != {want!r}")
        problems += wrong[:15] + ([f"{api}: ... {len(wrong) - 15} more wrong values"] if len(wrong) > 15 else [])
    return problems


def digests(warehouse: Warehouse, catalog: dict, objects) -> dict[str, list]:
    return {api: table_digest(warehouse, entry(catalog, api).table) for api in objects
            if row_count(warehouse, entry(catalog, api).table) is not None}


# --- the committed fixtures -----------------------------------------------------------------------

def test_fixture_files_are_what_make_fixtures_writes():
    """The committed CSVs are the generator's output byte for byte, and nothing else is there."""
    written = {f.fixture: f.data for landing in LANDINGS.values() for f in landing.files}
    for path, data in written.items():
        assert (FIXTURES / path).read_bytes() == data, f"{path} differs from make_fixtures.py's output"
    on_disk = {p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*.csv")}
    assert on_disk == set(written)


def test_fixture_ids_are_real_salesforce_ids():
    """Every 18-character Id has the checksum of its first 15 characters (the backup tool's empty
    lookup `000000000000000AAA` included); 15-character ones appear only where a tool writes them."""
    for landing in LANDINGS.values():
        for f in landing.files:
            with open(FIXTURES / f.fixture, newline="", encoding=f.dialect.encoding) as handle:
                reader = csv.reader(handle)
                header = [h.lstrip("\ufeff") for h in next(reader)]
                for record in reader:
                    for name, value in zip(header, record):
                        if name.lower() == "id" or (name.lower().endswith("id") and "." not in name):
                            if len(value) == 18:
                                assert eighteen_character_id(value[:15]) == value, (f.fixture, name, value)
                            else:
                                assert value == "" or (len(value) == 15 and name.lower() == "recordtypeid"), (
                                    f.fixture, name, value)


# --- every tool, on both engines ------------------------------------------------------------------

@pytest.mark.parametrize("tool", TOOLS)
def test_every_record_of_a_tools_export_lands_typed(tool, warehouse, tmp_path, monkeypatch):
    root = land(tool, tmp_path / "landing")
    summary, catalog = discover(root, tmp_path / "discovered.yaml", monkeypatch)
    assert summary.get("unreadable") == [], f"refresh's list of unreadable files: {summary.get('unreadable')!r}"
    landing = LANDINGS[tool]
    assets = assets_for(catalog, landing.objects)
    zone = LocalLandingZone(root=str(root))
    assert_succeeded(materialize_folders(landing.folders, resources(zone, warehouse), assets=assets,
                                         raise_on_error=False))
    problems = check_landing(tool, warehouse, catalog)
    for api in landing.objects:  # header-only objects make empty tables
        if not landing.final_rows(api) and row_count(warehouse, entry(catalog, api).table) != 0:
            problems.append(f"{api}: header-only files, expected an empty table")
    assert not problems, f"{tool} on {type(warehouse).__name__}:\n" + "\n".join(problems)

    before = digests(warehouse, catalog, landing.objects)
    assert_succeeded(materialize_folders(landing.folders, resources(zone, warehouse), assets=assets,
                                         raise_on_error=False))
    assert digests(warehouse, catalog, landing.objects) == before, "a second materialize changed a table"


# --- the sensor, the CLI --------------------------------------------------------------------------

@pytest.fixture
def fresh_catalog():
    """load_catalog() reads the discovered state named by the environment once per process: clear it
    before and after, so the sensor sees this test's state and later tests the default one."""
    load_catalog.cache_clear()
    yield
    load_catalog.cache_clear()


def test_a_backup_tools_folders_through_the_sensor(tmp_path, monkeypatch, fresh_catalog):
    """The backup tool's two daily folders: one tick requests each folder's objects, the runs load
    every record (the second day's versions winning), and the next tick requests nothing."""
    root = land("backup_tool", tmp_path / "landing")
    _, catalog = discover(root, tmp_path / "discovered.yaml", monkeypatch)
    load_catalog.cache_clear()
    zone = LocalLandingZone(root=str(root))
    warehouse = DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))
    landing = LANDINGS["backup_tool"]
    by_key = {build_object_asset(entry(catalog, api)).key: entry(catalog, api) for api in landing.objects}
    instance = dg.DagsterInstance.ephemeral()

    with dg.build_sensor_context(instance=instance, resources={"landing_zone": zone}) as context:
        first = salesforce_backup_sensor(context)
    requested = {r.partition_key: set(r.asset_selection) for r in first.run_requests}
    on_disk = {folder: {k for k, obj in by_key.items()
                        if any(f.key.startswith(f"{folder}/") and f.api_name == obj.api_name for f in landing.files)}
               for folder in landing.folders}
    assert requested == on_disk
    assert [k for r in first.dynamic_partitions_requests for k in r.partition_keys] == landing.folders

    for request in sorted(first.run_requests, key=lambda r: r.partition_key):
        assets = [build_object_asset(by_key[k]) for k in request.asset_selection]
        assert_succeeded(materialize_folders([request.partition_key], resources(zone, warehouse), instance=instance,
                                             assets=assets, raise_on_error=False))
    problems = check_landing("backup_tool", warehouse, catalog)
    assert not problems, "\n".join(problems)

    with dg.build_sensor_context(instance=instance, cursor=first.cursor, resources={"landing_zone": zone}) as context:
        second = salesforce_backup_sensor(context)
    assert not second.run_requests


def cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(live.BIN / "etl-assets"), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def test_the_cli_refreshes_and_materializes_an_sf_cli_export(tmp_path):
    """`etl-assets catalog refresh` then `etl-assets materialize`, real processes, on the `sf` exports."""
    root = land("sf_cli", tmp_path / "landing")
    state, path = tmp_path / "discovered.yaml", tmp_path / "warehouse.duckdb"
    env = live.environment(landing=root, **live.duckdb_warehouse(path), **{DISCOVERED_ENV: str(state)},
                           ETL_ASSETS_EXECUTOR="in_process")
    refreshed = cli(["catalog", "refresh", "--state", str(state)], env)
    assert refreshed.returncode == 0, refreshed.stdout + refreshed.stderr
    assert "unreadable" not in refreshed.stdout, refreshed.stdout
    first = cli(["materialize", "--ephemeral"], env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "20240605_Differential: ok" in first.stdout, first.stdout
    assert "Rejected rows" not in first.stdout, first.stdout
    catalog = parse_catalog(yaml.safe_load(CATALOG_PATH.read_text(encoding="utf-8")),
                            yaml.safe_load(state.read_text(encoding="utf-8")))
    warehouse = DuckDBWarehouse(path=str(path))
    problems = check_landing("sf_cli", warehouse, catalog)
    assert not problems, "\n".join(problems)

    second = cli(["materialize", "--ephemeral"], env)
    assert second.returncode == 0, second.stdout + second.stderr
    for line in second.stdout.splitlines():
        if line.startswith("salesforce."):
            _, _, _, _, inserted, updated, _, _ = line.split()  # ... table_rows, versions
            assert (inserted, updated) == ("0", "0"), line


# --- encodings ------------------------------------------------------------------------------------

def latin1_landing(root: Path) -> Path:
    """The ISO-8859-1 Account and Contact files, and the same export's User file in UTF-8."""
    land("data_export_latin1", root)
    user = next(f for f in LANDINGS["data_export"].files if f.api_name == "User")
    target = root / "backup" / user.key
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURES / user.fixture, target)
    return root


LATIN1_FILES = LANDINGS["data_export_latin1"].files
FULL = "20240602_Full"


def test_a_latin1_export_is_read_through_the_windows_1252_fallback(tmp_path, monkeypatch):
    root = latin1_landing(tmp_path / "landing")
    summary, catalog = discover(root, tmp_path / "discovered.yaml", monkeypatch)
    assert summary.get("unreadable") == [], f"refresh's list of unreadable files: {summary.get('unreadable')!r}"
    warehouse = DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))
    zone = LocalLandingZone(root=str(root))
    [result] = materialize_folders([FULL], resources(zone, warehouse),
                                   assets=assets_for(catalog, ["Account", "Contact", "User"]), raise_on_error=False)
    assert_succeeded([result])
    problems = check_landing("data_export_latin1", warehouse, catalog)
    assert not problems, "\n".join(problems)
    names = {row["lastname"] for row in warehouse_rows(warehouse, "contact").values()}
    assert {"Muñoz", "Lefèvre", "Weiß", "Ångström", "O'Brien", "Peña", "Brontë"} <= names
    assert "Müller Präzisionstechnik GmbH" in {row["name"] for row in warehouse_rows(warehouse, "account").values()}
    metadata = materializations(result)
    for table in ("account", "contact"):
        text = json.dumps({k: str(v.value) for k, v in metadata[table].items()}, ensure_ascii=False).lower()
        assert "windows-1252" in text or "cp1252" in text, f"{table}'s materialization does not say so: {text}"
    user = json.dumps({k: str(v.value) for k, v in metadata["user"].items()}).lower()
    assert "windows-1252" not in user and "cp1252" not in user


def test_without_a_fallback_a_latin1_file_fails_its_object_naming_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("ETL_ASSETS_SALESFORCE_FALLBACK_ENCODING", "none")
    root = latin1_landing(tmp_path / "landing")
    summary, catalog = discover(root, tmp_path / "discovered.yaml", monkeypatch)
    unreadable = {item["file"]: item["reason"] for item in summary.get("unreadable", [])}
    for f in LATIN1_FILES:
        key = f"backup/{f.key}"
        assert key in unreadable, f"refresh did not list {key} as unreadable: {unreadable}"
        assert SETTING.search(unreadable[key]), unreadable[key]
    warehouse = DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))
    zone = LocalLandingZone(root=str(root))
    [result] = materialize_folders([FULL], resources(zone, warehouse),
                                   assets=assets_for(catalog, ["Account", "Contact", "User"]), raise_on_error=False)
    failed = failures(result)
    assert set(failed) == {"salesforce__account", "salesforce__contact"}, failed
    for step, why in failed.items():
        assert SETTING.search(why), f"{step}: {why}"
    assert set(materializations(result)) == {"user"}
    assert row_count(warehouse, "user") == len(LANDINGS["data_export"].final_rows("User"))


# --- an unreadable file among 50 good objects -----------------------------------------------------

GOOD_OBJECTS = [f"Obj{n:02d}__c" for n in range(1, 51)]
BROKEN = "Broken__c"
FOLDER = "20240607_Differential"


def write_objects(root: Path) -> str:
    """50 small custom objects and Broken__c, whose file's third record opens a quote never closed.
    Returns the broken file's key."""
    header = ["Id", "IsDeleted", "Name", "Amount__c", "Due__c", "CreatedDate", "LastModifiedDate", "SystemModstamp"]
    for n, api in enumerate(GOOD_OBJECTS + [BROKEN], start=1):
        prefix = "a" + make_fixtures._BASE62[n // 62] + make_fixtures._BASE62[n % 62]
        rows = [[make_fixtures.sfid(prefix, k), "false", f"{api} record {k}", f"{k * 10.5}", f"2024-0{k}-15",
                 f"2024-05-0{k}T10:00:00.000Z", f"2024-05-0{k}T11:00:00.000Z", f"2024-05-0{k}T11:00:00.000Z"]
                for k in (1, 2, 3)]
        path = root / "backup" / FOLDER / api / f"{api}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, quoting=csv.QUOTE_ALL)
            writer.writerow(header)
            writer.writerows(rows[:2])
            if api == BROKEN:
                # The quote opened in the third field is never closed: the rest of the file is inside it.
                f.write(f'"{rows[2][0]}","false","a name whose quote is never closed,31.5,2024-03-15\n')
                f.write(f'{rows[2][0]},false,next,1,2024-03-16,2024-05-03T10:00:00.000Z\n')
            else:
                writer.writerow(rows[2])
    return f"backup/{FOLDER}/{BROKEN}/{BROKEN}.csv"


def test_fifty_good_objects_load_beside_one_unreadable_file(tmp_path, monkeypatch):
    root = tmp_path / "landing"
    broken = write_objects(root)
    summary, catalog = discover(root, tmp_path / "discovered.yaml", monkeypatch)
    unreadable = summary.get("unreadable", [])
    assert [item["file"] for item in unreadable] == [broken], unreadable
    assert isinstance(unreadable[0]["reason"], str) and unreadable[0]["reason"].strip()
    assert set(GOOD_OBJECTS) <= set(summary["added"]), summary["added"]
    for api in GOOD_OBJECTS:
        assert entry(catalog, api).column("amount__c").type is F and entry(catalog, api).column("due__c").type is D

    warehouse = DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))
    zone = LocalLandingZone(root=str(root))
    [result] = materialize_folders([FOLDER], resources(zone, warehouse),
                                   assets=assets_for(catalog, GOOD_OBJECTS + [BROKEN]), raise_on_error=False)
    failed = failures(result)
    assert set(failed) == {f"salesforce__{BROKEN.lower()}"}, failed
    assert broken in failed[f"salesforce__{BROKEN.lower()}"], failed
    assert set(materializations(result)) == {api.lower() for api in GOOD_OBJECTS}
    for api in GOOD_OBJECTS:
        assert row_count(warehouse, api.lower()) == 3, api
        assert not row_count(warehouse, f"{api.lower()}_rejects"), api


# --- the Data Export service's zip archives -------------------------------------------------------

ARCHIVES = {1: ["Account", "Contact", "Opportunity", "Case", "Task"],
            2: ["User", "AccountHistory", "ns__Thing__c", "Lead", "Campaign"]}


def zip_landing(root: Path) -> dict[str, str]:
    """The Data Export's CSVs as the service delivers them: `WE_<org Id>_<n>.ZIP` archives of
    `<Object>.csv` members at the root, in backup/<folder>/. Returns object -> its zip member key."""
    folder = root / "backup" / FULL
    folder.mkdir(parents=True)
    members = {}
    for n, objects in ARCHIVES.items():
        name = f"WE_{make_fixtures.ORG_ID}_{n}.ZIP"
        with zipfile.ZipFile(folder / name, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for api in objects:
                archive.write(FIXTURES / "data_export" / f"{api}.csv", f"{api}.csv")
                members[api] = f"backup/{FULL}/{name}/{api}.csv"
    return members


@contextmanager
def second_warehouse(warehouse: Warehouse, tmp_path: Path, request):
    """Another, empty warehouse on the same engine as `warehouse`."""
    if isinstance(warehouse, DuckDBWarehouse):
        yield DuckDBWarehouse(path=str(tmp_path / "zipped.duckdb"))
        return
    from etl_assets.warehouse.postgres import PostgresWarehouse
    from etl_assets_tests.conftest import _fresh_database

    with _fresh_database(request.getfixturevalue("postgres_server"), "etl_test_") as database:
        yield PostgresWarehouse(host=database["host"], port=database["port"], user=database["user"],
                                database=database["database"])


def lineage_free_digest(warehouse: Warehouse, table: str) -> list[tuple]:
    frame = warehouse.read_table("salesforce", table).drop(columns=["_loaded_at", "_source_file"], errors="ignore")
    frame = frame[sorted(frame.columns)]
    frame = frame.astype(object).where(frame.notna(), None)
    return sorted(tuple(map(_canonical, row)) for row in frame.itertuples(index=False))


def test_a_data_export_zip_loads_as_its_unpacked_csvs(warehouse, tmp_path, monkeypatch, request):
    unpacked = land("data_export", tmp_path / "unpacked")
    _, catalog = discover(unpacked, tmp_path / "unpacked.yaml", monkeypatch)
    objects = LANDINGS["data_export"].objects
    assert_succeeded(materialize_folders([FULL], resources(LocalLandingZone(root=str(unpacked)), warehouse),
                                         assets=assets_for(catalog, objects), raise_on_error=False))

    zipped = tmp_path / "zipped"
    members = zip_landing(zipped)
    summary, zipped_catalog = discover(zipped, tmp_path / "zipped.yaml", monkeypatch)
    assert summary.get("unreadable") == [], f"refresh's list of unreadable files: {summary.get('unreadable')!r}"
    assert (tmp_path / "zipped.yaml").read_text(encoding="utf-8") == (tmp_path / "unpacked.yaml").read_text(
        encoding="utf-8"), "the archives' members were not typed as the unpacked files were"
    with second_warehouse(warehouse, tmp_path, request) as other:
        assert_succeeded(materialize_folders([FULL], resources(LocalLandingZone(root=str(zipped)), other),
                                             assets=assets_for(zipped_catalog, objects), raise_on_error=False))
        problems = check_landing("data_export", other, zipped_catalog)
        assert not problems, "\n".join(problems)
        for api in objects:
            table = entry(catalog, api).table
            assert lineage_free_digest(other, table) == lineage_free_digest(warehouse, table), api
            sources = set(other.read_table("salesforce", table)["_source_file"])
            has_rows = bool(LANDINGS["data_export"].final_rows(api))
            assert sources == ({members[api]} if has_rows else set()), (api, sources)
