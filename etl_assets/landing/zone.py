"""Where files land: a local folder by default, an S3 bucket in production.

Both expose the same small interface, keyed by '/'-separated paths relative to
the landing root, so sensors and assets never care which one they talk to.
Listings are in key order and can start after a key, which is what lets a
sensor keep a cursor instead of re-listing thousands of folders every tick.
`open_seekable` reads a file where it lies (ranged GETs on S3), which is how a zip
archive's members are read without downloading the archive.

The zone is a boundary: keys come from listings, partitions, the CLI and configuration,
and every method resolves them through `check_key` (and, locally, `_path`, which follows
symbolic links only while they stay inside the root), so no key reaches a file outside it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import tempfile
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, ClassVar

import dagster as dg
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from etl_assets.aws import s3_client


@dataclass(frozen=True)
class LandedFile:
    key: str
    size: int
    modified: float  # seconds since the epoch
    etag: str | None = field(default=None, compare=False)  # S3's, where the listing gives it

    @property
    def fingerprint(self) -> str:
        return f"{self.key}:{self.size}:{int(self.modified)}"


class UnsafeKey(ValueError):
    """A key that would reach outside the landing zone, or is no key at all: refused before anything moves."""


def check_key(key: str) -> str:
    """`key` when it is a relative '/'-separated path inside the landing root ('' is the root, a trailing
    '/' a folder); raises UnsafeKey otherwise. No '..', '.' or empty segment, no leading '/', no control
    character (NUL included): a landing key is a name inside the zone, never a path out of it."""
    if not isinstance(key, str):
        raise UnsafeKey(f"landing key {key!r} is not text")
    control = next((c for c in key if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        raise UnsafeKey(f"landing key {key!r}: control characters ({control!r}) are not allowed in a key")
    if key.startswith("/"):
        raise UnsafeKey(f"landing key {key!r}: an absolute path is not allowed; a key is relative to the "
                        "landing root")
    segments = key.split("/")[:-1] if key.endswith("/") else key.split("/")
    if not key:
        return key
    if ".." in segments:
        raise UnsafeKey(f"landing key {key!r}: '..' is not allowed; a key cannot leave the landing root")
    if any(s in ("", ".") for s in segments):
        raise UnsafeKey(f"landing key {key!r}: empty or '.' path segments are not allowed")
    return key


def shortened(key: str, suffix: str, name_bytes: int | None, key_bytes: int | None) -> str:
    """`key + suffix`, or when its last segment or the whole key is over the limits (UTF-8 bytes), with the
    last segment cut to its start, `~`, a hash of the whole key, its extension and `suffix`. The same key
    always gives the same name, so a file is found again where it was put."""
    full = key + suffix
    name = full.rpartition("/")[2]
    before = len(full.encode()) - len(name.encode())  # the folders' bytes
    room = min(name_bytes or 1 << 30, key_bytes - before if key_bytes else 1 << 30)
    if len(name.encode()) <= room:
        return full
    stem = key.rpartition("/")[2]
    extension = os.path.splitext(stem)[1]
    tail = f"~{hashlib.sha256(key.encode()).hexdigest()[:16]}{extension if len(extension) <= 16 else ''}{suffix}"
    start = stem.encode()[:max(room - len(tail.encode()), 0)].decode("utf-8", "ignore")
    return full[:len(full) - len(name)] + start + tail


def fingerprint_files(files: list[LandedFile]) -> str:
    """A short digest of a set of files' keys, sizes and times: it changes when any file does."""
    digest = hashlib.sha256("\n".join(sorted(f.fingerprint for f in files)).encode())
    return digest.hexdigest()[:16]


class LandingZone(dg.ConfigurableResource):
    """Base class; see `LocalLandingZone` and `S3LandingZone`."""

    def list_files(self, prefix: str, start_after: str = "") -> Iterator[LandedFile]:
        """Files under `prefix` in key order, skipping keys <= `start_after`.

        A folder with nothing in it is reported as a zero-size key ending in '/',
        so callers can tell an empty folder from a missing one.
        """
        raise NotImplementedError

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """A local path holding the file's bytes for as long as the context lasts."""
        raise NotImplementedError

    def open_seekable(self, key: str) -> BinaryIO:
        """A seekable binary file object over the file's bytes, read only where it is read (a zip archive's
        central directory, one member), never copied whole. A plain file object: close it, or use `with`."""
        raise NotImplementedError

    def put_file(self, key: str, source: Path) -> None:
        raise NotImplementedError

    def put_text(self, key: str, text: str) -> None:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def move(self, key: str, new_key: str) -> None:
        """Move a file (S3: copy then delete)."""
        raise NotImplementedError

    @property
    def list_calls(self) -> int:
        """How many listing requests this instance made (for the benchmark and tests)."""
        return self._list_calls

    _list_calls: int = PrivateAttr(default=0)

    def location(self, key: str = "") -> str:
        raise NotImplementedError

    # The longest name of one path segment, and of a whole key, in UTF-8 bytes (None: no limit).
    name_limit: ClassVar[int | None] = None
    key_limit: ClassVar[int | None] = None

    def check(self, key: str) -> None:
        """Raise UnsafeKey unless `key` names a place inside the zone (`check_key`; locally, symbolic links
        on its way must also stay inside the root)."""
        check_key(key)

    def fit(self, key: str, suffix: str = "") -> str:
        """The key a file derived from `key` is stored under (`suffix` such as '.reason.txt' kept whole),
        within the zone's name limits: see `shortened`. The full key belongs in the audit row."""
        return shortened(check_key(key), suffix, self.name_limit, self.key_limit)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a link that loops (ELOOP): not a folder to walk
        return False


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


