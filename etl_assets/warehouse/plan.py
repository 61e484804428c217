"""The load plan: every statement a load runs, in order, on every engine, and the SCD Type 1 merge.

A load is a plan of SQL steps in two phases. `prepare` is idempotent DDL (schema, table, new
columns, wider columns) committed on its own: Redshift cannot widen a column inside a transaction,
and a table that exists empty harms nothing. The `transaction` then bulk-loads a staging table,
keeps the newest version of each key, updates the rows it beats, inserts the new keys and replaces
the partition's rejects: whatever fails, it rolls back and the table is as it was.

"Newest" is decided by (version column, source partition, source file, source line), compared left
to right: the same rows win whatever order partitions are loaded in, and loading a partition twice
changes nothing the second time.

A table whose spec tracks deletions also carries `_deleted_in_source_at`: a full snapshot of the
source (a batch with `full_snapshot_date`) is evidence that the rows it lacks, if not newer than it,
were deleted in the source. The merge keeps that evidence (which snapshots exist, and the newest
snapshot holding each key) and recomputes the mark from it, so the mark too is the same whatever the
order of loads (docs/full-backups-and-hard-deletes.md).

A table whose spec keeps history also has its superseded versions kept (history.py): every path runs
the versions' steps before the merge changes the table, where all of the batch's rows are at hand (the
staged rows, their view, or each chunk of a merge by chunk); a first load into a new table needs none.

The engine's `Capabilities` choose among the merge's paths, all ending in the same table: the
general one; a view instead of the newest-version pass when no key repeats; rows streamed straight
into a table the load created; rows streamed and merged a chunk at a time (PostgreSQL). Its
`Dialect` spells each statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, time, timedelta, timezone

from etl_assets.warehouse.batch import StagedBatch
from etl_assets.warehouse.dialect import (
    CHUNK,
    LATEST,
    STAGING,
    Dialect,
    column_list,
    full_backup_ids_table,
    full_backups_table,
    rejects_table,
    staged_columns,
    table,
)
from etl_assets.warehouse.history import (
    RETURNS_OLD_SQL,
    HistoryNow,
    chunk_version_steps,
    keeps_history,
    prepare_history_steps,
    version_steps,
)
from etl_assets.warehouse.rows import RowStream
from etl_assets.warehouse.spec import (
    DELETED_IN_SOURCE_AT,
    LOADED_AT,
    SOURCE_FILE,
    SOURCE_PARTITION,
    ColumnType,
    TableSpec,
    quote,
)
from etl_assets.warehouse.steps import Branch, LoadPlan, LoadResult, PlanStep, Step

DELETED = "etl_deleted"  # the keys a load finds deleted in source, while it runs
BATCH_ROWS = "etl_batch_rows"  # a batch merged chunk by chunk, gathered for its versions (history mode)
# A snapshot's date is local to an unknown time zone; the earliest zone (UTC+14) starts it this long
# before midnight UTC, so a version older than that certainly precedes the snapshot.
EARLIEST_ZONE_OFFSET = timedelta(hours=14)

Existing = dict[str, int | None]  # the table's columns now: name -> character width (None: unbounded)


def plan_load(d: Dialect, batch: StagedBatch, existing: Existing, after: Sequence[PlanStep] = (),
              rows: RowStream | None = None, history_now: HistoryNow | None = None) -> LoadPlan:
    """Every statement a load of `batch` runs, given the table's current columns; `rows` are the batch's
    rows as they stream into the transaction (None: the batch is staged); `after` ends the transaction.
    `history_now`: the superseded table's and versions view's columns now, where the spec keeps
    history (None: not known, they are created if absent)."""
    spec = batch.spec
    plan = LoadPlan(prepare=prepare_steps(d, batch, existing), added_columns=added_columns(batch, existing))
    source, params, staging = d.stage_steps(batch)
    plan.transaction += d.lock_steps(spec)
    if batch.mode != "merge":
        plan.transaction += staging + append_steps(d, batch, source, params)
        plan.transaction += [Step(f"DROP TABLE IF EXISTS {STAGING}"), *after, *bookkeeping_steps(batch, existing)]
        return plan
    plan.prepare.append(Step(d.create_rejects_sql(spec)))
    if spec.track_deletions:
        plan.prepare += d.create_deletion_tables_steps(spec)
    if keeps_history(spec):
        alters = d.widen_steps(spec, batch, existing) + d.retype_steps(batch) if existing else []
        drop_view, history_steps = prepare_history_steps(d, batch, existing, history_now, alters)
        plan.prepare = drop_view + plan.prepare + history_steps
    plan.transaction += marks_check_steps(d, batch)
    if rows is not None:
        merge, drop_latest = streamed_merge_steps(d, batch, existing, rows)
    elif d.capabilities.runs_steps_in_order and batch.keys_repeat is False and batch.files:
        merge, drop_latest = distinct_keys_merge_steps(d, batch, existing, source, params, staging)
    else:
        merge, drop_latest = general_merge_steps(d, batch, existing, source, params, staging)
    plan.transaction += merge
    plan.transaction += deletion_steps(d, batch, streamed=rows is not None)
    if batch.partition is not None:
        plan.transaction.append(Step(f"DELETE FROM {rejects_table(spec)} WHERE {quote(SOURCE_PARTITION)} = "
                                     f"{d.param}", (batch.partition,)))
    rejects = d.rejects_steps(batch)
    plan.transaction += [Branch("rejected", then=tuple(rejects))] if rows is not None and rejects else rejects
    plan.transaction += [*drop_latest, Step(f"DROP TABLE IF EXISTS {STAGING}")]
    plan.transaction += d.after_merge_steps(spec) + list(after) + bookkeeping_steps(batch, existing)
    return plan


def bookkeeping_steps(batch: StagedBatch, existing: Existing) -> list[PlanStep]:
    """The domain's bookkeeping (`StagedBatch.bookkeeping`), last in the transaction."""
    return batch.bookkeeping.for_table(bool(existing)) if batch.bookkeeping is not None else []


