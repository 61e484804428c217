"""How Salesforce's own tools spell values, and how each is loaded (issue 24).

Data Export writes `2024-05-01 00:00:00` for a Date and zone-less GMT datetimes; Data Loader writes
`.000Z` datetimes, `true`/`false` and may upper-case headers and leave SystemModstamp out; API
exports write checkboxes as `1` or empty; other tools `TRUE`/`FALSE`, `+0000` and `3.5E8`.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from etl_assets.landing.csv_reader import CsvFormatError, iter_csv_chunks, read_header
from etl_assets.salesforce.catalog import parse_catalog
from etl_assets.salesforce.schema import STRING_DTYPE
from etl_assets.salesforce.transform import ChunkResult, plan_header, transform_chunk
from etl_assets.warehouse.convert import convert_column, dates_with_time
from etl_assets.warehouse.spec import LOAD_CHANGES, ColumnType, TextLimits

DATE, DATETIME, BOOLEAN = ColumnType.DATE, ColumnType.DATETIME, ColumnType.BOOLEAN
INTEGER, FLOAT = ColumnType.INTEGER, ColumnType.FLOAT


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


SPELLINGS = [
    # Dates: the day alone, or the day at midnight GMT.
    ("iso_date", DATE, "2024-05-01", pd.Timestamp("2024-05-01")),
    ("data_export_date", DATE, "2024-05-01 00:00:00", pd.Timestamp("2024-05-01")),
    ("data_export_date_first", DATE, "1700-01-01 00:00:00", pd.Timestamp("1700-01-01")),
    ("data_export_date_last", DATE, "4000-12-31 00:00:00", pd.Timestamp("4000-12-31")),
    ("data_loader_date", DATE, "2024-05-01T00:00:00.000Z", pd.Timestamp("2024-05-01")),
    ("iso_date_at_midnight", DATE, "2024-05-01T00:00:00", pd.Timestamp("2024-05-01")),
    ("offset_tool_date_plus0000", DATE, "2024-05-01T00:00:00+0000", pd.Timestamp("2024-05-01")),
    ("offset_tool_date_plus00_00", DATE, "2024-05-01 00:00:00.000000+00:00", pd.Timestamp("2024-05-01")),
    ("leap_day_date", DATE, "2024-02-29 00:00:00", pd.Timestamp("2024-02-29")),
    # Datetimes: `T` or a space, any fraction (cut to microseconds), an offset or none (GMT).
    ("data_export_datetime", DATETIME, "2024-05-01 06:32:11", utc("2024-05-01 06:32:11")),
    ("data_export_datetime_last", DATETIME, "4000-12-31 23:59:59", utc("4000-12-31 23:59:59")),
    ("data_export_datetime_first", DATETIME, "1700-01-01 00:00:00", utc("1700-01-01")),
    ("data_loader_datetime", DATETIME, "2024-05-01T06:32:11.000Z", utc("2024-05-01 06:32:11")),
    ("data_loader_datetime_millis", DATETIME, "2024-05-01T06:32:11.250Z", utc("2024-05-01 06:32:11.25")),
    ("iso_datetime_no_zone", DATETIME, "2024-05-01T06:32:11", utc("2024-05-01 06:32:11")),
    ("iso_datetime_space_z", DATETIME, "2024-05-01 06:32:11Z", utc("2024-05-01 06:32:11")),
    ("offset_tool_datetime_plus0000", DATETIME, "2024-05-01T06:32:11+0000", utc("2024-05-01 06:32:11")),
    ("offset_tool_datetime_plus00_00", DATETIME, "2024-05-01T06:32:11+00:00", utc("2024-05-01 06:32:11")),
    ("offset_tool_datetime_minus0500", DATETIME, "2024-05-01T06:32:11-0500", utc("2024-05-01 11:32:11")),
    ("offset_tool_datetime_plus05_30_space", DATETIME, "2024-05-01 06:32:11.5+05:30", utc("2024-05-01 01:02:11.5")),
    ("nanosecond_datetime", DATETIME, "2024-05-01T06:32:11.123456789Z", utc("2024-05-01 06:32:11.123456")),
    ("seven_digit_datetime_no_zone", DATETIME, "2024-05-01 06:32:11.1234567", utc("2024-05-01 06:32:11.123456")),
    ("date_only_in_datetime", DATETIME, "2024-05-01", utc("2024-05-01")),
    # Checkboxes.
    ("data_loader_boolean_true", BOOLEAN, "true", 1),
    ("data_loader_boolean_false", BOOLEAN, "false", 0),
    ("other_tool_boolean_TRUE", BOOLEAN, "TRUE", 1),
    ("other_tool_boolean_FALSE", BOOLEAN, "FALSE", 0),
    ("mixed_case_boolean", BOOLEAN, "True", 1),
    ("api_boolean_1", BOOLEAN, "1", 1),
    ("api_boolean_0", BOOLEAN, "0", 0),
    # Numbers with exponents: floats always, integers when integral and exact.
    ("exponent_tool_float", FLOAT, "3.5E8", 350_000_000.0),
    ("exponent_tool_float_negative_exponent", FLOAT, "1.0E-4", 0.0001),
    ("exponent_tool_float_signed", FLOAT, "-2.5e+3", -2500.0),
    ("exponent_tool_integer", INTEGER, "3.5E8", 350_000_000),
    ("exponent_tool_integer_signed", INTEGER, "-2.5e+3", -2500),
    ("decimal_tool_integer", INTEGER, "42.0", 42),
    ("plain_integer_18_digits", INTEGER, "999999999999999999", 999_999_999_999_999_999),
]


@pytest.mark.parametrize("type_, text, expected", [c[1:] for c in SPELLINGS], ids=[c[0] for c in SPELLINGS])
def test_each_tool_spelling_converts(type_, text, expected):
    # Alone (Arrow's one-call path), and beside a bad value (the path that sets bad values aside).
    for values in ([text], [text, "not a value"]):
        typed, invalid = convert_column(pd.Series(values, dtype=STRING_DTYPE), type_)
        assert typed.iloc[0] == expected
        assert list(invalid) == [False] + [True] * (len(values) - 1)


REFUSED = [
    ("date_with_time_of_day", DATE, "2024-05-01 10:30:00"),
    ("date_midnight_elsewhere", DATE, "2024-05-01T00:00:00-0500"),
    ("date_with_a_millisecond", DATE, "2024-05-01T00:00:00.001Z"),
    ("date_not_in_calendar", DATE, "2024-02-30"),
    ("data_export_date_not_in_calendar", DATE, "2023-02-29 00:00:00"),
    ("date_unpadded", DATE, "2024-5-1"),
    ("datetime_not_in_calendar", DATETIME, "2024-02-30T06:32:11.000Z"),
    ("datetime_hour_24", DATETIME, "2024-05-01T24:00:00"),
    ("datetime_offset_without_time", DATETIME, "2024-05-01+05:00"),
    ("boolean_yes", BOOLEAN, "yes"),
    ("integer_inexact_exponent", INTEGER, "1.0E-4"),
    ("integer_fraction", INTEGER, "2.5"),
    ("integer_beyond_exact_double", INTEGER, "1E20"),
    ("float_overflow", FLOAT, "1e400"),
]


@pytest.mark.parametrize("type_, text", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_values_that_are_not_their_type_stay_invalid_never_rounded(type_, text):
    typed, invalid = convert_column(pd.Series([text, ""], dtype=STRING_DTYPE), type_)
    assert list(invalid) == [True, False] and typed.isna().all()


@pytest.mark.parametrize("type_", [DATE, DATETIME, BOOLEAN, INTEGER, FLOAT])
def test_convert_column_keeps_empty_as_absent_for_file_feeds(type_):
    typed, invalid = convert_column(pd.Series(["", ""], dtype=STRING_DTYPE), type_)
    assert typed.isna().all() and not invalid.any()


def test_dates_with_time_marks_valid_datetimes_that_are_no_dates():
    values = ["2024-05-01 10:30:00", "2024-05-01T00:00:00-0500", "2024-05-01 00:00:00", "2024-05-01",
              "2024-02-30 10:30:00", "yesterday", ""]
    mask = dates_with_time(pd.Series(values, dtype=STRING_DTYPE))
    assert mask.dtype == np.bool_
    assert list(mask) == [True, True, False, False, False, False, False]


# A small object: declared columns, one inferred boolean (discovered.yaml), no common columns.
THING = parse_catalog(
    {"objects": {"Thing__c": {"columns": {
        "Id": {"type": "id", "nullable": False},
        "IsDeleted": {"type": "boolean", "nullable": False},
        "SystemModstamp": {"type": "datetime", "nullable": False},
        "LastModifiedDate": "datetime",
        "CreatedDate": "datetime",
        "Due__c": "date",
        "Body__c": "string"}}}},
    {"objects": {"Thing__c": {"columns": {"Flag__c": {"type": "boolean", "source": "inferred"},
                                          "Score__c": {"type": "float", "source": "inferred"}}}}},
)["Thing__c"]
ID1, ID2, ID3 = "a0B000000000001AAA", "a0B000000000002AAA", "a0B000000000003AAA"


def transform(tmp_path: Path, text: str, limits: TextLimits = TextLimits()) -> ChunkResult:
    path = tmp_path / "Thing__c.csv"
    path.write_text(text)
    header, header_lines = read_header(path, "Thing__c.csv")
    plan = plan_header(THING, header, "Thing__c.csv")
    [chunk] = list(iter_csv_chunks(path, "Thing__c.csv", header, header_lines))
    return transform_chunk(THING, chunk, plan, "P", "Thing__c.csv", limits)


def empty_as_false(column: str) -> dict:
    return {"column": column, "change": "empty_as_false",
            "reason": "empty checkbox read as false (Salesforce checkboxes are never null)"}


def test_a_data_export_file_loads_as_written(tmp_path):
    result = transform(tmp_path, (
        '"Id","IsDeleted","SystemModstamp","Due__c","Score__c","Flag__c"\n'
        f'"{ID1}","0","2024-05-01 06:32:11","2024-05-02 00:00:00","3.5E8","1"\n'
        f'"{ID2}","1","2024-05-01 23:00:00","","1.0E-4","0"\n'))
    assert result.rejects.num_rows == 0 and result.empty_as_false == 0
    rows = result.rows
    assert list(rows["isdeleted"]) == [0, 1] and list(rows["flag__c"]) == [1, 0]
    assert list(rows["systemmodstamp"]) == [utc("2024-05-01 06:32:11"), utc("2024-05-01 23:00:00")]
    assert rows["due__c"].iloc[0] == pd.Timestamp("2024-05-02") and pd.isna(rows["due__c"].iloc[1])
    assert list(rows["score__c"]) == [350_000_000.0, 0.0001]
    assert LOAD_CHANGES not in rows  # nothing changed: no column at all


def test_a_date_with_a_time_of_day_is_rejected_saying_so_and_each_bad_date_by_its_own_value(tmp_path):
    # The reasons come from each rejected row's own value wherever it sits in the chunk (the rows set
    # aside were once matched to other rows' values by position).
    id4, id5 = "a0B000000000004AAA", "a0B000000000005AAA"
    result = transform(tmp_path, (
        "Id,IsDeleted,SystemModstamp,Due__c\n"
        f"{ID1},false,2024-05-01T06:32:11.000Z,2024-05-01\n"
        f"{ID2},false,2024-05-01T06:32:11.000Z,2024-05-01 10:30:00\n"
        f"{ID3},false,2024-05-01T06:32:11.000Z,2024-02-30\n"
        f"{id4},false,2024-05-01T06:32:11.000Z,x\n"
        f"{id5},false,2024-05-01T06:32:11.000Z,2024-05-01T00:00:00.000Z\n"))
    assert list(result.rows["id"]) == [ID1, id5]
    by_line = {r["_source_line"]: r for r in result.rejects.to_pylist()}
    assert {line: r["column_name"] for line, r in by_line.items()} == {3: "due__c", 4: "due__c", 5: "due__c"}
    assert by_line[3]["reason"] == "a Date field with a time of day: '2024-05-01 10:30:00'"
    assert by_line[4]["reason"] == "not a valid date: '2024-02-30'"
    assert by_line[5]["reason"] == "not a valid date: 'x'"


def test_empty_checkboxes_are_false_and_recorded_in_load_changes(tmp_path):
    result = transform(tmp_path, (
        "Id,IsDeleted,SystemModstamp,Flag__c\n"
        f"{ID1},1,2024-05-01T06:32:11.000Z,\n"  # API export: false is empty, in a declared and an inferred column
        f"{ID2},,2024-05-01T06:32:11.000Z,\n"
        f"{ID3},1,2024-05-01T06:32:11.000Z,TRUE\n"))
    assert result.rejects.num_rows == 0  # an empty IsDeleted no longer fails not_nullable
    rows = result.rows.to_dict("records")
    assert [(r["isdeleted"], r["flag__c"]) for r in rows] == [(1, 0), (0, 0), (1, 1)]
    assert json.loads(rows[0][LOAD_CHANGES]) == [empty_as_false("flag__c")]
    assert json.loads(rows[1][LOAD_CHANGES]) == [empty_as_false("isdeleted"), empty_as_false("flag__c")]
    assert pd.isna(rows[2][LOAD_CHANGES])  # nothing changed in this row
    assert result.empty_as_false == 3


def test_empty_checkboxes_merge_with_truncations_and_rejected_rows_are_not_counted(tmp_path):
    result = transform(tmp_path, (
        "Id,IsDeleted,SystemModstamp,Body__c\n"
        f"{ID1},,2024-05-01T06:32:11.000Z,{'x' * 25}\n"
        f"{ID2},true,2024-05-01T06:32:11.000Z,{'y' * 25}\n"
        f"short,,2024-05-01T06:32:11.000Z,z\n"
        f"{ID3},,2024-05-01T06:32:11.000Z,z\n"), TextLimits(varchar_bytes=19))  # an Id fits
    rows = result.rows.to_dict("records")
    truncated = {"change": "truncated", "reason": "25 bytes, over the target's 19-byte text limit",
                 "bytes": 25, "kept_bytes": 19}
    assert json.loads(rows[0][LOAD_CHANGES]) == [empty_as_false("isdeleted"), {"column": "body__c", **truncated}]
    assert json.loads(rows[1][LOAD_CHANGES]) == [{"column": "body__c", **truncated}]
    assert json.loads(rows[2][LOAD_CHANGES]) == [empty_as_false("isdeleted")]  # the first row's cut is its own
    assert [r["_source_line"] for r in result.rejects.to_pylist()] == [4]
    assert result.empty_as_false == 2  # the rejected row's empty checkbox does not load


HEADER_PLANS = [
    ("data_loader_upper_case", '"ID","ISDELETED","SYSTEMMODSTAMP","OWNERID"', "systemmodstamp", None),
    ("data_loader_without_systemmodstamp", "Id,IsDeleted,LastModifiedDate,CreatedDate", "lastmodifieddate",
     "the header has no SystemModstamp; newest LastModifiedDate wins for this file"),
    ("data_loader_upper_case_created_only", "ID,CREATEDDATE", "createddate",
     "the header has no SystemModstamp; newest CreatedDate wins for this file"),
    ("data_loader_no_version", "Id,Body__c", None,
     "the header has none of SystemModstamp, LastModifiedDate, CreatedDate; the row of the later folder, "
     "file and line wins for this file"),
]


@pytest.mark.parametrize("header, version, note", [c[1:] for c in HEADER_PLANS], ids=[c[0] for c in HEADER_PLANS])
def test_header_case_and_the_version_column(tmp_path, header, version, note):
    path = tmp_path / "Thing__c.csv"
    path.write_text(header + "\n")
    fields, _ = read_header(path, "Thing__c.csv")
    plan = plan_header(THING, fields, "Thing__c.csv")
    assert (plan.version_column, plan.version_note) == (version, note)
    assert set(plan.columns.values()) <= {"id", "isdeleted", "systemmodstamp", "lastmodifieddate", "createddate",
                                          "body__c", "ownerid"}
    assert "id" in plan.declared_ids and plan.drift == (("ownerid",) if "OWNERID" in header else ())
    assert plan.inferred_ids == frozenset(plan.drift)  # OWNERID is an Id column by its name, in capitals too


def test_a_fallback_version_must_be_a_catalog_datetime_and_the_key_is_still_required():
    bare = parse_catalog({"objects": {"Bare__c": {"columns": {"Id": "id", "SystemModstamp": "datetime"}}}})["Bare__c"]
    plan = plan_header(bare, ["Id", "LastModifiedDate"], "f.csv")  # drift: text compares by spelling
    assert plan.version_column is None and plan.drift == ("lastmodifieddate",)
    unversioned = parse_catalog({"objects": {"Log__c": {"version_column": None, "columns": {"Id": "id"}}}})["Log__c"]
    assert (plan_header(unversioned, ["Id", "SystemModstamp"], "f.csv").version_column,
            plan_header(unversioned, ["Id"], "f.csv").version_note) == (None, None)
    with pytest.raises(CsvFormatError, match="line 1: the header has no Id column"):
        plan_header(THING, ["SYSTEMMODSTAMP", "ISDELETED"], "f.csv")
    assert plan_header(THING, ["Id", "Paid"], "f.csv").inferred_ids == frozenset()  # case counts unless all capitals



def test_an_inferred_date_column_holding_a_datetime_widens_to_datetime(tmp_path):
    from etl_assets.salesforce.staging import SourceFile, stage_object

    path = tmp_path / "W__c.csv"
    path.write_text(f"Id,SystemModstamp,Day__c\n{ID1},2024-05-01T00:00:00Z,\n{ID2},2024-05-01T00:00:00Z,2024-05-01\n"
                    f"{ID3},2024-05-01T00:00:00Z,2024-05-02 10:30:00\n")
    obj = parse_catalog({"objects": {"W__c": {"columns": {"Id": "id", "SystemModstamp": "datetime"}}}},
                        {"objects": {"W__c": {"columns": {"Day__c": {"type": "date", "source": "inferred"}}}}})["W__c"]
    batch, report = stage_object(obj, [SourceFile("W__c.csv", path)], "P")
    try:  # not text: an empty value before the datetime once made it look unreadable
        assert report.widened_columns == {"day__c": "date -> datetime: W__c.csv line 4 holds '2024-05-02 10:30:00'"}
        assert (batch.rows, batch.rejected_rows) == (3, 0)
    finally:
        batch.discard()


def _spellings(parts: list[list[str]]) -> list[str]:
    import itertools

    return ["".join(p) for p in itertools.product(*parts)]


INSTANT_SPELLINGS = _spellings([
    ["2024-05-01", "2024-02-30", "0000-01-01", "9999-12-31", "2024-13-01", "2024-5-01"], ["T", " ", "t", ""],
    ["", "06", "06:32", "06:32:11", "06:32:11.123", "06:32:11.1234567", "6:32", "0632", "24:00", "06:32:60"],
    ["", "Z", "z", "+00", "-05", "+0530", "-05:30", "+5", "+05:", "UTC", " Z"]])
DAY_SPELLINGS = _spellings([
    ["0000", "1699", "2023", "2024", "9999", "20x4"], ["-"], ["00", "02", "12", "13"], ["-"], ["00", "01", "29", "30", "32"],
    ["", " 00:00:00", " 00:00:01", "T00:00:00.000Z", " 00:00", "x"]])


@pytest.mark.parametrize("spellings, fast, general", [
    (INSTANT_SPELLINGS, "utc_instants", "_split_cast"), (DAY_SPELLINGS, "calendar_days", "_days_by_pattern")],
    ids=["datetime", "date"])
def test_one_cast_per_column_reads_every_spelling_as_the_patterns_do(spellings, fast, general):
    # A column spelled one way throughout is read by one Arrow cast (convert.py), the others by patterns
    # that split it; both must give the same value for every spelling, alone or beside others.
    import pyarrow as pa
    import pyarrow.compute as pc

    from etl_assets.warehouse import convert

    def by_pattern(values):
        text = pc.if_else(pc.equal(pa.array(values), ""), pa.scalar(None, pa.string()), pa.array(values))
        if general == "_days_by_pattern":
            return convert._days_by_pattern(pa.array(values))
        try:
            return convert._split_cast(text)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return convert._split_cast(convert._castable(text))

    columns = [[value, value, ""] for value in spellings] + [spellings[i::7] for i in range(7)]
    for values in columns:
        assert getattr(convert, fast)(pa.array(values)).equals(by_pattern(values)), values
