"""Running Salesforce folders through Dagster, and the expected tables computed independently."""

from __future__ import annotations

import csv
import datetime as dt
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import dagster as dg
import pandas as pd

from etl_assets.landing.zone import LandingZone
from etl_assets.salesforce.assets import salesforce_object_assets
from etl_assets.salesforce.personal_data import HashKey
from etl_assets.salesforce.catalog import load_catalog
from etl_assets.salesforce.partitions import differential_folders
from etl_assets_tests import live
from etl_assets_tests.live import REPO, Service, Stack, postgres_storage
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.io_manager import WarehouseIOManager

CATALOG = load_catalog()
PRODUCTION_YAML = REPO / "deploy" / "dagster.production.yaml"
LOCAL_YAML = REPO / "deploy" / "dagster.local.yaml"
wait_for = live.wait_for  # the one wait loop, for the tests too


def resources(landing_zone: LandingZone, warehouse: Warehouse, hash_key: str | None = None) -> dict:
    return {"landing_zone": landing_zone, "warehouse": warehouse,
            "warehouse_io_manager": WarehouseIOManager(warehouse=warehouse),
            "column_policy_key": HashKey(value=hash_key)}


def folders_in(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "backup").iterdir() if p.is_dir())


def materialize_folders(folders, resource_defs, instance=None, objects=None, raise_on_error=True, assets=None):
    """Materialize every selected object asset for each folder, in the given order. `assets`: object
    assets built from another catalog (default: the code location's)."""
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(differential_folders.name, list(folders))
    wanted = {o.lower() for o in objects} if objects else None
    assets = [a for a in (assets or salesforce_object_assets) if wanted is None or a.key.path[-1] in wanted]
    results = []
    for folder in folders:
        result = dg.materialize(
            assets, partition_key=folder, resources=resource_defs, instance=instance, raise_on_error=raise_on_error
        )
        results.append(result)
    return results


def _typed(value: str, type_: str):
    if value == "":
        return "" if type_ == "string" else None
    if type_ == "boolean":
        return 1 if value.lower() == "true" else 0
    if type_ == "datetime":
        return pd.Timestamp(value).tz_convert("UTC").to_pydatetime()
    if type_ == "date":
        return dt.date.fromisoformat(value)
    if type_ == "integer":
        return int(value)
    if type_ == "float":
        return float(value)
    return value


def expected_table(root: Path, api_name: str, folders: list[str] | None = None) -> dict[str, dict]:
    """Id -> typed row, newest SystemModstamp winning (then the later folder), read with the csv module."""
    obj = CATALOG[api_name]
    types = {c.api_name: c.type.value for c in obj.columns}
    best: dict[str, tuple] = {}
    for folder in folders or folders_in(root):
        directory = root / "backup" / folder / api_name
        for path in sorted(directory.glob("*.csv")) if directory.is_dir() else []:
            with open(path, newline="", encoding="utf-8") as f:
                for record in csv.DictReader(f):
                    row = {k.lower(): _typed(v, types.get(k, "string")) for k, v in record.items()}
                    rank = (row["systemmodstamp"], folder, path.name)
                    if record["Id"] not in best or rank > best[record["Id"]][0]:
                        best[record["Id"]] = (rank, row)
    return {key: row for key, (_, row) in best.items()}


def _normalize(value):
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)
    if hasattr(value, "item"):
        return value.item()
    return value


def warehouse_rows(warehouse: Warehouse, table: str) -> dict[str, dict]:
    frame = warehouse.read_table("salesforce", table)
    return {
        record["id"]: {k: _normalize(v) for k, v in record.items()}
        for record in frame.astype(object).to_dict("records")
    }


