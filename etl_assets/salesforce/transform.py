"""Turn raw CSV chunks of a Salesforce object into typed, validated Arrow tables.

The field's rules: datetimes to UTC timestamps, booleans to 0/1 (an empty
checkbox to 0, recorded in the row's LOAD_CHANGES), strings filled with ''
for null, column names lower-cased and safe as identifiers.
A value that cannot be converted, or a row Pandera rejects, becomes a reject
row that names its file, line, column and reason; the rest of the chunk loads.
(dagster-pandera's DagsterType would fail the whole step on one bad row, so
Pandera runs here, per chunk, with lazy validation to collect every failure.)
Columns are typed on the reader's Arrow arrays and the table the load takes is built from
them: a pandas frame of every column and its conversion back to Arrow cost ~4 s of CPU per
1M Task rows, more than the typing itself.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.landing.csv_reader import CsvChunk, CsvFormatError
from etl_assets.salesforce.catalog import MAX_TABLE_COLUMNS, VERSION_FALLBACK, SalesforceObject
from etl_assets.salesforce.ids import normalize_id_array
from etl_assets.salesforce.schema import validation
from etl_assets.warehouse.convert import ARROW_TYPES, convert_array, dates_with_time, mask, present, to_series
from etl_assets.warehouse.spec import (
    LOAD_CHANGES,
    REJECTS_SCHEMA,
    SOURCE_FILE,
    SOURCE_LINE,
    SOURCE_PARTITION,
    ColumnType,
    TextLimits,
    column_name,
)

NO_TEXT_LIMITS = TextLimits()
# Raise it with any change here or in staging.py that changes the rows a file loads as (a value read
# otherwise, a check added): the loaded-files ledger (loaded_files.py) then loads every file again.
TRANSFORM_VERSION = 2  # 2: a bad Date value's reason and an inferred date's widening read from its own row

LINEAGE_COLUMN_COUNT = 5  # _source_partition, _source_file, _source_line, _loaded_at, _load_changes
# Salesforce's own range for Date and DateTime fields.
FIRST_DATE, LAST_DATE = datetime.datetime(1700, 1, 1), datetime.datetime(4000, 12, 31, 23, 59, 59, 999999)
RANGE_REASON = "outside Salesforce's range 1700-01-01 to 4000-12-31"
DATE_WITH_TIME_REASON = "a Date field with a time of day"
EMPTY_AS_FALSE = "empty_as_false"
EMPTY_AS_FALSE_REASON = "empty checkbox read as false (Salesforce checkboxes are never null)"


class ColumnWidening(Exception):
    """A value does not fit a column's inferred type: staging starts again with the column wider."""

    def __init__(self, column: str, wider: ColumnType, file: str, line: int, value: str):
        self.column, self.wider, self.file, self.line, self.value = column, wider, file, line, value
        super().__init__(f"{file}, line {line}: {value!r} does not fit the inferred type of {column}; "
                         f"the column becomes {wider.value}")


# The one step up an inferred type may take before text: a float holds every integer, a datetime every
# date (at midnight UTC: a Data Export datetime column whose sampled values were all at midnight).
_WIDER = {ColumnType.INTEGER: ColumnType.FLOAT, ColumnType.DATE: ColumnType.DATETIME}


def wider_type(current: ColumnType, values: pa.Array) -> ColumnType:
    """The narrowest type above `current` that holds `values` (text): integer -> float, date -> datetime,
    anything else -> string."""
    step = _WIDER.get(current)
    if step is not None and not convert_array(values, step)[1].any():
        return step
    return ColumnType.STRING


def widest(a: ColumnType, b: ColumnType) -> ColumnType:
    """The narrowest type holding both (a table widened earlier, a type inferred now)."""
    if a is b:
        return a
    return _WIDER.get(a) if _WIDER.get(a) is b else _WIDER.get(b) if _WIDER.get(b) is a else ColumnType.STRING


