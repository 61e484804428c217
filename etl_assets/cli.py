"""`etl-assets`: the commands operators and `make` use (click; docs/cli.md).

Each `*_command(args)` function does one command's work; the click commands at the end of this
module parse the arguments, check the environment (`check_configuration`) and call it. A usage or
configuration error is one line on stderr and exit status 2 (`main`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import textwrap
import threading
import time
from collections import defaultdict
from pathlib import Path

import click

from etl_assets import environment
from etl_assets.environment import DATA_DIR, WAREHOUSES, ConfigurationError


class _Dagster:
    """`dagster`, imported when first used: --help, --version and a configuration error answer in a
    fraction of a second, without importing Dagster and the warehouses' drivers."""

    def __getattr__(self, name: str):
        import dagster

        return getattr(dagster, name)


dg = _Dagster()


def _landing_zone():
    """The configured landing zone with its environment variables resolved."""
    from etl_assets.settings import build_landing_zone

    with dg.build_resources({"landing_zone": build_landing_zone()}) as resources:
        return resources.landing_zone


def generate_sample_command(args: argparse.Namespace) -> int:
    from etl_assets.samples.salesforce import generate_sample

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
    from etl_assets.salesforce.partitions import BACKUP_PREFIX, differential_folders
    from etl_assets.salesforce.sensors import BackupCursor, scan_backups

    catalog = load_catalog()
    wanted_objects = {o.lower() for o in args.object}
    unknown_objects(args.object, catalog)
    zone = _landing_zone()
    scan = scan_backups(zone, BackupCursor(), catalog, open_folders=0)
    folders = sorted({r.partition_key for r in scan.run_requests})
    absent = [f for f in args.folder if f not in folders
              and next(iter(zone.list_files(f"{BACKUP_PREFIX}/{f}/")), None) is None]
    if absent:  # a mistyped folder: say so, rather than load nothing and succeed
        raise ConfigurationError(f"No backup folder {', '.join(f + _did_you_mean(f, folders) for f in absent)} "
                                 f"in {zone.location(BACKUP_PREFIX + '/')}")
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

    selections = {r.partition_key: _selection(r, wanted_objects) for r in requests}

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
        with instance, SupervisedRuns(instance) as runs, \
                Progress("materialize", "objects", total=sum(map(len, selections.values()))) as progress:
            instance.add_dynamic_partitions(differential_folders.name, [r.partition_key for r in requests])
            job = defs.resolve_job_def("salesforce_backup_job")
            for request in requests:
                selection = selections[request.partition_key]
                if not selection:
                    continue
                result = runs.execute(request.partition_key, _folder_run(job, request.partition_key, selection,
                                                                         args.log_level, progress))
                progress.settle()  # every step's line before the folder's
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


def _selection(request, wanted_objects: set[str]) -> list:
    """The assets of a folder's run request, only the --object ones when any are named."""
    return [k for k in request.asset_selection if not wanted_objects or k.path[-1] in wanted_objects]


def _folder_run(job, folder: str, selection: list, log_level: str, progress: Progress | None = None):
    """One folder's run, as SupervisedRuns executes it: in process, with the run id and tags it is given."""

    def execute(instance: dg.DagsterInstance, run_id: str, tags: dict) -> None:
        if progress is not None:
            progress.listen(instance, run_id, folder)
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
    from etl_assets.settings import build_dry_run_warehouse
    from etl_assets.warehouse.batch import StagedBatch

    catalog = load_catalog()
    by_name = {api.lower(): obj for api, obj in catalog.items()}
    obj = by_name.get(api_name.lower())
    if obj is None:
        raise KeyError(f"{api_name}{_did_you_mean(api_name, catalog)}")
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
    zone = _landing_zone()
    with Progress("catalog refresh", "objects", count="started") as progress:
        return refresh_command(args, zone, progress.started)


def catalog_import_command(args: argparse.Namespace) -> int:
    from etl_assets.salesforce.catalog import discovered_path
    from etl_assets.salesforce.discovery import import_describe_command

    args.state = args.state or str(discovered_path())
    return import_describe_command(args)


