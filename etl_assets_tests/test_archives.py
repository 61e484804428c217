"""Zip archives as Data Export delivers them: listed and read member by member, locally and on S3 (moto over
HTTP), streamed from the archive without unpacking it, and refused with a reason when they cannot be read."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from dagster_aws.s3 import S3Resource

from etl_assets.landing.archives import (
    ArchiveError,
    ArchiveMember,
    MemberSource,
    archive_members,
    is_archive,
)
from etl_assets.landing.csv_reader import CsvFormatError, choose_encoding, iter_csv_chunks, read_header
from etl_assets.landing.zone import LocalLandingZone, S3LandingZone
from etl_assets_tests.conftest import S3_CREDENTIALS

ARCHIVE_KEY = "backup/20240501_Differential/WE_00D000000000001_1.ZIP"
ACCOUNT = 'Id,Name\n001A,"Acme\nInc"\n\n001B,Globex\n'
CONTACT = "Id,LastName\n003A,Smith\n003B,Jones\n"
MATTER_LATIN1 = "Id,Name\na0X1,José Muñoz\na0X2,Jürgen Müller\n".encode("iso-8859-1")


def big_csv(megabytes: float) -> bytes:
    """Hex of random bytes: deflate halves it, no more, so the archive stays large."""
    line = 64
    rows = int(megabytes * 2**20) // (line * 2 + 8)
    return b"Id,Blob\n" + b"".join(b"%06d,%s\n" % (i, os.urandom(line).hex().encode()) for i in range(rows))


def write_zip(path: Path, members: list[tuple[str, bytes]], zip64: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            if name.endswith("/"):
                archive.mkdir(name.rstrip("/"))
                continue
            with archive.open(name, "w", force_zip64=zip64) as member:
                member.write(data)
    return path


MEMBERS = [("Account.csv", ACCOUNT.encode()), ("sub/", b""), ("sub/Contact.csv", CONTACT.encode()),
           ("litify_pm__Matter__c.csv", MATTER_LATIN1)]


@contextmanager
def gets_counted(zone: S3LandingZone) -> Iterator[list[int]]:
    """The bytes of every GetObject the zone's client makes in the block (botocore's after-call hook)."""
    fetched: list[int] = []

    def count(parsed, **_):
        fetched.append(parsed["ContentLength"])

    zone.client.meta.events.register("after-call.s3.GetObject", count)
    try:
        yield fetched
    finally:
        zone.client.meta.events.unregister("after-call.s3.GetObject", count)


def make_s3_zone(endpoint: str, bucket: str) -> S3LandingZone:
    return S3LandingZone(s3=S3Resource(endpoint_url=endpoint, max_attempts=1, **S3_CREDENTIALS), bucket=bucket,
                         prefix="landing")


@pytest.fixture(params=["local", "s3"])
def zone_with(request, tmp_path):
    """zone_with(members): a landing zone (local folder or S3 on moto) holding one archive of `members`."""

    def build(members, zip64: bool = False, data: bytes | None = None):
        path = tmp_path / "landing" / ARCHIVE_KEY
        if data is None:
            write_zip(path, members, zip64)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if request.param == "local":
            return LocalLandingZone(root=str(tmp_path / "landing"))
        client, bucket = request.getfixturevalue("s3_bucket")
        zone = make_s3_zone(request.getfixturevalue("s3_endpoint"), bucket)
        zone.put_file(ARCHIVE_KEY, path)
        return zone

    return build


def read_member(zone, member: ArchiveMember, encoding: str = "utf-8") -> tuple[list[dict], list[int]]:
    source = MemberSource(zone, member)
    header, header_lines = read_header(source, member.key, encoding)
    records, lines = [], []
    for chunk in iter_csv_chunks(source, member.key, header, header_lines, encoding):
        records += chunk.batch.to_pylist()
        lines += chunk.lines.tolist()
    return records, lines


def test_is_archive():
    assert is_archive("backup/x/Export_1.zip") and is_archive("a.ZIP")
    assert not is_archive("backup/x/Account/Account.csv") and not is_archive("a.zip.csv")


@pytest.mark.parametrize("zip64", [False, True], ids=["zip", "zip64"])
def test_members_are_listed_in_order_and_read_one_by_one(zone_with, zip64):
    zone = zone_with(MEMBERS, zip64)
    members = archive_members(zone, ARCHIVE_KEY)
    assert [m.member for m in members] == ["Account.csv", "sub/Contact.csv", "litify_pm__Matter__c.csv"]
    assert [m.size for m in members] == [len(ACCOUNT.encode()), len(CONTACT.encode()), len(MATTER_LATIN1)]
    assert [m.crc for m in members] == [zipfile.crc32(d) for n, d in MEMBERS if not n.endswith("/")]
    assert members[0].key == f"{ARCHIVE_KEY}/Account.csv"
    assert members[1].key == f"{ARCHIVE_KEY}/sub/Contact.csv"

    records, lines = read_member(zone, members[0])
    assert records == [{"Id": "001A", "Name": "Acme\nInc"}, {"Id": "001B", "Name": "Globex"}]
    assert lines == [2, 5]
    records, _ = read_member(zone, members[1])
    assert [r["LastName"] for r in records] == ["Smith", "Jones"]


def test_a_latin1_member_is_read_in_its_encoding(zone_with):
    zone = zone_with(MEMBERS)
    matter = archive_members(zone, ARCHIVE_KEY)[2]
    records, lines = read_member(zone, matter, "iso-8859-1")
    assert [r["Name"] for r in records] == ["José Muñoz", "Jürgen Müller"]
    assert lines == [2, 3]
    choice = choose_encoding(MemberSource(zone, matter), matter.key, "utf-8", fallback="windows-1252")
    assert choice.encoding == "windows-1252" and "line 2, column 9" in choice.note
    with pytest.raises(CsvFormatError, match=rf"{matter.key}, line 2, column 9: bytes not valid utf-8"):
        read_member(zone, matter, "utf-8")


def test_the_crc_changes_with_the_content(tmp_path):
    zone = LocalLandingZone(root=str(tmp_path))
    write_zip(tmp_path / "a.zip", [("Account.csv", ACCOUNT.encode())])
    before = archive_members(zone, "a.zip")[0]
    write_zip(tmp_path / "a.zip", [("Account.csv", ACCOUNT.replace("Globex", "Globez").encode())])
    after = archive_members(zone, "a.zip")[0]
    assert (before.size, before.member) == (after.size, after.member) and before.crc != after.crc


def test_on_s3_listing_reads_the_central_directory_and_a_member_only_its_bytes(s3_endpoint, s3_bucket, tmp_path):
    """Counted on the wire (botocore's after-call hook on GetObject): a state, not a time."""
    big = big_csv(9)
    path = write_zip(tmp_path / "export.zip", [("Task.csv", big), *MEMBERS])
    client, bucket = s3_bucket
    zone = make_s3_zone(s3_endpoint, bucket)
    zone.put_file(ARCHIVE_KEY, path)
    archive_size = path.stat().st_size
    assert archive_size > 4 << 20

    # The zone's client is the process's client for its settings (etl_assets.aws): the hook goes when the test ends.
    with gets_counted(zone) as fetched:
        members = archive_members(zone, ARCHIVE_KEY)
        assert [m.member for m in members][:2] == ["Task.csv", "Account.csv"]
        assert 0 < sum(fetched) < 64 << 10 and len(fetched) <= 3  # the directory at the end, not the 5 MB

        fetched.clear()
        records, _ = read_member(zone, members[1])  # Account.csv, after the big member
        assert [r["Id"] for r in records] == ["001A", "001B"]
        assert sum(fetched) < 3 * (64 << 10)  # header, records: each open reads the directory and the member

        fetched.clear()
        task = members[0]
        assert read_header(MemberSource(zone, task), task.key)[0] == ["Id", "Blob"]
        assert sum(fetched) < 128 << 10  # a header costs a first small window, not the member

        fetched.clear()
        records, _ = read_member(zone, task)
        assert len(records) == big.count(b"\n") - 1
        compressed = zipfile.ZipFile(path).getinfo("Task.csv").compress_size
        assert compressed < sum(fetched) < compressed + (1 << 20)  # the member once, plus its header's window
        assert len(fetched) < 20  # windows double up to 8 MiB


def test_an_s3_object_replaced_while_it_is_read_fails_the_read(s3_endpoint, s3_bucket, tmp_path):
    client, bucket = s3_bucket
    zone = make_s3_zone(s3_endpoint, bucket)
    zone.put_text("a.bin", "x" * (1 << 20))
    with zone.open_seekable("a.bin") as stream:
        assert stream.read(10) == b"x" * 10
        zone.put_text("a.bin", "y" * (1 << 20))
        stream.seek(512 << 10)
        with pytest.raises(OSError, match=r"s3://.*/landing/a.bin: the object was replaced while it was read"):
            stream.read(10)


def test_a_missing_archive_or_member(tmp_path, s3_endpoint, s3_bucket):
    local = LocalLandingZone(root=str(tmp_path))
    s3 = make_s3_zone(s3_endpoint, s3_bucket[1])
    for zone in (local, s3):
        with pytest.raises(FileNotFoundError):
            archive_members(zone, "nowhere.zip")
    write_zip(tmp_path / "a.zip", [("Account.csv", ACCOUNT.encode())])
    with pytest.raises(ArchiveError, match=r"a.zip/Contact.csv: no such member"):
        MemberSource(local, ArchiveMember("a.zip", "Contact.csv", 1, 0)).open()


@pytest.mark.parametrize("kind", ["truncated", "not_a_zip", "empty"])
def test_a_corrupt_archive_is_refused_naming_it(zone_with, tmp_path, kind):
    whole = write_zip(tmp_path / "good.zip", MEMBERS).read_bytes()
    data = {"truncated": whole[: len(whole) // 2], "not_a_zip": ACCOUNT.encode(), "empty": b""}[kind]
    zone = zone_with(None, data=data)
    with pytest.raises(ArchiveError, match=rf"^{ARCHIVE_KEY}: not a readable zip archive: "):
        archive_members(zone, ARCHIVE_KEY)


def _patched_central_directory(data: bytes, offset: int, value: int) -> bytes:
    """`data` with a 2-byte field of the first central directory entry set (8: flags, 10: compression)."""
    at = data.index(b"PK\x01\x02") + offset
    return data[:at] + value.to_bytes(2, "little") + data[at + 2:]


@pytest.mark.parametrize("offset, value, reason", [
    (8, 0x1, "encrypted"),
    (10, 99, "unsupported compression method 99"),  # 99: WinZip AES
])
def test_encrypted_or_unsupported_members_are_refused_with_the_reason(zone_with, tmp_path, offset, value, reason):
    data = write_zip(tmp_path / "good.zip", MEMBERS).read_bytes()
    zone = zone_with(None, data=_patched_central_directory(data, offset, value))
    account = archive_members(zone, ARCHIVE_KEY)[0]
    with pytest.raises(ArchiveError, match=rf"Account.csv: .*{reason}"):
        read_member(zone, account)


def test_corrupt_member_data_is_refused_naming_the_member(zone_with, tmp_path):
    big = big_csv(0.5)
    data = bytearray(write_zip(tmp_path / "good.zip", [("Task.csv", big)]).read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)  # zeros in the middle of the deflate stream
    zone = zone_with(None, data=bytes(data))
    task = archive_members(zone, ARCHIVE_KEY)[0]
    with pytest.raises(ArchiveError, match=rf"{ARCHIVE_KEY}/Task.csv: corrupt member data"):
        read_member(zone, task)


def test_open_seekable_reads_the_same_bytes_at_any_offset(zone_with, tmp_path):
    """Local file or S3 ranged GETs: seeks anywhere (from the start, the end, the position) read the same bytes."""
    zone = zone_with(MEMBERS)
    with zone.open_seekable(ARCHIVE_KEY) as stream:
        whole = stream.read()
        assert whole == (tmp_path / "landing" / ARCHIVE_KEY).read_bytes()
        assert stream.seek(-22, os.SEEK_END) == len(whole) - 22 and stream.read() == whole[-22:]
        stream.seek(7)
        assert stream.read(5) == whole[7:12]
        stream.seek(3, os.SEEK_CUR)
        assert stream.read(4) == whole[15:19] and stream.tell() == 19
        stream.seek(len(whole) + 5)
        assert stream.read(10) == b""
