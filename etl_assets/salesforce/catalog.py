"""The Salesforce object catalog: which objects exist, how their columns are typed, where they merge.

Two files, merged column by column: `catalog.yaml`, written by people (types, checks, Redshift
design: it always wins), and `discovered.yaml`, generated state (`etl-assets catalog refresh`
infers types from sampled rows, `etl-assets catalog import-describe` takes them from Salesforce's
describe). So every object of a backup is an asset without a hand-written line, and a type is
pinned by declaring it. Both are plain files in the repository: reviewed in pull requests,
versioned with the code, read in milliseconds when the code location loads (docs/salesforce-objects.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import yaml

from etl_assets.landing.column_policies import (
    Action,
    ObjectPolicies,
    PolicyError,
    Rule,
    parse_object_policies,
    parse_rules,
)
from etl_assets.warehouse.spec import (
    FULL_BACKUP_IDS,
    LOAD_CHANGES,
    LONG_TEXT_POLICIES,
    MAX_IDENTIFIER_LENGTH,
    InvalidIdentifier,
    Column,
    ColumnType,
    TableSpec,
    column_name,
    identifier,
)

CATALOG_PATH = Path(__file__).with_name("catalog.yaml")
DISCOVERED_PATH = Path(__file__).with_name("discovered.yaml")
DISCOVERED_ENV = "ETL_ASSETS_SALESFORCE_DISCOVERED"  # another discovered state file (tests, a second org)
KNOWN_CHECKS = {"isin", "min_length", "max_length", "min", "max", "regex", "salesforce_id"}
MAX_TABLE_COLUMNS = 1_600  # PostgreSQL's and Redshift's limit, applied on every target so tables agree
# Catalog types: the warehouse's, `id` (Salesforce Id or reference: text stored in its 18-character
# form) and `time` (Salesforce Time, exported as `HH:MM:SS.sssZ`: text checked for that shape).
ID_TYPE, TIME_TYPE = "id", "time"
CATALOG_TYPES = (ColumnType.STRING.value, ID_TYPE, TIME_TYPE, *(t.value for t in ColumnType if t is not ColumnType.STRING))
TIME_PATTERN = r"[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,3})?Z"
# Where a column's type came from, strongest first: catalog.yaml, a describe, sampled rows.
DECLARED, DESCRIBED, INFERRED = "declared", "described", "inferred"
# "Newest wins" is decided by the first of these an object has (docs/salesforce-objects.md).
VERSION_FALLBACK = ("SystemModstamp", "LastModifiedDate", "CreatedDate")
# History mode (docs/history.md): every object keeps its versions unless catalog.yaml says `history: false`
# for it, or this deployment default is off.
HISTORY_ENV = "ETL_ASSETS_SALESFORCE_HISTORY"
HISTORY_SETTINGS = {"on": True, "off": False}


def history_default() -> bool:
    """The deployment's default for objects catalog.yaml says nothing about (ETL_ASSETS_SALESFORCE_HISTORY)."""
    value = (os.environ.get(HISTORY_ENV) or "on").strip().lower()
    if value not in HISTORY_SETTINGS:
        raise CatalogError(f"{HISTORY_ENV} must be on or off, not {value!r}")
    return HISTORY_SETTINGS[value]


class CatalogError(ValueError):
    """The catalog file is malformed."""


# Object names come from folder and file names in the landing zone: data, never structure. One rule
# (docs/salesforce-objects.md#object-names): an object is a Salesforce API name (letters, digits and
# underscores, starting with a letter, as Salesforce allows; at most 80 characters, longer than any
# namespaced custom object's); anything else is refused for that object only, with this reason. A
# name too long for a table beside the tables named after it (`<table>_full_backup_ids`, the longest:
# 47 characters) is shortened with a hash.
OBJECT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,79}")
MAX_TABLE_NAME = MAX_IDENTIFIER_LENGTH - max(len(FULL_BACKUP_IDS), len("_rejects"))
NOT_AN_OBJECT_NAME = ("not a Salesforce API name (letters, digits and underscores, starting with a letter, "
                      "at most 80 characters), so it cannot name a table or asset")


