"""Discovery: types inferred from export-shaped rows and read from real describes, and the state
file they write (`discovered.yaml`), which a second run must leave untouched."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import yaml

from etl_assets.landing.csv_reader import iter_csv_chunks, read_header
from etl_assets.landing.zone import LocalLandingZone, S3LandingZone
from etl_assets.salesforce.discovery import (
    columns_from_describe,
    import_describe_command,
    import_describes,
    infer_column_types,
    load_state,
    refresh_command,
    refresh_state,
    render_state,
)
from etl_assets.salesforce.catalog import DISCOVERED_ENV, load_catalog
from etl_assets.samples.salesforce import salesforce_id
from etl_assets_tests.conftest import S3_CREDENTIALS, upload_tree
from etl_assets_tests.salesforce_export import (
    build_backup,
    exportable_fields,
    write_export_csv,
)

FIXTURES = Path(__file__).parent / "fixtures" / "salesforce_describe"
DESCRIBES = {path.stem: json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))}
MAPPED = {
    "id": "id", "reference": "id", "boolean": "boolean", "int": "integer", "double": "float", "currency": "float",
    "percent": "float", "date": "date", "datetime": "datetime", "time": "time", "string": "string",
    "textarea": "string", "picklist": "string", "multipicklist": "string", "combobox": "string", "email": "string",
    "phone": "string", "url": "string", "encryptedstring": "string", "anyType": "string",
}


def types(header, rows) -> dict[str, str]:
    return {name: column["type"] for name, column in infer_column_types(header, rows).items()}


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    header, lines = read_header(path, path.name)
    rows = []
    for chunk in iter_csv_chunks(path, path.name, header, lines):
        rows += [list(r) for r in zip(*(chunk.batch.column(i).to_pylist() for i in range(len(header))))]
    return header, rows


# --- inference -----------------------------------------------------------------------------------

def test_inference_on_export_shaped_values():
    id18 = salesforce_id("001", 42)
    header = ["Id", "OwnerId", "Legacy__c", "Flag__c", "Bit__c", "Count__c", "Amount__c", "Day__c", "At__c",
              "Clock__c", "Mixed__c", "Empty__c", "Zip__c", "Big__c", "Exp__c", "Offset__c"]
    rows = [
        [id18, id18[:15], id18, "", "0", "12", "-12.50", "2024-05-01", "2024-05-01T06:32:11.000Z",
         "10:30:00.000Z", "2024-05-01", "", "00501", "1234567890123456789", "1.5E3", "2024-05-01T06:32:11+0000"],
        [salesforce_id("001", 43), "", salesforce_id("005", 7), "", "1", "-3", "7", "4000-12-31",
         "1700-01-01T00:00:00.000Z", "23:59:59.999Z", "2024-05-01T06:32:11.000Z", "", "02134", "1", "2",
         "2024-05-01T06:32:11.000-07:00"],
        [salesforce_id("001", 44), "", "", "TRUE", "1", "+5", "0.0", "", "", "", "x", "", "10001", "2", "3",
         "2024-05-01T06:32:11Z"],
        [salesforce_id("001", 45), "", "", "false", "0", "", "", "", "", "", "", "", "", "", "", ""],
    ]
    assert types(header, rows) == {
        "Id": "id", "OwnerId": "id", "Legacy__c": "id", "Flag__c": "boolean", "Bit__c": "integer",
        "Count__c": "integer", "Amount__c": "float", "Day__c": "date", "At__c": "datetime", "Clock__c": "time",
        "Mixed__c": "string", "Empty__c": "string", "Zip__c": "string", "Big__c": "string", "Exp__c": "float",
        "Offset__c": "datetime",
    }
    assert infer_column_types(header, rows)["Id"] == {"type": "id", "source": "inferred", "nullable": False}


@pytest.mark.parametrize("values, expected", [
    (["001000000000001", "001000000000002AAA"], "string"),  # 18 characters with a wrong checksum
    (["0015g00000XyZab", "0015g00000XyZac"], "string"),  # 15 characters need the name to be an Id
    (["2024-02-30"], "string"),  # no such day
    (["2024-05-01", "2024-05-01T06:32:11.000Z"], "string"),  # a datetime column with a date-only value
    (["10:30:00.000Z", "25:00:00.000Z"], "string"),
    (["12", "12.5"], "float"),
    (["yes", "no"], "string"),
    (["-0.5", "3"], "float"),
    (["1E5", "2E3"], "string"),  # an exponent without a decimal point may be a part number
    (["0", "1"], "integer"),  # 0/1 are booleans only under a checkbox's name (below)
    (["2024-05-01 00:00:00", "2024-05-01 10:30:00"], "datetime"),  # not every value at midnight
])
def test_inference_stays_conservative(values, expected):
    assert types(["Field__c"], [[v] for v in values]) == {"Field__c": expected}


@pytest.mark.parametrize("tool, name, values, expected", [
    # Data Export: Date fields at midnight, datetimes with a space and no zone (GMT)
    ("data_export", "CloseDate", ["2024-05-01 00:00:00", "4000-12-31 00:00:00"], "date"),
    ("data_export", "CreatedDate", ["2024-05-01 06:32:11", "1700-01-01 00:00:00"], "datetime"),
    # Data Loader: ISO 8601 with milliseconds and Z; dates alone
    ("data_loader", "LastModifiedDate", ["2024-05-01T06:32:11.000Z"], "datetime"),
    ("data_loader", "Birthdate", ["1980-02-29"], "date"),
    # API exports: checkboxes as 1 or empty, +0000 offsets, doubles with exponents
    ("api_export", "IsDeleted", ["1", "0"], "boolean"),
    ("api_export", "HasOptedOutOfEmail", ["1"], "boolean"),
    ("api_export", "DoNotCall", ["0"], "boolean"),
    ("api_export", "SystemModstamp", ["2024-05-01T06:32:11.000+0000", "2024-05-01T06:32:11+00:00"], "datetime"),
    ("api_export", "AnnualRevenue", ["3.5E8", "1.25E-3", "120000.0"], "float"),
    ("spreadsheet", "IsActive", ["TRUE", "FALSE"], "boolean"),
])
def test_inference_on_each_tools_spellings(tool, name, values, expected):
    assert types([name], [[v] for v in values]) == {name: expected}


def test_15_character_ids_by_name_and_18_by_checksum():
    ids = [salesforce_id("a0Q", n) for n in range(1, 6)]
    rows = [[i[:15], i] for i in ids]
    assert types(["WhatId", "Reference__c"], rows) == {"WhatId": "id", "Reference__c": "id"}
    assert types(["Reference__c"], [[i[:15]] for i in ids]) == {"Reference__c": "string"}


def test_booleans_after_the_first_rows_within_the_sample():
    rows = [[""]] * 900 + [["false"], ["true"]]
    assert types(["IsClosed"], rows) == {"IsClosed": "boolean"}


# --- describe mapping ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(DESCRIBES))
def test_describe_mapping_on_real_fixtures(name):
    describe = DESCRIBES[name]
    described = columns_from_describe(describe)
    assert described.api_name == describe["name"]
    kept = [f for f in describe["fields"] if f["type"] not in ("address", "location", "base64")]
    assert list(described.columns) == [f["name"] for f in kept]  # field order
    assert set(described.skipped) == {f["name"] for f in describe["fields"]} - {f["name"] for f in kept}
    for field in kept:
        column = described.columns[field["name"]]
        assert column["type"] == MAPPED[field["type"]], field["name"]
        assert column["source"] == "describe"
        assert column.get("nullable", True) is (field["type"] != "id")
        if column["type"] == "float":
            assert (column["precision"], column["scale"]) == (field["precision"], field["scale"])
        if column["type"] == "string" and field["length"]:
            assert column["length"] == field["length"]


def test_compound_parts_stay_and_compounds_go():
    account = columns_from_describe(DESCRIBES["Account"])
    assert {"BillingAddress", "ShippingAddress"} <= set(account.skipped)
    assert {"BillingStreet", "BillingLatitude", "ShippingCountry"} <= set(account.columns)
    assert account.columns["BillingLatitude"]["type"] == "float"
    inspection = columns_from_describe(DESCRIBES["acme__Inspection__c"])
    assert inspection.skipped.keys() == {"acme__Site__c", "acme__Photo__c"}
    assert "base64" in inspection.skipped["acme__Photo__c"]
    assert inspection.columns["acme__Starts_At__c"] == {"type": "time", "source": "describe"}
    history = columns_from_describe(DESCRIBES["AccountHistory"]).columns
    assert "SystemModstamp" not in history and history["OldValue"]["type"] == "string"  # anyType


def test_global_describe_is_refused():
    with pytest.raises(ValueError, match="global describe"):
        columns_from_describe({"sobjects": [{"name": "Account"}]})


# --- the export writer ---------------------------------------------------------------------------

def expected_inference(field: dict) -> str:
    """What a sample can show of a described type: numbers with scale 0 and picklists of numeric
    codes read as integers (the describe, where imported, says otherwise)."""
    mapped = MAPPED[field["type"]]
    if mapped == "float" and not field["scale"]:
        return "integer"
    values = [p["value"] for p in field.get("picklistValues") or []]
    if field["type"] in ("picklist", "combobox") and values and all(v.lstrip("-").isdigit() for v in values):
        return "integer"
    return mapped


@pytest.mark.parametrize("name", sorted(DESCRIBES))
def test_export_parses_back_and_infers_the_describes_types(name, tmp_path):
    describe = DESCRIBES[name]
    path = tmp_path / f"{name}.csv"
    header = write_export_csv(describe, path, rows=300, seed=3)
    assert header == [f["name"] for f in exportable_fields(describe)]
    raw = path.read_text(encoding="utf-8")
    assert raw.startswith('"' + '","'.join(header) + '"\n')
    parsed_header, rows = read_rows(path)
    assert parsed_header == header and len(rows) == 300
    inferred = types(header, rows)
    for i, field in enumerate(exportable_fields(describe)):
        if any(row[i] for row in rows):
            assert inferred[field["name"]] == expected_inference(field), field["name"]


def test_export_is_deterministic_and_hostile(tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    write_export_csv(DESCRIBES["Account"], first, rows=200, seed=5)
    write_export_csv(DESCRIBES["Account"], second, rows=200, seed=5)
    assert first.read_bytes() == second.read_bytes()
    header, rows = read_rows(first)
    description = [row[header.index("Description")] for row in rows]
    assert any("\n" in v for v in description) and any('"' in v for v in description)
    assert any("," in v for v in description)


# --- state file: refresh and import --------------------------------------------------------------

def backup(root: Path, **kwargs) -> LocalLandingZone:
    build_backup(root, [DESCRIBES[n] for n in ("Account", "UserRole", "acme__Inspection__c", "AccountHistory")],
                 rows=kwargs.pop("rows", 60), seed=1, **kwargs)
    return LocalLandingZone(root=str(root))


def test_refresh_writes_the_documented_format_and_is_idempotent(tmp_path):
    zone = backup(tmp_path / "landing")
    state = tmp_path / "discovered.yaml"
    summary = refresh_state(zone, state, declared={"account"})
    # Account is declared in catalog.yaml: sampled too, its other columns typed (the catalog overrides)
    assert summary["written"] and summary["declared"] == ["Account"]
    assert summary["added"] == ["Account", "AccountHistory", "UserRole", "acme__Inspection__c"]
    text = state.read_text()
    assert text.startswith("# Written by `etl-assets catalog refresh`")
    assert "    columns:\n      Id: {type: id, source: inferred, nullable: false}\n" in text
    document = yaml.safe_load(text)
    assert list(document["objects"]) == ["Account", "AccountHistory", "UserRole", "acme__Inspection__c"]
    role = document["objects"]["UserRole"]
    assert role["source"] == "inferred"
    assert list(role["columns"]) == [f["name"] for f in exportable_fields(DESCRIBES["UserRole"])]
    assert role["columns"]["MayForecastManagerShare"] == {"type": "boolean", "source": "inferred"}
    assert role["columns"]["SystemModstamp"]["type"] == "datetime"
    inspection = document["objects"]["acme__Inspection__c"]["columns"]
    assert inspection["acme__Starts_At__c"]["type"] == "time"
    assert inspection["acme__Site__Latitude__s"]["type"] == "float"
    assert summary["objects"]["UserRole"] == {"describe": 0, "inferred": 17}

    before = state.stat().st_mtime_ns
    again = refresh_state(zone, state, declared={"account"})
    assert not again["written"] and state.stat().st_mtime_ns == before
    assert again["kept"] == ["Account", "AccountHistory", "UserRole", "acme__Inspection__c"] and not again["updated"]


def test_columns_empty_in_the_sample_are_read_on_until_they_have_values(tmp_path):
    """Booleans empty in the first 1,200 rows (more than the 1,000 sampled) are still typed from the
    rows after them; columns that had values in the sample are not read on."""
    zone = backup(tmp_path / "landing", rows=1500, blank_booleans=("UserRole", 1200))
    state = tmp_path / "discovered.yaml"
    refresh_state(zone, state, declared=set(), sample_rows=1000)
    role = load_state(state)["UserRole"]["columns"]
    booleans = [f["name"] for f in DESCRIBES["UserRole"]["fields"] if f["type"] == "boolean"]
    assert booleans and all(role[name]["type"] == "boolean" for name in booleans)
    assert role["SystemModstamp"]["type"] == "datetime"


def test_reading_on_is_bounded_by_100_times_the_sample(tmp_path):
    """With 10 sampled rows, reading on stops after 1,000 rows: booleans that start at row 1,201 are
    not seen (they stay text until a larger sample or a describe types them)."""
    zone = backup(tmp_path / "landing", rows=1500, blank_booleans=("UserRole", 1200))
    state = tmp_path / "discovered.yaml"
    refresh_state(zone, state, declared=set(), sample_rows=10)
    assert load_state(state)["UserRole"]["columns"]["MayForecastManagerShare"]["type"] == "string"
    summary = refresh_state(zone, state, declared=set(), sample_rows=13)  # bound 1,300 rows
    assert summary["updated"] == ["UserRole"]
    assert load_state(state)["UserRole"]["columns"]["MayForecastManagerShare"]["type"] == "boolean"


def test_a_field_only_in_older_backups_is_typed_from_them(tmp_path):
    """The newest backup lacks a field (and its booleans are empty): older folders, read newest first,
    type both; the newest header's order comes first."""
    root = tmp_path / "landing"
    role = DESCRIBES["UserRole"]
    build_backup(root, [role], rows=30, seed=1, folder="20240501_Differential")
    trimmed = dict(role, fields=[f for f in role["fields"] if f["name"] != "RollupDescription"])
    build_backup(root, [trimmed], rows=20, seed=2, folder="20240601_Differential", blank_booleans=("UserRole", 20))
    state = tmp_path / "discovered.yaml"
    refresh_state(LocalLandingZone(root=str(root)), state, declared=set(), sample_rows=20)
    columns = load_state(state)["UserRole"]["columns"]
    assert list(columns)[-1] == "RollupDescription" and columns["RollupDescription"]["type"] == "string"
    assert columns["MayForecastManagerShare"]["type"] == "boolean"