@dataclass(frozen=True)
class HeaderPlan:
    """How one file's header maps onto warehouse columns."""

    columns: dict[str, str]  # header field -> warehouse column
    drift: tuple[str, ...]  # warehouse columns the catalog does not list
    declared_ids: frozenset[str] = frozenset()  # Id columns by the catalog: a value that is no Id is refused
    inferred_ids: frozenset[str] = frozenset()  # Id columns by their name (`...Id`): Ids extended, the rest kept
    # The warehouse column "newest wins" compares for this file's rows: the object's version column, or
    # the first of VERSION_FALLBACK the header has; None: the later folder, file and line wins.
    version_column: str | None = None
    version_note: str | None = None  # why the file's version is not the object's, for the run's report

    @property
    def renamed(self) -> dict[str, str]:
        """Header fields whose column is more than their lower-cased spelling."""
        return {f: name for f, name in self.columns.items() if name != f.lower()}


def plan_header(obj: SalesforceObject, header: list[str], file: str) -> HeaderPlan:
    columns: dict[str, str] = {}
    seen: dict[str, tuple[int, str]] = {}
    catalog_columns = {c.name for c in obj.columns}
    table_columns = len(catalog_columns) + LINEAGE_COLUMN_COUNT
    for position, field in enumerate(header, start=1):
        name = column_name(field)
        if not name:
            raise CsvFormatError(file, 1, f"header field {field!r} has no letter or digit to name a column by",
                                 column=position)
        if name in seen:
            first, spelled = seen[name]
            raise CsvFormatError(
                file, 1, f"header fields {spelled!r} (column {first}) and {field!r} (column {position}) "
                f"both become the column {name!r}", column=position)
        seen[name] = (position, field)
        columns[field] = name
        if name not in catalog_columns:
            table_columns += 1
            if table_columns > MAX_TABLE_COLUMNS:
                raise CsvFormatError(
                    file, 1, f"the header has {len(header)} fields; with the catalog's columns the table would exceed "
                    f"{MAX_TABLE_COLUMNS} columns (PostgreSQL's and Redshift's limit)", column=position,
                ) from None
    if column_name(obj.primary_key) not in seen:
        raise CsvFormatError(file, 1, f"the header has no {obj.primary_key} column")
    drift = tuple(name for name in columns.values() if obj.column(name) is None)
    declared = frozenset(c.name for c in obj.columns if c.is_id and c.name in seen)
    inferred = frozenset(name for f, name in columns.items() if name in drift and _named_as_id(f.strip()))
    return HeaderPlan(columns, drift, declared, inferred, *_version_column(obj, seen))


def _named_as_id(field: str) -> bool:
    """A header field named like an Id or reference (`OwnerId`; `OWNERID` from Data Loader, which can
    upper-case every header). Only an all-capitals header compares without case: `Paid` is no Id."""
    return field.endswith("Id") or (field.isupper() and field.endswith("ID"))


def _version_column(obj: SalesforceObject, names: dict[str, object]) -> tuple[str | None, str | None]:
    """The column "newest wins" compares for a file with these header names, and a note unless it is the
    object's own. A Data Loader extract holds the fields its query chose and may leave SystemModstamp
    out: then the first of VERSION_FALLBACK the header has and the catalog types as a datetime (text
    would compare by spelling), else none. An object without a version column keeps none."""
    if obj.version_column is None:
        return None, None
    candidates = list(dict.fromkeys((obj.version_column, *VERSION_FALLBACK)))
    for candidate in candidates:
        name, column = column_name(candidate), obj.column(column_name(candidate))
        if name in names and (candidate == obj.version_column or (column and column.type is ColumnType.DATETIME)):
            note = None if candidate == obj.version_column else (
                f"the header has no {obj.version_column}; newest {candidate} wins for this file")
            return name, note
    return None, (f"the header has none of {', '.join(candidates)}; the row of the later folder, file and "
                  "line wins for this file")