def assert_matches_truth(warehouse: Warehouse, root: Path, api_name: str, folders=None) -> int:
    expected = expected_table(root, api_name, folders)
    actual = warehouse_rows(warehouse, api_name.lower())
    assert set(actual) == set(expected), f"{api_name}: key sets differ"
    for key, row in expected.items():
        got = actual[key]
        for column, value in row.items():
            want = _normalize(value)
            if isinstance(want, dt.date) and not isinstance(want, dt.datetime) and isinstance(got[column], dt.datetime):
                got_value = got[column].date()
            else:
                got_value = got[column]
            assert got_value == want, f"{api_name} {key}.{column}: {got_value!r} != {want!r}"
    return len(expected)


def _canonical(value) -> str:
    """One spelling per value whichever engine or driver returned it."""
    value = _normalize(value)
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0) and value.tzinfo in (None, dt.timezone.utc):
            return value.date().isoformat()  # DuckDB hands DATE columns to pandas as midnight timestamps
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # pandas turns nullable integers into floats
    return repr(value)


def table_digest(warehouse: Warehouse, table: str, schema: str = "salesforce") -> list[tuple]:
    """Every row except the load timestamp, sorted: equal digests mean equal tables, on any engine."""
    frame = warehouse.read_table(schema, table).drop(columns=["_loaded_at"], errors="ignore")
    frame = frame[sorted(frame.columns)]  # an ALTER-added column sits last; compare by name
    frame = frame.astype(object).where(frame.notna(), None)
    return sorted(tuple(map(_canonical, row)) for row in frame.itertuples(index=False))


# --- Dagster's own processes (webserver, daemon, dev servers) on a temporary instance --------------
# The processes, ports, GraphQL and waiting are etl_assets_tests.live's (the benchmark uses them too);
# what is here only tests need: a production DAGSTER_HOME, run records and events, failure diagnostics.


def production_deployment(root: Path, landing: Path, storage: dict, warehouse: dict, monkeypatch,
                          **settings: str) -> tuple[Path, dict]:
    """A DAGSTER_HOME holding deploy/dagster.production.yaml itself (a symlink to the repo's file, not a
    copy), its storage in the PostgreSQL database `storage` (DAGSTER_PG_*, set in this process too, so
    the test reads the same instance), and the variables of Dagster processes loading the code location
    on it: the local landing zone, the PostgreSQL warehouse `warehouse`, then `settings`.
    Returns (home, the variables)."""
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(PRODUCTION_YAML)
    instance = {"DAGSTER_HOME": str(home), **postgres_storage(storage)}
    for key, value in instance.items():
        monkeypatch.setenv(key, value)
    env = live.environment(landing=landing, **instance, **live.postgres_warehouse(warehouse),
                           # Nothing in the repo's data/ directory is touched, whatever else might run.
                           ETL_ASSETS_DUCKDB_PATH=str(root / "warehouse.duckdb"),
                           ETL_ASSETS_TOTESYS_DUCKDB_PATH=str(root / "totesys.duckdb"), **settings)
    return home, env


def pg_rows(database: dict, sql: str, params=None) -> list[tuple]:
    """The rows of one query on a PostgreSQL database ({host, port, user, database})."""
    import psycopg2

    connection = psycopg2.connect(host=database["host"], port=database["port"], user=database["user"],
                                  dbname=database["database"])
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    finally:
        connection.close()


class SourceUnreadable(Exception):
    """What a load's source raises (a file it cannot read): the error that causes a rollback."""


def assert_the_first_cause_outlives_an_ended_session(open_session, database: dict) -> None:
    """The first cause wins when the server ends a session mid-transaction (pg_terminate_backend: a
    failover, an operator). In a session from `open_session()` (a context manager yielding a warehouse
    session on the PostgreSQL `database`): a table is created, the server ends the session's backend,
    then the load fails as one whose source cannot be read. The session cannot roll back: what leaves it
    must be that SourceUnreadable, with the failed rollback as a note, never the rollback's error."""
    import psycopg2
    import pytest

    watcher = psycopg2.connect(host=database["host"], port=database["port"], user=database["user"],
                               dbname=database["database"])
    watcher.autocommit = True

    def gone(pid: int) -> bool:
        with watcher.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = %s", [pid])
            return cursor.fetchone()[0] == 0

    try:
        with pytest.raises(SourceUnreadable) as raised, open_session() as session:
            session.execute("CREATE TABLE half_made (a integer)")
            pid = session.fetchall("SELECT pg_backend_pid()")[0][0]
            with watcher.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
                assert cursor.fetchone()[0] is True
            wait_for(lambda: gone(pid), 30, "the ended backend to exit")
            raise SourceUnreadable("Task/task_part1.csv, line 2: a quoted value is never closed")
    finally:
        watcher.close()
    assert any("rolling back then failed too" in note for note in raised.value.__notes__), raised.value


