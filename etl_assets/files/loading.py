"""What every file feed shares: one typing and validation path, the checks before a
load, and one all-or-nothing load.

A file either loads whole or not at all: the first value that does not fit the
declared type or a required column names its file, line and column (the same
conversion, `etl_assets.warehouse.convert`, for every kind of feed: nothing is rounded
or truncated), and the table stays as it was. Statuses (docs/file-feeds.md):
ABORTED, a check before loading refused the file (unknown feed or prefix,
disallowed action, empty file, header, header record or trailer mismatch);
FAILED, loading was attempted and failed (a value, a database error, post-load
SQL); DUPLICATE, its content (or its business keys) already loaded under another
name; HELD, a destructive load a guard stopped until an operator overrides it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from etl_assets.landing.csv_reader import CsvFormatError, iter_csv_chunks, read_header
from etl_assets.warehouse.audit import claim_steps, claimed_by, ensure_claims_table, utcnow
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.batch import ROWS_PER_FILE, StagedBatch, StagedBatchWriter
from etl_assets.warehouse.convert import EXACT_INTEGER, convert_column
from etl_assets.warehouse.io_manager import batch_preview, table_schema
from etl_assets.warehouse.spec import (
    SOURCE_FILE,
    SOURCE_LINE,
    SOURCE_PARTITION,
    Column,
    ColumnType,
    InvalidIdentifier,
    TableSpec,
    identifier,
)
from etl_assets.warehouse.steps import LoadResult, Step

STRING_DTYPE = pd.StringDtype("pyarrow")


STATUSES = ("ABORTED", "FAILED", "DUPLICATE", "HELD")
OVERRIDE_TAG = "files/override"  # a run tag: "guards", "duplicates" or both, comma-separated
# The types a column of text can be inferred as, narrowest first; anything else is text.
INFERRED_ORDER = (ColumnType.INTEGER, ColumnType.FLOAT, ColumnType.BOOLEAN, ColumnType.DATE, ColumnType.DATETIME)


class FileRefused(Exception):
    """The file is not loaded; `status` is one of STATUSES (docs/file-feeds.md says where it goes)."""

    def __init__(self, status: str, reason: str, line: int | None = None, column: int | str | None = None,
                 rows_read: int = 0, schema_drift: dict | None = None):
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        self.status, self.reason, self.line, self.column = status, reason, line, column
        self.rows_read, self.schema_drift = rows_read, schema_drift
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


@dataclass
class FileLoad:
    """One file being loaded: where it is, what it is, and what the operator allowed for this run."""

    path: Path
    key: str
    warehouse: Warehouse
    overrides: frozenset = frozenset()  # "guards", "duplicates"

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


@dataclass(frozen=True)
class Guards:
    """Limits on a load that replaces a table's rows (truncate, replace): below them the file is HELD."""

    min_rows: int = 1
    max_drop_percent: float | None = None

    @classmethod
    def parse(cls, raw: dict | None, where: str) -> "Guards":
        raw = raw or {}
        unknown = set(raw) - {"min_rows", "max_drop_percent"}
        if unknown:
            raise ValueError(f"{where}: unknown guard settings {sorted(unknown)}")
        return cls(int(raw.get("min_rows", 1)), raw.get("max_drop_percent"))


def bookkeeping_table(schema: str, table: str, columns: dict[str, ColumnType]) -> TableSpec:
    """A table the feeds keep beside the data (registries, fingerprints); `Warehouse.ensure_table` makes it."""
    return TableSpec(schema, table, None, None, tuple(Column(name, type_) for name, type_ in columns.items()))


LOADED_FILES = bookkeeping_table("etl_files", "loaded_files", {  # the content fingerprint of every file loaded
    "fingerprint": ColumnType.STRING, "target_table": ColumnType.STRING, "source_key": ColumnType.STRING,
    "rows_loaded": ColumnType.INTEGER, "loaded_at": ColumnType.DATETIME})


def refuses_duplicates(load: FileLoad, allowed: bool) -> bool:
    """False when the feed allows repeated content or the run overrides the check."""
    return not (allowed or "duplicates" in load.overrides)


