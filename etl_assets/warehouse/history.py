"""History mode: every version of every record, kept by the load that merges the current table.

A table whose spec keeps history (`TableSpec.history`, a primary key and a version column) has its
versions readable as `<schema>_history.<table>` (`salesforce_history.account`): a view of two tables,

- the current table itself: each record's newest version, whose closing is known from the row (its
  soft-delete flag, `IsDeleted`, and the deletion mark from full backups); and
- `<schema>_superseded.<table>`: every older version, with the `_valid_to` its next version gave it.

So a version is written once: a first load writes nothing but the current table, and a reload moves
the rows it beats (the versions they become superseded by) into the superseded table. Separate
schemas keep any source name from colliding with either. The view's columns are the table's, its
lineage columns, and

- `_valid_from`: the version (the value of the version column, SystemModstamp or its fallback);
- `_valid_to`: the next version's `_valid_from`; for the last version, the time the record was
  deleted (its own `_valid_from` if that version is soft-deleted, `IsDeleted` = 1, else the
  table's `_deleted_in_source_at` mark from full backups, never before `_valid_from`), else null;
- `_is_current`: `_valid_to` is null (the last version of a record that is not deleted);
- `_deleted_at`: on the last version only, when the record was deleted (soft or hard);
- `_loaded_at`: when the version's row was written.

One row per distinct (key, version): a version seen in several folders is one row, whose values and
lineage are those of its latest appearance (the greatest partition, file, line: the current table's
own rule), so any loading order gives the same rows. `version_steps` runs in the merge's transaction
where the batch's rows are all at hand, before the current table changes:

1. the current rows a batch version is newer than are copied into the superseded table, closed at
   the batch's next version (their `_valid_to`);
2. batch versions older than their record's newest (a folder loaded late, or a key repeated in the
   batch) go into the superseded table too, replacing the same version seen from an earlier folder;
   their intervals, and their neighbours', come from one window over the versions of just those keys.

Everything is plain SQL every engine runs (window functions, UPDATE ... FROM, temporary tables, a
UNION ALL view; Redshift's is late-binding), so Redshift runs the same steps as PostgreSQL and DuckDB.
`as_of_query` reads a table as of a time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from etl_assets.warehouse.batch import StagedBatch
from etl_assets.warehouse.dialect import Dialect, newer, table, version_order
from etl_assets.warehouse.spec import (
    DELETED_IN_SOURCE_AT,
    LINEAGE_COLUMNS,
    LOADED_AT,
    ColumnType,
    TableSpec,
    quote,
)
from etl_assets.warehouse.steps import Step

HISTORY_SUFFIX = "_history"  # the versions view's schema: `<schema>_history`
SUPERSEDED_SUFFIX = "_superseded"  # the older versions' table's schema: `<schema>_superseded`
VALID_FROM, VALID_TO, IS_CURRENT, DELETED_AT = "_valid_from", "_valid_to", "_is_current", "_deleted_at"
HISTORY_COLUMNS = (VALID_FROM, VALID_TO, IS_CURRENT, DELETED_AT, LOADED_AT)
SOFT_DELETE_COLUMN = "isdeleted"  # Salesforce's IsDeleted: a version in the recycle bin
# Temporary tables of a load (names that contain no other temporary table's name).
VERSIONS = "etl_batch_versions"  # the batch's rows, one per (key, version), when keys repeat in it
NEW_VERSIONS = "etl_new_versions"  # (key, version) of the batch that become superseded versions
INTERVALS = "etl_intervals"  # the new superseded versions' and re-closed neighbours' next version

Existing = dict[str, int | None]  # a table's (or view's) columns now: name -> character width


@dataclass(frozen=True)
class HistoryNow:
    """The columns of the superseded table and of the versions view now ({}: absent); `view_is_table`:
    `<schema>_history.<table>` is a table, the versions as an earlier release kept them (migrated)."""

    superseded: Existing
    view: Existing
    view_is_table: bool = False


def history_now(session, spec: TableSpec) -> HistoryNow:
    """What a session finds of `spec`'s superseded table and versions view (`Session`)."""
    superseded, view = superseded_spec(spec), history_spec(spec)
    kinds = session.fetchall(f"SELECT table_type FROM information_schema.tables WHERE table_schema = {session.param} "
                             f"AND table_name = {session.param}", [view.schema, view.name])
    return HistoryNow(session.table_columns(superseded.schema, superseded.name),
                      session.table_columns(view.schema, view.name),
                      view_is_table=bool(kinds) and "TABLE" in str(kinds[0][0]).upper())


