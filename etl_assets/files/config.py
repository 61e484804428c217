"""`feeds.yaml` read into typed feed definitions."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from etl_assets.files.loading import Guards
from etl_assets.warehouse.spec import ColumnType, identifier

FEEDS_PATH = Path(__file__).with_name("feeds.yaml")
MODES = ("append", "replace")
DUPLICATES = ("refuse", "allow")


class FeedConfigError(ValueError):
    """feeds.yaml is malformed."""


def qualified_table(name: str) -> tuple[str, str]:
    """'schema.table' -> validated (schema, table)."""
    parts = name.split(".")
    if len(parts) != 2:
        raise FeedConfigError(f"table {name!r}: expected schema.table")
    return identifier(parts[0]), identifier(parts[1])


def _columns(raw: dict, where: str) -> dict[str, ColumnType]:
    try:
        return {identifier(name): ColumnType(type_) for name, type_ in raw.items()}
    except ValueError as error:
        raise FeedConfigError(f"{where}: {error}") from None


@dataclass(frozen=True)
class HeaderRecord:
    """A record before the column header (`HDR|20240401`): its prefix, its fields' names, and the
    checks on them: `date_field` parsed with `date_format`, and when `date_in_file_name`, the same
    date (in that format) must appear in the file name."""

    prefix: str
    fields: tuple[str, ...]
    date_field: str | None = None
    date_format: str = "%Y%m%d"
    date_in_file_name: bool = False


def _header_record(raw: dict | None, where: str) -> HeaderRecord | None:
    if not raw:
        return None
    unknown = set(raw) - {"prefix", "fields", "date_field", "date_format", "date_in_file_name"}
    if unknown or not raw.get("prefix"):
        raise FeedConfigError(f"{where}.header_record: needs a prefix; unknown settings {sorted(unknown)}")
    record = HeaderRecord(str(raw["prefix"]), tuple(raw.get("fields") or ()), raw.get("date_field"),
                          raw.get("date_format", "%Y%m%d"), bool(raw.get("date_in_file_name", False)))
    if record.date_field and record.date_field not in record.fields:
        raise FeedConfigError(f"{where}.header_record: date_field {record.date_field!r} is not among its fields")
    return record


def _duplicates(raw: dict, where: str) -> bool:
    """True when the feed allows repeated content (opted out of the re-send check)."""
    value = raw.get("duplicates", "refuse")
    if value not in DUPLICATES:
        raise FeedConfigError(f"{where}: duplicates must be one of {DUPLICATES}")
    return value == "allow"


def _guards(raw: dict, where: str) -> Guards:
    try:
        return Guards.parse(raw.get("guards"), where)
    except (TypeError, ValueError) as error:
        raise FeedConfigError(str(error)) from None


@dataclass(frozen=True)
class ExternalFeed:
    name: str
    description: str
    pattern: str
    schema: str
    table: str
    mode: str
    delimiter: str
    encoding: str
    header: tuple[str, ...]
    columns: dict
    required: frozenset
    trailer_marker: str | None = None
    split_threshold_bytes: int | None = None
    post_load_sql: tuple[str, ...] = ()
    header_record: HeaderRecord | None = None
    key: tuple[str, ...] = ()  # business key: a re-send of loaded keys is a DUPLICATE
    allow_duplicates: bool = False
    guards: Guards = Guards()

    def matches(self, file_name: str) -> bool:
        return fnmatch.fnmatchcase(file_name, self.pattern)


@dataclass(frozen=True)
class CsvDataset:
    name: str
    description: str
    schema: str
    table: str
    required: tuple[str, ...]
    select: tuple[str, ...]
    columns: dict = field(default_factory=dict)  # declared types; others are the table's, else inferred
    allow_duplicates: bool = False


@dataclass(frozen=True)
class FeedCatalog:
    external: dict[str, ExternalFeed]
    datasets: dict[str, CsvDataset]

    def feed_for(self, file_name: str) -> ExternalFeed | None:
        return next((feed for feed in self.external.values() if feed.matches(file_name)), None)


def parse_feeds(document: dict) -> FeedCatalog:
    external = {}
    for name, raw in (document.get("external_feeds") or {}).items():
        where = f"external_feeds.{name}"
        schema, table = qualified_table(raw["table"])
        columns = _columns(raw.get("columns") or {}, where)
        header = tuple(identifier(h) for h in raw.get("header") or columns)
        if set(header) != set(columns):
            raise FeedConfigError(f"{where}: header and columns name different fields")
        if raw.get("mode", "append") not in MODES:
            raise FeedConfigError(f"{where}: mode must be one of {MODES}")
        external[name] = ExternalFeed(
            name=name,
            description=raw.get("description", ""),
            pattern=raw["pattern"],
            schema=schema,
            table=table,
            mode=raw.get("mode", "append"),
            delimiter=raw.get("delimiter", ","),
            encoding=raw.get("encoding", "utf-8"),
            header=header,
            columns=columns,
            required=frozenset(identifier(c) for c in raw.get("required") or ()),
            trailer_marker=(raw.get("trailer") or {}).get("marker"),
            split_threshold_bytes=raw.get("split_threshold_bytes"),
            post_load_sql=tuple(raw.get("post_load_sql") or ()),
            header_record=_header_record(raw.get("header_record"), where),
            key=tuple(identifier(c) for c in raw.get("key") or ()),
            allow_duplicates=_duplicates(raw, where),
            guards=_guards(raw, where),
        )
        if set(external[name].key) - set(columns):
            raise FeedConfigError(f"{where}: key names columns the feed does not have")
    datasets = {}
    for name, raw in (document.get("csv_datasets") or {}).items():
        schema, table = qualified_table(raw["table"])
        datasets[identifier(name)] = CsvDataset(
            name=identifier(name),
            description=raw.get("description", ""),
            schema=schema,
            table=table,
            required=tuple(identifier(c) for c in raw.get("required") or ()),
            select=tuple(identifier(c) for c in raw.get("select") or ()),
            columns=_columns(raw.get("columns") or {}, f"csv_datasets.{name}"),
            allow_duplicates=_duplicates(raw, f"csv_datasets.{name}"),
        )
    return FeedCatalog(external, datasets)


def load_feeds(path: Path | None = None) -> FeedCatalog:
    """The feeds of `path`, else of $ETL_ASSETS_FEEDS (a deployment's own file), else the bundled feeds.yaml."""
    return _load_feeds(Path(path or os.environ.get("ETL_ASSETS_FEEDS") or FEEDS_PATH))


@cache
def _load_feeds(path: Path) -> FeedCatalog:
    with open(path, encoding="utf-8") as f:
        return parse_feeds(yaml.safe_load(f))
