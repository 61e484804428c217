"""Validated rows on their way into the warehouse: the batch a domain hands over.

A batch is either staged, its rows spilled to Parquet by `StagedBatchWriter` (what
file feeds and totesys hand over), or not read yet: its `source` reads the rows
when the warehouse loads it. The warehouse, not the domain, decides how such rows
travel (rows.py): streamed into the load's own statements where the engine can,
or staged first. Rejected rows travel in the same batch (as a small Parquet file)
so good rows and rejects land in one transaction.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from etl_assets.warehouse.spec import REJECTS_SCHEMA, SOURCE_FILE, TableSpec, TextLimits

if TYPE_CHECKING:
    from etl_assets.warehouse.steps import PlanStep

# A staged part file is closed after this many bytes of Arrow data (about 1.3M rows of 33-column Task,
# 0.5M of 120 columns): sized in bytes, so what a reader of one part holds does not grow with the width.
BYTES_PER_FILE = 1 << 30
ROWS_PER_FILE = 2_000_000  # and after this many rows (a file feed's `rows_per_part`)
REJECTS_FILE = "rejects.parquet"


MODES = ("merge", "append", "replace")


@dataclass
class StagedBatch:
    """Rows for one table, staged (`files`) or not read yet (`source`), and how to load them: `merge`
    (SCD Type 1 by primary key), `append` (the rows of each source file replace that file's earlier
    rows, so a re-run adds nothing twice) or `replace` (the table's whole contents). The counts of
    rows not read yet are known once they were (`rows`, `rejected_rows`, `keys_repeat`, `max_bytes`)."""

    spec: TableSpec
    partition: str | None
    directory: Path
    files: list[Path] = field(default_factory=list)
    reject_files: list[Path] = field(default_factory=list)
    rows: int = 0
    rejected_rows: int = 0
    max_bytes: dict[str, int] = field(default_factory=dict)  # widest UTF-8 value per text column
    mode: str = "merge"
    source_files: set[str] = field(default_factory=set)
    source_key: str | None = None  # what the audit trail names as the source (a folder, a file)
    retyped: dict = field(default_factory=dict)  # column -> (table's ColumnType, wider one): widened first
    # Set when the rows are the source table's whole contents on that date (a full backup): the merge
    # then marks the table's rows it lacks as deleted in source, if the spec tracks deletions.
    full_snapshot_date: date | None = None
    load_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # names the batch's staged copy (Redshift: S3)
    # Whether a primary key occurs in more than one staged row; None: not known (a batch not closed by
    # StagedBatchWriter), and the merge then takes its general path, which resolves repeats in SQL.
    keys_repeat: bool | None = None
    source: RowSource | None = None  # rows not read yet (no files): the warehouse reads them as it loads
    head: pa.Table | None = None  # the first good rows, once streamed, for the preview (else read from files)
    bookkeeping: Bookkeeping | None = None  # the domain's rows committed with the load (a loaded-files ledger)

    def discard(self) -> None:
        if self.source is not None:
            self.source.resources.close()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass(frozen=True)
class Bookkeeping:
    """Statements a domain runs at the end of a load's transaction, so what they record exists exactly
    when the rows do (the Salesforce loaded-files ledger); `on_new_table` run before them when the load
    creates its table: what was recorded of a table of that name before describes rows that are gone.
    What the rows' reading found is known to `steps` where the engine stages before it plans, else it
    must come as Deferred parameters (`Capabilities.runs_steps_in_order`)."""

    steps: Callable[[], Sequence[PlanStep]]  # made when the load is planned: after staging, where it comes first
    on_new_table: tuple[PlanStep, ...] = ()

    def for_table(self, existing: bool) -> list[PlanStep]:
        """The steps of a load into a table that exists (`existing`) or that the load creates."""
        return [*(() if existing else self.on_new_table), *self.steps()]


@dataclass(frozen=True)
class AlreadyLoaded:
    """A partition a domain found loaded before, as its files are now: the IO manager loads nothing and
    touches no table; it audits the skip (SKIPPED, `reason`) and shows `metadata` on the materialization."""

    spec: TableSpec
    partition: str | None
    source_key: str
    reason: str
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StagedPartitions:
    """Several partitions of one asset, for one step of a multi-partition run (a backfill under the
    asset's BackfillPolicy): the IO manager stages and loads them one at a time, in `partitions`'
    order, each with its own transaction and audit row. `stage(partition)` stages one of them when
    its turn comes (the batch, and metadata for that partition's materialization), so a step holds
    one partition's staged files at a time, and a widened column a partition loads is in the table
    the next one is staged against."""

    partitions: Sequence[str]
    stage: Callable[[str], tuple[StagedBatch | AlreadyLoaded, dict]]


class ReadAgain(Exception):
    """Raised while a batch's source is read: what was read cannot be loaded as planned (an inferred
    column must widen, or rows written straight into a table found a repeated key). Whatever read it
    (the load's transaction, or staging) is undone, and the rows are read again from the start."""


# The good rows of one chunk (columns by name, cast to the staged types) and its rejected rows.
Chunk = tuple[pa.Table, pa.Table]


@dataclass
class RowSource:
    """A domain's rows, read on demand and from the start at every call of `read(batch, limits)`: each
    chunk's good rows and rejects, for `batch.spec`, values cut or refused to fit the target's text
    `limits`. `read` may change `batch.spec` and `batch.retyped` and raise ReadAgain.

    The domain's part after the rows were read: `on_failure(error)` is its own failure for an error its
    rows raised (a file it cannot parse), or None; `metadata()` what it reports once they were read.
    `resources` holds what reading needs until the rows are in (local copies of landed files)."""

    read: Callable[[StagedBatch, TextLimits], Iterator[Chunk]]
    on_failure: Callable[[BaseException], BaseException | None] = lambda error: None
    metadata: Callable[[], dict] = dict
    resources: ExitStack = field(default_factory=ExitStack)


class StagedBatchWriter:
    """Collects good rows and rejects of one table load as Parquet files."""

    def __init__(
        self,
        spec: TableSpec,
        partition: str | None,
        directory: Path | None = None,
        mode: str = "merge",
        rows_per_file: int = ROWS_PER_FILE,
        bytes_per_file: int = BYTES_PER_FILE,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if mode == "merge" and spec.primary_key is None:
            raise ValueError(f"{spec.name} has no primary key to merge by")
        self.schema = spec.arrow_schema()
        root = Path(directory) if directory else None
        if root:
            root.mkdir(parents=True, exist_ok=True)
        self.batch = StagedBatch(spec, partition, Path(tempfile.mkdtemp(prefix=f"{spec.name}_", dir=root)), mode=mode)
        self._rows = self._rejects = None
        self._rows_in_file = self._bytes_in_file = 0
        self._rows_per_file, self._bytes_per_file = rows_per_file, bytes_per_file

    def write(self, table: pa.Table) -> None:
        """Append rows; columns are matched by name and cast to the staged types."""
        if table.num_rows == 0:
            return
        table = conform(table, self.schema)
        while table.num_rows:
            if self._rows is not None and (self._rows_in_file >= self._rows_per_file
                                           or self._bytes_in_file >= self._bytes_per_file):
                self._close_rows()
            room = self._rows_per_file - (self._rows_in_file if self._rows is not None else 0)
            self._write_rows(table.slice(0, room))
            table = table.slice(room)

    def _write_rows(self, table: pa.Table) -> None:
        """Append to the current part, starting a new part file when there is none."""
        if self._rows is None:
            path = self.batch.directory / f"part-{len(self.batch.files):05d}.parquet"
            self._rows = pq.ParquetWriter(path, self.schema, compression="snappy")
            self.batch.files.append(path)
            self._rows_in_file = self._bytes_in_file = 0
        self._rows.write_table(table)
        self._rows_in_file += table.num_rows
        self._bytes_in_file += table.nbytes
        count_rows(self.batch, table)

    def reject(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self._rejects is None:
            path = self.batch.directory / REJECTS_FILE
            self._rejects = pq.ParquetWriter(path, REJECTS_SCHEMA)
            if path not in self.batch.reject_files:
                self.batch.reject_files.append(path)
        self._rejects.write_table(conform(table, REJECTS_SCHEMA))
        self.batch.rejected_rows += table.num_rows

    def _close_rows(self) -> None:
        if self._rows is not None:
            self._rows.close()
            self._rows = None

    def close(self) -> StagedBatch:
        self._close_rows()
        if self._rejects is not None:
            self._rejects.close()
        if self.batch.mode == "merge":
            self.batch.keys_repeat = keys_repeat(self.batch)
        return self.batch

    def abort(self) -> None:
        self.close()
        self.batch.discard()


def count_rows(batch: StagedBatch, table: pa.Table) -> None:
    """Add `table`'s rows to what the batch knows of its rows: count, source files, widest text."""
    batch.rows += table.num_rows
    batch.source_files.update(pc.unique(table.column(SOURCE_FILE)).drop_null().to_pylist())
    for name, column in zip(table.column_names, table.columns):
        if pa.types.is_string(column.type):
            widest = pc.max(pc.binary_length(column)).as_py() or 0
            batch.max_bytes[name] = max(batch.max_bytes.get(name, 0), widest)


def keys_repeat(batch: StagedBatch) -> bool:
    """Whether a primary key occurs twice among the staged rows: the key column alone read back
    (~20 MB for 1M Salesforce Ids, freed before the load) and one Arrow hash pass, ~0.25 s CPU."""
    if not batch.files:
        return False
    key = batch.spec.primary_key
    keys = pa.chunked_array([pq.read_table(f, columns=[key]).column(key) for f in batch.files])
    return len(pc.unique(keys)) < len(keys)  # a null key counts once, as a value


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns: missing ones null, types cast."""
    columns = []
    for target in schema:
        if target.name in table.column_names:
            column = table.column(target.name)
            if column.type != target.type:
                # Timestamps are truncated to microseconds, the precision every target keeps.
                column = column.cast(target.type, safe=not pa.types.is_timestamp(target.type))
            columns.append(column)
        else:
            columns.append(pa.nulls(table.num_rows, target.type))
    return pa.Table.from_arrays(columns, schema=schema)