def prepare_steps(d: Dialect, batch: StagedBatch, existing: Existing) -> list[Step]:
    """The schema and the table, or the columns the table lacks and those it must widen."""
    spec = batch.spec
    steps = [Step(f"CREATE SCHEMA IF NOT EXISTS {quote(spec.schema)}")]
    if not existing:
        return steps + [Step(d.create_table_sql(spec, batch)), *d.marked_rows_index_steps(spec)]
    steps += [Step(f"ALTER TABLE {table(spec)} ADD COLUMN {quote(c.name)} {d.column_type(c, batch)}")
              for c in spec.columns if c.name not in existing]
    steps += d.widen_steps(spec, batch, existing) + d.retype_steps(batch)
    if spec.track_deletions and DELETED_IN_SOURCE_AT not in existing:
        steps.append(Step(f"ALTER TABLE {table(spec)} ADD COLUMN {quote(DELETED_IN_SOURCE_AT)} "
                          f"{d.type_names[ColumnType.DATETIME]}"))
        steps += d.marked_rows_index_steps(spec)
    return steps


def added_columns(batch: StagedBatch, existing: Existing) -> tuple[str, ...]:
    if not existing:
        return ()
    spec = batch.spec
    added = tuple(c.name for c in spec.columns if c.name not in existing)
    return added + ((DELETED_IN_SOURCE_AT,) if spec.track_deletions and DELETED_IN_SOURCE_AT not in existing else ())


def append_steps(d: Dialect, batch: StagedBatch, source: str, params: tuple) -> list[Step]:
    """`replace`: empty the table; `append`: remove earlier rows of these source files; then insert."""
    target = table(batch.spec)
    if batch.mode == "replace":
        steps = [Step(f"DELETE FROM {target}", result="deleted")]
    else:
        steps = [Step(f"DELETE FROM {target} WHERE {quote(SOURCE_FILE)} = {d.param}", (f,), result=f"deleted:{f}")
                 for f in sorted(batch.source_files)]
    names = column_list(batch.spec)
    steps.append(Step(f"INSERT INTO {target} ({names}, {quote(LOADED_AT)}) SELECT {names}, CURRENT_TIMESTAMP "
                      f"FROM {source}", params, result="inserted"))
    return steps


# The merge's paths: each returns its steps and the steps that drop its LATEST.

