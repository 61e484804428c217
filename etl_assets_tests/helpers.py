"""Running Salesforce folders through Dagster, and the expected tables computed independently."""

from __future__ import annotations

import csv
import datetime as dt
import time
from pathlib import Path

import dagster as dg
import pandas as pd

from etl_assets.resources.landing_zone import LandingZone
from etl_assets.resources.warehouse.base import Warehouse
from etl_assets.resources.warehouse.io_manager import WarehouseIOManager
from etl_assets.salesforce.assets import salesforce_object_assets
from etl_assets.salesforce.catalog import load_catalog
from etl_assets.salesforce.partitions import differential_folders

CATALOG = load_catalog()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy (returned), or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def resources(landing_zone: LandingZone, warehouse: Warehouse) -> dict:
    return {"landing_zone": landing_zone, "warehouse": warehouse,
            "warehouse_io_manager": WarehouseIOManager(warehouse=warehouse)}


def folders_in(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "backup").iterdir() if p.is_dir())


def materialize_folders(folders, resource_defs, instance=None, objects=None, raise_on_error=True):
    """Materialize every selected object asset for each folder, in the given order."""
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(differential_folders.name, list(folders))
    wanted = {o.lower() for o in objects} if objects else None
    assets = [a for a in salesforce_object_assets if wanted is None or a.key.path[-1] in wanted]
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
