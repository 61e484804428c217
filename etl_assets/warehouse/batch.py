"""Validated rows on their way into the warehouse.

Two ways in. A `StreamedBatch` holds no rows yet: the warehouse reads them from
its source inside the load's transaction, each chunk going into an open COPY
(PostgreSQL) or an Arrow stream (DuckDB) while a thread prepares the next, so no
good row is written to disk first and the first rows reach the warehouse at once.
A `StagedBatch` is spilled to Parquet by `StagedBatchWriter` first: what Redshift
needs (it COPYs the files from S3) and what file feeds and tests hand over.
Rejected rows travel in the same batch (as a small Parquet file) so good rows and
rejects land in one transaction.
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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from etl_assets.warehouse.prefetch import prefetch
from etl_assets.warehouse.spec import REJECTS_SCHEMA, SOURCE_FILE, TableSpec

# A staged part file is closed after this many bytes of Arrow data (about 1.3M rows of 33-column Task,
# 0.5M of 120 columns): sized in bytes, so what a reader of one part holds does not grow with the width.
BYTES_PER_FILE = 1 << 30
ROWS_PER_FILE = 2_000_000  # and after this many rows (a file feed's `rows_per_part`)
REJECTS_FILE = "rejects.parquet"
# Transformed chunks waiting for the warehouse while it stores the current one (each ~30-60 MB).
STREAM_QUEUE_CHUNKS = 1


MODES = ("merge", "append", "replace")


@dataclass
class StagedBatch:
    """Staged rows and how to load them: `merge` (SCD Type 1 by primary key), `append` (the
    rows of each source file replace that file's earlier rows, so a re-run adds nothing twice)
    or `replace` (the table's whole contents)."""

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

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass(frozen=True)
class StagedPartitions:
    """Several partitions of one asset, for one step of a multi-partition run (a backfill under the
    asset's BackfillPolicy): the IO manager stages and loads them one at a time, in `partitions`'
    order, each with its own transaction and audit row. `stage(partition)` stages one of them when
    its turn comes (the batch, and metadata for that partition's materialization), so a step holds
    one partition's staged files at a time, and a widened column a partition loads is in the table
    the next one is staged against."""

    partitions: Sequence[str]
    stage: Callable[[str], tuple[StagedBatch, dict]]


class RestartStream(Exception):
    """Raised while a StreamedBatch is read inside a load: what was read cannot be loaded as planned
    (an inferred column must widen, or a first load COPYed straight into its table found a repeated
    key). The load's transaction rolls back and `Warehouse.load` plans and reads the batch again."""


# The good rows of one chunk (columns by name, cast to the staged types) and its rejected rows.
Chunk = tuple[pa.Table, pa.Table]


@dataclass
class StreamedBatch(StagedBatch):
    """A batch whose rows are read from `source` while the warehouse loads them (see the module).

    `source(batch)` yields each chunk's good rows and rejects; it may change `spec` and `retyped`
    and raise RestartStream, and is called again from the start when a load restarts. The counts
    (`rows`, `rejected_rows`, `keys_repeat`, `max_bytes`) are known once `stream()` is exhausted,
    so a load plan decides on them with step results (`keys_repeat`, `rejected`), not up front.
    `on_failure(error)`: the domain's own failure for an error its source raised (a file that cannot
    be parsed), or None. `metadata()`: what the domain reports once the rows were read. `resources`
    holds what the source needs until the load ends (local copies of landed files)."""

    source: Callable[[StreamedBatch], Iterator[Chunk]] | None = None
    on_failure: Callable[[BaseException], BaseException | None] = lambda error: None
    metadata: Callable[[], dict] = dict
    resources: ExitStack = field(default_factory=ExitStack)
    head: pa.Table | None = None  # the first good rows, for the materialization's preview
    error: BaseException | None = None  # what the source raised, which the database only names in words

    def __post_init__(self) -> None:
        self.reject_files = [self.directory / REJECTS_FILE]

    def stream(self) -> Iterator[pa.RecordBatch]:
        """The good rows, chunk by chunk, the source running one chunk ahead in a thread; rejects go
        to the batch's rejects file. For `keys_repeat`, known when the stream ends, a 64-bit hash of
        each key is kept (8 bytes a row): the key columns themselves kept their chunks' buffers alive,
        ~160 bytes a row, and peak RSS grew from 0.65 GiB at 1M rows to 1.5 GiB at 5M. Two keys with
        the same hash count as repeated (about one file in a million at 5M rows): the load then takes
        the general path, which resolves repeats in SQL, so the table is the same."""
        self.rows = self.rejected_rows = 0
        self.max_bytes, self.source_files, self.head, self.keys_repeat, self.error = {}, set(), None, None, None
        schema, key = self.spec.arrow_schema(), self.spec.primary_key
        hashes = []
        rejects = None
        try:
            for rows, rejected in prefetch(self.source(self), depth=STREAM_QUEUE_CHUNKS, name="transform"):
                if rejected.num_rows:
                    if rejects is None:
                        rejects = pq.ParquetWriter(self.reject_files[0], REJECTS_SCHEMA)
                    rejects.write_table(conform(rejected, REJECTS_SCHEMA))
                    self.rejected_rows += rejected.num_rows
                if not rows.num_rows:
                    continue
                rows = conform(rows, schema)
                count_rows(self, rows)
                if self.head is None:  # a copy: a slice would keep the whole chunk's buffers
                    self.head = pa.Table.from_pylist(rows.slice(0, 5).to_pylist(), schema=schema)
                if key:  # a null key hashes as one value, so two of them repeat, as in SQL's GROUP BY
                    hashes.append(pd.util.hash_array(rows.column(key).to_numpy(zero_copy_only=False),
                                                     categorize=False))
                yield from rows.to_batches()
        except GeneratorExit:  # the load stopped reading (it failed, or a restart): not the source's error
            raise
        except BaseException as error:
            self.error = error
            raise
        finally:
            if rejects is not None:
                rejects.close()
        if key:
            hashed = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
            hashed.sort()
            self.keys_repeat = bool((hashed[1:] == hashed[:-1]).any())

    def discard(self) -> None:
        self.resources.close()
        super().discard()


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
