"""CSV to Parquet with schema discovery: what the Glue crawler and job did.

`csv/input/<dataset>/<file>.csv`: each column's type is inferred from the file's
text by the same conversion the load uses, recorded in `etl_files.schema_registry`
and compared with the dataset's previous file (drift). The selected columns are
staged on the shared typing path (types declared in feeds.yaml, else the table's,
else inferred: a value that does not fit is refused with its line and column),
loaded with the registry row in one transaction, and only then written as Parquet
to `csv/processed/<dataset>/<file>.parquet`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from etl_assets.files.config import feed_catalog, refuse_broken
from etl_assets.files.loading import (
    FileLoad,
    FileRefused,
    Outcome,
    bookkeeping_table,
    check_content,
    header_mismatch,
    header_names,
    infer_types,
    load_file,
    stage_typed_csv,
    table_spec,
)
from etl_assets.landing.zone import LandingZone
from etl_assets.warehouse.audit import utcnow
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.spec import ColumnType

PREFIX = "csv/input/"
PROCESSED = "csv/processed/"
REGISTRY = bookkeeping_table("etl_files", "schema_registry", {  # the discovered schema of each file
    "dataset": ColumnType.STRING, "source_key": ColumnType.STRING, "columns": ColumnType.STRING,
    "recorded_at": ColumnType.DATETIME})


def dataset_for_key(key: str):
    parts = key[len(PREFIX):].split("/") if key.startswith(PREFIX) else []
    if len(parts) != 2 or not parts[1].lower().endswith(".csv"):
        raise FileRefused("ABORTED", f"unknown prefix: expected {PREFIX}<dataset>/<file>.csv, got {key}")
    catalog = feed_catalog()
    dataset = catalog.datasets.get(parts[0])
    if f"csv_datasets.{parts[0]}" in catalog.broken:
        raise refuse_broken(catalog.broken[f"csv_datasets.{parts[0]}"], "csv dataset")
    if dataset is None:
        raise FileRefused("ABORTED", f"no csv dataset {parts[0]!r} in feeds.yaml")
    return dataset, parts[1]


def csv_dataset_table(key: str) -> str:
    dataset, _ = dataset_for_key(key)
    return f"{dataset.schema}.{dataset.table}"


def previous_schema(warehouse: Warehouse, dataset: str, key: str) -> dict | None:
    """The discovered schema of the dataset's latest file other than `key` (a re-run is compared with the file
    before it)."""
    warehouse.ensure_table(REGISTRY)
    rows = warehouse.select(REGISTRY.schema, REGISTRY.name, ["recorded_at", "source_key", "columns"],
                            {"dataset": dataset})
    others = sorted(row for row in rows if row[1] != key)
    return json.loads(others[-1][2]) if others else None


def schema_drift(previous: dict[str, str | None] | None, current: dict[str, str | None]) -> dict[str, list]:
    """Columns added, removed or retyped against the dataset's previous file; a column without values
    (type None) on either side has no type to compare."""
    if previous is None:
        return {}
    drift = {
        "added": sorted(set(current) - set(previous)),
        "removed": sorted(set(previous) - set(current)),
        "retyped": sorted(f"{c}: {previous[c]} -> {current[c]}" for c in set(previous) & set(current)
                          if previous[c] and current[c] and previous[c] != current[c]),
    }
    return {k: v for k, v in drift.items() if v}


def _typed_columns(dataset, warehouse: Warehouse, selected: list[str], inferred: dict) -> dict[str, ColumnType]:
    """The type each selected column loads as: declared in feeds.yaml, else the table's (a value that no
    longer fits it is refused, never cast), else inferred from this file's text. A column with no values
    and no type yet is left out: the next file with values types it."""
    existing = warehouse.column_types(dataset.schema, dataset.table)
    types = {}
    for name in selected:
        type_ = dataset.columns.get(name) or existing.get(name) or inferred.get(name)
        if type_ is not None:
            types[name] = type_
    return types


def write_processed(batch, types: dict, selected: list[str], target: Path) -> None:
    """The selected columns as loaded (typed by the same conversion), written from the staged rows."""
    schema = pa.schema([pa.field(name, batch.spec.arrow_schema().field(name).type if name in types else pa.string())
                        for name in selected])
    with pq.ParquetWriter(target, schema) as writer:
        for part in batch.files:
            staged = pq.read_table(part)
            columns = [staged.column(n) if n in types else pa.nulls(staged.num_rows, pa.string()) for n in selected]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))


def load_csv_file(load: FileLoad, landing_zone: LandingZone) -> Outcome:
    path, key, warehouse = load.path, load.key, load.warehouse
    dataset, file_name = dataset_for_key(key)
    table = f"{dataset.schema}.{dataset.table}"
    header, names, header_lines = header_names(path, key, "utf-8", ",")
    mismatch = header_mismatch(names, list(dict.fromkeys(dataset.required + dataset.select)), extra_allowed=True)
    if mismatch:
        raise FileRefused("ABORTED", mismatch, 1)
    fingerprint = check_content(load, table, dataset.allow_duplicates)
    inferred = infer_types(path, key, header, names, header_lines, "utf-8", ",")
    discovered = {name: type_.value if type_ else None for name, type_ in inferred.items()}

    known = previous_schema(warehouse, dataset.name, key)
    drift = schema_drift(known, discovered)
    recorded = {**{c: t for c, t in (known or {}).items() if c in discovered}, **{c: t for c, t in discovered.items()
                                                                                  if t is not None}}
    recorded.update({c: None for c in discovered if c not in recorded})

    selected = list(dataset.select or names)
    types = _typed_columns(dataset, warehouse, selected, inferred)
    # A required column without a value anywhere has no type, but is still checked: its first row fails.
    untyped_required = {c: ColumnType.STRING for c in selected if c in dataset.required and c not in types}
    spec = table_spec(dataset.schema, dataset.table, {**types, **untyped_required}, dataset.required)
    try:
        batch, rows = stage_typed_csv(path, key, spec, "append", extra_columns=True)
    except FileRefused as refused:
        refused.schema_drift = drift or None
        raise
    if untyped_required:  # no rows at all: nothing to type these columns by, so they are not created
        batch.spec = table_spec(dataset.schema, dataset.table, types, dataset.required)
    processed_key = f"{PROCESSED}{dataset.name}/{Path(file_name).stem}.parquet"
    work = Path(tempfile.mkdtemp(prefix="csv_parquet_"))
    try:
        parquet_path = work / "processed.parquet"
        write_processed(batch, types, selected, parquet_path)
        discovered_row = {"dataset": dataset.name, "source_key": key, "columns": json.dumps(recorded, sort_keys=True),
                          "recorded_at": utcnow()}
        after = warehouse.upsert_steps(REGISTRY, discovered_row, key=("source_key",))
        result, shown = load_file(load, batch, table, fingerprint, dataset.allow_duplicates, after)
        # Written once the load committed: a refused or failed file leaves no Parquet in processed/.
        landing_zone.put_file(processed_key, parquet_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Outcome(table, "append", rows, result.inserted,
                   {"dataset": dataset.name, "discovered_schema": discovered, "schema_drift": drift,
                    "parquet": landing_zone.location(processed_key), "added_columns": list(result.added_columns),
                    "content_sha256": fingerprint, **shown})