def finished_runs(instance: dg.DagsterInstance, run_ids: list[str] | None = None, count: int = 1):
    """The run records (of `run_ids`, else all), once there are at least `count` and every one has finished."""
    records = instance.get_run_records(dg.RunsFilter(run_ids=run_ids) if run_ids else None)
    return records if len(records) >= count and all(r.dagster_run.is_finished for r in records) else None


def events(instance: dg.DagsterInstance, run_id: str, event_type) -> list:
    """The run's Dagster events of a type (or set of types), in order."""
    return [e.dagster_event for e in instance.all_logs(run_id, of_type=event_type)]


def materialized_keys(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    return {e.asset_key.to_user_string() for e in events(instance, run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)}


def print_run_diagnostics(services: list[Service], home: Path) -> None:
    """What a CI failure needs: each process's log, and every run's status and failures."""
    from dagster._core.events import DagsterEventType

    for service in services:
        print(service.tail())
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            for record in instance.get_run_records():
                run = record.dagster_run
                print(f"run {run.run_id} {run.status.value} tags={dict(run.tags)}")
                for entry in instance.all_logs(run.run_id):
                    event = entry.dagster_event
                    if event and (event.is_failure or event.event_type == DagsterEventType.ENGINE_EVENT):
                        print(f"  {event.event_type_value} {event.step_key or ''}: {event.message or entry.user_message}")
    except Exception as error:  # diagnostics must not hide the original failure
        print(f"(could not read runs: {error!r})")


@contextmanager
def diagnosed(home: Path, services: list[Service] | None = None) -> Iterator[list[Service]]:
    """Yields a list for the test's Dagster processes; stops each of them afterwards and, when the
    test failed, prints their logs and the runs of the instance in `home`."""
    services = [] if services is None else services
    try:
        yield services
    except BaseException:
        for service in reversed(services):
            service.stop()
        print_run_diagnostics(services, home)
        raise
    finally:
        for service in reversed(services):
            service.stop()


@contextmanager
def stack(home: Path, env: dict, log_dir: Path) -> Iterator[Stack]:
    """A webserver and daemon (not started yet: `start`, or `start_webserver` then `start_daemon`) on
    the instance in `home`, stopped afterwards, diagnosed on failure."""
    dagster = Stack({**env, "DAGSTER_HOME": str(home)}, log_dir)
    with diagnosed(home, dagster.services):
        yield dagster


def engine_of(request, tmp_path):
    """`engine` for `request.param`: duckdb, postgres, or postgres18 (a module's own `engine` fixture
    adds it where a path differs on PostgreSQL 18)."""
    import itertools

    from etl_assets.warehouse.duckdb import DuckDBWarehouse
    from etl_assets.warehouse.postgres import PostgresWarehouse

    if request.param == "duckdb":
        counter = itertools.count()
        return lambda: DuckDBWarehouse(path=str(tmp_path / f"warehouse_{next(counter)}.duckdb"))
    database = request.getfixturevalue("postgres18_database" if request.param == "postgres18" else "postgres_database")
    warehouse = PostgresWarehouse(host=database["host"], port=database["port"], user=database["user"],
                                  database=database["database"])

    def fresh() -> PostgresWarehouse:
        with warehouse.session() as session:
            for schema in ("salesforce", "salesforce_history", "salesforce_superseded", "etl_audit"):
                session.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        return warehouse

    return fresh
