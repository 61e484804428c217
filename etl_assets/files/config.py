"""`feeds.yaml` read into typed feed definitions."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from etl_assets.files.loading import FileRefused, Guards
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
class BrokenEntry:
    """An entry of feeds.yaml that cannot be used: its files are refused with `reason`, the other feeds load."""

    name: str
    reason: str
    pattern: str | None = None  # an external feed's pattern, when it can still be read

    def matches(self, file_name: str) -> bool:
        return self.pattern is not None and fnmatch.fnmatchcase(file_name, self.pattern)


@dataclass(frozen=True)
class FeedCatalog:
    external: dict[str, ExternalFeed]
    datasets: dict[str, CsvDataset]
    broken: dict[str, BrokenEntry] = field(default_factory=dict)  # "external_feeds.<name>" / "csv_datasets.<name>"
    order: tuple[str, ...] = ()  # the external feeds' names, as feeds.yaml lists them

    def feed_for(self, file_name: str) -> ExternalFeed | BrokenEntry | None:
        """The first external feed, in feeds.yaml's order, whose pattern matches: a broken one refuses its files."""
        for name in self.order or tuple(self.external):
            entry = self.external.get(name) or self.broken.get(f"external_feeds.{name}")
            if entry is not None and entry.matches(file_name):
                return entry
        return None


EXTERNAL_SETTINGS = {"description", "pattern", "table", "mode", "delimiter", "encoding", "header", "columns",
                     "required", "trailer", "split_threshold_bytes", "post_load_sql", "header_record", "key",
                     "duplicates", "guards"}
DATASET_SETTINGS = {"description", "table", "required", "select", "columns", "duplicates"}


def _settings(raw, known: set[str], where: str) -> dict:
    if not isinstance(raw, dict):
        raise FeedConfigError(f"{where}: expected a mapping of settings, got {type(raw).__name__}")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise FeedConfigError(f"{where}: unknown setting(s) {', '.join(map(str, unknown))}")
    return raw


def _external_feed(name: str, raw: dict) -> ExternalFeed:
    where = f"external_feeds.{name}"
    raw = _settings(raw, EXTERNAL_SETTINGS, where)
    if not isinstance(raw.get("pattern"), str) or not raw["pattern"]:
        raise FeedConfigError(f"{where}: needs a pattern (the file names it matches)")
    if "table" not in raw:
        raise FeedConfigError(f"{where}: needs a table (schema.table)")
    schema, table = qualified_table(str(raw["table"]))
    columns = _columns(raw.get("columns") or {}, where)
    header = tuple(identifier(h) for h in raw.get("header") or columns)
    if set(header) != set(columns):
        raise FeedConfigError(f"{where}: header and columns name different fields")
    if raw.get("mode", "append") not in MODES:
        raise FeedConfigError(f"{where}: mode must be one of {MODES}")
    feed = ExternalFeed(
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
    if set(feed.key) - set(columns):
        raise FeedConfigError(f"{where}: key names columns the feed does not have")
    return feed


def _csv_dataset(name: str, raw: dict) -> CsvDataset:
    where = f"csv_datasets.{name}"
    raw = _settings(raw, DATASET_SETTINGS, where)
    if "table" not in raw:
        raise FeedConfigError(f"{where}: needs a table (schema.table)")
    schema, table = qualified_table(str(raw["table"]))
    return CsvDataset(
        name=identifier(name),
        description=raw.get("description", ""),
        schema=schema,
        table=table,
        required=tuple(identifier(c) for c in raw.get("required") or ()),
        select=tuple(identifier(c) for c in raw.get("select") or ()),
        columns=_columns(raw.get("columns") or {}, where),
        allow_duplicates=_duplicates(raw, where),
    )


def parse_feeds(document: dict) -> FeedCatalog:
    """Every entry of feeds.yaml on its own: an entry that cannot be used is kept as a BrokenEntry with its
    reason (its files are refused, the others load); only a document that is not a mapping fails whole."""
    if not isinstance(document, dict):
        raise FeedConfigError(f"feeds.yaml: expected a mapping with external_feeds and csv_datasets, got "
                              f"{type(document).__name__}")
    external, datasets, broken = {}, {}, {}
    for section, parse, into in (("external_feeds", _external_feed, external), ("csv_datasets", _csv_dataset, datasets)):
        entries = document.get(section) or {}
        if not isinstance(entries, dict):
            raise FeedConfigError(f"feeds.yaml: {section} must be a mapping of names to settings")
        for name, raw in entries.items():
            try:
                entry = parse(str(name), raw)
                into[entry.name] = entry
            except (FeedConfigError, KeyError, TypeError, ValueError, AttributeError) as error:
                where = f"{section}.{name}"
                reason = str(error) if str(error).startswith(where) else f"{where}: {error}"
                pattern = raw.get("pattern") if isinstance(raw, dict) and isinstance(raw.get("pattern"), str) else None
                broken[f"{section}.{name}"] = BrokenEntry(str(name), reason, pattern)
    order = tuple(str(n) for n in document.get("external_feeds") or {})
    return FeedCatalog(external, datasets, broken, order)


def load_feeds(path: Path | None = None) -> FeedCatalog:
    """The feeds of `path`, else of $ETL_ASSETS_FEEDS (a deployment's own file), else the bundled feeds.yaml.
    Raises FeedConfigError only when the file as a whole cannot be read."""
    return _load_feeds(Path(path or os.environ.get("ETL_ASSETS_FEEDS") or FEEDS_PATH))


@cache
def _load_feeds(path: Path) -> FeedCatalog:
    try:
        with open(path, encoding="utf-8") as f:
            return parse_feeds(yaml.safe_load(f))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise FeedConfigError(f"{path} cannot be read: {error}") from None


def feed_catalog() -> FeedCatalog:
    """`load_feeds()` for a load: a feeds file that cannot be read refuses the file (ABORTED) with the reason."""
    try:
        return load_feeds()
    except FeedConfigError as error:
        raise FileRefused("ABORTED", f"feeds.yaml: {error}") from None


def refuse_broken(entry: BrokenEntry, what: str) -> FileRefused:
    """The refusal of a file whose feeds.yaml entry cannot be used."""
    return FileRefused("ABORTED", f"{what} {entry.name!r} in feeds.yaml is invalid, so its files are not loaded: "
                                  f"{entry.reason}")
