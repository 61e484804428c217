"""History mode: every version of every record, kept by the load that merges the current table.

A table whose spec keeps history (`TableSpec.history`, a primary key and a version column) has a
versions table beside it: the same name in the schema `<schema>_history` (`salesforce_history.account`),
so no source name can ever collide with it. Its columns are the table's, its lineage columns, and

- `_valid_from`: the version (the value of the version column, SystemModstamp or its fallback);
- `_valid_to`: the next version's `_valid_from`; for the last version, the time the record was
  deleted (its own `_valid_from` if that version is soft-deleted, `IsDeleted` = 1, else the
  table's `_deleted_in_source_at` mark from full backups, never before `_valid_from`), else null;
- `_is_current`: `_valid_to` is null (the last version of a record that is not deleted);
- `_deleted_at`: on the last version only, when the record was deleted (soft or hard);
- `_loaded_at`: when the version was first written.

One row per distinct (key, version): a version seen in several folders is one row, whose values and
lineage are those of its first appearance (the least partition, file, line), so any loading order
gives the same rows. The load keeps it in the same transaction as the merge, in two parts:

1. `version_steps`, where the batch's rows are all at hand (before the newest-version pass, or per
   chunk): versions the table lacks are inserted with their intervals, computed by one window over
   the versions of just the keys that gained one; the neighbours whose next version changed are
   re-closed; a version seen again from an earlier folder is replaced by that folder's row.
2. `closing_steps`, after the deletion marks were recomputed: the last version of each key whose mark
   was recomputed is closed or re-opened from the soft-delete flag and the current table's mark.

Everything is plain SQL every engine runs (window functions, UPDATE ... FROM, temporary tables), so
Redshift runs the same steps as PostgreSQL and DuckDB. `as_of_query` reads a table as of a time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from etl_assets.warehouse.batch import StagedBatch
from etl_assets.warehouse.dialect import LATEST, Dialect, table
from etl_assets.warehouse.spec import (
    DELETED_IN_SOURCE_AT,
    LINEAGE_COLUMNS,
    LOADED_AT,
    ColumnType,
    TableSpec,
    quote,
)
from etl_assets.warehouse.steps import Branch, PlanStep, Step

HISTORY_SUFFIX = "_history"  # the versions table's schema: `<schema>_history`
VALID_FROM, VALID_TO, IS_CURRENT, DELETED_AT = "_valid_from", "_valid_to", "_is_current", "_deleted_at"
HISTORY_COLUMNS = (VALID_FROM, VALID_TO, IS_CURRENT, DELETED_AT, LOADED_AT)
SOFT_DELETE_COLUMN = "isdeleted"  # Salesforce's IsDeleted: a version in the recycle bin
# Temporary tables of a load (names that contain no other temporary table's name).
VERSIONS = "etl_batch_versions"  # the batch's rows, one per (key, version), when keys repeat in it
NEW_VERSIONS = "etl_new_versions"  # (key, version) of the batch the versions table lacks
INTERVALS = "etl_intervals"  # the new versions' and re-closed neighbours' next version


def keeps_history(spec: TableSpec) -> bool:
    """Whether loads of `spec` keep its versions: asked for, and a key and version to keep them by."""
    return bool(spec.history and spec.primary_key and spec.version_column)


def history_spec(spec: TableSpec) -> TableSpec:
    """The versions table: the same name and columns in `<schema>_history`."""
    return replace(spec, schema=spec.schema + HISTORY_SUFFIX)


def history_table(spec: TableSpec) -> str:
    return table(history_spec(spec))


def soft_delete_column(spec: TableSpec) -> str | None:
    column = spec.column(SOFT_DELETE_COLUMN)
    return SOFT_DELETE_COLUMN if column is not None and column.type is ColumnType.BOOLEAN else None


def staged_names(spec: TableSpec) -> list[str]:
    return [c.name for c in spec.columns] + [name for name, _ in LINEAGE_COLUMNS]


# DDL.

def create_history_sql(d: Dialect, spec: TableSpec, batch: StagedBatch | None = None) -> str:
    stamp = d.type_names[ColumnType.DATETIME]
    defs = d._column_defs(spec.columns, batch) + d._lineage_defs() + [
        f"{quote(VALID_FROM)} {stamp} NOT NULL", f"{quote(VALID_TO)} {stamp}", f"{quote(IS_CURRENT)} BOOLEAN",
        f"{quote(DELETED_AT)} {stamp}", f"{quote(LOADED_AT)} {stamp}"]
    if d.primary_key_constraint:
        name = d.primary_key_name(history_spec(spec))
        defs.append((f"CONSTRAINT {quote(name)} " if name else "")
                    + f"PRIMARY KEY ({quote(spec.primary_key)}, {quote(VALID_FROM)})")
    return (f"CREATE TABLE IF NOT EXISTS {history_table(spec)} (\n  " + ",\n  ".join(defs) + "\n)"
            + d._table_attributes(spec))


def prepare_history_steps(d: Dialect, batch: StagedBatch, existing: dict[str, int | None] | None) -> list[Step]:
    """The schema and the versions table, or the columns it lacks and those it must widen or retype, as
    the table's own. `existing`: its columns now ({}: none; None: not known, so created if absent)."""
    spec = batch.spec
    versions = history_spec(spec)
    steps = [Step(f"CREATE SCHEMA IF NOT EXISTS {quote(versions.schema)}")]
    if not existing:
        return steps + [Step(create_history_sql(d, spec, batch)), *d.closed_versions_index_steps(versions)]
    steps += [Step(f"ALTER TABLE {table(versions)} ADD COLUMN {quote(c.name)} {d.column_type(c, batch)}")
              for c in spec.columns if c.name not in existing]
    retyped = {name: change for name, change in batch.retyped.items() if name in existing}
    return (steps + d.widen_steps(versions, batch, existing)
            + d.retype_steps(replace(batch, spec=versions, retyped=retyped)))


