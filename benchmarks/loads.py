"""Load benchmark: the project's pipeline against the raw limits, side by side in one run.

The parent (`run_load_benchmark`) generates deterministic backups, then for R rounds runs every
variant in turn, each in its own fresh subprocess (`python -m benchmarks.loads --variant
...`), so each variant's peak RSS is its own and no variant warms another's Python heap. The best
time per variant is kept; peak RSS is the highest seen over the rounds.

Variants (each reports its rows, stage times and ru_maxrss as one JSON line on stdout):

- `raw_pg_copy`: PostgreSQL COPY FROM STDIN of the CSV file into an all-text table, nothing else.
  The physical limit for PostgreSQL on this machine.
- `raw_duckdb_csv`: DuckDB `CREATE TABLE AS SELECT * FROM read_csv(...)` of the same file.
  The limit for the embedded default.
- `pipeline_pg_first` / `pipeline_duckdb_first`: the project's real code path, `stream_object`
  (the asset's read, transform and Pandera validation, run as the warehouse reads the rows) and
  `warehouse.load` (the IO manager's merge), into an empty table.
- `pipeline_pg_reload` / `pipeline_duckdb_reload`: the same, loading a second file with the same
  Ids and a later day into the table the first load filled: every row takes the UPDATE path.
- `floor_pg_update` / `floor_duckdb_merge`: the engine's own floor for the re-load's work, after it:
  PostgreSQL's cheapest single statement updating every row from a copy of the table already on the
  server (no COPY, no parsing); DuckDB's own `read_csv` of 1M rows with other values, deleted and
  inserted into a copy of the table. What no loader on that engine can beat for the same updates.
- `pipeline_pg_rerun` / `pipeline_duckdb_rerun`: the re-load's folder materialized once more through the
  object's asset (Dagster in process, the IO manager), as a user re-runs it: the re-load recorded its file
  in the loaded-files ledger, so the asset finds it there and reads nothing; the time is the whole run's.
- `pipeline_pg_mixed` / `pipeline_duckdb_mixed`: a differential of 30% new Ids and 70% updates
  (a third, later day) into the table the re-load left.
- `dlt_pg_first` / `dlt_pg_reload` / `dlt_duckdb_first` / `dlt_duckdb_reload`: the peer, dlt's
  fastest path on the same files (benchmarks/peers.py; only with the `bench` extra).
- `json_baseline_pg`: THE APPROACH THIS PROJECT REPLACED, written plainly as a baseline:
  pandas read_csv -> to_json(orient="records", lines=True) -> COPY into a jsonb staging table ->
  INSERT ... SELECT ... ON CONFLICT DO UPDATE. It is not used by the pipeline.

Times exclude interpreter start-up and imports (recorded separately as `startup_s`), for every
variant alike. The PostgreSQL server's own memory is not in any variant's RSS; DuckDB runs
in-process, so its memory is.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.peers import PEERS
from benchmarks.postgres import PG, admin, connect

_STARTED = time.perf_counter()

FIRST_DAY = datetime.date(2024, 5, 1)
RELOAD_DAY = datetime.date(2024, 6, 1)
MIXED_DAY = datetime.date(2024, 7, 1)
MIXED_NEW_SHARE = 0.3  # the mixed differential: this share of new Ids, the rest updates
SEED = 7

RAW = ("raw_pg_copy", "raw_duckdb_csv")
PIPELINE = ("pipeline_pg_first", "pipeline_pg_reload", "pipeline_pg_rerun", "pipeline_pg_mixed",
            "pipeline_duckdb_first", "pipeline_duckdb_reload", "pipeline_duckdb_rerun", "pipeline_duckdb_mixed")
FLOORS = ("floor_pg_update", "floor_duckdb_merge")
BASELINE = ("json_baseline_pg",)
VARIANTS = RAW + PIPELINE + FLOORS + PEERS + BASELINE
TARGET_OF = {v: ("duckdb" if "duckdb" in v else "pg") for v in VARIANTS}
LIMIT_OF = {"pg": "raw_pg_copy", "duckdb": "raw_duckdb_csv"}
FLOOR_OF = {"pg": "floor_pg_update", "duckdb": "floor_duckdb_merge"}
# etl_assets.salesforce.catalog.HISTORY_ENV, spelled out: importing the catalog here would raise the parent's
# peak RSS, which every variant's process inherits (Linux keeps ru_maxrss across fork and exec).
HISTORY_OFF = ("ETL_ASSETS_SALESFORCE_HISTORY", "off")
# Each engine's variants in the order they run: each pipeline load and floor starts from the table the
# previous one left (first load, all-update re-load, the floor's same updates, re-run, mixed differential).
ORDER = {"pg": ("raw_pg_copy", "pipeline_pg_first", "pipeline_pg_reload", "floor_pg_update", "pipeline_pg_rerun",
                "pipeline_pg_mixed"),
         "duckdb": ("raw_duckdb_csv", "pipeline_duckdb_first", "pipeline_duckdb_reload", "floor_duckdb_merge",
                    "pipeline_duckdb_rerun", "pipeline_duckdb_mixed")}
STAGES = ("read", "transform", "validate", "stage", "merge")


def folder_name(day: datetime.date) -> str:
    return f"{day:%Y%m%d}_Differential"


# ---------------------------------------------------------------- generation (parent)


def backup_path(root: Path, api_name: str, rows: int, day: datetime.date, seed: int = SEED) -> Path:
    """Where the deterministic backup of `rows` records lands: a real backup/ folder layout."""
    return root / "backup" / folder_name(day) / api_name / f"{api_name.lower()}_{rows}_seed{seed}.csv"


def _generate(path: str, api_name: str, rows: int, day: datetime.date, seed: int) -> str:
    from etl_assets.samples.salesforce import write_object_csv

    target = Path(path)
    temporary = target.with_suffix(".csv.partial")
    write_object_csv(temporary, api_name, rows, seed=seed, day=day, first_index=0)
    os.replace(temporary, target)
    return path


def ensure_backups(root: Path, api_name: str, rows: int, seed: int = SEED, reload: bool = True,
                   in_process: bool = False) -> tuple[Path, Path]:
    """The first-load file and the re-load file (same Ids, a later day); generated once, then reused.

    Both come from the project's sample generator, so the same arguments give byte-identical files.
    Written by two worker processes (the parent stays small: every variant's process inherits its peak RSS),
    or here (`in_process`: when every variant runs in this process anyway).
    """
    days = (FIRST_DAY, RELOAD_DAY)
    paths = [backup_path(root, api_name, rows, day, seed) for day in days]
    missing = [(p, d) for p, d in zip(paths, days) if not p.exists() and (reload or d == FIRST_DAY)]
    if missing:
        started = time.perf_counter()
        for path, _ in missing:
            path.parent.mkdir(parents=True, exist_ok=True)
        if in_process:
            for path, day in missing:
                _generate(str(path), api_name, rows, day, seed)
        else:
            with ProcessPoolExecutor(max_workers=min(2, len(missing))) as pool:
                list(pool.map(_generate, [str(p) for p, _ in missing], [api_name] * len(missing),
                              [rows] * len(missing), [d for _, d in missing], [seed] * len(missing)))
        print(f"generated {len(missing)} backup file(s) of {rows:,} {api_name} rows in "
              f"{time.perf_counter() - started:.1f} s under {root}", flush=True)
    return paths[0], paths[1]


def ensure_mixed(root: Path, api_name: str, rows: int, seed: int = SEED) -> Path:
    """The mixed differential (a later day): 70% of the first file's Ids updated, then 30% new Ids."""
    path = backup_path(root, api_name, rows, MIXED_DAY, seed)
    if path.exists():
        return path
    from etl_assets.samples.salesforce import write_object_csv

    new = round(rows * MIXED_NEW_SHARE)
    path.parent.mkdir(parents=True, exist_ok=True)
    updates, added = path.with_suffix(".updates.partial"), path.with_suffix(".new.partial")
    write_object_csv(updates, api_name, rows - new, seed=seed, day=MIXED_DAY, first_index=0)
    write_object_csv(added, api_name, new, seed=seed, day=MIXED_DAY, first_index=rows)
    with open(updates, "ab") as out, open(added, "rb") as tail:
        tail.readline()  # the header (one line: no header name holds a line break)
        shutil.copyfileobj(tail, out, 1 << 20)
    added.unlink()
    os.replace(updates, path)
    return path


def file_of(variant: str, files: dict[str, Path]) -> Path:
    """The file a variant loads: the first, the re-load (also re-run, and the floors' updates) or the mixed one."""
    if variant.endswith("_mixed"):
        return files["mixed"]
    if variant.endswith(("_reload", "_rerun")):
        return files["reload"]
    return files["first"]  # the floors too: DuckDB's applies its rows (older values) to a copy of the re-loaded table


# ---------------------------------------------------------------- variants (child)


def _header_names(path: Path) -> list[str]:
    from etl_assets.landing.csv_reader import read_header

    return list(read_header(path, path.name)[0])


def _header(path: Path) -> list[str]:
    return [name.lower() for name in _header_names(path)]


def raw_pg_copy(args) -> dict:
    """COPY FROM STDIN of the file as it is, into an all-text table: the server's own limit."""
    columns = _header(args.file)
    connection = connect(args.db)
    started = time.perf_counter()
    with connection, connection.cursor() as cursor:
        cursor.execute("CREATE SCHEMA IF NOT EXISTS raw; DROP TABLE IF EXISTS raw.copy_target")
        cursor.execute("CREATE TABLE raw.copy_target (" + ", ".join(f'"{c}" text' for c in columns) + ")")
        with open(args.file, "rb") as source:
            cursor.copy_expert("COPY raw.copy_target FROM STDIN WITH (FORMAT csv, HEADER true)", source, size=1 << 20)
        rows = cursor.rowcount
    total = time.perf_counter() - started
    connection.close()
    return {"rows": rows, "total": total, "stages": {}}


def raw_duckdb_csv(args) -> dict:
    """DuckDB's own CSV reader into a table of the same database file settings the warehouse uses."""
    import duckdb

    from etl_assets.warehouse.duckdb import DuckDBWarehouse

    warehouse = DuckDBWarehouse(path=str(args.duckdb))
    connection = warehouse.connect()  # same memory_limit and settings as the pipeline's loads
    started = time.perf_counter()
    connection.execute("CREATE SCHEMA IF NOT EXISTS raw; DROP TABLE IF EXISTS raw.read_csv_target")
    connection.execute("CREATE TABLE raw.read_csv_target AS SELECT * FROM read_csv(?)", [str(args.file)])
    connection.execute("CHECKPOINT")
    total = time.perf_counter() - started
    rows = connection.execute("SELECT COUNT(*) FROM raw.read_csv_target").fetchone()[0]
    connection.close()
    assert isinstance(duckdb.__version__, str)
    return {"rows": rows, "total": total, "stages": {}}


def _pipeline(args, target: str, expect: str) -> dict:
    """The asset's own code path: stream_object, then the warehouse IO manager's warehouse.load, which
    reads the batch's rows as it loads them (streamed, or staged first where the warehouse chooses to)."""
    from etl_assets.salesforce.catalog import load_catalog
    from etl_assets.salesforce.staging import SourceFile, stream_object

    from benchmarks.stages import StageTimes

    if target == "pg":
        from etl_assets.warehouse.postgres import PostgresWarehouse

        warehouse = PostgresWarehouse(host=PG["host"], port=PG["port"], user=PG["user"], database=args.db)
    else:
        from etl_assets.warehouse.duckdb import DuckDBWarehouse

        warehouse = DuckDBWarehouse(path=str(args.duckdb))
    obj = (load_catalog(discovered=args.discovered) if args.discovered else load_catalog())[args.object]
    folder = args.file.parent.parent.name
    if expect == "none":  # the re-run: the asset itself, as a user re-materializes the folder
        return _rerun(args, warehouse, obj, folder)
    source = SourceFile(f"backup/{folder}/{args.object}/{args.file.name}", args.file)
    with StageTimes() as stages:
        started = time.perf_counter()
        batch, report = stream_object(obj, [source], partition=folder)
        if expect == "update":  # recorded in the loaded-files ledger as the asset records it, for the re-run
            _record_in_ledger(args, warehouse, obj, folder, batch, report)
        stages.watch(batch)
        staged = time.perf_counter()
        result = warehouse.load(batch)
        finished = time.perf_counter()
    batch.discard()
    # The staging stages (read, transform, validate, stage) ran inside the load, streamed (overlapping it:
    # "stage" is then the wait for the warehouse) or staged first: `merge` is the load's time beyond them.
    timings = stages.seconds()
    timings["merge"] = max(finished - staged - sum(timings.values()), 0.0)
    count = warehouse.count_rows(batch.spec.schema, batch.spec.name)
    expected = {"insert": (report.rows_read, 0), "update": (0, report.rows_read), "none": (0, 0),
                "mixed": (round(report.rows_read * MIXED_NEW_SHARE), report.rows_read - round(report.rows_read * MIXED_NEW_SHARE))}
    if not args.any_path and (report.rows_rejected or (result.inserted, result.updated) != expected[expect]):
        raise SystemExit(f"{args.variant}: expected (inserted, updated) = {expected[expect]} ({expect}): read "
                         f"{report.rows_read}, rejected {report.rows_rejected}, inserted {result.inserted}, "
                         f"updated {result.updated}")
    return {"rows": report.rows_read, "total": finished - started, "stages": timings,
            "inserted": result.inserted, "updated": result.updated, "rows_in_table": count,
            "rejected": report.rows_rejected}


def _landing(args, folder: str) -> Path:
    """A landing zone holding only the loaded file, at its key (a hard link: the same size and time, so
    the same fingerprint), for the re-load to record and the re-run to find in the ledger. One zone per
    file: runs of other shapes (`--columns`, `--csv`) share the work directory and the folder's name."""
    root = args.workdir / "rerun_landing" / args.file.stem
    target = root / "backup" / folder / args.object / args.file.name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(args.file, target)
        except OSError:
            shutil.copy2(args.file, target)
    return root


def _record_in_ledger(args, warehouse, obj, folder: str, batch, report) -> None:
    """The ledger's rows the asset's load of this file would commit with the rows (loaded_files.py)."""
    from etl_assets.landing.zone import LocalLandingZone
    from etl_assets.salesforce.assets import object_files
    from etl_assets.salesforce.encodings import folder_encoding
    from etl_assets.salesforce.loaded_files import applied_fingerprint, bookkeeping, ledger_spec

    files = object_files(LocalLandingZone(root=str(_landing(args, folder))), folder, obj)
    warehouse.ensure_table(ledger_spec(obj.schema))
    batch.bookkeeping = bookkeeping(warehouse, obj, folder, files, applied_fingerprint(obj, folder_encoding(folder), None),
                                    f"benchmark {args.variant}", batch, report)


def _rerun(args, warehouse, obj, folder: str) -> dict:
    """The re-load's folder materialized again through the object's asset and the warehouse IO manager
    (Dagster in process, as `etl-assets materialize` runs it): its file is in the ledger as it is, so
    the asset must skip it; timed from the launch to the run's end."""
    import dagster as dg

    from etl_assets.landing.zone import LocalLandingZone
    from etl_assets.salesforce.assets import build_object_asset
    from etl_assets.salesforce.partitions import differential_folders
    from etl_assets.salesforce.personal_data import HashKey
    from etl_assets.warehouse.io_manager import WarehouseIOManager

    asset = build_object_asset(obj)
    resources = {"landing_zone": LocalLandingZone(root=str(_landing(args, folder))), "warehouse": warehouse,
                 "warehouse_io_manager": WarehouseIOManager(warehouse=warehouse), "column_policy_key": HashKey()}
    spec = obj.table_spec()
    before = warehouse.count_rows(spec.schema, spec.name)
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(differential_folders.name, [folder])
        started = time.perf_counter()
        result = dg.materialize([asset], partition_key=folder, resources=resources, instance=instance)
        finished = time.perf_counter()
    [materialization] = result.asset_materializations_for_node(asset.node_def.name)
    metadata = materialization.metadata
    if "skipped_already_loaded" not in metadata:
        raise SystemExit(f"{args.variant}: the re-run loaded the file again instead of finding it in the ledger "
                         f"(load_mode {metadata.get('load_mode')})")
    [earlier] = metadata["already_loaded_files"].value
    count = warehouse.count_rows(spec.schema, spec.name)
    return {"rows": earlier["folder_rows_read"], "total": finished - started, "stages": {}, "inserted": 0,
            "updated": 0, "rows_in_table": count, "rows_in_table_before": before, "rejected": 0, "skipped": True}


# What each pipeline variant expects of its rows (`_pipeline`'s `expect`), by the variant's last word.
PIPELINE_EXPECTS = {"first": "insert", "reload": "update", "rerun": "none", "mixed": "mixed"}


def _loaded_table(args) -> str:
    from etl_assets.salesforce.catalog import load_catalog

    obj = (load_catalog(discovered=args.discovered) if args.discovered else load_catalog())[args.object]
    return obj.table


def floor_pg_update(args) -> dict:
    """PostgreSQL's floor for the re-load: every row of the table updated (all columns but the key) from a
    copy of it already on the server and analysed, no COPY, no parsing, by the cheaper of the two single
    statements that can do it: `UPDATE ... FROM` (one hash join) and `INSERT ... ON CONFLICT DO UPDATE`
    (a key probe per row). Each starts from a compact table after a checkpoint (VACUUM FULL between them:
    the first one's dead rows would otherwise make room for the second's, which a re-load never has).
    Only the statements and their commits are timed."""
    name = _loaded_table(args)
    connection = connect(args.db)
    target, copy = f'salesforce."{name}"', 'salesforce."floor_rows"'
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = 'salesforce' "
                       "AND table_name = %s ORDER BY ordinal_position", (name,))
        columns = [c for (c,) in cursor.fetchall()]
        cursor.execute(f"DROP TABLE IF EXISTS {copy}; CREATE TABLE {copy} AS SELECT * FROM {target}; "
                       f"ANALYZE {copy}; ANALYZE {target}")
    listed = ", ".join(f'"{c}"' for c in columns)
    sets = ", ".join(f'"{c}" = s."{c}"' for c in columns if c != "id")
    excluded = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in columns if c != "id")
    statements = {
        "update_from": f"UPDATE {target} AS t SET {sets} FROM {copy} AS s WHERE t.id = s.id",
        "insert_on_conflict": f"INSERT INTO {target} ({listed}) SELECT {listed} FROM {copy} "
                              f"ON CONFLICT (id) DO UPDATE SET {excluded}",
    }
    seconds, rows = {}, 0
    connection.autocommit = True
    for label, sql in statements.items():
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM FULL {target}")
            cursor.execute("CHECKPOINT")  # the copy's and the compaction's dirty pages are not the floor's cost
        connection.autocommit = False
        started = time.perf_counter()
        with connection, connection.cursor() as cursor:
            cursor.execute(sql)
            rows = cursor.rowcount
        seconds[label] = time.perf_counter() - started
        connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {copy}")
        cursor.execute(f"VACUUM FULL {target}")
    connection.close()
    total = min(seconds.values())
    return {"rows": rows, "total": total, "stages": {"merge": total}, "updated": rows, "statements_s": seconds,
            "cheapest": min(seconds, key=seconds.get)}


