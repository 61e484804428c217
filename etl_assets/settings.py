"""The deployment: every choice of where data lives and how runs execute, made here and only here.

`Settings.read()` reads the environment once, when the code location loads
(etl_assets/definitions.py calls `deployment_definitions()`), and validates every choice:

=============================  ==========================================  ================
variable                       choices                                     default
=============================  ==========================================  ================
ETL_ASSETS_WAREHOUSE           duckdb, postgres, redshift                  duckdb
ETL_ASSETS_LANDING_ZONE        local, s3                                   local
ETL_ASSETS_TOTESYS_SOURCE      duckdb, postgres                            duckdb
ETL_ASSETS_EXECUTOR            auto, in_process, forkserver,               auto (below)
                               multiprocess, celery
ETL_ASSETS_CELERY_QUEUE        any queue name (celery executor)            dagster
ETL_ASSETS_TOTESYS_CRON        a cron expression (the schedule)            */5 * * * *
ETL_ASSETS_TOTESYS_SCHEDULE    running, stopped (its default status)       running
=============================  ==========================================  ================

`auto` is in_process on the embedded DuckDB warehouse, forkserver on the others
(etl_assets/execution.py). ETL_ASSETS_EXECUTOR=celery also needs ETL_ASSETS_CELERY_BROKER and
ETL_ASSETS_CELERY_BACKEND, resolved when a run starts.

These pick a resource class, the executor or the schedule, so they are fixed when the code
location loads. Everything else (hosts, ports, paths, users, passwords, buckets) is a value:
the resource field is a `dg.EnvVar` when the variable is set at load, which Dagster resolves
when a run starts, in the run's (or step's) own process; a variable unset at load takes the
default shown beside it in the build_* functions below.

A run whose environment disagrees with what the code location loaded with fails before any
step does work (`DeploymentMismatch`). Every resource built here checks, when Dagster sets it
up for the run (in the run's or step's process):
- that the process's environment still names the same choices and sets no value variable the
  load did not see (which would otherwise be ignored for the default), and
- that the process imported the code location with the same choices and value variables as the
  code location that launched the run (a run worker or Celery worker elsewhere, with another
  environment): the launcher's reading is in the run's job snapshot, as the description of the
  `deployment` resource (also shown on the UI's resources page).
The remedy is to reload the code location (restart `dg dev` or the code server, or Reload in the
UI) with the environment the runs should have, the same wherever runs and steps execute.

`etl-assets sql` builds the warehouse it prints a plan for with `build_dry_run_warehouse`
(the same variables, placeholders where unset, no secret read).
"""

from __future__ import annotations

import contextlib
import json
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass, field

import dagster as dg
from dagster_aws.s3 import S3Resource

from etl_assets.environment import (
    DATA_DIR,
    EXECUTORS,
    LANDING_ZONES,
    SCHEDULE_STATUSES,
    TOTESYS_SOURCES,
    WAREHOUSES,
    ConfigurationError,
)
from etl_assets.execution import CELERY_BACKEND, CELERY_BROKER, executor_for
from etl_assets.landing.zone import LandingZone, LocalLandingZone, S3LandingZone
from etl_assets.notifications import Notifier
from etl_assets.totesys.schedules import DEFAULT_CRON, build_totesys_schedule
from etl_assets.totesys.source import (
    DuckDBTotesysSource,
    PostgresTotesysSource,
    TotesysSource,
)
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets.warehouse.io_manager import WarehouseIOManager
from etl_assets.warehouse.postgres import PostgresWarehouse
from etl_assets.warehouse.redshift import RedshiftWarehouse


