"""Files in the encodings Salesforce's Data Export writes: read streamed with physical lines, or refused
saying where."""

import codecs
import csv
import io
from pathlib import Path

import pytest

from etl_assets.landing import csv_reader
from etl_assets.landing.csv_reader import (
    CsvFormatError,
    EncodingChoice,
    check_encoding,
    choose_encoding,
    iter_csv_chunks,
    read_header,
)

# (encoding to write with, encoding to read with, the names in the file)
ENCODINGS = [
    ("iso-8859-1", "iso-8859-1", ["José", "Muñoz", "Müller, Jürgen", "Zoë"]),
    ("windows-1252", "windows-1252", ["José", "Muñoz", "Müller, Jürgen", "Zoë – 5 €"]),  # – and € are cp1252-only
    ("shift_jis", "shift_jis", ["山田太郎", "佐藤花子", "鈴木, 一郎", "ｶﾀｶﾅ"]),
    ("euc-jp", "euc-jp", ["山田太郎", "佐藤花子", "鈴木, 一郎", "高橋"]),
    ("utf-16", "utf-16", ["José", "Muñoz", "Müller, Jürgen", "山田太郎"]),  # with its BOM
    ("utf-8-sig", "utf-8", ["José", "Muñoz", "Müller, Jürgen", "山田太郎"]),  # UTF-8 with a BOM, configured utf-8
]


def sample(names: list[str], newline: str = "\n") -> tuple[str, list[dict], list[int]]:
    """A file with a multi-line quoted value, an empty line, doubled quotes and an empty line inside a value."""
    first, second, third, fourth = names
    rows = [
        "Id,Name,Note",
        f'1,{first},"line one\nline two"',  # lines 2-3
        "",  # line 4: an empty line between records
        f"2,{second},plain",  # line 5
        f'3,"{third}","say ""hi"""',  # line 6
        f'4,{fourth},"a\n\nb"',  # lines 7-9: an empty line inside a value
    ]
    records = [
        {"Id": "1", "Name": first, "Note": "line one\nline two"},
        {"Id": "2", "Name": second, "Note": "plain"},
        {"Id": "3", "Name": third, "Note": 'say "hi"'},
        {"Id": "4", "Name": fourth, "Note": "a\n\nb"},
    ]
    return newline.join(rows) + newline, records, [2, 5, 6, 7]


def read_all(source, name: str, encoding: str, **options):
    header, header_lines = read_header(source, name, encoding)
    records, lines = [], []
    for chunk in iter_csv_chunks(source, name, header, header_lines, encoding, **options):
        records += chunk.batch.to_pylist()
        lines += chunk.lines.tolist()
    return header, records, lines


class BytesSource:
    """A ByteSource that is not a path: its bytes in memory."""

    def __init__(self, data: bytes):
        self.data = data

    def open(self):
        return io.BytesIO(self.data)


@pytest.mark.parametrize("write_as, read_as, names", ENCODINGS, ids=[e[0] for e in ENCODINGS])
@pytest.mark.parametrize("as_source", [False, True], ids=["path", "byte_source"])
def test_each_encoding_reads_the_right_text_and_lines(tmp_path, write_as, read_as, names, as_source):
    text, records, lines = sample(names)
    data = text.encode(write_as)
    assert data != text.encode("utf-8")  # the bytes really are another encoding
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    source = BytesSource(data) if as_source else path
    header, got, got_lines = read_all(source, "f.csv", read_as)
    assert header == ["Id", "Name", "Note"]
    assert got == records
    assert got_lines == lines


@pytest.mark.parametrize("write_as, read_as, names", ENCODINGS, ids=[e[0] for e in ENCODINGS])
def test_a_quoting_error_names_its_line_and_character_column_in_every_encoding(tmp_path, write_as, read_as, names):
    text, _, _ = sample(names, newline="\r\n")
    bad = f'5,{names[3]},"ab"cd\r\n'  # text after the closing quote, on line 10
    path = tmp_path / "bad.csv"
    path.write_bytes((text + bad + "6,x,y\r\n").encode(write_as))
    with pytest.raises(CsvFormatError) as error:
        read_all(path, "bad.csv", read_as)
    assert (error.value.line, error.value.column) == (10, len(f'5,{names[3]},"ab"') + 1)
    assert error.value.detail == "text after the closing quote of a quoted value"


