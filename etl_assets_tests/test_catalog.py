"""catalog.yaml and the discovered state merged: precedence, version fallback, groups, widening."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from etl_assets.salesforce.catalog import CatalogError, parse_catalog
from etl_assets.salesforce.staging import SourceFile, stage_object
from etl_assets.warehouse.spec import ColumnType

DECLARED = {"schema": "salesforce", "common_columns": {"Id": {"type": "id", "nullable": False},
                                                       "SystemModstamp": "datetime"},
            "objects": {"Account": {"description": "Firms.", "columns": {"AnnualRevenue": "integer"}}}}
DISCOVERED = {"objects": {
    "Account": {"source": "describe", "columns": {
        "Id": {"type": "id", "source": "describe"},
        "AnnualRevenue": {"type": "float", "source": "describe", "precision": 18, "scale": 0},
        "IsPrivate": {"type": "boolean", "source": "describe"},
        "Legacy__c": {"type": "string", "source": "inferred"}}},
    "AccountHistory": {"source": "describe", "label": "Account History", "columns": {
        "Id": {"type": "id", "source": "describe"}, "AccountId": {"type": "id", "source": "describe"},
        "CreatedDate": {"type": "datetime", "source": "describe"}, "Field": {"type": "string", "source": "describe"}}},
    "UserRole": {"source": "inferred", "columns": {
        "Id": {"type": "id", "source": "inferred"}, "Name": {"type": "string", "source": "inferred"},
        "LastModifiedDate": {"type": "datetime", "source": "inferred"},
        "SystemModstamp": {"type": "datetime", "source": "inferred"}}},
    "Invoice__c": {"source": "inferred", "columns": {
        "Id": {"type": "id", "source": "inferred"}, "Amount__c": {"type": "integer", "source": "inferred"},
        "Paid__c": {"type": "boolean", "source": "inferred"}, "Due__c": {"type": "date", "source": "inferred"},
        "At__c": {"type": "time", "source": "inferred"}}},
    "ns__Thing__c": {"source": "describe", "columns": {
        "Name": {"type": "string", "source": "describe", "length": 80},
        "Opens__c": {"type": "time", "source": "describe"}}},
}}


@pytest.fixture
def catalog():
    return parse_catalog(DECLARED, DISCOVERED)


def test_catalog_yaml_wins_over_a_describe_which_adds_what_catalog_yaml_lacks(catalog):
    account = catalog["Account"]
    assert [(c.api_name, c.type, c.source) for c in account.columns] == [
        ("Id", ColumnType.STRING, "declared"), ("SystemModstamp", ColumnType.DATETIME, "declared"),
        ("AnnualRevenue", ColumnType.INTEGER, "declared"),  # pinned: the describe's float loses
        ("IsPrivate", ColumnType.BOOLEAN, "described"), ("Legacy__c", ColumnType.STRING, "inferred")]
    assert account.column_sources() == {"declared": ["Id", "SystemModstamp", "AnnualRevenue"],
                                        "described": ["IsPrivate"], "inferred": ["Legacy__c"]}
    assert account.column("id").is_id and account.column("id").strict
    assert not account.column("legacy__c").strict


def test_discovered_objects_take_only_their_own_columns_and_the_version_they_have(catalog):
    assert list(catalog) == ["Account", "AccountHistory", "Invoice__c", "UserRole", "ns__Thing__c"]
    history = catalog["AccountHistory"]
    assert [c.name for c in history.columns] == ["id", "accountid", "createddate", "field"]  # no IsDeleted assumed
    assert history.version_column == "CreatedDate"  # *History objects have no SystemModstamp
    assert catalog["UserRole"].version_column == "SystemModstamp"
    assert catalog["Invoice__c"].version_column is None
    assert catalog["Invoice__c"].table_spec().version_column is None
    assert history.description.startswith("Account History: found in the backups")


def test_a_discovered_object_without_id_still_has_its_key_column(catalog):
    thing = catalog["ns__Thing__c"]
    assert thing.columns[0].name == "id" and thing.primary_key == "Id"


def test_time_columns_are_checked_text_when_described_and_lenient_when_inferred(catalog):
    assert catalog["ns__Thing__c"].column("opens__c").checks["regex"].startswith("[0-9]{2}:")
    assert "regex" not in catalog["Invoice__c"].column("at__c").checks
    assert catalog["ns__Thing__c"].column("opens__c").catalog_type == "time"


def test_groups_separate_standard_custom_and_each_managed_package(catalog):
    assert {api: o.group for api, o in catalog.items()} == {
        "Account": "salesforce", "AccountHistory": "salesforce", "UserRole": "salesforce",
        "Invoice__c": "salesforce_custom", "ns__Thing__c": "salesforce_ns"}


def test_discovered_entries_are_validated_too_and_a_bad_one_is_left_out_with_its_reason():
    """The discovered state is generated: an entry that cannot be an asset is refused (the sensor's
    tick names it), never a reason for the code location not to load. catalog.yaml's errors raise."""
    refused: dict[str, str] = {}
    catalog = parse_catalog(DECLARED, {"objects": {"X__c": {"columns": {"Id": {"type": "money"}}},
                                                    "Y__c": {"columns": {"Id": {"type": "id", "bogus": 1}}},
                                                    "Z__c": {"columns": {"Id": {"type": "id"}}}}}, refused)
    assert "unknown type 'money'" in refused["X__c"] and "unknown keys" in refused["Y__c"]
    assert "Z__c" in catalog and "X__c" not in catalog and "Y__c" not in catalog
    with pytest.raises(CatalogError, match="unknown type 'money'"):
        parse_catalog({**DECLARED, "objects": {"Account": {"columns": {"Amount": "money"}}}})


