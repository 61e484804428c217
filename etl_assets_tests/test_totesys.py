"""totesys extraction against the real PostgreSQL server (and the embedded DuckDB source)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import psycopg2
import pyarrow.parquet as pq
import pytest

from etl_assets.landing.zone import LocalLandingZone
from etl_assets.settings import build_totesys_source
from etl_assets.samples.totesys import seed_totesys
from etl_assets.totesys.assets import totesys_extraction_assets
from etl_assets.totesys.source import (
    DuckDBTotesysSource,
    PostgresTotesysSource,
    select_window_sql,
)
from etl_assets.totesys.tables import HISTORY_TABLES, TABLES
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets.warehouse.io_manager import WarehouseIOManager


def extract(resources: dict, instance: dg.DagsterInstance) -> dict[str, dict]:
    """Materialize every extraction asset once; return each materialization's metadata by table."""
    result = dg.materialize(totesys_extraction_assets, resources=resources, instance=instance)
    return {
        event.asset_key.path[-1]: {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }


def extraction_resources(source, warehouse, landing: Path) -> dict:
    return {
        "totesys_source": source,
        "landing_zone": LocalLandingZone(root=str(landing)),
        "warehouse": warehouse,
        "warehouse_io_manager": WarehouseIOManager(warehouse=warehouse),
    }


def source_rows(source, table: str) -> list[tuple]:
    columns = ", ".join(f'"{c}"' for c in TABLES[table].column_names)
    with source.connect(read_only=True) as connection:
        return connection.fetchall(f'SELECT {columns} FROM "{table}" ORDER BY 1')


def warehouse_rows(warehouse: DuckDBWarehouse, table: str) -> list[tuple]:
    columns = ", ".join(f'"{c}"' for c in TABLES[table].column_names)
    return warehouse.query(f'SELECT {columns} FROM raw_totesys."{table}" ORDER BY 1')


def normalized(rows: list[tuple]) -> list[tuple]:
    """Source and warehouse spellings of one value made equal (money, booleans, UTC times)."""
    def one(value):
        if isinstance(value, dt.datetime):
            return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        if isinstance(value, bool):
            return int(value)
        if hasattr(value, "as_tuple"):  # Decimal
            return float(value)
        return value
    return [tuple(one(v) for v in row) for row in rows]


@pytest.fixture
def totesys_postgres(postgres_database) -> PostgresTotesysSource:
    return PostgresTotesysSource(
        host=postgres_database["host"], port=postgres_database["port"],
        user=postgres_database["user"], database=postgres_database["database"],
    )


def test_postgres_extraction_reads_everything_then_only_the_changed_rows(totesys_postgres, tmp_path: Path):
    warehouse = DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))
    landing = tmp_path / "landing"
    resources = extraction_resources(totesys_postgres, warehouse, landing)
    instance = dg.DagsterInstance.ephemeral()
    with totesys_postgres.connect() as connection:
        seeded = seed_totesys(connection, seed=5)

    first = extract(resources, instance)
    assert set(first) == set(TABLES) | {f"{t}_history" for t in HISTORY_TABLES}
    for table in TABLES:
        assert first[table]["rows_read"] == seeded[table]["inserted"] == first[table]["dagster/row_count"]
        assert first[table]["watermark_from"] == ""
        assert normalized(warehouse_rows(warehouse, table)) == normalized(source_rows(totesys_postgres, table))
    snapshot = landing / first["sales_order"]["snapshot"].split(str(landing) + "/")[1]
    assert pq.read_table(snapshot).num_rows == seeded["sales_order"]["inserted"]

    with totesys_postgres.connect() as connection:
        changed = seed_totesys(connection, seed=5)
    second = extract(resources, instance)
    expected = {t for t, c in changed.items() if c["inserted"] or c["updated"]}
    assert set(second) == expected | {f"{t}_history" for t in expected & set(HISTORY_TABLES)}
    for table in expected:
        assert second[table]["rows_read"] == changed[table]["inserted"] + changed[table]["updated"], table
        assert (second[table]["inserted"], second[table]["updated"]) == (
            changed[table]["inserted"], changed[table]["updated"]), table
        assert second[table]["watermark_from"] == first[table]["watermark_to"]
        assert normalized(warehouse_rows(warehouse, table)) == normalized(source_rows(totesys_postgres, table))
    for table in HISTORY_TABLES:  # every version once: the overlap re-read nothing that was loaded
        history = warehouse.query(f'SELECT COUNT(*), COUNT(DISTINCT "_source_file") FROM raw_totesys."{table}_history"')
        assert history[0] == (seeded[table]["inserted"] + changed[table]["inserted"] + changed[table]["updated"], 2)
    snapshots = sorted((landing / "totesys" / "sales_order").glob("*.parquet"))
    assert len(snapshots) == 2 and pq.read_table(snapshots[-1]).num_rows == second["sales_order"]["rows_read"]

    loaded_at = warehouse.query('SELECT MAX("_loaded_at") FROM raw_totesys.sales_order')
    assert extract(resources, instance) == {}, "a run with no changes must not materialize anything"
    assert warehouse.query('SELECT MAX("_loaded_at") FROM raw_totesys.sales_order') == loaded_at
    assert len(list((landing / "totesys" / "sales_order").glob("*.parquet"))) == 2


