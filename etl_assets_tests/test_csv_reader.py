"""The streaming CSV reader: quoted newlines, physical line numbers, and errors that say where."""

import csv
import random
from pathlib import Path

import pytest

from etl_assets.landing import csv_reader
from etl_assets.landing.csv_reader import CsvFormatError, iter_csv_chunks, read_header


def read_all(path: Path, block_size: int = 1 << 20):
    header, header_lines = read_header(path, path.name)
    records, lines = [], []
    for chunk in iter_csv_chunks(path, path.name, header, header_lines, block_size=block_size):
        records += chunk.batch.to_pylist()
        lines += chunk.lines.tolist()
    return header, records, lines


def write(tmp_path: Path, text: str | bytes, name: str = "f.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_quoted_newlines_commas_and_quotes_keep_their_line_numbers(tmp_path):
    path = write(tmp_path, 'Id,Text,N\na,"two\nlines",1\nb,"x, ""y""",2\nc,"three\nmore\nlines",3\nd,,4\n')
    header, records, lines = read_all(path)
    assert header == ["Id", "Text", "N"]
    assert [r["Text"] for r in records] == ["two\nlines", 'x, "y"', "three\nmore\nlines", ""]
    assert lines == [2, 4, 5, 8]


def test_line_numbers_stay_right_across_chunk_boundaries(tmp_path):
    rows = "".join(f'{i},"v{i}\nsecond line"\n' if i % 3 == 0 else f"{i},v{i}\n" for i in range(2000))
    path = write(tmp_path, "Id,Text\n" + rows)
    _, records, lines = read_all(path, block_size=4096)
    assert len(records) == 2000
    expected, line = [], 2
    for i in range(2000):
        expected.append(line)
        line += 2 if i % 3 == 0 else 1
    assert lines == expected


def test_crlf_and_bom_are_handled(tmp_path):
    path = write(tmp_path, b'\xef\xbb\xbfId,Text\r\na,"in\r\nside"\r\nb,plain\r\n')
    header, records, lines = read_all(path)
    assert header == ["Id", "Text"]
    assert [r["Id"] for r in records] == ["a", "b"]
    assert lines == [2, 4]


def test_header_only_file_has_no_records(tmp_path):
    _, records, _ = read_all(write(tmp_path, "Id,Text\n"))
    assert records == []


def test_zero_byte_file_is_refused(tmp_path):
    with pytest.raises(CsvFormatError, match=r"empty.csv, line 1: the file is empty"):
        read_header(write(tmp_path, b"", "empty.csv"), "empty.csv")


def test_unterminated_quote_names_the_line_where_the_record_starts(tmp_path):
    path = write(tmp_path, 'Id,Text\na,ok\nb,"never closed\nc,d\n', "open.csv")
    with pytest.raises(CsvFormatError) as error:
        read_all(path)
    assert error.value.line == 3
    assert "open.csv, line 3" in str(error.value)


def test_wrong_field_count_names_file_and_line(tmp_path):
    path = write(tmp_path, 'Id,Text\na,"multi\nline"\nb,x,extra\n', "wide.csv")
    with pytest.raises(CsvFormatError, match=r"wide.csv, line 4: expected 2 fields, found 3"):
        read_all(path)


def test_invalid_utf8_names_line_and_column(tmp_path):
    path = write(tmp_path, b"Id,Text\na,ok\nb,caf\xe9\n", "latin1.csv")
    with pytest.raises(CsvFormatError) as error:
        read_all(path)
    assert (error.value.line, error.value.column) == (3, 6)
    assert "not valid utf-8" in str(error.value)


@pytest.mark.parametrize("scan_block", [1, 2, 3, 5, 4 << 20])
@pytest.mark.parametrize(
    "text, lines",
    [
        ("Id,Text\n\na,1\nb,2\n", [3, 4]),  # right after the header
        ("Id,Text\na,1\n\nb,2\n\n\n\nc,3\n", [2, 4, 8]),  # between records, several in a row
        ("Id,Text\r\n\r\na,1\r\n\r\n\r\nb,2\r\n", [3, 6]),  # CRLF
        ("Id,Text\na,1\n\r\nb,2\r\n\nc,3\n", [2, 4, 6]),  # LF and CRLF mixed
        ("Id,Text\na,1\nb,2\n\n\n", [2, 3]),  # at the end
        ("Id,Text\na,1\nb,2\n\n", [2, 3]),
        ('Id,Text\na,"para1\n\npara2"\nb,2\n', [2, 5]),  # an empty line inside a quoted value is the value's
        ('Id,Text\n\na,"para1\r\n\r\n\r\npara2"\n\nb,"""\n\n"""\n\nc,3', [3, 8, 12]),
    ],
)
def test_empty_lines_between_records_keep_line_numbers_exact(tmp_path, monkeypatch, text, lines, scan_block):
    """Arrow skips empty lines; the byte scan finds them, in any block size, so the lines stay physical."""
    monkeypatch.setattr(csv_reader, "DEFAULT_BLOCK_SIZE", scan_block)
    _, records, got = read_all(write(tmp_path, text))
    assert got == lines
    assert [r["Id"] for r in records] == ["a", "b", "c"][: len(lines)]


def test_an_empty_line_after_many_records_shifts_exactly_the_later_ones(tmp_path):
    """Across Arrow blocks and chunks: each record moves by the empty lines before it, no more."""
    rows, expected, line = ["Id,Text\n"], [], 2
    for i in range(3000):
        if i % 700 == 699:
            rows.append("\n" * (i % 3 + 1))
            line += i % 3 + 1
        rows.append(f'{i},"a\n\nb"\n' if i % 5 == 0 else f"{i},x\n")
        expected.append(line)
        line += 3 if i % 5 == 0 else 1
    _, records, lines = read_all(write(tmp_path, "".join(rows)), block_size=4096)
    assert len(records) == 3000
    assert lines == expected


def _random_csv(rng: random.Random) -> str:
    pieces = ['abc', ',', '""', '\n', '\r\n', '\n\n', '\r\n\r\n', ' ', 'x y']
    def value():
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(4)))
        if rng.random() < 0.5 or any(c in text for c in ',"\r\n'):
            return '"' + text.replace('"', '""') + '"'
        return text
    out = ["Id,Text,N" + rng.choice(["\n", "\r\n"])]
    for i in range(rng.randrange(1, 30)):
        out.append(rng.choice(["", "", "\n", "\r\n", "\n\n", "\r\n\n\r\n"]))  # empty lines before the record
        out.append(f"r{i},{value()},{value()}" + rng.choice(["\n", "\r\n"]))
    out.append(rng.choice(["", "\n", "\r\n\r\n"]))
    text = "".join(out)
    return text.rstrip("\r\n") if rng.random() < 0.2 else text  # sometimes no final line end