# The load's steps.

def _lineage_beats(spec: TableSpec, a: str, b: str) -> str:
    """`a`'s lineage (partition, file, line) is after `b`'s."""
    columns = [name for name, _ in LINEAGE_COLUMNS]
    expression = f"{a}.{quote(columns[-1])} > {b}.{quote(columns[-1])}"
    for column in reversed(columns[:-1]):
        x, y = f"{a}.{quote(column)}", f"{b}.{quote(column)}"
        expression = f"({x} > {y} OR ({x} = {y} AND {expression}))"
    return expression


def version_steps(d: Dialect, spec: TableSpec, source: str, params: tuple = (), repeats: bool = False,
                  counted: bool = True) -> list[PlanStep]:
    """The batch's versions into the versions table, reading every staged row from `source` (with
    `params`); `repeats`: a (key, version) may occur more than once in it, so it is made distinct first
    (the first appearance kept). One join of the batch with the versions table finds the versions it
    lacks and those seen again from an earlier folder (replaced: deleted, then inserted with the new
    ones, so no wide UPDATE, which DuckDB would keep in memory). A new last version that is soft-deleted
    is closed at its own time as it is inserted. Result `versions_added` (with `counted`)."""
    key, version = quote(spec.primary_key), quote(spec.version_column)
    target, vf, vt = history_table(spec), quote(VALID_FROM), quote(VALID_TO)
    names = [quote(n) for n in staged_names(spec)]
    steps: list[Step] = []
    if repeats:
        first = ", ".join(f"{quote(n)}" for n, _ in LINEAGE_COLUMNS)
        steps.append(Step(
            f"CREATE TEMPORARY TABLE {VERSIONS} AS SELECT {', '.join(names)} FROM (SELECT *, ROW_NUMBER() OVER "
            f"(PARTITION BY {key}, {version} ORDER BY {first}) AS etl_rank FROM {source} WHERE {version} IS NOT NULL"
            f") AS ranked WHERE etl_rank = 1", params))
        source, params = VERSIONS, ()
    soft_column = soft_delete_column(spec)
    soft = f"s.{quote(soft_column)} = 1" if soft_column else "1 = 0"
    bare = quote(spec.name)
    steps += [
        Step(f"CREATE TEMPORARY TABLE {NEW_VERSIONS} AS SELECT s.{key} AS {key}, s.{version} AS {vf}, "
             f"CASE WHEN h.{key} IS NULL THEN 1 ELSE 0 END AS etl_new FROM {source} AS s LEFT JOIN {target} AS h "
             f"ON h.{key} = s.{key} AND h.{vf} = s.{version} WHERE s.{version} IS NOT NULL "
             f"AND (h.{key} IS NULL OR {_lineage_beats(spec, 'h', 's')})", params),
        # No alias for the target: Redshift's DELETE takes none (its columns are named by the table's name).
        Step(f"DELETE FROM {target} USING {NEW_VERSIONS} AS n WHERE n.etl_new = 0 AND {bare}.{key} = n.{key} "
             f"AND {bare}.{vf} = n.{vf}"),
        # The next version of every version of the keys that gained one; kept: the new versions, and
        # the existing ones whose next version is not what they hold.
        Step(f"CREATE TEMPORARY TABLE {INTERVALS} AS SELECT w.{key} AS {key}, w.{vf} AS {vf}, w.next_from AS {vt}, "
             f"w.etl_new AS etl_new FROM (SELECT v.{key}, v.{vf}, v.etl_new, v.old_to, v.old_deleted, "
             f"LEAD(v.{vf}) OVER (PARTITION BY v.{key} ORDER BY v.{vf}) AS next_from FROM ("
             f"SELECT h.{key} AS {key}, h.{vf} AS {vf}, 0 AS etl_new, h.{vt} AS old_to, h.{quote(DELETED_AT)} AS "
             f"old_deleted FROM {target} AS h WHERE h.{key} IN (SELECT n.{key} FROM {NEW_VERSIONS} AS n) "
             f"UNION ALL SELECT n.{key}, n.{vf}, 1, NULL, NULL FROM {NEW_VERSIONS} AS n) AS v) AS w "
             f"WHERE w.etl_new = 1 OR (w.next_from IS NOT NULL AND (w.old_to IS NULL OR w.old_deleted IS NOT NULL "
             f"OR w.old_to <> w.next_from))"),
        Step(f"INSERT INTO {target} ({', '.join(names)}, {vf}, {vt}, {quote(IS_CURRENT)}, {quote(DELETED_AT)}, "
             f"{quote(LOADED_AT)}) SELECT {', '.join('s.' + n for n in names)}, s.{version}, "
             f"CASE WHEN i.{vt} IS NOT NULL THEN i.{vt} WHEN {soft} THEN s.{version} END, "
             f"CASE WHEN i.{vt} IS NULL AND NOT ({soft}) THEN TRUE ELSE FALSE END, "
             f"CASE WHEN i.{vt} IS NULL AND {soft} THEN s.{version} END, CURRENT_TIMESTAMP FROM {source} AS s "
             f"JOIN {INTERVALS} AS i ON i.{key} = s.{key} AND i.{vf} = s.{version} WHERE i.etl_new = 1", params,
             result="versions_added" if counted else None),
        Step(f"UPDATE {target} AS h SET {vt} = i.{vt}, {quote(IS_CURRENT)} = FALSE, {quote(DELETED_AT)} = NULL "
             f"FROM {INTERVALS} AS i WHERE i.etl_new = 0 AND h.{key} = i.{key} AND h.{vf} = i.{vf}"),
        Step(f"DROP TABLE {INTERVALS}"),
        Step(f"DROP TABLE {NEW_VERSIONS}"),
    ]
    if source == VERSIONS:
        steps.append(Step(f"DROP TABLE {VERSIONS}"))
    if repeats or not d.capabilities.runs_steps_in_order:
        return steps
    # Into an empty versions table (a first load), with no key repeated: each row is its key's only
    # version, inserted with its closing at once, no join; a named key is built once after the rows.
    first = [Step(f"INSERT INTO {target} ({', '.join(names)}, {vf}, {vt}, {quote(IS_CURRENT)}, {quote(DELETED_AT)}, "
                  f"{quote(LOADED_AT)}) SELECT {', '.join('s.' + n for n in names)}, s.{version}, "
                  f"CASE WHEN {soft} THEN s.{version} END, CASE WHEN {soft} THEN FALSE ELSE TRUE END, "
                  f"CASE WHEN {soft} THEN s.{version} END, CURRENT_TIMESTAMP FROM {source} AS s "
                  f"WHERE s.{version} IS NOT NULL", params, result="versions_added" if counted else None)]
    name = d.primary_key_name(history_spec(spec))
    if d.primary_key_constraint and name:
        first = [Step(f"ALTER TABLE {target} DROP CONSTRAINT IF EXISTS {quote(name)}"), *first,
                 Step(f"ALTER TABLE {target} ADD CONSTRAINT {quote(name)} PRIMARY KEY ({key}, {vf})")]
    return [Step(f"SELECT NOT EXISTS (SELECT 1 FROM {target})", fetch=True, result="history_empty"),
            Branch("history_empty", then=tuple(first), otherwise=tuple(steps))]


