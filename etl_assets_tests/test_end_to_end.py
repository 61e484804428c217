"""Backups materialized through Dagster into DuckDB and the real PostgreSQL server."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from dagster_aws.s3 import S3Resource

from etl_assets.landing.zone import LocalLandingZone, S3LandingZone
from etl_assets.salesforce.assets import (
    MAX_FOLDERS_PER_RUN,
    SOURCE_FINGERPRINT,
    salesforce_object_assets,
)
from etl_assets.salesforce.loaded_files import FORCE_RELOAD_TAG
from etl_assets.salesforce.partitions import differential_folders
from etl_assets.warehouse.audit import find_loads
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets_tests.conftest import S3_CREDENTIALS, upload_tree
from etl_assets_tests.helpers import (
    CATALOG,
    assert_matches_truth,
    folders_in,
    materialize_folders,
    resources,
    table_digest,
)


@pytest.fixture(scope="module")
def sample_load(sample_root, tmp_path_factory) -> SimpleNamespace:
    """The session's sample loaded once, folder by folder in order, from the local landing zone into DuckDB: the
    load test_every_folder_loads_the_newest_version_of_every_row[duckdb] checks, and the reference the others
    compare their loads with (read it, never write to it). Its landing zone, warehouse, tables' digests, each
    materialization's metadata by (object, folder) and its audit rows. Its landing zone is another copy of the
    sample, file times kept (copytree), so the source fingerprints are those of a test's own copy."""
    root = tmp_path_factory.mktemp("sample_load")
    landing = root / "landing"
    shutil.copytree(sample_root, landing)
    warehouse = DuckDBWarehouse(path=str(root / "in_order.duckdb"))
    results = materialize_folders(folders_in(landing), resources(LocalLandingZone(root=str(landing)), warehouse))
    assert all(r.success for r in results)
    return SimpleNamespace(
        landing=landing,
        warehouse=warehouse,
        digests={api.lower(): table_digest(warehouse, api.lower()) for api in CATALOG},
        metadata={(e.asset_key.path[-1], e.partition): e.step_materialization_data.materialization.metadata
                  for r in results for e in r.get_asset_materialization_events()},
        loads=sorted((a["source_key"], a["target_table"]) for a in find_loads(warehouse, limit=100_000)),
    )


def test_every_folder_loads_the_newest_version_of_every_row(landing_root, warehouse, sample_load):
    if isinstance(warehouse, DuckDBWarehouse):
        warehouse = sample_load.warehouse  # this very load (every folder in order, into DuckDB), made once
    else:
        folders = folders_in(landing_root)
        results = materialize_folders(folders, resources(LocalLandingZone(root=str(landing_root)), warehouse))
        assert all(r.success for r in results)
    for api_name in CATALOG:
        assert assert_matches_truth(warehouse, landing_root, api_name) > 0
        keys = warehouse.query(f'SELECT COUNT(*), COUNT(DISTINCT "id") FROM "salesforce"."{api_name.lower()}"')[0]
        assert keys[0] == keys[1], f"duplicate keys in {api_name}"
    deleted = warehouse.query('SELECT COUNT(*) FROM "salesforce"."task" WHERE "isdeleted" = 1')[0][0]
    assert deleted > 0, "soft-deleted rows are kept with their flag"


