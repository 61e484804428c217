"""CSV to Parquet with schema discovery: what the Glue crawler and job did.

`csv/input/<dataset>/<file>.csv`: the file's schema is inferred by Arrow and
recorded in `etl_files.schema_registry`, compared with the dataset's previous file
(drift), required columns are checked for nulls, the selected columns are written
as Parquet to `csv/processed/<dataset>/<file>.parquet`, and that Parquet is loaded.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from etl_assets.files.config import load_feeds
from etl_assets.files.loading import FileRefused, Outcome, ensure_table, header_names, load_staged, table_spec
from etl_assets.resources.audit import utcnow
from etl_assets.resources.landing_zone import LandingZone
from etl_assets.resources.warehouse.base import Warehouse
from etl_assets.resources.warehouse.batch import StagedBatchWriter
from etl_assets.resources.warehouse.spec import SOURCE_FILE, SOURCE_LINE, SOURCE_PARTITION, ColumnType

PREFIX = "csv/input/"
PROCESSED = "csv/processed/"
REGISTRY_SCHEMA, REGISTRY_TABLE = "etl_files", "schema_registry"


def column_type(arrow_type: pa.DataType) -> ColumnType:
    if pa.types.is_integer(arrow_type):
        return ColumnType.INTEGER
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return ColumnType.FLOAT
    if pa.types.is_boolean(arrow_type):
        return ColumnType.BOOLEAN
    if pa.types.is_timestamp(arrow_type):
        return ColumnType.DATETIME
    if pa.types.is_date(arrow_type):
        return ColumnType.DATE
    return ColumnType.STRING


def dataset_for_key(key: str):
    parts = key[len(PREFIX):].split("/") if key.startswith(PREFIX) else []
    if len(parts) != 2 or not parts[1].lower().endswith(".csv"):
        raise FileRefused("ABORTED", f"unknown prefix: expected {PREFIX}<dataset>/<file>.csv, got {key}")
    dataset = load_feeds().datasets.get(parts[0])
    if dataset is None:
        raise FileRefused("ABORTED", f"no csv dataset {parts[0]!r} in feeds.yaml")
    return dataset, parts[1]


def csv_dataset_table(key: str) -> str:
    dataset, _ = dataset_for_key(key)
    return f"{dataset.schema}.{dataset.table}"


def _registry(warehouse: Warehouse) -> str:
    text = ColumnType.STRING
    return ensure_table(warehouse, REGISTRY_SCHEMA, REGISTRY_TABLE, {
        "dataset": text, "source_key": text, "columns": text, "recorded_at": ColumnType.DATETIME})


def schema_drift(previous: dict[str, str] | None, current: dict[str, str]) -> dict[str, list]:
    if previous is None:
        return {}
    drift = {
        "added": sorted(set(current) - set(previous)),
        "removed": sorted(set(previous) - set(current)),
        "retyped": sorted(f"{c}: {previous[c]} -> {current[c]}" for c in set(previous) & set(current)
                          if previous[c] != current[c]),
    }
    return {k: v for k, v in drift.items() if v}


def load_csv_file(path: Path, key: str, warehouse: Warehouse, landing_zone: LandingZone) -> Outcome:
    dataset, file_name = dataset_for_key(key)
    _, names, _ = header_names(path, key, "utf-8", ",")
    try:
        table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
                               parse_options=pacsv.ParseOptions(newlines_in_values=True))
    except pa.ArrowInvalid as error:
        raise FileRefused("FAILED", f"could not be parsed: {error}") from None
    discovered = {name: column_type(table.schema.field(name).type).value for name in names}

    for position, name in enumerate(names, start=1):
        if name in dataset.required and table.column(name).null_count:
            row = pc.index(pc.is_null(table.column(name)), True).as_py()
            raise FileRefused("FAILED", f"required column {name} is empty", row + 2, position)
    missing = [c for c in dataset.required + dataset.select if c not in names]
    if missing:
        raise FileRefused("FAILED", f"columns {missing} are required or selected but not in the file", 1)
    selected = list(dataset.select or names)
    table = table.select(selected)

    registry = _registry(warehouse)
    p = warehouse.param
    previous = warehouse.query(
        f'SELECT "columns" FROM {registry} WHERE "dataset" = {p} AND "source_key" <> {p} '
        f'ORDER BY "recorded_at" DESC LIMIT 1', [dataset.name, key])
    drift = schema_drift(json.loads(previous[0][0]) if previous else None, discovered)

    processed_key = f"{PROCESSED}{dataset.name}/{Path(file_name).stem}.parquet"
    with tempfile.TemporaryDirectory(prefix="csv_parquet_") as work:
        parquet_path = Path(work) / "processed.parquet"
        pq.write_table(table, parquet_path)
        landing_zone.put_file(processed_key, parquet_path)

    spec = table_spec(dataset.schema, dataset.table, {c: ColumnType(discovered[c]) for c in selected})
    writer = StagedBatchWriter(spec, key, mode="append")
    lineage = {SOURCE_PARTITION: pa.array([key] * table.num_rows), SOURCE_FILE: pa.array([key] * table.num_rows),
               SOURCE_LINE: pa.array(range(2, table.num_rows + 2), pa.int64())}
    writer.write(table.append_column(SOURCE_PARTITION, lineage[SOURCE_PARTITION])
                 .append_column(SOURCE_FILE, lineage[SOURCE_FILE]).append_column(SOURCE_LINE, lineage[SOURCE_LINE]))
    batch = writer.close()
    result, shown = load_staged(warehouse, batch)
    with warehouse.session() as session:
        session.execute(f'DELETE FROM {registry} WHERE "source_key" = {p}', [key])
        session.execute(f"INSERT INTO {registry} VALUES ({p}, {p}, {p}, {p})",
                        [dataset.name, key, json.dumps(discovered, sort_keys=True), utcnow()])
    return Outcome(f"{dataset.schema}.{dataset.table}", "append", table.num_rows, result.inserted,
                   {"dataset": dataset.name, "discovered_schema": discovered, "schema_drift": drift,
                    "parquet": landing_zone.location(processed_key), "added_columns": list(result.added_columns),
                    **shown})