def object_name_problem(api_name: str) -> str | None:
    """Why `api_name` (a folder or file name) cannot be an object, or None."""
    return None if OBJECT_NAME.fullmatch(api_name) else NOT_AN_OBJECT_NAME


def table_name(api_name: str) -> str:
    """The object's table: its lower-cased API name, shortened with a hash of the whole name when a
    table named after it (`_rejects`, `_full_backup_ids`) would pass PostgreSQL's 63-character limit."""
    lowered = identifier(api_name[:MAX_IDENTIFIER_LENGTH]) and api_name.lower()
    if len(lowered) <= MAX_TABLE_NAME:
        return lowered
    digest = hashlib.blake2b(lowered.encode(), digest_size=4).hexdigest()
    return f"{lowered[:MAX_TABLE_NAME - 9].rstrip('_')}_{digest}"


@dataclass(frozen=True)
class CatalogColumn:
    api_name: str
    type: ColumnType
    nullable: bool = True
    checks: dict = field(default_factory=dict, hash=False, compare=False)
    is_id: bool = False  # a Salesforce Id or reference: 15-character spellings become 18
    long_text: str = "truncate"  # what Redshift does with a value over 65,535 bytes (see spec.Column)
    source: str = DECLARED  # declared and described types refuse values; an inferred one widens instead
    catalog_type: str = ""  # the type as the catalog spells it (`id`, `time`, or the warehouse type)

    @property
    def name(self) -> str:
        return column_name(self.api_name)

    @property
    def strict(self) -> bool:
        """Whether a value that does not fit the type rejects the row (else the column widens)."""
        return self.source != INFERRED