def sql_command(args: argparse.Namespace) -> int:
    from etl_assets.warehouse.steps import flatten

    try:
        warehouse, obj, plan = plan_for(args.target, args.object, args.partition, args.rows)
    except KeyError as unknown:
        raise ConfigurationError(f"Unknown object: {unknown.args[0]}: not in catalog.yaml nor in the discovered "
                                 "state") from None
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
    from etl_assets.samples.totesys import seed
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
    from etl_assets.samples.totesys import seed_embedded_if_empty
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
    from etl_assets.samples.files import write_sample_files

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
        with instance, SupervisedRuns(instance) as runs, Progress("files", "files", count="runs") as progress:
            for _kind, prefix, asset in ROUTES:
                pending = [] if args.key else [f for f in zone.list_files(prefix) if not f.key.endswith("/")]
                # schema files first, then every data file (the sensor spreads them over ticks)
                ordered = schema_files_first(pending) + [f for f in pending if f not in schema_files_first(pending)]
                if args.key:  # named files only, wherever they are now (held/, duplicate/, error/, archive/)
                    ordered = [LandedFile(k, 0, 0) for k in named[prefix]]
                if not ordered:
                    continue
                instance.add_dynamic_partitions(asset.partitions_def.name, [f.key for f in ordered])
                progress.total += len(ordered)
                for landed in ordered:
                    result = runs.execute(printable(landed.key), _file_run(job, asset.key, landed.key, args, progress))
                    progress.settle(printable(landed.key), result.success)
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


def _file_run(job, asset_key, key: str, args: argparse.Namespace, progress: Progress | None = None):
    """One landed file's run, as SupervisedRuns executes it: in process, with the run id and tags it is given."""
    from etl_assets.files.assets import printable
    from etl_assets.files.loading import OVERRIDE_TAG

    def execute(instance: dg.DagsterInstance, run_id: str, tags: dict) -> None:
        if progress is not None:
            progress.listen(instance, run_id, printable(key))
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
    from etl_assets.settings import build_warehouse

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


# -- Progress: what a long command has done so far

