"""Read every CSV of one object in one differential folder into a batch for the warehouse.

Headers are read first so the layout (catalog columns plus any drift columns) is
fixed before the first row is read; then each file streams through the transform
chunk by chunk, so memory does not grow with file size. `stream_object` hands the
warehouse a batch whose rows are read when it loads them (streamed into the load,
or staged to Parquet first, as the warehouse decides); `stage_object` has them
staged at once (tests, benchmarks).
"""

from __future__ import annotations

import csv
import gc
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa

from etl_assets.landing.column_policies import Action, apply_policies
from etl_assets.landing.csv_reader import (
    DEFAULT_BLOCK_SIZE,
    ByteSource,
    CsvChunk,
    iter_csv_chunks,
    open_binary,
    read_header,
)
from etl_assets.salesforce.catalog import VERSION_FALLBACK, SalesforceObject
from etl_assets.salesforce.transform import (
    NO_TEXT_LIMITS,
    ColumnWidening,
    HeaderPlan,
    plan_header,
    transform_chunk,
    widest,
)
from etl_assets.warehouse.batch import Chunk, ReadAgain, RowSource, StagedBatch
from etl_assets.warehouse.prefetch import prefetch
from etl_assets.warehouse.rows import stage
from etl_assets.warehouse.spec import ColumnType, TextLimits, column_name, identifier

# pandas' `.str` accessor and Pandera's `.pandera` accessor each form a reference cycle with their
# frame, so every chunk's frames (and the Arrow buffers under them) wait for a full garbage
# collection, which a process holding Dagster's heap rarely runs: RSS grew with file size (1.48 GB
# staging 5M rows against 0.9 GB for 1M). A full collection every few chunks bounds it; one per
# chunk would cost ~20% of staging time. The first collection of a load also freezes what survives it
# (gc.freeze: Dagster's and the code location's ~400k objects), so the later ones scan only what the load
# made: a full collection in a step process took 0.2-0.3 s, 18 of them per 1M rows on the transform's
# thread; after the freeze they take milliseconds. The load unfreezes the heap when it ends.
GC_EVERY_CHUNKS = 4
# The CSV reader's chunks are sized to about this many bytes of file (its `chunk_rows` from the bytes per
# record of the file's head): ~13k rows of 33-column Task, ~4k of 120 columns, so the transform's frames,
# the queued chunks and the COPY batch hold about as many bytes whatever the width of a row. Streamed,
# the reader, the transform and the COPY hold theirs at the same time (staged, the COPY came after): at
# 32 MiB a 1M-row load peaked at 1.4 GiB (33 columns) and 2.0 GiB (120 columns).
CHUNK_BYTES = 8 << 20
SAMPLE_BYTES = 1 << 20
# The reader's Arrow blocks are half a chunk (4 MiB, Arrow's DEFAULT_BLOCK_SIZE), at least this: a chunk is
# whole blocks, so smaller chunks (tests shrink CHUNK_BYTES) need smaller blocks.
MIN_BLOCK_BYTES = 64 << 10


@dataclass
class StageReport:
    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_rejected: int = 0
    values_truncated: int = 0
    truncated_samples: list[dict] = field(default_factory=list)  # file, line, column, bytes of the first few
    renamed_columns: dict[str, str] = field(default_factory=dict)  # header field -> normalized column
    widened_columns: dict[str, str] = field(default_factory=dict)  # inferred column -> "old -> new: why"
    drift_columns: tuple[str, ...] = ()
    reject_samples: list[dict] = field(default_factory=list)
    empty_as_false: int = 0  # empty checkbox values read as false (recorded in each row's _load_changes)
    version_column: str | None = None  # the column "newest wins" compared, when not the catalog's
    version_notes: dict[str, str] = field(default_factory=dict)  # file -> why its version column differs

    @property
    def rows_valid(self) -> int:
        return self.rows_read - self.rows_rejected


    def reset(self) -> None:
        """Before the rows are read (again, after ReadAgain): what reading finds."""
        self.rows_read = self.rows_rejected = self.values_truncated = self.empty_as_false = 0
        self.truncated_samples, self.reject_samples = [], []


@dataclass(frozen=True)
class SourceFile:
    """A landed file: its key (recorded as lineage), where its bytes are now (a local path, or a
    stream such as a zip member), and the encoding it is read in."""

    key: str
    path: Path | ByteSource
    encoding: str = "utf-8"