@dataclass
class ChunkResult:
    table: pa.Table  # valid, typed rows (convert.ARROW_TYPES) with lineage columns
    rejects: pa.Table  # REJECTS_SCHEMA rows
    truncated: list[dict] = dataclass_field(default_factory=list)  # {file, line, column, bytes} of each value cut
    empty_as_false: int = 0  # empty checkbox values of the kept rows read as false (see EMPTY_AS_FALSE_REASON)

    @property
    def rows(self) -> pd.DataFrame:
        """The valid rows as a frame of the Pandera schema's dtypes (Int16 checkboxes, datetime64[us, UTC])."""
        return pd.DataFrame({name: _series(name, column.combine_chunks())
                             for name, column in zip(self.table.column_names, self.table.columns)})


def transform_chunk(obj: SalesforceObject, chunk: CsvChunk, plan: HeaderPlan, partition: str, file: str,
                    limits: TextLimits = NO_TEXT_LIMITS) -> ChunkResult:
    """The chunk's valid rows as a typed Arrow table, and its rejects.

    `limits` are the target's text limits (Redshift's 65,535-byte VARCHAR; none elsewhere).
    Every column is converted on its Arrow array as read (convert.py): no pandas frame is built.
    """
    typed: dict[str, pa.Array] = {}
    problems: dict[int, list[tuple[str, str]]] = {}
    empty_checkboxes: dict[str, np.ndarray] = {}  # boolean column -> mask of its empty values, read as false
    for field, text in zip(chunk.batch.schema.names, chunk.batch.columns):
        name = plan.columns[field]
        text = text if text.type == pa.string() else text.cast(pa.string())
        column = obj.column(name)
        type_ = column.type if column else ColumnType.STRING
        bad: list[tuple[np.ndarray, str]] = []  # (rows, reason) of values that do not fit the column
        if name in plan.declared_ids or name in plan.inferred_ids:
            text, not_ids = normalize_id_array(text)
            if name in plan.declared_ids:
                bad.append((not_ids, "not a 15- or 18-character Salesforce Id"))
        typed[name], invalid = convert_array(text, type_)
        if type_ is ColumnType.BOOLEAN:  # a checkbox is never null: an export that leaves false empty means false
            empty = ~present(text)
            if empty.any():
                typed[name] = pc.if_else(pa.array(empty), pa.scalar(0, pa.int16()), typed[name])
                empty_checkboxes[name] = empty
        if type_ is ColumnType.DATE and invalid.any():
            with_time = np.zeros(len(invalid), dtype=bool)
            with_time[invalid] = dates_with_time(text.filter(pa.array(invalid)))
            bad += [(invalid & ~with_time, "not a valid date"), (with_time, DATE_WITH_TIME_REASON)]
        else:
            bad.append((invalid, f"not a valid {type_.value}"))
        if type_ in (ColumnType.DATETIME, ColumnType.DATE):
            bad.append((_out_of_range(typed[name]), RANGE_REASON))
        for rows, reason in bad:
            hits = np.flatnonzero(rows)
            if hits.size and column is not None and not column.strict:  # an inferred type: widen, keep the row
                wider = ColumnType.STRING if reason == RANGE_REASON else wider_type(
                    type_, text.filter(pa.array(present(text))))
                raise ColumnWidening(name, wider, file, int(chunk.lines[hits[0]]), text[int(hits[0])].as_py())
            if hits.size:
                for row, value in zip(hits.tolist(), text.take(pa.array(hits)).to_pylist()):
                    problems.setdefault(row, []).append((name, f"{reason}: {_short(value)}"))
    changes: dict[str, dict[int, dict]] = {}
    truncated = _enforce_text_limits(obj, chunk, plan, typed, problems, limits, file, changes)
    recorded = _record_changes(list(typed), chunk.batch.num_rows, changes, empty_checkboxes)
    _collect_failures(validation(obj, plan.drift).failures(typed), problems)
    columns = dict(typed)
    if recorded is not None:
        columns[LOAD_CHANGES] = recorded
    columns[SOURCE_PARTITION] = pa.repeat(pa.scalar(partition, pa.string()), chunk.batch.num_rows)
    columns[SOURCE_FILE] = pa.repeat(pa.scalar(file, pa.string()), chunk.batch.num_rows)
    columns[SOURCE_LINE] = pa.array(chunk.lines, type=pa.int64())
    table = pa.table(columns)
    if not problems:
        empty_as_false = sum(int(empty.sum()) for empty in empty_checkboxes.values())
        return ChunkResult(table, REJECTS_SCHEMA.empty_table(), truncated, empty_as_false)
    bad_rows = np.array(sorted(problems), dtype=np.int64)
    rejects = _rejects_table(chunk, bad_rows, problems, partition, file, limits.varchar_bytes)
    kept = {int(r) for r in bad_rows}
    truncated = [t for t in truncated if t["row"] not in kept]
    empty_as_false = sum(int(np.delete(empty, bad_rows).sum()) for empty in empty_checkboxes.values())
    keep = np.ones(chunk.batch.num_rows, dtype=bool)
    keep[bad_rows] = False
    return ChunkResult(table.filter(pa.array(keep)), rejects, truncated, empty_as_false)


