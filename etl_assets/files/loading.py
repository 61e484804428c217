"""What every file feed shares: typed, all-or-nothing staging of a CSV, and refusals.

A file either loads whole or not at all: the first value that does not fit the
declared type or a required column names its file, line and column, and the
table stays as it was. ABORTED means a check before loading refused the file
(unknown feed or prefix, disallowed action, empty file, header or trailer
mismatch); FAILED means loading was attempted and failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa

from etl_assets.lib.convert import convert_column
from etl_assets.lib.csv_reader import CsvFormatError, iter_csv_chunks, read_header
from etl_assets.resources.warehouse.base import LoadResult, Warehouse
from etl_assets.resources.warehouse.batch import ROWS_PER_FILE, StagedBatch, StagedBatchWriter
from etl_assets.resources.warehouse.io_manager import batch_preview, table_schema
from etl_assets.resources.warehouse.spec import (
    SOURCE_FILE,
    SOURCE_LINE,
    SOURCE_PARTITION,
    Column,
    ColumnType,
    InvalidIdentifier,
    TableSpec,
    identifier,
    quote,
)

STRING_DTYPE = pd.StringDtype("pyarrow")


class FileRefused(Exception):
    """The file is not loaded; `status` is ABORTED or FAILED."""

    def __init__(self, status: str, reason: str, line: int | None = None, column: int | str | None = None):
        self.status, self.reason, self.line, self.column = status, reason, line, column
        where = ", ".join(f"{label} {value}" for label, value in (("line", line), ("column", column)) if value)
        super().__init__(f"{where}: {reason}" if where else reason)


@dataclass
class Outcome:
    """A successful load, for the audit row, the notification and the materialization."""

    table: str
    action: str
    rows_read: int = 0
    rows_loaded: int = 0
    metadata: dict = field(default_factory=dict)


def ensure_table(warehouse: Warehouse, schema: str, table: str, columns: dict[str, ColumnType]) -> str:
    """Create a small bookkeeping table (registries) if it is missing; returns its quoted name."""
    definitions = ", ".join(f"{quote(name)} {warehouse.type_names[type_]}" for name, type_ in columns.items())
    with warehouse.session() as session:
        session.lock_catalog()
        session.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
        session.execute(f"CREATE TABLE IF NOT EXISTS {quote(schema)}.{quote(table)} ({definitions})")
    return f"{quote(schema)}.{quote(table)}"


def load_staged(warehouse: Warehouse, batch: StagedBatch) -> tuple[LoadResult, dict]:
    """Load a staged batch, then discard its files; returns the result and the metadata that shows
    the load in the UI (column schema, a preview of the first rows, read before the files go)."""
    shown = {"dagster/column_schema": table_schema(batch.spec), "preview": batch_preview(batch)}
    try:
        return warehouse.load(batch), shown
    finally:
        batch.discard()


def table_spec(schema: str, table: str, columns: dict[str, ColumnType], required=()) -> TableSpec:
    return TableSpec(schema, table, None, None,
                     tuple(Column(name, type_, name not in required) for name, type_ in columns.items()))


def header_names(path: Path, key: str, encoding: str, delimiter: str) -> tuple[list[str], list[str], int]:
    """(header as written, as identifiers, lines it spans); refuses empty files and unsafe names."""
    try:
        header, header_lines = read_header(path, key, encoding, delimiter)
    except CsvFormatError as error:
        status = "ABORTED" if "empty" in error.detail else "FAILED"
        raise FileRefused(status, error.detail, error.line, error.column) from None
    names = []
    for position, field_name in enumerate(header, start=1):
        try:
            names.append(identifier(field_name.strip()))
        except InvalidIdentifier as error:
            raise FileRefused("ABORTED", f"header field {field_name!r}: {error}", 1, position) from None
    if len(set(names)) != len(names):
        raise FileRefused("ABORTED", f"repeated header fields in {header}", 1)
    return header, names, header_lines


def stage_typed_csv(
    path: Path,
    key: str,
    spec: TableSpec,
    mode: str,
    delimiter: str = ",",
    encoding: str = "utf-8",
    expected_header: tuple[str, ...] | None = None,
    rows_per_file: int = ROWS_PER_FILE,
) -> tuple[StagedBatch, int]:
    """Stage every record of `path` typed by `spec`, or refuse the whole file."""
    header, names, header_lines = header_names(path, key, encoding, delimiter)
    declared = [c.name for c in spec.columns]
    if expected_header is not None and tuple(names) != tuple(expected_header):
        raise FileRefused("ABORTED", f"header mismatch: expected {list(expected_header)}, found {header}", 1)
    if sorted(names) != sorted(declared):
        raise FileRefused("ABORTED", f"header mismatch: expected the columns {declared}, found {header}", 1)
    types = {c.name: c for c in spec.columns}
    writer = StagedBatchWriter(spec, key, mode=mode, rows_per_file=rows_per_file)
    rows = 0
    try:
        for chunk in iter_csv_chunks(path, key, header, header_lines, encoding, delimiter):
            raw = chunk.batch.to_pandas(types_mapper={pa.string(): STRING_DTYPE}.get)
            raw.columns = names
            typed = {}
            for position, name in enumerate(names, start=1):
                column = types[name]
                typed[name], invalid = convert_column(raw[name], column.type)
                if invalid.any():
                    row = int(invalid.argmax())
                    raise FileRefused("FAILED", f"{name}: not a valid {column.type.value}: {raw[name].iat[row]!r}",
                                      int(chunk.lines[row]), position)
                if not column.nullable:
                    missing = (raw[name] == "").to_numpy(dtype=bool, na_value=True)
                    if missing.any():
                        row = int(missing.argmax())
                        raise FileRefused("FAILED", f"{name}: a value is required", int(chunk.lines[row]), position)
            frame = pd.DataFrame(typed)
            frame[SOURCE_PARTITION] = key
            frame[SOURCE_FILE] = key
            frame[SOURCE_LINE] = chunk.lines
            writer.write(pa.Table.from_pandas(frame, preserve_index=False))
            rows += len(frame)
    except CsvFormatError as error:
        writer.abort()
        raise FileRefused("FAILED", error.detail, error.line, error.column) from None
    except BaseException:
        writer.abort()
        raise
    return writer.close(), rows