def _csv_module_lines(path: Path) -> tuple[list[list[str]], list[int]]:
    """The standard parser's records and the physical line each starts on (it skips empty lines too)."""
    records, lines = [], []
    with open(path, newline="") as f:
        reader = csv.reader(f, strict=True)
        next(reader)
        start = reader.line_num + 1
        for record in reader:
            if record:
                records.append(record)
                lines.append(start)
            start = reader.line_num + 1
    return records, lines


@pytest.mark.parametrize("seed", range(200))
def test_line_numbers_match_the_csv_module_on_random_files_with_empty_lines(tmp_path, monkeypatch, seed):
    """Differential check: quoted empty lines, CRLF, empty lines anywhere, scan blocks of any size."""
    rng = random.Random(seed)
    monkeypatch.setattr(csv_reader, "DEFAULT_BLOCK_SIZE", rng.choice([1, 2, 3, 4, 7, 16, 64, 4 << 20]))
    path = write(tmp_path, _random_csv(rng))
    expected_records, expected_lines = _csv_module_lines(path)
    _, records, lines = read_all(path)
    assert [[r["Id"], r["Text"], r["N"]] for r in records] == expected_records
    assert lines == expected_lines


def _scan_in_pieces(data: bytes, cuts: list[int]):
    scan = csv_reader._QuotingScan(",")
    for start, end in zip([0, *cuts], [*cuts, len(data)]):
        scan.feed(data[start:end])
    scan.feed(b"")
    return scan.error, scan.blank_lines().tolist()


BOUNDARY_FILES = [
    b'Id,Text\r\n\r\na,"x\r\n\r\ny"\r\n\r\n\r\nb,"q ""z"" q"\r\n\n"c",""\r\n',  # CRLF, empty lines in and out of quotes
    b'\xef\xbb\xbf"Id","Text"\n"a",""""\n\n"b","\n\n"\n',  # BOM before a quoted header, doubled quotes
    b'Id,Text\na,"ab"cd\nb,2\n',  # text after a closing quote
    b'Id,Text\na,1\nb,5" x\n',  # a quote inside an unquoted value
    b'Id,Text\na,1\n\nb,"never closed\n\nc,3\n',  # a quote left open at the end
    b'Id,Text\na,"x"\n',  # the last byte of the file closes nothing more
    b'Id,Text\na,"x"',  # the last byte of the file closes a value
]


