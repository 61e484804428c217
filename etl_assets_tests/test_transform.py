"""Catalog-driven transform and validation of Salesforce rows."""

import json
from pathlib import Path

import pandas as pd
import pandera.errors as pa_errors
import pytest

from etl_assets.landing.csv_reader import CsvFormatError, iter_csv_chunks, read_header
from etl_assets.salesforce.catalog import CatalogError, load_catalog, parse_catalog
from etl_assets.salesforce.staging import SourceFile, stage_object
from etl_assets.salesforce.transform import plan_header, transform_chunk
from etl_assets.warehouse.redshift import RedshiftWarehouse
from etl_assets.warehouse.spec import LOAD_CHANGES

TASK = load_catalog()["Task"]
GOOD_ID = "00T000000000001AAA"


def transform_text(tmp_path: Path, text: str, name: str = "task.csv"):
    path = tmp_path / name
    path.write_text(text)
    header, header_lines = read_header(path, name)
    plan = plan_header(TASK, header, name)
    frames, rejects = [], []
    for chunk in iter_csv_chunks(path, name, header, header_lines):
        result = transform_chunk(TASK, chunk, plan, "20240501_Differential", name)
        frames.append(result.rows)
        rejects += result.rejects.to_pylist()
    return pd.concat(frames), rejects, plan


def test_catalog_lists_the_required_objects_with_typed_keys():
    catalog = load_catalog()
    required = {"Task", "User", "Account", "Contact", "Opportunity", "Case", "Lead",
                "litify_pm__Matter__c", "litify_pm__Intake__c"}
    assert required <= set(catalog)
    for obj in catalog.values():
        spec = obj.table_spec()
        assert spec.schema == "salesforce" and spec.name == obj.api_name.lower()
        assert spec.column("id").nullable is False
        assert spec.column("systemmodstamp").type.value == "datetime"


def test_a_new_object_is_a_catalog_entry():
    catalog = parse_catalog({"objects": {"Invoice__c": {"columns": {
        "Id": {"type": "string", "nullable": False},
        "SystemModstamp": "datetime",
        "Amount__c": {"type": "float", "checks": {"min": 0}}}}}})
    spec = catalog["Invoice__c"].table_spec()
    assert spec.name == "invoice__c"
    assert [c.name for c in spec.columns] == ["id", "systemmodstamp", "amount__c", "_load_changes"]


@pytest.mark.parametrize(
    "document, message",
    [
        ({"objects": {"X": {"columns": {"Id": "text"}}}}, "unknown type 'text'"),
        ({"objects": {"X": {"columns": {"Id": {"type": "string", "checks": {"bogus": 1}}}}}}, "unknown checks"),
        ({"objects": {"X": {"columns": {"Id": "string", "SystemModstamp": "datetime", "\u540d\u524d": "string"}}}},
         "normalizes to nothing"),
        ({"objects": {"X": {"columns": {"Id": "string", "SystemModstamp": "datetime", "Bad Name": "string",
                                        "bad_name": "string"}}}}, "collide once normalized"),
        ({"objects": {"X": {"columns": {"Name": "string"}}}}, "'id' is not a column"),
    ],
)
def test_malformed_catalog_entries_are_refused(document, message):
    with pytest.raises((CatalogError, ValueError), match=message):
        parse_catalog(document)


def test_types_follow_the_fields_rules(tmp_path):
    frame, rejects, _ = transform_text(tmp_path, (
        "Id,IsDeleted,SystemModstamp,Subject,ActivityDate,CallDurationInSeconds,IsClosed\n"
        f"{GOOD_ID},false,2024-05-01T12:34:56.000Z,Hello,2024-05-02,30,TRUE\n"
        f"00T000000000002AAA,true,2024-05-01T23:00:00.000+0200,,,,false\n"
    ))
    assert rejects == []
    assert list(frame["isdeleted"]) == [0, 1]
    assert list(frame["isclosed"]) == [1, 0]
    assert frame["systemmodstamp"].dt.tz is not None
    assert str(frame["systemmodstamp"].iloc[1]) == "2024-05-01 21:00:00+00:00"  # converted to UTC
    assert list(frame["subject"]) == ["Hello", ""]  # strings filled, never null
    assert pd.isna(frame["activitydate"].iloc[1]) and pd.isna(frame["calldurationinseconds"].iloc[1])
    assert list(frame["_source_line"]) == [2, 3]