def test_refresh_samples_the_newest_backup_and_keeps_what_the_sample_cannot_see(tmp_path):
    root = tmp_path / "landing"
    build_backup(root, [DESCRIBES["UserRole"]], rows=40, seed=1, folder="20240501_Differential")
    zone = LocalLandingZone(root=str(root))
    state = tmp_path / "discovered.yaml"
    refresh_state(zone, state, declared=set())
    # A newer backup whose booleans are all empty says nothing about them: the boolean stays.
    build_backup(root, [DESCRIBES["UserRole"]], rows=10, seed=2, folder="20240601_Full",
                 blank_booleans=("UserRole", 10))
    summary = refresh_state(zone, state, declared=set(), sample_rows=10)
    assert summary["kept"] == ["UserRole"] and not summary["written"]
    assert load_state(state)["UserRole"]["columns"]["MayForecastManagerShare"]["type"] == "boolean"
    # An object whose folders are gone keeps its entry and is reported.
    shutil.rmtree(root / "backup")
    summary = refresh_state(LocalLandingZone(root=str(root)), state, declared=set())
    assert summary["missing"] == ["UserRole"] and "UserRole" in load_state(state)


def test_import_replaces_inferred_columns_and_keeps_extra_ones(tmp_path):
    zone = backup(tmp_path / "landing")
    state = tmp_path / "discovered.yaml"
    refresh_state(zone, state, declared=set())
    objects = load_state(state)
    objects["UserRole"]["columns"]["Legacy__c"] = {"type": "string", "source": "inferred"}
    state.write_text(render_state(objects))

    summary = import_describes([FIXTURES / "UserRole.json", FIXTURES / "Account.json"], state)
    assert summary["written"] and summary["updated"] == ["UserRole", "Account"]
    assert set(summary["skipped"]["Account"]) == {"BillingAddress", "ShippingAddress"}
    role = load_state(state)["UserRole"]
    assert role["source"] == "describe" and role["label"] == "Role"
    assert role["columns"]["Name"] == {"type": "string", "source": "describe", "length": 80}
    assert role["columns"]["Legacy__c"] == {"type": "string", "source": "inferred"}
    assert list(role["columns"])[-1] == "Legacy__c"
    assert summary["objects"]["UserRole"] == {"describe": 17, "inferred": 1}
    account = load_state(state)["Account"]["columns"]
    assert account["AnnualRevenue"] == {"type": "float", "source": "describe", "precision": 18, "scale": 0}
    assert account["Id"] == {"type": "id", "source": "describe", "nullable": False}

    text = state.read_text()
    assert not import_describes([FIXTURES / "UserRole.json", FIXTURES / "Account.json"], state)["written"]
    # A refresh keeps described columns as they are and adds only what the describe lacks.
    again = refresh_state(zone, state, declared=set())
    assert "UserRole" in again["kept"] and not again["written"] and state.read_text() == text