def check_content(load: FileLoad, table: str, allowed: bool) -> str:
    """Refuse (DUPLICATE) a file whose exact bytes were already loaded into `table` under another key;
    returns the fingerprint. A re-run of the same key is not a duplicate: it replaces its own rows.
    A check before the work, with the earliest earlier key; `load_file`'s claim makes it exact."""
    fingerprint = load.fingerprint
    if not refuses_duplicates(load, allowed):
        return fingerprint
    load.warehouse.ensure_table(LOADED_FILES)
    loaded = load.warehouse.select(LOADED_FILES.schema, LOADED_FILES.name, ["loaded_at", "source_key"],
                                   {"fingerprint": fingerprint, "target_table": table})
    earlier = sorted(row for row in loaded if row[1] != load.key)
    if earlier:
        raise FileRefused("DUPLICATE", f"duplicate of {earlier[0][1]}: the same content (sha256 {fingerprint[:16]}) "
                                       f"was already loaded into {table}")
    return fingerprint


def content_steps(load: FileLoad, table: str, fingerprint: str, rows: int) -> list[Step]:
    """Record the file's fingerprint inside the load's transaction: it exists exactly if the rows do."""
    load.warehouse.ensure_table(LOADED_FILES)
    row = {"fingerprint": fingerprint, "target_table": table, "source_key": load.key, "rows_loaded": rows,
           "loaded_at": utcnow()}
    return load.warehouse.upsert_steps(LOADED_FILES, row, key=("source_key", "target_table"))


def load_file(load: FileLoad, batch: StagedBatch, table: str, fingerprint: str, allowed: bool,
              after: Sequence[Step] = ()) -> tuple[LoadResult, dict]:
    """`load_staged` with the file's content claim, fingerprint and `after` in the load's one transaction.

    The claim (`etl_assets.warehouse.audit.claim_steps`) is what makes a re-send exactly once: of two
    loads of the same bytes at the same time, both past `check_content`, one commits and the other's
    transaction fails on the claim; that one is DUPLICATE, not FAILED, and loaded nothing."""
    warehouse, claim, rows = load.warehouse, refuses_duplicates(load, allowed), batch.rows
    ensure_claims_table(warehouse)
    steps = [*claim_steps(warehouse, table, fingerprint, load.key, claim),
             *content_steps(load, table, fingerprint, rows), *after]
    try:
        return load_staged(warehouse, batch, steps)
    except Exception as error:
        holder = claimed_by(warehouse, table, fingerprint) if claim else None
        if holder is None or holder == load.key:
            raise
        raise FileRefused("DUPLICATE", f"duplicate of {holder}: the same content (sha256 {fingerprint[:16]}) was "
                                       f"loaded into {table} while this file was loading", rows_read=rows) from error


def check_business_keys(load: FileLoad, batch: StagedBatch, key_columns: Sequence[str], allowed: bool) -> None:
    """Refuse (DUPLICATE) a file holding business keys another file already loaded into the table:
    a re-send under a new name whose bytes differ (a new trailer, re-exported) is still caught."""
    if not key_columns or allowed or "duplicates" in load.overrides or not batch.files:
        return
    spec, warehouse = batch.spec, load.warehouse
    if not warehouse.has_table(spec.schema, spec.name):
        return
    keys = pa.concat_tables([pq.read_table(f, columns=list(key_columns)) for f in batch.files])
    values = set(zip(*(keys.column(c).to_pylist() for c in key_columns)))
    first = sorted({value[0] for value in values}, key=repr)
    loaded_from: dict[tuple, str] = {}  # each of the file's keys already loaded -> the first other file holding it
    for start in range(0, len(first), 500):  # rows matching the first key column, then the whole key compared
        for *key, source in warehouse.select(spec.schema, spec.name, [*key_columns, SOURCE_FILE],
                                             {key_columns[0]: first[start:start + 500]}):
            if tuple(key) in values and source != load.key:
                loaded_from[tuple(key)] = min(source, loaded_from.get(tuple(key), source))
    if loaded_from:
        key, source = min(loaded_from.items(), key=repr)
        shown = ", ".join(f"{c}={v}" for c, v in zip(key_columns, key))
        raise FileRefused("DUPLICATE", f"{len(loaded_from)} of its {len(values)} business keys were already loaded "
                                       f"from other files ({shown} from {source})", rows_read=batch.rows)


