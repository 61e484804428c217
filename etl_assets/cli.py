"""`etl-assets`: the commands operators and `make` use."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import dagster as dg

from etl_assets.settings import (
    DATA_DIR,
    WAREHOUSES,
    SettingsError,
    build_dry_run_warehouse,
    build_landing_zone,
    build_warehouse,
)


def _landing_zone():
    """The configured landing zone with its environment variables resolved."""
    with dg.build_resources({"landing_zone": build_landing_zone()}) as resources:
        return resources.landing_zone


def generate_sample_command(args: argparse.Namespace) -> int:
    from etl_assets.tools.salesforce_sample import generate_sample

    root = Path(args.root)
    if args.if_empty and any((root / "backup").glob("*")):
        print(f"{root / 'backup'} already holds backups; not generating a sample.")
        return 0
    written = generate_sample(root, folders=args.folders, rows=args.rows, seed=args.seed)
    rows = sum(sum(objects.values()) for objects in written.values())
    print(f"Wrote {len(written)} differential folders ({rows} rows) under {root / 'backup'}")
    return 0


def materialize_command(args: argparse.Namespace) -> int:
    from etl_assets.definitions import defs
    from etl_assets.salesforce.catalog import load_catalog, object_name_problem
    from etl_assets.salesforce.partitions import differential_folders
    from etl_assets.salesforce.sensors import BackupCursor, scan_backups

    catalog = load_catalog()
    wanted_objects = {o.lower() for o in args.object}
    unknown = wanted_objects - {api.lower() for api in catalog}
    if unknown:
        print(f"Unknown object(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    scan = scan_backups(_landing_zone(), BackupCursor(), catalog, open_folders=0)
    for name, found in scan.unknown_objects.items():  # nothing is skipped without saying so
        print(f"not loaded: {name} in {', '.join(found)}: not in catalog.yaml nor in the discovered state "
              "(run `etl-assets catalog refresh`)", file=sys.stderr)
    for name, found in scan.refused.items():
        print(f"not loaded: {name!r} in {', '.join(found)}: {object_name_problem(name)}", file=sys.stderr)
    for item in scan.unreadable:
        print(f"not loaded: {item.key}: {item.reason}", file=sys.stderr)
    for key in scan.ignored:
        print(f"not loaded: {key}: not a <folder>/<Object>/<file>.csv or <folder>/<archive>.zip key of a backup "
              "folder", file=sys.stderr)
    requests = [
        r
        for r in scan.run_requests
        if (not args.folder or r.partition_key in args.folder)
        and (not args.from_folder or r.partition_key >= args.from_folder)
        and (not args.to_folder or r.partition_key <= args.to_folder)
    ]
    if not requests:
        print("No differential folders with catalog objects matched.")
        return 0

    from etl_assets.execution import StopRequested, SupervisedRuns

    instance = dg.DagsterInstance.get() if args.persistent else dg.DagsterInstance.ephemeral()
    problem = instance_write_problem(instance) if args.persistent else None
    if problem:  # before any run is created: Dagster would write a run's row, then fail on its first event
        instance.dispose()
        print(f"etl-assets materialize: {problem}", file=sys.stderr)
        return 1
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    failed: list[str] = []
    try:
        # SupervisedRuns: runs of processes that are gone are failed and their slots freed first; each
        # folder's run then executes in a child process this one watches (what it waits for, SIGTERM
        # and Ctrl-C: the run is canceled and its slots freed; docs/runs-and-executors.md)
        with instance, SupervisedRuns(instance) as runs:
            instance.add_dynamic_partitions(differential_folders.name, [r.partition_key for r in requests])
            job = defs.resolve_job_def("salesforce_backup_job")
            for request in requests:
                selection = [k for k in request.asset_selection if not wanted_objects or k.path[-1] in wanted_objects]
                if not selection:
                    continue
                result = runs.execute(request.partition_key, _folder_run(job, request.partition_key, selection,
                                                                         args.log_level))
                reasons = [] if result.success else _failure_reasons(result) + result.problems
                if not result.success:
                    failed.append(request.partition_key)
                for event in result.get_asset_materialization_events():
                    materialization = event.step_materialization_data.materialization
                    table = materialization.metadata.get("dagster/table_name")
                    if table is None:
                        continue
                    row = totals[table.value]
                    row["partitions"] += 1
                    for name in ("rows_read", "rows_rejected", "inserted", "updated"):
                        if name in materialization.metadata:
                            row[name] += materialization.metadata[name].value
                    row["table_rows"] = materialization.metadata["dagster/row_count"].value
                outcome = "ok" if result.success else "CANCELED" if result.status == dg.DagsterRunStatus.CANCELED \
                    else "FAILED"
                print(f"{request.partition_key}: {outcome} ({len(selection)} object(s))", flush=True)
                for reason in reasons:
                    print(f"  {reason}", flush=True)
                runs.check_stop()
    except StopRequested as stop:
        _print_summary(totals)
        print(f"\netl-assets materialize: {stop} (a run in progress is canceled, its pool slots freed)"
              + (f"; folders not fully loaded: {', '.join(failed)}" if failed else ""), file=sys.stderr)
        return stop.exit_code
    _print_summary(totals)
    rejected = sorted(table for table, row in totals.items() if row["rows_rejected"])
    if rejected:
        print(f"\nRejected rows (file, line, column, reason) are in {', '.join(t + '_rejects' for t in rejected)}")
    if failed:
        print(f"\n{len(failed)} folder(s) had failures: {', '.join(failed)} (etl-assets audit --status FAILED)",
              file=sys.stderr)
        return 1
    return 0


INSTANCE_MIN_FREE_BYTES = 64 << 20  # room for a run's events and compute logs


def instance_write_problem(instance: dg.DagsterInstance) -> str | None:
    """Why the instance's directory (DAGSTER_HOME) cannot take a run, or None: a file must be
    writable there and 64 MiB free. Checked before a run is created, so a full or read-only disk
    gives one line saying what to fix, never a run left NOT_STARTED and a traceback."""
    root = Path(instance.root_directory)
    advice = "free space on that disk (or fix its permissions), or run with --ephemeral"
    try:
        with tempfile.NamedTemporaryFile(dir=root, prefix=".etl_assets_write_check_") as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
        free = shutil.disk_usage(root).free
    except OSError as error:
        return f"DAGSTER_HOME ({root}) cannot be written: {error.strerror or error}; {advice}"
    if free < INSTANCE_MIN_FREE_BYTES:
        return (f"DAGSTER_HOME ({root}) has only {free // (1 << 20)} MiB free, under the "
                f"{INSTANCE_MIN_FREE_BYTES >> 20} MiB a run needs; {advice}")
    return None


def _folder_run(job, folder: str, selection: list, log_level: str):
    """One folder's run, as SupervisedRuns executes it: in process, with the run id and tags it is given."""

    def execute(instance: dg.DagsterInstance, run_id: str, tags: dict) -> None:
        job.execute_in_process(
            partition_key=folder,
            asset_selection=selection,
            instance=instance,
            run_id=run_id,
            tags={**tags, "etl_assets/launched_by": "etl-assets materialize"},
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            raise_on_error=False,
        )

    return execute


