"""Configured external files: `external/inbound/<file>`, matched to a feed in feeds.yaml by name.

Checks before loading (the header, and a trailer whose record count must match),
the trailer stripped, a file over its feed's size threshold staged and COPied in
parts, then an optional post-load SQL transformation in the same warehouse.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

from etl_assets.files.config import ExternalFeed, load_feeds
from etl_assets.files.loading import FileRefused, Outcome, load_staged, stage_typed_csv, table_spec
from etl_assets.resources.warehouse.base import Warehouse

PREFIX = "external/inbound/"


def feed_for_key(key: str) -> ExternalFeed:
    name = key[len(PREFIX):] if key.startswith(PREFIX) else ""
    if not name or "/" in name:
        raise FileRefused("ABORTED", f"unknown prefix: external files land directly under {PREFIX}, got {key}")
    feed = load_feeds().feed_for(name)
    if feed is None:
        raise FileRefused("ABORTED", f"no feed in feeds.yaml matches the file name {name!r}")
    return feed


def external_table(key: str) -> str:
    feed = feed_for_key(key)
    return f"{feed.schema}.{feed.table}"


def strip_trailer(path: Path, feed: ExternalFeed, work_dir: Path) -> tuple[Path, int | None]:
    """A copy of `path` without its trailer line, and the record count the trailer declares."""
    if not feed.trailer_marker:
        return path, None
    size = path.stat().st_size
    offset = max(0, size - 4096)
    with open(path, "rb") as f:
        f.seek(offset)
        tail = f.read().rstrip(b"\r\n")
    newline = tail.rfind(b"\n")
    last_line = tail[newline + 1:].decode(feed.encoding, "replace").strip()
    fields = last_line.split(feed.delimiter)
    if newline < 0 or fields[0] != feed.trailer_marker or len(fields) != 2 or not fields[1].strip().isdigit():
        raise FileRefused("ABORTED", f"trailer missing: the last line should be "
                                     f"{feed.trailer_marker}{feed.delimiter}<record count>, found {last_line[:80]!r}")
    body = work_dir / path.name
    remaining = offset + newline + 1  # every byte up to and including the newline before the trailer
    with open(path, "rb") as source, open(body, "wb") as target:
        while remaining > 0:
            chunk = source.read(min(remaining, 1 << 20))
            target.write(chunk)
            remaining -= len(chunk)
    return body, int(fields[1])


def load_external_file(path: Path, key: str, warehouse: Warehouse) -> Outcome:
    feed = feed_for_key(key)
    if path.stat().st_size == 0:
        raise FileRefused("ABORTED", "the file is empty")
    spec = table_spec(feed.schema, feed.table, feed.columns, feed.required)
    work_dir = Path(tempfile.mkdtemp(prefix="external_"))
    try:
        body, declared = strip_trailer(path, feed, work_dir)
        parts, rows_per_part = 1, 2_000_000
        if feed.split_threshold_bytes and path.stat().st_size > feed.split_threshold_bytes and declared:
            parts = math.ceil(path.stat().st_size / feed.split_threshold_bytes)
            rows_per_part = max(1, math.ceil(declared / parts))
        batch, rows = stage_typed_csv(body, key, spec, feed.mode, feed.delimiter, feed.encoding,
                                      expected_header=feed.header, rows_per_file=rows_per_part)
        if declared is not None and rows != declared:
            batch.discard()
            raise FileRefused("ABORTED", f"trailer count mismatch: the trailer declares {declared} records, "
                                         f"the file holds {rows}")
        parts = len(batch.files)
        result, shown = load_staged(warehouse, batch)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    for statement in feed.post_load_sql:
        with warehouse.session() as session:
            session.execute(statement)
    return Outcome(f"{feed.schema}.{feed.table}", feed.mode, rows, result.inserted,
                   {"feed": feed.name, "parts": parts, "trailer_count": declared,
                    "post_load_statements": len(feed.post_load_sql), **shown})