def check_guards(load: FileLoad, batch: StagedBatch, guards: Guards) -> None:
    """HELD: a replace that would leave fewer than `min_rows`, or drop more than `max_drop_percent` of the
    table's rows; the run tag files/override=guards applies it anyway."""
    if batch.mode != "replace" or "guards" in load.overrides:
        return
    spec = batch.spec
    table = f"{spec.schema}.{spec.name}"
    warehouse = load.warehouse
    current = warehouse.count_rows(spec.schema, spec.name) if warehouse.has_table(spec.schema, spec.name) else 0
    override = f"; to apply it, re-run with the run tag {OVERRIDE_TAG}=guards"
    if batch.rows < guards.min_rows:
        what = "no rows" if batch.rows == 0 else f"{batch.rows} rows, fewer than the minimum of {guards.min_rows}"
        raise FileRefused("HELD", f"held: the file has {what}; replacing {table} ({current} rows) with it "
                                  f"was not applied{override}", rows_read=batch.rows)
    if guards.max_drop_percent is not None and current:
        drop = 100.0 * (current - batch.rows) / current
        if drop > guards.max_drop_percent:
            raise FileRefused("HELD", f"held: replacing {table} would drop {drop:.0f}% of its rows ({current} -> "
                                      f"{batch.rows}), more than the {guards.max_drop_percent}% allowed{override}",
                              rows_read=batch.rows)


def load_staged(warehouse: Warehouse, batch: StagedBatch, after: Sequence[Step] = ()) -> tuple[LoadResult, dict]:
    """Load a staged batch and `after` in one transaction, then discard its files; returns the result
    and the metadata that shows the load in the UI (column schema, a preview of the first rows)."""
    shown = {"dagster/column_schema": table_schema(batch.spec), "preview": batch_preview(batch)}
    try:
        return warehouse.load(batch, after=after), shown
    finally:
        batch.discard()


def table_spec(schema: str, table: str, columns: dict[str, ColumnType], required=()) -> TableSpec:
    """A feed's table: no key (files are appended or replace the table), `required` columns NOT NULL."""
    return TableSpec(schema, table, None, None,
                     tuple(Column(name, type_, name not in required) for name, type_ in columns.items()))


def header_names(path: Path, key: str, encoding: str, delimiter: str, line_offset: int = 0
                 ) -> tuple[list[str], list[str], int]:
    """(header as written, as identifiers, lines it spans); refuses empty files and unsafe names."""
    try:
        header, header_lines = read_header(path, key, encoding, delimiter)
    except CsvFormatError as error:
        status = "ABORTED" if "empty" in error.detail else "FAILED"
        reason = "the file is empty" if "empty" in error.detail else error.detail
        raise FileRefused(status, reason, (error.line or 0) + line_offset or None, error.column) from None
    names = []
    for position, field_name in enumerate(header, start=1):
        try:
            names.append(identifier(field_name.strip()))
        except InvalidIdentifier as error:
            raise FileRefused("ABORTED", f"header field {field_name!r}: {error}", 1 + line_offset, position) from None
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise FileRefused("ABORTED", f"header mismatch: repeated column(s) {', '.join(repeated)}", 1 + line_offset)
    return header, names, header_lines


def header_mismatch(names: Sequence[str], expected: Sequence[str], extra_allowed: bool = False,
                    ordered: bool = False) -> str | None:
    """Why a header does not fit, naming the odd columns; None if it fits."""
    missing = [c for c in expected if c not in names]
    unexpected = [] if extra_allowed else [c for c in names if c not in expected]
    parts = []
    if missing:
        parts.append("missing column(s) " + ", ".join(missing))
    if unexpected:
        parts.append("unexpected column(s) " + ", ".join(unexpected))
    if not parts and ordered and list(names) != list(expected):
        first = next(i for i, (a, b) in enumerate(zip(names, expected)) if a != b)
        parts.append(f"column {first + 1} is {names[first]}, expected {expected[first]} (order {', '.join(expected)})")
    return "header mismatch: " + "; ".join(parts) if parts else None