def _failure_reasons(result) -> list[str]:
    """One line per failed step of an in-process run: the object and why it failed."""
    reasons = []
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        if data.user_failure_data and data.user_failure_data.description:
            reasons.append(data.user_failure_data.description)  # names the object, folder, file, line, column
        else:
            reasons.append(f"{event.step_key}: {data.error.message.strip() if data.error else 'failed'}")
    return reasons


def _print_summary(totals: dict[str, dict[str, int]]) -> None:
    columns = ["table", "partitions", "rows_read", "rows_rejected", "inserted", "updated", "table_rows"]
    rows = [[table] + [str(totals[table][c]) for c in columns[1:]] for table in sorted(totals)]
    if not rows:
        return
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    print()
    print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(columns, widths))))
    for row in rows:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))


def plan_for(target: str, api_name: str, partition: str = "PARTITION", rows: int = 1000):
    """The load plan of one object on one target, as `etl-assets sql` prints it (nothing runs)."""
    from etl_assets.salesforce.catalog import load_catalog
    from etl_assets.salesforce.partitions import full_backup_date
    from etl_assets.warehouse.batch import StagedBatch

    by_name = {api.lower(): obj for api, obj in load_catalog().items()}
    obj = by_name.get(api_name.lower())
    if obj is None:
        raise KeyError(api_name)
    staged = Path("staged")
    batch = StagedBatch(obj.table_spec(), partition, staged, files=[staged / "part-00000.parquet"],
                        reject_files=[staged / "rejects.parquet"], rows=rows,
                        full_snapshot_date=full_backup_date(partition))
    warehouse = build_dry_run_warehouse(target)  # the environment's values, placeholders where unset
    return warehouse, obj, warehouse.plan(batch, existing={})


