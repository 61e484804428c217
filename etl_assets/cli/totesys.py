"""The totesys commands: `seed-totesys` (fill the source, or add a tick of business) and `totesys`
(extract, then dbt build the marts that are older than their inputs)."""

from __future__ import annotations

import argparse
import sys

import click

from etl_assets.cli.common import (
    EPHEMERAL_HELP,
    LOG_LEVEL_HELP,
    LOG_LEVELS,
    TOTESYS,
    TOTESYS_SOURCE,
    Command,
    print_table,
    resolved,
    run,
    run_instance,
)


def seed_totesys_command(args: argparse.Namespace) -> int:
    from etl_assets.samples.totesys import seed
    from etl_assets.settings import build_totesys_source

    source = resolved("totesys_source", build_totesys_source())
    counts = seed(source, args.seed)
    inserted = sum(c["inserted"] for c in counts.values())
    updated = sum(c["updated"] for c in counts.values())
    print(f"totesys at {source.describe()}: {inserted} rows inserted, {updated} updated")
    print_table(["table", "inserted", "updated"], [[t, str(c["inserted"]), str(c["updated"])] for t, c in counts.items()])
    return 0


def totesys_command(args: argparse.Namespace) -> int:
    from etl_assets.definitions import defs
    from etl_assets.execution import StopRequested, SupervisedRuns
    from etl_assets.samples.totesys import seed_embedded_if_empty
    from etl_assets.totesys.pipeline import resolved_source, run_totesys_pipeline

    instance = run_instance(args, "totesys")
    if instance is None:
        return 1
    run_config = {"loggers": {"console": {"config": {"log_level": args.log_level}}}}
    seeded = seed_embedded_if_empty(resolved_source(defs))
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
        print_table(columns, [[t] + [str(v) for v in m.values()] for t, m in sorted(summary.extracted.items())])
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
        print_table(["mart", "rows"], [[t, str(n)] for t, n in summary.mart_rows.items()])
    if not summary.success:
        for line in summary.dbt_log_tail:
            print(line, file=sys.stderr)
        print("totesys pipeline FAILED; see the run logs (DAGSTER_HOME) for details", file=sys.stderr)
        return 1
    return 0


@click.command("seed-totesys", cls=Command, uses=TOTESYS_SOURCE)
@click.option("--seed", type=int, default=2, show_default=True, help="Random seed of the rows written.")
def seed_totesys(**options) -> int:
    """Fill the totesys source, or add a tick of business."""
    return run(seed_totesys_command, **options)


@click.command("totesys", cls=Command, uses=TOTESYS, records_runs=True)
@click.option("--ephemeral", is_flag=True, help=EPHEMERAL_HELP)
@click.option("--log-level", type=LOG_LEVELS, default="WARNING", show_default=True, metavar="LEVEL", help=LOG_LEVEL_HELP)
def totesys(ephemeral: bool, log_level: str) -> int:
    """Extract totesys changes, dbt build the star schema.

    Seeds the embedded source first if it is empty.
    """
    return run(totesys_command, persistent=not ephemeral, log_level=log_level.upper())

