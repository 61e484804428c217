"""Streaming CSV reading that keeps track of where every record came from.

Arrow parses fast and in bounded memory but cannot say on which line a record
starts once quoted values hold newlines, and its errors do not name a line.
So records are read as text by Arrow, each record's physical line is computed
from the newlines inside its values (and the empty lines between records, which
Arrow skips), and when Arrow refuses a file the slow standard-library parser is
run once to say exactly where and why. Arrow is also lenient where a strict reader
refuses, so every byte it reads is first scanned for broken quoting (and for the
empty lines it skips), block by block in Arrow's own reader thread.
"""

from __future__ import annotations

import codecs
import csv
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

# Arrow's reader holds several blocks at once: 4 MiB blocks keep it near 100 MB,
# 16 MiB near 400 MB. Blocks are grouped into chunks of about CHUNK_BYTES of values
# (at most CHUNK_ROWS records), so a chunk's memory downstream does not grow with the
# width of a row, and the per-chunk cost of pandas and Pandera stays small.
DEFAULT_BLOCK_SIZE = 4 << 20
CHUNK_ROWS = 50_000
CHUNK_BYTES = 32 << 20


class CsvFormatError(ValueError):
    """A file that cannot be parsed; the message names the file, line and column."""

    def __init__(self, file: str, line: int | None, detail: str, column: int | None = None):
        self.file, self.line, self.column, self.detail = file, line, column, detail
        where = file
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column}"
        super().__init__(f"{where}: {detail}")


@dataclass(frozen=True)
class CsvChunk:
    """Records as text columns named as in the header, with their first line numbers."""

    batch: pa.RecordBatch
    lines: np.ndarray


def read_header(path: Path, name: str, encoding: str = "utf-8", delimiter: str = ",") -> tuple[list[str], int]:
    """The header's field names and how many physical lines it spans."""
    try:
        with open(path, encoding=_with_bom(encoding), newline="") as f:
            reader = csv.reader(f, delimiter=delimiter, strict=True)
            header = next(reader, None)
            lines = reader.line_num
    except UnicodeDecodeError:
        raise _locate_error(path, name, encoding, delimiter) from None
    except csv.Error as error:
        raise CsvFormatError(name, 1, f"unreadable header: {error}") from None
    if not header or header == [""]:
        raise CsvFormatError(name, 1, "the file is empty: no header line")
    return header, lines