def _fits(column: pd.Series, type_: ColumnType) -> bool:
    """Every value converts; inferred integers are also spelled as integers ('1.0' is a price, so float)."""
    if type_ is ColumnType.INTEGER:
        present = column[column != ""]
        if not present.str.strip().str.fullmatch(EXACT_INTEGER).all():
            return False
    return not convert_column(column, type_)[1].any()


def infer_types(path: Path, key: str, header: list[str], names: list[str], header_lines: int, encoding: str,
                delimiter: str, line_offset: int = 0) -> dict[str, ColumnType | None]:
    """Each column's narrowest type that every value in the file converts to exactly (the same
    conversion the load uses); None for a column with no values, so an empty or header-only file
    does not record every column as text."""
    remaining = {name: list(INFERRED_ORDER) for name in names}
    seen = set()
    try:
        for chunk in iter_csv_chunks(path, key, header, header_lines, encoding, delimiter):
            raw = chunk.batch.to_pandas(types_mapper={pa.string(): STRING_DTYPE}.get)
            raw.columns = names
            for name in names:
                column = raw[name]
                if not (column != "").any():
                    continue
                seen.add(name)
                remaining[name] = [t for t in remaining[name] if _fits(column, t)]
    except CsvFormatError as error:
        raise FileRefused("FAILED", error.detail, (error.line or 0) + line_offset or None, error.column) from None
    return {name: (remaining[name][0] if remaining[name] else ColumnType.STRING) if name in seen else None
            for name in names}


def stage_typed_csv(
    path: Path,
    key: str,
    spec: TableSpec,
    mode: str,
    delimiter: str = ",",
    encoding: str = "utf-8",
    expected_header: tuple[str, ...] | None = None,
    rows_per_file: int = ROWS_PER_FILE,
    extra_columns: bool = False,
    line_offset: int = 0,
) -> tuple[StagedBatch, int]:
    """Stage every record of `path` typed by `spec`, or refuse the whole file.

    The one validation path of every feed kind: header checked (naming the odd columns), each value
    converted to its column's type or refused with its line and column, required values checked.
    `extra_columns`: the file may hold columns the spec does not load (CSV datasets select some).
    `line_offset`: lines before the CSV header (an external feed's header record)."""
    header, names, header_lines = header_names(path, key, encoding, delimiter, line_offset)
    declared = [c.name for c in spec.columns]
    mismatch = header_mismatch(names, expected_header or declared, extra_columns, ordered=expected_header is not None)
    if mismatch:
        raise FileRefused("ABORTED", mismatch, 1 + line_offset)
    types = {c.name: c for c in spec.columns}
    writer = StagedBatchWriter(spec, key, mode=mode, rows_per_file=rows_per_file)
    rows = 0
    try:
        for chunk in iter_csv_chunks(path, key, header, header_lines, encoding, delimiter):
            raw = chunk.batch.to_pandas(types_mapper={pa.string(): STRING_DTYPE}.get)
            raw.columns = names
            lines = chunk.lines + line_offset
            typed = {}
            for position, name in enumerate(names, start=1):
                if name not in types:
                    continue
                column = types[name]
                typed[name], invalid = convert_column(raw[name], column.type)
                if invalid.any():
                    row = int(invalid.argmax())
                    raise FileRefused("FAILED", f"{name}: not a valid {column.type.value}: {raw[name].iat[row]!r}",
                                      int(lines[row]), position)
                if not column.nullable:
                    missing = (raw[name] == "").to_numpy(dtype=bool, na_value=True)
                    if missing.any():
                        row = int(missing.argmax())
                        raise FileRefused("FAILED", f"{name}: a value is required", int(lines[row]), position)
            frame = pd.DataFrame(typed, columns=[c for c in names if c in types])
            frame[SOURCE_PARTITION] = key
            frame[SOURCE_FILE] = key
            frame[SOURCE_LINE] = lines
            writer.write(pa.Table.from_pandas(frame, preserve_index=False))
            rows += len(frame)
    except CsvFormatError as error:
        writer.abort()
        raise FileRefused("FAILED", error.detail, (error.line or 0) + line_offset or None, error.column) from None
    except BaseException:
        writer.abort()
        raise
    return writer.close(), rows
