"""Streaming CSV reading that keeps track of where every record came from.

Arrow parses fast and in bounded memory but cannot say on which line a record
starts once quoted values hold newlines, and its errors do not name a line.
So records are read as text by Arrow, each record's physical line is computed
from the newlines inside its values (and the empty lines between records, which
Arrow skips), and when Arrow refuses a file the slow standard-library parser is
run once to say exactly where and why. Arrow is also lenient where a strict reader
refuses, so every byte it reads is first scanned for broken quoting (and for the
empty lines it skips), block by block in Arrow's own reader thread.

A file is a `Path` or any `ByteSource` (an object that opens a fresh binary stream,
such as a member of a zip archive: etl_assets/landing/archives.py).

Encodings. Salesforce's Data Export writes the encoding chosen when the export was
scheduled, so a file may be in any Python codec. UTF-8 (with or without a BOM) is
read as it is: Arrow validates it. Any other encoding is decoded block by block and
re-encoded as UTF-8 before the quoting scan and Arrow see it (a BOM dropped), so
both always see UTF-8, even from encodings that are not ASCII-compatible (UTF-16).
Line numbers stay physical; a byte sequence invalid in the encoding is refused
naming its line and column.

Which encoding to read a file with (`choose_encoding`):
- a configured encoding other than UTF-8 is used as it is, without a scan;
- configured UTF-8 (any spelling): the whole file is checked to be strict UTF-8,
  streamed block by block (a BOM is fine). Valid: UTF-8. Invalid and a fallback
  given: the fallback, with a note that says why (the file must be valid in the
  fallback too, else it is refused naming the line and column). Invalid and no
  fallback: refused, naming the first bad bytes and the setting to change.
The check reads the file once more, validated by Arrow block by block (0.12 s for
the benchmark's 460 MB file, whose read takes 1.9 s; reading its ISO-8859-1 copy
takes about 1.1x the UTF-8 read): so a wrong encoding is refused before anything
is loaded, not halfway through a file.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

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
# Blocks of the encoding check and of the error locators (not DEFAULT_BLOCK_SIZE, which tests shrink).
READ_BLOCK = 4 << 20


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


class ByteSource(Protocol):
    """Anything that can be opened as a binary stream, more than once (each `open` starts at byte 0)."""

    def open(self) -> BinaryIO: ...


@contextmanager
def open_binary(source: Path | ByteSource) -> Iterator[BinaryIO]:
    """A fresh binary stream of `source` (a path is opened "rb"), closed when the context ends."""
    stream = open(source, "rb") if isinstance(source, (str, os.PathLike)) else source.open()
    try:
        yield stream
    finally:
        stream.close()


@dataclass(frozen=True)
class EncodingChoice:
    """The encoding to read a file with, and why when it is not the configured one."""

    encoding: str
    note: str | None = None


def check_encoding(name: str) -> str:
    """The canonical Python codec name of `name` ('ISO-8859-1' -> 'iso8859-1'); ValueError if it is no text codec."""
    try:
        info = codecs.lookup(name)
    except (LookupError, TypeError):
        raise ValueError(f"unknown encoding {name!r}: give a Python codec name such as utf-8, iso-8859-1, "
                         "windows-1252, shift_jis or utf-16") from None
    if not info._is_text_encoding:
        raise ValueError(f"{name!r} is not a text encoding")
    return info.name


def choose_encoding(source: Path | ByteSource, name: str, configured: str = "utf-8",
                    fallback: str | None = None, setting_hint: str = "") -> EncodingChoice:
    """The encoding to read `source` with, by the rule in the module docstring.

    The encodings are returned as spelled by the caller (checked by `check_encoding`). `setting_hint`
    ends the message of a file refused for not being UTF-8: the caller's words for the setting to set."""
    check_encoding(configured)
    if fallback is not None:
        check_encoding(fallback)
    if not _is_utf8(configured):
        return EncodingChoice(configured)
    invalid = _first_invalid(source, "utf-8")
    if invalid is None:
        return EncodingChoice(configured)
    line, column, sequence = invalid
    if fallback is None:
        hint = f"; {setting_hint}" if setting_hint else ""
        raise CsvFormatError(name, line, f"bytes not valid UTF-8: {sequence!r}{hint}", column)
    why = f"not valid UTF-8 (line {line}, column {column}: {sequence!r})"
    also = _first_invalid(source, fallback)
    if also is not None:
        raise CsvFormatError(name, also[0], f"bytes not valid {fallback} either: {also[2]!r} ({why})", also[1])
    return EncodingChoice(fallback, f"{why}; read as {fallback}")


