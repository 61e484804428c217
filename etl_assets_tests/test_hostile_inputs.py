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

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from etl_assets.lib.csv_reader import CsvFormatError
from etl_assets.resources.landing_zone import LocalLandingZone
from etl_assets.resources.warehouse.postgres import PostgresWarehouse
from etl_assets.salesforce.catalog import MAX_TABLE_COLUMNS, load_catalog
from etl_assets.salesforce.sample import salesforce_id
from etl_assets.salesforce.staging import SourceFile, stage_object
from etl_assets.salesforce.transform import eighteen_character_id
from etl_assets_tests.helpers import folders_in, materialize_folders, resources, table_digest

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
    width = MAX_TABLE_COLUMNS - (len(CATALOG[api_name].columns) + 4)  # drift columns that still fit
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
             refused=(3, 54, r"bytes not valid utf-8: b'\\xe9'")),
        Case("zero_byte_file", "empty.csv", b"", refused=(1, None, "the file is empty: no header line")),
        Case("missing_primary_key_column", "no_id.csv",
             f"IsDeleted,SystemModstamp\nfalse,{T0}\n".encode(), refused=(1, None, "the header has no Id column")),
        Case("header_with_2000_columns", "wide.csv", (wide_header + "\n" + f"{a},false,{T0}" + "," * 2000 + "\n").encode(),
             refused=(1, 3 + width + 1, r"the header has 2003 fields; .* would exceed 1600 columns")),
        Case("injection_in_column_name", "inject.csv",
             f'{HEADER},"x""; drop table y; --"\n{a},false,{T0},v\n'.encode(),
             refused=(1, 4, r"header field 'x\"; drop table y; --'.* is not a valid identifier")),
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
        rejects=[(5, "id", f"failed not a 15- or 18-character Salesforce Id: '{a}X'"),
                 (6, "id", f"failed not a 15- or 18-character Salesforce Id: '{a15[:14]}'")]))
    a, = ids(p, 9050, 1)
    cases.append(Case("unknown_columns_and_sql_keyword_names", "keywords.csv", (
        f'{HEADER},Legacy_Code__c,select,order,user,Subject\n'
        f'{a},false,{T0},L-1,s,o,u,"\'); DROP TABLE salesforce.task; --"\n').encode(),
        rows={a: {"legacy_code__c": "L-1", "select": "s", "order": "o", "user": "u",
                  "subject": "'); DROP TABLE salesforce.task; --"}}))
    a, b = ids(p, 9060, 2)
    cases.append(Case("text_value_of_70000_bytes", "long.csv",
                      f"{HEADER},Description\n{a},false,{T0},{'x' * 70_000}\n{b},false,{T0},{'y' * 65_535}\n".encode(),
                      rows={b: {"description": "y" * 65_535}},
                      rejects=[(2, "description", "70000 bytes, over the 65535-byte limit")]))
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
    a, = ids(p, 9080, 1)
    cases.append(Case("file_name_with_spaces_and_unicode", "task export 2024 \u2013 Z\u00fcrich \u2603.csv",
                      f"{HEADER},Subject\n{a},false,{T0},named\n".encode(), rows={a: {"subject": "named"}}))
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
    batch, report = stage_object(CATALOG["Task"], [SourceFile(f"backup/X/Task/{case.file}", path)], "X",
                                 staging_dir=tmp_path / "staging")
    rows = [r for f in batch.files for r in pq.read_table(f).to_pylist()]
    rejects = [r for f in batch.reject_files for r in pq.read_table(f).to_pylist()]
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


@pytest.fixture
def postgres_warehouse(postgres_database):
    return PostgresWarehouse(host=postgres_database["host"], port=postgres_database["port"],
                             user=postgres_database["user"], database=postgres_database["database"])


@pytest.mark.slow
def test_the_corpus_through_dagster_into_postgres(landing_root, postgres_warehouse, tmp_path):
    zone = LocalLandingZone(root=str(landing_root))
    baseline = folders_in(landing_root)[:2]
    materialize_folders(baseline, resources(zone, postgres_warehouse))
    postgres_warehouse.query('CREATE TABLE public.y (n int); INSERT INTO public.y VALUES (1); SELECT 1')
    tables = [api.lower() for api in CATALOG]
    before = {t: table_digest(postgres_warehouse, t) for t in tables}

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
    [result] = materialize_folders([REFUSED_FOLDER], resources(zone, postgres_warehouse), raise_on_error=False)
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
    assert {t: table_digest(postgres_warehouse, t) for t in tables} == before, "a refused file changed a table"
    assert postgres_warehouse.query("SELECT n FROM public.y") == [(1,)], "SQL from data ran"

    # Every loading case in one Task folder: exactly the expected rows and rejects, through PostgreSQL.
    for case in LOADED:
        write(landing_root / "backup" / LOADED_FOLDER / "Task", case)
    [result] = materialize_folders([LOADED_FOLDER], resources(zone, postgres_warehouse), objects=["Task"])
    assert result.success
    expected_rows = {k: v for case in LOADED for k, v in case.rows.items()}
    columns = sorted({c for row in expected_rows.values() for c in row} | {"id", "_source_file"})
    names = ", ".join(f'"{c}"' for c in columns)
    got = {r[columns.index("id")]: dict(zip(columns, r)) for r in postgres_warehouse.query(
        f'SELECT {names} FROM salesforce.task WHERE _source_partition = %s', [LOADED_FOLDER])}
    assert set(got) == set(expected_rows)
    for key, expected in expected_rows.items():
        assert {c: got[key][c] for c in expected} == expected, key
    unicode_id = next(iter(LOADED[-1].rows))
    assert got[unicode_id]["_source_file"] == f"backup/{LOADED_FOLDER}/Task/{LOADED[-1].file}"
    rejects = postgres_warehouse.query(
        "SELECT _source_file, _source_line, column_name, reason FROM salesforce.task_rejects "
        "WHERE _source_partition = %s ORDER BY 1, 2", [LOADED_FOLDER])
    assert rejects == sorted((f"backup/{LOADED_FOLDER}/Task/{case.file}", *reject)
                             for case in LOADED for reject in case.rejects)
    assert postgres_warehouse.query("SELECT n FROM public.y") == [(1,)]
    for api_name in CATALOG:
        if api_name != "Task":
            assert table_digest(postgres_warehouse, api_name.lower()) == before[api_name.lower()]


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
    from etl_assets.salesforce.sample import _key_prefix

    return _key_prefix(api_name)