def closing_steps(d: Dialect, spec: TableSpec, deleted_keys: str) -> list[Step]:
    """Close or re-open the last version of the keys whose deletion mark the load recomputed (in
    `deleted_keys`: those marked before or now), and of the staged keys (LATEST) with a closed version
    (DuckDB's merge re-inserts the rows a batch beats unmarked, so they are not among the marked before).
    No other key's closing can change: a soft delete is closed as its version is inserted. Its deletion is the earlier of its own soft delete (its
    `_valid_from`) and the table's mark; only rows whose closing changes are written."""
    key, target, vf = quote(spec.primary_key), history_table(spec), quote(VALID_FROM)
    deleted = quote(DELETED_AT)
    soft_column = soft_delete_column(spec)
    soft = f"CASE WHEN l.{quote(soft_column)} = 1 THEN l.{vf} END" if soft_column else "NULL"
    hard = f"c.{quote(DELETED_IN_SOURCE_AT)}"
    earlier = f"CASE WHEN {soft} IS NULL THEN {hard} WHEN {hard} IS NULL THEN {soft} WHEN {hard} < {soft} " \
              f"THEN {hard} ELSE {soft} END"
    return [Step(
        f"UPDATE {target} AS h SET {deleted} = x.deleted_at, {quote(VALID_TO)} = CASE WHEN x.deleted_at IS NULL "
        f"THEN NULL WHEN x.deleted_at > h.{vf} THEN x.deleted_at ELSE h.{vf} END, {quote(IS_CURRENT)} = CASE WHEN "
        f"x.deleted_at IS NULL THEN TRUE ELSE FALSE END FROM (SELECT l.{key} AS {key}, l.{vf} AS {vf}, {earlier} "
        f"AS deleted_at FROM (SELECT {key} FROM {deleted_keys} UNION SELECT o.{key} FROM {target} AS o "
        f"JOIN {LATEST} AS s ON s.{key} = o.{key} WHERE o.{deleted} IS NOT NULL) AS k JOIN {target} AS l "
        f"ON l.{key} = k.{key} "
        f"LEFT JOIN {table(spec)} AS c ON c.{key} = l.{key} WHERE (l.{quote(VALID_TO)} IS NULL "
        f"OR l.{deleted} IS NOT NULL)) AS x WHERE h.{key} = x.{key} AND h.{vf} = x.{vf} AND (h.{deleted} <> "
        f"x.deleted_at OR (h.{deleted} IS NULL AND x.deleted_at IS NOT NULL) OR (h.{deleted} IS NOT NULL AND "
        f"x.deleted_at IS NULL))")]