def read_header(source: Path | ByteSource, name: str, encoding: str = "utf-8", delimiter: str = ","
                ) -> tuple[list[str], int]:
    """The header's field names and how many physical lines it spans."""
    check_encoding(encoding)
    try:
        with open_binary(source) as raw:
            text = io.TextIOWrapper(raw, encoding=_with_bom(encoding), newline="")
            reader = csv.reader(text, delimiter=delimiter, strict=True)
            header = next(reader, None)
            lines = reader.line_num
            text.detach()
    except UnicodeDecodeError:
        raise _locate_error(source, name, encoding, delimiter) from None
    except csv.Error as error:
        raise CsvFormatError(name, 1, f"unreadable header: {error}") from None
    if header and header[0].startswith("\ufeff"):  # a BOM the codec keeps (utf-16-le, ...)
        header[0] = header[0][1:]
    if not header or header == [""]:
        raise CsvFormatError(name, 1, "the file is empty: no header line")
    return header, lines


def iter_csv_chunks(
    source: Path | ByteSource,
    name: str,
    header: list[str],
    header_lines: int,
    encoding: str = "utf-8",
    delimiter: str = ",",
    block_size: int = DEFAULT_BLOCK_SIZE,
    chunk_rows: int = CHUNK_ROWS,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[CsvChunk]:
    """Yield the records of `source` in chunks of text columns; empty values stay ''.

    The quoting (and the encoding) is checked as Arrow reads the file, so an error may be raised after
    the chunks before it were yielded: a caller that stores chunks must undo them on CsvFormatError (the
    loads are transactional), exactly as for a value that fails later validation."""
    check_encoding(encoding)
    read_options = pacsv.ReadOptions(column_names=header, skip_rows=header_lines, block_size=block_size,
                                     encoding="utf8")  # other encodings reach Arrow transcoded
    parse_options = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
    convert_options = pacsv.ConvertOptions(
        column_types={column: pa.string() for column in header},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
        null_values=[],
    )
    next_line = header_lines + 1
    failed = None  # Arrow's reason, when it refused the file
    # A Python file object, not the path: Arrow's own file sources read ahead
    # without bound (a 460 MB file held ~370 MB), a Python file keeps it to one block.
    with open_binary(source) as raw:
        scanned = _ScannedSource(raw, _QuotingScan(delimiter), encoding)
        try:
            reader = pacsv.open_csv(scanned, read_options, parse_options, convert_options)
            for chunk in _chunks(reader, next_line, chunk_rows, chunk_bytes, scanned.scan):
                if scanned.refused:
                    break
                yield chunk
            scanned.read_to_end()
        except (pa.ArrowInvalid, _QuotingRefused) as error:
            scanned.read_to_end()  # a quoting error anywhere in the file is the one reported, as Arrow's are vaguer
            failed = str(error)
    if scanned.scan.error is not None:
        offset, detail = scanned.scan.error
        line, column = _line_and_column(source, offset, encoding)
        raise CsvFormatError(name, line, detail, column)
    if failed is not None or scanned.invalid:
        raise _locate_error(source, name, encoding, delimiter, len(header), failed or "")


class _QuotingRefused(Exception):
    """Raised inside Arrow's read of the block that breaks the quoting rules, to stop its parse there."""


class _ScannedSource:
    """A binary file whose every byte is scanned (`_QuotingScan`) as Arrow reads it, before Arrow parses it.

    Arrow reads one block at a time from its own thread, so the scan of a block runs there, overlapping
    the transform of the chunk before; a quoting error stops the parse at the block that holds it.
    `read_to_end` takes the file over from Arrow (which may still hold a read-ahead in flight) and scans
    what it has not read, so a file's quoting is always checked to its end. A file not in UTF-8 is
    transcoded (`_Transcoded`) first; bytes invalid in its encoding stop the parse too.
    """

    def __init__(self, raw, scan: _QuotingScan, encoding: str = "utf-8"):
        self.scan = scan
        self._raw = raw if _is_utf8(encoding) else _Transcoded(raw, encoding)
        self._lock = threading.Lock()
        self._detached = False
        self._position = 0

    @property
    def invalid(self) -> bool:
        """Whether bytes not valid in the file's encoding were met (never for UTF-8: Arrow checks it)."""
        return isinstance(self._raw, _Transcoded) and self._raw.invalid

    @property
    def refused(self) -> bool:
        return self.scan.error is not None or self.invalid

    def read(self, size: int = -1) -> bytes:
        with self._lock:
            if self._detached:
                return b""
            block = self._raw.read(size)
            self._position += len(block)
            self.scan.feed(block)
        if self.refused:
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
        return self._position


class _Transcoded:
    """A binary stream's text in another encoding, re-encoded as UTF-8 as it is read (a leading BOM dropped).

    Decoded block by block with an incremental decoder, so a character split across blocks is kept whole
    and memory stays one block. Bytes invalid in the encoding set `invalid` and are read as U+FFFD from
    then on: the reader stops at once, but the quoting scan still reads the file to its end, and
    `_first_invalid` names the exact spot."""

    def __init__(self, raw, encoding: str):
        self._raw, self._decoder = raw, codecs.getincrementaldecoder(encoding)("strict")
        self._pending, self._started, self._ended = b"", False, False
        self.invalid = False

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def read(self, size: int = -1) -> bytes:
        while (size < 0 or len(self._pending) < size) and not self._ended:
            block = self._raw.read(max(size, READ_BLOCK))
            self._ended = not block
            self._pending += self._decode(block).encode("utf-8")
        if size < 0 or size >= len(self._pending):
            out, self._pending = self._pending, b""
        else:
            out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def _decode(self, block: bytes) -> str:
        state = self._decoder.getstate()
        try:
            text = self._decoder.decode(block, final=not block)
        except UnicodeDecodeError:
            self.invalid = True
            self._decoder.setstate(state)
            self._decoder.errors = "replace"
            text = self._decoder.decode(block, final=not block)
        if not self._started and text:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        return text


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


def _line_and_column(source: Path | ByteSource, offset: int, encoding: str) -> tuple[int, int]:
    """1-based physical line and character column of a byte offset into the scanned bytes: the file's own
    for UTF-8, its UTF-8 transcoding otherwise. Read streamed, keeping only the line that holds the offset."""
    line, text = 1, b""
    with open_binary(source) as raw:
        stream = raw if _is_utf8(encoding) else _Transcoded(raw, encoding)
        left = offset
        while left > 0 and (block := stream.read(min(left, READ_BLOCK))):
            left -= len(block)
            newlines = block.count(b"\n")
            if newlines:
                line += newlines
                text = block[block.rfind(b"\n") + 1:]
            else:
                text += block
    if line == 1 and text.startswith(_BOM):
        text = text[len(_BOM):]
    return line, len(text.decode("utf-8", errors="replace")) + 1


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
    source: Path | ByteSource, name: str, encoding: str, delimiter: str, expected: int | None = None,
    arrow_detail: str = "",
) -> CsvFormatError:
    """Re-read `source` with the strict standard parser to find the first bad spot."""
    invalid = _first_invalid(source, encoding)
    if invalid is not None:
        line, column, sequence = invalid
        return CsvFormatError(name, line, f"bytes not valid {encoding}: {sequence!r}", column)
    with open_binary(source) as raw:
        reader = csv.reader(io.TextIOWrapper(raw, encoding=_with_bom(encoding), newline=""),
                            delimiter=delimiter, strict=True)
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