class LocalLandingZone(LandingZone):
    """A folder on this machine (the embedded default: data/landing)."""

    root: str = "data/landing"
    name_limit: ClassVar[int | None] = 255  # NAME_MAX of Linux file systems

    def _path(self, key: str) -> Path:
        """The path of `key` under the root, refused (UnsafeKey) when the key is unsafe or a symbolic
        link on the way resolves outside the root."""
        path = Path(self.root) / check_key(key)
        if not self._inside(path):
            raise UnsafeKey(f"landing key {key!r} resolves outside the landing root (a symbolic link); "
                            "it is not followed")
        try:
            os.path.realpath(path, strict=True)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise UnsafeKey(f"landing key {key!r} is a symbolic link that loops (too many levels of "
                                "symbolic links); it is not followed") from None
        return path

    def _inside(self, path: Path | str) -> bool:
        """Whether `path`, with every symbolic link on its way followed, is the root or under it."""
        root, real = os.path.realpath(self.root), os.path.realpath(path)
        return real == root or real.startswith(root + os.sep)

    def check(self, key: str) -> None:
        self._path(key)

    def location(self, key: str = "") -> str:
        return str(Path(self.root) / check_key(key))

    def list_files(self, prefix: str, start_after: str = "") -> Iterator[LandedFile]:
        base = Path(self.root)
        self._path(prefix)
        yield from self._walk(base, prefix.rstrip("/"), start_after, ())

    def _walk(self, base: Path, relative: str, start_after: str, above: tuple[str, ...]) -> Iterator[LandedFile]:
        """The files under `relative`; `above` holds the real paths of the folders walked down to it,
        so a link back to one of them (a loop) is listed as a key, never walked again."""
        self._list_calls += 1
        directory = base / relative if relative else base
        try:
            # Sort as S3 does: a folder's keys continue with "/", so "a.zip" lists before "a/x".
            entries = sorted(os.scandir(directory), key=lambda e: e.name + "/" if _is_dir(e) else e.name)
        except FileNotFoundError:
            return
        if not entries and relative and f"{relative}/" > start_after:
            yield LandedFile(f"{relative}/", 0, directory.stat().st_mtime)
            return
        here = (*above, os.path.realpath(directory))
        for entry in entries:
            key = f"{relative}/{entry.name}" if relative else entry.name
            if entry.is_symlink() and (not self._inside(entry.path) or os.path.realpath(entry.path) in here
                                       or not (_is_dir(entry) or _is_file(entry))):
                # Out of the root, back to a folder above (a loop) or to nothing: listed, never followed;
                # loading it is refused with the reason, in sight.
                if key > start_after:
                    yield LandedFile(key, 0, entry.stat(follow_symlinks=False).st_mtime)
            elif _is_dir(entry):  # a link is followed here only when it stays inside the root
                # Every key under key/ sorts before key + "0"; skip whole subtrees that are done.
                if start_after and key + "0" <= start_after:
                    continue
                yield from self._walk(base, key, start_after, here)
            elif _is_file(entry) and key > start_after:
                stat = entry.stat()
                yield LandedFile(key, stat.st_size, stat.st_mtime)

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        yield self._path(key)

    def open_seekable(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def put_file(self, key: str, source: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)

    def put_text(self, key: str, text: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    def exists(self, key: str) -> bool:
        try:
            return self._path(key).is_file()
        except OSError as error:
            if error.errno == errno.ENAMETOOLONG:  # no such file can exist
                return False
            raise

    def move(self, key: str, new_key: str) -> None:
        source, target = self._path(key), self._path(new_key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)


class S3LandingZone(LandingZone):
    """An S3 bucket (and optional key prefix), reached through dagster-aws' S3Resource."""

    s3: S3Resource
    bucket: str
    prefix: str = ""
    key_limit: ClassVar[int | None] = 1024  # S3's longest key, prefix included

    _client = PrivateAttr(default=None)

    @property
    def client(self):
        """One boto3 client per process for the resource's settings (etl_assets.aws.s3_client): building a
        client costs more than a request, and Dagster builds the resource anew for every run."""
        if self._client is None:
            self._client = s3_client(self.s3)
        return self._client

    def _key(self, key: str) -> str:
        """The object key of a landing key: checked (`check_key`), so it stays under the configured prefix."""
        return self._prefixed(check_key(key))

    def _prefixed(self, key: str) -> str:
        return f"{self.prefix.strip('/')}/{key}" if self.prefix.strip("/") else key

    def fit(self, key: str, suffix: str = "") -> str:
        return shortened(check_key(key), suffix, None, self.key_limit - len(self._prefixed("").encode()))

    def location(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def list_files(self, prefix: str, start_after: str = "") -> Iterator[LandedFile]:
        client = self.client
        root = self._key("")
        kwargs = {"Bucket": self.bucket, "Prefix": self._key(prefix)}
        if start_after:  # a position in key order, not a key to reach
            kwargs["StartAfter"] = self._prefixed(start_after)
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(**kwargs):
            self._list_calls += 1
            for item in page.get("Contents", []):
                key = item["Key"][len(root):]
                yield LandedFile(key, item["Size"], item["LastModified"].timestamp(), item.get("ETag"))

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="etl_assets_s3_") as directory:
            path = Path(directory) / shortened(key.rpartition("/")[2], "", 255, None)  # S3 names can be longer
            self.client.download_file(self.bucket, self._key(key), str(path))
            yield path

    def open_seekable(self, key: str) -> BinaryIO:
        """A BufferedReader over ranged GETs (`S3RangeReader`; `.raw` counts the requests and bytes)."""
        return io.BufferedReader(S3RangeReader(self.client, self.bucket, self._key(key), self.location(key)))

    def put_file(self, key: str, source: Path) -> None:
        self.client.upload_file(str(source), self.bucket, self._key(key))

    def put_text(self, key: str, text: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=text.encode("utf-8"))

    def exists(self, key: str) -> bool:
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(key), MaxKeys=1)
        return any(item["Key"] == self._key(key) for item in listed.get("Contents", []))

    def move(self, key: str, new_key: str) -> None:
        """boto3's managed copy, not `copy_object`: it copies in parts above 8 MB, so files over
        copy_object's 5 GB limit move too."""
        source = {"Bucket": self.bucket, "Key": self._key(key)}
        self.client.copy(source, self.bucket, self._key(new_key))
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))