def keeps_history(spec: TableSpec) -> bool:
    """Whether loads of `spec` keep its versions: asked for, and a key and version to keep them by."""
    return bool(spec.history and spec.primary_key and spec.version_column)


def history_spec(spec: TableSpec) -> TableSpec:
    """The versions view: the same name and columns in `<schema>_history`."""
    return replace(spec, schema=spec.schema + HISTORY_SUFFIX)


def superseded_spec(spec: TableSpec) -> TableSpec:
    """The table of superseded versions: the same name in `<schema>_superseded`."""
    return replace(spec, schema=spec.schema + SUPERSEDED_SUFFIX)


def history_table(spec: TableSpec) -> str:
    return table(history_spec(spec))


def superseded_table(spec: TableSpec) -> str:
    return table(superseded_spec(spec))


def soft_delete_column(spec: TableSpec) -> str | None:
    column = spec.column(SOFT_DELETE_COLUMN)
    return SOFT_DELETE_COLUMN if column is not None and column.type is ColumnType.BOOLEAN else None


def staged_names(spec: TableSpec) -> list[str]:
    return [c.name for c in spec.columns] + [name for name, _ in LINEAGE_COLUMNS]


def _data_columns(existing: Existing) -> list[str]:
    """The source's columns among a table's: lineage and load columns start with '_' (no field can)."""
    return [name for name in existing if not name.startswith("_")]


# DDL.

def create_superseded_sql(d: Dialect, spec: TableSpec, batch: StagedBatch | None = None) -> str:
    stamp = d.type_names[ColumnType.DATETIME]
    defs = d._column_defs(spec.columns, batch) + d._lineage_defs() + [
        f"{quote(VALID_FROM)} {stamp} NOT NULL", f"{quote(VALID_TO)} {stamp} NOT NULL", f"{quote(LOADED_AT)} {stamp}"]
    if d.primary_key_constraint:
        name = d.primary_key_name(superseded_spec(spec))
        defs.append((f"CONSTRAINT {quote(name)} " if name else "")
                    + f"PRIMARY KEY ({quote(spec.primary_key)}, {quote(VALID_FROM)})")
    return (f"CREATE TABLE IF NOT EXISTS {superseded_table(spec)} (\n  " + ",\n  ".join(defs) + "\n)"
            + d._table_attributes(spec))