class _Position:
    """Line and character column reached in decoded text (a BOM at the start takes no column)."""

    def __init__(self):
        self.line, self.column, self._started = 1, 1, False

    def advance(self, text: str) -> None:
        if not self._started and text:
            self._started = True
            text = text[1:] if text[0] == "\ufeff" else text
        newlines = text.count("\n")
        if newlines:
            self.line += newlines
            self.column = len(text) - text.rfind("\n")
        else:
            self.column += len(text)


def _first_invalid(source: Path | ByteSource, encoding: str) -> tuple[int, int, bytes] | None:
    """(line, column, bytes) of the first byte sequence not valid in `encoding`, or None: the file decoded
    strictly, streamed in READ_BLOCK blocks by an incremental decoder (UTF-8 is first checked by Arrow,
    three times faster, and only an invalid file is decoded to find where)."""
    if _is_utf8(encoding) and _valid_utf8(source):
        return None
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    position = _Position()
    with open_binary(source) as raw:
        while True:
            block = raw.read(READ_BLOCK)
            bad = _decode_until_invalid(decoder, block, not block, position)
            if bad is not None:
                return position.line, position.column, bad
            if not block:
                return None


def _valid_utf8(source: Path | ByteSource) -> bool:
    """Whether the file is strict UTF-8, by Arrow's validation of each block cut after its last whole
    character (the rest carried into the next block)."""
    carry = b""
    with open_binary(source) as raw:
        while block := raw.read(READ_BLOCK):
            block = carry + block if carry else block
            cut = _last_whole_character_end(block)
            if not _arrow_valid_utf8(block[:cut] if cut < len(block) else block):
                return False
            carry = block[cut:]
    return not carry or _arrow_valid_utf8(carry)


