"""Turn raw CSV chunks of a Salesforce object into typed, validated frames.

The field's rules: datetimes to UTC timestamps, booleans to 0/1, strings
filled with '' for null, column names lower-cased and safe as identifiers.
A value that cannot be converted, or a row Pandera rejects, becomes a reject
row that names its file, line, column and reason; the rest of the chunk loads.
(dagster-pandera's DagsterType would fail the whole step on one bad row, so
Pandera runs here, per chunk, with lazy validation to collect every failure.)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.errors
import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.lib.convert import convert_column
from etl_assets.lib.csv_reader import CsvChunk, CsvFormatError
from etl_assets.resources.warehouse.spec import (
    REJECTS_SCHEMA,
    SOURCE_FILE,
    SOURCE_LINE,
    SOURCE_PARTITION,
    ColumnType,
    InvalidIdentifier,
    identifier,
)
from etl_assets.salesforce.catalog import MAX_TABLE_COLUMNS, MAX_TEXT_BYTES, SalesforceObject
from etl_assets.salesforce.schema import STRING_DTYPE, object_schema

LINEAGE_COLUMN_COUNT = 4  # _source_partition, _source_file, _source_line, _loaded_at
_ID_CHECKSUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID_15 = r"[a-zA-Z0-9]{15}"


def eighteen_character_id(id15: str) -> str:
    """Salesforce's case-insensitive 18-character form of a case-sensitive 15-character Id.

    Each of the three suffix characters encodes which of five Id characters are upper case.
    """
    suffix = ""
    for start in (0, 5, 10):
        bits = sum(1 << i for i, char in enumerate(id15[start:start + 5]) if "A" <= char <= "Z")
        suffix += _ID_CHECKSUM[bits]
    return id15 + suffix


def normalize_ids(raw: pd.Series) -> pd.Series:
    """15-character Ids become their 18-character form, so both spellings are one key."""
    short = raw.str.fullmatch(_ID_15).to_numpy(dtype=bool, na_value=False)
    if not short.any():
        return raw
    values = raw.to_numpy(dtype=object, copy=True)
    values[short] = [eighteen_character_id(v) for v in values[short]]
    return pd.Series(pd.array(values, dtype=raw.dtype), index=raw.index)


@dataclass(frozen=True)
class HeaderPlan:
    """How one file's header maps onto warehouse columns."""

    columns: dict[str, str]  # header field -> warehouse column
    drift: tuple[str, ...]  # warehouse columns the catalog does not list


def plan_header(obj: SalesforceObject, header: list[str], file: str) -> HeaderPlan:
    columns: dict[str, str] = {}
    seen: dict[str, int] = {}
    catalog_columns = {c.name for c in obj.columns}
    table_columns = len(catalog_columns) + LINEAGE_COLUMN_COUNT
    for position, field in enumerate(header, start=1):
        try:
            name = identifier(field.strip())
        except InvalidIdentifier as error:
            raise CsvFormatError(file, 1, f"header field {field!r}: {error}", column=position) from None
        if name in seen:
            raise CsvFormatError(
                file, 1, f"header field {field!r} repeats column {seen[name]} once lower-cased", column=position
            )
        seen[name] = position
        columns[field] = name
        if name not in catalog_columns:
            table_columns += 1
            if table_columns > MAX_TABLE_COLUMNS:
                raise CsvFormatError(
                    file, 1, f"the header has {len(header)} fields; with the catalog's columns the table would exceed "
                    f"{MAX_TABLE_COLUMNS} columns (PostgreSQL's and Redshift's limit)", column=position,
                ) from None
    for required in (obj.primary_key, obj.version_column):
        if identifier(required) not in seen:
            raise CsvFormatError(file, 1, f"the header has no {required} column")
    drift = tuple(name for name in columns.values() if obj.column(name) is None)
    return HeaderPlan(columns, drift)


@dataclass
class ChunkResult:
    rows: pd.DataFrame  # valid, typed rows with lineage columns
    rejects: pa.Table  # REJECTS_SCHEMA rows
    truncated: int = 0  # text values cut to MAX_TEXT_BYTES by an explicit catalog choice


