"""The commands that look at the warehouse: `sql` (the load plan of one object, nothing run), `audit`
(the loads recorded in the audit table) and `audit-server` (the same, read-only over HTTP)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import click

from etl_assets.cli.common import (
    WAREHOUSE,
    Command,
    configured_warehouse,
    did_you_mean,
    run,
)
from etl_assets.environment import WAREHOUSES, ConfigurationError


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
        raise KeyError(f"{api_name}{did_you_mean(api_name, catalog)}")
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


def sql_command(args: argparse.Namespace) -> int:
    from etl_assets.settings import Settings
    from etl_assets.warehouse.steps import flatten

    args.target = args.target or Settings.read().warehouse
    if args.as_of:
        return as_of_command(args)
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


def audit_command(args: argparse.Namespace) -> int:
    import datetime as dt
    import json

    from etl_assets.warehouse.audit import find_loads

    since = dt.datetime.fromisoformat(args.since) if args.since else None
    if since and since.tzinfo is None:
        since = since.replace(tzinfo=dt.timezone.utc)
    loads = find_loads(configured_warehouse(), table=args.table, since=since, status=args.status, limit=args.limit)
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
        serve(configured_warehouse(), args.host, args.port)
    except AuditServerConfigError as error:
        print(error, file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (which Dagster maps to SIGINT)
        print("Audit endpoint stopped")
    return 0


def as_of_command(args: argparse.Namespace) -> int:
    """`etl-assets sql --as-of DATE --object X`: the query of the object's rows as they were then."""
    from etl_assets.salesforce.catalog import load_catalog
    from etl_assets.warehouse.history import as_of_query

    catalog = load_catalog()
    obj = {api.lower(): o for api, o in catalog.items()}.get(args.object.lower())
    if obj is None:
        raise ConfigurationError(f"Unknown object: {args.object}{did_you_mean(args.object, catalog)}: not in "
                                 "catalog.yaml nor in the discovered state")
    if not obj.keeps_history:
        raise ConfigurationError(f"{obj.api_name} keeps no history (catalog.yaml `history: false` or "
                                 "ETL_ASSETS_SALESFORCE_HISTORY=off): no as-of query can be answered")
    try:
        when = dt.datetime.fromisoformat(args.as_of.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(f"--as-of {args.as_of!r} is no date or time: use 2024-03-01 or "
                                 "2024-03-01T12:00:00Z") from None
    if when.tzinfo is None and len(args.as_of) == 10:
        when = when.date()
    print(f"-- {obj.api_name} as of {args.as_of} (UTC) on {args.target}: each record's version whose interval "
          "holds that moment, deleted records left out (docs/history.md)")
    print(as_of_query(obj, when, args.target) + ";")
    return 0


@click.command("sql", cls=Command)
@click.option("--target", type=click.Choice(WAREHOUSES), default=None,
              help="The warehouse to plan for.  [default: the configured one, $ETL_ASSETS_WAREHOUSE]")
@click.option("--object", "object_", required=True, metavar="OBJECT", help="The object's API name, e.g. Task.")
@click.option("--partition", default="20240501_Differential", show_default=True,
              help="The backup folder the plan loads.")
@click.option("--rows", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Staged row count the COPY check expects.")
@click.option("--as-of", metavar="DATE", help="Print instead the query of the object's rows as they were at DATE "
              "(2024-03-01, 00:00 UTC, or 2024-03-01T12:00:00Z), read from its history.")
def sql(object_: str, **options) -> int:
    """Print the SQL a load of one object would run, or an as-of query.

    On the --target warehouse, with this environment's values (placeholders where unset). Nothing
    runs and no secret is read.
    """
    return run(sql_command, object=object_, **options)



@click.command("audit", cls=Command, uses=WAREHOUSE)
@click.option("--table", metavar="TABLE", help="Only loads into this table: schema.table or table.")
@click.option("--since", metavar="TIMESTAMP", help="Only loads started since this ISO timestamp (UTC if no zone).")
@click.option("--status", type=click.Choice(["FINISHED", "FAILED", "ABORTED", "DUPLICATE", "HELD", "SKIPPED"],
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
    return run(audit_command, json=json_, status=status.upper() if status else None, **options)


@click.command("audit-server", cls=Command, uses=WAREHOUSE)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (beyond loopback only with ETL_ASSETS_AUDIT_TOKEN set).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port, printed).")
def audit_server(**options) -> int:
    """Serve the audit table read-only over HTTP.

    GET /loads?table=&since=&status=&limit= answers JSON. Stops cleanly on Ctrl-C or SIGTERM.
    """
    return run(audit_server_command, **options)