class Progress:
    """What a long command has done so far: steps (objects or files) and rows, the rate, the time elapsed.

    Where stdout and stderr are both a terminal: one live line at the bottom of the screen, redrawn
    twice a second (anything else the command prints first clears it). Otherwise: a plain line per
    step on stderr. Either way, a last line with the totals when the command ends.

    A run's steps are followed through its events (`listen`, in the process that executes the run:
    this one, or the child SupervisedRuns forks): each materialization (with its `rows_read`) and
    step failure is written to a pipe this process reads, so the command shows the steps of a run as
    they finish. `count="runs"`: a step is a whole run (`settle(label, ok)`), the events only add rows;
    `count="started"`: steps of this process (`started`), each done when the next starts.
    """

    TICK = 0.25  # seconds between reads of the pipe
    REDRAW = 0.5  # seconds between redraws of the live line

    def __init__(self, command: str, unit: str = "objects", total: int = 0, count: str = "events",
                 live: bool | None = None, follow_output: bool = False):
        self.command, self.unit, self.total, self.count = command, unit, total, count
        self.live = (sys.stdout.isatty() and sys.stderr.isatty()) if live is None else live
        self.follow_output = follow_output  # the live line shows the command's last line of output
        self.done = self.rows = 0
        self.current = ""
        self._t0 = time.monotonic()
        self.lock = threading.Lock()
        self._seen: set[tuple[str, str]] = set()
        self._label_rows: dict[str, int] = {}
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)  # a full pipe drops an event; it never blocks a run
        self._pending = b""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._streams: tuple | None = None
        self._shown = False  # the live line is on the screen
        self._line_start = True  # the command's own output ends with a newline
        self._drawn_at = 0.0

    # -- set-up

    def __enter__(self) -> Progress:
        global _ACTIVE
        _ACTIVE = self
        if self.live:
            self._streams = (sys.stdout, sys.stderr)
            self._out = sys.stderr
            sys.stdout, sys.stderr = _ClearsProgress(sys.stdout, self), _ClearsProgress(sys.stderr, self)
        else:
            self._out = sys.stderr
        self._thread = threading.Thread(target=self._tick, name="etl-assets progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind, *exc) -> None:
        global _ACTIVE
        if kind is None and self.count == "started":  # the last step started has ended
            self.done = self.total
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self.lock:
            self._take_events()
            self._clear()
            if self._streams is not None:
                sys.stdout, sys.stderr = self._streams
            if self.done or self.rows:
                self._say(self._summary(final=True))
        _ACTIVE = None
        os.close(self._read)
        os.close(self._write)

    # -- what happens (any thread; `listen`'s callback in the run's process)

    def listen(self, instance: dg.DagsterInstance, run_id: str, label: str) -> None:
        """Follow one run's events as they are stored. `DagsterInstance.add_event_listener` calls back in
        the process that stores the event; without it (another Dagster) there is no per-step progress,
        and the command still prints its line per run."""
        write = self._write

        def forward(entry) -> None:
            event = entry.dagster_event
            if event is None:
                return
            if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
                materialization = event.step_materialization_data.materialization
                rows = materialization.metadata.get("rows_read")
                message = {"label": label, "what": "done", "name": materialization.asset_key.to_user_string(),
                           "rows": rows.value if isinstance(getattr(rows, "value", None), int) else 0}
            elif event.event_type in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_START):
                what = "failed" if event.event_type == dg.DagsterEventType.STEP_FAILURE else "start"
                message = {"label": label, "what": what, "name": (event.step_key or "").replace("__", "/")}
            else:
                return
            try:
                os.write(write, (json.dumps(message) + "\n").encode())
            except OSError:  # a full pipe (a lagging reader) or a closed one: progress is a bonus
                pass

        add_listener = getattr(instance, "add_event_listener", None)
        if add_listener is not None:
            add_listener(run_id, forward)

    def started(self, name: str, number: int, total: int) -> None:
        """A step of this process begins (catalog refresh: object `number` of `total`)."""
        with self.lock:
            self.total, self.done, self.current = total, number - 1, name
            if not self.live:
                self._say(f"{self.command}: {name} ({number} of {total} {self.unit}, "
                          f"{_clock(time.monotonic() - self._t0)} elapsed)")
            self._draw()

    def settle(self, label: str | None = None, ok: bool | None = None) -> None:
        """Take in every event written so far (a run has ended: all of them); with `label`, one more
        run has ended (count="runs")."""
        with self.lock:
            self._take_events()
            if label is not None and self.count == "runs":
                self.done += 1
                if not self.live:
                    rows = self._label_rows.get(label, 0)
                    self._say(f"{self.command}: {label}: {f'{rows:,} rows' if ok else 'FAILED'} ({self._summary()})")
            self._draw()

    # -- the reading thread

    def _tick(self) -> None:
        while not self._stop.wait(self.TICK):
            with self.lock:
                self._take_events()
                if time.monotonic() - self._drawn_at >= self.REDRAW:
                    self._draw()

    def _take_events(self) -> None:
        while True:
            try:
                chunk = os.read(self._read, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self._event(event)

    def _event(self, event: dict) -> None:
        label, name, what = event["label"], event["name"], event["what"]
        if what == "start":  # a file's run has one step: the file says it all
            self.current = label if self.count == "runs" else f"{label} {name}"
            return
        if (label, name) in self._seen:
            return
        self._seen.add((label, name))
        self.rows += event.get("rows") or 0
        self._label_rows[label] = self._label_rows.get(label, 0) + (event.get("rows") or 0)
        if self.count == "events":
            self.done += 1
        if not self.live and self.count == "events":
            outcome = f"{event['rows']:,} rows" if what == "done" else "FAILED"
            self._say(f"{self.command}: {label}: {name}: {outcome} ({self._summary()})")

    # -- showing it (with the lock held)

    def _summary(self, final: bool = False) -> str:
        elapsed = time.monotonic() - self._t0
        unit = self.unit[:-1] if final and self.done == 1 and self.unit.endswith("s") else self.unit
        parts = [f"{self.done}/{self.total} {unit}" if self.total and not final else f"{self.done} {unit}"]
        if self.rows:
            parts.append(f"{self.rows:,} rows")
            if elapsed >= 1:
                parts.append(f"{self.rows / elapsed:,.0f} rows/s")
        parts.append(f"{_clock(elapsed)} elapsed")
        return ", ".join(parts) if not final else f"{self.command}: " + ", ".join(parts)

    def _say(self, line: str) -> None:
        self._clear()
        print(line, file=self._out, flush=True)

    def _draw(self) -> None:
        if not self.live or not self._line_start:
            return
        self._drawn_at = time.monotonic()
        width = shutil.get_terminal_size((100, 24)).columns - 1
        if self.follow_output:
            line = f"{self.command}: {self.current} ({_clock(time.monotonic() - self._t0)} elapsed)"
        else:
            line = f"{self.command}: {self.current + ': ' if self.current else ''}{self._summary()}"
        self._out.write("\r\x1b[K" + line[:width])
        self._out.flush()
        self._shown = True

    def _clear(self) -> None:
        if self._shown:
            self._out.write("\r\x1b[K")
            self._out.flush()
            self._shown = False

    def _wrote(self, text: str) -> None:
        self._line_start = text.endswith("\n")
        if self.follow_output:
            last = [line for line in text.splitlines() if line.strip()]
            if last:
                self.current = last[-1].strip()


class _ClearsProgress:
    """sys.stdout or sys.stderr while a live progress line is shown: what the command prints clears the
    line first, so output never lands on it (the next redraw puts it back below)."""

    def __init__(self, stream, progress: Progress):
        self._stream, self._progress = stream, progress

    def write(self, text: str) -> int:
        if not text:
            return 0
        with self._progress.lock:
            if self._progress._line_start:
                self._progress._clear()
            written = self._stream.write(text)
            self._stream.flush()
            self._progress._wrote(text)
        return written

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


_ACTIVE: Progress | None = None


def _before_fork() -> None:  # a forked run never inherits the lock held by the progress thread
    if _ACTIVE is not None:
        _ACTIVE.lock.acquire()


def _after_fork() -> None:
    if _ACTIVE is not None:
        _ACTIVE.lock.release()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


# -- Configuration errors: one line, exit 2

# The deployment choices each command depends on (a variable they make required must be set).
LOADS = {"ETL_ASSETS_LANDING_ZONE", "ETL_ASSETS_WAREHOUSE", "ETL_ASSETS_EXECUTOR"}
LANDING = {"ETL_ASSETS_LANDING_ZONE"}
WAREHOUSE = {"ETL_ASSETS_WAREHOUSE"}
TOTESYS = {"ETL_ASSETS_WAREHOUSE", "ETL_ASSETS_TOTESYS_SOURCE", "ETL_ASSETS_EXECUTOR"}
TOTESYS_SOURCE = {"ETL_ASSETS_TOTESYS_SOURCE"}


def _did_you_mean(name: str, known) -> str:
    suggestion = environment.closest(name, known)
    return f" (did you mean {suggestion}?)" if suggestion else ""


def unknown_objects(names: list[str], catalog) -> None:
    """ConfigurationError naming every object not in the catalog, each with the closest one that is."""
    known = {api.lower() for api in catalog}
    unknown = [name for name in names if name.lower() not in known]
    if unknown:
        raise ConfigurationError("Unknown object(s): " + ", ".join(f"{name}{_did_you_mean(name, catalog)}"
                                                                   for name in unknown)
                                 + ": not in catalog.yaml nor in the discovered state")


def dagster_home_problem() -> str | None:
    """Why DAGSTER_HOME cannot hold the instance (Dagster's own rules), or None."""
    home = os.environ.get("DAGSTER_HOME", "")
    advice = "or pass --ephemeral to record no runs"
    if not home:
        return ("DAGSTER_HOME is not set: set it to the Dagster instance's directory (make uses "
                f"data/dagster_home, with deploy/dagster.local.yaml as its dagster.yaml), {advice}")
    path = os.path.expanduser(home)
    if not os.path.isabs(path):
        return f"DAGSTER_HOME={home!r} is not an absolute path: Dagster needs one, {advice}"
    if not os.path.isdir(path):
        return f"DAGSTER_HOME={home!r} is not a directory: create it (and its dagster.yaml), {advice}"
    return None


def bucket_problems(uses: set[str]) -> list[str]:
    """Each S3 bucket the command would use that does not exist or cannot be reached, in one line each."""
    from etl_assets.settings import build_s3

    buckets = []
    if "ETL_ASSETS_LANDING_ZONE" in uses and environment.chosen("ETL_ASSETS_LANDING_ZONE") == "s3":
        buckets.append("ETL_ASSETS_LANDING_BUCKET")
    if "ETL_ASSETS_WAREHOUSE" in uses and environment.chosen("ETL_ASSETS_WAREHOUSE") == "redshift" \
            and uses == LOADS:
        buckets.append("ETL_ASSETS_REDSHIFT_STAGING_BUCKET")
    if not buckets:
        return []
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    endpoint = os.environ.get("ETL_ASSETS_S3_ENDPOINT_URL") or "AWS"
    problems = []
    with dg.build_resources({"s3": build_s3()}) as resources:
        client = resources.s3  # S3Resource's resource is its boto3 client
    for variable in buckets:
        bucket = os.environ[variable].strip()
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            why = {"404": "no such bucket", "NoSuchBucket": "no such bucket", "403": "access denied",
                   "AccessDenied": "access denied"}.get(code, f"{code or error}")
            problems.append(f"{variable}={bucket!r}: {why} at {endpoint} (with the AWS credentials of this "
                            "environment)")
        except NoCredentialsError:
            problems.append(f"{variable}={bucket!r}: no AWS credentials: set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY, or give this process a role or profile")
        except BotoCoreError as error:  # an endpoint that cannot be reached, a malformed one
            problems.append(f"{variable}={bucket!r}: cannot reach S3 at {endpoint}: {error}")
    return problems


def check_configuration(uses: set[str], persistent: bool = False) -> None:
    """Everything the command needs from its environment, before it does anything: no unknown
    ETL_ASSETS_* name, every value of its kind, every variable the chosen deployment needs, the
    deployment's choices (Settings.read), DAGSTER_HOME for a command that records runs, and the S3
    buckets it reads or stages in. ConfigurationError (SettingsError is one) with one line otherwise."""
    found = environment.problems(uses=uses)
    if persistent and (problem := dagster_home_problem()):
        found.append(problem)
    if found:
        raise ConfigurationError("; ".join(found))
    if uses:
        from etl_assets.settings import Settings

        Settings.read()  # the cron, Celery's URLs: a SettingsError, one line
        problems = bucket_problems(uses)
        if problems:
            raise ConfigurationError("; ".join(problems))


# -- The command line (click)

# Every exit status of every command (the help's epilog; docs/cli.md says the same).
EXIT_STATUSES = {
    0: "done",
    1: "a load failed (each folder or file is named, with why), the warehouse cannot be reached, or "
       "DAGSTER_HOME cannot take a run",
    2: "usage or configuration error, nothing was run: one line on stderr says what to fix (a bad or "
       "missing variable, an ETL_ASSETS_* name nothing reads, DAGSTER_HOME unset, a missing bucket, an "
       "unknown object, folder, command or option)",
    130: "stopped by Ctrl-C (SIGINT): the run in progress is canceled and its pool slots freed",
    143: "stopped by SIGTERM: the same",
}
EXIT_CODES = "\b\nExit status:\n" + "\n".join(
    f"  {code:<4} " + "\n       ".join(textwrap.wrap(meaning, 70)) for code, meaning in EXIT_STATUSES.items()
) + "\n\b\nDocs: docs/cli.md (commands, progress, errors), docs/configuration.md (every variable)."

LOG_LEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False)
LOG_LEVEL_HELP = ("Dagster's console log level: DEBUG, INFO (the run's event log), WARNING, ERROR or CRITICAL "
                  "(no stack traces).")