# Which variable each load-time choice is read from, its default and its allowed values (None: free text).
CHOICES: dict[str, tuple[str, str, tuple[str, ...] | None]] = {
    "warehouse": ("ETL_ASSETS_WAREHOUSE", "duckdb", WAREHOUSES),
    "landing_zone": ("ETL_ASSETS_LANDING_ZONE", "local", LANDING_ZONES),
    "totesys_source": ("ETL_ASSETS_TOTESYS_SOURCE", "duckdb", TOTESYS_SOURCES),
    "executor": ("ETL_ASSETS_EXECUTOR", "auto", EXECUTORS),
    "celery_queue": ("ETL_ASSETS_CELERY_QUEUE", "dagster", None),
    "totesys_cron": ("ETL_ASSETS_TOTESYS_CRON", DEFAULT_CRON, None),
    "totesys_schedule": ("ETL_ASSETS_TOTESYS_SCHEDULE", "running", SCHEDULE_STATUSES),
}
# The choices a run depends on (the schedule's cron and status only matter to the daemon that ticks it).
RUN_CHOICES = ("warehouse", "landing_zone", "totesys_source", "run_executor", "celery_queue")
# Variables whose presence is remembered at load: ours, and the AWS ones boto3 and our S3 resource read.
PREFIXES = ("ETL_ASSETS_", "AWS_")



def _is_cron(expression: str) -> bool:
    """Whether Dagster accepts `expression` as a schedule's cron (its own check, through the public API)."""
    try:
        dg.ScheduleDefinition(name="cron_check", cron_schedule=expression, job_name="cron_check")
    except dg.DagsterInvalidDefinitionError:
        return False
    return True

class SettingsError(ConfigurationError):
    """A deployment variable holds a value it does not accept (the message names each, and what it accepts)."""


class DeploymentMismatch(RuntimeError):
    """A run's environment names another deployment than the code location loaded with."""