def test_refresh_adds_a_column_the_describe_lacks(tmp_path):
    root = tmp_path / "landing"
    trimmed = dict(DESCRIBES["UserRole"], fields=DESCRIBES["UserRole"]["fields"][:-1])
    path = tmp_path / "UserRole.json"
    path.write_text(json.dumps(trimmed))
    state = tmp_path / "discovered.yaml"
    import_describes([path], state)
    build_backup(root, [DESCRIBES["UserRole"]], rows=30, seed=1)
    summary = refresh_state(LocalLandingZone(root=str(root)), state, declared=set())
    assert summary["updated"] == ["UserRole"]
    columns = load_state(state)["UserRole"]["columns"]
    assert columns["PortalAccountOwnerId"] == {"type": "id", "source": "inferred"}
    assert summary["objects"]["UserRole"] == {"describe": 16, "inferred": 1}


def test_refresh_over_s3(tmp_path, s3_bucket, s3_endpoint):
    from dagster_aws.s3 import S3Resource

    client, bucket = s3_bucket
    root = tmp_path / "landing"
    build_backup(root, [DESCRIBES["OpportunityContactRole"]], rows=20, seed=4)
    upload_tree(client, bucket, root, prefix="sf/")
    zone = S3LandingZone(s3=S3Resource(endpoint_url=s3_endpoint, **S3_CREDENTIALS), bucket=bucket, prefix="sf")
    state = tmp_path / "discovered.yaml"
    summary = refresh_state(zone, state, declared=set())
    assert summary["added"] == ["OpportunityContactRole"]
    columns = load_state(state)["OpportunityContactRole"]["columns"]
    assert columns["ContactId"]["type"] == "id" and columns["IsPrimary"]["type"] == "boolean"