def iter_csv_chunks(
    path: Path,
    name: str,
    header: list[str],
    header_lines: int,
    encoding: str = "utf-8",
    delimiter: str = ",",
    block_size: int = DEFAULT_BLOCK_SIZE,
    chunk_rows: int = CHUNK_ROWS,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[CsvChunk]:
    """Yield the records of `path` in chunks of text columns; empty values stay ''.

    The quoting is checked as Arrow reads the file, so an error may be raised after the chunks
    before it were yielded: a caller that stores chunks must undo them on CsvFormatError (the
    loads are transactional), exactly as for a value that fails later validation."""
    read_options = pacsv.ReadOptions(
        column_names=header,
        skip_rows=header_lines,
        block_size=block_size,
        encoding=_arrow_encoding(encoding),
    )
    parse_options = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
    convert_options = pacsv.ConvertOptions(
        column_types={column: pa.string() for column in header},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
        null_values=[],
    )
    next_line = header_lines + 1
    # A Python file object, not the path: Arrow's own file sources read ahead
    # without bound (a 460 MB file held ~370 MB), a Python file keeps it to one block.
    with open(path, "rb") as raw:
        source = _ScannedSource(raw, _QuotingScan(delimiter))
        try:
            reader = pacsv.open_csv(source, read_options, parse_options, convert_options)
            for chunk in _chunks(reader, next_line, chunk_rows, chunk_bytes, source.scan):
                if source.scan.error is not None:
                    break
                yield chunk
            source.read_to_end()
        except (pa.ArrowInvalid, UnicodeDecodeError, _QuotingRefused) as error:
            source.read_to_end()  # a quoting error anywhere in the file is the one reported, as Arrow's are vaguer
            if source.scan.error is None:
                raise _locate_error(path, name, encoding, delimiter, len(header), str(error)) from None
        offset, detail = source.scan.error or (None, None)
        if offset is not None:
            line, column = _line_and_column(path, offset, encoding)
            raise CsvFormatError(name, line, detail, column)


class _QuotingRefused(Exception):
    """Raised inside Arrow's read of the block that breaks the quoting rules, to stop its parse there."""


class _ScannedSource:
    """A binary file whose every byte is scanned (`_QuotingScan`) as Arrow reads it, before Arrow parses it.

    Arrow reads one block at a time from its own thread, so the scan of a block runs there, overlapping
    the transform of the chunk before; a quoting error stops the parse at the block that holds it.
    `read_to_end` takes the file over from Arrow (which may still hold a read-ahead in flight) and scans
    what it has not read, so a file's quoting is always checked to its end.
    """

    def __init__(self, raw, scan: _QuotingScan):
        self.scan, self._raw = scan, raw
        self._lock = threading.Lock()
        self._detached = False

    def read(self, size: int = -1) -> bytes:
        with self._lock:
            if self._detached:
                return b""
            block = self._raw.read(size)
            self.scan.feed(block)
        if self.scan.error is not None:
            raise _QuotingRefused()
        return block

    def read_to_end(self) -> None:
        with self._lock:
            self._detached = True
            while block := self._raw.read(DEFAULT_BLOCK_SIZE):
                self.scan.feed(block)
                if self.scan.error is not None:
                    return
            self.scan.feed(b"")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def close(self) -> None:
        pass

    def tell(self) -> int:
        return self._raw.tell()


def _chunks(
    reader: pacsv.CSVStreamingReader, next_line: int, chunk_rows: int, chunk_bytes: int, scan: _QuotingScan
) -> Iterator[CsvChunk]:
    """Group batches into chunks of about `chunk_bytes` of values (or `chunk_rows` records, whichever
    comes first), numbering records as if no empty line existed, then shifting.

    The scan's `blank_lines` are the sorted physical line numbers of the empty lines Arrow skipped,
    found up to at least the end of the batch at hand (Arrow parses only bytes the scan has seen).
    The k-th of them (0-based) sits just before the record whose counted line is
    blank - k, so a record is shifted by how many of those values are <= its counted line.
    """
    shift_at, blank_version = None, 0
    batches, line_arrays, rows, size = [], [], 0, 0
    for batch in reader:
        if batch.num_rows == 0:
            continue
        if scan.blank_count() != blank_version:
            blank_version = scan.blank_count()
            blank_lines = scan.blank_lines()
            shift_at = blank_lines - np.arange(blank_lines.size)
        inner = _newlines_per_record(batch)
        lines = next_line + np.arange(batch.num_rows, dtype=np.int64)
        lines[1:] += np.cumsum(inner[:-1])
        next_line = int(lines[-1] + inner[-1] + 1)
        if shift_at is not None:
            lines += np.searchsorted(shift_at, lines, side="right")
        batches.append(batch)
        line_arrays.append(lines)
        rows += batch.num_rows
        size += batch.nbytes
        if rows >= chunk_rows or size >= chunk_bytes:
            yield _combine(batches, line_arrays)
            batches, line_arrays, rows, size = [], [], 0, 0
    if batches:
        yield _combine(batches, line_arrays)


def _combine(batches: list[pa.RecordBatch], lines: list[np.ndarray]) -> CsvChunk:
    if len(batches) == 1:
        return CsvChunk(batches[0], lines[0])
    return CsvChunk(pa.Table.from_batches(batches).combine_chunks().to_batches()[0], np.concatenate(lines))


_QUOTE = 0x22
_LF = 0x0A
_LINE_ENDS = (0x0A, 0x0D)
_BOM = b"\xef\xbb\xbf"


class _QuotingScan:
    """The strict quoting check and the empty-line finder, fed a file's bytes in order, in any pieces.

    Arrow is lenient where a strict reader refuses: it keeps text after a closing
    quote (`"ab"cd` becomes `abcd`) and accepts a quote left open at the end of the
    file. Such files are refused instead of loaded as silently different values.

    Quotes alternate between opening (even count so far) and closing (odd) a quoted
    value; a doubled quote inside a value is a close immediately followed by a re-open.
    So, with numpy over each block's quote positions and no Python loop: an opening
    quote must start a field or follow a quote, and a closing quote must be followed
    by a delimiter, a line end, a quote or the end of the file. The openers and closers
    of a block are the even and odd slices of its quote positions, so each is checked
    with one gather of its neighbouring bytes and one table lookup.

    Arrow skips empty lines without a trace, so the same pass finds them for the line
    numbers: an empty line's LF follows an LF or an LF-CR, and is outside quotes when
    an even number of quotes precede it (an empty line inside a quoted value, as in a
    Salesforce long text, is part of the value). Their physical line numbers come from
    the count of LFs before them.

    `error` is the byte offset and reason of the first quote that breaks the rules, once
    seen; `blank_lines()` the sorted line numbers of the empty lines found so far.
    """

    def __init__(self, delimiter: str = ","):
        self.error: tuple[int, str] | None = None
        self._fits = np.zeros(256, dtype=bool)  # the bytes a quote may follow (opening) or precede (closing)
        self._fits[[ord(delimiter), *_LINE_ENDS, _QUOTE]] = True
        self._quotes, self._opened_at, self._base, self._before = 0, 0, 0, _LF
        self._carry, self._tail, self._newlines = b"", b"", 0  # tail: the last two bytes before the carry
        self._blank: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._finished = False
        self._head = b""  # the file's first bytes: a BOM before the first field

    def feed(self, block: bytes) -> None:
        """Scan the next bytes of the file (b"" at its end), in pieces of at most DEFAULT_BLOCK_SIZE."""
        if self.error is not None or self._finished:
            return
        if len(self._head) < len(_BOM):
            self._head += block[:len(_BOM) - len(self._head)]
        if not block:
            self._scan(b"", at_end=True)
            self._finished = True
            if self.error is None and self._quotes % 2:
                self.error = (self._opened_at, "a quoted value is never closed")
            return
        step = DEFAULT_BLOCK_SIZE
        for start in range(0, len(block), step):
            self._scan(block[start:start + step] if len(block) > step else block, at_end=False)
            if self.error is not None:
                return

    def blank_lines(self) -> np.ndarray:
        with self._lock:
            blank = list(self._blank)
        return np.concatenate(blank) if blank else _NONE

    def blank_count(self) -> int:
        return len(self._blank)

    def _scan(self, block: bytes, at_end: bool) -> None:
        buffer = self._carry + block if self._carry else block
        # A closing quote's next byte must be known: keep the last byte for the next block.
        limit = len(buffer) if at_end else len(buffer) - 1
        data = np.frombuffer(buffer, np.uint8)
        region = data[:limit]
        positions = np.flatnonzero(region == _QUOTE)
        if positions.size:
            first_closes = self._quotes % 2
            openers, closers = positions[first_closes::2], positions[1 - first_closes::2]
            before = data[openers - 1]
            if openers.size and openers[0] == 0:
                before[0] = self._before
            if openers.size and self._base + openers[0] == len(_BOM) and self._head == _BOM:
                before[0] = _LF
            if at_end and closers.size and closers[-1] + 1 == len(buffer):
                after = data[closers[:-1] + 1]  # the last byte of the file may close a value
            else:
                after = data[closers + 1]
            bad_open, bad_close = ~self._fits[before], ~self._fits[after]
            if bad_open.any() or bad_close.any():
                opener = int(openers[bad_open.argmax()]) if bad_open.any() else len(buffer)
                closer = int(closers[bad_close.argmax()]) if bad_close.any() else len(buffer)
                if closer < opener:
                    self.error = (self._base + closer + 1, "text after the closing quote of a quoted value")
                else:
                    self.error = (self._base + opener, (
                        "a quote inside an unquoted value (quote the whole value and double inner quotes)"))
                return
            if openers.size:  # the last opener that is not the second quote of a pair
                if before[-1] != _QUOTE:
                    self._opened_at = self._base + int(openers[-1])
                else:
                    plain = np.flatnonzero(before != _QUOTE)
                    if plain.size:
                        self._opened_at = self._base + int(openers[plain[-1]])
        newlines = np.flatnonzero(region == _LF)
        ends = _empty_line_ends(newlines, region, buffer, self._tail)
        if ends.size:
            ends = ends[(self._quotes + np.searchsorted(positions, newlines[ends])) % 2 == 0]
        if ends.size:
            with self._lock:
                self._blank.append(self._newlines + ends + 1)
        self._newlines += newlines.size
        self._quotes += positions.size
        if limit:
            self._before = buffer[limit - 1]
            self._tail = (self._tail + buffer[max(0, limit - 2):limit])[-2:]
        self._carry, self._base = buffer[limit:], self._base + limit


_NONE = np.zeros(0, dtype=np.int64)
_CR = 0x0D


def _empty_line_ends(newlines: np.ndarray, region: np.ndarray, buffer: bytes, tail: bytes) -> np.ndarray:
    """Indexes into `newlines` (the region's LF positions) of the LFs that end an empty line: the
    LF right after another, or after an LF-CR. Found from the gaps between LFs (a few thousand per
    4 MiB block), not by comparing every byte pair; the one or two bytes before the region come
    from `tail`."""
    if not newlines.size:
        return _NONE
    gaps = np.diff(newlines)
    later = np.flatnonzero((gaps == 1) | ((gaps == 2) & (region[newlines[1:] - 1] == _CR))) + 1
    first, edge, k = int(newlines[0]), tail + buffer[:2], len(tail)
    if first == 0 and (edge[k - 1:k] == b"\n" or edge[k - 2:k] == b"\n\r"):
        return np.concatenate(([0], later))
    if first == 1 and edge[k - 1:k + 1] == b"\n\r":
        return np.concatenate(([0], later))
    return later


def _line_and_column(path: Path, offset: int, encoding: str) -> tuple[int, int]:
    """1-based physical line and character column of a byte offset."""
    with open(path, "rb") as f:
        head = f.read(offset)
    line_start = head.rfind(b"\n") + 1
    text = head[line_start:]
    if line_start == 0 and text.startswith(_BOM):
        text = text[len(_BOM):]
    return head.count(b"\n") + 1, len(text.decode(_with_bom(encoding), errors="replace")) + 1


def _newlines_per_record(batch: pa.RecordBatch) -> np.ndarray:
    """How many LFs each record's values hold: per column, the LF positions in its value buffer
    counted between consecutive value offsets (most columns hold none and cost one comparison)."""
    total = np.zeros(batch.num_rows, dtype=np.int64)
    for column in batch.columns:
        _, offsets, values = column.buffers()
        if values is None:
            continue
        newlines = np.flatnonzero(np.frombuffer(values, np.uint8) == _LF)
        if not newlines.size:
            continue
        bounds = np.frombuffer(offsets, np.int32)[column.offset:column.offset + len(column) + 1]
        total += np.diff(np.searchsorted(newlines, bounds))
    return total


def _locate_error(
    path: Path, name: str, encoding: str, delimiter: str, expected: int | None = None, arrow_detail: str = ""
) -> CsvFormatError:
    """Re-read `path` with the strict standard parser to find the first bad spot."""
    decoder_name = _with_bom(encoding)
    with open(path, "rb") as raw:
        for line_number, line in enumerate(raw, start=1):
            try:
                line.decode(decoder_name if line_number == 1 else encoding)
            except UnicodeDecodeError as error:
                return CsvFormatError(
                    name, line_number, f"bytes not valid {encoding}: {line[error.start:error.end]!r}", error.start + 1
                )
    with open(path, encoding=decoder_name, newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, strict=True)
        start = 1
        try:
            for record in reader:
                if expected is None:
                    expected = len(record)
                elif len(record) != expected and record != []:
                    return CsvFormatError(name, start, f"expected {expected} fields, found {len(record)}")
                start = reader.line_num + 1
        except csv.Error as error:
            return CsvFormatError(name, start, f"malformed CSV: {error}")
    return CsvFormatError(name, None, f"could not be parsed: {arrow_detail or 'unknown error'}")


def _with_bom(encoding: str) -> str:
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def _arrow_encoding(encoding: str) -> str:
    return "utf8" if codecs.lookup(encoding).name == "utf-8" else encoding