def long_text_policy(warehouse, spec) -> list[str]:
    """What the target does with long text, per column (catalog `long_text`); nothing where text has no limit."""
    limits = warehouse.text_limits
    if limits.varchar_bytes is None:
        return ["text: any length loads whole"]
    by_policy: dict[str, list[str]] = {}
    for column in spec.columns:
        if column.type.value == "string" and not column.name.startswith("_"):
            by_policy.setdefault(column.long_text, []).append(column.name)
    meaning = {
        "truncate": f"a value over {limits.varchar_bytes:,} bytes is cut to it, recorded in the row's _load_changes "
                    "and by the no_truncated_values check",
        "super": f"stored as SUPER: values up to {limits.super_bytes:,} bytes load whole",
        "reject": f"a value over {limits.varchar_bytes:,} bytes rejects the row",
    }
    return [f"long text ({policy}): {meaning[policy]}: {', '.join(names)}" for policy, names in by_policy.items()]


def catalog_refresh_command(args: argparse.Namespace) -> int:
    from etl_assets.salesforce.catalog import discovered_path
    from etl_assets.salesforce.discovery import refresh_command

    args.state = args.state or str(discovered_path())
    return refresh_command(args, _landing_zone())


def catalog_import_command(args: argparse.Namespace) -> int:
    from etl_assets.salesforce.catalog import discovered_path
    from etl_assets.salesforce.discovery import import_describe_command

    args.state = args.state or str(discovered_path())
    return import_describe_command(args)


def sql_command(args: argparse.Namespace) -> int:
    from etl_assets.warehouse.steps import flatten

    try:
        warehouse, obj, plan = plan_for(args.target, args.object, args.partition, args.rows)
    except KeyError:
        print(f"Unknown object: {args.object}", file=sys.stderr)
        return 2
    spec = obj.table_spec()
    print(f"-- Load of {obj.api_name} into {spec.schema}.{spec.name} on {warehouse.describe()}")
    for line in long_text_policy(warehouse, spec):
        print(f"-- {line}")
    for title, steps in (("prepare: idempotent DDL, each statement committed on its own", plan.prepare),
                         ("transaction: all of it or nothing", flatten(plan.transaction))):
        print(f"\n-- {title}")
        for step in steps:
            notes = []
            if step.params:
                notes.append("parameters: " + ", ".join(repr(p) for p in step.params))
            if step.files:
                notes.append("streams the staged Parquet files " + ", ".join(f.name for f in step.files))
            if step.result:
                notes.append(f"keeps {step.result}")
            if notes:
                print("-- " + "; ".join(notes))
            print(step.sql.rstrip() + ";")
    return 0


def seed_totesys_command(args: argparse.Namespace) -> int:
    from etl_assets.tools.totesys_seed import seed
    from etl_assets.totesys.pipeline import resolved_source

    source = resolved_source()
    counts = seed(source, args.seed)
    inserted = sum(c["inserted"] for c in counts.values())
    updated = sum(c["updated"] for c in counts.values())
    print(f"totesys at {source.describe()}: {inserted} rows inserted, {updated} updated")
    _print_table(["table", "inserted", "updated"], [[t, str(c["inserted"]), str(c["updated"])] for t, c in counts.items()])
    return 0