EPHEMERAL_HELP = "Record nothing in DAGSTER_HOME (an in-memory instance); DAGSTER_HOME need not be set."


class Command(click.Command):
    """A command that checks its environment (`check_configuration`) once its arguments are parsed."""

    def __init__(self, *args, uses: set[str] = frozenset(), records_runs: bool = False, **kwargs):
        kwargs.setdefault("epilog", EXIT_CODES)
        super().__init__(*args, **kwargs)
        self.uses, self.records_runs = set(uses), records_runs

    def invoke(self, ctx: click.Context):
        check_configuration(self.uses, persistent=self.records_runs and not ctx.params.get("ephemeral"))
        return super().invoke(ctx)


class Group(click.Group):
    """Sub-commands with the closest name suggested for a mistyped one."""

    command_class = Command

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            ctx.fail(f"No such command {name!r}{_did_you_mean(name, self.list_commands(ctx))}")
        return super().resolve_command(ctx, args)


Group.group_class = Group


@click.group(cls=Group, epilog=EXIT_CODES,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="etl_assets", prog_name="etl-assets", message="%(prog)s %(version)s")
def cli() -> None:
    """etl-assets: load Salesforce backups, file feeds and totesys into the warehouse, and look at the loads.

    The environment (ETL_ASSETS_*, DAGSTER_HOME) says where data lives; docs/configuration.md lists it.
    Every command checks it first: a mistake is one line on stderr and exit status 2.
    """