def test_a_value_that_does_not_fit_an_inferred_type_widens_the_column_and_keeps_the_row(catalog, tmp_path):
    invoice = catalog["Invoice__c"]
    path = tmp_path / "Invoice__c.csv"
    rows = [f"a0B00000000000{i}AAA,{i},true,2024-05-0{i},10:00:00.000Z" for i in range(1, 6)]
    rows += ["a0B000000000006AAA,12.5,false,,", "a0B000000000007AAA,3,maybe,someday,noon"]
    path.write_text("Id,Amount__c,Paid__c,Due__c,At__c\n" + "\n".join(rows) + "\n")
    batch, report = stage_object(invoice, [SourceFile("k/Invoice__c.csv", path)], "P")
    try:
        assert report.rows_rejected == 0 and batch.rows == 7
        assert {c.name: c.type for c in batch.spec.columns if c.name in report.widened_columns} == {
            "amount__c": ColumnType.FLOAT, "paid__c": ColumnType.STRING, "due__c": ColumnType.STRING}
        assert report.widened_columns["amount__c"] == "integer -> float: k/Invoice__c.csv line 7 holds '12.5'"
        staged = pq.read_table(batch.files).to_pydict()
        assert staged["amount__c"][5:] == [12.5, 3.0] and staged["paid__c"][5:] == ["false", "maybe"]
        assert staged["at__c"][-1] == "noon"  # an inferred time is text that is never refused
        assert batch.retyped == {}  # no table yet
    finally:
        batch.discard()

    again, report = stage_object(invoice, [SourceFile("k/Invoice__c.csv", path)], "P",
                                 table_types={"amount__c": ColumnType.INTEGER, "paid__c": ColumnType.STRING,
                                              "due__c": ColumnType.DATE})
    try:  # the table's types: integer and date columns must widen first; a text column stays text
        assert again.retyped == {"amount__c": (ColumnType.INTEGER, ColumnType.FLOAT),
                                 "due__c": (ColumnType.DATE, ColumnType.STRING)}
        assert "the table holds string" in report.widened_columns["paid__c"]
    finally:
        again.discard()


def test_an_inferred_date_column_that_meets_a_time_widens_to_datetime_in_the_table(warehouse, tmp_path):
    """A Data Export datetime column whose sampled values were all at midnight is inferred `date`; a later
    value with a time widens it to datetime (not text), and the table's old dates become midnight UTC."""
    import datetime as dt

    from etl_assets.landing.zone import LocalLandingZone
    from etl_assets.salesforce.assets import build_object_asset
    from etl_assets_tests.helpers import materialize_folders, resources

    discovered = {"objects": {"Visit__c": {"source": "inferred", "columns": {
        "Id": {"type": "id", "source": "inferred"}, "At__c": {"type": "date", "source": "inferred"}}}}}
    visit = parse_catalog(DECLARED, discovered)["Visit__c"]
    root = tmp_path / "landing"
    for folder, value in (("20240501_Differential", "2024-05-01 00:00:00"), ("20240502_Differential", "2024-05-02 10:30:00")):
        path = root / "backup" / folder / "Visit__c" / "visit.csv"
        path.parent.mkdir(parents=True)
        path.write_text(f'"Id","At__c"\r\n"a0V00000000000{folder[7]}AAA","{value}"\r\n')
    zone, asset = LocalLandingZone(root=str(root)), build_object_asset(visit)
    [first] = materialize_folders(["20240501_Differential"], resources(zone, warehouse), assets=[asset])
    assert first.success and warehouse.column_types("salesforce", "visit__c")["at__c"] is ColumnType.DATE
    [second] = materialize_folders(["20240502_Differential"], resources(zone, warehouse), assets=[asset])
    assert second.success
    assert warehouse.column_types("salesforce", "visit__c")["at__c"] is ColumnType.DATETIME
    values = sorted(v for (v,) in warehouse.query("SELECT at__c FROM salesforce.visit__c"))
    assert [v.astimezone(dt.timezone.utc) for v in values] == [
        dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc), dt.datetime(2024, 5, 2, 10, 30, tzinfo=dt.timezone.utc)]
    assert warehouse.query("SELECT count(*) FROM salesforce.visit__c_rejects") == [(0,)]