def prepare_history_steps(d: Dialect, batch: StagedBatch, current: Existing, now: HistoryNow | None,
                          current_alters: list[Step]) -> tuple[list[Step], list[Step]]:
    """(steps before the current table's DDL, steps after it): the schemas, the superseded table (or
    the columns it lacks, widened and retyped as the table's), and the versions view over both.
    `current`: the current table's columns now; `now`: the superseded table's and the view's (None:
    not known). The view is replaced where it can be (new columns come last); a column retyped needs
    it dropped first, before the tables are altered (PostgreSQL refuses to retype a column a
    view reads), and Redshift's late-binding view is made anew each time."""
    spec = batch.spec
    superseded = superseded_spec(spec)
    now = now or HistoryNow({}, {})
    steps = [Step(f"CREATE SCHEMA IF NOT EXISTS {quote(superseded.schema)}"),
             Step(f"CREATE SCHEMA IF NOT EXISTS {quote(history_spec(spec).schema)}")]
    alters: list[Step] = []
    if not now.superseded:
        steps.append(Step(create_superseded_sql(d, spec, batch)))
    else:
        steps += [Step(f"ALTER TABLE {table(superseded)} ADD COLUMN {quote(c.name)} {d.column_type(c, batch)}")
                  for c in spec.columns if c.name not in now.superseded]
        retyped = {name: change for name, change in batch.retyped.items() if name in now.superseded}
        alters = (d.widen_steps(superseded, batch, now.superseded)
                  + d.retype_steps(replace(batch, spec=superseded, retyped=retyped)))
    migrate = migration_steps(spec, now) if now.view_is_table else []
    if migrate:
        now = replace(now, view={})
    columns, current_names, superseded_names = _view_columns(spec, current, now.superseded, now.view)
    # A column of the view that neither table has any more stays in it as NULL: the view keeps its columns.
    drop = [Step(f"DROP VIEW IF EXISTS {history_table(spec)}")] \
        if not migrate and (d.late_binding_views or ((current_alters or alters) and now.view)) else []
    view = view_sql(d, spec, columns, current_names, superseded_names, replace_view=not drop)
    return drop, steps + alters + migrate + [Step(view)]


def _view_columns(spec: TableSpec, current: Existing, superseded: Existing, view: Existing
                  ) -> tuple[list[str], list[str], list[str]]:
    """(the view's columns: those it has, in their order, then the new ones; the current table's data
    columns; the superseded table's), once the prepare ran (the spec's columns added to both)."""
    spec_names = [c.name for c in spec.columns]
    current_names = list(dict.fromkeys(_data_columns(current) + spec_names))
    superseded_names = list(dict.fromkeys(_data_columns(superseded) + spec_names))
    columns = list(dict.fromkeys([*view, *current_names, *superseded_names,
                                  *(name for name, _ in LINEAGE_COLUMNS), *HISTORY_COLUMNS]))
    return columns, current_names, superseded_names


def remade_view_steps(d: Dialect, spec: TableSpec, current: Existing, superseded: Existing) -> list[Step]:
    """The versions view made anew over the tables as they are (after a column was dropped from them)."""
    current_names, superseded_names = _data_columns(current), _data_columns(superseded)
    columns = list(dict.fromkeys([*current_names, *superseded_names, *(name for name, _ in LINEAGE_COLUMNS),
                                  *HISTORY_COLUMNS]))
    return [Step(f"DROP VIEW IF EXISTS {history_table(spec)}"),
            Step(view_sql(d, spec, columns, current_names, superseded_names, replace_view=False))]


def migration_steps(spec: TableSpec, now: HistoryNow) -> list[Step]:
    """An earlier release kept every version, the current ones too, in a table where the view now is:
    its versions that are not the current table's row move to the superseded table (those it holds
    already are left, so a migration cut short runs again), then the table is dropped."""
    key, version, vf = quote(spec.primary_key), quote(spec.version_column), quote(VALID_FROM)
    target, old = superseded_table(spec), history_table(spec)
    kept = [n for n in now.view if n in now.superseded or n in {c.name for c in spec.columns}
            or n in {name for name, _ in LINEAGE_COLUMNS} or n in (VALID_FROM, VALID_TO, LOADED_AT)]
    listed = ", ".join(quote(n) for n in kept)
    return [
        Step(f"INSERT INTO {target} ({listed}) SELECT {', '.join('h.' + quote(n) for n in kept)} FROM {old} AS h "
             f"LEFT JOIN {table(spec)} AS c ON c.{key} = h.{key} AND c.{version} = h.{vf} WHERE c.{key} IS NULL "
             f"AND h.{quote(VALID_TO)} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {target} AS o "
             f"WHERE o.{key} = h.{key} AND o.{vf} = h.{vf})"),
        Step(f"DROP TABLE {old}"),
    ]


