"""Where one pipeline load's time goes: the staging stages, then every SQL step of the warehouse load.

    python -m benchmarks.profile_load --target pg --file data/bench/.../task_1000000_seed7_export33.csv \\
        --reload data/bench/.../(later folder)/... --out benchmarks/results/loads_profile.json [--cprofile N]

Runs the asset's own code path (`stream_object`, then `warehouse.load`, which reads the rows as it
loads them, streamed or staged first as the warehouse decides; with --cprofile staged first)
into a fresh PostgreSQL database
or DuckDB file, first load then the re-load, with timers around each stage and around each statement
the load's plan runs (the staging's functions (stages.py) and the warehouse's Session methods are
wrapped here, at run time; the pipeline's code itself is not changed). The time between the last
statement and the end of `load` is the commit. Besides wall time it records CPU seconds, which a
loaded machine changes much less: the process's (all its threads: the CSV reader, pgpq's COPY
encoder, DuckDB's workers), the staging thread's per stage (`stages_main_thread_cpu_s`), and for
PostgreSQL the server backend's per statement (from /proc/<pid>/stat).
`--cprofile N` also writes the N most expensive functions (cumulative) of the staging part,
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

from benchmarks.postgres import PG, admin
from benchmarks.stages import StageTimes


def _label(sql: str) -> str:
    words = " ".join(sql.split())
    for marker in (" FROM STDIN", " AS SELECT", " SELECT", " SET ", " USING", " WHERE", " ("):
        at = words.find(marker)
        if 0 < at < 90:
            return words[:at + len(marker)].strip()
    return words[:90]


_TICK = os.sysconf("SC_CLK_TCK")


def _backend_cpu(pid: int | None) -> float:
    """A PostgreSQL backend's CPU seconds so far (user + system); 0 where /proc cannot tell."""
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def _pid(session) -> int | None:
    connection = getattr(session, "connection", None)
    getter = getattr(connection, "get_backend_pid", None)
    return getter() if getter else None


class _Recorder:
    def __init__(self):
        self.steps: list[dict] = []

    def wrap(self, cls, name: str) -> None:
        original = getattr(cls, name)
        recorder = self

        def timed(session, first, *args, **kwargs):
            sql = first.sql if hasattr(first, "sql") else first
            pid = _pid(session)
            started, cpu, server = time.perf_counter(), time.process_time(), _backend_cpu(pid)
            try:
                return original(session, first, *args, **kwargs)
            finally:
                recorder.steps.append({"sql": _label(sql), "seconds": time.perf_counter() - started,
                                       "client_cpu_s": time.process_time() - cpu,
                                       "server_cpu_s": _backend_cpu(pid) - server if pid else None, "at": started})

        setattr(cls, name, timed)


def _warehouse(target: str, database: str, duck: Path):
    if target == "pg":
        from etl_assets.warehouse.postgres import PostgresSession, PostgresWarehouse

        return PostgresWarehouse(host=PG["host"], port=PG["port"], user=PG["user"], database=database), PostgresSession
    from etl_assets.warehouse.duckdb import DuckDBSession, DuckDBWarehouse

    return DuckDBWarehouse(path=str(duck)), DuckDBSession


def _one(obj, file: Path, warehouse, recorder: _Recorder, profile_top: int) -> dict:
    from etl_assets.salesforce.staging import SourceFile, stream_object
    from etl_assets.salesforce.transform import NO_TEXT_LIMITS
    from etl_assets.warehouse.rows import stage

    folder = file.parent.parent.name
    source = SourceFile(f"backup/{folder}/{obj.api_name}/{file.name}", file)
    profiler = cProfile.Profile() if profile_top else None
    with StageTimes() as stages:
        started, cpu_started = time.perf_counter(), time.process_time()
        batch, report = stream_object(obj, [source], partition=folder)
        stages.watch(batch)
        if profiler:  # as the asset does, but cProfile sees only the main thread: there, staged first
            profiler.enable()
            stage(batch, NO_TEXT_LIMITS)  # what stage_object does
            profiler.disable()
        staged, cpu_staged = time.perf_counter(), time.process_time()
        recorder.steps.clear()
        result = warehouse.load(batch)
        finished = time.perf_counter()
    streamed = batch.source is not None  # the warehouse stages rows it does not stream, then lets the source go
    batch.discard()
    steps = list(recorder.steps)
    in_steps = sum(s["seconds"] for s in steps)
    out = {"rows": report.rows_read, "inserted": result.inserted, "updated": result.updated, "streamed": streamed,
           "total_s": finished - started, "staging_s": staged - started, "stages": stages.seconds(),
           "staging_process_cpu_s": cpu_staged - cpu_started, "stages_main_thread_cpu_s": stages.cpu_seconds(),
           "load_process_cpu_s": time.process_time() - cpu_staged,
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
        admin(f"CREATE DATABASE {database}")
    warehouse, session_class = _warehouse(args.target, database, duck)
    recorder = _Recorder()
    for name in ("execute", "fetchall", "copy_files", "copy_rows"):
        if name in vars(session_class) or name not in ("copy_files", "copy_rows"):
            recorder.wrap(session_class, name)
    runs = {}
    try:
        for kind, file in (("first", args.file), ("reload", args.reload)):
            if file is None:
                continue
            if args.target == "pg":
                admin("CHECKPOINT")
            runs[kind] = _one(obj, file, warehouse, recorder, args.cprofile)
            print(f"{args.target} {kind}: {runs[kind]['total_s']:.2f} s", flush=True)
    finally:
        if args.target == "pg":
            admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        for suffix in ("", ".wal"):
            Path(f"{duck}{suffix}").unlink(missing_ok=True)
    document = {"target": args.target, "file": str(args.file), "reload": str(args.reload) if args.reload else None,
                "loadavg": os.getloadavg(), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    for kind, run in runs.items():
        print(f"\n{args.target} {kind}: total {run['total_s']:.2f} s = staging {run['staging_s']:.2f} s "
              f"({', '.join(f'{k} {v:.2f}' for k, v in run['stages'].items())}) + load {run['load_s']:.2f} s")
        print(f"  staging CPU: process {run['staging_process_cpu_s']:.2f} s, main thread by stage "
              + ", ".join(f"{k} {v:.2f}" for k, v in run["stages_main_thread_cpu_s"].items()))
        print("     wall  client CPU  server CPU  statement")
        for step in run["load_steps"]:
            if step["seconds"] >= 0.05:
                server = "" if step["server_cpu_s"] is None else f"{step['server_cpu_s']:.2f}"
                print(f"  {step['seconds']:7.2f}  {step['client_cpu_s']:10.2f}  {server:>10}  {step['sql']}")
        print(f"  {run['load_outside_steps_s']:7.2f} s  (connect, plan, commit: outside the statements)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
