"""The data-lake prefix loader: `datalake/<db>/<action>/<table>/<file>` says what to do.

`schema` files (JSON) declare a table's columns and its allowed operations, and
create or widen the table; `append` CSVs add rows (idempotently per file);
`truncate` CSVs replace the table's rows, in one transaction, unless a guard holds
them (an empty file, fewer rows than the schema's `guards.min_rows`, a drop beyond
`guards.max_drop_percent`). Declared schemas live in the warehouse
(`etl_files.datalake_schemas`), beside the data they govern, and change in the
same transaction as the table.
"""

from __future__ import annotations

import json
from pathlib import Path

from etl_assets.files.loading import (
    FileLoad,
    FileRefused,
    Guards,
    Outcome,
    bookkeeping_table,
    check_content,
    check_guards,
    load_file,
    load_staged,
    stage_typed_csv,
    table_spec,
)
from etl_assets.warehouse.audit import utcnow
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.batch import StagedBatchWriter
from etl_assets.warehouse.spec import ColumnType, InvalidIdentifier, identifier

PREFIX = "datalake/"
ACTIONS = ("append", "truncate", "schema")
REGISTRY = bookkeeping_table("etl_files", "datalake_schemas", {  # the declared schema of each table
    "db": ColumnType.STRING, "table_name": ColumnType.STRING, "definition": ColumnType.STRING,
    "source_key": ColumnType.STRING, "updated_at": ColumnType.DATETIME})


def parse_key(key: str) -> tuple[str, str, str, str]:
    """(db, action, table, file name) of a data-lake key, or the reason it is not one."""
    parts = key[len(PREFIX):].split("/") if key.startswith(PREFIX) else []
    if len(parts) != 4 or not all(parts):
        raise FileRefused("ABORTED", f"unknown prefix: expected {PREFIX}<db>/<action>/<table>/<file>, got {key}")
    db, action, table, name = parts
    if action not in ACTIONS:
        raise FileRefused("ABORTED", f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
    try:
        return identifier(db), action, identifier(table), name
    except InvalidIdentifier as error:
        raise FileRefused("ABORTED", str(error)) from None


def datalake_table(key: str) -> str:
    db, _, table, _ = parse_key(key)
    return f"{db}.{table}"


def declared_schema(warehouse: Warehouse, db: str, table: str) -> dict | None:
    warehouse.ensure_table(REGISTRY)
    rows = warehouse.select(REGISTRY.schema, REGISTRY.name, ["definition"], {"db": db, "table_name": table})
    return json.loads(rows[0][0]) if rows else None


def parse_schema_file(path: Path, key: str) -> dict:
    """{'columns': {name: {'type', 'nullable'}}, 'allowed_operations': [...]}, validated."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FileRefused("ABORTED", f"not a JSON schema file: {error}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("columns"), list) or not raw["columns"]:
        raise FileRefused("ABORTED", "a schema file needs a non-empty 'columns' list")
    columns = {}
    for position, column in enumerate(raw["columns"], start=1):
        try:
            name = identifier(str(column["name"]))
            type_ = ColumnType(column["type"]).value
        except (KeyError, TypeError, ValueError) as error:
            raise FileRefused("ABORTED", f"columns[{position}]: {error}") from None
        if name in columns:
            raise FileRefused("ABORTED", f"column {name} is declared twice")
        columns[name] = {"type": type_, "nullable": bool(column.get("nullable", True))}
    allowed = raw.get("allowed_operations", list(ACTIONS))
    if not set(allowed) <= set(ACTIONS):
        raise FileRefused("ABORTED", f"allowed_operations must be among {ACTIONS}, got {allowed}")
    try:
        guards = Guards.parse(raw.get("guards"), "guards")
    except (TypeError, ValueError) as error:
        raise FileRefused("ABORTED", str(error)) from None
    if raw.get("duplicates", "refuse") not in ("refuse", "allow"):
        raise FileRefused("ABORTED", "duplicates must be refuse or allow")
    return {"columns": columns, "allowed_operations": sorted(allowed),
            "guards": {"min_rows": guards.min_rows, "max_drop_percent": guards.max_drop_percent},
            "duplicates": raw.get("duplicates", "refuse")}


def incompatible_changes(old: dict, new: dict) -> list[str]:
    """Why `new` cannot replace `old` in place: only new nullable columns are compatible."""
    reasons = []
    for name, column in old["columns"].items():
        if name not in new["columns"]:
            reasons.append(f"column {name} would be dropped")
        elif new["columns"][name]["type"] != column["type"]:
            reasons.append(f"column {name} would change type {column['type']} -> {new['columns'][name]['type']}")
        elif column["nullable"] and not new["columns"][name]["nullable"]:
            reasons.append(f"column {name} would become required")
    for name, column in new["columns"].items():
        if name not in old["columns"] and not column["nullable"]:
            reasons.append(f"new column {name} must be nullable: existing rows have no value")
    return reasons


def load_datalake_file(load: FileLoad) -> Outcome:
    path, key, warehouse = load.path, load.key, load.warehouse
    db, action, table, _ = parse_key(key)
    current = declared_schema(warehouse, db, table)
    if action != "schema":
        if current is None:
            raise FileRefused("ABORTED", f"unknown table {db}.{table}: land a schema file first")
        if action not in current["allowed_operations"]:
            raise FileRefused("ABORTED", f"{action} is not allowed for {db}.{table} "
                                         f"(allowed: {', '.join(current['allowed_operations'])})")
        if path.stat().st_size == 0:
            raise FileRefused("ABORTED", "the file is empty")
        allow_duplicates = current.get("duplicates") == "allow"
        fingerprint = check_content(load, f"{db}.{table}", allow_duplicates)
        spec = _spec(db, table, current)
        mode = "append" if action == "append" else "replace"
        batch, rows = stage_typed_csv(path, key, spec, mode)
        try:
            check_guards(load, batch, Guards(**current.get("guards", {})))
        except BaseException:
            batch.discard()
            raise
        result, shown = load_file(load, batch, f"{db}.{table}", fingerprint, allow_duplicates)
        return Outcome(f"{db}.{table}", action, rows, result.inserted, {"rows_replaced": result.deleted, **shown})

    new = parse_schema_file(path, key)
    if current is not None:
        if "schema" not in current["allowed_operations"]:
            raise FileRefused("ABORTED", f"schema changes are not allowed for {db}.{table}")
        reasons = incompatible_changes(current, new)
        if reasons:
            raise FileRefused("ABORTED", "incompatible schema change: " + "; ".join(reasons))
    declared = {"db": db, "table_name": table, "definition": json.dumps(new, sort_keys=True), "source_key": key,
                "updated_at": utcnow()}
    record = warehouse.upsert_steps(REGISTRY, declared, key=("db", "table_name"))
    empty = StagedBatchWriter(_spec(db, table, new), key, mode="append").close()
    result, _ = load_staged(warehouse, empty, record)  # creates the table or adds the new columns; no rows
    return Outcome(f"{db}.{table}", "schema", metadata={"added_columns": list(result.added_columns),
                                                         "allowed_operations": new["allowed_operations"]})


def _spec(db: str, table: str, declared: dict):
    columns = {name: ColumnType(c["type"]) for name, c in declared["columns"].items()}
    required = {name for name, c in declared["columns"].items() if not c["nullable"]}
    return table_spec(db, table, columns, required)