def view_sql(d: Dialect, spec: TableSpec, columns: list[str], current_names: list[str],
             superseded_names: list[str], replace_view: bool = True) -> str:
    """The versions view: the superseded versions, then each record's current version with its
    closing computed from the row; `columns` in order, a data column a table lacks read as NULL."""
    key, version = quote(spec.primary_key), quote(spec.version_column)
    soft_column = soft_delete_column(spec)
    soft = f"CASE WHEN c.{quote(soft_column)} = 1 THEN c.{version} END" if soft_column else "NULL"
    hard = f"c.{quote(DELETED_IN_SOURCE_AT)}" if spec.track_deletions else "NULL"
    deleted = (f"CASE WHEN {soft} IS NULL THEN {hard} WHEN {hard} IS NULL THEN {soft} WHEN {hard} < {soft} "
               f"THEN {hard} ELSE {soft} END")
    closing = {
        VALID_FROM: (f"s.{quote(VALID_FROM)}", f"c.{version}"),
        VALID_TO: (f"s.{quote(VALID_TO)}", f"CASE WHEN ({deleted}) IS NULL THEN NULL WHEN ({deleted}) > c.{version} "
                                           f"THEN ({deleted}) ELSE c.{version} END"),
        IS_CURRENT: ("FALSE", f"CASE WHEN ({deleted}) IS NULL THEN TRUE ELSE FALSE END"),
        DELETED_AT: (f"CAST(NULL AS {d.type_names[ColumnType.DATETIME]})", deleted),
        LOADED_AT: (f"s.{quote(LOADED_AT)}", f"c.{quote(LOADED_AT)}"),
    }
    lineage = {name for name, _ in LINEAGE_COLUMNS}

    def side(alias: str, names: list[str], index: int) -> str:
        values = []
        for name in columns:
            if name in closing:
                values.append(f"{closing[name][index]} AS {quote(name)}")
            elif name in lineage or name in names:
                values.append(f"{alias}.{quote(name)} AS {quote(name)}")
            else:
                values.append(f"NULL AS {quote(name)}")
        return ", ".join(values)

    verb = "CREATE OR REPLACE VIEW" if replace_view else "CREATE VIEW"
    return (f"{verb} {history_table(spec)} AS SELECT {side('s', superseded_names, 0)} FROM "
            f"{superseded_table(spec)} AS s UNION ALL SELECT {side('c', current_names, 1)} FROM {table(spec)} AS c "
            f"WHERE c.{version} IS NOT NULL AND c.{key} IS NOT NULL{d.late_binding_clause}")


# The load's steps.

def _lineage_beats(spec: TableSpec, a: str, b: str) -> str:
    """`a`'s lineage (partition, file, line) is after `b`'s."""
    columns = [name for name, _ in LINEAGE_COLUMNS]
    expression = f"{a}.{quote(columns[-1])} > {b}.{quote(columns[-1])}"
    for column in reversed(columns[:-1]):
        x, y = f"{a}.{quote(column)}", f"{b}.{quote(column)}"
        expression = f"({x} > {y} OR ({x} = {y} AND {expression}))"
    return expression