def _run(command, **options) -> int:
    return command(argparse.Namespace(**options))


@cli.command("generate-sample")
@click.option("--root", default=str(DATA_DIR / "landing"), show_default=True, help="Landing zone folder to write into.")
@click.option("--folders", type=click.IntRange(min=2), default=6, show_default=True,
              help="Differential folders to write (the last is left empty, as a folder still being written).")
@click.option("--rows", type=click.IntRange(min=1), default=120, show_default=True, help="Rows per object per folder.")
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed: the same seed writes the same files.")
@click.option("--if-empty", is_flag=True, help="Do nothing if the landing zone already holds backups.")
def generate_sample(**options) -> int:
    """Write deterministic sample Salesforce backups.

    Differential folders of every catalog object, into a local landing zone (--root).
    """
    return _run(generate_sample_command, **options)


@cli.command("materialize", uses=LOADS, records_runs=True)
@click.option("--folder", multiple=True, metavar="FOLDER",
              help="A backup folder to load, e.g. 20240501_Differential (repeatable; default: every folder).")
@click.option("--from", "from_folder", metavar="FOLDER", help="First folder of a range (included).")
@click.option("--to", "to_folder", metavar="FOLDER", help="Last folder of a range (included).")
@click.option("--object", multiple=True, metavar="OBJECT",
              help="Only this object's API name, e.g. Task (repeatable; default: every object of each folder).")
