"""Full backups mark the rows they lack as deleted in source, on DuckDB and on the real PostgreSQL.

The folders are written here, small and exact: D1 (differential), F2 (a full backup
that lacks one Id) and D3 (a differential that brings that Id back with a newer
version, or not). Every loading order must leave the same table, with exactly the
missing Id marked unless D3 brought it back. The Redshift plan is checked by
parsing and by running it on PostgreSQL (test_redshift.py's stand-in for COPY).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
from dagster_aws.s3 import S3Resource

from etl_assets.cli.warehouse import plan_for
from etl_assets.landing.zone import LocalLandingZone
from etl_assets.salesforce.partitions import (
    FULL_BACKUP_SUFFIX_ENV,
    full_backup_date,
    is_backup_folder,
)
from etl_assets.salesforce.sensors import salesforce_backup_sensor
from etl_assets.samples.salesforce import salesforce_id
from etl_assets.warehouse.batch import StagedBatch
from etl_assets.warehouse.redshift import RedshiftWarehouse
from etl_assets.warehouse.redshift_sessions import render
from etl_assets.warehouse.spec import DELETED_IN_SOURCE_AT
from etl_assets_tests.helpers import materialize_folders, resources, table_digest
from etl_assets_tests.test_redshift import (
    SPEC,
    assert_redshift_sql,
    batch_of,
    run_plan_on_postgres,
)

UTC = dt.timezone.utc
HEADER = "Id,IsDeleted,SystemModstamp,Name"
A, B, C, D = (salesforce_id("001", n) for n in range(1, 5))
CONTACT = salesforce_id("003", 1)
D1, F2, D3 = "20240601_Differential", "20240602_Full", "20240603_Differential"
F2_AT = dt.datetime(2024, 6, 2, tzinfo=UTC)  # a full folder's date, 00:00 UTC: what a mark records


def write_folder(root: Path, folder: str, rows: list[tuple[str, str]], api_name: str = "Account",
                 extra: str = "") -> None:
    """One CSV of (Id, SystemModstamp) rows; `extra` is appended verbatim (a malformed row)."""
    directory = root / "backup" / folder / api_name
    directory.mkdir(parents=True, exist_ok=True)
    lines = [HEADER] + [f"{id_},false,{stamp},{api_name} {id_[-6:]} at {stamp}" for id_, stamp in rows]
    (directory / f"{api_name}.csv").write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")


def write_scenario(root: Path, c_comes_back: bool) -> None:
    write_folder(root, D1, [(A, "2024-06-01T08:00:00.000Z"), (B, "2024-06-01T08:00:00.000Z"),
                            (C, "2024-06-01T08:00:00.000Z")])
    # C is missing: deleted before the export; D was created the morning of it (the cutoff).
    write_folder(root, F2, [(A, "2024-06-01T08:00:00.000Z"), (B, "2024-06-01T08:00:00.000Z"),
                            (D, "2024-06-02T09:00:00.000Z")])
    later = [(B, "2024-06-03T10:00:00.000Z")] + ([(C, "2024-06-03T11:00:00.000Z")] if c_comes_back else [])
    write_folder(root, D3, later)


def load(root: Path, warehouse, folders, objects=("Account",)):
    return materialize_folders(folders, resources(LocalLandingZone(root=str(root)), warehouse),
                               instance=dg.DagsterInstance.ephemeral(), objects=list(objects))


def marks(warehouse, table: str = "account") -> dict[str, dt.datetime | None]:
    rows = warehouse.query(f'SELECT id, {DELETED_IN_SOURCE_AT} FROM salesforce."{table}"')
    return {key: value.astimezone(UTC) if value is not None else None for key, value in rows}


def deleted_in_source(result: dg.ExecuteInProcessResult) -> int:
    """The rows marked after the load, as its materialization reports them."""
    [event] = result.get_asset_materialization_events()
    return event.materialization.metadata["rows_deleted_in_source"].value


@pytest.mark.parametrize("c_comes_back", [False, True], ids=["C-stays-deleted", "C-comes-back"])
def test_every_loading_order_gives_the_same_table_with_exactly_the_missing_id_marked(
        engine, tmp_path, c_comes_back):
    write_scenario(tmp_path, c_comes_back)
    digests = {}
    for order in itertools.permutations([D1, F2, D3]):
        warehouse = engine()
        load(tmp_path, warehouse, order)
        assert marks(warehouse) == {A: None, B: None, C: None if c_comes_back else F2_AT, D: None}, order
        digests[order] = table_digest(warehouse, "account")
    assert len(set(map(tuple, digests.values()))) == 1, "the final table depends on the loading order"


def test_a_later_differential_with_a_newer_version_clears_the_mark(engine, tmp_path):
    write_scenario(tmp_path, c_comes_back=False)
    write_folder(tmp_path, "20240604_Differential", [(C, "2024-06-04T12:00:00.000Z")])
    warehouse = engine()
    _, full = load(tmp_path, warehouse, [D1, F2])
    assert marks(warehouse)[C] == F2_AT
    assert deleted_in_source(full) == 1
    [later] = load(tmp_path, warehouse, ["20240604_Differential"])
    assert marks(warehouse) == dict.fromkeys([A, B, C, D])
    assert deleted_in_source(later) == 0


def test_differentials_alone_never_mark(engine, tmp_path):
    write_scenario(tmp_path, c_comes_back=False)
    warehouse = engine()
    load(tmp_path, warehouse, [D3, D1])
    assert marks(warehouse) == dict.fromkeys([A, B, C])
    assert warehouse.query('SELECT COUNT(*) FROM salesforce.etl_full_backups')[0][0] == 0


def test_a_header_only_full_file_marks_every_row_older_than_the_earliest_time_zone_start(engine, tmp_path):
    """The documented rule: a full folder with a header-only file for an object says the object had
    no rows; its cutoff is the folder's date at 00:00 in UTC+14 (the day before, 10:00 UTC). An
    object the full folder holds no file for is not in the backup: nothing of it is marked."""
    write_folder(tmp_path, D1, [(A, "2024-06-01T08:00:00.000Z"), (B, "2024-06-01T09:59:59.000Z"),
                                (C, "2024-06-01T10:00:01.000Z")])  # C: after the cutoff, maybe created later
    write_folder(tmp_path, D1, [(CONTACT, "2024-06-01T08:00:00.000Z")], api_name="Contact")
    write_folder(tmp_path, F2, [])  # Account: the header only; no Contact folder at all
    warehouse = engine()
    load(tmp_path, warehouse, [D1, F2], objects=("Account", "Contact"))
    assert marks(warehouse) == {A: F2_AT, B: F2_AT, C: None}
    assert marks(warehouse, "contact") == {CONTACT: None}
    cutoff, backup_at = warehouse.query("SELECT cutoff, backup_at FROM salesforce.etl_full_backups")[0]
    assert (cutoff.astimezone(UTC), backup_at.astimezone(UTC)) == (F2_AT - dt.timedelta(hours=14), F2_AT)


def test_a_full_backup_with_rejected_rows_is_no_evidence_of_deletions(engine, tmp_path):
    """A rejected row's Id is not among the loaded rows; trusting the backup would mark it deleted."""
    write_scenario(tmp_path, c_comes_back=False)
    write_folder(tmp_path, F2, [(A, "2024-06-01T08:00:00.000Z")],
                 extra=f"{B},maybe,2024-06-01T08:00:00.000Z,an unreadable IsDeleted\n")
    warehouse = engine()
    load(tmp_path, warehouse, [D1, F2])
    assert marks(warehouse) == dict.fromkeys([A, B, C])
    assert warehouse.query("SELECT COUNT(*) FROM salesforce.account_rejects")[0][0] == 1