def chunk_version_steps(spec: TableSpec, chunk: str, gathered: str) -> list[Step]:
    """PostgreSQL's merge by chunk, before each chunk's merge (`version_steps` for the chunk), in one
    statement: each chunk row probes the table's key index once for the current version (a LATERAL
    lookup: a hash join would read the whole table once a chunk); the rows whose version differs then
    move the current rows they supersede into the superseded table (result `versions_displaced`) or,
    older than the current one, are gathered into `gathered`, whose versions `version_steps` finds
    once after the last chunk. Rows of an unchanged version, most of a daily differential's, go no
    further than the probe.

    The same probe serves the merge: the chunk rows that do not beat the current row (`newer`, the
    merge's own condition) are deleted from the chunk, so the merge that follows meets only rows it
    inserts or updates and needs no probe of its own (after a quiet chunk it would take one: two
    lookups a row). Before PostgreSQL 18 every chunk takes this probe; from 18 only the chunk after a
    quiet one does, the others keeping their versions in the merge (`merged_version_ctes`).
    A key repeated in the chunk is found by the client as the
    stream ends (or by the merge, where both rows reach it), which reads the rows again, so its
    superseded row is inserted once, ON CONFLICT DO NOTHING, until then."""
    key, version = quote(spec.primary_key), quote(spec.version_column)
    vf, vt, loaded = quote(VALID_FROM), quote(VALID_TO), quote(LOADED_AT)
    names = [quote(n) for n in staged_names(spec)]
    current = table(spec)
    held = ", ".join(f"o.{quote(c)}" for c in dict.fromkeys((spec.primary_key, *version_order(spec))))
    return [Step(
        f"WITH looked AS MATERIALIZED (SELECT s.{key} AS {key}, s.{version} AS batch_from, c.{version} AS current_from, "
        f"c.{key} IS NOT NULL AND ({newer(spec, 's', 'c')}) IS NOT TRUE AS stale "
        f"FROM {chunk} AS s LEFT JOIN LATERAL (SELECT {held} FROM {current} AS o WHERE o.{key} = s.{key} "
        f"LIMIT 1) AS c ON TRUE), "
        f"probed AS (SELECT {key}, batch_from, current_from FROM looked WHERE batch_from <> current_from), "
        f"moved AS (INSERT INTO {superseded_table(spec)} ({', '.join(names)}, {vf}, {vt}, {loaded}) "
        f"SELECT {', '.join('c.' + n for n in names)}, c.{version}, p.batch_from, c.{loaded} FROM probed AS p "
        f"CROSS JOIN LATERAL (SELECT * FROM {current} AS o WHERE o.{key} = p.{key} LIMIT 1) AS c "
        f"WHERE p.batch_from > p.current_from ON CONFLICT DO NOTHING RETURNING 1), "
        f"older AS (INSERT INTO {gathered} SELECT {', '.join('s.' + n for n in names)} FROM probed AS p "
        f"JOIN {chunk} AS s ON s.{key} = p.{key} WHERE p.batch_from < p.current_from RETURNING 1), "
        f"beaten AS (DELETE FROM {chunk} AS s USING looked AS l WHERE l.stale AND s.{key} = l.{key}) "
        f"SELECT (SELECT COUNT(*) FROM moved), (SELECT COUNT(*) FROM older)",
        fetch=True, result=("versions_displaced", "versions_gathered"))]


# PostgreSQL 18 and later: a merge's RETURNING can read the row it replaced (`old`).
RETURNS_OLD_SQL = "SELECT current_setting('server_version_num')::int >= 180000"
MERGED_VERSION, DISPLACES = "etl_version", "etl_displaces"  # the merge's RETURNING, for its versions


def merged_returning(spec: TableSpec) -> str:
    """What the merge returns for `merged_version_ctes`, besides `inserted`: each written row's key and
    version, and whether it raised the version of the row it replaced (`old`: PostgreSQL 18)."""
    key, version = quote(spec.primary_key), quote(spec.version_column)
    return f"t.{key}, t.{version} AS {MERGED_VERSION}, old.{version} < t.{version} AS {DISPLACES}, "


