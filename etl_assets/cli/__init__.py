"""`etl-assets`: the commands operators and `make` use (click; docs/cli.md).

One module per group of commands: salesforce.py (generate-sample, materialize, catalog), files.py,
totesys.py (seed-totesys, totesys), warehouse.py (sql, audit, audit-server), bench.py; what they
share is in common.py (the environment's checks, the click classes) and progress.py. Each
`*_command(args)` function does one command's work; its click command parses the arguments, checks
the environment (`check_configuration`) and calls it. A usage or configuration error is one line on
stderr and exit status 2 (`main`).
"""

from __future__ import annotations

import sys

import click

from etl_assets.cli import bench, files, salesforce, totesys, warehouse
from etl_assets.cli.common import EXIT_CODES, EXIT_STATUSES, Group
from etl_assets.cli.progress import Progress
from etl_assets.environment import ConfigurationError

__all__ = ["EXIT_STATUSES", "Progress", "cli", "main"]


@click.group(cls=Group, epilog=EXIT_CODES,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="etl_assets", prog_name="etl-assets", message="%(prog)s %(version)s")
def cli() -> None:
    """etl-assets: load Salesforce backups, file feeds and totesys into the warehouse, and look at the loads.

    The environment (ETL_ASSETS_*, DAGSTER_HOME) says where data lives; docs/configuration.md lists it.
    Every command checks it first: a mistake is one line on stderr and exit status 2.
    """


for command in (salesforce.generate_sample, salesforce.materialize, files.files, warehouse.audit,
                warehouse.audit_server, bench.bench, salesforce.catalog, salesforce.history, warehouse.sql,
                totesys.seed_totesys, totesys.totesys):
    cli.add_command(command)


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
