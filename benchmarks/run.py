"""`etl-assets bench` / `python -m benchmarks`: load throughput, memory and sensor scale.

    python -m benchmarks --rows 1000000 --object Task --rounds 3
    python -m benchmarks --rows 100000 --targets pg,duckdb --skip-sensor
    python -m benchmarks --only loads --columns 33                 # an export-shaped file, 33 columns
    python -m benchmarks --only loads --csv export/Task.csv        # your own export, with dlt beside it
    python -m benchmarks --only catalog --catalog-objects 300   # what 300 discovered objects cost
    python -m benchmarks --only folder_run                      # folder runs through the daemon (or --folder-run)
    python -m benchmarks --only encodings --rows 200000         # reading a Latin-1 copy vs UTF-8
    python -m benchmarks --only partitions                      # 100,000 files of a feed: partitions' cost
    python -m benchmarks --only policies                        # what hashing 1M e-mail addresses adds to a load
    python -m benchmarks --only history --rounds 2              # what keeping history costs: time, memory, storage

Loads: benchmarks/loads.py (dlt's fastest path beside it: peers.py; export-shaped and
user files: sources.py); sensor and UI scale: benchmarks/sensor.py; the cost of
discovered Salesforce objects (load, sensor, UI): benchmarks/catalog.py; folder runs through a
real webserver and daemon (one folder of 10/50/100 small objects, a 30-folder backfill):
benchmarks/folder_run.py; the cost of reading a Latin-1 export:
benchmarks/encodings.py; what 100,000 landed files of one feed cost before and after the
partitions' lifecycle (sensor tick, code location load, the UI's partitions tab):
benchmarks/partitions.py; what history mode adds to a load's time, peak memory and storage (history
off vs on, DuckDB and PostgreSQL): benchmarks/history.py; the table, JSON and Markdown: benchmarks/report.py.
Results go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TARGETS = ("pg", "duckdb", "baseline")
PARTS = ("loads", "sensor", "catalog", "folder_run", "encodings", "partitions", "policies", "history")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="etl-assets bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="rows in the generated backup (default 1,000,000)")
    p.add_argument("--object", default=None,
                   help="catalog object to generate and load (default Task); with --csv, the file's object "
                        "(default: its folder or file name, matched against the catalog)")
    p.add_argument("--csv", type=Path, default=None,
                   help="measure your own CSV export instead of a generated one: the object and its columns come "
                        "from the file's header (the catalog's object if it declares it, else typed like "
                        "`etl-assets catalog refresh`); the re-load is the same rows with the version column later")
    p.add_argument("--columns", type=int, default=0,
                   help="load an export-shaped file (every value quoted, as Data Export writes it) widened to this "
                        "many columns with custom fields, e.g. 33 or 120 (default 0: the generator's own file)")
    p.add_argument("--no-peers", action="store_true", help="skip dlt's rows (they run when the bench extra is installed)")
    p.add_argument("--name", default="loads",
                   help="stem of the load results' files under --out (default loads: loads.json, loads.md)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every variant; the best time is kept (default 3)")
    p.add_argument("--baseline-rounds", type=int, default=1,
                   help="rounds of the slow JSON baseline (default 1; it is not what the targets measure)")
    p.add_argument("--targets", default="pg,duckdb,baseline",
                   help="comma-separated: pg, duckdb, baseline (default all), or 'none' for the sensor only")
    p.add_argument("--memory-rows", type=int, default=0,
                   help="also run the pipeline once on a file of this many rows and compare its peak RSS "
                        "(the 5M-row memory point: --memory-rows 5000000)")
    p.add_argument("--sensor-folders", type=int, default=10_000, help="differential folders for the sensor benchmark")
    p.add_argument("--skip-sensor", action="store_true", help="skip the sensor and GraphQL benchmark")
    p.add_argument("--skip-s3", action="store_true", help="sensor benchmark on the local landing zone only")
    p.add_argument("--skip-graphql", action="store_true", help="skip the dagster-webserver GraphQL timings")
    p.add_argument("--only", choices=PARTS, help="run just this part (catalog runs only when named or with --catalog)")
    p.add_argument("--catalog", action="store_true", help="also run the discovered-objects benchmark after the others")
    p.add_argument("--catalog-objects", type=int, default=300, help="discovered objects to generate (default 300)")
    p.add_argument("--catalog-folders", type=int, default=30, help="backup folders for its sensor ticks (default 30)")
    p.add_argument("--profile", action="store_true",
                   help="also profile one code-location load with pyinstrument (if importable) into catalog_profile.txt")
    p.add_argument("--folder-run-objects", default="10,50,100",
                   help="objects per folder in the folder-run benchmark (default 10,50,100)")
    p.add_argument("--folder-run-backfill", type=int, default=30, help="folders in its backfill (default 30; 0 skips)")
    p.add_argument("--folder-run-rows", type=int, default=100, help="rows per object in its folders (default 100)")
    p.add_argument("--folder-run", action="store_true",
                   help="also run the folder-run benchmark (a real webserver and daemon; ~25 min on 2 cores)")
    p.add_argument("--partition-files", type=int, default=100_000,
                   help="landed files of one feed in the partitions benchmark (default 100,000; --only partitions)")
    p.add_argument("--partition-window", type=int, default=2_016,
                   help="files whose partitions the lifecycle keeps there (default 2,016: seven days of a file every "
                        "five minutes, the default retention)")
    p.add_argument("--no-history-sample", action="store_true",
                   help="history: skip the storage of the sample backups (every object, folder by folder)")
    p.add_argument("--history-one-process", action="store_true",
                   help="history: run every load in this process rather than a fresh one each (the tests' quick run: "
                        "peak RSS is then the process's so far, not a load's own)")
    p.add_argument("--loads-one-process", action="store_true",
                   help="loads: run every variant in this process rather than a fresh one each (the tests' quick run: "
                        "peak RSS is then the process's so far, not a variant's own)")
    p.add_argument("--data", default="data/bench", help="where generated backups are kept and reused")
    p.add_argument("--out", default="benchmarks/results", help="where the JSON/Markdown results are written")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from benchmarks import report

    data, out = Path(args.data), Path(args.out)
    targets = set() if args.targets == "none" else {t.strip() for t in args.targets.split(",") if t.strip()}
    unknown = targets - set(TARGETS)
    if unknown:
        print(f"unknown target(s): {', '.join(sorted(unknown))}; choose from {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    written = []
    # History runs on the engines --targets names (pg, duckdb), whatever part runs; with pg, on a
    # PostgreSQL 18 server too where the dev extra brings its binaries.
    history_engines = tuple(e for e in ("duckdb", "pg") if e in targets)
    if "pg" in history_engines and args.only in (None, "history") and not args.csv:
        from etl_assets_tests.postgres18 import binaries

        try:
            binaries()
            history_engines += ("pg18",)
        except RuntimeError as error:
            print(f"history: no PostgreSQL 18 rows: {error}", flush=True)
    if args.only == "history" and not history_engines:
        print("--only history runs on pg and/or duckdb: name one in --targets", file=sys.stderr)
        return 2
    if args.only in ("sensor", "catalog", "folder_run", "encodings", "partitions", "policies", "history"):
        targets = set()
    if args.csv and args.memory_rows:
        print("--memory-rows generates files; it does not apply to --csv", file=sys.stderr)
        return 2
    if targets:
        from benchmarks.loads import (
            FIRST_DAY,
            RELOAD_DAY,
            folder_name,
            run_load_benchmark,
        )

        user = None
        if args.csv:
            from benchmarks.sources import user_csv

            user = user_csv(args.csv, args.object, data, folder_name(FIRST_DAY), folder_name(RELOAD_DAY))
            targets.discard("baseline")  # the JSON baseline casts by the catalog's Task columns only
            print(f"Load benchmark of {args.csv}: {user.how}", flush=True)
        obj = user.api_name if user else (args.object or "Task")
        shape = f", export-shaped at {args.columns} columns" if args.columns and not user else ""
        print(f"Load benchmark: {'your file' if user else f'{args.rows:,} rows'} of {obj}{shape}, {args.rounds} "
              f"round(s), targets {sorted(targets)}", flush=True)
        result = run_load_benchmark(args.rows, obj, args.rounds, targets, data, args.baseline_rounds,
                                    log=lambda m: print(m, flush=True), peers=not args.no_peers,
                                    columns=args.columns, user=user, one_process=args.loads_one_process)
        memory_point = None
        # Written before the memory point, which takes a while: a failure there loses nothing measured.
        report.write_loads(out, result, report.environment(), name=args.name)
        if args.memory_rows:
            pipeline = {t for t in targets if t in ("pg", "duckdb")}
            print(f"Memory point: {args.memory_rows:,} rows, pipeline first loads only", flush=True)
            memory_point = run_load_benchmark(args.memory_rows, obj, 1, pipeline, data, 0,
                                              log=lambda m: print(m, flush=True), only_first=True,
                                              columns=args.columns)
        env = report.environment()
        report.print_loads(result, memory_point)
        report.print_targets(report.targets(result, memory_point))
        written += report.write_loads(out, result, env, memory_point, name=args.name)
    if args.only in (None, "encodings") and not args.csv:
        from benchmarks.encodings import print_encodings, run_encoding_benchmark, write_encodings

        print(f"Encodings: {args.rows:,} Task rows as UTF-8 and as ISO-8859-1, {args.rounds} round(s)", flush=True)
        encodings = run_encoding_benchmark(args.rows, data, args.rounds, log=lambda m: print(m, flush=True))
        print_encodings(encodings)
        written += write_encodings(out, encodings, report.environment())
    if args.only in (None, "policies") and not args.csv:
        from benchmarks.policies import print_policies, run_policy_benchmark, write_policies

        print(f"Column policies: {args.rows:,} e-mail addresses and Contacts, {args.rounds} round(s)", flush=True)
        policies = run_policy_benchmark(args.rows, data, args.rounds, log=lambda m: print(m, flush=True))
        print_policies(policies)
        written += write_policies(out, policies, report.environment())
    if args.only in (None, "history") and not args.csv and history_engines:
        from benchmarks.history import print_history, run_history_benchmark, write_history

        print(f"History mode: {args.rows:,} Task rows, history off vs on, on {', '.join(history_engines)}, "
              f"{args.rounds} round(s)", flush=True)
        history = run_history_benchmark(args.rows, data, args.rounds, history_engines,
                                        sample=not args.no_history_sample, log=lambda m: print(m, flush=True),
                                        one_process=args.history_one_process)
        print_history(history)
        written += write_history(out, history, report.environment())
    if args.only == "folder_run" or args.folder_run:
        from benchmarks.folder_run import run_folder_run_benchmark

        scales = [int(x) for x in args.folder_run_objects.split(",") if x.strip()]
        folder_run = run_folder_run_benchmark(scales, args.folder_run_backfill, args.folder_run_rows,
                                              postgres="pg" in targets or args.only == "folder_run",
                                              log=lambda m: print(m, flush=True))
        report.print_folder_run(folder_run)
        written += report.write_folder_run(out, folder_run, report.environment())
    if not args.skip_sensor and args.only in (None, "sensor"):
        from benchmarks.sensor import run_sensor_benchmark

        sensor = run_sensor_benchmark(args.sensor_folders, data, s3=not args.skip_s3, graphql=not args.skip_graphql,
                                      log=lambda m: print(m, flush=True))
        env = report.environment()
        report.print_sensor(sensor)
        report.print_targets(report.targets({"variants": {}, "rows": 0}, sensor=sensor))
        written += report.write_sensor(out, sensor, env)
    if args.only == "catalog" or args.catalog:
        from benchmarks.catalog import run_catalog_benchmark

        catalog = run_catalog_benchmark(args.catalog_objects, args.catalog_folders, args.rounds, s3=not args.skip_s3,
                                        graphql=not args.skip_graphql, profile=args.profile, out=out,
                                        log=lambda m: print(m, flush=True))
        report.print_catalog(catalog)
        written += report.write_catalog(out, catalog, report.environment())
    if args.only == "partitions":
        from benchmarks.partitions import print_partitions, run_partitions_benchmark, write_partitions

        if not 0 < args.partition_window < args.partition_files:
            print("--partition-window must be above 0 and below --partition-files", file=sys.stderr)
            return 2
        partitions = run_partitions_benchmark(args.partition_files, args.partition_window, data, args.rounds,
                                              graphql=not args.skip_graphql, log=lambda m: print(m, flush=True))
        print_partitions(partitions)
        written += write_partitions(out, partitions, report.environment())
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0