@pytest.mark.parametrize("data", BOUNDARY_FILES)
def test_the_scan_gives_the_same_result_wherever_a_block_ends(data):
    """A quote, an empty line's LF or a CR-LF split at every offset gives what one whole block gives."""
    whole = _scan_in_pieces(data, [])
    for cut in range(1, len(data)):
        assert _scan_in_pieces(data, [cut]) == whole, cut
    for first in range(1, len(data) - 1):
        assert _scan_in_pieces(data, [first, first + 1]) == whole, first  # a one-byte block in between


@pytest.mark.parametrize("arrow_block", [64, 97, 128, 1 << 20])
@pytest.mark.parametrize("scan_block", [1, 2, 3, 5, 4 << 20])
def test_errors_and_lines_are_the_same_for_any_arrow_and_scan_blocks(tmp_path, monkeypatch, arrow_block, scan_block):
    """Arrow's blocks (what the scan is fed) and the scan's own pieces end anywhere: same lines, same errors."""
    monkeypatch.setattr(csv_reader, "DEFAULT_BLOCK_SIZE", scan_block)
    rows = ["Id,Text\r\n"]
    for i in range(40):
        rows.append(f'r{i},"v\r\n\r\n{i}"\r\n' if i % 4 == 0 else f"r{i},v{i}\r\n")
        rows.append("\r\n" * (i % 3 == 0))
    path = write(tmp_path, "".join(rows))
    _, records, lines = read_all(path, block_size=arrow_block)
    assert lines == _csv_module_lines(path)[1]
    bad_line = "".join(rows[:-2]).count("\n") + 1
    for bad, column, detail in [('r39,"v"w\r\n', 8, "text after the closing quote"),
                                ('r39,v"w\r\n', 6, "a quote inside an unquoted value"),
                                ('r39,"w\r\n', 5, "a quoted value is never closed")]:
        path = write(tmp_path, "".join(rows[:-2]) + bad)
        with pytest.raises(CsvFormatError) as error:
            read_all(path, block_size=arrow_block)
        assert (error.value.line, error.value.column) == (bad_line, column)
        assert error.value.detail.startswith(detail)


def test_a_quoting_error_after_the_first_chunks_is_raised_with_its_line(tmp_path):
    """The scan runs as Arrow reads: chunks before a late error may be yielded, then it is raised."""
    rows = "".join(f"{i},v{i}\n" for i in range(20_000))
    path = write(tmp_path, "Id,Text\n" + rows + 'x,"ab"cd\n' + "y,1\n")
    header, header_lines = read_header(path, path.name)
    seen = 0
    with pytest.raises(CsvFormatError) as error:
        for chunk in iter_csv_chunks(path, path.name, header, header_lines, block_size=4096, chunk_rows=1000):
            seen += chunk.batch.num_rows
    assert (error.value.line, error.value.column) == (20_002, 7)
    assert error.value.detail == "text after the closing quote of a quoted value"
    assert 0 < seen < 20_000


@pytest.mark.parametrize("bad", ["a,b,c\n", b"caf\xe9,1\n"])
def test_a_quoting_error_later_in_the_file_wins_over_an_earlier_arrow_error(tmp_path, bad):
    """As when the scan ran first: a field-count or encoding error before it does not hide it."""
    head = "Id,Text\n" + "".join(f"{i},v\n" for i in range(3000))  # past what read_header decodes
    tail = "".join(f"{i},v\n" for i in range(5000)) + 'z,"ab"cd\n'
    path = write(tmp_path, head.encode() + (bad if isinstance(bad, bytes) else bad.encode()) + tail.encode())
    with pytest.raises(CsvFormatError) as error:
        read_all(path, block_size=4096)
    assert (error.value.line, error.value.detail) == (8003, "text after the closing quote of a quoted value")


def test_chunks_are_cut_by_bytes_so_wide_rows_make_fewer_rows_per_chunk(tmp_path):
    narrow = "".join(f'{i},"{"n" * 10}"\n' for i in range(3000))
    value = "w\n" * 200
    wide = "".join(f'{i},"{value}"\n' for i in range(3000))
    for body, most in [(narrow, 3000), (wide, 200)]:
        path = write(tmp_path, "Id,Text\n" + body)
        header, header_lines = read_header(path, path.name)
        chunks = list(iter_csv_chunks(path, path.name, header, header_lines, block_size=16 << 10, chunk_bytes=64 << 10))
        assert sum(c.batch.num_rows for c in chunks) == 3000
        assert max(c.batch.num_rows for c in chunks) <= most
        assert all(c.batch.nbytes < (64 << 10) + (17 << 10) * 2 for c in chunks)  # a budget, plus at most a block
    lines = [line for c in chunks for line in c.lines.tolist()]
    assert lines == [2 + 201 * i for i in range(3000)]