def test_an_existing_table_gains_the_column_and_keeps_its_rows(engine, tmp_path):
    spec = dataclasses.replace(SPEC, track_deletions=True)
    warehouse = engine()
    warehouse.load(batch_of([("A", 1, "a"), ("B", 1, "b")], partition="20240501_Differential",
                            spec=dataclasses.replace(SPEC, track_deletions=False)))
    full = batch_of([("A", 1, "a")], partition="20240502_Full", spec=spec)
    full.full_snapshot_date = dt.date(2024, 5, 2)
    result = warehouse.load(full)
    assert DELETED_IN_SOURCE_AT in result.added_columns
    rows = dict(warehouse.query(f"SELECT id, {DELETED_IN_SOURCE_AT} FROM salesforce.note__c"))
    assert rows["A"] is None and rows["B"].astimezone(UTC) == dt.datetime(2024, 5, 2, tzinfo=UTC)


def redshift_warehouse() -> RedshiftWarehouse:
    return RedshiftWarehouse(s3=S3Resource(), staging_bucket="b", iam_role_arn="arn:aws:iam::1:role/r")


def test_the_redshift_plans_hold_the_deletion_steps_and_parse_as_redshift():
    _, obj, differential = plan_for("redshift", "Task")
    staged = Path("staged")
    full = StagedBatch(obj.table_spec(), "20240602_Full", staged, files=[staged / "part-00000.parquet"], rows=10,
                       full_snapshot_date=dt.date(2024, 6, 2))
    existing = {c.name: None for c in obj.table_spec().columns}  # a table from before: no mark column
    migrated = redshift_warehouse().plan(full, existing)
    full_sql = [render(s.sql, s.params) for s in migrated.statements()]
    assert f'ALTER TABLE "salesforce"."task" ADD COLUMN "{DELETED_IN_SOURCE_AT}" TIMESTAMPTZ' in full_sql
    assert any(s.startswith('INSERT INTO "salesforce"."etl_full_backups"') and "'20240602_Full'" in s
               and "'2024-06-01 10:00:00+00'" in s for s in full_sql)
    assert any(s.startswith('INSERT INTO "salesforce"."task_full_backup_ids"') for s in full_sql)
    differential_sql = [render(s.sql, s.params) for s in differential.statements()]
    assert not any("etl_full_backups\" (" in s and s.startswith("INSERT") for s in differential_sql)
    for sql in (full_sql, differential_sql):
        assert any(s.startswith("CREATE TEMPORARY TABLE etl_deleted AS") for s in sql)
        assert any(s.startswith(f'UPDATE "salesforce"."task" AS t SET "{DELETED_IN_SOURCE_AT}" = d.') for s in sql)
        for statement in sql:
            assert_redshift_sql(statement)


