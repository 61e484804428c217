"""The as-of mart (dbt/models/marts/salesforce/fact_task_owner_as_of.sql): a task shows its owner as
the owner was on the task's date, from salesforce_history.user, next to the owner today; built
through Dagster by dbt on DuckDB and on PostgreSQL from two backup folders where a user changes."""

from __future__ import annotations

import csv
from pathlib import Path

import dagster as dg

from etl_assets.landing.zone import LocalLandingZone
from etl_assets.samples.salesforce import generate_sample
from etl_assets.totesys.source import DuckDBTotesysSource
from etl_assets_tests.helpers import folders_in, materialize_folders, resources
from etl_assets_tests.test_dbt import SALESFORCE_SOURCES, Pipeline, warehouse_on_duckdb, warehouse_on_postgres

CHANGED_AT = "2024-06-01T02:00:00.000Z"  # the user's second version: a new title and department
NEW_TITLE, NEW_DEPARTMENT = "Managing Partner", "Litigation"
# task id -> (ActivityDate, CreatedDate): before the change (by ActivityDate, then by CreatedDate),
# after it, before the user's first version (no version covers it), and on the change's day (00:00 UTC
# is before 02:00 UTC; in New York's zone the day would begin at 04:00 UTC, after the change)
TASKS = {
    "00T000000000901EAA": ("2024-05-20", "2024-05-15T10:00:00.000Z"),
    "00T000000000902EAA": ("", "2024-05-25T10:00:00.000Z"),
    "00T000000000903EAA": ("", "2024-06-05T10:00:00.000Z"),
    "00T000000000904EAA": ("2024-04-01", "2024-05-25T10:00:00.000Z"),
    "00T000000000905EAA": ("2024-06-01", "2024-06-05T10:00:00.000Z"),
}


def read_rows(directory: Path) -> tuple[list[str], list[dict]]:
    rows, header = [], None
    for path in sorted(directory.glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames
            rows += list(reader)
    return header, rows


def write_rows(path: Path, header: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def backups_where_a_user_changes(root: Path) -> dict:
    """The sample's first folder, then a folder of our own where one user's title and department change
    on 2024-06-01 and five tasks owned by that user are dated around the change."""
    generate_sample(root, folders=2, rows=10, seed=4)
    first = root / "backup" / "20240501_Differential"
    user_header, users = read_rows(first / "User")
    task_header, tasks = read_rows(first / "Task")
    user = next(u for u in users if u["Title"] not in ("", NEW_TITLE) and u["Department"] not in ("", NEW_DEPARTMENT))
    assert user["SystemModstamp"] < "2024-05-15", "the first version covers the tasks' dates before the change"
    changed = dict(user, Title=NEW_TITLE, Department=NEW_DEPARTMENT, LastModifiedDate=CHANGED_AT,
                   SystemModstamp=CHANGED_AT)
    later = root / "backup" / "20240610_Differential"
    write_rows(later / "User" / "user.csv", user_header, [changed])
    write_rows(later / "Task" / "task.csv", task_header, [
        dict(tasks[0], Id=task_id, OwnerId=user["Id"], ActivityDate=activity, CreatedDate=created,
             LastModifiedDate="2024-06-09T10:00:00.000Z", SystemModstamp="2024-06-09T10:00:00.000Z", IsDeleted="false")
        for task_id, (activity, created) in TASKS.items()])
    return user


def build_and_check(pipeline: Pipeline, root: Path) -> None:
    user = backups_where_a_user_changes(root)
    materialize_folders(folders_in(root), resources(LocalLandingZone(root=str(root)), pipeline.warehouse),
                        instance=pipeline.instance, objects=SALESFORCE_SOURCES)
    assert pipeline.scalar(f"SELECT COUNT(*) FROM salesforce_history.\"user\" WHERE id = '{user['Id']}'") == 2
    result = pipeline.build(selection=dg.AssetSelection.groups("salesforce_marts"))
    built = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert {"stg_salesforce__user_versions", "fact_task_owner_as_of", "fact_task"} <= built
    checks = {c.check_name for c in result.get_asset_check_evaluations() if c.asset_key.path[-1] == "fact_task_owner_as_of"}
    assert "unique_fact_task_owner_as_of_task_id" in checks

    ids = ", ".join(f"'{t}'" for t in TASKS)
    rows = pipeline.warehouse.query(
        "SELECT task_id, owner_version_found, owner_title_then, owner_department_then, owner_name_then, "
        "owner_title_now, owner_department_now, owner_name_now "
        f"FROM marts.fact_task_owner_as_of WHERE task_id IN ({ids}) ORDER BY task_id")
    then_ = (user["Title"], user["Department"], user["Name"])
    now = (NEW_TITLE, NEW_DEPARTMENT, user["Name"])
    assert [tuple(r) for r in rows] == [
        ("00T000000000901EAA", True, *then_, *now),   # ActivityDate 20 May: the title then, not today's
        ("00T000000000902EAA", True, *then_, *now),   # no ActivityDate: CreatedDate 25 May
        ("00T000000000903EAA", True, *now, *now),     # created after the change
        ("00T000000000904EAA", False, None, None, None, *now),  # 1 April: before any version a backup held
        ("00T000000000905EAA", True, *then_, *now),   # 1 June 00:00 UTC, two hours before the change
    ]
    assert pipeline.scalar("SELECT COUNT(*) FROM marts.fact_task_owner_as_of") == \
        pipeline.scalar("SELECT COUNT(*) FROM marts.fact_task")
    assert pipeline.scalar("SELECT COUNT(*) FROM marts.fact_task_owner_as_of WHERE owner_version_found") > len(TASKS)


def test_a_task_shows_its_owner_as_of_its_date_on_duckdb(tmp_path: Path, monkeypatch):
    pipeline = Pipeline(DuckDBTotesysSource(path=str(tmp_path / "totesys.duckdb")),
                        warehouse_on_duckdb(tmp_path / "warehouse.duckdb", monkeypatch), tmp_path / "landing")
    build_and_check(pipeline, tmp_path / "salesforce")


def test_a_task_shows_its_owner_as_of_its_date_on_postgres(postgres_database, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PGTZ", "America/New_York")  # a session zone that is not UTC: the date is still 00:00 UTC
    warehouse = warehouse_on_postgres(postgres_database, monkeypatch)
    pipeline = Pipeline(DuckDBTotesysSource(path=str(tmp_path / "totesys.duckdb")), warehouse, tmp_path / "landing")
    build_and_check(pipeline, tmp_path / "salesforce")


def test_the_versions_source_maps_to_the_asset_that_writes_it():
    """salesforce_history.<object> is written by the asset salesforce/<object> (in the same transaction
    as salesforce.<object>), so the versions' staging view follows that asset."""
    from etl_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey(["staging", "stg_salesforce__user_versions"])).parent_keys == \
        {dg.AssetKey(["salesforce", "user"])}
    assert {dg.AssetKey(["staging", "stg_salesforce__user_versions"]), dg.AssetKey(["staging", "stg_salesforce__tasks"]),
            dg.AssetKey(["marts", "dim_user"])} == graph.get(dg.AssetKey(["marts", "fact_task_owner_as_of"])).parent_keys
    assert not [k for k in graph.get_all_asset_keys() if k.path[0] == "salesforce_history"]