def _out_of_range(values: pa.Array) -> np.ndarray:
    """Mask of the instants or dates outside Salesforce's range (null is not)."""
    low, high = pa.scalar(FIRST_DATE, values.type), pa.scalar(LAST_DATE, values.type)
    return mask(pc.or_(pc.less(values, low), pc.greater(values, high)))


def _series(name: str, values: pa.Array) -> pd.Series:
    """A column of `ChunkResult.table` as the frame the transform made before it typed in Arrow."""
    if name in (SOURCE_PARTITION, SOURCE_FILE, SOURCE_LINE):
        return pd.Series(values.to_numpy(zero_copy_only=False))
    if name == LOAD_CHANGES:
        return to_series(values, ColumnType.STRING)
    return to_series(values, _TYPE_OF[values.type])


_TYPE_OF = {arrow: type_ for type_, arrow in ARROW_TYPES.items()}


def _enforce_text_limits(obj: SalesforceObject, chunk: CsvChunk, plan: HeaderPlan, typed: dict[str, pa.Array],
                         problems: dict[int, list], limits: TextLimits, file: str,
                         changes: dict[str, dict[int, dict]]) -> list[dict]:
    """Text values over the target's limit: truncated (recorded in `changes`, column -> row -> entry, for
    the row's LOAD_CHANGES) unless the column's `long_text` policy says `reject`; `super` columns have
    the (larger) SUPER limit."""
    truncated: list[dict] = []
    if limits.varchar_bytes is None:
        return truncated
    for field, name in plan.columns.items():
        column = obj.column(name)
        if column is not None and column.type is not ColumnType.STRING:
            continue
        policy = column.long_text if column is not None else "truncate"
        limit = limits.super_bytes if policy == "super" else limits.varchar_bytes
        lengths = pc.binary_length(chunk.batch.column(field))
        if limit is None or (pc.max(lengths).as_py() or 0) <= limit:
            continue
        over = np.flatnonzero(lengths.to_numpy(zero_copy_only=False) > limit)
        if policy == "truncate":
            values = typed[name].to_pylist()
            for row in over:
                size = lengths[int(row)].as_py()
                values[row] = values[row].encode()[:limit].decode("utf-8", "ignore")
                changes.setdefault(name, {})[int(row)] = (
                    {"column": name, "change": "truncated", "reason": f"{size} bytes, over the target's {limit}-byte "
                     "text limit", "bytes": size, "kept_bytes": len(values[row].encode())})
                truncated.append({"row": int(row), "file": file, "line": int(chunk.lines[row]), "column": name,
                                  "bytes": size})
            typed[name] = pa.array(values, type=pa.string())
        else:
            for row in over:
                size = lengths[int(row)].as_py()
                problems.setdefault(int(row), []).append((name, f"{size} bytes, over the target's {limit}-byte limit"))
    return truncated