def general_merge_steps(d: Dialect, batch: StagedBatch, existing: Existing, source: str, params: tuple,
                        staging: list[Step]) -> tuple[list[PlanStep], list[Step]]:
    """Stage, keep the newest version of each key in LATEST, update the rows it beats, insert new keys."""
    spec = batch.spec
    # The versions read every staged row: before the newest-version pass, which may delete beaten ones.
    versions = version_steps(d, spec, source, params, repeats=batch.keys_repeat is not False) \
        if keeps_history(spec) else []
    steps = staging + versions + d.latest_steps(spec, source, params) + [
        Step(f"SELECT COUNT(*) FROM {LATEST}", result="keys_staged", fetch=True),
        *d.merge_steps(batch, existing),
    ]
    return steps, [Step(f"DROP TABLE {LATEST}")]


def distinct_keys_merge_steps(d: Dialect, batch: StagedBatch, existing: Existing, source: str, params: tuple,
                              staging: list[Step]) -> tuple[list[PlanStep], list[Step]]:
    """A batch in which no key repeats (`StagedBatch.keys_repeat` is False, counted when it was staged).
    Every staged row is then already its key's newest staged version, so LATEST is a view of the staged
    rows (no ROW_NUMBER pass, nothing copied) and the staged keys are the staged rows (no COUNT); the
    update and the insert are the general path's, so the table ends the same.

    Where `copies_into_new_tables`, a first load (into the table this load created: `existing` was
    empty) COPYs its rows straight into the table while it is still empty inside the transaction
    (result `direct`): every row is new and the newest of its key, so the staging table, the UPDATE and
    the anti-join INSERT would write the same rows a second time. `_loaded_at` comes from the column's
    default, CURRENT_TIMESTAMP, as the INSERT sets it; LATEST is then a view of the table, which holds
    exactly the batch. A table another load filled between the two transactions takes the general steps."""
    spec = batch.spec
    versions = version_steps(d, spec, LATEST) if keeps_history(spec) else []  # LATEST holds every staged row
    steps = staging + [
        latest_view(spec, d.view_source(batch, source)),
        *versions,
        *d.merge_steps(batch, existing),
    ]
    drop = [Step(f"DROP VIEW {LATEST}")]
    if existing or not d.capabilities.copies_into_new_tables:
        return steps, drop
    # Into the empty table every row is its key's only version: the current table holds them all.
    copy = replace(d.copy_files_step(table(spec), batch.files, staged_columns(spec)), result="inserted")
    return [
        Step(f"SELECT NOT EXISTS (SELECT 1 FROM {table(spec)})", fetch=True, result="direct"),
        Branch("direct", then=(copy, latest_view(spec, table(spec))), otherwise=tuple(steps)),
    ], drop


def streamed_merge_steps(d: Dialect, batch: StagedBatch, existing: Existing, rows: RowStream
                         ) -> tuple[list[PlanStep], list[PlanStep]]:
    """Rows streamed into the transaction: whether keys repeat is known only once they were read, so both
    ways are in the plan and the result `keys_repeat` picks one. The rows go into the staging table; with
    no repeated key LATEST is a view of it (no newest-version pass), else the general one.

    Into the table this load created (`existing` empty), while it is still empty inside the transaction
    (result `direct`), they go straight into the table instead: written once, no staging table, UPDATE or
    anti-join INSERT. Into a table that exists, where `merges_streamed_chunks`, they are merged a chunk
    at a time as they arrive (`chunk_merge_steps`); where the dialect `merges_in_place` (DuckDB), they go
    straight into it too, the losing version of each key deleted after (the dialect's
    `in_place_merge_steps`, which also finds a table's versions). A repeated key found on any shortcut makes the
    load read the rows again (ReadAgain: the transaction rolls back) with `keys_repeat` known, on the
    general path; so does a table another load filled between the two transactions."""
    spec = batch.spec
    history = keeps_history(spec)
    # The versions read every staged row: before the newest-version pass, which may delete beaten ones.
    versions = [Branch("keys_repeat", then=tuple(version_steps(d, spec, STAGING, repeats=True)),
                       otherwise=tuple(version_steps(d, spec, STAGING)))] if history else []
    steps = [Step(d.create_staging_sql(batch)), d.stream_step(rows, STAGING, direct=False), *versions,
             Branch("keys_repeat",
                    then=(*d.latest_steps(spec, STAGING, ()),
                          Step(f"SELECT COUNT(*) FROM {LATEST}", result="keys_staged", fetch=True)),
                    otherwise=(latest_view(spec, STAGING),)),
             *d.merge_steps(batch, existing)]
    drops = [Branch("keys_repeat", then=(Step(f"DROP TABLE {LATEST}"),), otherwise=(Step(f"DROP VIEW {LATEST}"),))]
    if batch.keys_repeat:
        return steps, drops
    if existing:
        if d.capabilities.merges_streamed_chunks and spec.primary_key:
            return chunk_merge_steps(d, batch, rows, steps, drops)
        if d.merges_in_place(batch, existing):
            return d.in_place_merge_steps(batch, rows)
        return steps, drops
    return [
        Step(f"SELECT NOT EXISTS (SELECT 1 FROM {table(spec)})", fetch=True, result="direct"),
        Branch("direct", then=(*direct_load_steps(d, spec, rows), latest_view(spec, table(spec))),
               otherwise=tuple(steps)),
    ], [Branch("direct", then=(Step(f"DROP VIEW {LATEST}"),), otherwise=tuple(drops))]