def floor_duckdb_merge(args) -> dict:
    """DuckDB's floor for the re-load: 1M rows of new values applied to a copy of the re-loaded table (made
    before the clock starts, so the pipeline's table is left as it was), straight from `read_csv` of the
    first file (DuckDB's own parallel reader, each column cast to the table's type): staged once into a
    temporary table, the rows it replaces deleted, its rows inserted, committed and checkpointed, under
    the warehouse's memory limit. DELETE + INSERT, as the warehouse's own merge: an `UPDATE` or `MERGE INTO`
    of 1M changed rows of this width runs out of memory under that limit (DuckDB 2.0: measured)."""
    from etl_assets.warehouse.duckdb import DuckDBWarehouse

    name = _loaded_table(args)
    connection = DuckDBWarehouse(path=str(args.duckdb)).connect()
    columns = connection.execute("SELECT column_name, data_type FROM information_schema.columns WHERE "
                                 "table_schema = 'salesforce' AND table_name = ? ORDER BY ordinal_position",
                                 [name]).fetchall()
    header = {c.lower(): c for c in _header_names(args.file)}
    loaded = [(c, t) for c, t in columns if c in header]
    names = ", ".join(f'"{c}"' for c, _ in loaded)
    target = 'salesforce."floor_target"'
    connection.execute(f'CREATE OR REPLACE TABLE {target} AS SELECT * FROM salesforce."{name}"')
    connection.execute("CHECKPOINT")
    started = time.perf_counter()
    connection.execute("BEGIN")
    # Every value read as text and cast as the table stores it (booleans: 'true'/'false' to 1/0).
    casts = [f'CAST(CAST("{header[c]}" AS BOOLEAN) AS SMALLINT)' if t == "SMALLINT" else f'CAST("{header[c]}" AS {t})'
             for c, t in loaded]
    connection.execute("CREATE TEMPORARY TABLE floor_rows AS SELECT "
                       + ", ".join(f'{cast} AS "{c}"' for cast, (c, _) in zip(casts, loaded))
                       + " FROM read_csv(?, all_varchar = true)", [str(args.file)])
    connection.execute(f"DELETE FROM {target} AS t USING floor_rows AS s WHERE t.id = s.id")
    rows = connection.execute(f"INSERT INTO {target} ({names}) SELECT {names} FROM floor_rows").fetchone()[0]
    connection.execute("DROP TABLE floor_rows")
    connection.execute("COMMIT")
    connection.execute("CHECKPOINT")
    total = time.perf_counter() - started
    connection.execute(f"DROP TABLE {target}")
    connection.execute("CHECKPOINT")
    connection.close()
    return {"rows": rows, "total": total, "stages": {"merge": total}, "updated": rows}