def _record_changes(columns: list[str], rows: int, truncations: dict[str, dict[int, dict]],
                    empty_checkboxes: dict[str, np.ndarray]) -> pa.Array | None:
    """Each row's LOAD_CHANGES: the JSON list of what the load changed in it (texts cut, empty checkboxes
    read as false), in column order; null where nothing changed, and no column (None) when no row changed.

    An API export leaves IsDeleted empty in nearly every row, so rows are not written one by one: the
    rows share a few combinations of empty checkboxes, each written once (a dictionary array); only
    the rare rows with a cut text get their own."""
    if not truncations and not empty_checkboxes:
        return None
    order = {name: position for position, name in enumerate(columns)}
    checkboxes = sorted(empty_checkboxes, key=order.__getitem__)
    code = np.zeros(rows, dtype=np.int64)  # each row's combination of empty checkboxes, as a number
    for name in checkboxes:
        if code.max(initial=0) >= 2**62:  # more than 62 checkboxes: renumber the combinations seen so far
            code = np.unique(code, return_inverse=True)[1].astype(np.int64)
        code = code * 2 + empty_checkboxes[name]
    codes, first, which = np.unique(code, return_index=True, return_inverse=True)
    entry = {name: {"column": name, "change": EMPTY_AS_FALSE, "reason": EMPTY_AS_FALSE_REASON} for name in checkboxes}

    def changes(row: int, cuts: bool) -> list[dict]:
        found = [entry[name] for name in checkboxes if empty_checkboxes[name][row]]
        found += [cut[row] for cut in truncations.values() if cuts and row in cut]
        return sorted(found, key=lambda change: order[change["column"]])

    texts = [json.dumps(changes(int(row), cuts=False)) if c else None for c, row in zip(codes, first)]
    which = which.ravel().astype(np.int32)
    for row in sorted({row for cut in truncations.values() for row in cut}):
        texts.append(json.dumps(changes(row, cuts=True)))
        which[row] = len(texts) - 1
    return pa.DictionaryArray.from_arrays(pa.array(which), pa.array(texts, type=pa.string())).cast(pa.string())


def _collect_failures(failures: list[tuple[int, str, str, object]], problems: dict[int, list]) -> None:
    for row, column, check, value in failures:
        found = problems.setdefault(int(row), [])
        if check == "not_nullable" and any(c == column for c, _ in found):
            continue  # the value did not convert: that reason is already recorded, null is its consequence
        found.append((str(column), f"failed {check}: {_short(value)}"))


def _rejects_table(chunk: CsvChunk, rows: np.ndarray, problems: dict, partition: str, file: str,
                   limit: int | None) -> pa.Table:
    """The rejected rows with their raw values (cut to the target's text limit, so the reject itself loads)."""
    originals = chunk.batch.take(pa.array(rows)).to_pylist()
    records = [json.dumps(record, ensure_ascii=False) for record in originals]
    if limit is not None:
        records = [r if len(r.encode()) <= limit else r.encode()[:limit].decode("utf-8", "ignore") for r in records]
    return pa.Table.from_pydict(
        {
            SOURCE_PARTITION: [partition] * len(rows),
            SOURCE_FILE: [file] * len(rows),
            SOURCE_LINE: chunk.lines[rows].tolist(),
            "column_name": [", ".join(dict.fromkeys(c for c, _ in problems[r])) for r in rows],
            "reason": ["; ".join(reason for _, reason in problems[r]) for r in rows],
            "raw_record": records,
        },
        schema=REJECTS_SCHEMA,
    )


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