@click.option("--ephemeral", is_flag=True, help=EPHEMERAL_HELP)
@click.option("--log-level", type=LOG_LEVELS, default="WARNING", show_default=True, metavar="LEVEL", help=LOG_LEVEL_HELP)
def materialize(ephemeral: bool, log_level: str, **options) -> int:
    """Load Salesforce backup folders, one run per folder.

    Every folder of the landing zone by default. Prints each folder's outcome (ok, FAILED and why), then rows read, rejected, inserted and updated
    per table. Progress (objects and rows done, rate, elapsed) goes to stderr.
    """
    return _run(materialize_command, persistent=not ephemeral, log_level=log_level.upper(),
                folder=list(options.pop("folder")), object=list(options.pop("object")), **options)


@cli.command("files", uses=LOADS, records_runs=True)
@click.option("--sample", is_flag=True, help="First write the sample files (a local landing zone only).")
@click.option("--allow-refused", is_flag=True, help="Exit 0 even if some files were refused.")
@click.option("--ephemeral", is_flag=True, help=EPHEMERAL_HELP)
@click.option("--log-level", type=LOG_LEVELS, default="WARNING", show_default=True, metavar="LEVEL", help=LOG_LEVEL_HELP)
@click.option("--key", multiple=True, metavar="KEY",
              help="Load only this landing key (repeatable), e.g. one in held/ or duplicate/.")
