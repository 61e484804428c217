"""What every `etl-assets` command shares: Dagster imported when first used, the resources of the
deployment resolved, the checks of the environment a command makes before it runs (a mistake is one
line, exit status 2), the click classes that make them, and the exit statuses of the help."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import click

from etl_assets import environment
from etl_assets.environment import ConfigurationError


class _Dagster:
    """`dagster`, imported when first used: --help, --version and a configuration error answer in a
    fraction of a second, without importing Dagster and the warehouses' drivers."""

    def __getattr__(self, name: str):
        import dagster

        return getattr(dagster, name)


dg = _Dagster()


def resolved(key: str, definition):
    """The deployment's resource `definition` (settings.build_*) with its environment variables resolved."""
    with dg.build_resources({key: definition}) as resources:
        return getattr(resources, key)


def configured_landing_zone():
    """The configured landing zone."""
    from etl_assets.settings import build_landing_zone

    return resolved("landing_zone", build_landing_zone())


def configured_warehouse():
    """The configured warehouse."""
    from etl_assets.settings import build_warehouse

    return resolved("warehouse", build_warehouse())


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


def run_instance(args: argparse.Namespace, command: str):
    """The Dagster instance the command's runs are recorded in (DAGSTER_HOME; in memory with --ephemeral),
    or None once it printed why DAGSTER_HOME cannot take a run: checked before any run is created, as
    Dagster would write a run's row, then fail on its first event."""
    instance = dg.DagsterInstance.get() if args.persistent else dg.DagsterInstance.ephemeral()
    problem = instance_write_problem(instance) if args.persistent else None
    if problem:
        instance.dispose()
        print(f"etl-assets {command}: {problem}", file=sys.stderr)
        return None
    return instance


def failure_reasons(result) -> list[str]:
    """One line per failed step of an in-process run: the object and why it failed."""
    reasons = []
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        if data.user_failure_data and data.user_failure_data.description:
            reasons.append(data.user_failure_data.description)  # names the object, folder, file, line, column
        else:
            reasons.append(f"{event.step_key}: {data.error.message.strip() if data.error else 'failed'}")
    return reasons


def print_table(columns: list[str], rows: list[list[str]]) -> None:
    if not rows:
        return
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    print()
    for row in [columns, *rows]:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))


# The deployment choices each command depends on (a variable they make required must be set).
LOADS = {"ETL_ASSETS_LANDING_ZONE", "ETL_ASSETS_WAREHOUSE", "ETL_ASSETS_EXECUTOR"}
LANDING = {"ETL_ASSETS_LANDING_ZONE"}
WAREHOUSE = {"ETL_ASSETS_WAREHOUSE"}
TOTESYS = {"ETL_ASSETS_WAREHOUSE", "ETL_ASSETS_TOTESYS_SOURCE", "ETL_ASSETS_EXECUTOR"}
TOTESYS_SOURCE = {"ETL_ASSETS_TOTESYS_SOURCE"}


def did_you_mean(name: str, known) -> str:
    suggestion = environment.closest(name, known)
    return f" (did you mean {suggestion}?)" if suggestion else ""


def unknown_objects(names: list[str], catalog) -> None:
    """ConfigurationError naming every object not in the catalog, each with the closest one that is."""
    known = {api.lower() for api in catalog}
    unknown = [name for name in names if name.lower() not in known]
    if unknown:
        raise ConfigurationError("Unknown object(s): " + ", ".join(f"{name}{did_you_mean(name, catalog)}"
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
            ctx.fail(f"No such command {name!r}{did_you_mean(name, self.list_commands(ctx))}")
        return super().resolve_command(ctx, args)


Group.group_class = Group


def run(command, **options) -> int:
    return command(argparse.Namespace(**options))