# Ranged GETs start small and double while reads go on in sequence: listing a zip (its central
# directory) or reading a member's header costs a 64 KiB GET, streaming a 512 MB archive ~70 GETs.
FIRST_RANGE = 64 << 10
LAST_RANGE = 8 << 20


class S3RangeReader(io.RawIOBase):
    """An S3 object as a seekable raw stream, fetched by ranged GETs (`Range: bytes=a-b`).

    Each GET fetches a window from the read position: FIRST_RANGE bytes after a seek, twice the last
    window while reads go on where it ended, up to LAST_RANGE. Every GET is pinned to the ETag seen
    when the stream opened (If-Match), so an object replaced while it is read fails the read instead
    of mixing two versions' bytes. `requests` and `bytes_fetched` count what went over the wire."""

    def __init__(self, client, bucket: str, key: str, location: str):
        self._client, self._bucket, self._key, self._location = client, bucket, key, location
        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(f"{location}: no such object") from None
            raise
        self.size, self._etag = head["ContentLength"], head["ETag"]
        self._position, self._window, self._window_start, self._range = 0, b"", 0, FIRST_RANGE
        self.requests, self.bytes_fetched = 0, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def readinto(self, buffer) -> int:
        if self._position >= self.size:
            return 0
        at = self._position - self._window_start
        if not 0 <= at < len(self._window):
            self._fetch()
            at = 0
        count = min(len(buffer), len(self._window) - at)
        memoryview(buffer).cast("B")[:count] = memoryview(self._window)[at:at + count]
        self._position += count
        return count

    def _fetch(self) -> None:
        in_sequence = self._position == self._window_start + len(self._window) and self._window
        self._range = min(self._range * 2, LAST_RANGE) if in_sequence else FIRST_RANGE
        end = min(self._position + self._range, self.size)
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=self._key, IfMatch=self._etag,
                                               Range=f"bytes={self._position}-{end - 1}")
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("412", "PreconditionFailed"):
                raise OSError(f"{self._location}: the object was replaced while it was read") from None
            raise
        self._window, self._window_start = response["Body"].read(), self._position
        self.requests += 1
        self.bytes_fetched += len(self._window)