def test_commands_print_and_return_exit_codes(tmp_path, capsys):
    zone = backup(tmp_path / "landing")
    state = tmp_path / "discovered.yaml"
    assert refresh_command(argparse.Namespace(state=str(state), sample_rows=1000), zone) == 0
    out = capsys.readouterr().out
    assert "declared (in catalog.yaml: its columns win, the others are inferred): Account" in out
    assert f"Wrote {state}" in out
    args = argparse.Namespace(state=str(state), files=[str(FIXTURES / "Event.json")])
    assert import_describe_command(args) == 0
    assert "Event: 48 described, 0 inferred columns" in capsys.readouterr().out
    bad = tmp_path / "global.json"
    bad.write_text(json.dumps({"sobjects": []}))
    assert import_describe_command(argparse.Namespace(state=str(state), files=[str(bad)])) == 1


# --- real exports: declared objects, header case, encodings, files that cannot be read ---------------

def _write(root: Path, key: str, text: str, encoding: str = "utf-8") -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))


ACCOUNT_ID, OWNER_ID = salesforce_id("001", 1), salesforce_id("005", 1)


def test_a_declared_object_gets_its_other_columns_typed_and_its_declared_ones_win(tmp_path, monkeypatch):
    """catalog.yaml refines discovery: Account is declared, yet its undeclared BillingLatitude, custom
    date and checkbox are typed; a declared column keeps the catalog's type whatever the sample says
    (AnnualRevenue stays the declared float though its sampled value is an integer)."""
    from etl_assets.salesforce.catalog import CATALOG_PATH

    root = tmp_path / "landing"
    _write(root, "backup/20240501_Differential/Account/account.csv",
           "Id,Name,AnnualRevenue,BillingLatitude,Renewal__c,Vip__c,IsDeleted,SystemModstamp\r\n"
           f"{ACCOUNT_ID},Acme,5000000,3.5E1,2024-05-01 00:00:00,true,false,2024-05-01 06:32:11\r\n")
    state = tmp_path / "discovered.yaml"
    summary = refresh_state(LocalLandingZone(root=str(root)), state, declared={"Account"})
    assert summary["declared"] == ["Account"] and summary["added"] == ["Account"]
    columns = load_state(state)["Account"]["columns"]
    assert "AnnualRevenue" not in columns and "Name" not in columns  # declared: the state holds only the rest
    assert columns["BillingLatitude"]["type"] == "float" and columns["Renewal__c"]["type"] == "date"
    load_catalog.cache_clear()
    try:
        account = load_catalog(CATALOG_PATH, state)["Account"]
    finally:
        load_catalog.cache_clear()
    assert account.source == "declared"
    assert account.column("annualrevenue").type.value == "float" and account.column("annualrevenue").strict
    assert account.column("annualrevenue").source == "declared"
    assert account.column("billinglatitude").type.value == "float" and not account.column("billinglatitude").strict
    assert account.column("renewal__c").type.value == "date" and account.column("vip__c").type.value == "boolean"
    name = account.column("name")
    assert name.source == "declared" and name.strict  # the catalog's own column, as declared


