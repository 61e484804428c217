"""`feeds.yaml` read into typed feed definitions."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from etl_assets.resources.warehouse.spec import ColumnType, identifier

FEEDS_PATH = Path(__file__).with_name("feeds.yaml")
MODES = ("append", "replace")


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
        )
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
        )
    return FeedCatalog(external, datasets)


@cache
def load_feeds(path: Path = FEEDS_PATH) -> FeedCatalog:
    with open(path, encoding="utf-8") as f:
        return parse_feeds(yaml.safe_load(f))
