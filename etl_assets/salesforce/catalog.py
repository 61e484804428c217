"""The Salesforce object catalog: `catalog.yaml` read into typed objects.

The catalog is the single source of truth for which objects exist, how their
columns are typed and checked, and which warehouse table each one merges into.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from etl_assets.resources.warehouse.spec import (
    LOAD_CHANGES,
    LONG_TEXT_POLICIES,
    Column,
    ColumnType,
    TableSpec,
    column_name,
    identifier,
)

CATALOG_PATH = Path(__file__).with_name("catalog.yaml")
KNOWN_CHECKS = {"isin", "min_length", "max_length", "min", "max", "regex", "salesforce_id"}
MAX_TABLE_COLUMNS = 1_600  # PostgreSQL's and Redshift's limit, applied on every target so tables agree
# Catalog types: the warehouse's, and `id` (Salesforce Id or reference: text stored in its 18-character form).
ID_TYPE = "id"


class CatalogError(ValueError):
    """The catalog file is malformed."""


@dataclass(frozen=True)
class CatalogColumn:
    api_name: str
    type: ColumnType
    nullable: bool = True
    checks: dict = field(default_factory=dict, hash=False, compare=False)
    is_id: bool = False  # a Salesforce Id or reference: 15-character spellings become 18, anything else is refused
    long_text: str = "truncate"  # what Redshift does with a value over 65,535 bytes (see spec.Column)

    @property
    def name(self) -> str:
        return column_name(self.api_name)


@dataclass(frozen=True)
class SalesforceObject:
    api_name: str
    description: str
    columns: tuple[CatalogColumn, ...]
    schema: str
    primary_key: str
    version_column: str
    redshift: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def table(self) -> str:
        return identifier(self.api_name)

    @property
    def asset_name(self) -> str:
        return self.table

    def column(self, name: str) -> CatalogColumn | None:
        """The catalog column for a warehouse column name (lower-cased)."""
        return next((c for c in self.columns if c.name == name), None)

    def table_spec(self, extra_columns: tuple[str, ...] = (), source_names: dict[str, str] | None = None) -> TableSpec:
        """The warehouse table; `extra_columns` (schema drift) load as text. `source_names` maps a
        column to the header field it was normalized from, kept in the column's metadata."""
        sources = source_names or {}
        columns = [Column(c.name, c.type, c.nullable, sources.get(c.name, c.api_name), c.long_text)
                   for c in self.columns]
        columns += [Column(name, ColumnType.STRING, source_name=sources.get(name)) for name in extra_columns]
        columns.append(Column(LOAD_CHANGES, ColumnType.STRING))
        return TableSpec(
            schema=self.schema,
            name=self.table,
            primary_key=identifier(self.primary_key),
            version_column=identifier(self.version_column),
            columns=tuple(columns),
            description=self.description,
            track_deletions=True,
            extra={"redshift": self.redshift} if self.redshift else {},
        )


def _parse_column(api_name: str, raw, where: str) -> CatalogColumn:
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict) or "type" not in raw:
        raise CatalogError(f"{where}.{api_name}: expected a type or a mapping with 'type'")
    is_id = raw["type"] == ID_TYPE or bool((raw.get("checks") or {}).get("salesforce_id"))
    try:
        type_ = ColumnType.STRING if raw["type"] == ID_TYPE else ColumnType(raw["type"])
    except ValueError:
        allowed = ", ".join([ID_TYPE, *(t.value for t in ColumnType)])
        raise CatalogError(f"{where}.{api_name}: unknown type {raw['type']!r} (use {allowed})") from None
    checks = raw.get("checks") or {}
    unknown = set(checks) - KNOWN_CHECKS
    if unknown:
        raise CatalogError(f"{where}.{api_name}: unknown checks {sorted(unknown)}")
    unknown_keys = set(raw) - {"type", "nullable", "checks", "long_text"}
    if unknown_keys:
        raise CatalogError(f"{where}.{api_name}: unknown keys {sorted(unknown_keys)}")
    long_text = raw.get("long_text", "truncate")
    if long_text not in LONG_TEXT_POLICIES:
        raise CatalogError(f"{where}.{api_name}: long_text must be one of {', '.join(LONG_TEXT_POLICIES)}")
    if not column_name(api_name):
        raise CatalogError(f"{where}.{api_name}: the name normalizes to nothing")
    return CatalogColumn(api_name, type_, bool(raw.get("nullable", True)), dict(checks), is_id, long_text)


def _parse_redshift(raw: dict, where: str) -> dict:
    """Optional Redshift table design: distkey, sortkey (a list), and a procedure CALLed after each merge."""
    unknown = set(raw) - {"distkey", "sortkey", "procedure"}
    if unknown:
        raise CatalogError(f"{where}.redshift: unknown keys {sorted(unknown)}")
    result = {}
    if "distkey" in raw:
        result["distkey"] = identifier(raw["distkey"])
    if "sortkey" in raw:
        result["sortkey"] = [identifier(c) for c in raw["sortkey"]]
    if "procedure" in raw:
        parts = str(raw["procedure"]).split(".")
        if len(parts) > 2:
            raise CatalogError(f"{where}.redshift.procedure: expected [schema.]name")
        result["procedure"] = ".".join(identifier(p) for p in parts)
    return result


def parse_catalog(document: dict) -> dict[str, SalesforceObject]:
    common = document.get("common_columns") or {}
    objects: dict[str, SalesforceObject] = {}
    for api_name, entry in (document.get("objects") or {}).items():
        entry = entry or {}
        where = f"objects.{api_name}"
        own = entry.get("columns") or {}
        columns = [_parse_column(n, raw, where) for n, raw in {**common, **own}.items()]
        names = [c.name for c in columns]
        if len(set(names)) != len(names):
            raise CatalogError(f"{where}: column names collide once normalized")
        obj = SalesforceObject(
            api_name=api_name,
            description=entry.get("description", ""),
            columns=tuple(columns),
            schema=identifier(entry.get("schema", document.get("schema", "salesforce"))),
            primary_key=entry.get("primary_key", document.get("primary_key", "Id")),
            version_column=entry.get("version_column", document.get("version_column", "SystemModstamp")),
            redshift=_parse_redshift(entry.get("redshift") or {}, where),
        )
        obj.table_spec()  # validates keys and identifiers
        if obj.table in {o.table for o in objects.values()}:
            raise CatalogError(f"{where}: table name {obj.table!r} is used twice")
        objects[api_name] = obj
    if not objects:
        raise CatalogError("the catalog lists no objects")
    return objects


@cache
def load_catalog(path: Path = CATALOG_PATH) -> dict[str, SalesforceObject]:
    """API name -> object, in catalog order."""
    with open(path, encoding="utf-8") as f:
        return parse_catalog(yaml.safe_load(f))