@dataclass(frozen=True)
class Settings:
    """The deployment as read from one environment: the load-time choices, validated, and which
    value variables were set (those become EnvVar fields; the others take their defaults)."""

    warehouse: str = "duckdb"
    landing_zone: str = "local"
    totesys_source: str = "duckdb"
    executor: str = "auto"
    celery_queue: str = "dagster"
    totesys_cron: str = DEFAULT_CRON
    totesys_schedule: str = "running"
    present: frozenset[str] = frozenset()
    # Read from the process environment (the code location's): the resources check each run's.
    checks_runs: bool = False
    # The value variables the resources built from these settings read (filled as they are built).
    consulted: set[str] = field(default_factory=set, compare=False, hash=False, repr=False)

    @classmethod
    def read(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Every choice from `env` (default: the process environment), or a SettingsError naming each
        bad variable and what it accepts."""
        source = os.environ if env is None else env
        values, problems = {}, []
        for name, (variable, default, allowed) in CHOICES.items():
            value = (source.get(variable) or "").strip() or default
            if allowed is not None:
                value = value.lower()
                if value not in allowed:
                    problems.append(f"{variable}={value!r}: expected one of {', '.join(allowed)}")
            values[name] = value
        if not _is_cron(values["totesys_cron"]):
            problems.append(f"ETL_ASSETS_TOTESYS_CRON={values['totesys_cron']!r}: expected a cron expression "
                            "such as '*/5 * * * *'")
        if values["executor"] == "celery":
            missing = [name for name in (CELERY_BROKER, CELERY_BACKEND) if not source.get(name)]
            if missing:
                problems.append(f"ETL_ASSETS_EXECUTOR=celery needs {' and '.join(missing)} "
                                "(e.g. redis://broker.internal:6379/0 for both)")
        if problems:
            raise SettingsError("; ".join(problems))
        present = frozenset(name for name, value in source.items() if value and name.startswith(PREFIXES))
        return cls(**values, present=present, checks_runs=source is os.environ)

    @property
    def run_executor(self) -> str:
        """The executor runs get: ETL_ASSETS_EXECUTOR, or for `auto` the warehouse's best (in_process
        for the single-writer embedded DuckDB, forkserver for a warehouse that takes parallel writers)."""
        if self.executor != "auto":
            return self.executor
        return "in_process" if self.warehouse == "duckdb" else "forkserver"

    # Values: an EnvVar when set at load (resolved by Dagster when a run starts), else the default.

    def value(self, name: str, default=None):
        self.consulted.add(name)
        return dg.EnvVar(name) if name in self.present else default

    def int_value(self, name: str, default: int):
        self.consulted.add(name)
        return dg.EnvVar.int(name) if name in self.present else default

    def required(self, name: str) -> dg.EnvVar:
        """A value with no default: Dagster fails the run start if it is unset then."""
        self.consulted.add(name)
        return dg.EnvVar(name)

    # The run-time check.

    def describe(self) -> str:
        return ", ".join(f"{CHOICES[name][0]}={getattr(self, name)}" for name in CHOICES)

    def mismatches(self, env: Mapping[str, str]) -> list[str]:
        """How the run's environment `env` disagrees with these (load-time) settings."""
        now = Settings.read(env)
        problems = []
        for name in RUN_CHOICES:
            loaded, running = getattr(self, name), getattr(now, name)
            if loaded != running:
                variable = CHOICES["executor" if name == "run_executor" else name][0]
                problems.append(f"{variable} gives {running!r} in this run's environment, "
                                f"but the code location loaded with {loaded!r}")
        for name in sorted(self.consulted & (now.present - self.present)):
            problems.append(f"{name} is set in this run's environment but was not when the code location "
                            "loaded, so the run would ignore it for the default")
        return problems

    def record(self) -> dict:
        """What a run must agree with: the run choices and which of the values read were set."""
        return {**{CHOICES["executor" if name == "run_executor" else name][0]: getattr(self, name)
                   for name in RUN_CHOICES},
                "set": sorted(self.consulted & self.present)}

    def launcher_mismatches(self, launched_with: dict) -> list[str]:
        """How this process's reading differs from the one of the code location that launched the run
        (recorded in the run's job snapshot): a run worker or step process elsewhere, with its own environment."""
        mine, problems = self.record(), []
        for variable, value in launched_with.items():
            if variable != "set" and mine.get(variable) != value:
                problems.append(f"the code location that launched this run loaded with {variable}={value!r}, "
                                f"this process with {mine.get(variable)!r}")
        for name in sorted(set(launched_with.get("set", [])) ^ set(mine["set"])):
            where = "this process" if name in mine["set"] else "the code location that launched this run"
            problems.append(f"{name} was set only where {where} loaded")
        return problems

    def check_run_environment(self, env: Mapping[str, str] | None = None, launched_with: dict | None = None) -> None:
        problems = self.mismatches(os.environ if env is None else env)
        problems += self.launcher_mismatches(launched_with) if launched_with else []
        if problems:
            raise DeploymentMismatch(
                "The deployment is chosen when the code location loads (etl_assets/settings.py), and this "
                f"run's environment differs from it: {'; '.join(problems)}. Reload the code location "
                "(restart `dg dev` or the code server, or Reload in the UI) with the environment the runs "
                "should have, the same wherever runs and steps execute.")

    def resource(self, cls: type, **config):
        """`cls(**config)`; read from the process environment, as a subclass whose setup for a run
        (in the run's or step's process) first checks the run's environment against these settings."""
        if not self.checks_runs:
            return cls(**config)
        return _checked_class(cls, self)(**config)


class _ChecksRunEnvironment:
    """Mixed into the resources the code location's settings build (see `Settings.resource`)."""

    @contextlib.contextmanager
    def yield_for_execution(self, context):
        _LOADED_WITH[type(self)].check_run_environment(launched_with=_launched_with(context))
        with super().yield_for_execution(context) as resource:
            yield resource


DEPLOYMENT_RESOURCE = "deployment"
_RECORD_PREFIX = "Loaded with: "
_SNAPSHOT_RECORDS: dict[str, dict | None] = {}