def totesys_command(args: argparse.Namespace) -> int:
    from etl_assets.definitions import defs
    from etl_assets.tools.totesys_seed import seed_embedded_if_empty
    from etl_assets.totesys.pipeline import resolved_source, run_totesys_pipeline

    from etl_assets.execution import StopRequested, SupervisedRuns

    instance = dg.DagsterInstance.get() if args.persistent else dg.DagsterInstance.ephemeral()
    problem = instance_write_problem(instance) if args.persistent else None
    if problem:
        instance.dispose()
        print(f"etl-assets totesys: {problem}", file=sys.stderr)
        return 1
    run_config = {"loggers": {"console": {"config": {"log_level": args.log_level}}}}
    seeded = seed_embedded_if_empty(resolved_source())
    try:
        with instance, SupervisedRuns(instance) as runs:  # as materialize: SIGTERM/Ctrl-C cancel, slots freed
            summary = run_totesys_pipeline(defs, runs, run_config)
    except StopRequested as stop:
        print(f"\netl-assets totesys: {stop} (a run in progress is canceled, its pool slots freed)", file=sys.stderr)
        return stop.exit_code
    summary.seeded = seeded
    print()
    if summary.seeded:
        print(f"Seeded the embedded totesys source ({sum(c['inserted'] for c in summary.seeded.values())} rows).")
    if summary.extracted:
        columns = ["table", "rows_read", "inserted", "updated", "table_rows"]
        _print_table(columns, [[t] + [str(v) for v in m.values()] for t, m in sorted(summary.extracted.items())])
    else:
        print("totesys: no rows changed since the last extraction; nothing loaded.")
    if summary.stale_models:
        print(f"dbt: {len(summary.stale_models)} model(s) older than their inputs "
              f"(first: {summary.stale_models[0]}); building the marts.")
    elif summary.success:
        print("dbt: every model is newer than its inputs; nothing to build.")
    if summary.dbt_skipped_groups:
        print(f"dbt: skipped {', '.join(summary.dbt_skipped_groups)} (their Salesforce tables are not loaded yet)")
    if summary.dbt_ran:
        print(f"\ndbt build: {summary.checks_passed} tests passed, {len(summary.checks_warned)} warned, "
              f"{len(summary.checks_failed)} failed")
        for check in summary.checks_warned + summary.checks_failed:
            print(f"  {check}")
        _print_table(["mart", "rows"], [[t, str(n)] for t, n in summary.mart_rows.items()])
    if not summary.success:
        for line in summary.dbt_log_tail:
            print(line, file=sys.stderr)
        print("totesys pipeline FAILED; see the run logs (DAGSTER_HOME) for details", file=sys.stderr)
        return 1
    return 0


def _print_table(columns: list[str], rows: list[list[str]]) -> None:
    if not rows:
        return
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    print()
    for row in [columns, *rows]:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))