def merged_version_ctes(spec: TableSpec, chunk: str, gathered: str) -> tuple[str, str]:
    """PostgreSQL 18's merge by chunk keeps the versions in the merge's own statement: the merge (CTE
    `merged`) says which rows it displaced (`merged_returning`), and only those are read again, in the
    table as it was before the statement (one snapshot for all its parts, which still holds every row it
    replaced), to move into the superseded table; the chunk rows the merge left (it writes every row
    that beats its current one) are looked up for the versions older than the current one. The probe
    before the merge (`chunk_version_steps`) looks up every row: on the history benchmark's reload
    (PostgreSQL 18.6) history cost +28% to +33% with it and +11% to +16% with this
    (docs/design/history-cost.md). After a quiet chunk the probe still runs, so that a re-run's rows
    meet no ON CONFLICT, which would lock them. Returns (the CTEs after `merged`, the counts to select:
    displaced, gathered)."""
    key, version = quote(spec.primary_key), quote(spec.version_column)
    vf, vt, loaded = quote(VALID_FROM), quote(VALID_TO), quote(LOADED_AT)
    names = [quote(n) for n in staged_names(spec)]
    current = table(spec)
    ctes = (
        f", moved AS (INSERT INTO {superseded_table(spec)} ({', '.join(names)}, {vf}, {vt}, {loaded}) "
        f"SELECT {', '.join('c.' + n for n in names)}, c.{version}, m.{MERGED_VERSION}, c.{loaded} FROM merged AS m "
        f"CROSS JOIN LATERAL (SELECT * FROM {current} AS o WHERE o.{key} = m.{key} LIMIT 1) AS c "
        f"WHERE m.{DISPLACES} ON CONFLICT DO NOTHING RETURNING 1), "
        f"unmerged AS MATERIALIZED (SELECT * FROM {chunk} AS s "
        f"WHERE NOT EXISTS (SELECT 1 FROM merged AS m WHERE m.{key} = s.{key})), "
        f"older AS (INSERT INTO {gathered} SELECT {', '.join('u.' + n for n in names)} FROM unmerged AS u "
        f"CROSS JOIN LATERAL (SELECT o.{version} FROM {current} AS o WHERE o.{key} = u.{key} LIMIT 1) AS c "
        f"WHERE u.{version} < c.{version} RETURNING 1)")
    return ctes, "(SELECT COUNT(*) FROM moved), (SELECT COUNT(*) FROM older)"


