"""The Salesforce commands: `generate-sample`, `materialize` (backup folders, one run each) and
`catalog refresh` / `catalog import-describe` (the discovered objects) / `catalog apply-policies`."""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import click

from etl_assets.cli.common import (
    EPHEMERAL_HELP,
    EXIT_CODES,
    LANDING,
    LOADS,
    LOG_LEVEL_HELP,
    LOG_LEVELS,
    WAREHOUSE,
    Command,
    Group,
    configured_landing_zone,
    configured_warehouse,
    dg,
    did_you_mean,
    failure_reasons,
    run,
    run_instance,
    unknown_objects,
)
from etl_assets.cli.progress import Progress
from etl_assets.environment import DATA_DIR, ConfigurationError
from etl_assets.warehouse.spec import quote


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
    zone = configured_landing_zone()
    scan = scan_backups(zone, BackupCursor(), catalog, open_folders=0)
    folders = sorted({r.partition_key for r in scan.run_requests})
    absent = [f for f in args.folder if f not in folders
              and next(iter(zone.list_files(f"{BACKUP_PREFIX}/{f}/")), None) is None]
    if absent:  # a mistyped folder: say so, rather than load nothing and succeed
        raise ConfigurationError(f"No backup folder {', '.join(f + did_you_mean(f, folders) for f in absent)} "
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

    instance = run_instance(args, "materialize")
    if instance is None:
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
                                                                         args.log_level, progress, args.force_reload))
                progress.settle()  # every step's line before the folder's
                reasons = [] if result.success else failure_reasons(result) + result.problems
                if not result.success:
                    failed.append(request.partition_key)
                skipped = []
                for event in result.get_asset_materialization_events():
                    materialization = event.step_materialization_data.materialization
                    table = materialization.metadata.get("dagster/table_name")
                    if table is None:
                        continue
                    if "skipped_already_loaded" in materialization.metadata:
                        skipped.append(table.value)
                    row = totals[table.value]
                    row["partitions"] += 1
                    for name in ("rows_read", "rows_rejected", "inserted", "updated"):
                        if name in materialization.metadata:
                            row[name] += materialization.metadata[name].value
                    row["table_rows"] = materialization.metadata["dagster/row_count"].value
                    if "versions" in materialization.metadata:  # history mode: the versions view's rows
                        row["versions"] = materialization.metadata["versions"].value
                outcome = "ok" if result.success else "CANCELED" if result.status == dg.DagsterRunStatus.CANCELED \
                    else "FAILED"
                print(f"{request.partition_key}: {outcome} ({len(selection)} object(s))", flush=True)
                if skipped:  # not read: the ledger holds their files as they are (docs/salesforce.md)
                    print(f"  already loaded, not read again: {', '.join(sorted(skipped))} (--force-reload loads "
                          "them again)", flush=True)
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


def _selection(request, wanted_objects: set[str]) -> list:
    """The assets of a folder's run request, only the --object ones when any are named."""
    return [k for k in request.asset_selection if not wanted_objects or k.path[-1] in wanted_objects]


def _folder_run(job, folder: str, selection: list, log_level: str, progress: Progress | None = None,
                force_reload: bool = False):
    """One folder's run, as SupervisedRuns executes it: in process, with the run id and tags it is given;
    `force_reload`: with the run tag that loads files the loaded-files ledger holds again."""
    from etl_assets.salesforce.loaded_files import FORCE_RELOAD_TAG

    def execute(instance: dg.DagsterInstance, run_id: str, tags: dict) -> None:
        if progress is not None:
            progress.listen(instance, run_id, folder)
        job.execute_in_process(
            partition_key=folder,
            asset_selection=selection,
            instance=instance,
            run_id=run_id,
            tags={**tags, "etl_assets/launched_by": "etl-assets materialize",
                  **({FORCE_RELOAD_TAG: "true"} if force_reload else {})},
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            raise_on_error=False,
        )

    return execute


def _print_summary(totals: dict[str, dict[str, int]]) -> None:
    columns = ["table", "partitions", "rows_read", "rows_rejected", "inserted", "updated", "table_rows", "versions"]
    rows = [[table] + [str(totals[table][c]) if c in totals[table] or c != "versions" else "-" for c in columns[1:]]
            for table in sorted(totals)]
    if not rows:
        return
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    print()
    print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(columns, widths))))
    for row in rows:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))