def test_out_of_order_and_repeated_runs_give_the_same_tables(landing_root, warehouse, sample_load):
    folders = folders_in(landing_root)
    zone = LocalLandingZone(root=str(landing_root))
    materialize_folders(list(reversed(folders)), resources(zone, warehouse))
    for api_name in CATALOG:  # the same tables as the folders loaded in order
        table = api_name.lower()
        assert table_digest(warehouse, table) == sample_load.digests[table], f"{table} depends on load order"
    before = {api.lower(): table_digest(warehouse, api.lower()) for api in CATALOG}
    instance = dg.DagsterInstance.ephemeral()
    results = materialize_folders([folders[2], folders[0]], resources(zone, warehouse), instance=instance)
    # A re-run finds the folder's files in the loaded-files ledger: nothing is read. Forced, the merge
    # itself reads them and finds nothing newer.
    assert task_metadata(results[1])["skipped_already_loaded"].value is True
    forced = dg.materialize(salesforce_object_assets, partition_key=folders[0], resources=resources(zone, warehouse),
                            instance=instance, tags={FORCE_RELOAD_TAG: "true"})
    task_load = task_metadata(forced)
    assert task_load["rows_read"].value > 0
    assert task_load["inserted"].value == 0 and task_load["updated"].value == 0
    after = {api.lower(): table_digest(warehouse, api.lower()) for api in CATALOG}
    assert after == before, "re-materializing a partition changed a table"


def task_metadata(result) -> dict:
    return next(e.step_materialization_data.materialization.metadata
                for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "task")


def test_rejected_rows_are_recorded_and_good_rows_load(landing_root, tmp_path):
    folder = folders_in(landing_root)[0]
    task_dir = landing_root / "backup" / folder / "Task"
    bad = task_dir / "task_bad.csv"
    header = (next(task_dir.glob("*.csv"))).read_text().splitlines()[0]
    columns = header.split(",")
    good = dict.fromkeys(columns, "")
    good.update(Id="00T0000000BADROW1", IsDeleted="false", SystemModstamp="2024-05-01T10:00:00.000Z")
    bad_rows = [
        {**good, "Id": "00T000000000BAD1AA", "IsDeleted": "perhaps"},
        {**good, "Id": "00T000000000BAD2AA", "SystemModstamp": "not a time"},
        {**good, "Id": "00T000000000GOODAA"},
    ]
    bad.write_text(header + "\n" + "".join(",".join(r[c] for c in columns) + "\n" for r in bad_rows))
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    [result] = materialize_folders([folder], resources(LocalLandingZone(root=str(landing_root)), warehouse),
                                   objects=["Task"])
    assert result.success
    rejects = warehouse.query(
        'SELECT "_source_file", "_source_line", "column_name", "reason" FROM "salesforce"."task_rejects" ORDER BY 2'
    )
    key = f"backup/{folder}/Task/task_bad.csv"
    assert rejects[0][:3] == (key, 2, "isdeleted") and "perhaps" in rejects[0][3]
    assert rejects[1][:3] == (key, 3, "systemmodstamp") and "not a time" in rejects[1][3]
    assert warehouse.query("""SELECT COUNT(*) FROM "salesforce"."task" WHERE "id" = '00T000000000GOODAA'""")[0][0] == 1
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["no_rejected_rows"].passed is False
    assert checks["no_rejected_rows"].metadata["rows_rejected"].value == 2
    output = result.asset_materializations_for_node("salesforce__task")[0].metadata
    assert output["rows_rejected"].value == 2
    [audit] = find_loads(warehouse, table="salesforce.task")
    assert (audit["status"], audit["rows_rejected"], audit["source_key"]) == \
        ("FINISHED", 2, f"backup/{folder}/Task/")
    assert audit["rows_read"] == audit["rows_loaded"] + 2 and audit["run_id"] == result.run_id