def test_the_redshift_plan_marks_and_clears_on_postgres(postgres_database):
    spec = dataclasses.replace(SPEC, track_deletions=True)
    redshift = redshift_warehouse()
    run_plan_on_postgres(redshift, postgres_database, batch_of([("A", 1, "a"), ("B", 1, "b")], "20240501_Differential",
                                                               spec=spec))
    full = batch_of([("A", 1, "a")], "20240502_Full", spec=spec)
    full.full_snapshot_date = dt.date(2024, 5, 2)
    run_plan_on_postgres(redshift, postgres_database, full)

    def marked() -> dict:
        connection = psycopg2.connect(**{k: postgres_database[k] for k in ("host", "port", "user")},
                                      dbname=postgres_database["database"])
        with connection, connection.cursor() as cursor:
            cursor.execute(f"SELECT id, {DELETED_IN_SOURCE_AT} IS NOT NULL FROM salesforce.note__c ORDER BY id")
            rows = dict(cursor.fetchall())
        connection.close()
        return rows

    assert marked() == {"A": False, "B": True}
    run_plan_on_postgres(redshift, postgres_database, batch_of([("B", 3, "b again")], "20240503_Differential",
                                                               spec=spec))
    assert marked() == {"A": False, "B": False}


def test_full_folder_names_and_the_suffix_setting(monkeypatch):
    assert full_backup_date("20240602_Full") == dt.date(2024, 6, 2)
    assert full_backup_date("20240602_Differential") is None and full_backup_date("20241399_Full") is None
    assert is_backup_folder("20240602_Full") and is_backup_folder("20240602_Differential")
    monkeypatch.setenv(FULL_BACKUP_SUFFIX_ENV, "_Complete")
    assert full_backup_date("20240602_Complete") == dt.date(2024, 6, 2)
    assert not is_backup_folder("20240602_Full")
    monkeypatch.setenv(FULL_BACKUP_SUFFIX_ENV, "_Differential")
    with pytest.raises(ValueError, match=FULL_BACKUP_SUFFIX_ENV):
        full_backup_date("20240602_Differential")


def test_the_sensor_requests_a_full_folder(tmp_path):
    write_scenario(tmp_path, c_comes_back=False)
    instance = dg.DagsterInstance.ephemeral()
    with dg.build_sensor_context(instance=instance, resources={"landing_zone": LocalLandingZone(root=str(tmp_path))}
                                 ) as context:
        result = salesforce_backup_sensor(context)
    assert [r.partition_key for r in result.run_requests] == [D1, F2, D3]
    [full] = [r for r in result.run_requests if r.partition_key == F2]
    assert full.asset_selection == [dg.AssetKey(["salesforce", "account"])]
    assert result.dynamic_partitions_requests[0].partition_keys == [D1, F2, D3]
