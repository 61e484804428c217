"""The sample generator must produce backups the loader accepts, reproducibly."""

from __future__ import annotations

import csv
import datetime
import random
import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from etl_assets.salesforce.catalog import CatalogColumn, load_catalog
from etl_assets.samples.salesforce import (
    DRIFT_COLUMN,
    KEY_PREFIXES,
    _write_csv,
    generate_sample,
    salesforce_id,
    write_object_csv,
)
from etl_assets.warehouse.spec import ColumnType

START = datetime.date(2024, 5, 1)
FOLDERS = 6
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
REFERENCES = {
    "CreatedById": {"005"}, "LastModifiedById": {"005"}, "OwnerId": {"005"}, "ManagerId": {"005"},
    "litify_pm__Principal_Attorney__c": {"005"}, "AccountId": {"001"}, "ParentId": {"001"},
    "litify_pm__Client__c": {"001"}, "litify_pm__Party__c": {"001"}, "ContactId": {"003"},
    "WhoId": {"003", "00Q"}, "WhatId": {"001", "006", "500", "a0A"}, "litify_pm__Matter__c": {"a0A"},
    "litify_pm__Intake__c": {"a0B"}, "UserRoleId": {"00E"}, "ProfileId": {"00e"},
}
FORMATS = {
    ColumnType.DATETIME: re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z"),
    ColumnType.DATE: re.compile(r"\d{4}-\d\d-\d\d"),
    ColumnType.BOOLEAN: re.compile(r"true|false"),
    ColumnType.INTEGER: re.compile(r"-?\d+"),
    ColumnType.FLOAT: re.compile(r"-?\d+\.\d\d"),
}


def reference_checksum(id15: str) -> str:
    """The documented algorithm, written independently of the module under test."""
    suffix = ""
    for chunk in (id15[0:5], id15[5:10], id15[10:15]):
        bits = sum(1 << i for i, ch in enumerate(chunk) if "A" <= ch <= "Z")
        suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
    return suffix


def is_valid_id(value: str) -> bool:
    return len(value) == 18 and all(ch in BASE62 for ch in value) and reference_checksum(value[:15]) == value[15:]


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, encoding="utf-8", newline="") as f:
        records = list(csv.reader(f, strict=True))
    header, rows = records[0], records[1:]
    assert all(len(row) == len(header) for row in rows), path
    return header, [dict(zip(header, row)) for row in rows]


def day_of(folder: str) -> datetime.date:
    return datetime.datetime.strptime(folder.split("_")[0], "%Y%m%d").date()


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("sample")
    return root / "backup", generate_sample(root, folders=FOLDERS, rows=120, seed=7, start=START)


@pytest.fixture(scope="module")
def parsed(sample) -> dict[tuple[str, str], list[tuple[str, list[str], list[dict]]]]:
    """(folder, object) -> [(file name, header, rows)] for every file of the sample."""
    backup, _ = sample
    files = defaultdict(list)
    for path in sorted(backup.glob("*/*/*.csv")):
        header, rows = read_rows(path)
        files[path.parent.parent.name, path.parent.name].append((path.name, header, rows))
    return files


def all_rows(parsed, api_name: str):
    for (folder, name), files in sorted(parsed.items()):
        if name == api_name:
            for _, _, rows in files:
                for row in rows:
                    yield folder, row


def test_salesforce_id_known_example():
    number = 0
    for ch in "A0000006Vm9r":
        number = number * 62 + BASE62.index(ch)
    assert salesforce_id("001", number) == "001A0000006Vm9rIAC"