def catalog_refresh_command(args: argparse.Namespace) -> int:
    from etl_assets.salesforce.catalog import discovered_path
    from etl_assets.salesforce.discovery import refresh_command

    args.state = args.state or str(discovered_path())
    zone = configured_landing_zone()
    with Progress("catalog refresh", "objects", count="started") as progress:
        return refresh_command(args, zone, progress.started)


def catalog_import_command(args: argparse.Namespace) -> int:
    from etl_assets.salesforce.catalog import discovered_path
    from etl_assets.salesforce.discovery import import_describe_command

    args.state = args.state or str(discovered_path())
    return import_describe_command(args)


@click.command("generate-sample", cls=Command)
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
    return run(generate_sample_command, **options)


@click.command("materialize", cls=Command, uses=LOADS, records_runs=True)
@click.option("--folder", multiple=True, metavar="FOLDER",
              help="A backup folder to load, e.g. 20240501_Differential (repeatable; default: every folder).")
@click.option("--from", "from_folder", metavar="FOLDER", help="First folder of a range (included).")
@click.option("--to", "to_folder", metavar="FOLDER", help="Last folder of a range (included).")
@click.option("--object", multiple=True, metavar="OBJECT",
              help="Only this object's API name, e.g. Task (repeatable; default: every object of each folder).")
@click.option("--force-reload", is_flag=True,
              help="Read and merge every file again, also those already loaded as they are (run tag "
                   "salesforce/force_reload=true); e.g. after a table was emptied by hand.")
@click.option("--ephemeral", is_flag=True, help=EPHEMERAL_HELP)
@click.option("--log-level", type=LOG_LEVELS, default="WARNING", show_default=True, metavar="LEVEL", help=LOG_LEVEL_HELP)
def materialize(ephemeral: bool, log_level: str, **options) -> int:
    """Load Salesforce backup folders, one run per folder.

    Every folder of the landing zone by default. Prints each folder's outcome (ok, FAILED and why) and
    the objects whose files were already loaded as they are (not read again), then rows read, rejected,
    inserted and updated, table rows and versions per table. Progress (objects and rows done, rate,
    elapsed) goes to stderr.
    """
    return run(materialize_command, persistent=not ephemeral, log_level=log_level.upper(),
                folder=list(options.pop("folder")), object=list(options.pop("object")), **options)


def history_backfill_command(args: argparse.Namespace) -> int:
    from etl_assets.salesforce.catalog import load_catalog
    from etl_assets.warehouse.history import history_spec, keeps_history

    catalog = load_catalog()
    unknown_objects(args.object, catalog)
    wanted = {name.lower() for name in args.object}
    chosen = [o for o in catalog.values() if not wanted or o.api_name.lower() in wanted]
    without = sorted(o.api_name for o in chosen if not keeps_history(o.table_spec()))
    if wanted and without:
        raise ConfigurationError(f"{', '.join(without)} keep(s) no history: turn it on in catalog.yaml (`history: "
                                 "true`) or with ETL_ASSETS_SALESFORCE_HISTORY first (docs/history.md)")
    kept = [o for o in chosen if keeps_history(o.table_spec())]
    if not kept:
        print("No object keeps history (catalog.yaml, ETL_ASSETS_SALESFORCE_HISTORY): nothing to build.")
        return 0
    # Every folder still in the landing zone, in date order, for these objects: a folder the ledger holds as
    # loaded with history on is not read again, one loaded with history off is (its applied spec differs).
    status = materialize_command(argparse.Namespace(
        **{**vars(args), "object": [o.api_name for o in kept], "folder": [], "from_folder": None,
           "to_folder": None, "force_reload": False}))
    warehouse = configured_warehouse()
    print()
    for obj in kept:
        spec = obj.table_spec()
        versions = history_spec(spec)
        if warehouse.has_table(versions.schema, versions.name):
            [(rows, records)] = warehouse.query(f"SELECT count(*), count(DISTINCT {quote(spec.primary_key)}) "
                                                f"FROM {quote(versions.schema)}.{quote(versions.name)}")
            print(f"{obj.api_name}: {rows} version(s) of {records} record(s) in {versions.schema}.{versions.name}")
    return status