def latest_view(spec: TableSpec, source: str) -> Step:
    """LATEST as a view of `source`, whose rows are already each key's newest version."""
    return Step(f"CREATE TEMPORARY VIEW {LATEST} AS SELECT {column_list(spec)} FROM {source}")


def direct_load_steps(d: Dialect, spec: TableSpec, rows: RowStream) -> list[Step]:
    """The rows straight into the empty table (result `inserted`); a repeated key reads them again. A
    named primary key is dropped for the load and built once after it: one sort of the keys instead of
    a B-tree insert per row (~30% of PostgreSQL's COPY time). A repeated key is found by the client as
    the stream ends (which rolls the drop back); the rebuild would refuse one too. Only for tables this
    load created: they carry the key under `primary_key_name`."""
    load = replace(d.stream_step(rows, table(spec), direct=True), distinct_keys=True, result="inserted")
    name = d.primary_key_name(spec)
    if not (d.primary_key_constraint and name):
        return [load]
    return [Step(f"ALTER TABLE {table(spec)} DROP CONSTRAINT IF EXISTS {quote(name)}"), load,
            Step(f"ALTER TABLE {table(spec)} ADD CONSTRAINT {quote(name)} PRIMARY KEY ({quote(spec.primary_key)})")]


def chunk_merge_steps(d: Dialect, batch: StagedBatch, rows: RowStream, general: list[PlanStep],
                      drops: list[PlanStep]) -> tuple[list[PlanStep], list[PlanStep]]:
    """Streamed rows merged into the table a chunk at a time (`Session.copy_chunks`): each chunk is
    COPYed into a small temporary table and merged with one statement (`Dialect.chunk_merge_sql`), so
    the server merges one chunk while the client prepares the next, one index probe per row, and only
    rows the batch beats are rewritten. The merge's update condition is the general path's, so the
    table ends the same. Measured on 1M all-update Task rows: 34 s end to end staged (the UPDATE of
    every row after all were read) against 26-28 s merged by chunk (docs/big-file-loads.md). A key
    repeated in the batch reads the rows again on the general path; so does a table without its
    primary key (the merge needs it), found by the first step (result `keyed`)."""
    spec = batch.spec
    version = spec.version_column
    history = keeps_history(spec)
    chunk: list[PlanStep] = [Step(d.create_staging_sql(batch, CHUNK))]
    before: list[PlanStep] = []
    if spec.track_deletions:  # the marks' recompute reads the staged keys from LATEST: every row of the chunk
        kept = ", ".join(quote(c) for c in (spec.primary_key, *([version] if version else [])))
        chunk.append(Step(f"CREATE TEMPORARY TABLE {LATEST} AS SELECT {kept} FROM {CHUNK} WITH NO DATA"))
        before.append(Step(f"INSERT INTO {LATEST} SELECT {kept} FROM {CHUNK}"))
    after = [Step(f"TRUNCATE {CHUNK}")]
    merged = ("inserted", "updated")
    stream = replace(d.stream_step(rows, CHUNK, direct=False), distinct_keys=True)
    if not history:
        # After a chunk that changed fewer than half its rows, the next is probed before its merge.
        chunk.append(replace(
            stream, each_chunk=(*before, Step(d.chunk_merge_sql(spec), fetch=True, result=merged), *after),
            each_quiet_chunk=(*before, Step(d.chunk_merge_sql(spec, probe=True), fetch=True, result=merged), *after)))
    else:
        # The current rows each chunk supersedes move to the superseded table, and its rows older than the
        # current one are gathered, their versions found once after the last chunk (a repeated key within
        # or across chunks reads the rows again, so they are distinct). Before PostgreSQL 18, from a probe
        # before the merge that also takes out of the chunk the rows the merge would leave, so the merge
        # meets only rows it writes; from 18, from the merge's own statement after a busy chunk.
        chunk.append(Step(d.create_staging_sql(batch, BATCH_ROWS)))
        probed = (*before, *chunk_version_steps(spec, CHUNK, BATCH_ROWS),
                  Step(d.chunk_merge_sql(spec), fetch=True, result=merged), *after)
        returning = (*before, Step(d.chunk_merge_sql(spec, gathered=BATCH_ROWS), fetch=True,
                                   result=(*merged, "versions_displaced", "versions_gathered")), *after)
        chunk += [Step(RETURNS_OLD_SQL, fetch=True, result="returns_old"),
                  Branch("returns_old", then=(replace(stream, each_chunk=returning, each_quiet_chunk=probed),),
                         otherwise=(replace(stream, each_chunk=probed),)),
                  *version_steps(d, spec, BATCH_ROWS, displaced=False), Step(f"DROP TABLE {BATCH_ROWS}")]
    keyed = Step(f"SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = to_regclass({d.param}) AND indisprimary)",
                 (table(spec),), fetch=True, result="keyed")
    return ([keyed, Branch("keyed", then=tuple(chunk), otherwise=tuple(general))],
            [Branch("keyed", then=(Step(f"DROP TABLE IF EXISTS {LATEST}"), Step(f"DROP TABLE {CHUNK}")),
                    otherwise=tuple(drops))])


