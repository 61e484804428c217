"""The streaming CSV reader: quoted newlines, physical line numbers, and errors that say where."""

from pathlib import Path

import pytest

from etl_assets.lib.csv_reader import CsvFormatError, iter_csv_chunks, read_header


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