@pytest.mark.parametrize("prefix", sorted(set(KEY_PREFIXES.values())))
def test_salesforce_id_checksums(prefix):
    numbers = [0, 1, 61, 62, 3843, 3844, 238327, 10**6, 123456789, 62**12 - 1] + [7**k for k in range(26)]
    for number in numbers:
        value = salesforce_id(prefix, number)
        digits = "".join(BASE62[number // 62**k % 62] for k in range(11, -1, -1))
        assert value[:15] == prefix + digits and is_valid_id(value), value
    assert len({salesforce_id(prefix, n) for n in range(5000)}) == 5000


def test_salesforce_id_rejects_bad_input():
    for prefix, number in [("00", 1), ("00-", 1), ("001", -1), ("001", 62**12)]:
        with pytest.raises(ValueError):
            salesforce_id(prefix, number)


def test_same_arguments_give_identical_bytes(tmp_path):
    def snapshot(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    first = generate_sample(tmp_path / "a", folders=4, rows=40, seed=3)
    second = generate_sample(tmp_path / "b", folders=4, rows=40, seed=3)
    assert first == second
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    generate_sample(tmp_path / "c", folders=4, rows=40, seed=4)
    assert snapshot(tmp_path / "a") != snapshot(tmp_path / "c")


def test_folder_layout_and_the_one_empty_folder(sample, parsed):
    backup, result = sample
    expected = [f"{START + datetime.timedelta(days=i):%Y%m%d}_Differential" for i in range(FOLDERS)]
    assert sorted(p.name for p in backup.iterdir()) == expected
    assert list(result) == expected
    empty = [name for name in expected if not any((backup / name).iterdir())]
    assert empty == [expected[FOLDERS // 2]] and result[empty[0]] == {}
    non_empty = [name for name in expected if name not in empty]
    catalog = load_catalog()
    for name in catalog:
        present = [f for f in non_empty if (backup / f / name).is_dir()]
        assert present[0] == expected[0] and len(present) > len(non_empty) / 2, name
    for folder in non_empty:
        assert sorted(p.name for p in (backup / folder).iterdir()) == sorted(result[folder])
        for name, count in result[folder].items():
            files = parsed[folder, name]
            assert [f for f, _, _ in files] == [f"{name.lower()}_part1.csv", f"{name.lower()}_part2.csv"]
            assert sum(len(rows) for _, _, rows in files) == count
            assert 100 <= count <= 140  # about `rows`


def test_headers_follow_catalog_and_drift_only_in_last_task_files(sample, parsed):
    backup, result = sample
    catalog = load_catalog()
    last = [f for f in result if result[f]][-1]
    for (folder, name), files in parsed.items():
        expected = [c.api_name for c in catalog[name].columns]
        drift = folder == last and name == "Task"
        for _, header, rows in files:
            assert header == expected + ([DRIFT_COLUMN] if drift else [])
            if drift:
                values = [row[DRIFT_COLUMN] for row in rows]
                assert all(re.fullmatch(r"LEG-\d{6}", v) for v in values if v)
                assert sum(bool(v) for v in values) > len(values) / 2
    assert ("Task" in result[last]) and sum(DRIFT_COLUMN in h for fs in parsed.values() for _, h, _ in fs) == 2


def assert_follows_catalog(obj, row: dict[str, str], where: str) -> None:
    assert row["Id"][:3] == KEY_PREFIXES[obj.api_name] and is_valid_id(row["Id"]), where
    for column in obj.columns:
        value, checks = row[column.api_name], column.checks
        at = f"{where}: {obj.api_name}.{column.api_name}={value!r}"
        if value == "":
            assert column.nullable, at
            continue
        if column.type in FORMATS:
            assert FORMATS[column.type].fullmatch(value), at
        if "isin" in checks:
            assert value in checks["isin"], at
        if "max_length" in checks:
            assert len(value) <= checks["max_length"], at
        if "min" in checks:
            assert float(value) >= checks["min"], at
        if "max" in checks:
            assert float(value) <= checks["max"], at
        if column.api_name in REFERENCES:
            assert value[:3] in REFERENCES[column.api_name] and is_valid_id(value), at


def test_values_follow_catalog(parsed):
    catalog = load_catalog()
    for (folder, name), files in parsed.items():
        for file, _, rows in files:
            for row in rows:
                assert_follows_catalog(catalog[name], row, f"{folder}/{file}")


def test_columns_without_a_generator_still_follow_their_checks(tmp_path):
    """A column added to the catalog gets type-shaped values that pass its checks."""
    case = load_catalog()["Case"]
    extra = (
        CatalogColumn("Severity__c", ColumnType.STRING, False, {"isin": ["S1", "S2"]}),
        CatalogColumn("Code__c", ColumnType.STRING, True, {"max_length": 4}),
        CatalogColumn("Score__c", ColumnType.FLOAT, False, {"min": 0, "max": 5}),
        CatalogColumn("Count__c", ColumnType.INTEGER, True, {"min": 10, "max": 20}),
        CatalogColumn("Flag__c", ColumnType.BOOLEAN, False),
        CatalogColumn("Due__c", ColumnType.DATE),
        CatalogColumn("Seen__c", ColumnType.DATETIME, False),
    )
    obj = replace(case, columns=case.columns + extra)
    path = tmp_path / "case.csv"
    _write_csv(path, obj, [(i, START.toordinal(), "new") for i in range(500)], START, random.Random(1), seed=7, pool=50)
    header, rows = read_rows(path)
    assert header == [c.api_name for c in obj.columns] and len(rows) == 500
    for row in rows:
        assert_follows_catalog(obj, row, "case.csv")
    assert {row["Severity__c"] for row in rows} == {"S1", "S2"}


def test_timestamps_are_ordered_and_not_after_the_folder_day(parsed):
    for (folder, name), files in parsed.items():
        end = f"{day_of(folder)}T23:59:59.000Z"
        for _, _, rows in files:
            for row in rows:
                assert row["CreatedDate"] <= row["LastModifiedDate"] <= row["SystemModstamp"] <= end
                assert row["LastModifiedDate"][:10] == str(day_of(folder)), (folder, name)


def test_differential_updates_and_soft_deletes(parsed):
    for name in load_catalog():
        history: dict[str, dict] = {}
        updates = deletes = changed = 0
        for folder, rows in _by_folder(all_rows(parsed, name)):
            ids = [row["Id"] for row in rows]
            assert len(ids) == len(set(ids)), f"{name}: an Id twice in {folder}"
            for row in rows:
                before = history.get(row["Id"])
                if before is not None:
                    assert before["IsDeleted"] == "false", f"{name}: a deleted record came back"
                    assert row["SystemModstamp"] > before["SystemModstamp"]
                    assert row["LastModifiedDate"] > before["LastModifiedDate"]
                    assert row["CreatedDate"] == before["CreatedDate"]
                    assert row["CreatedById"] == before["CreatedById"]
                    updates += row["IsDeleted"] == "false"
                    deletes += row["IsDeleted"] == "true"
                    ignored = {"LastModifiedDate", "SystemModstamp", "LastModifiedById", "IsDeleted"}
                    changed += any(row[k] != before[k] for k in row if k not in ignored)
                else:
                    assert row["IsDeleted"] == "false", f"{name}: a record first seen deleted"
                history[row["Id"]] = row
        assert updates >= 20 and deletes >= 3 and changed >= updates * 0.9, (name, updates, deletes, changed)


def _by_folder(rows):
    grouped = defaultdict(list)
    for folder, row in rows:
        grouped[folder].append(row)
    return sorted(grouped.items())


def test_text_is_realistic_and_hostile_enough(sample, parsed):
    backup, _ = sample
    descriptions = [row["Description"] for _, row in all_rows(parsed, "Task") if row["Description"]]
    assert sum("\n" in d for d in descriptions) >= 20
    assert sum("," in d for d in descriptions) >= 20
    assert sum('"' in d for d in descriptions) >= 20
    assert max(map(len, descriptions)) > 200
    subjects = {row["Subject"] for _, row in all_rows(parsed, "Task")}
    assert len(subjects) > 100
    for path in backup.glob("*/*/*.csv"):
        raw = path.read_bytes()
        assert not raw.startswith(b"\xef\xbb\xbf") and b"\r" not in raw
        raw.decode("utf-8")


def test_pyarrow_reads_task_files(sample, parsed):
    backup, result = sample
    catalog = load_catalog()
    for path in sorted(backup.glob("*/Task/*.csv")):
        header, rows = read_rows(path)
        assert header[: len(catalog["Task"].columns)] == [c.api_name for c in catalog["Task"].columns]
        table = pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                strings_can_be_null=False, column_types={name: pa.string() for name in header}
            ),
        )
        assert table.num_rows == len(rows) and table.column_names == header
        assert table.column("Description").to_pylist() == [row["Description"] for row in rows]


def test_write_object_csv(tmp_path):
    catalog = load_catalog()
    for name, obj in catalog.items():
        path = tmp_path / f"{name}.csv"
        assert write_object_csv(path, name, 5000 if name == "Task" else 300) == (5000 if name == "Task" else 300)
        header, rows = read_rows(path)
        assert header == [c.api_name for c in obj.columns]
        assert len(rows) == (5000 if name == "Task" else 300)
        assert all(row["IsDeleted"] == "false" and row["SystemModstamp"].startswith("2024-05-01") for row in rows)
    again = tmp_path / "again.csv"
    write_object_csv(again, "Task", 5000)
    assert again.read_bytes() == (tmp_path / "Task.csv").read_bytes()
    write_object_csv(tmp_path / "next.csv", "Task", 5000, first_index=5000)
    first = {row["Id"] for row in read_rows(tmp_path / "Task.csv")[1]}
    second = {row["Id"] for row in read_rows(tmp_path / "next.csv")[1]}
    assert len(first) == len(second) == 5000 and not first & second
    assert write_object_csv(tmp_path / "empty.csv", "Task", 0) == 0
    assert read_rows(tmp_path / "empty.csv") == (header_of("Task"), [])
    with pytest.raises(ValueError):
        write_object_csv(tmp_path / "x.csv", "NoSuchObject", 1)


def header_of(name: str) -> list[str]:
    return [c.api_name for c in load_catalog()[name].columns]


def test_refuses_to_mix_with_existing_folders(tmp_path):
    generate_sample(tmp_path, folders=3, rows=10)
    marker = tmp_path / "backup" / "20240502_Differential" / "keep.txt"
    marker.write_text("existing")
    with pytest.raises(FileExistsError, match="20240501_Differential"):
        generate_sample(tmp_path, folders=3, rows=10)
    with pytest.raises(FileExistsError):
        generate_sample(tmp_path, folders=2, rows=10, start=datetime.date(2024, 5, 3))
    assert marker.read_text() == "existing"
    assert not (tmp_path / "backup" / "20240504_Differential").exists()
    generate_sample(tmp_path, folders=3, rows=10, start=datetime.date(2024, 5, 4))  # new days are fine


def test_small_runs_and_object_subsets(tmp_path):
    result = generate_sample(tmp_path, folders=3, rows=5, objects=["Task", "Account"], files_per_object=3)
    assert [bool(v) for v in result.values()] == [True, False, True]
    assert sorted(result["20240501_Differential"]) == ["Account", "Task"]
    assert len(list((tmp_path / "backup" / "20240503_Differential" / "Task").glob("task_part*.csv"))) == 3
    only_accounts = generate_sample(tmp_path / "accounts", folders=8, rows=5, objects=["Account"])
    assert [name for name, counts in only_accounts.items() if not counts] == ["20240505_Differential"]
    for objects in (["Nope"], []):
        with pytest.raises(ValueError):
            generate_sample(tmp_path / "other", objects=objects)
