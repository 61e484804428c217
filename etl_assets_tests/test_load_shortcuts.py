"""The merge's shortcuts (issue 18) end in the same table as its general path, on DuckDB and PostgreSQL.

A batch whose keys are distinct (`StagedBatch.keys_repeat` False) skips the newest-version pass; a
first load of one into the PostgreSQL table it creates COPYs straight into it; a load that is not a
full snapshot skips the deletion-mark recompute when the table has no snapshot and no marked row.
Each test compares the table with the general path's (a batch whose `keys_repeat` is unknown) or
with the rows it must hold, and names the statements that ran.
"""

from __future__ import annotations

import dataclasses

from etl_assets.warehouse.dialect import STAGING
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets.warehouse.plan import DELETED
from etl_assets.warehouse.postgres import PostgresWarehouse
from etl_assets_tests.helpers import table_digest
from etl_assets_tests.test_redshift import SPEC, batch_of

TRACKED = dataclasses.replace(SPEC, track_deletions=True)



def general(batch):
    """The same batch as the general path sees it: repeats of keys unknown."""
    return dataclasses.replace(batch, keys_repeat=None)


def other_schema(warehouse, schema: str):
    if isinstance(warehouse, DuckDBWarehouse):
        return DuckDBWarehouse(path=warehouse.path.replace(".duckdb", f"_{schema}.duckdb")), SPEC
    return warehouse, dataclasses.replace(SPEC, schema=schema)


def test_staging_counts_repeated_keys():
    assert batch_of([("a", 1, "x"), ("b", 1, "y")]).keys_repeat is False
    assert batch_of([("a", 1, "x"), ("a", 2, "y")]).keys_repeat is True


def test_first_load_of_distinct_keys_skips_the_newest_version_pass_and_ends_as_the_general_path(
        warehouse, statements):
    rows = [("a", 1, "x"), ("b", 2, "y"), ("c", 3, None)]
    result = warehouse.load(batch_of(rows))
    ran = "\n".join(statements)
    assert "ROW_NUMBER" not in ran and "GROUP BY" not in ran
    assert (result.keys_staged, result.inserted, result.updated) == (3, 3, 0)
    if isinstance(warehouse, PostgresWarehouse):  # straight into the new table: no staging table at all
        assert STAGING not in ran.replace(f"DROP TABLE IF EXISTS {STAGING}", "")
        assert 'COPY "salesforce"."note__c"' in ran
    reference, spec = other_schema(warehouse, "general")
    reference.load(dataclasses.replace(general(batch_of(rows)), spec=spec))
    assert table_digest(warehouse, "note__c") == table_digest(reference, "note__c", schema=spec.schema)
    assert warehouse.query('SELECT COUNT(*) FROM salesforce.note__c WHERE "_loaded_at" IS NULL')[0][0] == 0


def test_repeated_keys_in_a_first_load_keep_the_newest_version(warehouse, statements):
    batch = batch_of([("a", 1, "old"), ("b", 1, "only"), ("a", 3, "newest"), ("a", 2, "middle")])
    result = warehouse.load(batch)
    assert (result.keys_staged, result.inserted, result.updated) == (2, 2, 0)
    assert sorted(warehouse.select("salesforce", "note__c", ["id", "body"])) == [("a", "newest"), ("b", "only")]
    assert any("ROW_NUMBER" in sql or "HAVING COUNT(*) > 1" in sql for sql in statements)


def test_a_load_of_distinct_keys_into_a_filled_table_still_merges(warehouse):
    reference, spec = other_schema(warehouse, "general")
    first = [("a", 5, "a5"), ("b", 5, "b5"), ("c", 5, "c5")]
    second = [("a", 7, "a7"), ("b", 3, "b3 older"), ("d", 1, "d1")]
    warehouse.load(batch_of(first, partition="P1"))
    result = warehouse.load(batch_of(second, partition="P2"))
    assert (result.keys_staged, result.inserted, result.updated) == (3, 1, 1)
    assert sorted(warehouse.select("salesforce", "note__c", ["id", "body"])) == [
        ("a", "a7"), ("b", "b5"), ("c", "c5"), ("d", "d1")]
    for rows, partition in ((first, "P1"), (second, "P2")):
        reference.load(dataclasses.replace(general(batch_of(rows, partition=partition)), spec=spec))
    assert table_digest(warehouse, "note__c") == table_digest(reference, "note__c", schema=spec.schema)
    again = warehouse.load(batch_of(second, partition="P2"))  # idempotent: nothing is newer the second time
    assert (again.inserted, again.updated) == (0, 0)


def test_postgres_direct_copy_falls_back_when_the_new_table_is_no_longer_empty(postgres_database):
    """The plan saw no table, but another load filled it before this transaction: the COPY into the
    table is skipped and the staging path merges, so the older row does not win."""
    warehouse = PostgresWarehouse(host=postgres_database["host"], port=postgres_database["port"],
                                  user=postgres_database["user"], database=postgres_database["database"])
    batch = batch_of([("a", 1, "older"), ("b", 1, "b")], partition="P1")
    plan = warehouse.plan(batch, existing={})  # planned while there was no table
    warehouse.load(batch_of([("a", 4, "newer")], partition="P2"))  # meanwhile another load fills it
    with warehouse.session() as session:
        session.lock_table(batch.spec)
        results = session.run(plan.transaction)
    assert results["direct"] is False
    assert sorted(warehouse.select("salesforce", "note__c", ["id", "body"])) == [("a", "newer"), ("b", "b")]


def test_a_differential_load_without_snapshots_skips_the_deletion_recompute(warehouse, statements):
    spec = TRACKED
    warehouse.load(dataclasses.replace(batch_of([("a", 1, "x"), ("b", 1, "y")]), spec=spec))
    warehouse.load(dataclasses.replace(batch_of([("a", 2, "x2"), ("c", 1, "z")], partition="P2"), spec=spec))
    assert not any(DELETED in sql for sql in statements)
    assert warehouse.count_rows("salesforce", "note__c", non_null="_deleted_in_source_at") == 0
    assert warehouse.count_rows("salesforce", "note__c") == 3
