"""CSV files inside zip archives, read where they land: never unpacked to disk.

Salesforce's Data Export service delivers `.zip` archives (up to ~512 MB) holding one
CSV per object. Each member is read as a stream straight from the archive through
`LandingZone.open_seekable`: on S3 that is ranged GETs, so listing an archive reads
only its central directory and reading a member only that member's bytes.

A member is named by `ArchiveMember.key`, `<archive key>/<member name>`: the name it
is loaded and traced under, as a plain file's landing key is.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from etl_assets.landing.zone import LandingZone

# What zipfile can decompress (bzip2 and lzma only when Python was built with them).
SUPPORTED_COMPRESSION = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
                         zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}


class ArchiveError(ValueError):
    """An archive, or one member of it, that cannot be read; the message names the key and the reason."""


def is_archive(key: str) -> bool:
    return key.lower().endswith(".zip")


@dataclass(frozen=True)
class ArchiveMember:
    archive_key: str  # landing key of the .zip
    member: str  # name inside the archive ("Account.csv", or "dir/Account.csv")
    size: int  # uncompressed size
    crc: int  # the member's CRC-32: a fingerprint that changes with its content

    @property
    def key(self) -> str:
        return f"{self.archive_key}/{self.member}"


def archive_members(landing_zone: LandingZone, archive_key: str) -> list[ArchiveMember]:
    """Every file member of the archive (directories left out), in archive order; only its central
    directory is read."""
    with landing_zone.open_seekable(archive_key) as stream:
        with _open_archive(stream, archive_key) as archive:
            infos = archive.infolist()
    return [ArchiveMember(archive_key, info.filename, info.file_size, info.CRC) for info in infos if not info.is_dir()]


class MemberSource:
    """A member's uncompressed bytes as a `ByteSource`: each `open()` is a fresh stream, decompressed as it
    is read (csv_reader opens a file more than once: header, records, and an error's location)."""

    def __init__(self, landing_zone: LandingZone, member: ArchiveMember):
        self.landing_zone, self.member = landing_zone, member

    def open(self) -> BinaryIO:
        key = self.member.key
        stream = self.landing_zone.open_seekable(self.member.archive_key)
        try:
            archive = _open_archive(stream, self.member.archive_key)
            try:
                info = archive.getinfo(self.member.member)
            except KeyError:
                archive.close()
                raise ArchiveError(f"{key}: no such member in the archive") from None
            reason = _unreadable(info)
            if reason:
                archive.close()
                raise ArchiveError(f"{key}: {reason}")
            return _MemberStream(key, archive.open(info), archive, stream)
        except BaseException:
            stream.close()
            raise

    def __repr__(self) -> str:
        return f"MemberSource({self.member.key!r})"


def _open_archive(stream: BinaryIO, key: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as error:
        raise ArchiveError(f"{key}: not a readable zip archive: {error}") from None


def _unreadable(info: zipfile.ZipInfo) -> str | None:
    """Why a member cannot be read, checked before reading so the reason is plain."""
    if info.flag_bits & 0x1:
        return "the member is encrypted (password protected); export it without a password"
    if info.compress_type not in SUPPORTED_COMPRESSION:
        return f"unsupported compression method {info.compress_type} (supported: stored, deflate, bzip2, lzma)"
    try:
        zipfile._check_compression(info.compress_type)
    except RuntimeError as error:  # bzip2 or lzma missing from this Python
        return str(error)
    return None


class _MemberStream(io.BufferedIOBase):
    """One member's decompressed bytes; closing it closes the archive and its landing-zone stream too.
    A corrupt member (bad CRC, truncated data) raises ArchiveError naming it."""

    def __init__(self, key: str, member: BinaryIO, archive: zipfile.ZipFile, stream: BinaryIO):
        super().__init__()
        self._key, self._member, self._archive, self._stream = key, member, archive, stream

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            return self._member.read(-1 if size is None else size)
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:
            raise ArchiveError(f"{self._key}: corrupt member data: {error}") from None

    def read1(self, size: int = -1) -> bytes:
        return self.read(size if size > 0 else 1 << 16)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._member.close()
                self._archive.close()
            finally:
                self._stream.close()
                super().close()