def files_command(args: argparse.Namespace) -> int:
    """Load every file waiting in the landing prefixes, as the file sensors would, one run per file; with
    --key, the named files wherever they are now. A --key outside the landing zone runs nothing."""
    from etl_assets.definitions import defs
    from etl_assets.files.assets import printable
    from etl_assets.files.sensors import ROUTES, schema_files_first
    from etl_assets.landing.zone import LandedFile
    from etl_assets.tools.files_sample import write_sample_files

    zone = _landing_zone()
    if args.sample and isinstance(zone.location(), str) and not zone.location().startswith("s3://"):
        write_sample_files(Path(zone.location()))
    named, failed = _named_file_keys(zone, args.key, [prefix for _kind, prefix, _asset in ROUTES])
    from etl_assets.execution import StopRequested, SupervisedRuns

    instance = dg.DagsterInstance.get() if args.persistent else dg.DagsterInstance.ephemeral()
    problem = instance_write_problem(instance) if args.persistent else None
    if problem:
        instance.dispose()
        print(f"etl-assets files: {problem}", file=sys.stderr)
        return 1
    job = defs.resolve_implicit_global_asset_job_def()
    try:
        # As materialize: dead runs' slots freed first, each file's run in a watched child process
        # (SIGTERM and Ctrl-C cancel it and free its slots; docs/runs-and-executors.md).
        with instance, SupervisedRuns(instance) as runs:
            for _kind, prefix, asset in ROUTES:
                pending = [] if args.key else [f for f in zone.list_files(prefix) if not f.key.endswith("/")]
                # schema files first, then every data file (the sensor spreads them over ticks)
                ordered = schema_files_first(pending) + [f for f in pending if f not in schema_files_first(pending)]
                if args.key:  # named files only, wherever they are now (held/, duplicate/, error/, archive/)
                    ordered = [LandedFile(k, 0, 0) for k in named[prefix]]
                if not ordered:
                    continue
                instance.add_dynamic_partitions(asset.partitions_def.name, [f.key for f in ordered])
                for landed in ordered:
                    result = runs.execute(printable(landed.key), _file_run(job, asset.key, landed.key, args))
                    print(f"{printable(landed.key)}: {_file_outcome(zone, landed.key, result.success)}", flush=True)
                    if not result.success:
                        failed.append(landed.key)
                        for reason in _failure_reasons(result) + result.problems:
                            print(f"  {reason}", flush=True)
                    runs.check_stop()
    except StopRequested as stop:
        print(f"etl-assets files: {stop} (a run in progress is canceled, its pool slots freed)", file=sys.stderr)
        return stop.exit_code
    if failed:
        print(f"{len(failed)} file(s) were not loaded; the reasons are above, in <place>/<key>.reason.txt beside "
              "each file moved, and in `etl-assets audit`", file=sys.stderr)
    return 1 if failed and not args.allow_refused else 0


def _file_run(job, asset_key, key: str, args: argparse.Namespace):
    """One landed file's run, as SupervisedRuns executes it: in process, with the run id and tags it is given."""
    from etl_assets.files.loading import OVERRIDE_TAG

    def execute(instance: dg.DagsterInstance, run_id: str, tags: dict) -> None:
        job.execute_in_process(
            asset_selection=[asset_key], partition_key=key, instance=instance, run_id=run_id, raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": args.log_level}}}},
            tags={**tags, **({OVERRIDE_TAG: args.override} if args.override else {})},
        )

    return execute