@dataclass(frozen=True)
class SalesforceObject:
    api_name: str
    description: str
    columns: tuple[CatalogColumn, ...]
    schema: str
    primary_key: str
    version_column: str | None  # None: no version column at all; the later folder, file and line wins
    redshift: dict = field(default_factory=dict, hash=False, compare=False)
    source: str = DECLARED  # declared (catalog.yaml), or described / inferred (discovered.yaml only)
    # What reaches the warehouse of each column (docs/personal-data.md); None: every column kept.
    policies: ObjectPolicies | None = field(default=None, hash=False, compare=False)
    excluded: tuple[str, ...] = ()  # API names of the catalog's columns an `exclude` policy removed
    history: bool = True  # every version kept in `<schema>_history.<table>` (needs a version column)

    @property
    def keeps_history(self) -> bool:
        return self.history and self.version_column is not None

    @property
    def namespace(self) -> str | None:
        """The managed package's prefix (`litify_pm` of `litify_pm__Matter__c`), if any."""
        parts = self.api_name.split("__")
        return parts[0] if len(parts) >= 3 else None

    @property
    def group(self) -> str:
        """Asset group: standard objects, custom ones, and one group per managed package."""
        if self.namespace:
            return f"salesforce_{column_name(self.namespace)}"
        return "salesforce_custom" if "__" in self.api_name else "salesforce"

    def column_sources(self) -> dict[str, list[str]]:
        """Source (declared, described, inferred) -> the API names of its columns."""
        by_source: dict[str, list[str]] = {}
        for c in self.columns:
            by_source.setdefault(c.source, []).append(c.api_name)
        return by_source

    def with_types(self, types: dict[str, ColumnType]) -> SalesforceObject:
        """This object with some (inferred) columns widened to other types."""
        columns = tuple(replace(c, type=types[c.name], is_id=False, catalog_type=types[c.name].value)
                        if c.name in types else c for c in self.columns)
        return replace(self, columns=columns)

    def with_policies(self, policies: ObjectPolicies) -> SalesforceObject:
        """This object under `policies`: an excluded column is no column at all, and a hashed or masked
        one is text without the type's checks (they were written for the clear value)."""
        columns, excluded = [], []
        for c in self.columns:
            action = policies.policy(c.api_name).action
            if action is Action.EXCLUDE:
                excluded.append(c.api_name)
                continue
            if action in (Action.HASH, Action.MASK):
                c = replace(c, type=ColumnType.STRING, checks={}, is_id=False, catalog_type=ColumnType.STRING.value)
            columns.append(c)
        return replace(self, columns=tuple(columns), policies=policies, excluded=tuple(excluded))

    def policy_catches(self) -> dict[str, list[str]]:
        """Where a policy was set (an object's entry, a rule) -> the catalog columns it applies to, as
        `Object.Field action`: what `etl-assets catalog refresh` lists."""
        caught: dict[str, list[str]] = {}
        for api_name in (*self.excluded, *(c.api_name for c in self.columns)):
            policy = self.policies.policy(api_name) if self.policies else None
            if policy is not None and policy.action is not Action.KEEP:
                caught.setdefault(policy.origin, []).append(f"{self.api_name}.{api_name} {policy.action.value}")
        return caught

    def policy_note(self, field: str) -> str | None:
        """The column policy applied to `field` and where it was set, unless the value is kept as is."""
        policy = self.policies.policy(field) if self.policies else None
        return policy.describe if policy and policy.action is not Action.KEEP else None

    @property
    def table(self) -> str:
        return table_name(self.api_name)

    def column(self, name: str) -> CatalogColumn | None:
        """The catalog column for a warehouse column name (lower-cased)."""
        return next((c for c in self.columns if c.name == name), None)

    def table_spec(self, extra_columns: tuple[str, ...] = (), source_names: dict[str, str] | None = None) -> TableSpec:
        """The warehouse table; `extra_columns` (schema drift) load as text. `source_names` maps a
        column to the header field it was normalized from, kept in the column's metadata."""
        sources = source_names or {}
        key = column_name(self.primary_key)
        # Only the key is NOT NULL in the table: `nullable: false` is checked on the values of files that
        # have the field, and some objects' exports lack a common column (User has no IsDeleted).
        columns = [Column(c.name, c.type, c.nullable or c.name != key, sources.get(c.name, c.api_name), c.long_text,
                          self.policy_note(c.api_name)) for c in self.columns]
        columns += [Column(name, ColumnType.STRING, source_name=sources.get(name),
                           policy=self.policy_note(sources.get(name, name))) for name in extra_columns]
        columns.append(Column(LOAD_CHANGES, ColumnType.STRING))
        return TableSpec(
            schema=self.schema,
            name=self.table,
            primary_key=identifier(self.primary_key),
            version_column=identifier(self.version_column) if self.version_column else None,
            columns=tuple(columns),
            description=self.description,
            # A full snapshot marks rows "not newer than it" by their version: without one, nothing is marked.
            track_deletions=self.version_column is not None,
            history=self.history,
            extra={"redshift": self.redshift} if self.redshift else {},
        )


_DISCOVERED_KEYS = {"source", "length", "precision", "scale"}  # what discovered.yaml records beside the type
_SOURCES = {"describe": DESCRIBED, "inferred": INFERRED}


def _parse_column(api_name: str, raw, where: str, discovered: bool = False) -> CatalogColumn:
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict) or "type" not in raw:
        raise CatalogError(f"{where}.{api_name}: expected a type or a mapping with 'type'")
    if raw["type"] not in CATALOG_TYPES:
        raise CatalogError(f"{where}.{api_name}: unknown type {raw['type']!r} (use {', '.join(CATALOG_TYPES)})")
    is_id = raw["type"] == ID_TYPE or bool((raw.get("checks") or {}).get("salesforce_id"))
    type_ = ColumnType.STRING if raw["type"] in (ID_TYPE, TIME_TYPE) else ColumnType(raw["type"])
    checks = dict(raw.get("checks") or {})
    unknown = set(checks) - KNOWN_CHECKS
    if unknown:
        raise CatalogError(f"{where}.{api_name}: unknown checks {sorted(unknown)}")
    unknown_keys = set(raw) - {"type", "nullable", "checks", "long_text"} - (_DISCOVERED_KEYS if discovered else set())
    if unknown_keys:
        raise CatalogError(f"{where}.{api_name}: unknown keys {sorted(unknown_keys)}")
    source = _SOURCES.get(raw.get("source", "inferred"), INFERRED) if discovered else DECLARED
    if raw["type"] == TIME_TYPE and source != INFERRED:
        checks.setdefault("regex", TIME_PATTERN)
    long_text = raw.get("long_text", "truncate")
    if long_text not in LONG_TEXT_POLICIES:
        raise CatalogError(f"{where}.{api_name}: long_text must be one of {', '.join(LONG_TEXT_POLICIES)}")
    if not column_name(api_name):
        raise CatalogError(f"{where}.{api_name}: the name normalizes to nothing")
    return CatalogColumn(api_name, type_, bool(raw.get("nullable", True)), checks, is_id, long_text, source,
                         raw["type"] if raw["type"] != "string" or not is_id else ID_TYPE)


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


