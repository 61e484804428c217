"""Configured external files: `external/inbound/<file>`, matched to a feed in feeds.yaml by name.

Checks before loading (an optional header record such as `HDR|20240401` with its
business date checked against the file name, the column header, a trailer whose
record count must match), the records staged on the shared typing path, a file
over its feed's size threshold staged in parts, then the load and the feed's
post-load SQL in one transaction: a statement that fails rolls the rows back too.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
import tempfile
from pathlib import Path

from etl_assets.files.config import BrokenEntry, ExternalFeed, feed_catalog, refuse_broken
from etl_assets.files.loading import (
    FileLoad,
    FileRefused,
    Outcome,
    check_business_keys,
    check_content,
    check_guards,
    load_file,
    stage_typed_csv,
    table_spec,
)
from etl_assets.warehouse.steps import Step

PREFIX = "external/inbound/"


def feed_for_key(key: str) -> ExternalFeed:
    name = key[len(PREFIX):] if key.startswith(PREFIX) else ""
    if not name or "/" in name:
        raise FileRefused("ABORTED", f"unknown prefix: external files land directly under {PREFIX}, got {key}")
    catalog = feed_catalog()
    feed = catalog.feed_for(name)
    if isinstance(feed, BrokenEntry):
        raise refuse_broken(feed, "feed")
    if feed is None:
        unreadable = sorted(b.name for k, b in catalog.broken.items() if k.startswith("external_feeds.") and not b.pattern)
        note = f" (entries without a usable pattern: {', '.join(unreadable)})" if unreadable else ""
        raise FileRefused("ABORTED", f"no feed in feeds.yaml matches the file name {name!r}{note}")
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
    body = work_dir / "without_trailer.csv"  # not the landed name: a long one would not fit with a prefix
    remaining = offset + newline + 1  # every byte up to and including the newline before the trailer
    with open(path, "rb") as source, open(body, "wb") as target:
        while remaining > 0:
            chunk = source.read(min(remaining, 1 << 20))
            target.write(chunk)
            remaining -= len(chunk)
    return body, int(fields[1])


def strip_header_record(path: Path, feed: ExternalFeed, file_name: str, work_dir: Path) -> tuple[Path, dict]:
    """A copy of `path` without its header record, and the record's fields, checked."""
    record = feed.header_record
    if record is None:
        return path, {}
    with open(path, "rb") as f:
        first = f.readline()
        rest_at = f.tell()
    line = first.decode(feed.encoding, "replace").rstrip("\r\n")
    values = line.split(feed.delimiter)
    expected = feed.delimiter.join([record.prefix, *(f"<{name}>" for name in record.fields)])
    if values[0] != record.prefix or len(values) != 1 + len(record.fields):
        raise FileRefused("ABORTED", f"header record missing: the first line should be {expected}, "
                                     f"found {line[:80]!r}", 1)
    fields = dict(zip(record.fields, (v.strip() for v in values[1:])))
    if record.date_field:
        text = fields[record.date_field]
        try:
            business_date = dt.datetime.strptime(text, record.date_format).date()
        except ValueError:
            raise FileRefused("ABORTED", f"header record: {record.date_field} {text!r} is not a date "
                                         f"({record.date_format})", 1) from None
        if record.date_in_file_name and business_date.strftime(record.date_format) not in file_name:
            raise FileRefused("ABORTED", f"header record: {record.date_field} {text} does not match the file name "
                                         f"{file_name} (expected {business_date.strftime(record.date_format)} in it)",
                              1)
        fields[record.date_field] = business_date.isoformat()
    body = work_dir / "without_header_record.csv"
    with open(path, "rb") as source, open(body, "wb") as target:
        source.seek(rest_at)
        shutil.copyfileobj(source, target, 1 << 20)
    return body, fields


def load_external_file(load: FileLoad) -> Outcome:
    path, key = load.path, load.key
    feed = feed_for_key(key)
    table = f"{feed.schema}.{feed.table}"
    if path.stat().st_size == 0:
        raise FileRefused("ABORTED", "the file is empty")
    fingerprint = check_content(load, table, feed.allow_duplicates)
    spec = table_spec(feed.schema, feed.table, feed.columns, feed.required)
    work_dir = Path(tempfile.mkdtemp(prefix="external_"))
    try:
        headed, header_fields = strip_header_record(path, feed, key.rsplit("/", 1)[-1], work_dir)
        body, declared = strip_trailer(headed, feed, work_dir)
        parts, rows_per_part = 1, 2_000_000
        if feed.split_threshold_bytes and path.stat().st_size > feed.split_threshold_bytes and declared:
            parts = math.ceil(path.stat().st_size / feed.split_threshold_bytes)
            rows_per_part = max(1, math.ceil(declared / parts))
        batch, rows = stage_typed_csv(body, key, spec, feed.mode, feed.delimiter, feed.encoding,
                                      expected_header=feed.header, rows_per_file=rows_per_part,
                                      line_offset=1 if feed.header_record else 0)
        try:
            if declared is not None and rows != declared:
                raise FileRefused("ABORTED", f"trailer count mismatch: the trailer declares {declared} records, "
                                             f"the file holds {rows}", rows_read=rows)
            check_business_keys(load, batch, feed.key, feed.allow_duplicates)
            check_guards(load, batch, feed.guards)
        except BaseException:
            batch.discard()
            raise
        parts = len(batch.files)
        after = [Step(sql, label=f"post-load SQL statement {n} of {len(feed.post_load_sql)} ({sql.split()[0]} ...)")
                 for n, sql in enumerate(feed.post_load_sql, start=1)]
        result, shown = load_file(load, batch, table, fingerprint, feed.allow_duplicates, after)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return Outcome(table, feed.mode, rows, result.inserted,
                   {"feed": feed.name, "parts": parts, "trailer_count": declared, "header_record": header_fields,
                    "rows_replaced": result.deleted, "post_load_statements": len(feed.post_load_sql),
                    "content_sha256": fingerprint, **shown})
