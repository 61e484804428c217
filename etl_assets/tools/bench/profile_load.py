"""Where one pipeline load's time goes: the staging stages, then every SQL step of the warehouse load.

    python -m etl_assets.tools.bench.profile_load --target pg --file data/bench/.../task_1000000_seed7_export33.csv \\
        --reload data/bench/.../(later folder)/... --out benchmarks/results/loads_profile.json [--cprofile N]

Runs the asset's own code path (`stage_object`, then `warehouse.load`) into a fresh PostgreSQL database
or DuckDB file, first load then the re-load, with timers around each stage and around each statement
the load's plan runs (the warehouse's Session methods are wrapped here, at run time; the warehouse
code itself is not changed). The time between the last statement and the end of `load` is the
commit. `--cprofile N` also writes the N most expensive functions (cumulative) of the staging part,
with cProfile (slower: run it apart from the timed run).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import sys
import time
from pathlib import Path

from etl_assets.tools.bench.loads import PG, _admin


def _label(sql: str) -> str:
    words = " ".join(sql.split())
    for marker in (" FROM STDIN", " AS SELECT", " SELECT", " SET ", " USING", " WHERE", " ("):
        at = words.find(marker)
        if 0 < at < 90:
            return words[:at + len(marker)].strip()
    return words[:90]


class _Recorder:
    def __init__(self):
        self.steps: list[dict] = []

    def wrap(self, cls, name: str) -> None:
        original = getattr(cls, name)
        recorder = self

        def timed(session, first, *args, **kwargs):
            sql = first.sql if hasattr(first, "sql") else first
            started = time.perf_counter()
            try:
                return original(session, first, *args, **kwargs)
            finally:
                recorder.steps.append({"sql": _label(sql), "seconds": time.perf_counter() - started,
                                       "at": started})

        setattr(cls, name, timed)


def _warehouse(target: str, database: str, duck: Path):
    if target == "pg":
        from etl_assets.warehouse.postgres import PostgresSession, PostgresWarehouse

        return PostgresWarehouse(host=PG["host"], port=PG["port"], user=PG["user"], database=database), PostgresSession
    from etl_assets.warehouse.duckdb import DuckDBSession, DuckDBWarehouse

    return DuckDBWarehouse(path=str(duck)), DuckDBSession


def _one(obj, file: Path, warehouse, recorder: _Recorder, profile_top: int) -> dict:
    from etl_assets.salesforce.staging import SourceFile, stage_object

    folder = file.parent.parent.name
    source = SourceFile(f"backup/{folder}/{obj.api_name}/{file.name}", file)
    timings: dict[str, float] = {}
    profiler = cProfile.Profile() if profile_top else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    batch, report = stage_object(obj, [source], partition=folder, timings=timings)
    if profiler:
        profiler.disable()
    staged = time.perf_counter()
    recorder.steps.clear()
    result = warehouse.load(batch)
    finished = time.perf_counter()
    batch.discard()
    steps = list(recorder.steps)
    in_steps = sum(s["seconds"] for s in steps)
    out = {"rows": report.rows_read, "inserted": result.inserted, "updated": result.updated,
           "total_s": finished - started, "staging_s": staged - started, "stages": timings,
           "load_s": finished - staged, "load_steps": [{k: v for k, v in s.items() if k != "at"} for s in steps],
           "load_outside_steps_s": finished - staged - in_steps,
           "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(profile_top)
        out["cprofile_staging"] = text.getvalue()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=("pg", "duckdb"), required=True)
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--reload", type=Path, help="the re-load file (same Ids, later versions)")
    parser.add_argument("--object", default="Task")
    parser.add_argument("--workdir", type=Path, default=Path("data/bench/work"))
    parser.add_argument("--cprofile", type=int, default=0, help="also cProfile staging: this many functions")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from etl_assets.salesforce.catalog import load_catalog

    obj = load_catalog()[args.object]
    args.workdir.mkdir(parents=True, exist_ok=True)
    database = f"bench_profile_{os.getpid()}"
    duck = args.workdir / f"{database}.duckdb"
    if args.target == "pg":
        _admin(f"CREATE DATABASE {database}")
    warehouse, session_class = _warehouse(args.target, database, duck)
    recorder = _Recorder()
    for name in ("execute", "fetchall", "copy_files"):
        if name in vars(session_class) or name != "copy_files":
            recorder.wrap(session_class, name)
    runs = {}
    try:
        for kind, file in (("first", args.file), ("reload", args.reload)):
            if file is None:
                continue
            if args.target == "pg":
                _admin("CHECKPOINT")
            runs[kind] = _one(obj, file, warehouse, recorder, args.cprofile)
            print(f"{args.target} {kind}: {runs[kind]['total_s']:.2f} s", flush=True)
    finally:
        if args.target == "pg":
            _admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        for suffix in ("", ".wal"):
            Path(f"{duck}{suffix}").unlink(missing_ok=True)
    document = {"target": args.target, "file": str(args.file), "reload": str(args.reload) if args.reload else None,
                "loadavg": os.getloadavg(), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    for kind, run in runs.items():
        print(f"\n{args.target} {kind}: total {run['total_s']:.2f} s = staging {run['staging_s']:.2f} s "
              f"({', '.join(f'{k} {v:.2f}' for k, v in run['stages'].items())}) + load {run['load_s']:.2f} s")
        for step in run["load_steps"]:
            if step["seconds"] >= 0.05:
                print(f"  {step['seconds']:7.2f} s  {step['sql']}")
        print(f"  {run['load_outside_steps_s']:7.2f} s  (connect, plan, commit: outside the statements)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