# The baseline: the JSON-staging pipeline this project replaced. Plain on purpose; not used anywhere else.
_JSON_SQL_TYPES = {"string": "text", "datetime": "timestamptz", "date": "date", "boolean": "smallint",
                   "integer": "bigint", "float": "double precision"}


def _json_cast(name: str, type_: str) -> str:
    value = f"(doc->>'{name}')"
    if type_ == "string":
        return f"coalesce({value}, '')"
    if type_ == "boolean":
        return f"CASE lower({value}) WHEN 'true' THEN 1 WHEN '1' THEN 1 WHEN 'false' THEN 0 WHEN '0' THEN 0 END"
    return f"NULLIF({value}, '')::{_JSON_SQL_TYPES[type_]}"


def json_baseline_pg(args) -> dict:
    """BASELINE (the replaced approach): pandas -> JSON lines -> COPY into jsonb -> INSERT ... ON CONFLICT."""
    import pandas as pd

    from etl_assets.salesforce.catalog import load_catalog

    obj = load_catalog()[args.object]
    types = {c.name: c.type.value for c in obj.columns}
    key, version = obj.primary_key.lower(), obj.version_column.lower()
    json_path = args.workdir / f"baseline_{os.getpid()}.jsonl"
    stages: dict[str, float] = {}
    started = time.perf_counter()
    frame = pd.read_csv(args.file, dtype=str, keep_default_na=False)
    frame.columns = [c.lower() for c in frame.columns]
    read = time.perf_counter()
    stages["read"] = read - started
    frame.to_json(json_path, orient="records", lines=True, force_ascii=False)
    rows = len(frame)
    del frame
    staged_json = time.perf_counter()
    stages["transform"] = staged_json - read  # the JSON serialisation
    names = [c for c in types]
    connection = connect(args.db)
    with connection, connection.cursor() as cursor:
        cursor.execute("CREATE SCHEMA IF NOT EXISTS legacy")
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS legacy.{obj.table} ("
            + ", ".join(f'"{n}" {_JSON_SQL_TYPES[t]}' for n, t in types.items())
            + f', _loaded_at timestamptz, PRIMARY KEY ("{key}"))'
        )
        cursor.execute("CREATE TEMPORARY TABLE legacy_staging (doc jsonb)")
        with open(json_path, "rb") as source:
            # JSON lines hold no raw newlines or control characters: \x01 / \x02 never occur.
            cursor.copy_expert("COPY legacy_staging (doc) FROM STDIN WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')",
                               source, size=1 << 20)
        copied = time.perf_counter()
        stages["stage"] = copied - staged_json
        cursor.execute(
            f"INSERT INTO legacy.{obj.table} ({', '.join(chr(34) + n + chr(34) for n in names)}, _loaded_at) "
            f"SELECT {', '.join(_json_cast(n, types[n]) for n in names)}, now() FROM legacy_staging "
            f'ON CONFLICT ("{key}") DO UPDATE SET '
            + ", ".join(f'"{n}" = EXCLUDED."{n}"' for n in names if n != key)
            + f', _loaded_at = now() WHERE legacy.{obj.table}."{version}" < EXCLUDED."{version}"'
        )
        merged = cursor.rowcount
    finished = time.perf_counter()
    stages["merge"] = finished - copied
    connection.close()
    json_path.unlink(missing_ok=True)
    return {"rows": rows, "total": finished - started, "stages": stages, "inserted": merged}