def sales_order_values(order_id: int, units: int) -> list:
    return [order_id, 1, 1, 1, units, 2.5, 1, dt.date(2026, 1, 2), dt.date(2026, 1, 3), 1]


INSERT_ORDER = ('INSERT INTO "sales_order" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), now())')


@pytest.mark.parametrize("overlap_seconds, extracted", [(None, True), (0, False)], ids=["default-overlap", "no-overlap"])
def test_a_row_stamped_before_the_cut_off_and_committed_after_the_read_is_extracted_next_time(
        totesys_postgres, postgres_database, tmp_path: Path, overlap_seconds, extracted):
    """A real second PostgreSQL transaction stamps last_updated = now() (its start), stays open
    while a window is read and its watermark moves past the stamp, and commits after. With the
    default overlap the next run reads it; without, it is lost, which is why the default exists."""
    warehouse = DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))
    resources = extraction_resources(totesys_postgres, warehouse, tmp_path / "landing")
    asset = next(a for a in totesys_extraction_assets if dg.AssetKey(["raw_totesys", "sales_order"]) in a.keys)
    config = {} if overlap_seconds is None else {"ops": {"extract_sales_order": {"config": {
        "overlap_seconds": overlap_seconds}}}}
    instance = dg.DagsterInstance.ephemeral()

    def run() -> dict:
        result = dg.materialize([asset], resources=resources, instance=instance, run_config=config)
        return {e.asset_key.path[-1]: {k: v.value for k, v in e.materialization.metadata.items()}
                for e in result.get_asset_materialization_events()}

    with totesys_postgres.connect() as connection:
        connection.apply_schema()
        connection.execute(INSERT_ORDER, sales_order_values(1, 10))
    assert run()["sales_order"]["rows_read"] == 1

    late = psycopg2.connect(host=postgres_database["host"], port=postgres_database["port"],
                            user=postgres_database["user"], dbname=postgres_database["database"])
    try:
        with late.cursor() as cursor:  # transaction open: now() is fixed from here
            cursor.execute('UPDATE "sales_order" SET "units_sold" = 99, "last_updated" = now() '
                           'WHERE "sales_order_id" = 1 RETURNING "last_updated"')
            stamp = cursor.fetchone()[0]
        with totesys_postgres.connect() as connection:
            connection.execute(INSERT_ORDER, sales_order_values(2, 20))
        window = run()["sales_order"]
        assert window["rows_read"] == 1, "the open transaction's row is invisible to the read"
        assert dt.datetime.fromisoformat(window["watermark_to"]) > stamp, "the watermark passed the stamp"
        late.commit()
    finally:
        late.close()

    following = run()
    units = warehouse.query('SELECT units_sold FROM raw_totesys.sales_order WHERE sales_order_id = 1')[0][0]
    history = warehouse.query('SELECT sales_order_id, units_sold FROM raw_totesys.sales_order_history ORDER BY 1, 2')
    if extracted:
        assert following["sales_order"]["rows_read"] == 1 and following["sales_order"]["rows_reread"] == 1
        assert units == 99 and history == [(1, 10), (1, 99), (2, 20)]
    else:
        assert following == {} and units == 10 and history == [(1, 10), (2, 20)]


