"""`etl-assets files`: every file waiting in the file-feed prefixes (or the named ones), one run each."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import click

from etl_assets.cli.common import (
    EPHEMERAL_HELP,
    LOADS,
    LOG_LEVEL_HELP,
    LOG_LEVELS,
    Command,
    configured_landing_zone,
    dg,
    failure_reasons,
    run,
    run_instance,
)
from etl_assets.cli.progress import Progress


def files_command(args: argparse.Namespace) -> int:
    """Load every file waiting in the landing prefixes, as the file sensors would, one run per file; with
    --key, the named files wherever they are now. A --key outside the landing zone runs nothing."""
    from etl_assets.definitions import defs
    from etl_assets.files.assets import printable
    from etl_assets.files.sensors import ROUTES, schema_files_first
    from etl_assets.landing.zone import LandedFile
    from etl_assets.samples.files import write_sample_files

    zone = configured_landing_zone()
    if args.sample and isinstance(zone.location(), str) and not zone.location().startswith("s3://"):
        write_sample_files(Path(zone.location()))
    named, failed = _named_file_keys(zone, args.key, [prefix for _kind, prefix, _asset in ROUTES])
    from etl_assets.execution import StopRequested, SupervisedRuns

    instance = run_instance(args, "files")
    if instance is None:
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
                        for reason in failure_reasons(result) + result.problems:
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


@click.command("files", cls=Command, uses=LOADS, records_runs=True)
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
    return run(files_command, persistent=not ephemeral, log_level=log_level.upper(), key=list(key), **options)


