"""Arrow rows as PostgreSQL's binary COPY format, encoded one batch ahead while the server stores the last.

What a PostgreSQL session feeds its COPY FROM STDIN with: staged Parquet read back in batches
(`parquet_batches`), or a batch's rows as they stream; as one COPY (`CopyStream`), or as one
complete COPY per chunk to merge (`copy_payloads`).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from pgpq import ArrowToPostgresBinaryEncoder

from etl_assets.warehouse.prefetch import prefetch

# Staged Parquet is read back in batches of about this many bytes of Arrow data (50k rows of 33-column
# Task, 12k of 120 columns): sized in bytes, so what the encoder holds does not grow with the width.
COPY_BATCH_BYTES = 32 << 20
COPY_QUEUE_BATCHES = 1  # encoded batches waiting for the server (streamed, the source holds more besides)
COPY_READ_BYTES = 1 << 20


def parquet_batches(files: Sequence, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """Staged files read back as batches of about COPY_BATCH_BYTES, only `columns`."""
    for path in files:
        source = pq.ParquetFile(path)
        meta = source.metadata
        size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        rows = max(1_000, COPY_BATCH_BYTES * meta.num_rows // max(size, 1))
        yield from source.iter_batches(batch_size=rows, columns=list(columns))


def _binary_chunks(batches: Iterable[pa.RecordBatch], schema: pa.Schema, columns: Sequence[str]) -> Iterator[bytes]:
    """Arrow batches (staged Parquet read back, or a batch's rows as they stream) as one stream in
    PostgreSQL's binary COPY format, encoded by pgpq.

    Binary, not CSV: the server parsing typed CSV (timestamps, integers) was the slowest part of a
    load (7-9 s for 1M Task rows against 4.4 s binary); the staged Arrow types are the table's own
    (string TEXT, int16 SMALLINT, int64 BIGINT, float64 DOUBLE PRECISION, date32 DATE, and UTC
    timestamps, whose binary form is the same for TIMESTAMPTZ), so nothing is converted twice."""
    columns = list(columns)
    encoder = ArrowToPostgresBinaryEncoder(pa.schema([schema.field(c) for c in columns]))
    yield encoder.write_header()
    for batch in batches:
        yield encoder.write_batch(batch.select(columns))
    yield encoder.finish()


def copy_payloads(batches: Iterable[pa.RecordBatch], schema: pa.Schema, columns: Sequence[str],
                  group_bytes: int) -> Iterator[list[bytes]]:
    """Arrow batches as complete binary COPY payloads (header, rows, trailer) of about `group_bytes`
    of Arrow data each: one COPY per group, so each can be merged before the next is sent."""
    columns = list(columns)
    schema = pa.schema([schema.field(c) for c in columns])
    encoder, payload, size = None, [], 0
    for batch in batches:
        if encoder is None:
            encoder = ArrowToPostgresBinaryEncoder(schema)
            payload, size = [encoder.write_header()], 0
        payload.append(encoder.write_batch(batch.select(columns)))
        size += batch.nbytes
        if size >= group_bytes:
            payload.append(encoder.finish())
            yield payload
            encoder = None
    if encoder is not None:
        payload.append(encoder.finish())
        yield payload


class BytesStream(io.RawIOBase):
    """A readable stream over a list of byte strings, for one COPY."""

    def __init__(self, parts: Iterable[bytes]):
        super().__init__()
        self._parts = iter(parts)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._pending:
            part = next(self._parts, None)
            if part is None:
                return b""
            self._pending = memoryview(part)
        size = len(self._pending) if size is None or size < 0 else size
        data, self._pending = self._pending[:size], self._pending[size:]
        return bytes(data)


class CopyStream(BytesStream):
    """A readable COPY stream, encoded from Arrow batches one batch ahead by a thread."""

    def __init__(self, batches: Iterable[pa.RecordBatch], schema: pa.Schema, columns: Sequence[str]):
        self._chunks = prefetch(_binary_chunks(batches, schema, columns), depth=COPY_QUEUE_BATCHES,
                                name="copy-encoder")
        super().__init__(self._chunks)

    def close(self) -> None:
        self._chunks.close()  # stops the encoding thread if the COPY ended early
        super().close()