def test_bad_values_become_rejects_naming_line_column_and_reason(tmp_path):
    frame, rejects, _ = transform_text(tmp_path, (
        "Id,IsDeleted,SystemModstamp,Status,CallDurationInSeconds\n"
        f"{GOOD_ID},false,2024-05-01T12:34:56.000Z,Completed,1\n"
        f'00T000000000002AAA,maybe,2024-05-01T12:34:56.000Z,"Not\nStarted",1\n'
        f"00T000000000003AAA,false,yesterday,Completed,1\n"
        f"short,false,2024-05-01T12:34:56.000Z,Completed,-4\n"
    ))
    assert list(frame["id"]) == [GOOD_ID]
    by_line = {r["_source_line"]: r for r in rejects}
    assert set(by_line) == {3, 5, 6}
    assert by_line[3]["column_name"] == "isdeleted, status"
    assert "not a valid boolean: 'maybe'" in by_line[3]["reason"]
    assert by_line[5]["column_name"] == "systemmodstamp"
    assert "not a valid datetime: 'yesterday'" in by_line[5]["reason"]
    assert by_line[6]["column_name"] == "id, calldurationinseconds"
    assert json.loads(by_line[6]["raw_record"])["Id"] == "short"
    assert all(r["_source_file"] == "task.csv" for r in rejects)


def test_unknown_columns_are_kept_as_text_drift(tmp_path):
    frame, rejects, plan = transform_text(tmp_path, (
        "Id,SystemModstamp,IsDeleted,Legacy_Code__c\n"
        f"{GOOD_ID},2024-05-01T12:34:56.000Z,false,L-1\n"
    ))
    assert plan.drift == ("legacy_code__c",)
    assert list(frame["legacy_code__c"]) == ["L-1"] and rejects == []


@pytest.mark.parametrize(
    "header, message",
    [
        ('Id,SystemModstamp,"--;"', r"column 3: header field '--;' has no letter or digit"),
        ("Id,SystemModstamp,Subject,SUBJECT",
         r"column 4: header fields 'Subject' \(column 3\) and 'SUBJECT' \(column 4\) both become the column 'subject'"),
        ("Id,SystemModstamp,Owner.Name,Owner Name",
         r"column 4: header fields 'Owner.Name' \(column 3\) and 'Owner Name' \(column 4\) both become the column "),
        ("SystemModstamp,Subject", r"line 1: the header has no Id column"),  # no version column is no refusal
    ],
)
def test_unsafe_or_incomplete_headers_refuse_the_file(tmp_path, header, message):
    with pytest.raises(CsvFormatError, match=message):
        transform_text(tmp_path, header + "\n")


def test_staging_spills_rows_and_rejects_to_parquet_and_unions_drift(tmp_path):
    first = tmp_path / "a.csv"
    first.write_text(f"Id,SystemModstamp,IsDeleted\n{GOOD_ID},2024-05-01T00:00:00.000Z,false\n")
    second = tmp_path / "b.csv"
    second.write_text("Id,SystemModstamp,IsDeleted,Extra__c\n00T000000000002AAA,2024-05-01T00:00:00.000Z,false,e\n"
                      "bad,2024-05-01T00:00:00.000Z,false,e\n")
    batch, report = stage_object(TASK, [SourceFile("k/a.csv", first), SourceFile("k/b.csv", second)], "P")
    try:
        assert (report.rows_read, report.rows_rejected, batch.rows) == (3, 1, 2)
        assert report.drift_columns == ("extra__c",)
        assert batch.spec.column("extra__c") is not None
        import pyarrow.parquet as pq
        staged = pq.read_table(batch.files).to_pydict()
        assert staged["extra__c"] == [None, "e"]
        assert staged["_source_file"] == ["k/a.csv", "k/b.csv"]
        assert pq.read_table(batch.reject_files).num_rows == 1
    finally:
        batch.discard()
    assert not batch.directory.exists()