def _deployment_resource(settings: Settings) -> dg.ResourceDefinition:
    """The `deployment` resource: its description (in the UI, and in every run's job snapshot)
    records what the code location loaded with, for the run's processes to compare."""
    description = ("The deployment this code location loaded with (etl_assets/settings.py). A run whose "
                   "processes read another one fails at its start.\n"
                   f"{_RECORD_PREFIX}{json.dumps(settings.record(), sort_keys=True)}")
    return dg.ResourceDefinition.hardcoded_resource(settings, description)


def _launched_with(context) -> dict | None:
    """The record of the code location that launched the run, from the run's job snapshot."""
    run, instance = getattr(context, "run", None), getattr(context, "instance", None)
    if run is None or instance is None or not run.job_snapshot_id:
        return None
    if run.job_snapshot_id not in _SNAPSHOT_RECORDS:
        record = None
        snapshot = instance.get_job_snapshot(run.job_snapshot_id)
        for mode in snapshot.mode_def_snaps:
            for resource in mode.resource_def_snaps:
                if resource.name == DEPLOYMENT_RESOURCE and _RECORD_PREFIX in (resource.description or ""):
                    record = json.loads(resource.description.split(_RECORD_PREFIX, 1)[1])
        _SNAPSHOT_RECORDS[run.job_snapshot_id] = record
    return _SNAPSHOT_RECORDS[run.job_snapshot_id]


_CHECKED: dict[tuple[type, int], type] = {}
_LOADED_WITH: dict[type, Settings] = {}


def _checked_class(cls: type, settings: Settings) -> type:
    key = (cls, id(settings))
    if key not in _CHECKED:
        checked = types.new_class(cls.__name__, (_ChecksRunEnvironment, cls), exec_body=lambda ns: ns.update(
            __module__=cls.__module__, __qualname__=cls.__qualname__, __doc__=cls.__doc__))
        _CHECKED[key], _LOADED_WITH[checked] = checked, settings
    return _CHECKED[key]


def _settings(env: Settings | Mapping[str, str] | None) -> Settings:
    return env if isinstance(env, Settings) else Settings.read(env)


