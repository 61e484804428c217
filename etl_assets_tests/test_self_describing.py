"""The asset graph explains itself: every asset, check, sensor, schedule and job says what it is.

Audits the Definitions the UI loads (etl_assets.definitions.defs): each asset has a description,
a group, kinds, owners and a code version, and a `domain` tag naming one of the four domains; each
group belongs to exactly one domain; every asset check has a description; every sensor, schedule
and job a user sees has a description. Then one real load shows that materializations carry a
row count, a table schema and a preview of the rows, and that a failed check says why.
"""

from __future__ import annotations

import shutil

import pyarrow as pa

from etl_assets.landing.zone import LocalLandingZone
from etl_assets.warehouse.batch import StagedBatchWriter
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets.warehouse.io_manager import batch_preview
from etl_assets.warehouse.spec import Column, ColumnType, TableSpec
from etl_assets_tests.helpers import folders_in, materialize_folders, resources

DOMAINS = {"salesforce", "files", "totesys", "reference"}  # reference: dbt seeds shared by the marts


def _defs():
    from etl_assets.definitions import defs

    return defs


def test_every_asset_has_description_group_kinds_owners_code_version_and_domain():
    graph = _defs().resolve_asset_graph()
    missing: dict[str, list[str]] = {}
    domains_of_group: dict[str, set[str]] = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        lacks = [name for name, value in (
            ("description", node.description), ("group", node.group_name), ("kinds", node.kinds),
            ("owners", node.owners), ("code_version", node.code_version), ("domain tag", node.tags.get("domain")),
        ) if not value]
        if lacks:
            missing[key.to_user_string()] = lacks
        domains_of_group.setdefault(node.group_name, set()).add(node.tags.get("domain"))
        assert node.tags.get("domain") in DOMAINS | {None}, (key, node.tags)
    assert not missing, f"assets that do not explain themselves: {missing}"
    mixed = {g: d for g, d in domains_of_group.items() if len(d - {"reference"}) > 1}
    assert not mixed, f"groups mixing domains: {mixed}"
    assert {"salesforce", "files", "totesys", "totesys_star", "salesforce_marts"} <= set(domains_of_group)


def test_every_asset_check_has_a_description():
    graph = _defs().resolve_asset_graph()
    undescribed = [
        key.to_user_string()
        for key in graph.asset_check_keys
        if not graph.get_check_spec(key).description
    ]
    assert not undescribed, f"asset checks without a description: {undescribed}"


def test_every_sensor_schedule_and_job_has_a_description():
    defs = _defs()
    repository = defs.get_repository_def()
    undescribed = [f"sensor {s.name}" for s in repository.sensor_defs if not s.description]
    undescribed += [f"schedule {s.name}" for s in repository.schedule_defs if not s.description]
    # Jobs a user sees; Dagster's implicit `__ASSET_JOB` and the anonymous jobs it builds for
    # sensors that target assets are hidden in the UI and cannot carry a description.
    undescribed += [f"job {j.name}" for j in repository.get_all_jobs()
                    if not j.name.startswith("__") and not j.description]
    assert not undescribed, f"without a description: {undescribed}"
    assert {j.name for j in repository.get_all_jobs() if not j.name.startswith("__")} >= {
        "salesforce_backup_job", "totesys_extract_job"}


def test_a_preview_is_a_markdown_table_of_the_first_staged_rows(tmp_path):
    spec = TableSpec("sales", "orders", None, None, (Column("id", ColumnType.STRING, nullable=False),
                                                     Column("note", ColumnType.STRING)))
    writer = StagedBatchWriter(spec, partition="p1", directory=tmp_path, mode="append")
    rows = 12
    writer.write(pa.table({
        "id": [f"r{i}" for i in range(rows)],
        "note": ["a | pipe\nand a newline"] + ["x" * 100] + [None] * (rows - 2),
        "_source_partition": ["p1"] * rows, "_source_file": ["f.csv"] * rows, "_source_line": list(range(rows)),
    }))
    batch = writer.close()
    text = batch_preview(batch).value
    lines = text.splitlines()
    assert lines[0].startswith("| id | note |") and "_source_file" in lines[0]
    assert len(lines) == 2 + 5  # header, rule, five rows: a handful, not the batch
    assert "a \\| pipe and a newline" in lines[2]  # a cell cannot break the table
    assert "x" * 39 + "…" in lines[3] and "x" * 41 not in lines[3]  # long values are cut
    batch.discard()
    empty = StagedBatchWriter(spec, partition="p2", directory=tmp_path, mode="append").close()
    assert batch_preview(empty).value == "_no rows staged_"
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_a_load_carries_row_count_schema_and_preview_and_a_failed_check_says_why(landing_root, tmp_path):
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    folders = folders_in(landing_root)
    results = materialize_folders(folders, resources(LocalLandingZone(root=str(landing_root)), warehouse),
                                  objects=["Task"])
    materializations = [m for r in results for m in r.asset_materializations_for_node("salesforce__task")]
    assert materializations
    for materialization in materializations:
        metadata = materialization.metadata
        assert metadata["dagster/row_count"].value > 0
        assert "id" in [c.name for c in metadata["dagster/column_schema"].schema.columns]
        preview = metadata["preview"].value.splitlines()
        if metadata["rows_staged"].value == 0:  # the sample's empty folder
            assert preview == ["_no rows staged_"]
            continue
        assert preview[0].startswith("| id |") and len(preview) == 2 + min(5, metadata["rows_staged"].value)
        assert f"| {materialization.partition} |" in preview[2]  # the rows of this folder
    failed = [e for r in results for e in r.get_asset_check_evaluations() if not e.passed]
    assert [e.check_name for e in failed] == ["no_schema_drift"]
    assert failed[0].description.startswith(f"1 column(s) of Task in {folders[-1]} not in the catalog: "
                                             "legacy_reference__c")
    passed = [e for r in results for e in r.get_asset_check_evaluations() if e.passed]
    assert all(e.description for e in passed)