class _Widenings:
    """Inferred columns typed wider than the catalog says: those the table already holds wider, and
    those a value widened while staging (`widen`), with why, for the report and the batch."""

    def __init__(self, obj: SalesforceObject, table_types: dict[str, ColumnType] | None):
        self.obj, self.table_types = obj, table_types or {}
        self.types = {c.name: widest(self.table_types[c.name], c.type) for c in obj.columns
                      if not c.strict and self.table_types.get(c.name) not in (None, c.type)}
        self.notes: dict[str, str] = {name: f"{obj.column(name).type.value} -> {t.value}: the table holds {t.value}"
                                      for name, t in self.types.items()}

    def typed(self) -> SalesforceObject:
        return self.obj.with_types(self.types) if self.types else self.obj

    def widen(self, widening: ColumnWidening) -> None:
        if self.types.get(widening.column) is widening.wider:
            raise widening  # cannot happen: a wider type holds what the narrower refused
        before = self.types.get(widening.column, self.obj.column(widening.column).type)
        self.types[widening.column] = widening.wider
        self.notes[widening.column] = (f"{before.value} -> {widening.wider.value}: {widening.file} line "
                                       f"{widening.line} holds {widening.value[:80]!r}")

    def retyped(self) -> dict:
        """Table columns that must change type first: (the table's type, the wider one)."""
        return {name: (self.table_types[name], t) for name, t in self.types.items()
                if self.table_types.get(name) not in (None, t)}


def stage_object(
    obj: SalesforceObject,
    files: Sequence[SourceFile],
    partition: str,
    limits: TextLimits = NO_TEXT_LIMITS,
    table_types: dict[str, ColumnType] | None = None,
    hash_key: bytes | None = None,
) -> tuple[StagedBatch, StageReport]:
    """`stream_object`'s batch with its rows read and staged to Parquet now, and the filled report.
    `limits` are the target warehouse's text limits (see transform_chunk)."""
    batch, report = stream_object(obj, files, partition, table_types, hash_key)
    try:
        stage(batch, limits)
    except BaseException:
        batch.discard()
        raise
    return batch, report


Plans = list[tuple[SourceFile, list[str], int, HeaderPlan]]


def _read_headers(obj: SalesforceObject, files: Sequence[SourceFile], report: StageReport):
    """Each file's header and plan, and the table they make: `(plans, spec)`; the report gets the
    drift and renamed columns, and the version column when a file lacks the catalog's."""
    plans: Plans = []
    for source in files:
        header, header_lines = read_header(source.path, source.key, source.encoding)
        kept = [f for f in header if obj.policies is None or obj.policies.policy(f).action is not Action.EXCLUDE]
        plans.append((source, header, header_lines, plan_header(obj, kept, source.key)))
    drift = tuple(dict.fromkeys(name for *_, plan in plans for name in plan.drift))
    report.drift_columns = drift
    sources = {name: field for *_, plan in reversed(plans) for field, name in plan.columns.items()}
    report.renamed_columns = {field: name for *_, plan in plans for field, name in plan.renamed.items()}
    spec = obj.table_spec(drift, sources)
    version = _common_version(obj, plans)
    report.version_notes = {source.key: plan.version_note for source, *_, plan in plans if plan.version_note}
    if version != obj.version_column:
        report.version_column = version
        spec = replace(spec, version_column=identifier(version) if version else None,
                       track_deletions=version is not None)
    return plans, spec


def _common_version(obj: SalesforceObject, plans: Plans) -> str | None:
    """The version column every file of the batch has: the catalog's, else the first fallback that
    all of them hold and the catalog types as a datetime (Data Loader extracts of chosen fields may
    lack SystemModstamp), else none (the later folder, file and line wins)."""
    order = [name for name in dict.fromkeys((obj.version_column, *VERSION_FALLBACK)) if name]
    names = [column_name(name) for name in order]  # a plan names its version column as a table column
    ranks = [names.index(plan.version_column) if plan.version_column in names else len(order)
             for *_, plan in plans]
    weakest = max(ranks, default=0)
    if weakest == len(order):
        return None
    version = order[weakest]
    column = obj.column(column_name(version))
    if version == obj.version_column or (column is not None and column.type is ColumnType.DATETIME):
        return version
    return None


