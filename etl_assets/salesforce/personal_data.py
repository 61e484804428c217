"""The secret key of `hash` column policies, as the resource the object assets read it from.

The key is an `EnvVar` (ETL_ASSETS_HASH_KEY), resolved by Dagster when a run starts and shown in the
UI as the variable's name, never its value. It is asked for only when the catalog has a `hash` policy
or rule, so a deployment that hashes nothing needs no key; one that does cannot start a run without
it (Dagster's message names the variable). docs/personal-data.md says how to choose and rotate it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dagster as dg
import pyarrow as pa

from etl_assets.landing.column_policies import HASH_KEY_ENV, MASK, Action, hash_key, hash_values, mask_values
from etl_assets.salesforce.catalog import SalesforceObject
from etl_assets.salesforce.loaded_files import LEDGER_TABLE, forget_step
from etl_assets.warehouse.history import history_table, keeps_history, remade_view_steps, superseded_spec
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.spec import ColumnType, column_name, quote


class HashKey(dg.ConfigurableResource):
    """The HMAC key of `hash` column policies (ETL_ASSETS_HASH_KEY)."""

    value: str | None = None

    def for_object(self, obj: SalesforceObject) -> bytes | None:
        """The key as bytes if `obj` may hash a column, else None; a short key is refused, naming the object."""
        if obj.policies is None or not obj.policies.may_hash:
            return None
        return hash_key(self.value, obj.api_name)


def hash_key_resource(objects: Iterable[SalesforceObject]) -> HashKey:
    """The resource for these objects: reading the environment only if one of them may hash."""
    if any(obj.policies is not None and obj.policies.may_hash for obj in objects):
        return HashKey(value=dg.EnvVar(HASH_KEY_ENV))
    return HashKey()


# A value a policy already wrote: a rewrite leaves it alone, so running the command twice changes nothing.
# (A clear value of exactly 64 hex digits, or one starting with the mask, would be taken as written.)
_WRITTEN = {Action.HASH: re.compile(r"[0-9a-f]{64}"), Action.MASK: re.compile(re.escape(MASK) + ".*", re.S)}
MAPPING_ROWS = 1_000
WITHHELD = "(withheld by a column policy)"  # (clear, written) pairs per INSERT into the session's mapping table


@dataclass
class Rewrite:
    """What `rewrite_existing` did, or would do, to one column of the object's tables."""

    column: str
    action: Action
    values: int = 0  # distinct clear values rewritten (or that would be), over every table
    rejects: int = 0  # reject rows whose raw record changed
    note: str = ""


def _written(action: Action, value: str) -> bool:
    return bool(_WRITTEN[action].fullmatch(value)) if action in _WRITTEN else False


def _apply(action: Action, values: list[str], key: bytes | None) -> list[str]:
    array = pa.array(values, pa.string())
    return (hash_values(array, key) if action is Action.HASH else mask_values(array)).to_pylist()


