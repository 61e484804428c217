"""Where files land: a local folder by default, an S3 bucket in production.

Both expose the same small interface, keyed by '/'-separated paths relative to
the landing root, so sensors and assets never care which one they talk to.
Listings are in key order and can start after a key, which is what lets a
sensor keep a cursor instead of re-listing thousands of folders every tick.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr


@dataclass(frozen=True)
class LandedFile:
    key: str
    size: int
    modified: float  # seconds since the epoch

    @property
    def fingerprint(self) -> str:
        return f"{self.key}:{self.size}:{int(self.modified)}"


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


class LocalLandingZone(LandingZone):
    """A folder on this machine (the embedded default: data/landing)."""

    root: str = "data/landing"

    def location(self, key: str = "") -> str:
        return str(Path(self.root) / key)

    def list_files(self, prefix: str, start_after: str = "") -> Iterator[LandedFile]:
        base = Path(self.root)
        yield from self._walk(base, prefix.rstrip("/"), start_after)

    def _walk(self, base: Path, relative: str, start_after: str) -> Iterator[LandedFile]:
        self._list_calls += 1
        directory = base / relative if relative else base
        try:
            # Sort as S3 does: a folder's keys continue with "/", so "a.zip" lists before "a/x".
            entries = sorted(os.scandir(directory), key=lambda e: e.name + "/" if e.is_dir() else e.name)
        except FileNotFoundError:
            return
        if not entries and relative and f"{relative}/" > start_after:
            yield LandedFile(f"{relative}/", 0, directory.stat().st_mtime)
            return
        for entry in entries:
            key = f"{relative}/{entry.name}" if relative else entry.name
            if entry.is_dir():
                # Every key under key/ sorts before key + "0"; skip whole subtrees that are done.
                if start_after and key + "0" <= start_after:
                    continue
                yield from self._walk(base, key, start_after)
            elif entry.is_file() and key > start_after:
                stat = entry.stat()
                yield LandedFile(key, stat.st_size, stat.st_mtime)

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        yield Path(self.root) / key

    def put_file(self, key: str, source: Path) -> None:
        target = Path(self.root) / key
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)

    def put_text(self, key: str, text: str) -> None:
        target = Path(self.root) / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    def exists(self, key: str) -> bool:
        return (Path(self.root) / key).is_file()

    def move(self, key: str, new_key: str) -> None:
        target = Path(self.root) / new_key
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(Path(self.root) / key, target)


class S3LandingZone(LandingZone):
    """An S3 bucket (and optional key prefix), reached through dagster-aws' S3Resource."""

    s3: S3Resource
    bucket: str
    prefix: str = ""

    _client = PrivateAttr(default=None)

    @property
    def client(self):
        """One boto3 client per resource instance: building a client costs more than a request."""
        if self._client is None:
            self._client = self.s3.get_client()
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix.strip('/')}/{key}" if self.prefix.strip("/") else key

    def location(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def list_files(self, prefix: str, start_after: str = "") -> Iterator[LandedFile]:
        client = self.client
        root = self._key("")
        kwargs = {"Bucket": self.bucket, "Prefix": self._key(prefix)}
        if start_after:
            kwargs["StartAfter"] = self._key(start_after)
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(**kwargs):
            self._list_calls += 1
            for item in page.get("Contents", []):
                key = item["Key"][len(root):]
                yield LandedFile(key, item["Size"], item["LastModified"].timestamp())

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="etl_assets_s3_") as directory:
            path = Path(directory) / Path(key).name
            self.client.download_file(self.bucket, self._key(key), str(path))
            yield path

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