@click.option("--override", metavar="WHAT",
              help="guards and/or duplicates (comma-separated): apply a HELD file, load a DUPLICATE (run tag "
                   "files/override; docs/file-feeds.md).")
def files(ephemeral: bool, log_level: str, key: tuple[str, ...], **options) -> int:
    """Load every file waiting in the file-feed prefixes.

    One run per file waiting in datalake/, external/inbound/ and csv/input/. Prints each file's outcome (loaded, REFUSED, DUPLICATE or HELD, and why). Progress (files and rows
    done, rate, elapsed) goes to stderr.
    """
    return _run(files_command, persistent=not ephemeral, log_level=log_level.upper(), key=list(key), **options)


@cli.command("audit", uses=WAREHOUSE)
@click.option("--table", metavar="TABLE", help="Only loads into this table: schema.table or table.")
@click.option("--since", metavar="TIMESTAMP", help="Only loads started since this ISO timestamp (UTC if no zone).")
@click.option("--status", type=click.Choice(["FINISHED", "FAILED", "ABORTED", "DUPLICATE", "HELD"],
                                            case_sensitive=False), help="Only loads with this outcome.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True, help="The newest N loads.")
@click.option("--json", "json_", is_flag=True, help="Every column and full run ids, as JSON.")
def audit(json_: bool, status: str | None, **options) -> int:
    """List loads from the audit table (newest first)."""
    if options["since"]:
        try:
            dt.datetime.fromisoformat(options["since"])
        except ValueError:
            raise click.BadParameter(f"{options['since']!r} is not an ISO timestamp such as 2024-05-01T00:00",
                                     ctx=click.get_current_context(), param_hint="'--since'") from None
    return _run(audit_command, json=json_, status=status.upper() if status else None, **options)


@cli.command("audit-server", uses=WAREHOUSE)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (beyond loopback only with ETL_ASSETS_AUDIT_TOKEN set).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port, printed).")
def audit_server(**options) -> int:
    """Serve the audit table read-only over HTTP.

    GET /loads?table=&since=&status=&limit= answers JSON. Stops cleanly on Ctrl-C or SIGTERM.
    """
    return _run(audit_server_command, **options)


@cli.command("bench", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                        "help_option_names": []}, add_help_option=False)
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def bench(arguments: tuple[str, ...]) -> int:
    """Run the benchmarks (`bench --help`: their options).

    Load, sensor, catalog, folder-run and encoding benchmarks; results under benchmarks/results/.
    """
    from benchmarks.run import main as bench_main

    try:
        with Progress("bench", "steps", follow_output=True):
            return bench_main(list(arguments))
    except SystemExit as exit_:  # its own --help, or its usage error (argparse's message is above)
        return exit_.code if isinstance(exit_.code, int) else 2


@cli.group("catalog", cls=Group, epilog=EXIT_CODES)
def catalog() -> None:
    """The discovered Salesforce objects (refresh, import).

    Objects catalog.yaml does not declare are typed from sampled rows (refresh) or describe JSON.
    """


STATE_HELP = ("The discovered state file (default: $ETL_ASSETS_SALESFORCE_DISCOVERED, else "
              "etl_assets/salesforce/discovered.yaml).")