def _named_file_keys(zone, keys: list[str], prefixes: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """The --key values by landing prefix (a leading archive/, error/, duplicate/ or held/ is dropped: the
    run finds the file there); a key that would leave the landing zone, or is under no feed's prefix, is
    refused here, before any run, so nothing moves. Returns (keys by prefix, the refused keys)."""
    from etl_assets.files.assets import ARCHIVE, DUPLICATE, ERROR, HELD, check_keys, printable
    from etl_assets.landing.zone import UnsafeKey

    named: dict[str, list[str]] = {prefix: [] for prefix in prefixes}
    refused = []
    for key in keys:
        landing_key = next((key[len(p):] for p in (ARCHIVE, ERROR, DUPLICATE, HELD) if key.startswith(p)), key)
        prefix = next((p for p in prefixes if landing_key.startswith(p)), None)
        try:
            check_keys(zone, landing_key)
        except UnsafeKey as unsafe:
            print(f"{printable(key)}: REFUSED (nothing moved)\n  {unsafe}")
            refused.append(key)
            continue
        if prefix is None:
            print(f"{printable(key)}: REFUSED (nothing moved)\n  not a landing key under {', '.join(prefixes)}")
            refused.append(key)
            continue
        named[prefix].append(landing_key)
    return named, refused


def _file_outcome(zone, key: str, success: bool) -> str:
    """What became of a file, from where it is now: a refusal names error/, duplicate/ or held/ only when
    the file is there."""
    from etl_assets.files.assets import DUPLICATE, ERROR, HELD, placed
    from etl_assets.landing.zone import UnsafeKey

    if success:
        return "loaded"
    for status, place in (("REFUSED", ERROR), ("DUPLICATE", DUPLICATE), ("HELD", HELD)):
        try:
            if zone.exists(placed(zone, place, key)):
                return f"{status} (see {place})"
        except UnsafeKey:
            break
    return "REFUSED (nothing moved)"


def _resolved_warehouse():
    with dg.build_resources({"warehouse": build_warehouse()}) as resources:
        return resources.warehouse


def audit_command(args: argparse.Namespace) -> int:
    import datetime as dt
    import json

    from etl_assets.warehouse.audit import find_loads

    since = dt.datetime.fromisoformat(args.since) if args.since else None
    if since and since.tzinfo is None:
        since = since.replace(tzinfo=dt.timezone.utc)
    loads = find_loads(_resolved_warehouse(), table=args.table, since=since, status=args.status, limit=args.limit)
    if args.json:
        print(json.dumps(loads, default=str, indent=2))
        return 0
    columns = ["started_at", "status", "target_table", "action", "rows_read", "rows_loaded", "rows_rejected",
               "source_key", "run_id", "error"]
    for load in loads:  # a file feed's schema drift, shown beside its reason
        if load.get("schema_drift"):
            load["error"] = "; ".join(filter(None, [load["error"], f"schema drift: {load['schema_drift']}"]))
    rows = [[str(load[c] if load[c] is not None else "") for c in columns] for load in loads]
    for row in rows:
        row[0] = row[0][:19]  # to the second
        row[-2] = row[-2][:8]  # the short run id the Dagster UI's run list shows (--json: the full id)
    # every column but the last (the error, printed whole) cut to 60 characters
    widths = [max([len(c)] + [len(r[i][:60]) for r in rows]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in rows:
        print("  ".join([v[:60].ljust(w) for v, w in zip(row[:-1], widths)] + [row[-1]]).rstrip())
    print(f"({len(rows)} load(s))")
    return 0


def audit_server_command(args: argparse.Namespace) -> int:
    from etl_assets.audit_api import AuditServerConfigError, serve

    try:
        serve(_resolved_warehouse(), args.host, args.port)
    except AuditServerConfigError as error:
        print(error, file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (which Dagster maps to SIGINT)
        print("Audit endpoint stopped")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etl-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    sample = commands.add_parser("generate-sample", help="write deterministic Salesforce backups")
    sample.add_argument("--root", default=str(DATA_DIR / "landing"), help="landing zone folder")
    sample.add_argument("--folders", type=int, default=6)
    sample.add_argument("--rows", type=int, default=120, help="rows per object per folder")
    sample.add_argument("--seed", type=int, default=7)
    sample.add_argument("--if-empty", action="store_true", help="do nothing if backups already exist")
    sample.set_defaults(func=generate_sample_command)

    materialize = commands.add_parser(
        "materialize", help="load Salesforce backup folders from the landing zone (all by default)"
    )
    materialize.add_argument("--folder", action="append", default=[], help="a folder (repeatable)")
    materialize.add_argument("--from", dest="from_folder", help="first folder of a range")
    materialize.add_argument("--to", dest="to_folder", help="last folder of a range")
    materialize.add_argument("--object", action="append", default=[], help="an object API name (repeatable)")
    materialize.add_argument(
        "--ephemeral", dest="persistent", action="store_false", help="do not record runs in DAGSTER_HOME"
    )
    materialize.add_argument("--log-level", default="WARNING", help="Dagster console log level (default WARNING)")
    materialize.set_defaults(func=materialize_command)

    files = commands.add_parser("files", help="load every file waiting in datalake/, external/inbound/, csv/input/")
    files.add_argument("--sample", action="store_true", help="first write the sample files (local landing zone)")
    files.add_argument("--allow-refused", action="store_true", help="exit 0 even if some files were refused")
    files.add_argument("--ephemeral", dest="persistent", action="store_false", help="do not record runs")
    files.add_argument("--log-level", default="WARNING")
    files.add_argument("--key", action="append", default=[],
                       help="load only this landing key (repeatable), e.g. one in held/ or duplicate/")
    files.add_argument("--override", help="guards and/or duplicates (comma-separated): apply a HELD file, "
                       "load a DUPLICATE (run tag files/override; docs/file-feeds.md)")
    files.set_defaults(func=files_command)

    audit = commands.add_parser("audit", help="list loads from the audit table")
    audit.add_argument("--table", help="target table, schema.table or table")
    audit.add_argument("--since", help="ISO timestamp (UTC if no zone)")
    audit.add_argument("--status", type=str.upper, choices=("FINISHED", "FAILED", "ABORTED", "DUPLICATE", "HELD"),
                       help="only loads with this outcome")
    audit.add_argument("--limit", type=int, default=1000, help="newest N loads (default 1000)")
    audit.add_argument("--json", action="store_true", help="every column, full run ids, as JSON")
    audit.set_defaults(func=audit_command)

    audit_server = commands.add_parser("audit-server", help="read-only HTTP endpoint: GET /loads?table=&since="
                                       "&status=&limit= (beyond loopback only with ETL_ASSETS_AUDIT_TOKEN set)")
    audit_server.add_argument("--host", default="127.0.0.1")
    audit_server.add_argument("--port", type=int, default=8765)
    audit_server.set_defaults(func=audit_server_command)

    # `bench` hands its arguments to etl_assets.tools.bench (see main); listed here for --help.
    commands.add_parser("bench", help="load and sensor benchmarks: etl-assets bench --rows N --object Task ...",
                        add_help=False)

    catalog = commands.add_parser(
        "catalog", help="the discovered Salesforce objects: refresh from the landing zone, import describes")
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True)
    refresh = catalog_commands.add_parser(
        "refresh", help="infer the types of every object folder catalog.yaml does not declare, from sampled rows")
    refresh.add_argument("--sample-rows", type=int, default=1000, help="rows sampled per object (default 1000)")
    imported = catalog_commands.add_parser(
        "import-describe", help="type objects exactly from REST describe JSON (sobjects/<Object>/describe)")
    imported.add_argument("files", nargs="+", help="describe JSON files, one object each")
    for command in (refresh, imported):
        command.add_argument("--state", default=None, help="the discovered state file (default: "
                             "$ETL_ASSETS_SALESFORCE_DISCOVERED, else etl_assets/salesforce/discovered.yaml)")
    refresh.set_defaults(func=catalog_refresh_command)
    imported.set_defaults(func=catalog_import_command)

    sql = commands.add_parser("sql", help="print the SQL a load of one object would run (nothing is executed)")
    sql.add_argument("--target", choices=WAREHOUSES, required=True)
    sql.add_argument("--object", required=True, help="object API name, e.g. Task")
    sql.add_argument("--partition", default="20240501_Differential")
    sql.add_argument("--rows", type=int, default=1000, help="staged row count the COPY check expects")
    sql.set_defaults(func=sql_command)

    seed_totesys = commands.add_parser(
        "seed-totesys", help="fill the totesys source, or simulate a tick of business if it has data"
    )
    seed_totesys.add_argument("--seed", type=int, default=2)
    seed_totesys.set_defaults(func=seed_totesys_command)

    totesys = commands.add_parser(
        "totesys", help="seed the embedded source if empty, extract changed rows, dbt build the star schema"
    )
    totesys.add_argument(
        "--ephemeral", dest="persistent", action="store_false", help="do not record runs in DAGSTER_HOME"
    )
    totesys.add_argument("--log-level", default="WARNING", help="Dagster console log level (default WARNING)")
    totesys.set_defaults(func=totesys_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from etl_assets.tools.bench import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as error:  # a deployment variable with a value it does not accept
        print(f"etl-assets: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