@pytest.mark.parametrize("encoding, good, bad, reported", [
    ("windows-1252", "Zoë".encode("cp1252"), b"\x81", b"\x81"),  # one of the five bytes cp1252 leaves undefined
    ("shift_jis", "山田".encode("shift_jis"), b"\x81\x7f", b"\x81"),  # a lead byte and no valid trail byte
    ("utf-16-le", "山田".encode("utf-16-le"), b"\x00\xd8", b"\x00\xd8"),  # a lone high surrogate
    ("utf-8", "Zoë".encode(), b"\xe9", b"\xe9"),  # the fast path: Arrow checks UTF-8
])
@pytest.mark.parametrize("before", [0, 5000], ids=["in_the_header_read", "while_streaming"])
def test_bytes_invalid_in_the_encoding_name_line_and_column(tmp_path, encoding, good, bad, reported, before):
    """Early (read_header's decode meets them) or late (the streaming transcoder, or Arrow for UTF-8)."""
    def encode(text: str) -> bytes:
        return text.encode(encoding)

    rows = [encode('Id,Name\n1,"multi\nline"\n\n' + "0,ok\n" * before), encode("2,"), good, bad,
            encode("x\n3,ok\n")]
    path = tmp_path / "invalid.csv"
    path.write_bytes(b"".join(rows))
    with pytest.raises(CsvFormatError) as error:
        read_all(path, "invalid.csv", encoding, block_size=4096)
    assert (error.value.line, error.value.column) == (5 + before, 3 + len(good.decode(encoding)))
    assert error.value.detail == f"bytes not valid {encoding}: {reported!r}"


def test_a_quoting_error_after_invalid_bytes_is_the_one_reported(tmp_path):
    """As for UTF-8: the scan reads the whole file, so a later quoting error wins over the encoding's."""
    data = "Id,Name\n".encode("shift_jis") + "1,ok\n".encode("shift_jis") * 5000 + b"2,\x81\x7f\n"
    data += "3,ok\n".encode("shift_jis") * 5000 + '4,"山田"x\n'.encode("shift_jis")
    path = tmp_path / "both.csv"
    path.write_bytes(data)
    with pytest.raises(CsvFormatError) as error:
        read_all(path, "both.csv", "shift_jis", block_size=4096)
    assert (error.value.line, error.value.column, error.value.detail) == (
        10003, 7, "text after the closing quote of a quoted value")


