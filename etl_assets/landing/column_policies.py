"""Column policies: keep personal data out of the warehouse before a value is typed, checked or stored.

A policy applies to a column's raw text as it leaves the CSV reader, before anything else sees it, so
every later copy of the value (the typed table, a reject's raw record, load changes, history, check
samples, Parquet spills, files staged for Redshift's COPY) holds only the policy's output:

- `keep` (the default): the value as exported;
- `exclude`: the column is dropped: no table column, no value anywhere;
- `hash`: HMAC-SHA-256 of the value's UTF-8 bytes with a secret key, as 64 lower-case hex digits,
  the same on every engine and every load (computed here, not in SQL), so hashed columns still join;
- `mask`: a documented part is kept: an e-mail's domain (`***@example.com`), else the last four
  characters of a value of eight or more (`***0134`), else `***`.

Empty values stay empty under every policy: that a field was blank is not personal data, and keeping
it blank keeps "not null" checks meaningful. Policies come from the catalog: per object and column,
and deployment-wide rules matching API names (docs/personal-data.md).
"""

from __future__ import annotations

import fnmatch
import hashlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

HASH_KEY_ENV = "ETL_ASSETS_HASH_KEY"
MIN_KEY_LENGTH = 16  # characters; 32 random bytes (e.g. `openssl rand -hex 32`) is the advice
SHA256_BLOCK = 64  # bytes: HMAC pads the key to it, and hashes a longer key first
HASH_BATCH_ROWS = 25_000  # rows of each record batch DuckDB hashes on a thread of its own
MASK = "***"
MASK_KEEPS = 4  # trailing characters a masked non-e-mail value keeps
MASK_MIN_LENGTH = 8  # a shorter value keeps nothing: four of seven characters would say too much


class Action(str, Enum):
    KEEP = "keep"
    EXCLUDE = "exclude"
    HASH = "hash"
    MASK = "mask"


class PolicyError(ValueError):
    """A policy entry in the catalog is malformed, or a `hash` policy has no usable key."""


@dataclass(frozen=True)
class Rule:
    """A deployment-wide policy for every column whose API name matches `pattern`.

    `pattern` is a glob compared without case (`Email`, `*Phone`, `*SSN*`); `Object.Field` names
    one object's field (`Contact.Birthdate`)."""

    pattern: str
    action: Action

    def matches(self, object_api: str, field: str) -> bool:
        target = f"{object_api}.{field}" if "." in self.pattern else field
        return fnmatch.fnmatchcase(target.lower(), self.pattern.lower())


@dataclass(frozen=True)
class ColumnPolicy:
    action: Action
    origin: str  # where it was set: an object's own entry or the rule that caught the column

    @property
    def describe(self) -> str:
        return f"{self.action.value} ({self.origin})"


KEEP = ColumnPolicy(Action.KEEP, "default")


@dataclass(frozen=True)
class ObjectPolicies:
    """One object's policies: its own entries (API names compared without case) first, then the rules in order."""

    object_api: str
    own: Mapping[str, Action]
    rules: tuple[Rule, ...] = ()

    def policy(self, field: str) -> ColumnPolicy:
        wanted = field.strip().lower()
        action = next((a for name, a in self.own.items() if name.lower() == wanted), None)
        if action is not None:
            return ColumnPolicy(action, f"objects.{self.object_api}.column_policies")
        for rule in self.rules:
            if rule.matches(self.object_api, field.strip()):
                return ColumnPolicy(rule.action, f"rule {rule.pattern!r}")
        return KEEP

    def for_header(self, header: Iterable[str]) -> dict[str, ColumnPolicy]:
        """The header fields a policy other than `keep` applies to."""
        return {f: p for f in header if (p := self.policy(f)).action is not Action.KEEP}

    @property
    def may_hash(self) -> bool:
        """Whether any column of this object could be hashed (a rule may catch a column not yet seen)."""
        return Action.HASH in self.own.values() or any(r.action is Action.HASH for r in self.rules)


def _action(raw, where: str) -> Action:
    try:
        return Action(str(raw).strip().lower())
    except ValueError:
        raise PolicyError(f"{where}: unknown policy {raw!r} (use {', '.join(a.value for a in Action)})") from None