def test_unparseable_file_fails_the_object_and_loads_none_of_its_folder(landing_root, tmp_path):
    folders = [f for f in folders_in(landing_root) if (landing_root / "backup" / f / "Task").is_dir()]
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    zone = LocalLandingZone(root=str(landing_root))
    materialize_folders(folders[:1], resources(zone, warehouse), objects=["Task", "User"])
    before = table_digest(warehouse, "task")
    broken = landing_root / "backup" / folders[1] / "Task" / "task_zz_broken.csv"
    broken.write_text('Id,SystemModstamp,IsDeleted\n00T000000000001AAA,2024-05-01T00:00:00.000Z,false\nx,"open\n')
    [result] = materialize_folders(folders[1:2], resources(zone, warehouse), objects=["Task", "User"],
                                   raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert failure.step_key == "salesforce__task"
    assert f"backup/{folders[1]}/Task/task_zz_broken.csv, line 3" in failure.step_failure_data.error.message
    where = failure.step_failure_data.user_failure_data.metadata
    assert (where["file"].value, where["line"].value) == (f"backup/{folders[1]}/Task/task_zz_broken.csv", 3)
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert retries == [], "a malformed file is not retried"
    assert table_digest(warehouse, "task") == before, "a failed object left rows behind"
    failed = [a for a in find_loads(warehouse, table="salesforce.task") if a["status"] == "FAILED"]
    assert len(failed) == 1 and "task_zz_broken.csv, line 3" in failed[0]["error"]


def test_schema_drift_is_added_as_text_and_reported(landing_root, tmp_path):
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    folders = folders_in(landing_root)
    results = materialize_folders(folders, resources(LocalLandingZone(root=str(landing_root)), warehouse),
                                  objects=["Task"])
    drifted = [
        (folder, e) for folder, r in zip(folders, results) for e in r.get_asset_check_evaluations()
        if e.check_name == "no_schema_drift" and not e.passed
    ]
    assert [folder for folder, _ in drifted] == [folders[-1]]
    assert drifted[0][1].metadata["columns_not_in_catalog"].value == ["legacy_reference__c"]
    values = warehouse.query('SELECT COUNT(*) FROM "salesforce"."task" WHERE "legacy_reference__c" LIKE \'LEG-%\'')
    assert values[0][0] > 0


def test_s3_landing_zone_gives_the_same_tables_as_local(landing_root, s3_endpoint, s3_bucket, tmp_path, sample_load):
    client, bucket = s3_bucket
    upload_tree(client, bucket, landing_root, prefix="exports/")
    zone = S3LandingZone(
        s3=S3Resource(endpoint_url=s3_endpoint, **S3_CREDENTIALS), bucket=bucket, prefix="exports"
    )
    from_s3 = DuckDBWarehouse(path=str(tmp_path / "s3.duckdb"))
    folders = folders_in(landing_root)
    assert all(r.success for r in materialize_folders(folders, resources(zone, from_s3)))
    for api_name in CATALOG:  # sample_load: the same folders from the local landing zone
        assert table_digest(from_s3, api_name.lower()) == sample_load.digests[api_name.lower()]
    files = from_s3.query('SELECT DISTINCT "_source_file" FROM "salesforce"."task"')
    assert all(f.startswith("backup/") for (f,) in files)


def test_sensor_skips_what_dagster_already_materialized_but_not_late_files(landing_root, tmp_path):
    from etl_assets.salesforce.sensors import salesforce_backup_sensor

    zone = LocalLandingZone(root=str(landing_root))
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    instance = dg.DagsterInstance.ephemeral()
    folders = [f for f in folders_in(landing_root) if any((landing_root / "backup" / f).iterdir())]
    materialize_folders(folders, resources(zone, warehouse), instance=instance)

    context = dg.build_sensor_context(instance=instance, resources={"landing_zone": zone})
    result = salesforce_backup_sensor(context)
    assert result.run_requests == [], "folders materialized by hand were requested again"

    newest = folders[-1]
    late = landing_root / "backup" / newest / "User" / "user_late.csv"
    late.parent.mkdir(exist_ok=True)
    late.write_text("Id,IsDeleted,SystemModstamp,Username\n"
                    "005000000000LATEAA,false,2024-06-01T00:00:00.000Z,late@example.com\n")
    context = dg.build_sensor_context(instance=instance, resources={"landing_zone": zone})
    result = salesforce_backup_sensor(context)
    assert [(r.partition_key, r.asset_selection) for r in result.run_requests] == [
        (newest, [dg.AssetKey(["salesforce", "user"])])
    ]


def _materialize_range(folders, resource_defs, objects=None, instance=None):
    """One run over `folders` (in the order they are added as partitions), as a backfill under the
    assets' BackfillPolicy launches it: each object's step loads every folder of the range."""
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(differential_folders.name, list(folders))
    wanted = {o.lower() for o in objects} if objects else None
    assets = [a for a in salesforce_object_assets if wanted is None or a.key.path[-1] in wanted]
    return dg.materialize(assets, resources=resource_defs, instance=instance, raise_on_error=False,
                          tags={ASSET_PARTITION_RANGE_START_TAG: folders[0], ASSET_PARTITION_RANGE_END_TAG: folders[-1]})


def test_backfills_run_several_folders_per_run():
    for asset in salesforce_object_assets:
        assert asset.backfill_policy == dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_FOLDERS_PER_RUN)


