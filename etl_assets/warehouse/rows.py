"""How the warehouse reads a batch that is not read yet: streamed into its load, or staged first.

`RowStream` reads the rows inside the load's transaction, each chunk going into an open COPY
(PostgreSQL) or an Arrow stream (DuckDB) while a thread prepares the next, so no good row is
written to disk first and the first rows reach the warehouse at once. `stage` spills them to
Parquet before the load: what an engine that loads files needs (Redshift COPYs them from S3),
and what DuckDB merges into an existing table faster (`Capabilities`). `Warehouse.load` chooses.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from etl_assets.warehouse.batch import (
    REJECTS_FILE,
    ReadAgain,
    StagedBatch,
    StagedBatchWriter,
    conform,
    count_rows,
)
from etl_assets.warehouse.prefetch import prefetch
from etl_assets.warehouse.spec import REJECTS_SCHEMA, TextLimits

# Transformed chunks waiting for the warehouse while it stores the current one (each ~30-60 MB).
STREAM_QUEUE_CHUNKS = 1
# Staging at least this many chunks hands their memory back before the load: Arrow's allocator keeps
# freed pages (~170 MB after 1M Task rows), which the DuckDB warehouse's buffer pool would be added on
# top of. Not for small batches: a full collection costs ~0.2 s in a process holding the code location.
RELEASE_AFTER_CHUNKS = 4


class RowStream:
    """A batch's rows as its load reads them: `iter(stream)` reads the source from the start, one chunk
    ahead in a thread, and fills the batch's counts (`rows`, `rejected_rows`, `max_bytes`, `head`, and
    `keys_repeat` when it ends), so a load plan decides on them with step results (`keys_repeat`,
    `rejected`), not up front. Rejects go to the batch's rejects file. `error` is what the source
    raised, which the database only names in words."""

    def __init__(self, batch: StagedBatch, limits: TextLimits):
        self.batch, self.limits = batch, limits
        self.error: BaseException | None = None
        batch.reject_files = [batch.directory / REJECTS_FILE]

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        """The good rows, chunk by chunk. For `keys_repeat` a 64-bit hash of each key is kept (8 bytes a
        row): the key columns themselves kept their chunks' buffers alive, ~160 bytes a row, and peak RSS
        grew from 0.65 GiB at 1M rows to 1.5 GiB at 5M. Two keys with the same hash count as repeated
        (about one file in a million at 5M rows): the load then takes the general path, which resolves
        repeats in SQL, so the table is the same."""
        batch = self.batch
        batch.rows = batch.rejected_rows = 0
        batch.max_bytes, batch.source_files, batch.head, batch.keys_repeat, self.error = {}, set(), None, None, None
        schema, key = batch.spec.arrow_schema(), batch.spec.primary_key
        hashes = []
        rejects = None
        try:
            for rows, rejected in prefetch(batch.source.read(batch, self.limits), depth=STREAM_QUEUE_CHUNKS,
                                           name="transform"):
                if rejected.num_rows:
                    if rejects is None:
                        rejects = pq.ParquetWriter(batch.reject_files[0], REJECTS_SCHEMA)
                    rejects.write_table(conform(rejected, REJECTS_SCHEMA))
                    batch.rejected_rows += rejected.num_rows
                if not rows.num_rows:
                    continue
                rows = conform(rows, schema)
                count_rows(batch, rows)
                if batch.head is None:  # a copy: a slice would keep the whole chunk's buffers
                    batch.head = pa.Table.from_pylist(rows.slice(0, 5).to_pylist(), schema=schema)
                if key:  # a null key hashes as one value, so two of them repeat, as in SQL's GROUP BY
                    hashes.append(pd.util.hash_array(rows.column(key).to_numpy(zero_copy_only=False),
                                                     categorize=False))
                yield from rows.to_batches()
        except GeneratorExit:  # the load stopped reading (it failed, or reads again): not the source's error
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
            batch.keys_repeat = bool((hashed[1:] == hashed[:-1]).any())


def stage(batch: StagedBatch, limits: TextLimits) -> None:
    """Read the batch's source into Parquet files in its directory, then let the source go (its local
    copies are no longer needed): the batch is staged. A source that must read again (ReadAgain: a
    column widened) starts over with the spec it changed."""
    source = batch.source
    while True:
        writer, chunks = None, 0
        try:
            for rows, rejects in source.read(batch, limits):
                # Made at the first chunk: `read` sets the spec (from the files' headers) before it.
                writer = writer or StagedBatchWriter(batch.spec, batch.partition, batch.directory, mode=batch.mode)
                writer.write(rows)
                writer.reject(rejects)
                chunks += 1
        except ReadAgain:
            if writer is not None:
                writer.abort()
            continue
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        break
    writer = writer or StagedBatchWriter(batch.spec, batch.partition, batch.directory, mode=batch.mode)
    staged = writer.close()
    for name in ("files", "reject_files", "rows", "rejected_rows", "max_bytes", "source_files", "keys_repeat"):
        setattr(batch, name, getattr(staged, name))
    source.resources.close()
    batch.source = None
    if chunks >= RELEASE_AFTER_CHUNKS:
        gc.collect()
        pa.default_memory_pool().release_unused()