def parse_rules(raw, where: str = "column_policies") -> tuple[Rule, ...]:
    """Deployment-wide rules: a list of `{match: <glob>, policy: <action>}`, first match wins."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise PolicyError(f"{where}: expected a list of {{match: <pattern>, policy: <policy>}}")
    rules = []
    for position, entry in enumerate(raw, start=1):
        at = f"{where}[{position}]"
        if not isinstance(entry, dict) or set(entry) != {"match", "policy"}:
            raise PolicyError(f"{at}: expected exactly the keys 'match' and 'policy'")
        pattern = str(entry["match"]).strip()
        if not pattern or pattern.count(".") > 1:
            raise PolicyError(f"{at}: 'match' must be a field name pattern, or Object.Field")
        rules.append(Rule(pattern, _action(entry["policy"], at)))
    return tuple(rules)


def parse_object_policies(object_api: str, raw, rules: tuple[Rule, ...] = (),
                          protected: Iterable[str] = ()) -> ObjectPolicies:
    """An object's `column_policies: {Field: action}` with the deployment's rules behind them.

    `protected` fields (the primary key, the version column) must be kept whole: the merge compares
    them, so an explicit policy on one is refused and a rule never catches one."""
    where = f"objects.{object_api}.column_policies"
    if raw is not None and not isinstance(raw, dict):
        raise PolicyError(f"{where}: expected a mapping of field name to policy")
    own = {str(field).strip(): _action(action, f"{where}.{field}") for field, action in (raw or {}).items()}
    keep = {p.lower(): p for p in protected}
    for field, action in own.items():
        if field.lower() in keep and action is not Action.KEEP:
            raise PolicyError(f"{where}.{field}: the merge compares this column, so it can only be kept")
    own = {**own, **{p: Action.KEEP for p in keep.values() if p.lower() not in {f.lower() for f in own}}}
    return ObjectPolicies(object_api, own, rules)


def hash_key(value: str | None, needed_by: str) -> bytes:
    """The HMAC key from its environment variable's value; a missing or short one is refused with
    what to do. `needed_by` names what hashes (for the message)."""
    if not value:
        raise PolicyError(f"{needed_by} hashes columns but {HASH_KEY_ENV} is not set: set it to a secret of at "
                          f"least {MIN_KEY_LENGTH} characters (e.g. `openssl rand -hex 32`), the same for every "
                          "run, or change the policy (docs/personal-data.md)")
    if len(value) < MIN_KEY_LENGTH:
        raise PolicyError(f"{HASH_KEY_ENV} is {len(value)} characters long; a hashing key needs at least "
                          f"{MIN_KEY_LENGTH} (e.g. `openssl rand -hex 32`)")
    return value.encode("utf-8")


def hash_values(values: pa.Array, key: bytes) -> pa.Array:
    """HMAC-SHA-256 hex digests of the non-empty values; null and '' stay as they are.

    HMAC (RFC 2104) is two SHA-256 passes: sha256((K ^ opad) || sha256((K ^ ipad) || message)).
    DuckDB runs them vectorized over the Arrow column on every core, 2-3x faster than a Python call
    per value (`hmac.digest`); etl_assets_tests/test_column_policies.py checks it against RFC 4231's
    vectors and Python's `hmac`."""
    block = (hashlib.sha256(key).digest() if len(key) > SHA256_BLOCK else key).ljust(SHA256_BLOCK, b"\0")
    inner, outer = bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)
    # DuckDB scans an Arrow table one record batch per thread: a chunk of the load cut into batches keeps
    # every core busy (1M e-mails in chunks of 100,000: 1.2 s as one batch a chunk, 0.65 s cut), and the
    # thread's connection is reused (a connection costs ~17 ms, ten a million rows).
    table = pa.Table.from_batches(pa.table({"v": values.cast(pa.string())}).to_batches(max_chunksize=HASH_BATCH_ROWS))
    connection = _policy_connection()
    connection.register("policy_values", table)
    try:
        digests = connection.sql(
            "SELECT CASE WHEN v = '' THEN v ELSE sha256($outer || unhex(sha256($inner || encode(v)))) END "
            "FROM policy_values", params={"outer": outer, "inner": inner}).to_arrow_table()
    finally:
        connection.unregister("policy_values")
    return digests.column(0).combine_chunks().cast(pa.string())


_THREAD = threading.local()


def _policy_connection() -> duckdb.DuckDBPyConnection:
    """This thread's in-memory DuckDB for hashing (a connection is not shared between threads)."""
    connection = getattr(_THREAD, "connection", None)
    if connection is None:
        connection = _THREAD.connection = duckdb.connect()
    return connection


def mask_values(values: pa.Array) -> pa.Array:
    """Each non-empty value reduced to its documented part (the module docstring); null and '' stay."""
    values = values.cast(pa.string())
    is_email = pc.match_substring(values, "@")
    email = pc.replace_substring_regex(values, "^.*@", MASK + "@")  # greedy: up to the last '@'
    length = pc.utf8_length(values)
    tail = pc.utf8_slice_codeunits(values, start=-MASK_KEEPS)
    other = pc.if_else(pc.greater_equal(length, MASK_MIN_LENGTH),
                       pc.binary_join_element_wise(pa.scalar(MASK), tail, ""), pa.scalar(MASK))
    masked = pc.if_else(is_email, email, other)
    return pc.if_else(pc.fill_null(pc.equal(length, 0), True), values, masked)


def apply_policies(batch: pa.RecordBatch, policies: Mapping[str, ColumnPolicy], key: bytes | None) -> pa.RecordBatch:
    """`batch` (raw text columns named by header field) with each policy applied: excluded columns
    gone, hashed and masked ones replaced. A `hash` without a key is refused, never skipped."""
    if not policies:
        return batch
    names, arrays = [], []
    for name, column in zip(batch.schema.names, batch.columns):
        policy = policies.get(name, KEEP)
        if policy.action is Action.EXCLUDE:
            continue
        if policy.action is Action.HASH:
            if key is None:
                raise PolicyError(f"{name} is to be hashed ({policy.origin}) but no key was given")
            column = hash_values(column, key)
        elif policy.action is Action.MASK:
            column = mask_values(column)
        names.append(name)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=names)