def test_header_fields_match_ignoring_case_across_files(tmp_path):
    """Data Loader can write upper-case headers: `ISDELETED` in an older file is the same column as
    `IsDeleted` in the newest one (the newest spelling names it)."""
    root = tmp_path / "landing"
    _write(root, "backup/20240601_Differential/Thing__c/a.csv", f"Id,IsDeleted\n{ACCOUNT_ID},false\n")
    _write(root, "backup/20240501_Differential/Thing__c/a.csv", f'"ID","ISDELETED","COUNT__C"\n"{ACCOUNT_ID}","true","7"\n')
    state = tmp_path / "discovered.yaml"
    refresh_state(LocalLandingZone(root=str(root)), state, declared=set())
    columns = load_state(state)["Thing__c"]["columns"]
    assert list(columns) == ["Id", "IsDeleted", "COUNT__C"]
    assert columns["IsDeleted"]["type"] == "boolean" and columns["COUNT__C"]["type"] == "integer"


def test_a_latin1_export_is_sampled_through_the_fallback(tmp_path, monkeypatch):
    monkeypatch.delenv("ETL_ASSETS_SALESFORCE_ENCODING", raising=False)
    monkeypatch.delenv("ETL_ASSETS_SALESFORCE_FALLBACK_ENCODING", raising=False)
    root = tmp_path / "landing"
    _write(root, "backup/20240501_Differential/Contact/contact.csv",
           f'"Id","Pr\u00e9nom__c","Birthdate"\r\n"{salesforce_id("003", 1)}","Jos\u00e9","1980-02-29 00:00:00"\r\n',
           encoding="iso-8859-1")
    state = tmp_path / "discovered.yaml"
    summary = refresh_state(LocalLandingZone(root=str(root)), state, declared=set())
    assert summary["unreadable"] == []
    columns = load_state(state)["Contact"]["columns"]
    assert "Pr\u00e9nom__c" in columns and columns["Birthdate"]["type"] == "date"