def in_zone(source_files, landing_root) -> list[str]:
    """A materialization's `source_files` (paths in a local landing zone) as keys of the zone at `landing_root`."""
    return [Path(path).relative_to(landing_root).as_posix() for path in source_files.data]


def test_a_multi_folder_run_loads_each_folder_as_its_own_run_would(landing_root, tmp_path, sample_load):
    folders = folders_in(landing_root)
    zone = LocalLandingZone(root=str(landing_root))
    expected = sample_load.metadata  # each folder in a run of its own
    warehouse = DuckDBWarehouse(path=str(tmp_path / "range.duckdb"))
    # Newest folder first: the newest version of each row still wins.
    result = _materialize_range(list(reversed(folders)), resources(zone, warehouse))
    assert result.success
    assert {s.step_key for s in result.get_step_success_events()} == {
        f"salesforce__{a.key.path[-1]}" for a in salesforce_object_assets}
    found = {(e.asset_key.path[-1], e.partition): e.step_materialization_data.materialization.metadata
             for e in result.get_asset_materialization_events()}
    assert found.keys() == expected.keys(), "one materialization per object and folder"
    for key, metadata in found.items():
        assert metadata[SOURCE_FINGERPRINT] == expected[key][SOURCE_FINGERPRINT], key
        assert metadata["rows_read"] == expected[key]["rows_read"], key
        assert in_zone(metadata["source_files"], landing_root) == \
            in_zone(expected[key]["source_files"], sample_load.landing), key
    for api_name in CATALOG:
        table = api_name.lower()
        assert table_digest(warehouse, table) == sample_load.digests[table], f"{table} differs"
    loads = find_loads(warehouse, limit=100_000)
    assert {a["status"] for a in loads} == {"FINISHED"}
    assert sorted((a["source_key"], a["target_table"]) for a in loads) == sample_load.loads, "an audit row per folder"
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 3 * len(salesforce_object_assets), "one result per check per step"


def test_a_bad_file_in_a_multi_folder_run_fails_that_object_only(landing_root, tmp_path):
    folders = [f for f in folders_in(landing_root) if (landing_root / "backup" / f / "Task").is_dir()][:3]
    broken = landing_root / "backup" / folders[1] / "Task" / "task_zz_broken.csv"
    broken.write_text('Id,SystemModstamp,IsDeleted\n00T000000000001AAA,2024-05-01T00:00:00.000Z,false\nx,"open\n')
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    result = _materialize_range(folders, resources(LocalLandingZone(root=str(landing_root)), warehouse),
                                objects=["Task", "User"])
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_key == "salesforce__task"
    assert f"backup/{folders[1]}/Task/task_zz_broken.csv, line 3" in failure.step_failure_data.error.message
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    materialized = {(e.asset_key.path[-1], e.partition) for e in result.get_asset_materialization_events()}
    assert materialized == {("user", f) for f in folders}, "no folder of the failed step is materialized"
    failed = [a for a in find_loads(warehouse, table="salesforce.task") if a["status"] == "FAILED"]
    assert len(failed) == 1 and failed[0]["source_key"] == f"backup/{folders[1]}/Task/"