def _last_whole_character_end(block: bytes) -> int:
    """Where the block's last character starts if its bytes are not all there yet, else its length."""
    for back in range(1, min(4, len(block)) + 1):
        byte = block[-back]
        if byte & 0xC0 != 0x80:  # ASCII or a lead byte, not a continuation byte
            length = 1 if byte < 0x80 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(block) if length <= back else len(block) - back
    return len(block)


def _arrow_valid_utf8(data: bytes) -> bool:
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int32))
    try:
        pa.Array.from_buffers(pa.binary(), 1, [None, offsets, pa.py_buffer(data)]).cast(pa.string())
    except pa.ArrowInvalid:
        return False
    return True


def _decode_until_invalid(decoder, data: bytes, final: bool, position: _Position) -> bytes | None:
    """Decode `data`, advancing `position`; if it holds an invalid sequence, stop right before it and return it.

    A failing block is decoded again from the state before it, in ever smaller pieces down to single
    bytes: the exact spot then follows from the text decoded, whatever a codec's error offsets mean
    (some count from bytes it held back, some do not)."""
    state = decoder.getstate()
    try:
        position.advance(decoder.decode(data, final))
        return None
    except UnicodeDecodeError as error:
        if len(data) <= 1:
            return error.object[error.start:error.end]
        found = error.object[error.start:error.end]
    decoder.setstate(state)
    step = max(1, len(data) // 64)
    for start in range(0, len(data), step):
        bad = _decode_until_invalid(decoder, data[start:start + step], final and start + step >= len(data), position)
        if bad is not None:
            return bad
    return found


def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")


def _with_bom(encoding: str) -> str:
    return "utf-8-sig" if _is_utf8(encoding) else encoding