# Reading it.

def as_of_query(spec, when: dt.datetime | dt.date | str, dialect: str = "postgres",
                columns: list[str] | None = None) -> str:
    """A SELECT of `spec`'s rows as they were at `when` (a datetime, a date: its 00:00 UTC, or ISO
    text): for each key, the version whose interval holds `when`, leaving out records deleted then
    (soft-deleted versions too). `when` is written as a literal checked to be a timestamp, so the
    query can be printed and pasted; `dialect` (postgres, redshift, duckdb) is checked: all three read it.
    `spec` is the object's table spec, or anything with a `table_spec()` (a SalesforceObject); not the
    versions table's spec."""
    if not isinstance(spec, TableSpec):
        spec = spec.table_spec()
    if isinstance(when, str):
        when = dt.datetime.fromisoformat(when.replace("Z", "+00:00")) if "T" in when or " " in when \
            else dt.date.fromisoformat(when)
    if not isinstance(when, dt.datetime):
        when = dt.datetime.combine(when, dt.time(0), dt.timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    stamp = when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")
    if dialect not in ("postgres", "redshift", "duckdb"):
        raise ValueError(f"dialect must be postgres, redshift or duckdb, not {dialect!r}")
    at = f"CAST('{stamp}' AS TIMESTAMPTZ)"  # the same spelling on all three
    names = ", ".join(quote(c) for c in (columns or staged_names(spec)))
    soft = soft_delete_column(spec)
    alive = f" AND ({quote(soft)} IS NULL OR {quote(soft)} = 0)" if soft else ""
    return (f"SELECT {names} FROM {history_table(spec)} WHERE {quote(VALID_FROM)} <= {at} "
            f"AND ({quote(VALID_TO)} IS NULL OR {quote(VALID_TO)} > {at}){alive}")