def _variant_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="One measured variant of the load benchmark (run by the parent).")
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--object", default="Task")
    parser.add_argument("--db", default="postgres", help="PostgreSQL database (the parent creates a fresh one)")
    parser.add_argument("--duckdb", type=Path, help="DuckDB database file")
    parser.add_argument("--workdir", type=Path, default=Path("data/bench/work"))
    parser.add_argument("--discovered", type=Path, help="discovered-state file to load the catalog with (--csv)")
    parser.add_argument("--any-path", action="store_true",
                        help="a user's file (--csv): report inserted/updated/rejected rows instead of requiring one path")
    return parser


def run_variant(argv: list[str] | None = None) -> int:
    args = _variant_parser().parse_args(argv)
    startup = time.perf_counter() - _STARTED
    print("RESULT " + json.dumps(_variant(args, startup)), flush=True)
    return 0


def _variant(args, startup: float) -> dict:
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.variant in PEERS:
        from benchmarks.peers import run_peer

        result = run_peer(args)
    else:
        result = _pipeline(args, args.variant.split("_")[1], PIPELINE_EXPECTS[args.variant.split("_")[2]]) \
            if args.variant in PIPELINE else globals()[args.variant](args)
    result.update(
        variant=args.variant,
        startup_s=startup,
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux reports KiB
    )
    return result