def test_the_window_is_half_open_so_a_boundary_row_is_read_exactly_once(tmp_path: Path):
    source = DuckDBTotesysSource(path=str(tmp_path / "totesys.duckdb"))
    boundary = dt.datetime(2026, 1, 1, 12, 0, 0)
    with source.connect() as connection:
        connection.apply_schema()
        for currency_id, offset in ((1, -1), (2, 0), (3, 1)):
            stamp = boundary + dt.timedelta(microseconds=offset)
            connection.execute(
                'INSERT INTO "currency" VALUES (?, ?, ?, ?)', [currency_id, f"C{currency_id}", stamp, stamp])
        columns = TABLES["currency"].column_names
        first = connection.fetchall(select_window_sql("currency", columns, "?", False), [boundary])
        second = connection.fetchall(
            select_window_sql("currency", columns, "?", True), [boundary, boundary + dt.timedelta(seconds=1)])
    assert [r[0] for r in first] == [1]
    assert [r[0] for r in second] == [2, 3]


def test_schema_file_and_extraction_catalog_agree_on_both_engines(totesys_postgres, tmp_path: Path):
    for source in (totesys_postgres, DuckDBTotesysSource(path=str(tmp_path / "totesys.duckdb"))):
        with source.connect() as connection:
            connection.apply_schema()
            connection.apply_schema()  # idempotent
            for table in TABLES.values():
                rows = connection.fetchall(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = "
                    f"{connection.param} AND table_schema = current_schema() ORDER BY ordinal_position",
                    [table.name],
                )
                assert sorted(r[0] for r in rows) == sorted(table.column_names), (source.describe(), table.name)


def test_seeder_is_deterministic_and_simulates_business(tmp_path: Path):
    fixed = dt.datetime(2026, 11, 21, 9, 30)
    results = []
    for name in ("a", "b"):
        source = DuckDBTotesysSource(path=str(tmp_path / f"{name}.duckdb"))
        with source.connect() as connection:
            seed_totesys(connection, seed=3, now=fixed)
        with source.connect() as connection:
            tick = seed_totesys(connection, seed=3, now=fixed + dt.timedelta(minutes=5))
        results.append((source_rows(source, "sales_order"), tick))
    assert results[0] == results[1]
    rows, tick = results[0]
    assert tick["sales_order"]["inserted"] >= 3 and tick["sales_order"]["updated"] >= 2
    assert tick["staff"]["inserted"] >= 1 and tick["department"]["updated"] == 1
    changed = [r for r in rows if r[-1] == fixed + dt.timedelta(minutes=5)]
    assert len(changed) == tick["sales_order"]["inserted"] + tick["sales_order"]["updated"]
    assert all(r[-2] <= r[-1] for r in rows), "created_at never after last_updated"


def test_environment_picks_the_source_and_reads_the_password_through_envvar():
    assert isinstance(build_totesys_source({}), DuckDBTotesysSource)
    source = build_totesys_source({"ETL_ASSETS_TOTESYS_SOURCE": "postgres", "ETL_ASSETS_TOTESYS_PG_PASSWORD": "s3cret"})
    assert isinstance(source, PostgresTotesysSource)
    assert isinstance(source.password, dg.EnvVar) and "s3cret" not in repr(source)
    with pytest.raises(ValueError, match="expected one of duckdb, postgres"):
        build_totesys_source({"ETL_ASSETS_TOTESYS_SOURCE": "oracle"})