def version_steps(d: Dialect, spec: TableSpec, source: str, params: tuple = (), repeats: bool = False,
                  displaced: bool = True, older: bool = True) -> list[Step]:
    """The batch's versions, reading every staged row from `source` (with `params`), before the merge
    changes the current table. `repeats`: a (key, version) may occur more than once in it, so it is
    made distinct first (the latest appearance kept). `displaced`: copy the current rows a batch
    version is newer than into the superseded table (result `versions_displaced`); `older`: put the
    batch's versions older than their record's newest there (result `versions_older`: those it did not
    hold), replacing the same version seen from an earlier folder (deleted, then inserted with the new
    ones, so no wide UPDATE, which DuckDB would keep in memory), and re-close their neighbours."""
    key, version = quote(spec.primary_key), quote(spec.version_column)
    target, current = superseded_table(spec), table(spec)
    vf, vt, loaded = quote(VALID_FROM), quote(VALID_TO), quote(LOADED_AT)
    names = [quote(n) for n in staged_names(spec)]
    listed = ", ".join(names)
    steps: list[Step] = []
    if repeats:
        last = ", ".join(f"{quote(n)} DESC" for n, _ in LINEAGE_COLUMNS)
        steps.append(Step(
            f"CREATE TEMPORARY TABLE {VERSIONS} AS SELECT {listed} FROM (SELECT *, ROW_NUMBER() OVER "
            f"(PARTITION BY {key}, {version} ORDER BY {last}) AS etl_rank FROM {source} WHERE {version} IS NOT NULL"
            f") AS ranked WHERE etl_rank = 1", params))
        source, params = VERSIONS, ()
    if displaced:
        # Each current row a batch version is newer than, closed at the least such version.
        nearest = (f"(SELECT s.{key} AS {key}, MIN(s.{version}) AS next_from FROM {source} AS s JOIN {current} AS o "
                   f"ON o.{key} = s.{key} WHERE s.{version} > o.{version} GROUP BY s.{key})" if repeats else
                   f"(SELECT s.{key} AS {key}, s.{version} AS next_from FROM {source} AS s)")
        steps.append(Step(
            f"INSERT INTO {target} ({listed}, {vf}, {vt}, {loaded}) SELECT {', '.join('c.' + n for n in names)}, "
            f"c.{version}, n.next_from, c.{loaded} FROM {current} AS c JOIN {nearest} AS n ON n.{key} = c.{key} "
            f"WHERE n.next_from > c.{version}", params, result="versions_displaced"))
    if not older:
        return steps + ([Step(f"DROP TABLE {VERSIONS}")] if repeats else [])
    newest = f"c.{version}"
    batch_newest = ""
    if repeats:
        batch_newest = (f" LEFT JOIN (SELECT {key}, MAX({version}) AS newest FROM {source} GROUP BY {key}) AS m "
                        f"ON m.{key} = s.{key}")
        newest = f"CASE WHEN c.{version} IS NULL OR m.newest > c.{version} THEN m.newest ELSE c.{version} END"
    bare = quote(spec.name)
    steps += [
        Step(f"CREATE TEMPORARY TABLE {NEW_VERSIONS} AS SELECT s.{key} AS {key}, s.{version} AS {vf}, "
             f"{newest} AS etl_newest, CASE WHEN h.{key} IS NULL THEN 1 ELSE 0 END AS etl_new FROM {source} AS s "
             f"LEFT JOIN {current} AS c ON c.{key} = s.{key}{batch_newest} LEFT JOIN {target} AS h "
             f"ON h.{key} = s.{key} AND h.{vf} = s.{version} WHERE s.{version} < {newest} "
             f"AND (h.{key} IS NULL OR {_lineage_beats(spec, 's', 'h')})", params),
        # No alias for the target: Redshift's DELETE takes none (its columns are named by the table's name).
        Step(f"DELETE FROM {target} USING {NEW_VERSIONS} AS n WHERE n.etl_new = 0 AND {bare}.{key} = n.{key} "
             f"AND {bare}.{vf} = n.{vf}"),
        # The next version of every superseded version of the keys that gained one (the record's newest
        # closes the last); kept: the new ones, and the others whose next version is not what they hold.
        Step(f"CREATE TEMPORARY TABLE {INTERVALS} AS SELECT w.{key} AS {key}, w.{vf} AS {vf}, w.next_from AS {vt}, "
             f"w.etl_new AS etl_new FROM (SELECT v.{key}, v.{vf}, v.etl_new, v.old_to, "
             f"LEAD(v.{vf}) OVER (PARTITION BY v.{key} ORDER BY v.{vf}) AS next_from FROM ("
             f"SELECT h.{key} AS {key}, h.{vf} AS {vf}, 0 AS etl_new, h.{vt} AS old_to FROM {target} AS h "
             f"WHERE h.{key} IN (SELECT n.{key} FROM {NEW_VERSIONS} AS n) "
             f"UNION ALL SELECT n.{key}, n.{vf}, 1, NULL FROM {NEW_VERSIONS} AS n "
             f"UNION ALL SELECT n.{key}, MAX(n.etl_newest), -1, NULL FROM {NEW_VERSIONS} AS n GROUP BY n.{key}"
             f") AS v) AS w WHERE w.etl_new = 1 OR (w.etl_new = 0 AND w.old_to <> w.next_from)"),
        Step(f"INSERT INTO {target} ({listed}, {vf}, {vt}, {loaded}) SELECT {', '.join('s.' + n for n in names)}, "
             f"s.{version}, i.{vt}, CURRENT_TIMESTAMP FROM {source} AS s JOIN {INTERVALS} AS i "
             f"ON i.{key} = s.{key} AND i.{vf} = s.{version} WHERE i.etl_new = 1", params, result="versions_older"),
        Step(f"UPDATE {target} AS h SET {vt} = i.{vt} FROM {INTERVALS} AS i "
             f"WHERE i.etl_new = 0 AND h.{key} = i.{key} AND h.{vf} = i.{vf}"),
        Step(f"DROP TABLE {INTERVALS}"),
        Step(f"DROP TABLE {NEW_VERSIONS}"),
    ]
    if source == VERSIONS:
        steps.append(Step(f"DROP TABLE {VERSIONS}"))
    return steps


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