def _in_this_process(variant: str, argv: list[str]) -> dict:
    """The variant run as its child would run it, in this process (`one_process`): with history off, and the
    catalog read again (it is cached per process; history's part then reads it with history on); what it writes
    to stderr (the re-run's Dagster log) kept as a child's is, and a failure reported as a failed child's. No
    interpreter start-up: startup_s is 0; peak RSS is this process's so far."""
    import contextlib
    import io
    import traceback

    from etl_assets.salesforce.catalog import load_catalog

    before = os.environ.get(HISTORY_OFF[0])
    os.environ[HISTORY_OFF[0]] = HISTORY_OFF[1]
    load_catalog.cache_clear()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return _variant(_variant_parser().parse_args(argv), 0.0)
    except (Exception, SystemExit) as error:  # what a child's non-zero exit reports
        return {"variant": variant, "failed": True, "error": str(error).strip()[:500], "returncode": 1,
                "stderr_tail": (stderr.getvalue() + traceback.format_exc())[-3000:]}
    finally:
        if before is None:
            os.environ.pop(HISTORY_OFF[0], None)
        else:
            os.environ[HISTORY_OFF[0]] = before
        load_catalog.cache_clear()


# ---------------------------------------------------------------- orchestration (parent)


def _child(variant: str, file: Path, obj: str, db: str | None, duckdb_path: Path | None, workdir: Path,
           timeout: float, extra: tuple[str, ...] = (), one_process: bool = False) -> dict:
    arguments = ["--variant", variant, "--file", str(file), "--object", obj, "--workdir", str(workdir), *extra]
    if db:
        arguments += ["--db", db]
    if duckdb_path:
        arguments += ["--duckdb", str(duckdb_path)]
    load_before = os.getloadavg()
    if one_process:
        return {**_in_this_process(variant, arguments), "loadavg_before": load_before}
    command = [sys.executable, "-m", "benchmarks.loads", *arguments]
    # The child imports this package wherever the bench was started from: the repository's root on its path.
    path = os.pathsep.join(filter(None, (str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH"))))
    # History off: this benchmark compares the merge with the limits and dlt; what history adds is the
    # history part's measure (benchmarks/history.py).
    process = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "PYTHONPATH": path, HISTORY_OFF[0]: HISTORY_OFF[1]})
    if process.returncode != 0:
        lines = [x for x in process.stderr.strip().splitlines() if x.strip()]
        error = next((x for x in reversed(lines) if "Error" in x or "Exception" in x), lines[-1] if lines else "")
        if process.returncode < 0 and not error:  # killed: SIGKILL here is most often the kernel's OOM killer
            name = signal.Signals(-process.returncode).name
            error = f"killed by {name}" + (" (out of memory? see `dmesg`)" if name == "SIGKILL" else "")
        return {"variant": variant, "failed": True, "error": error.strip()[:500], "returncode": process.returncode,
                "loadavg_before": load_before, "stderr_tail": process.stderr[-3000:]}
    line = next(x for x in process.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    result["loadavg_before"] = load_before
    return result


def generated_backups(data_root: Path, api_name: str, rows: int, columns: int = 0, reload: bool = True,
                      in_process: bool = False) -> dict[str, Path]:
    """The first, re-load and mixed files (`reload` False: the first only), as the generator writes them
    or (`columns`) rewritten as Data Export writes them (every value quoted) at that many columns."""
    first, second = ensure_backups(data_root, api_name, rows, reload=reload, in_process=in_process)
    files = {"first": first, "reload": second, "mixed": ensure_mixed(data_root, api_name, rows) if reload else second}
    if not columns:
        return files
    from benchmarks.sources import export_shaped

    shaped = {}
    for kind, path in files.items():
        target = data_root / "shaped" / path.relative_to(data_root).with_name(f"{path.stem}_export{columns}.csv")
        shaped[kind] = export_shaped(path, target, columns) if path.exists() else target
    return shaped


def run_load_benchmark(rows: int, api_name: str, rounds: int, targets: set[str], data_root: Path,
                       baseline_rounds: int = 1, timeout: float = 3600.0, log=print, only_first: bool = False,
                       peers: bool = True, columns: int = 0, user=None, one_process: bool = False) -> dict:
    """Every variant of `targets` ('pg', 'duckdb', 'baseline') in turns for `rounds` rounds;
    `only_first`: just the pipeline's first loads (the memory point). `peers`: dlt's rows too, when
    installed. `columns`: an export-shaped file of that many columns (0: the generator's own).
    `user`: a sources.UserFile (--csv) instead of generated files. `one_process` (`--loads-one-process`, the
    tests' quick run): every variant in this process rather than a fresh one each (no start-up; peak RSS is
    then this process's so far, not a variant's own)."""
    from benchmarks import peers as peer_module

    extra: tuple[str, ...] = ()
    if user is not None:
        files = {"first": user.first, "reload": user.reload}
        api_name = user.api_name
        extra = ("--any-path",) + (("--discovered", str(user.discovered)) if user.discovered else ())
    else:
        files = generated_backups(data_root, api_name, rows, columns, reload=not only_first, in_process=one_process)
    first, reload = files["first"], files["reload"]
    workdir = data_root / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    peer_note = None
    if peers and not only_first:
        ok, peer_note = peer_module.available("pg" if "pg" in targets else "duckdb")
        peers = ok
        if not ok:
            log(f"  {peer_note}")
    order = []
    for target in ("pg", "duckdb"):
        if target in targets:
            # A user's file has no mixed differential.
            order += [v for v in ORDER[target] if not (user is not None and v.endswith("_mixed"))]
            order += [v for v in (f"dlt_{target}_first", f"dlt_{target}_reload") if peers]
    if "baseline" in targets:
        order.append("json_baseline_pg")
    if only_first:
        order = [v for v in order if v.startswith("pipeline_") and v.endswith("_first")]
    runs: dict[str, list[dict]] = {v: [] for v in order}
    started = time.time()
    for round_number in range(rounds):
        db = f"bench_{os.getpid()}_{round_number}"
        duck = workdir / f"{db}.duckdb"
        needs_pg = any(TARGET_OF[v] == "pg" for v in order)
        if needs_pg:
            admin(f"CREATE DATABASE {db}")
        try:
            for variant in order:
                if variant in BASELINE and round_number >= baseline_rounds:
                    continue
                file = file_of(variant, files)
                if TARGET_OF[variant] == "pg":
                    admin("CHECKPOINT")  # the previous variant's dirty pages are not this one's cost
                result = _child(variant, file, api_name, db if TARGET_OF[variant] == "pg" else None,
                                duck if TARGET_OF[variant] == "duckdb" else None, workdir, timeout,
                                extra if variant.startswith(("pipeline_", "floor_")) else (), one_process)
                result["round"] = round_number
                runs[variant].append(result)
                if result.get("failed"):
                    log(f"  round {round_number + 1}/{rounds} {variant:<24} FAILED: {result['error']}")
                    continue
                log(f"  round {round_number + 1}/{rounds} {variant:<24} {result['total']:8.2f} s  "
                    f"{result['peak_rss_bytes'] / 2**20:7.0f} MiB  load {result['loadavg_before'][0]:.2f}")
        finally:
            if needs_pg:
                admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            for path in (duck, duck.with_name(duck.stem + "_dlt.duckdb")):
                for suffix in ("", ".wal"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
            for home in (workdir / f"dlt_{db}", workdir / f"dlt_{duck.stem}"):
                shutil.rmtree(home, ignore_errors=True)
    variants = summarize(runs)
    if user is not None:  # a user's file: its own row count, as the loads read it
        rows = max((s.get("rows") or 0 for s in variants.values()), default=0)
    return {
        "kind": "loads",
        "object": api_name,
        "rows": rows,
        "files": {"first": _describe_file(first), "reload": _describe_file(reload) if reload.exists() else None},
        "rounds": rounds,
        "baseline_rounds": min(baseline_rounds, rounds),
        "history": "off (what history mode adds: the history part, benchmarks/history.py)",
        "source": user.how if user is not None else (
            f"generated {api_name} backup rewritten as Data Export writes it (every value quoted), {columns} columns"
            if columns else f"generated {api_name} backup (etl_assets/samples/salesforce.py)"),
        "peers": {"ran": bool(peers) and not only_first, "note": peer_note, "dlt": peer_module.version(),
                  "chunk_rows": peer_module.CHUNK_ROWS},
        "started_at": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": time.time() - started,
        # Every variant inherits the parent's peak RSS (Linux keeps ru_maxrss across fork and exec): it stays small.
        "parent_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "variants": variants,
        "one_process": one_process,
    }


def _describe_file(path: Path) -> dict:
    from benchmarks.sources import describe

    return describe(path)


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Best (lowest total) run per variant, its stage times, the highest peak RSS over all rounds,
    and ratios to the raw limits of the same run."""
    failures = {v: [r for r in rs if r.get("failed")] for v, rs in runs.items()}
    runs = {v: [r for r in rs if not r.get("failed")] for v, rs in runs.items()}
    best = {v: min(rs, key=lambda r: r["total"]) for v, rs in runs.items() if rs}
    summary = {}
    for variant, failed in failures.items():
        if failed and variant not in best:
            summary[variant] = {"target": TARGET_OF[variant], "failed": True, "error": failed[0]["error"],
                                "failures": len(failed), "loadavg_before": failed[0]["loadavg_before"]}
    for variant, run in best.items():
        target = TARGET_OF[variant]
        limit = best.get(LIMIT_OF[target])
        raw_copy = best.get("raw_pg_copy")
        floor = best.get(FLOOR_OF[target])
        summary[variant] = {
            "target": target,
            "rows": run["rows"],
            "stages": {k: run["stages"].get(k) for k in STAGES if k in run["stages"]},
            "total_s": run["total"],
            "rows_per_s": run["rows"] / run["total"] if run["total"] else None,
            "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs[variant]),
            "ratio_to_limit": run["total"] / limit["total"] if limit else None,
            "limit": LIMIT_OF[target],
            "ratio_to_raw_copy": run["total"] / raw_copy["total"] if raw_copy else None,
            "ratio_to_floor": run["total"] / floor["total"] if floor else None,
            "startup_s": run["startup_s"],
            "loadavg_before": run["loadavg_before"],
            "all_totals_s": [r["total"] for r in runs[variant]],
            "failures": len(failures.get(variant, [])),
            **{k: run[k] for k in ("inserted", "updated", "rows_in_table", "rejected", "file_formats", "statements_s",
                                   "cheapest") if k in run},
        }
    return {v: summary[v] for v in failures if v in summary}


if __name__ == "__main__":
    sys.exit(run_variant())