def transform_chunk(obj: SalesforceObject, chunk: CsvChunk, plan: HeaderPlan, partition: str, file: str,
                    timings: dict[str, float] | None = None) -> ChunkResult:
    """The chunk's valid rows as a typed frame, and its rejects.

    `timings`, if given, accumulates the seconds spent in Pandera under "validate" (the benchmark).
    """
    raw = chunk.batch.to_pandas(types_mapper={pa.string(): STRING_DTYPE}.get)
    raw.columns = [plan.columns[c] for c in raw.columns]
    typed: dict[str, pd.Series] = {}
    problems: dict[int, list[tuple[str, str]]] = {}
    for name in raw.columns:
        column = obj.column(name)
        type_ = column.type if column else ColumnType.STRING
        if column is not None and column.checks.get("salesforce_id"):
            raw[name] = normalize_ids(raw[name])
        typed[name], invalid = convert_column(raw[name], type_)
        for row in np.flatnonzero(invalid):
            problems.setdefault(int(row), []).append((name, f"not a valid {type_.value}: {_short(raw[name].iat[row])}"))
    frame = pd.DataFrame(typed)
    truncated = _enforce_text_limit(obj, chunk, plan, frame, problems)
    started = time.perf_counter()
    try:
        object_schema(obj, plan.drift).validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as errors:
        _collect_pandera_failures(errors, problems)
    if timings is not None:
        timings["validate"] = timings.get("validate", 0.0) + time.perf_counter() - started
    frame[SOURCE_PARTITION] = partition
    frame[SOURCE_FILE] = file
    frame[SOURCE_LINE] = chunk.lines
    if not problems:
        return ChunkResult(frame, REJECTS_SCHEMA.empty_table(), truncated)
    bad_rows = np.array(sorted(problems), dtype=np.int64)
    rejects = _rejects_table(chunk, bad_rows, problems, partition, file)
    return ChunkResult(frame.drop(index=frame.index[bad_rows]), rejects, truncated)


def _enforce_text_limit(obj: SalesforceObject, chunk: CsvChunk, plan: HeaderPlan, frame: pd.DataFrame,
                        problems: dict[int, list]) -> int:
    """Reject (or, where the catalog says so, truncate) text values over MAX_TEXT_BYTES."""
    truncated = 0
    for field, name in plan.columns.items():
        column = obj.column(name)
        if column is not None and column.type is not ColumnType.STRING:
            continue
        lengths = pc.binary_length(chunk.batch.column(field))
        if (pc.max(lengths).as_py() or 0) <= MAX_TEXT_BYTES:
            continue
        over = np.flatnonzero(lengths.to_numpy(zero_copy_only=False) > MAX_TEXT_BYTES)
        if column is not None and column.on_overflow == "truncate":
            values = frame[name].to_numpy(dtype=object)
            for row in over:
                values[row] = values[row].encode()[:MAX_TEXT_BYTES].decode("utf-8", "ignore")
            frame[name] = pd.array(values, dtype=frame[name].dtype)
            truncated += len(over)
        else:
            for row in over:
                size = lengths[int(row)].as_py()
                problems.setdefault(int(row), []).append((name, f"{size} bytes, over the {MAX_TEXT_BYTES}-byte limit"))
    return truncated


def _collect_pandera_failures(errors: pandera.errors.SchemaErrors, problems: dict[int, list]) -> None:
    cases = errors.failure_cases
    row_level = cases[cases["index"].notna()]
    if len(row_level) < len(cases):
        # A whole-column failure (wrong dtype, missing column) is a bug in the transform, not bad data.
        raise errors
    for row, column, check, value in zip(row_level["index"], row_level["column"], row_level["check"], row_level["failure_case"]):
        found = problems.setdefault(int(row), [])
        if check == "not_nullable" and any(c == column for c, _ in found):
            continue  # the value did not convert: that reason is already recorded, null is its consequence
        found.append((str(column), f"failed {check}: {_short(value)}"))


def _rejects_table(chunk: CsvChunk, rows: np.ndarray, problems: dict, partition: str, file: str) -> pa.Table:
    originals = chunk.batch.take(pa.array(rows)).to_pylist()
    return pa.Table.from_pydict(
        {
            SOURCE_PARTITION: [partition] * len(rows),
            SOURCE_FILE: [file] * len(rows),
            SOURCE_LINE: chunk.lines[rows].tolist(),
            "column_name": [", ".join(dict.fromkeys(c for c, _ in problems[r])) for r in rows],
            "reason": ["; ".join(reason for _, reason in problems[r]) for r in rows],
            "raw_record": [json.dumps(record, ensure_ascii=False) for record in originals],
        },
        schema=REJECTS_SCHEMA,
    )


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