def _parse_history(raw, where: str) -> bool:
    if not isinstance(raw, bool):
        raise CatalogError(f"{where}.history: expected true or false, not {raw!r}")
    return raw


def parse_catalog(document: dict, discovered: dict | None = None,
                  refused: dict[str, str] | None = None, history: bool | None = None) -> dict[str, SalesforceObject]:
    """catalog.yaml's objects, each with the discovered columns it does not declare, then every
    discovered object catalog.yaml does not name (API names compared ignoring case). A discovered
    object that cannot be an asset is left out, its reason in `refused`: nothing in the landing zone
    can stop the code location from loading. catalog.yaml itself is people's: its errors raise.
    `history`: whether objects keep their versions unless catalog.yaml says (None: the deployment's default)."""
    refused = {} if refused is None else refused
    default_history = history_default() if history is None else history
    common = document.get("common_columns") or {}
    try:
        rules = parse_rules(document.get("column_policies"))
    except PolicyError as error:
        raise CatalogError(str(error)) from None
    schema = identifier(document.get("schema", "salesforce"))
    found = {api.lower(): (api, entry or {}) for api, entry in ((discovered or {}).get("objects") or {}).items()}
    objects: dict[str, SalesforceObject] = {}
    for api_name, entry in (document.get("objects") or {}).items():
        entry = entry or {}
        where = f"objects.{api_name}"
        own = entry.get("columns") or {}
        columns = [_parse_column(n, raw, where) for n, raw in {**common, **own}.items()]
        _, extra = found.pop(api_name.lower(), (None, {}))
        columns += _discovered_columns(extra, {c.name for c in columns}, f"discovered {where}")
        _add(objects, _with_policies(SalesforceObject(
            api_name=api_name,
            description=entry.get("description", ""),
            columns=tuple(columns),
            schema=identifier(entry.get("schema", schema)),
            primary_key=entry.get("primary_key", document.get("primary_key", "Id")),
            version_column=entry.get("version_column", document.get("version_column", "SystemModstamp")),
            redshift=_parse_redshift(entry.get("redshift") or {}, where),
            history=_parse_history(entry.get("history", default_history), where),
        ), entry.get("column_policies"), rules), where)
    for api_name, entry in sorted(found.values()):
        where = f"discovered objects.{api_name}"
        if (problem := object_name_problem(api_name)) is not None:
            refused[api_name] = problem
            continue
        try:
            _add_discovered(objects, api_name, entry, schema, where, rules, default_history)
        except (ValueError, TypeError, AttributeError) as error:  # a state edited by hand, or older than a rule
            refused[api_name] = str(error) or type(error).__name__
    if not objects:
        raise CatalogError("the catalog lists no objects")
    return objects


def _with_policies(obj: SalesforceObject, own, rules: tuple[Rule, ...]) -> SalesforceObject:
    """`obj` under its own `column_policies` and the deployment's rules; the merge's columns are kept."""
    protected = [obj.primary_key, *([obj.version_column] if obj.version_column else [])]
    try:
        return obj.with_policies(parse_object_policies(obj.api_name, own, rules, protected))
    except PolicyError as error:
        raise CatalogError(str(error)) from None