def test_long_text_is_whole_without_a_limit_and_follows_the_catalog_on_redshift(tmp_path):
    long_value = "\u00e9" * 40_000  # 80,000 bytes in UTF-8, 40,000 characters
    document = {"objects": {"Note__c": {"columns": {
        "Id": {"type": "string", "nullable": False}, "SystemModstamp": "datetime",
        "Body": "string", "Kept__c": {"type": "string", "long_text": "super"},
        "Strict__c": {"type": "string", "long_text": "reject"}}}}}
    note = parse_catalog(document)["Note__c"]
    path = tmp_path / "note.csv"
    path.write_text("Id,SystemModstamp,Body,Kept__c,Strict__c\n"
                    f"{GOOD_ID},2024-05-01T00:00:00.000Z,{long_value},{long_value},short\n"
                    f"00T000000000002AAA,2024-05-01T00:00:00.000Z,b,k,{long_value}\n")
    header, header_lines = read_header(path, "note.csv")
    [chunk] = list(iter_csv_chunks(path, "note.csv", header, header_lines))
    plan = plan_header(note, header, "note.csv")

    whole = transform_chunk(note, chunk, plan, "P", "note.csv")  # DuckDB and PostgreSQL: no text limit
    assert whole.rejects.num_rows == 0 and whole.truncated == []
    assert list(whole.rows["body"]) == [long_value, "b"] and whole.rows["strict__c"].iloc[1] == long_value
    assert LOAD_CHANGES not in whole.rows

    redshift = transform_chunk(note, chunk, plan, "P", "note.csv", RedshiftWarehouse.capabilities.text_limits)
    [reject] = redshift.rejects.to_pylist()  # `long_text: reject` drops the row, and says why
    assert (reject["_source_line"], reject["column_name"]) == (3, "strict__c")
    assert reject["reason"] == "80000 bytes, over the target's 65535-byte limit"
    assert len(reject["raw_record"].encode()) <= 65_535  # the reject itself fits a VARCHAR
    [row] = redshift.rows.to_dict("records")
    assert row["body"] == "\u00e9" * 32_767  # the default: cut on a character boundary...
    assert json.loads(row[LOAD_CHANGES]) == [{  # ...and recorded in the row
        "column": "body", "change": "truncated", "reason": "80000 bytes, over the target's 65535-byte text limit",
        "bytes": 80000, "kept_bytes": 65534}]
    assert row["kept__c"] == long_value  # `long_text: super`: a SUPER column holds it whole
    assert redshift.truncated == [{"row": 0, "file": "note.csv", "line": 2, "column": "body", "bytes": 80000}]


def test_validation_reports_what_pandera_finds_in_the_whole_frame():
    # Pandera's schema validation runs only on the columns where one of its checks failed (schema.py);
    # the failures must be those of validating the whole frame.
    import pyarrow as pa

    from etl_assets.salesforce.schema import object_schema, validation
    from etl_assets.warehouse.convert import to_series

    obj = parse_catalog({"objects": {"V__c": {"columns": {
        "Id": {"type": "string", "nullable": False}, "SystemModstamp": {"type": "datetime", "nullable": False},
        "Pick__c": {"type": "string", "checks": {"isin": ["a", "b"]}},
        "Code__c": {"type": "string", "nullable": False, "checks": {"min_length": 2, "regex": "[A-Z]+"}},
        "Short__c": {"type": "string", "checks": {"max_length": 3}}, "Fine__c": {"type": "string", "checks": {
            "max_length": 9}}, "Count__c": {"type": "integer", "nullable": False, "checks": {"min": 0, "max": 9}},
        "Due__c": {"type": "date", "nullable": False}}}}})["V__c"]
    types = {c.name: c.type for c in obj.columns}
    arrays = {"id": pa.array(["a", "", "c", "d"]),
              "systemmodstamp": pa.array([1, None, 3, None], pa.timestamp("us", "UTC")),
              "pick__c": pa.array(["a", "", "c", "b"]), "code__c": pa.array(["AB", "a", "", "ABC"]),
              "short__c": pa.array(["abcd", "", "abc", "x"]), "fine__c": pa.array(["a", "b", "c", "d"]),
              "count__c": pa.array([1, None, 10, -1]), "due__c": pa.array([1, 2, None, 4], pa.timestamp("us"))}
    found = validation(obj).failures(arrays)
    frame = pd.DataFrame({name: to_series(array, types[name]) for name, array in arrays.items()})
    with pytest.raises(pa_errors.SchemaErrors) as errors:
        object_schema(obj).validate(frame, lazy=True)
    cases = errors.value.failure_cases

    def shown(value) -> str:  # a missing value's spelling depends on the other columns' failure cases
        return "null" if pd.isna(value) else str(value)

    expected = sorted((int(row), column, str(check), shown(value)) for row, column, check, value in zip(
        cases["index"], cases["column"], cases["check"], cases["failure_case"]))
    assert sorted((row, column, check, shown(value)) for row, column, check, value in found) == expected
    assert {column for _, column, _, _ in found} == {"id", "systemmodstamp", "pick__c", "code__c", "short__c", "count__c",
                                                     "due__c"}