@click.group("history", cls=Group, epilog=EXIT_CODES)
def history() -> None:
    """Salesforce record versions (backfill); reading them as of a date: `sql --as-of`."""


@history.command("backfill", uses=LOADS, records_runs=True)
@click.option("--object", multiple=True, metavar="OBJECT",
              help="Only this object's API name, e.g. Account (repeatable; default: every object keeping history).")
@click.option("--ephemeral", is_flag=True, help=EPHEMERAL_HELP)
@click.option("--log-level", type=LOG_LEVELS, default="WARNING", show_default=True, metavar="LEVEL", help=LOG_LEVEL_HELP)
def history_backfill(ephemeral: bool, log_level: str, **options) -> int:
    """Build versions from the folders in the landing zone.

    For tables loaded while history was off: loads every backup folder again, one run per folder in date
    order, for the objects that keep history, then prints each one's versions. Folders already loaded with
    history on are not read again; versions of folders no longer in the landing zone cannot be built.
    """
    return run(history_backfill_command, persistent=not ephemeral, log_level=log_level.upper(),
               object=list(options.pop("object")), **options)


@click.group("catalog", cls=Group, epilog=EXIT_CODES)
def catalog() -> None:
    """The discovered Salesforce objects (refresh, import-describe, apply-policies).

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
    return run(catalog_refresh_command, **options)


@catalog.command("import-describe")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--state", metavar="FILE", help=STATE_HELP)
def catalog_import_describe(files: tuple[str, ...], state: str | None) -> int:
    """Type objects exactly from describe JSON files.

    Each of FILES is the REST describe of one object (sobjects/<Object>/describe).
    """
    return run(catalog_import_command, files=list(files), state=state)




def apply_policies_command(args: argparse.Namespace) -> int:
    import os

    from etl_assets.landing.column_policies import HASH_KEY_ENV, PolicyError, hash_key
    from etl_assets.salesforce.catalog import load_catalog
    from etl_assets.salesforce.personal_data import kept_notes, rewrite_existing, rewritten_tables
    from etl_assets.warehouse.errors import SpaceNotReclaimed

    catalog = load_catalog()
    unknown_objects(list(args.object), catalog)
    wanted = {name.lower() for name in args.object}
    objects = [o for o in catalog.values() if (not wanted or o.api_name.lower() in wanted) and o.policies is not None]
    warehouse = configured_warehouse()
    rewritten: list[tuple[str, str]] = []
    for obj in objects:
        if not warehouse.has_table(obj.schema, obj.table):
            continue
        try:  # a dry run hashes nothing, so it needs no key
            key = hash_key(os.environ.get(HASH_KEY_ENV), obj.api_name) \
                if obj.policies.may_hash and not args.dry_run else None
        except PolicyError as error:
            raise ConfigurationError(str(error)) from None
        changes = rewrite_existing(warehouse, obj, key=key, dry_run=args.dry_run)
        for change in changes:
            what = change.note or (f"{change.values} distinct value(s) {change.action.value}ed; {change.rejects} "
                                   "reject record(s) rewritten" if change.values or change.rejects
                                   else "nothing left to rewrite")
            print(f"{obj.api_name}.{change.column}: {change.action.value}: {what}" + (" (would)" if args.dry_run else ""))
        if not args.dry_run and any(c.values or c.rejects or c.note for c in changes):
            rewritten += [t for t in rewritten_tables(obj) if warehouse.has_table(*t)]
        for note in kept_notes(warehouse, obj):
            print(note)
    if rewritten:  # the rewrite committed; the engine still holds the old values in its free space
        try:
            print(warehouse.reclaim_space(rewritten, on_wait=lambda line: print(line, flush=True)))
        except SpaceNotReclaimed as error:
            print(f"etl-assets catalog apply-policies: {error}", file=sys.stderr)
            return 1
    return 0


@catalog.command("apply-policies", uses=WAREHOUSE)
@click.option("--object", multiple=True, metavar="OBJECT",
              help="Only this object's API name, e.g. Contact (repeatable; default: every object with a policy).")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
def catalog_apply_policies(**options) -> int:
    """Rewrite loaded rows under the catalog's column policies.

    For a policy turned on after rows were loaded: drops excluded columns, replaces clear values of
    hashed and masked ones, rewrites the rejects, one transaction per object (docs/personal-data.md).
    """
    return run(apply_policies_command, **options)