# Deletions in source (see the module's docstring).

def marks_check_steps(d: Dialect, batch: StagedBatch) -> list[Step]:
    """Whether the deletion marks can change (result `marks`): a load that is not a full snapshot only
    recomputes marks, and a mark needs a full snapshot of the table as evidence or is one to clear.
    With no snapshot recorded for the table and no row marked, the recompute would find nothing, so
    `deletion_steps` skips it. Asked before the merge: the merge never sets a mark, so no row is marked
    after it that was not before; and under the load's table lock, so no other load records a snapshot
    of this table meanwhile."""
    spec = batch.spec
    if not spec.track_deletions or batch.full_snapshot_date is not None or not d.capabilities.runs_steps_in_order:
        return []
    return [Step(f'SELECT EXISTS (SELECT 1 FROM {full_backups_table(spec)} WHERE "table_name" = {d.param}) '
                 f"OR EXISTS (SELECT 1 FROM {table(spec)} WHERE {quote(DELETED_IN_SOURCE_AT)} IS NOT NULL)",
                 (spec.name,), fetch=True, result="marks")]


def deletion_steps(d: Dialect, batch: StagedBatch, streamed: bool) -> list[PlanStep]:
    """After the merge: record a full snapshot's evidence, then recompute `_deleted_in_source_at`.

    A row is deleted in source iff a full snapshot of its table has a cutoff at or after the row's
    version and is newer than the newest snapshot holding its key; the mark is the earliest such
    snapshot's date. The evidence only grows whatever the load order, so recomputing the mark of every
    row a load can affect (all of them after a full snapshot, the staged keys otherwise) leaves the same
    table in any order. A snapshot with rejected rows records the keys it holds but is no evidence of
    deletions: its rejected keys would look deleted (`streamed`: its rejects are counted as it is read)."""
    spec = batch.spec
    if not spec.track_deletions:
        return []
    p, key, version = d.param, quote(spec.primary_key), quote(spec.version_column)
    target, ids, backups = table(spec), full_backup_ids_table(spec), full_backups_table(spec)
    mark = quote(DELETED_IN_SOURCE_AT)
    full = batch.full_snapshot_date is not None
    steps: list[PlanStep] = []
    if full:
        if batch.partition is None:
            raise ValueError(f"a full snapshot of {spec.name} needs a partition to be recorded under")
        backup_at = datetime.combine(batch.full_snapshot_date, time(0), timezone.utc)
        steps.append(Step(f'DELETE FROM {backups} WHERE "table_name" = {p} AND "partition" = {p}',
                          (spec.name, batch.partition)))
        record = Step(
            f'INSERT INTO {backups} ("table_name", "partition", "cutoff", "backup_at") SELECT {p}, {p}, '
            f"GREATEST(COALESCE(MAX({version}), CAST({p} AS TIMESTAMPTZ)), CAST({p} AS TIMESTAMPTZ)), "
            f"CAST({p} AS TIMESTAMPTZ) FROM {LATEST}",
            (spec.name, batch.partition, *[_timestamp(backup_at - EARLIEST_ZONE_OFFSET)] * 2, _timestamp(backup_at)))
        if streamed:
            steps.append(Branch("rejected", otherwise=(record,)))
        elif not batch.rejected_rows:
            steps.append(record)
        steps += [
            Step(f'DELETE FROM {ids} WHERE "last_full_partition" < {p} AND {key} IN (SELECT {key} FROM {LATEST})',
                 (batch.partition,)),
            Step(f'INSERT INTO {ids} ({key}, "last_full_partition") SELECT s.{key}, {p} FROM {LATEST} AS s '
                 f"WHERE NOT EXISTS (SELECT 1 FROM {ids} AS i WHERE i.{key} = s.{key})", (batch.partition,)),
        ]
    # The new mark of every row in scope that is marked or qualifies (NULL: clear it), then one UPDATE of
    # those whose mark differs: the table's unmarked, unqualified rows are never looked up one by one.
    staged_only = "" if full else f" JOIN {LATEST} AS s ON s.{key} = r.{key}"
    qualifies = '(i."last_full_partition" IS NULL OR f."partition" > i."last_full_partition")'
    recompute = [
        Step(f"CREATE TEMPORARY TABLE {DELETED} AS SELECT r.{key} AS {key}, "
             f'MIN(CASE WHEN {qualifies} THEN f."backup_at" END) AS "deleted_at" FROM {target} AS r{staged_only} '
             f'LEFT JOIN {backups} AS f ON f."table_name" = {p} AND f."cutoff" >= r.{version} '
             f"LEFT JOIN {ids} AS i ON i.{key} = r.{key} "
             f'WHERE r.{mark} IS NOT NULL OR (f."partition" IS NOT NULL AND {qualifies}) GROUP BY r.{key}',
             (spec.name,)),
        Step(f'UPDATE {target} AS t SET {mark} = d."deleted_at" FROM {DELETED} AS d WHERE t.{key} = d.{key} '
             f'AND (t.{mark} <> d."deleted_at" OR (t.{mark} IS NULL AND d."deleted_at" IS NOT NULL) '
             f'OR (t.{mark} IS NOT NULL AND d."deleted_at" IS NULL))'),
        Step(f"DROP TABLE {DELETED}"),
    ]
    return steps + ([Branch("marks", then=tuple(recompute))] if marks_check_steps(d, batch) else recompute)