@pytest.mark.parametrize("encoding", ["shift_jis", "utf-16", "iso-8859-1"])
def test_transcoded_lines_match_the_csv_module_across_blocks(tmp_path, monkeypatch, encoding):
    """Multi-byte characters split wherever a block ends, Arrow blocks of 4 KiB: the same records and lines."""
    monkeypatch.setattr(csv_reader, "READ_BLOCK", 1001)
    name = "山田太郎" if encoding != "iso-8859-1" else "Jürgen Müller"
    rows = ["Id,Name,Note\n"]
    for i in range(3000):
        rows.append("\n" if i % 250 == 7 else "")
        rows.append(f'{i},{name},"{name}\n{i}"\n' if i % 3 == 0 else f"{i},{name} {i},x\n")
    path = tmp_path / "long.csv"
    path.write_bytes("".join(rows).encode(encoding))
    with open(path, encoding=encoding, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        expected, start = [], 2
        for record in reader:
            if record:
                expected.append((record, start))
            start = reader.line_num + 1
    _, records, lines = read_all(path, "long.csv", encoding, block_size=4096, chunk_rows=500)
    assert [([r["Id"], r["Name"], r["Note"]], line) for r, line in zip(records, lines)] == expected


def test_a_utf16_file_with_an_explicit_byte_order_keeps_no_bom(tmp_path):
    path = tmp_path / "le.csv"
    path.write_bytes(codecs.BOM_UTF16_LE + "Id,Name\n1,山田太郎\n".encode("utf-16-le"))
    header, records, lines = read_all(path, "le.csv", "utf-16-le")
    assert header == ["Id", "Name"]
    assert records == [{"Id": "1", "Name": "山田太郎"}]
    assert lines == [2]


# ---------------------------------------------------------------- choose_encoding


def test_valid_utf8_is_read_as_utf8_with_or_without_bom(tmp_path):
    for data in ["Id,Name\n1,José\n".encode(), "Id,Name\n1,José\n".encode("utf-8-sig")]:
        path = tmp_path / "u.csv"
        path.write_bytes(data)
        assert choose_encoding(path, "u.csv", "UTF8", fallback="windows-1252") == EncodingChoice("UTF8")


def test_latin1_falls_back_with_a_note_saying_why(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes("Id,Name\n1,ok\n2,José\n".encode("iso-8859-1"))
    choice = choose_encoding(path, "l.csv", "utf-8", fallback="windows-1252")
    assert choice.encoding == "windows-1252"
    assert choice.note == r"not valid UTF-8 (line 3, column 6: b'\xe9'); read as windows-1252"
    _, records, _ = read_all(path, "l.csv", choice.encoding)
    assert records[1]["Name"] == "José"


def test_latin1_without_a_fallback_is_refused_naming_the_setting(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes("Id,Name\n1,ok\n2,José\n".encode("iso-8859-1"))
    hint = "set encoding: iso-8859-1 for this feed in etl_assets.yaml"
    with pytest.raises(CsvFormatError) as error:
        choose_encoding(path, "l.csv", setting_hint=hint)
    assert (error.value.line, error.value.column) == (3, 6)
    assert str(error.value) == rf"l.csv, line 3, column 6: bytes not valid UTF-8: b'\xe9'; {hint}"


class CountingSource:
    """A ByteSource over a file that records the size of every read, to show the check streams."""

    def __init__(self, path: Path):
        self.path, self.reads = path, []

    def open(self):
        source = self

        class Counting(io.FileIO):
            def read(self, size=-1):
                source.reads.append(size)
                return super().read(size)

        return Counting(self.path, "r")


def test_an_invalid_byte_deep_in_a_big_file_is_found_by_a_streamed_check(tmp_path):
    """Past the first 4 MiB block, a 2-byte character split by the block end is no error; the bad byte is."""
    line = "1,José Müller,ok\n"
    lines = (csv_reader.READ_BLOCK // len(line.encode())) + 5000
    body = line * lines
    head = "Id,Name,Note\n"
    # Shift so that an "é" straddles the first block's end.
    pad = "x" * ((csv_reader.READ_BLOCK - len((head + "1,Jos").encode())) % len(line.encode()))
    data = (head + f"0,{pad},\n" + body).encode()
    data += b"9,Zo\xeb,bad\n" + (line * 10).encode()
    path = tmp_path / "big.csv"
    path.write_bytes(data)
    assert path.stat().st_size > csv_reader.READ_BLOCK
    source = CountingSource(path)
    with pytest.raises(CsvFormatError) as error:
        choose_encoding(source, "big.csv")
    assert (error.value.line, error.value.column) == (lines + 3, 5)
    assert error.value.detail == r"bytes not valid UTF-8: b'\xeb'"
    assert max(source.reads) <= csv_reader.READ_BLOCK and len(source.reads) >= 2


def test_a_file_invalid_in_the_fallback_too_is_refused_where_the_fallback_fails(tmp_path):
    path = tmp_path / "w.csv"
    path.write_bytes(b"Id,Name\n1,Jos\xe9\n2,ab\x81c\n")
    with pytest.raises(CsvFormatError) as error:
        choose_encoding(path, "w.csv", fallback="windows-1252")
    assert (error.value.line, error.value.column) == (3, 5)
    assert "not valid windows-1252 either: b'\\x81'" in error.value.detail
    assert "not valid UTF-8 (line 2, column 6" in error.value.detail


def test_a_configured_encoding_other_than_utf8_is_used_without_a_check(tmp_path):
    path = tmp_path / "s.csv"
    path.write_bytes(b"Id\n\xff\xff\xff\n")
    assert choose_encoding(path, "s.csv", "ISO-8859-1", fallback="utf-8") == EncodingChoice("ISO-8859-1")


def test_unknown_codec_names_are_refused_clearly(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b"Id\n1\n")
    assert check_encoding("ISO-8859-1") == "iso8859-1"
    assert check_encoding("windows-1252") == "cp1252"
    assert check_encoding("UTF8") == "utf-8"
    with pytest.raises(ValueError, match=r"unknown encoding 'latin-42'"):
        check_encoding("latin-42")
    with pytest.raises(ValueError, match="not a text encoding"):
        check_encoding("base64")
    with pytest.raises(ValueError, match="unknown encoding"):
        choose_encoding(path, "f.csv", "utf-8", fallback="cp-nope")
    with pytest.raises(ValueError, match="unknown encoding"):
        read_header(path, "f.csv", "klingon")
    with pytest.raises(ValueError, match="unknown encoding"):
        list(iter_csv_chunks(path, "f.csv", ["Id"], 1, "klingon"))


@pytest.mark.parametrize("seed", range(20))
def test_the_utf8_check_agrees_with_python_wherever_blocks_end(monkeypatch, seed):
    """Arrow validates UTF-8 block by block, a character split by a block end carried over: same verdict
    and the same first bad spot as Python's strict decoder, for blocks of any size."""
    import random

    rng = random.Random(seed)
    pieces = ["a", "é", "山", "😀", "\n", ","]
    bad = [b"\xe9", b"\xc3", b"\xe5\xb1", b"\xf0\x9f\x98", b"\xed\xa0\x80", b"\xc0\xaf", b"\xff", b"\x80"]
    for _ in range(100):
        monkeypatch.setattr(csv_reader, "READ_BLOCK", rng.choice([1, 2, 3, 4, 5, 7, 16]))
        data = "".join(rng.choice(pieces) for _ in range(rng.randrange(30))).encode()
        if rng.random() < 0.5:
            at = rng.randrange(len(data) + 1)
            data = data[:at] + rng.choice(bad) + data[at:]
        try:
            text, expected = data.decode("utf-8"), None
        except UnicodeDecodeError as error:
            before = data[:error.start].decode("utf-8")
            expected = (before.count("\n") + 1, len(before) - before.rfind("\n"), data[error.start:error.end])
        assert csv_reader._first_invalid(BytesSource(data), "utf-8") == expected, data