def chunk_rows_for(path: Path | ByteSource, encoding: str = "utf-8") -> int:
    """Rows per CSV chunk for about CHUNK_BYTES of this file, from the bytes per record of its head
    (records, not lines: quoted values hold newlines)."""
    with open_binary(path) as f:
        head = f.read(SAMPLE_BYTES)
    lines = head.decode(encoding, errors="replace").splitlines(keepends=True)[:-1]  # the last may be cut
    try:
        records = sum(1 for _ in csv.reader(lines)) - 1  # less the header
    except csv.Error:  # e.g. a field over csv's size limit: count lines (the reader names the real error)
        records = len(lines) - 1
    per_record = sum(len(line) for line in lines) / max(records, 1)
    return int(min(max(CHUNK_BYTES / max(per_record, 1), 1_000), 200_000))


def _chunks(obj: SalesforceObject, plans: Plans, partition: str, limits: TextLimits,
            report: StageReport, hash_key: bytes | None) -> Iterator[Chunk]:
    """Each chunk's good rows (Arrow) and rejects, the report counting them. The object's column
    policies apply to each chunk as read, before anything else sees its values."""
    chunks, froze = 0, False
    try:
        for source, header, header_lines, plan in plans:
            policies = obj.policies.for_header(header) if obj.policies else {}
            # The next chunk is parsed in a thread while this one is transformed.
            chunks_read = prefetch(iter_csv_chunks(source.path, source.key, header, header_lines, source.encoding,
                                                   block_size=min(max(CHUNK_BYTES // 2, MIN_BLOCK_BYTES),
                                                                  DEFAULT_BLOCK_SIZE),
                                                   chunk_rows=chunk_rows_for(source.path, source.encoding)),
                                   name="csv-reader")
            for chunk in chunks_read:
                if policies:
                    chunk = CsvChunk(apply_policies(chunk.batch, policies, hash_key), chunk.lines)
                result = transform_chunk(obj, chunk, plan, partition, source.key, limits)
                report.rows_read += chunk.batch.num_rows
                report.rows_rejected += result.rejects.num_rows
                report.values_truncated += len(result.truncated)
                report.empty_as_false += result.empty_as_false
                report.truncated_samples += result.truncated[: max(0, 5 - len(report.truncated_samples))]
                if result.rejects.num_rows and len(report.reject_samples) < 5:
                    report.reject_samples += result.rejects.slice(0, 5 - len(report.reject_samples)).to_pylist()
                rows, rejects = result.table, result.rejects
                del result, chunk
                yield rows, rejects
                del rows, rejects
                chunks += 1
                if chunks % GC_EVERY_CHUNKS == 0:
                    gc.collect()
                    if not froze and not gc.get_freeze_count():
                        gc.freeze()  # what survived is the process's own heap: later collections skip it
                        froze = True
                    pa.default_memory_pool().release_unused()  # the allocator keeps freed pages otherwise
    finally:
        if froze:
            gc.unfreeze()


def stream_object(
    obj: SalesforceObject,
    files: Sequence[SourceFile],
    partition: str,
    table_types: dict[str, ColumnType] | None = None,
    hash_key: bytes | None = None,
) -> tuple[StagedBatch, StageReport]:
    """The object's files as a batch whose rows are read when the warehouse loads it, and the report
    that reading fills. The headers are read now (a bad header fails here). `table_types` are the
    table's current column types, which an inferred column never narrows; a value that does not fit an
    inferred type widens that column and the rows are read again (ReadAgain; rare: types were inferred
    from these exports), the batch saying which table columns must change type first (`retyped`)."""
    widenings = _Widenings(obj, table_types)
    report = StageReport(files=[f.key for f in files])

    def typed() -> tuple[SalesforceObject, Plans, object]:
        typed_obj = widenings.typed()
        return (typed_obj, *_read_headers(typed_obj, files, report))

    def read(batch: StagedBatch, limits: TextLimits) -> Iterator[Chunk]:
        typed_obj, plans, batch.spec = typed()
        report.reset()
        try:
            yield from _chunks(typed_obj, plans, partition, limits, report, hash_key)
        except ColumnWidening as widening:
            widenings.widen(widening)
            batch.spec, batch.retyped = typed()[2], widenings.retyped()
            raise ReadAgain(str(widening)) from None

    _, _, spec = typed()
    directory = Path(tempfile.mkdtemp(prefix=f"{spec.name}_"))  # its rejects, or its staged files
    batch = StagedBatch(spec, partition, directory, source=RowSource(read), retyped=widenings.retyped())
    report.widened_columns = widenings.notes
    return batch, report