def _add_discovered(objects: dict[str, SalesforceObject], api_name: str, entry: dict, schema: str, where: str,
                    rules: tuple[Rule, ...] = (), history: bool = True) -> None:
    """One object of the discovered state, typed by its columns (the version column must be a datetime)."""
    columns = _discovered_columns(entry, set(), where)
    if "id" not in {c.name for c in columns}:  # the load refuses such a folder, naming it; the asset exists
        columns.insert(0, CatalogColumn("Id", ColumnType.STRING, False, is_id=True, source=INFERRED,
                                        catalog_type=ID_TYPE))
    datetimes = {c.name for c in columns if c.type is ColumnType.DATETIME}  # text would compare by spelling
    version = next((v for v in VERSION_FALLBACK if column_name(v) in datetimes), None)
    source = _SOURCES.get(entry.get("source", "inferred"), INFERRED)
    label = entry.get("label") or api_name
    _add(objects, _with_policies(SalesforceObject(
        api_name=api_name, description=f"{label}: found in the backups ({source} types).",
        columns=tuple(columns), schema=schema, primary_key="Id", version_column=version, source=source,
        history=history,
    ), None, rules), where)


def _discovered_columns(entry: dict, declared: set[str], where: str) -> list[CatalogColumn]:
    """The state's columns the catalog does not declare; one whose name normalizes to nothing is left
    out (the load refuses a file with such a header field, naming file, line and column)."""
    columns = [_parse_column(n, raw, where, discovered=True) for n, raw in (entry.get("columns") or {}).items()
               if column_name(n)]
    return [c for c in columns if c.name not in declared]


def _add(objects: dict[str, SalesforceObject], obj: SalesforceObject, where: str) -> None:
    names = [c.name for c in obj.columns]
    if len(set(names)) != len(names):
        raise CatalogError(f"{where}: column names collide once normalized")
    obj.table_spec()  # validates keys and identifiers
    if obj.table in {o.table for o in objects.values()}:
        raise CatalogError(f"{where}: table name {obj.table!r} is used twice")
    objects[obj.api_name] = obj


def discovered_path() -> Path:
    return Path(os.environ.get(DISCOVERED_ENV) or DISCOVERED_PATH)


def _read_yaml(path: Path) -> dict:
    """The parsed file. The discovered state of 300 objects is ~1.5 MB of YAML, 1.5-3 s to parse even
    with libyaml, paid by every process that loads the code location (webserver, daemon, each run):
    the parse is kept as JSON (0.02 s to read) beside the temporary files, keyed by the file's hash."""
    text = path.read_bytes()
    cache = Path(tempfile.gettempdir()) / "etl_assets" / f"{path.stem}-{hashlib.sha256(text).hexdigest()}.json"
    try:
        return json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    document = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(document), encoding="utf-8")
        partial.replace(cache)  # atomic: a reader sees the whole parse or none
    except (OSError, TypeError):  # an unwritable temp dir, or a value JSON cannot hold: parse next time too
        pass
    return document


_REFUSED: dict[tuple[Path, Path], dict[str, str]] = {}


def load_catalog(path: Path = CATALOG_PATH, discovered: Path | None = None) -> dict[str, SalesforceObject]:
    """API name -> object: catalog.yaml's in its order, then the discovered ones by name. What the
    discovered state holds that cannot be an asset is left out (`refused_objects` says why).
    Cached per file pair and their stat, so a process that switches the discovered state (its
    environment variable) or rewrites a file reads the new one."""
    state = Path(discovered or discovered_path())
    return _load_catalog(Path(path), state, _stamp(path), _stamp(state))


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


@cache
def _load_catalog(path: Path, state: Path, *_stamps) -> dict[str, SalesforceObject]:
    refused: dict[str, str] = {}
    try:
        document = _read_yaml(state) if state.exists() else None
    except (OSError, ValueError, yaml.YAMLError) as error:  # the code location loads without it, and says so
        document, refused[str(state)] = None, f"the discovered state cannot be read: {error}"
    objects = parse_catalog(_read_yaml(path), document, refused)
    _REFUSED[(path, state)] = refused
    return objects


load_catalog.cache_clear = _load_catalog.cache_clear  # type: ignore[attr-defined]


def refused_objects(path: Path = CATALOG_PATH, discovered: Path | None = None) -> dict[str, str]:
    """Object (or state file) -> why the discovered state's entry is not an asset."""
    load_catalog(path, discovered)
    return _REFUSED.get((Path(path), Path(discovered or discovered_path())), {})