def test_a_file_refresh_cannot_read_is_listed_and_the_others_are_discovered(tmp_path, monkeypatch, capsys):
    """One ISO-8859-1 file with no fallback configured, and one with a quote never closed, among
    good objects: both are listed with object, folder, file and reason; nothing stops."""
    monkeypatch.setenv("ETL_ASSETS_SALESFORCE_FALLBACK_ENCODING", "none")
    root = tmp_path / "landing"
    folder = "backup/20240501_Differential"
    for n in range(12):
        _write(root, f"{folder}/Good{n}__c/a.csv", f"Id,Amount__c\n{salesforce_id('a0X', n + 1)},{n}.5\n")
    _write(root, f"{folder}/Latin__c/a.csv", f"Id,Name\n{salesforce_id('a0Y', 1)},Jos\u00e9\n", encoding="iso-8859-1")
    _write(root, f"{folder}/Broken__c/a.csv", f'Id,Name\n{salesforce_id("a0Z", 1)},"never closed\n')
    _write(root, f"{folder}/Broken__c/b.csv", f'Id,Name,Count__c\n{salesforce_id("a0Z", 2)},fine,3\n')
    state = tmp_path / "discovered.yaml"
    args = argparse.Namespace(state=str(state), sample_rows=1000)
    assert refresh_command(args, LocalLandingZone(root=str(root))) == 0
    out = capsys.readouterr().out
    objects = load_state(state)
    assert {f"Good{n}__c" for n in range(12)} <= set(objects)
    assert objects["Broken__c"]["columns"]["Count__c"]["type"] == "integer"  # its readable file typed it
    assert "Latin__c" not in objects  # its only file could not be read: nothing to type it by
    assert "unreadable: 2 file(s)" in out
    assert f"object Latin__c, folder 20240501_Differential, file {folder}/Latin__c/a.csv: line" in out
    assert "ETL_ASSETS_SALESFORCE_ENCODING" in out
    assert f"object Broken__c, folder 20240501_Differential, file {folder}/Broken__c/a.csv: line" in out


