"""A hostile file corpus, generated here, with the exact outcome of every case.

Each case is one CSV file and one of three outcomes: rows loaded (exactly which,
with which values), rows rejected (line, column and reason), or the file refused
with a message naming file, line and column, in which case nothing of that object
for that folder is loaded. The corpus runs twice: through `stage_object` (every
case, exact outcomes, fast) and through Dagster into the real PostgreSQL server
(loaded cases together in one folder; one refused case per object in another,
so a single run proves every refusal leaves its table unchanged and the code
location and the sensor survive all of it).
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from etl_assets.landing.csv_reader import CsvFormatError
from etl_assets.landing.zone import LocalLandingZone
from etl_assets.salesforce.catalog import MAX_TABLE_COLUMNS, load_catalog
from etl_assets.salesforce.ids import eighteen_character_id
from etl_assets.salesforce.staging import SourceFile, stage_object
from etl_assets.samples.salesforce import salesforce_id
from etl_assets_tests.helpers import (
    folders_in,
    materialize_folders,
    resources,
    table_digest,
)

CATALOG = load_catalog()
UTC = dt.timezone.utc
T0 = "2024-06-01T10:00:00.000Z"
HEADER = "Id,IsDeleted,SystemModstamp"
LOADED_FOLDER = "20240610_Differential"
REFUSED_FOLDER = "20240611_Differential"


@dataclass
class Case:
    name: str
    file: str
    content: bytes
    # Loaded: id -> {column: value} of rows that must be in the table (only the listed columns are compared).
    rows: dict[str, dict] = field(default_factory=dict)
    # Rejected: (line, column_name, reason) of every reject.
    rejects: list[tuple[int, str, str]] = field(default_factory=list)
    # Refused: (line, column, message pattern).
    refused: tuple[int, int | None, str] | None = None


def ids(prefix: str, start: int, n: int) -> list[str]:
    return [salesforce_id(prefix, start + i) for i in range(n)]


def stamp(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def refused_cases(api_name: str, prefix: str, base: int) -> list[Case]:
    """Cases that must refuse the file; they need only the common columns, so fit any object."""
    a, b = ids(prefix, base, 2)
    width = MAX_TABLE_COLUMNS - (len(CATALOG[api_name].columns) + 5)  # drift columns that still fit
    wide_header = HEADER + "," + ",".join(f"extra_{i}" for i in range(2000))
    return [
        Case("text_after_closing_quote", "quotes.csv",
             f'{HEADER},CreatedById\n{a},false,{T0},ok\n{b},false,{T0},"ab"cd\n'.encode(),
             refused=(3, 55, "text after the closing quote of a quoted value")),
        Case("quote_inside_unquoted_value", "stray.csv",
             f'{HEADER},CreatedById\n{a},false,{T0},5" screen\n'.encode(),
             refused=(2, 52, "a quote inside an unquoted value")),
        Case("unterminated_quote_at_eof", "open.csv",
             f'{HEADER},CreatedById\n{a},false,{T0},fine\n{b},false,{T0},"never closed'.encode(),
             refused=(3, 51, "a quoted value is never closed")),
        Case("latin1_bytes", "latin1.csv",
             f"{HEADER},CreatedById\n{a},false,{T0},ok\n{b},false,{T0},caf".encode() + b"\xe9\n",
             refused=(3, 54, r"(?i)bytes not valid utf-8: b'\\xe9'")),
        Case("zero_byte_file", "empty.csv", b"", refused=(1, None, "the file is empty: no header line")),
        Case("missing_primary_key_column", "no_id.csv",
             f"IsDeleted,SystemModstamp\nfalse,{T0}\n".encode(), refused=(1, None, "the header has no Id column")),
        Case("header_with_2000_columns", "wide.csv", (wide_header + "\n" + f"{a},false,{T0}" + "," * 2000 + "\n").encode(),
             refused=(1, 3 + width + 1, r"the header has 2003 fields; .* would exceed 1600 columns")),
        Case("header_names_that_collide_once_normalized", "collide.csv",
             f'{HEADER},Owner.Name,Owner Name\n{a},false,{T0},x,y\n'.encode(),
             refused=(1, 5, r"header fields 'Owner.Name' \(column 4\) and 'Owner Name' \(column 5\) both become "
                            r"the column 'owner_name'")),
        Case("header_name_that_normalizes_to_nothing", "nothing.csv",
             f'{HEADER},"\u540d\u524d"\n{a},false,{T0},x\n'.encode(),
             refused=(1, 4, r"header field '\u540d\u524d' has no letter or digit to name a column by")),
    ]


def loaded_cases() -> list[Case]:
    """Task files that load, some rows rejected; Ids never repeat across cases so they can share a folder."""
    p = "00T"
    cases = []
    a, b = ids(p, 9000, 2)
    cases.append(Case("utf8_with_bom", "bom.csv", b"\xef\xbb\xbf" + f"{HEADER},Subject\n{a},false,{T0},caf\u00e9\n{b},true,{T0},x\n".encode(),
                      rows={a: {"subject": "caf\u00e9", "isdeleted": 0, "_source_line": 2}, b: {"isdeleted": 1}}))
    a, b, c = ids(p, 9010, 3)
    cases.append(Case("crlf_and_lf_mixed_crlf_in_quotes", "crlf.csv",
                      f'{HEADER},Subject\r\n{a},false,{T0},"first\r\nsecond"\n{b},false,{T0},lf\r\n{c},false,{T0},end\n'.encode(),
                      rows={a: {"subject": "first\r\nsecond", "_source_line": 2}, b: {"subject": "lf", "_source_line": 4},
                            c: {"subject": "end", "_source_line": 5}}))
    cases.append(Case("header_only", "header_only.csv", f"{HEADER},Subject\n".encode()))
    a, b = ids(p, 9020, 2)
    cases.append(Case("duplicate_ids_in_one_file", "dupes.csv", (
        f"{HEADER},Subject\n{a},false,2024-06-01T10:00:00.000Z,v1\n{a},false,2024-06-01T12:00:00.000Z,v3\n"
        f"{a},false,2024-06-01T11:00:00.000Z,v2\n{b},false,{T0},same stamp first\n{b},false,{T0},same stamp last\n").encode(),
        rows={a: {"subject": "v3", "systemmodstamp": stamp("2024-06-01T12:00:00Z"), "_source_line": 3},
              b: {"subject": "same stamp last", "_source_line": 6}}))
    a, = ids(p, 9030, 1)
    cases.append(Case("empty_primary_key", "empty_id.csv", f"{HEADER}\n,false,{T0}\n{a},false,{T0}\n".encode(),
                      rows={a: {"_source_line": 3}}, rejects=[(2, "id", "failed a value is required: ''")]))
    a, b = ids("00T", 9040, 2)
    a15, b15 = a[:15], b[:15]
    cases.append(Case("ids_of_15_and_18_characters", "ids.csv", (
        f"{HEADER},Subject\n{a15},false,2024-06-01T10:00:00.000Z,short form\n{a},false,2024-06-01T11:00:00.000Z,long form\n"
        f"{b15},false,{T0},only short\n{a}X,false,{T0},nineteen\n{a15[:14]},false,{T0},fourteen\n").encode(),
        rows={a: {"subject": "long form", "_source_line": 3}, b: {"subject": "only short", "_source_line": 4}},
        rejects=[(5, "id", f"not a 15- or 18-character Salesforce Id: '{a}X'"),
                 (6, "id", f"not a 15- or 18-character Salesforce Id: '{a15[:14]}'")]))
    a, = ids(p, 9050, 1)
    cases.append(Case("unknown_columns_and_sql_keyword_names", "keywords.csv", (
        f'{HEADER},Legacy_Code__c,select,order,user,Subject\n'
        f'{a},false,{T0},L-1,s,o,u,"\'); DROP TABLE salesforce.task; --"\n').encode(),
        rows={a: {"legacy_code__c": "L-1", "select": "s", "order": "o", "user": "u",
                  "subject": "'); DROP TABLE salesforce.task; --"}}))
    a, b, c = ids(p, 9060, 3)
    longest = "\u00e9" * 131_072  # a Long Text Area at Salesforce's limit: 131,072 characters, 262,144 bytes
    cases.append(Case("text_values_as_long_as_salesforce_allows", "long.csv", (
        f"{HEADER},Description\n{a},false,{T0},{'x' * 70_000}\n{b},false,{T0},{'y' * 65_535}\n"
        f'{c},false,{T0},"{longest}"\n').encode(),
        rows={a: {"description": "x" * 70_000, "_load_changes": None}, b: {"description": "y" * 65_535},
              c: {"description": longest}}))
    good, *bad = ids(p, 9070, 8)
    cases.append(Case("numbers_and_dates_in_wrong_formats", "formats.csv", (
        f"{HEADER},CallDurationInSeconds,ActivityDate,CreatedDate\n"
        f"{good},false,{T0},1e3,2024-06-01,2024-06-01 10:00:00+02:00\n"
        f'{bad[0]},false,{T0},"1,234",,\n'
        f"{bad[1]},false,{T0},12.5,,\n"
        f"{bad[2]},false,{T0},99999999999999999999,,\n"
        f"{bad[3]},false,{T0},,05/01/2024,\n"
        f"{bad[4]},false,{T0},,2024-02-30,\n"
        f"{bad[5]},yes,{T0},,,\n"
        f"{bad[6]},false,yesterday,,,\n").encode(),
        rows={good: {"calldurationinseconds": 1000, "activitydate": dt.date(2024, 6, 1),
                     "createddate": dt.datetime(2024, 6, 1, 8, 0, tzinfo=UTC)}},
        rejects=[(3, "calldurationinseconds", "not a valid integer: '1,234'"),
                 (4, "calldurationinseconds", "not a valid integer: '12.5'"),
                 (5, "calldurationinseconds", "not a valid integer: '99999999999999999999'"),
                 (6, "activitydate", "not a valid date: '05/01/2024'"),
                 (7, "activitydate", "not a valid date: '2024-02-30'"),
                 (8, "isdeleted", "not a valid boolean: 'yes'"),
                 (9, "systemmodstamp", "not a valid datetime: 'yesterday'")]))
    a, b, c, *bad = ids(p, 9110, 7)
    cases.append(Case("dates_and_datetimes_over_salesforces_whole_range", "far_dates.csv", (
        f"{HEADER},ActivityDate,ReminderDateTime,CompletedDateTime\n"
        f"{a},false,2999-12-31T23:59:59.999Z,4000-12-31,4000-12-31T23:59:59.999Z,1700-01-01T00:00:00.000Z\n"
        f"{b},false,2999-01-01T10:00:00.123Z,1700-01-01,2262-04-12T00:00:00.000+0200,1750-09-21T00:00:00.000Z\n"
        f"{c},false,2999-06-01T12:00:00.000Z,2262-04-12,3000-01-01 10:00:00,\n"
        f"{bad[0]},false,{T0},1699-12-31,,\n"
        f"{bad[1]},false,{T0},,4001-01-01T00:00:00.000Z,\n"
        f"{bad[2]},false,{T0},,,0001-01-01T00:00:00Z\n"
        f"{bad[3]},false,{T0},4000-13-01,,\n").encode(),
        rows={a: {"systemmodstamp": dt.datetime(2999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
                  "activitydate": dt.date(4000, 12, 31),
                  "reminderdatetime": dt.datetime(4000, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
                  "completeddatetime": dt.datetime(1700, 1, 1, tzinfo=UTC)},
              b: {"systemmodstamp": dt.datetime(2999, 1, 1, 10, 0, 0, 123000, tzinfo=UTC),
                  "activitydate": dt.date(1700, 1, 1),
                  "reminderdatetime": dt.datetime(2262, 4, 11, 22, 0, tzinfo=UTC),
                  "completeddatetime": dt.datetime(1750, 9, 21, tzinfo=UTC)},
              c: {"activitydate": dt.date(2262, 4, 12),
                  "reminderdatetime": dt.datetime(3000, 1, 1, 10, 0, tzinfo=UTC),  # no offset: UTC
                  "completeddatetime": None}},
        rejects=[(5, "activitydate", "outside Salesforce's range 1700-01-01 to 4000-12-31: '1699-12-31'"),
                 (6, "reminderdatetime",
                  "outside Salesforce's range 1700-01-01 to 4000-12-31: '4001-01-01T00:00:00.000Z'"),
                 (7, "completeddatetime",
                  "outside Salesforce's range 1700-01-01 to 4000-12-31: '0001-01-01T00:00:00Z'"),
                 (8, "activitydate", "not a valid date: '4000-13-01'")]))
    a, b, c = ids(p, 9120, 3)
    owner = salesforce_id("005", 77)
    twin = owner[:14] + owner[14].swapcase()  # the same 15 characters but one in another case: another record
    cases.append(Case("reference_ids_of_15_characters_become_18", "refs.csv", (
        f"{HEADER},OwnerId,WhoId,WhatId\n{a},false,{T0},{owner[:15]},{owner},\n{b},false,{T0},{twin},,\n"
        f"{c},false,{T0},not-an-id,,\n").encode(),
        rows={a: {"ownerid": owner, "whoid": owner, "whatid": ""},
              b: {"ownerid": eighteen_character_id(twin)}},
        rejects=[(4, "ownerid", "not a 15- or 18-character Salesforce Id: 'not-an-id'")]))
    a, = ids(p, 9130, 1)
    account = salesforce_id("001", 5)
    cases.append(Case("header_names_data_loader_and_reports_write", "names.csv", (
        f'{HEADER},Owner.Name,Account Name,Caf\u00e9 Gr\u00f6\u00dfe,"x""; drop table y; --",Account.Id\n'
        f'{a},false,{T0},Ada Lovelace,Acme,cr\u00e8me,v,{account[:15]}\n').encode(),
        rows={a: {"owner_name": "Ada Lovelace", "account_name": "Acme", "cafe_grosse": "cr\u00e8me",
                  "x_drop_table_y": "v", "account_id": account}}))
    a, = ids(p, 9080, 1)
    cases.append(Case("file_name_with_spaces_and_unicode", "task export 2024 \u2013 Z\u00fcrich \u2603.csv",
                      f"{HEADER},Subject\n{a},false,{T0},named\n".encode(), rows={a: {"subject": "named"}}))
    a, b, c, d = ids(p, 9100, 4)  # Arrow skips empty lines; rows and rejects keep their physical lines
    cases.append(Case("empty_lines_between_records", "blank_lines.csv", (
        f'{HEADER},Subject\n\n{a},false,{T0},"para1\n\npara2"\n\n\r\n,false,{T0},no id\n'
        f"{b},false,{T0},after\n\n{c},yes,{T0},bad flag\n{d},false,{T0},last\n\n\n").encode(),
        rows={a: {"subject": "para1\n\npara2", "_source_line": 3}, b: {"subject": "after", "_source_line": 9},
              d: {"subject": "last", "_source_line": 12}},
        rejects=[(8, "id", "failed a value is required: ''"), (11, "isdeleted", "not a valid boolean: 'yes'")]))
    return cases


LOADED = loaded_cases()
REFUSED = refused_cases("Task", "00T", 9500)


def write(directory: Path, case: Case) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / case.file
    path.write_bytes(case.content)
    return path


def staged(tmp_path: Path, case: Case):
    path = write(tmp_path / "Task", case)
    batch, report = stage_object(CATALOG["Task"], [SourceFile(f"backup/X/Task/{case.file}", path)], "X")
    rows = [r for f in batch.files for r in pq.read_table(f).to_pylist()]
    rejects = [r for f in batch.reject_files for r in pq.read_table(f).to_pylist()]
    batch.discard()
    return rows, rejects, report


def newest_per_id(rows: list[dict]) -> dict[str, dict]:
    """What the merge keeps: per Id the highest (SystemModstamp, file, line)."""
    best: dict[str, dict] = {}
    for row in rows:
        key = (row["systemmodstamp"], row["_source_file"], row["_source_line"])
        current = best.get(row["id"])
        if current is None or key > (current["systemmodstamp"], current["_source_file"], current["_source_line"]):
            best[row["id"]] = row
    return best


@pytest.mark.parametrize("case", LOADED, ids=lambda c: c.name)
def test_loaded_cases_give_exactly_these_rows_and_rejects(case, tmp_path):
    rows, rejects, report = staged(tmp_path, case)
    assert [(r["_source_line"], r["column_name"], r["reason"]) for r in rejects] == case.rejects
    kept = newest_per_id(rows)
    assert set(kept) == set(case.rows)
    for key, expected in case.rows.items():
        assert {c: kept[key][c] for c in expected} == expected, key
    assert report.rows_read == len(rows) + len(rejects)


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.name)
def test_refused_cases_name_file_line_and_column(case, tmp_path):
    line, column, message = case.refused
    with pytest.raises(CsvFormatError) as error:
        staged(tmp_path, case)
    assert (error.value.file, error.value.line, error.value.column) == (f"backup/X/Task/{case.file}", line, column)
    assert re.search(message, error.value.detail), error.value.detail
    where = f"backup/X/Task/{case.file}, line {line}" + (f", column {column}" if column else "")
    assert str(error.value).startswith(where + ": ")


def test_15_character_ids_extend_with_salesforces_checksum():
    for prefix, number in [("00T", 1), ("001", 62**7 + 5), ("a0A", 62**11 * 17 + 3), ("005", 0)]:
        full = salesforce_id(prefix, number)  # the generator's independent implementation
        assert eighteen_character_id(full[:15]) == full
    assert eighteen_character_id("001A0000006Vm9r") == "001A0000006Vm9rIAC"  # the example Salesforce documents


@pytest.mark.slow
def test_the_corpus_through_dagster_into_each_engine(landing_root, warehouse, tmp_path, monkeypatch):
    # No fallback encoding: the ISO-8859-1 file is refused, naming the setting (with the default
    # windows-1252 fallback it loads: test_real_exports.py).
    monkeypatch.setenv("ETL_ASSETS_SALESFORCE_FALLBACK_ENCODING", "none")
    p = warehouse.param
    zone = LocalLandingZone(root=str(landing_root))
    baseline = folders_in(landing_root)[:2]
    materialize_folders(baseline, resources(zone, warehouse))
    with warehouse.session() as session:  # a canary table that SQL text from data would have to reach
        for statement in ("CREATE SCHEMA IF NOT EXISTS canary", "CREATE TABLE canary.y (n int)",
                          "INSERT INTO canary.y VALUES (1)"):
            session.execute(statement)
    tables = [api.lower() for api in CATALOG]
    before = {t: table_digest(warehouse, t) for t in tables}

    # One refused case per object, beside a good file of that object: every object step fails, nothing loads.
    refused = {}
    for number, (api_name, obj) in enumerate(CATALOG.items()):
        cases = refused_cases(api_name, _prefix(api_name), 7000 + number * 10)
        if number >= len(cases):
            break
        case = cases[number]
        directory = landing_root / "backup" / REFUSED_FOLDER / api_name
        write(directory, case)
        (directory / "a_good.csv").write_text(f"{HEADER}\n{salesforce_id(_prefix(api_name), 6999)},false,{T0}\n")
        refused[obj.table] = case
    assert len(refused) == len(REFUSED)
    [result] = materialize_folders([REFUSED_FOLDER], resources(zone, warehouse), raise_on_error=False)
    failures = {e.step_key.removeprefix("salesforce__"): e for e in result.all_events
                if e.event_type == dg.DagsterEventType.STEP_FAILURE}
    assert set(failures) == set(refused)
    for table, case in refused.items():
        line, column, message = case.refused
        event = failures[table]
        api_name = next(a for a, o in CATALOG.items() if o.table == table)
        where = f"backup/{REFUSED_FOLDER}/{api_name}/{case.file}, line {line}" + (f", column {column}" if column else "")
        assert where in event.step_failure_data.error.message, (case.name, event.step_failure_data.error.message)
        assert re.search(message, event.step_failure_data.error.message)
        metadata = event.step_failure_data.user_failure_data.metadata
        assert (metadata["line"].value, metadata["column"].value) == (line, column)
    assert [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY] == []
    assert {t: table_digest(warehouse, t) for t in tables} == before, "a refused file changed a table"
    assert warehouse.query("SELECT n FROM canary.y") == [(1,)], "SQL from data ran"

    # Every loading case in one Task folder: exactly the expected rows and rejects, through PostgreSQL.
    for case in LOADED:
        write(landing_root / "backup" / LOADED_FOLDER / "Task", case)
    [result] = materialize_folders([LOADED_FOLDER], resources(zone, warehouse), objects=["Task"])
    assert result.success
    expected_rows = {k: v for case in LOADED for k, v in case.rows.items()}
    columns = sorted({c for row in expected_rows.values() for c in row} | {"id", "_source_file"})
    names = ", ".join(f'"{c}"' for c in columns)
    got = {r[columns.index("id")]: dict(zip(columns, r)) for r in warehouse.query(
        f'SELECT {names} FROM salesforce.task WHERE _source_partition = {p}', [LOADED_FOLDER])}
    assert set(got) == set(expected_rows)
    for key, expected in expected_rows.items():
        assert {c: got[key][c] for c in expected} == expected, key
    unicode_case = next(c for c in LOADED if c.name == "file_name_with_spaces_and_unicode")
    unicode_id = next(iter(unicode_case.rows))
    assert got[unicode_id]["_source_file"] == f"backup/{LOADED_FOLDER}/Task/{unicode_case.file}"
    rejects = warehouse.query(
        "SELECT _source_file, _source_line, column_name, reason FROM salesforce.task_rejects "
        f"WHERE _source_partition = {p} ORDER BY 1, 2", [LOADED_FOLDER])
    assert rejects == sorted((f"backup/{LOADED_FOLDER}/Task/{case.file}", *reject)
                             for case in LOADED for reject in case.rejects)
    assert warehouse.query("SELECT n FROM canary.y") == [(1,)]
    for api_name in CATALOG:
        if api_name != "Task":
            assert table_digest(warehouse, api_name.lower()) == before[api_name.lower()]


def test_the_code_location_and_the_sensor_survive_the_corpus(landing_root):
    from etl_assets.salesforce.sensors import salesforce_backup_sensor

    for case in LOADED + REFUSED:
        write(landing_root / "backup" / LOADED_FOLDER / "Task", case)
    zone = LocalLandingZone(root=str(landing_root))
    context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources={"landing_zone": zone})
    result = salesforce_backup_sensor(context)
    requested = {r.partition_key for r in result.run_requests}
    assert LOADED_FOLDER in requested
    from etl_assets.definitions import defs

    assert defs.resolve_job_def("salesforce_backup_job") is not None


def _prefix(api_name: str) -> str:
    from etl_assets.samples.salesforce import _key_prefix

    return _key_prefix(api_name)


_INSTANT = re.compile(r"\b\d{4}-(\d{2})-(\d{2})T")


def _in_2999(match: re.Match) -> str:
    month, day = match.groups()
    return f"2999-{month}-{'28' if (month, day) == ('02', '29') else day}T"  # 2999 is no leap year


@pytest.mark.slow
def test_a_backup_whose_every_timestamp_is_in_2999_loads_every_row(landing_root, warehouse):
    """Past pandas' nanosecond range (2262-04-11): every datetime of every object moved to 2999."""
    folder = folders_in(landing_root)[0]
    files = sorted((landing_root / "backup" / folder).rglob("*.csv"))
    moved = 0
    for path in files:
        text, count = _INSTANT.subn(_in_2999, path.read_text(encoding="utf-8"))
        path.write_text(text, encoding="utf-8")
        moved += count
    assert moved > 1000
    [result] = materialize_folders([folder], resources(LocalLandingZone(root=str(landing_root)), warehouse))
    assert result.success
    checks = [e.asset_check_evaluation_data for e in result.all_events
              if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION]
    rejected = {c.asset_key.path[-1]: c.metadata["rows_rejected"].value for c in checks
                if c.check_name == "no_rejected_rows"}
    assert rejected and set(rejected.values()) == {0}, rejected
    loaded = {p.parent.name for p in files}
    assert len(loaded) >= 5
    for api_name in loaded:
        rows = [r for p in files if p.parent.name == api_name for r in csv.DictReader(p.open(encoding="utf-8"))]
        table = f'salesforce."{CATALOG[api_name].table}"'
        [(count, low, high)] = warehouse.query(f"SELECT COUNT(*), MIN(systemmodstamp), MAX(systemmodstamp) FROM {table}")
        assert count == len({r["Id"] for r in rows}), api_name
        assert count == 0 or (low.year, high.year) == (2999, 2999), (api_name, low, high)