def rewritten_tables(obj: SalesforceObject, tables: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """The tables `rewrite_existing` rewrites: the object's own, its superseded versions (history mode),
    `tables`, and its rejects."""
    spec = obj.table_spec()
    versions = [(superseded_spec(spec).schema, spec.name)] if keeps_history(spec) else []
    return list(dict.fromkeys([(spec.schema, spec.name), *versions, *tables, (spec.schema, spec.rejects_name)]))


def rewrite_existing(warehouse: Warehouse, obj: SalesforceObject, tables: Sequence[tuple[str, str]] = (),
                     key: bytes | None = None, dry_run: bool = False) -> list[Rewrite]:
    """Bring the rows already in the warehouse under the object's policies, in one transaction: an
    excluded column is dropped from the table, its versions table (history mode) and `tables`, a hashed or masked
    column's clear values are replaced, and the rejects' raw records are rewritten the same way.
    Values a policy already wrote are left alone, so a second run changes nothing. A column whose
    policy is `keep` is never touched: turning a policy off applies to new loads only."""
    spec = obj.table_spec()
    # History mode's versions: the current table's and the superseded ones' (docs/history.md); the view
    # over them is made anew once a column was dropped from them.
    versions = [(superseded_spec(spec).schema, spec.name)] if keeps_history(spec) else []
    owned = [t for t in rewritten_tables(obj, tables) if t != (spec.schema, spec.rejects_name)]
    results: list[Rewrite] = []
    with warehouse.session() as session:
        session.lock_table(spec)
        present = {t: session.table_columns(*t) for t in owned}
        # Lineage and load columns start with '_' (no Salesforce field can): no policy is theirs.
        columns = sorted({c for t in owned for c in present[t] if not c.startswith("_")})
        dropped = False
        rejects_columns = session.table_columns(spec.schema, spec.rejects_name)
        for column in columns:
            policy = obj.policies.policy(column) if obj.policies else None
            if policy is None or policy.action is Action.KEEP:
                continue
            result = Rewrite(column, policy.action)
            holders = [t for t in owned if column in present[t]]
            if policy.action is Action.EXCLUDE:
                result.note = f"dropped from {', '.join('.'.join(t) for t in holders)}"
                if not dry_run:
                    if versions and not dropped:  # PostgreSQL drops no column a view reads
                        session.execute(f"DROP VIEW IF EXISTS {history_table(spec)}")
                    dropped = dropped or bool(versions)
                    for schema, table in holders:
                        session.execute(f"ALTER TABLE {quote(schema)}.{quote(table)} DROP COLUMN {quote(column)}")
            else:
                clear = sorted({v for schema, table in holders for (v,) in session.fetchall(
                    f"SELECT DISTINCT {quote(column)} FROM {quote(schema)}.{quote(table)} "
                    f"WHERE {quote(column)} IS NOT NULL AND {quote(column)} <> ''")
                    if not _written(policy.action, v)})
                result.values = len(clear)
                if clear and not dry_run:
                    _replace(session, holders, column, dict(zip(clear, _apply(policy.action, clear, key))))
            results.append(result)
        if dropped and present[versions[0]]:
            for step in remade_view_steps(warehouse.dialect(), spec, session.table_columns(spec.schema, spec.name),
                                          session.table_columns(*versions[0])):
                session.execute(step.sql)
        if "raw_record" in rejects_columns:
            _rewrite_rejects(session, spec.schema, spec.rejects_name, obj, key, results, dry_run)
        if not dry_run and any(r.values or r.rejects or r.note for r in results) \
                and session.table_columns(spec.schema, LEDGER_TABLE):
            forget = forget_step(warehouse, spec.schema, spec.name)  # rewritten rows: every folder loads again
            session.execute(forget.sql, forget.params)
    return results


def _replace(session, tables: Sequence[tuple[str, str]], column: str, mapping: dict[str, str]) -> None:
    """UPDATE each table's `column` from old to new value through a temporary mapping table."""
    p = session.param
    session.execute("CREATE TEMPORARY TABLE etl_policy_map (clear_value TEXT, written_value TEXT)")
    pairs = list(mapping.items())
    for start in range(0, len(pairs), MAPPING_ROWS):
        part = pairs[start:start + MAPPING_ROWS]
        session.execute("INSERT INTO etl_policy_map VALUES " + ", ".join(f"({p}, {p})" for _ in part),
                        [v for pair in part for v in pair])
    for schema, table in tables:
        target = f"{quote(schema)}.{quote(table)}"
        session.execute(f"UPDATE {target} SET {quote(column)} = etl_policy_map.written_value FROM etl_policy_map "
                        f"WHERE {target}.{quote(column)} = etl_policy_map.clear_value")
    session.execute("DROP TABLE etl_policy_map")


def _rewrite_rejects(session, schema: str, table: str, obj: SalesforceObject, key: bytes | None,
                     results: list[Rewrite], dry_run: bool) -> None:
    """The rejects keep each refused row as read (JSON by header field) and quote the refused value in
    the reason: apply the policies to the record, and withhold a rewritten value from the reason."""
    by_column = {r.column: r for r in results}
    rows = session.fetchall(f"SELECT DISTINCT raw_record, reason FROM {quote(schema)}.{quote(table)} "
                            "WHERE raw_record IS NOT NULL")
    records: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for record, reason in rows:
        try:
            fields = json.loads(record)
        except ValueError:  # a record cut to Redshift's text limit is no JSON: it cannot be read, or rewritten
            fields = None
        if not isinstance(fields, dict):
            continue
        new_reason = reason or ""
        changed = False
        for field in list(fields):
            policy = obj.policies.policy(field) if obj.policies else None
            value = fields[field]
            if policy is None or policy.action is Action.KEEP or not isinstance(value, str) or not value:
                continue
            if policy.action is Action.EXCLUDE:
                del fields[field]
            elif not _written(policy.action, value):
                fields[field] = "" if dry_run else _apply(policy.action, [value], key)[0]  # a dry run needs no key
            else:
                continue
            changed = True
            new_reason = new_reason.replace(repr(value)[:77], WITHHELD)  # transform._short's spelling of it
            rewrite = by_column.get(column_name(field))
            if rewrite is None:
                rewrite = by_column[column_name(field)] = Rewrite(column_name(field), policy.action)
                results.append(rewrite)
            rewrite.rejects += 1
        if changed:
            records[record] = json.dumps(fields, ensure_ascii=False)
            if new_reason != (reason or ""):
                reasons[reason] = new_reason
    if not dry_run:
        if records:
            _replace(session, [(schema, table)], "raw_record", records)
        if reasons:
            _replace(session, [(schema, table)], "reason", reasons)


def kept_notes(warehouse: Warehouse, obj: SalesforceObject) -> list[str]:
    """For each kept text column holding values a policy wrote: that turning a policy off applies to new
    loads only (the rows already loaded keep their digests or masks until their folders load again)."""
    spec = obj.table_spec()
    types = warehouse.column_types(spec.schema, spec.name)
    kept = [c for c, t in types.items() if t is ColumnType.STRING and not c.startswith("_")
            and (obj.policies is None or obj.policies.policy(c).action is Action.KEEP)]
    if not kept:
        return []
    written = ", ".join(
        f"sum(CASE WHEN (length({quote(c)}) = 64 AND translate({quote(c)}, '0123456789abcdef', '') = '') "
        f"OR {quote(c)} LIKE '{MASK}%' THEN 1 ELSE 0 END)" for c in kept)
    [counts] = warehouse.query(f"SELECT {written} FROM {quote(spec.schema)}.{quote(spec.name)}")
    return [f"{obj.api_name}.{column}: kept, but {count} value(s) look hashed or masked: turning a policy off "
            "applies to new loads only; these rows keep them until their folders are loaded again"
            for column, count in zip(kept, counts) if count]