def load_result(batch: StagedBatch, results: dict[str, int], plan: LoadPlan) -> LoadResult:
    """What the transaction's results say the load did."""
    if batch.mode != "merge":
        deleted = sum(v for k, v in results.items() if k.startswith("deleted"))
        return LoadResult(batch.rows, batch.rejected_rows, results["inserted"], 0, plan.added_columns, deleted)
    if "replaced" in results:  # DuckDB: the INSERT wrote the rows it replaced and the new keys
        results = {**results, "updated": results["replaced"], "inserted": results["inserted"] - results["replaced"]}
    # A merge of distinct keys counts no keys (they are the batch's rows); a first load copied straight
    # into its new table updates nothing.
    # History mode: a new key's version is the current row just inserted; an updated key's is counted
    # as the current row it superseded moved, and older versions as they went in.
    versions = results.get("versions_displaced", 0) + results.get("versions_older", 0) + results["inserted"] \
        if keeps_history(batch.spec) else 0
    return LoadResult(results.get("keys_staged", batch.rows), batch.rejected_rows, results["inserted"],
                      results.get("updated", 0), plan.added_columns, versions_added=versions)


def _timestamp(value: datetime) -> str:
    """A UTC time as text that every target casts to TIMESTAMPTZ (and the Data API can render)."""
    return f"{value:%Y-%m-%d %H:%M:%S}+00"