def test_encoding_settings(monkeypatch):
    from etl_assets.salesforce.encodings import EncodingSettingError, folder_encoding

    env = {"ETL_ASSETS_SALESFORCE_FOLDER_ENCODINGS": "2023*_Full=latin-1; 20240501_Differential=shift_jis"}
    assert folder_encoding("20240601_Differential", env).encoding == "utf-8"
    assert folder_encoding("20240601_Differential", env).fallback == "cp1252"
    assert folder_encoding("20231231_Full", env).encoding == "iso8859-1"
    assert folder_encoding("20231231_Full", env).fallback is None  # a non-UTF-8 folder needs none
    assert folder_encoding("20240501_Differential", env).encoding == "shift_jis"
    assert folder_encoding("x", {"ETL_ASSETS_SALESFORCE_FALLBACK_ENCODING": "none"}).fallback is None
    assert folder_encoding("x", {"ETL_ASSETS_SALESFORCE_ENCODING": "ISO-8859-1"}).encoding == "iso8859-1"
    with pytest.raises(EncodingSettingError, match="ETL_ASSETS_SALESFORCE_ENCODING='latin-9x'"):
        folder_encoding("x", {"ETL_ASSETS_SALESFORCE_ENCODING": "latin-9x"})
    with pytest.raises(EncodingSettingError, match="not pattern=encoding"):
        folder_encoding("x", {"ETL_ASSETS_SALESFORCE_FOLDER_ENCODINGS": "latin-1"})


def test_a_declared_object_whose_files_hold_only_declared_columns_adds_nothing_to_the_state(tmp_path):
    """`make run` on the sample (every column declared) leaves discovered.yaml as it was."""
    root = tmp_path / "landing"
    _write(root, "backup/20240501_Differential/Account/account.csv",
           f"Id,Name,IsDeleted,SystemModstamp\n{ACCOUNT_ID},Acme,false,2024-05-01T06:32:11.000Z\n")
    state = tmp_path / "discovered.yaml"
    summary = refresh_state(LocalLandingZone(root=str(root)), state, declared={"Account"})
    assert summary["declared"] == ["Account"] and not summary["added"] and load_state(state) == {}


def test_the_catalog_follows_the_discovered_state_the_environment_names_now(tmp_path, monkeypatch):
    """One process, two states: load_catalog() reads the one ETL_ASSETS_SALESFORCE_DISCOVERED names at
    the call and a state rewritten since, never a cached catalog of another (under xdist a test that
    loaded a state with an extra Task column left it to the next test on the worker)."""
    root = tmp_path / "landing"
    _write(root, "backup/20240501_Differential/Widget__c/widget.csv",
           "Id,Name,SystemModstamp\na0B000000000001AAA,W,2024-05-01T06:32:11.000Z\n")
    empty, found = tmp_path / "empty.yaml", tmp_path / "found.yaml"
    refresh_state(LocalLandingZone(root=str(tmp_path / "nothing")), empty, declared=set())
    monkeypatch.setenv(DISCOVERED_ENV, str(empty))
    assert "Widget__c" not in load_catalog()
    refresh_state(LocalLandingZone(root=str(root)), found, declared=set())
    monkeypatch.setenv(DISCOVERED_ENV, str(found))
    assert "Widget__c" in load_catalog()
    monkeypatch.setenv(DISCOVERED_ENV, str(empty))
    assert "Widget__c" not in load_catalog()
    shutil.copy(found, empty)  # the same path, rewritten (as `catalog refresh` does in a long process)
    assert "Widget__c" in load_catalog()
