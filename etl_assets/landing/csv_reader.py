"""Streaming CSV reading that keeps track of where every record came from.

Arrow parses fast and in bounded memory but cannot say on which line a record
starts once quoted values hold newlines, and its errors do not name a line.
So records are read as text by Arrow, each record's physical line is computed
from the newlines inside its values (and the empty lines between records, which
Arrow skips), and when Arrow refuses a file the slow standard-library parser is
run once to say exactly where and why.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

# Arrow's reader holds several blocks at once: 4 MiB blocks keep it near 100 MB,
# 16 MiB near 400 MB. Blocks are grouped into chunks of about CHUNK_ROWS records so
# the per-chunk cost of pandas and Pandera stays small.
DEFAULT_BLOCK_SIZE = 4 << 20
CHUNK_ROWS = 50_000


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
) -> Iterator[CsvChunk]:
    """Yield the records of `path` in chunks of text columns; empty values stay ''."""
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
    quoting, blank_ends = _scan(path, delimiter)
    if quoting is not None:
        offset, detail = quoting
        line, column = _line_and_column(path, offset, encoding)
        raise CsvFormatError(name, line, detail, column)
    blank_lines = _lines_of(path, blank_ends)
    next_line = header_lines + 1
    try:
        # A Python file object, not the path: Arrow's own file sources read ahead
        # without bound (a 460 MB file held ~370 MB), a Python file keeps it to one block.
        with open(path, "rb") as source:
            reader = pacsv.open_csv(source, read_options, parse_options, convert_options)
            yield from _chunks(reader, next_line, chunk_rows, blank_lines)
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:
        raise _locate_error(path, name, encoding, delimiter, len(header), str(error)) from None


def _chunks(
    reader: pacsv.CSVStreamingReader, next_line: int, chunk_rows: int, blank_lines: np.ndarray | None = None
) -> Iterator[CsvChunk]:
    """Group batches into chunks, numbering records as if no empty line existed, then shifting.

    `blank_lines` are the sorted physical line numbers of the empty lines Arrow skipped.
    The k-th of them (0-based) sits just before the record whose counted line is
    blank - k, so a record is shifted by how many of those values are <= its counted line.
    """
    shift_at = None if blank_lines is None or not blank_lines.size else blank_lines - np.arange(blank_lines.size)
    batches, line_arrays, rows = [], [], 0
    for batch in reader:
        if batch.num_rows == 0:
            continue
        inner = _newlines_per_record(batch)
        lines = next_line + np.arange(batch.num_rows, dtype=np.int64)
        lines[1:] += np.cumsum(inner[:-1])
        next_line = int(lines[-1] + inner[-1] + 1)
        if shift_at is not None:
            lines += np.searchsorted(shift_at, lines, side="right")
        batches.append(batch)
        line_arrays.append(lines)
        rows += batch.num_rows
        if rows >= chunk_rows:
            yield _combine(batches, line_arrays)
            batches, line_arrays, rows = [], [], 0
    if batches:
        yield _combine(batches, line_arrays)


def _combine(batches: list[pa.RecordBatch], lines: list[np.ndarray]) -> CsvChunk:
    if len(batches) == 1:
        return CsvChunk(batches[0], lines[0])
    return CsvChunk(pa.Table.from_batches(batches).combine_chunks().to_batches()[0], np.concatenate(lines))


_QUOTE = 0x22
_LINE_ENDS = (0x0A, 0x0D)
_BOM = b"\xef\xbb\xbf"


def _scan(path: Path, delimiter: str = ",") -> tuple[tuple[int, str] | None, np.ndarray]:
    """(byte offset and reason of the first quote that breaks RFC 4180 quoting, or None;
    byte offsets of the line ends of empty lines outside quoted values).

    Arrow is lenient where a strict reader refuses: it keeps text after a closing
    quote (`"ab"cd` becomes `abcd`) and accepts a quote left open at the end of the
    file. Such files are refused instead of loaded as silently different values.

    Quotes alternate between opening (even count so far) and closing (odd) a quoted
    value; a doubled quote inside a value is a close immediately followed by a re-open.
    So, with numpy over each block's quote positions and no Python loop: an opening
    quote must start a field or follow a quote, and a closing quote must be followed
    by a delimiter, a line end, a quote or the end of the file.

    Arrow skips empty lines without a trace, so the same pass finds them for the line
    numbers: an empty line's LF follows an LF or an LF-CR, and is outside quotes when
    an even number of quotes precede it (an empty line inside a quoted value, as in a
    Salesforce long text, is part of the value).
    """
    boundaries = np.array([ord(delimiter), *_LINE_ENDS], dtype=np.uint8)
    quotes_seen, opened_at, base, before, carry = 0, 0, 0, 0x0A, b""
    tail, blank_ends = b"", []  # tail: the last two bytes before the current region
    scratch = np.empty(DEFAULT_BLOCK_SIZE // 2 + 1, dtype=bool)
    with open(path, "rb") as f:
        while True:
            block = f.read(DEFAULT_BLOCK_SIZE)
            buffer = carry + block
            at_end = not block
            # A closing quote's next byte must be known: keep the last byte for the next block.
            limit = len(buffer) if at_end else len(buffer) - 1
            data = np.frombuffer(buffer, np.uint8)
            positions = np.flatnonzero(data[:limit] == _QUOTE)
            if positions.size:
                closing = (np.arange(quotes_seen, quotes_seen + positions.size) % 2).astype(bool)
                previous = np.where(positions > 0, data[positions - 1], before)
                following = data[np.minimum(positions + 1, len(buffer) - 1)]
                last_in_file = at_end & (positions + 1 == len(buffer))
                opens_field = np.isin(previous, boundaries) | (previous == _QUOTE)
                if base == 0 and buffer.startswith(_BOM):
                    opens_field |= positions == len(_BOM)
                ends_value = np.isin(following, boundaries) | (following == _QUOTE) | last_in_file
                bad = np.flatnonzero(np.where(closing, ~ends_value, ~opens_field))
                if bad.size:
                    i = int(bad[0])
                    if closing[i]:
                        return (base + int(positions[i]) + 1, "text after the closing quote of a quoted value"), _NONE
                    return (base + int(positions[i]), (
                        "a quote inside an unquoted value (quote the whole value and double inner quotes)"
                    )), _NONE
                openers = positions[~closing & (previous != _QUOTE)]  # not the second quote of a pair
                if openers.size:
                    opened_at = base + int(openers[-1])
            ends = _empty_line_ends(data[:limit], buffer, limit, tail, scratch)
            if ends.size:
                outside = (quotes_seen + np.searchsorted(positions, ends)) % 2 == 0
                if outside.any():
                    blank_ends.append(base + ends[outside])
            quotes_seen += positions.size
            if limit:
                before = buffer[limit - 1]
                tail = (tail + buffer[max(0, limit - 2):limit])[-2:]
            carry, base = buffer[limit:], base + limit
            if at_end:
                break
    if quotes_seen % 2:
        return (opened_at, "a quoted value is never closed"), _NONE
    return None, np.sort(np.concatenate(blank_ends)) if blank_ends else _NONE


_NONE = np.zeros(0, dtype=np.int64)
_LF_LF, _LF_CR = 0x0A0A, 0x0D0A  # b"\n\n" and b"\n\r" read as little-endian 16-bit words


def _empty_line_ends(data: np.ndarray, buffer: bytes, limit: int, tail: bytes, scratch: np.ndarray) -> np.ndarray:
    """Positions p < limit (unsorted) of the LFs that end an empty line: after an LF, or an LF-CR.

    Byte pairs are compared as 16-bit words at even and odd offsets: about 1 ms per 4 MiB
    block, where `bytes.find(b"\n\n")` alone costs ~3 ms when the pair is absent. The CR
    pair is only looked for in blocks that hold a CR. Pairs that begin before the region
    (at most two bytes back) come from `tail`. The comparisons write into `scratch`, reused
    from block to block: a fresh 2 MiB array per comparison doubled the cost (page faults).
    """
    has_cr = buffer.find(b"\r", 0, limit) >= 0
    ends = []
    for offset in (0, 1):
        size = (limit - offset) // 2
        if size <= 0:
            continue
        words = data[offset:offset + 2 * size].view("<u2")
        hits = np.equal(words, _LF_LF, out=scratch[:size])
        if hits.any():
            ends.append(offset + 2 * np.flatnonzero(hits) + 1)
        if has_cr:
            after = offset + 2 * np.flatnonzero(np.equal(words, _LF_CR, out=scratch[:size])) + 2
            after = after[after < limit]
            ends.append(after[data[after] == 0x0A])
    edge, k = tail + buffer[:min(2, limit)], len(tail)
    if len(edge) > k and edge[k] == 0x0A and (edge[k - 1:k] == b"\n" or edge[k - 2:k] == b"\n\r"):
        ends.append(np.array([0]))
    if len(edge) > k + 1 and edge[k + 1] == 0x0A and edge[k - 1:k + 1] == b"\n\r":
        ends.append(np.array([1]))
    return np.concatenate(ends) if ends else _NONE


def _lines_of(path: Path, offsets: np.ndarray) -> np.ndarray:
    """1-based physical line numbers of the LFs at sorted byte `offsets` (a second pass, only when any)."""
    if not offsets.size:
        return offsets
    lines = np.empty(offsets.size, dtype=np.int64)
    base, newlines, done = 0, 0, 0
    with open(path, "rb") as f:
        while done < offsets.size and (block := f.read(DEFAULT_BLOCK_SIZE)):
            positions = np.flatnonzero(np.frombuffer(block, np.uint8) == 0x0A)
            upto = int(np.searchsorted(offsets, base + len(block)))
            lines[done:upto] = newlines + np.searchsorted(positions, offsets[done:upto] - base) + 1
            base, newlines, done = base + len(block), newlines + positions.size, upto
    return lines


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
    total = np.zeros(batch.num_rows, dtype=np.int64)
    for column in batch.columns:
        # Most columns hold no newline at all: a byte search of the value buffer (memchr speed)
        # rules them out before counting per value.
        values = column.buffers()[2]
        if values is None or memoryview(values).tobytes().find(b"\n") < 0:
            continue
        total += pc.count_substring(column, "\n").to_numpy(zero_copy_only=False)
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