def build_s3(env: Settings | Mapping[str, str] | None = None) -> S3Resource:
    """dagster-aws' S3Resource; with no keys set, boto3's default credential chain (IAM role, profile)."""
    settings = _settings(env)
    return S3Resource(
        region_name=settings.value("AWS_REGION", "us-east-1"),
        endpoint_url=settings.value("ETL_ASSETS_S3_ENDPOINT_URL"),
        aws_access_key_id=settings.value("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=settings.value("AWS_SECRET_ACCESS_KEY"),
    )


def _postgres_server(settings: Settings, prefix: str, database: str) -> dict:
    """A PostgreSQL server's connection fields from <prefix>HOST (default 127.0.0.1), PORT (5432),
    DATABASE (`database`), USER (postgres) and PASSWORD (empty): the warehouse's ETL_ASSETS_PG_HOST
    and so on, the totesys source's ETL_ASSETS_TOTESYS_PG_HOST and so on."""
    return {
        "host": settings.value(f"{prefix}HOST", "127.0.0.1"),
        "port": settings.int_value(f"{prefix}PORT", 5432),
        "database": settings.value(f"{prefix}DATABASE", database),
        "user": settings.value(f"{prefix}USER", "postgres"),
        "password": settings.value(f"{prefix}PASSWORD", ""),
    }


def build_landing_zone(env: Settings | Mapping[str, str] | None = None) -> LandingZone:
    settings = _settings(env)
    if settings.landing_zone == "s3":
        return settings.resource(
            S3LandingZone,
            s3=build_s3(settings),
            bucket=settings.required("ETL_ASSETS_LANDING_BUCKET"),
            prefix=settings.value("ETL_ASSETS_LANDING_PREFIX", ""),
        )
    return settings.resource(LocalLandingZone,
                             root=settings.value("ETL_ASSETS_LANDING_ROOT", str(DATA_DIR / "landing")))


def build_warehouse(env: Settings | Mapping[str, str] | None = None) -> Warehouse:
    settings = _settings(env)
    if settings.warehouse == "redshift":
        return settings.resource(
            RedshiftWarehouse,
            connection=settings.value("ETL_ASSETS_REDSHIFT_CONNECTION", "psycopg2"),
            host=settings.value("ETL_ASSETS_REDSHIFT_HOST", ""),
            port=settings.int_value("ETL_ASSETS_REDSHIFT_PORT", 5439),
            database=settings.value("ETL_ASSETS_REDSHIFT_DATABASE", "dev"),
            user=settings.value("ETL_ASSETS_REDSHIFT_USER", ""),
            password=settings.value("ETL_ASSETS_REDSHIFT_PASSWORD", ""),
            cluster_identifier=settings.value("ETL_ASSETS_REDSHIFT_CLUSTER_IDENTIFIER", ""),
            workgroup_name=settings.value("ETL_ASSETS_REDSHIFT_WORKGROUP", ""),
            secret_arn=settings.value("ETL_ASSETS_REDSHIFT_SECRET_ARN", ""),
            db_user=settings.value("ETL_ASSETS_REDSHIFT_DB_USER", ""),
            region_name=settings.value("AWS_REGION", "us-east-1"),
            data_api_endpoint_url=settings.value("ETL_ASSETS_REDSHIFT_DATA_API_ENDPOINT_URL", ""),
            s3=build_s3(settings),
            staging_bucket=settings.required("ETL_ASSETS_REDSHIFT_STAGING_BUCKET"),
            staging_prefix=settings.value("ETL_ASSETS_REDSHIFT_STAGING_PREFIX", "etl_assets/staging"),
            iam_role_arn=settings.required("ETL_ASSETS_REDSHIFT_IAM_ROLE_ARN"),
        )
    if settings.warehouse == "postgres":
        return settings.resource(PostgresWarehouse, **_postgres_server(settings, "ETL_ASSETS_PG_", "postgres"))
    return settings.resource(DuckDBWarehouse,
                             path=settings.value("ETL_ASSETS_DUCKDB_PATH", str(DATA_DIR / "warehouse.duckdb")))


def build_notifier(env: Settings | Mapping[str, str] | None = None) -> Notifier:
    """SNS when ETL_ASSETS_SNS_TOPIC_ARN is set; otherwise notifications go to the run log."""
    settings = _settings(env)
    return settings.resource(
        Notifier,
        topic_arn=settings.value("ETL_ASSETS_SNS_TOPIC_ARN", ""),
        region_name=settings.value("AWS_REGION", "us-east-1"),
        endpoint_url=settings.value("ETL_ASSETS_SNS_ENDPOINT_URL", ""),
        # The same identity as the S3 resource (unset: boto3's default chain, an IAM role in production).
        aws_access_key_id=settings.value("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=settings.value("AWS_SECRET_ACCESS_KEY"),
    )


def build_totesys_source(env: Settings | Mapping[str, str] | None = None) -> TotesysSource:
    """The totesys OLTP source: the embedded DuckDB file (default) or the PostgreSQL server."""
    settings = _settings(env)
    if settings.totesys_source == "postgres":
        return settings.resource(PostgresTotesysSource,
                                 **_postgres_server(settings, "ETL_ASSETS_TOTESYS_PG_", "totesys"))
    return settings.resource(
        DuckDBTotesysSource,
        path=settings.value("ETL_ASSETS_TOTESYS_DUCKDB_PATH", str(DATA_DIR / "totesys.duckdb")))


def build_resources(env: Settings | Mapping[str, str] | None = None) -> dict:
    """The shared resources for the environment: landing zone, warehouse (and its IO manager), notifier."""
    settings = _settings(env)
    warehouse, notifier = build_warehouse(settings), build_notifier(settings)
    return {
        "landing_zone": build_landing_zone(settings),
        "warehouse": warehouse,
        "warehouse_io_manager": settings.resource(WarehouseIOManager, warehouse=warehouse, notifier=notifier),
        "notifier": notifier,
    }


def deployment_definitions(env: Settings | Mapping[str, str] | None = None) -> dg.Definitions:
    """Everything of the code location the environment decides: resources (the totesys source and
    dbt, whose profile target is the warehouse chosen here), the executor and the totesys schedule."""
    from dagster_dbt import DbtCliResource

    from etl_assets.dbt_project.project import dbt_executable, dbt_project

    settings = _settings(env)
    resources = {**build_resources(settings), "totesys_source": build_totesys_source(settings),
                 "dbt": settings.resource(DbtCliResource, project_dir=dbt_project, dbt_executable=dbt_executable(),
                                          target=settings.warehouse)}
    return dg.Definitions(
        resources={**resources, DEPLOYMENT_RESOURCE: _deployment_resource(settings)},  # after every value is read
        executor=executor_for(settings.run_executor, settings.celery_queue),
        schedules=[build_totesys_schedule(settings.totesys_cron, settings.totesys_schedule)],
    )


def build_dry_run_warehouse(target: str, env: Mapping[str, str] | None = None) -> Warehouse:
    """The warehouse `etl-assets sql --target` prints a plan for: the same variables as
    `build_warehouse`, read as plain values with placeholders where unset. Nothing connects, and
    no password, key or secret is read."""
    get = (os.environ if env is None else env).get
    if target == "duckdb":
        return DuckDBWarehouse(path=get("ETL_ASSETS_DUCKDB_PATH") or str(DATA_DIR / "warehouse.duckdb"))
    if target == "postgres":
        return PostgresWarehouse(host=get("ETL_ASSETS_PG_HOST") or "127.0.0.1",
                                 user=get("ETL_ASSETS_PG_USER") or "postgres",
                                 database=get("ETL_ASSETS_PG_DATABASE") or "postgres")
    if target != "redshift":
        raise ValueError(f"target {target!r}: expected one of {', '.join(WAREHOUSES)}")
    return RedshiftWarehouse(
        connection=get("ETL_ASSETS_REDSHIFT_CONNECTION") or "psycopg2",
        host=get("ETL_ASSETS_REDSHIFT_HOST") or "CLUSTER_ENDPOINT",
        database=get("ETL_ASSETS_REDSHIFT_DATABASE") or "dev",
        user=get("ETL_ASSETS_REDSHIFT_USER") or "USER",
        workgroup_name=get("ETL_ASSETS_REDSHIFT_WORKGROUP") or "",
        cluster_identifier=get("ETL_ASSETS_REDSHIFT_CLUSTER_IDENTIFIER") or "",
        s3=S3Resource(),
        staging_bucket=get("ETL_ASSETS_REDSHIFT_STAGING_BUCKET") or "STAGING_BUCKET",
        staging_prefix=get("ETL_ASSETS_REDSHIFT_STAGING_PREFIX") or "etl_assets/staging",
        iam_role_arn=get("ETL_ASSETS_REDSHIFT_IAM_ROLE_ARN") or "arn:aws:iam::123456789012:role/COPY_ROLE",
    )


def build_executor(env: Mapping[str, str] | None = None) -> dg.ExecutorDefinition | None:
    """The executor ETL_ASSETS_EXECUTOR names, `multiprocess` when unset (not chosen by the warehouse)."""
    settings = Settings.read(env)
    return None if settings.executor == "auto" else executor_for(settings.run_executor, settings.celery_queue)


def default_executor(env: Settings | Mapping[str, str] | None = None) -> dg.ExecutorDefinition | None:
    """The code location's executor: ETL_ASSETS_EXECUTOR when set, else the warehouse's best
    (in_process for the single-writer embedded DuckDB, forkserver for a warehouse that takes
    parallel writers)."""
    settings = _settings(env)
    return executor_for(settings.run_executor, settings.celery_queue)