@catalog.command("refresh", uses=LANDING)
@click.option("--sample-rows", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Rows sampled per object.")
@click.option("--state", metavar="FILE", help=STATE_HELP)
def catalog_refresh(**options) -> int:
    """Type every object folder from sampled rows.

    The columns catalog.yaml declares win; the others are inferred. Progress (objects sampled, elapsed) goes to stderr.
    """
    return _run(catalog_refresh_command, **options)


@catalog.command("import-describe")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--state", metavar="FILE", help=STATE_HELP)
def catalog_import_describe(files: tuple[str, ...], state: str | None) -> int:
    """Type objects exactly from describe JSON files.

    Each of FILES is the REST describe of one object (sobjects/<Object>/describe).
    """
    return _run(catalog_import_command, files=list(files), state=state)


@cli.command("sql")
@click.option("--target", type=click.Choice(WAREHOUSES), required=True, help="The warehouse to plan for.")
@click.option("--object", "object_", required=True, metavar="OBJECT", help="The object's API name, e.g. Task.")
@click.option("--partition", default="20240501_Differential", show_default=True,
              help="The backup folder the plan loads.")
@click.option("--rows", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Staged row count the COPY check expects.")
def sql(object_: str, **options) -> int:
    """Print the SQL a load of one object would run.

    On the --target warehouse, with this environment's values (placeholders where unset). Nothing
    runs and no secret is read.
    """
    return _run(sql_command, object=object_, **options)


@cli.command("seed-totesys", uses=TOTESYS_SOURCE)
@click.option("--seed", type=int, default=2, show_default=True, help="Random seed of the rows written.")
def seed_totesys(**options) -> int:
    """Fill the totesys source, or add a tick of business."""
    return _run(seed_totesys_command, **options)


@cli.command("totesys", uses=TOTESYS, records_runs=True)
@click.option("--ephemeral", is_flag=True, help=EPHEMERAL_HELP)
@click.option("--log-level", type=LOG_LEVELS, default="WARNING", show_default=True, metavar="LEVEL", help=LOG_LEVEL_HELP)
def totesys(ephemeral: bool, log_level: str) -> int:
    """Extract totesys changes, dbt build the star schema.

    Seeds the embedded source first if it is empty.
    """
    return _run(totesys_command, persistent=not ephemeral, log_level=log_level.upper())


def _usage_line(error: click.UsageError) -> str:
    where = error.ctx.command_path if error.ctx is not None else "etl-assets"
    return f"{where}: {error.format_message()} (see {where} --help)"


def _one_line(error: Exception) -> tuple[int, str] | None:
    """(exit status, one line) for an error that is the environment's, not the code's; None otherwise.
    The classes are looked up only if their modules were imported (a --help imports neither)."""
    dagster = sys.modules.get("dagster")
    if dagster is not None and isinstance(error, dagster.DagsterInvalidConfigError):
        # A value Dagster could not resolve (the instance's dagster.yaml, a resource's field).
        messages = [e.message for e in getattr(error, "errors", [])] or [str(error)]
        return 2, "; ".join(" ".join(m.split()) for m in messages)
    base = sys.modules.get("etl_assets.warehouse.base")
    if base is not None and isinstance(error, base.WarehouseUnreachable):  # names where, and why
        return 1, " ".join(str(error).split())
    return None


def main(argv: list[str] | None = None) -> int:
    """The console script: the command's exit status; a usage or configuration error is one line on
    stderr and 2, never a traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        status = cli.main(argv, prog_name="etl-assets", standalone_mode=False)
    except click.UsageError as error:  # a bad option or value, an unknown command
        print(_usage_line(error), file=sys.stderr)
        return 2
    except ConfigurationError as error:  # the environment or an argument cannot work (SettingsError too)
        print(f"etl-assets: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        known = _one_line(error)
        if known is None:
            raise
        status, line = known
        print(f"etl-assets: {line}", file=sys.stderr)
        return status
    except click.ClickException as error:
        print(f"etl-assets: {error.format_message()}", file=sys.stderr)
        return error.exit_code
    except (click.Abort, KeyboardInterrupt):
        print("etl-assets: interrupted", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
