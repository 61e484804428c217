"""The deployment: every choice of where data lives and how runs execute, made here and only here.

`Settings.read()` reads the environment once, when the code location loads
(etl_assets/definitions.py calls `deploy(...)`), and validates every choice:

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
location loads. Everything else (hosts, ports, paths, users, passwords, buckets) is a value: a
`dg.EnvVar` when its variable is set, resolved by Dagster when a run starts, in the run's (or
step's) own process; unset, the default beside it below (Dagster fails a run on an EnvVar whose
variable is unset, so a value with a default is one only when set).

The `deployment` resource (`Deployment`, shown on the UI's resources page) is what the code
location loaded with: the run choices, and which value variables its resources read were set
(names, never values). `deploy` makes every asset's step set it up, and its setup compares the
run's environment, read by the same `Settings.read`, with the `deployment` of the code location
that launched the run (as Dagster keeps it with the run): a difference fails the run before any
step does work (`DeploymentMismatch`), naming each variable. The remedy is to reload the code
location (restart `dg dev` or the code server, or Reload in the UI) with the environment the runs
should have, the same wherever runs and steps execute.

`etl-assets sql` builds the warehouse it prints a plan for with `build_dry_run_warehouse`
(the same variables, placeholders where unset, no secret read).
"""

from __future__ import annotations

import json
import os
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
RUN_CHOICES = ("warehouse", "landing_zone", "totesys_source", "executor", "celery_queue")
# Variables whose presence is remembered at load: ours, and the AWS ones boto3 and our S3 resource read.
PREFIXES = ("ETL_ASSETS_", "AWS_")
DEPLOYMENT = "deployment"


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
    """A run's environment names another deployment than the code location that launched it loaded with."""


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
        return cls(**values, present=present)

    @property
    def run_executor(self) -> str:
        """The executor runs get: ETL_ASSETS_EXECUTOR, or for `auto` the warehouse's best (in_process
        for the single-writer embedded DuckDB, forkserver for a warehouse that takes parallel writers)."""
        if self.executor != "auto":
            return self.executor
        return "in_process" if self.warehouse == "duckdb" else "forkserver"

    def value(self, name: str, default=None):
        """An EnvVar when `name` is set (resolved by Dagster when a run starts), else the default."""
        self.consulted.add(name)
        return dg.EnvVar(name) if name in self.present else default

    def int_value(self, name: str, default: int):
        self.consulted.add(name)
        return dg.EnvVar.int(name) if name in self.present else default

    def required(self, name: str) -> dg.EnvVar:
        """A value with no default: Dagster fails the run start if it is unset then."""
        self.consulted.add(name)
        return dg.EnvVar(name)

    def deployment(self, read: set[str] | None = None) -> Deployment:
        """What a run must agree with: the run choices, and which of the value variables `read`
        (default: those the resources built from these settings read) are set."""
        read = self.consulted if read is None else read
        return Deployment(**{name: getattr(self, name) for name in RUN_CHOICES if name != "executor"},
                          executor=self.run_executor, variables_read=sorted(read),
                          variables_set=sorted(read & self.present))


class Deployment(dg.ConfigurableResource):
    """The deployment this code location loaded with (etl_assets/settings.py): its choices, and which of
    the variables its resources read were set. A run whose environment gives another fails at its start."""

    warehouse: str
    landing_zone: str
    totesys_source: str
    executor: str
    celery_queue: str
    variables_read: list[str]
    variables_set: list[str]

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """The run-start check: the run's environment against the code location that launched the run."""
        launched = _launched_with(context) or self
        problems = launched.differences(Settings.read().deployment(set(launched.variables_read)))
        if problems:
            raise DeploymentMismatch(
                "The deployment is chosen when the code location loads (etl_assets/settings.py), and this "
                f"run's environment differs from it: {'; '.join(problems)}. Reload the code location "
                "(restart `dg dev` or the code server, or Reload in the UI) with the environment the runs "
                "should have, the same wherever runs and steps execute.")

    def differences(self, run: Deployment) -> list[str]:
        """How `run` (read from a run's environment) disagrees with this deployment (the code location's)."""
        problems = [f"{CHOICES[name][0]} gives {getattr(run, name)!r} in this run's environment, but the code "
                    f"location loaded with {getattr(self, name)!r}"
                    for name in RUN_CHOICES if getattr(run, name) != getattr(self, name)]
        problems += [f"{name} is set in this run's environment but was not when the code location loaded, so "
                     "the run would ignore it for the default"
                     for name in sorted(set(run.variables_set) - set(self.variables_set))]
        problems += [f"{name} was set when the code location loaded but is not in this run's environment"
                     for name in sorted(set(self.variables_set) - set(run.variables_set))]
        return problems


def _launched_with(context: dg.InitResourceContext) -> Deployment | None:
    """The `deployment` resource as the code location that created the run built it: Dagster keeps that
    code location's job snapshot with the run, and a resource's configuration there is its defaults."""
    run, instance = context.run, context.instance
    if run is None or instance is None or not run.job_snapshot_id:
        return None
    for mode in instance.get_job_snapshot(run.job_snapshot_id).mode_def_snaps:
        for resource in mode.resource_def_snaps:
            config = resource.config_field_snap
            if resource.name == DEPLOYMENT and config is not None and config.default_provided:
                return Deployment(**json.loads(config.default_value_as_json_str))
    return None


@dg.success_hook(required_resource_keys={DEPLOYMENT})
def on_the_deployment(_context: dg.HookContext) -> None:
    """Does nothing itself: requiring the `deployment` resource makes every step it is attached to set
    that resource up before the step runs, and its setup is the run-start check."""


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
        return S3LandingZone(s3=build_s3(settings), bucket=settings.required("ETL_ASSETS_LANDING_BUCKET"),
                             prefix=settings.value("ETL_ASSETS_LANDING_PREFIX", ""))
    return LocalLandingZone(root=settings.value("ETL_ASSETS_LANDING_ROOT", str(DATA_DIR / "landing")))


def build_warehouse(env: Settings | Mapping[str, str] | None = None) -> Warehouse:
    settings = _settings(env)
    if settings.warehouse == "redshift":
        return RedshiftWarehouse(
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
        return PostgresWarehouse(**_postgres_server(settings, "ETL_ASSETS_PG_", "postgres"))
    return DuckDBWarehouse(path=settings.value("ETL_ASSETS_DUCKDB_PATH", str(DATA_DIR / "warehouse.duckdb")))


def build_notifier(env: Settings | Mapping[str, str] | None = None) -> Notifier:
    """SNS when ETL_ASSETS_SNS_TOPIC_ARN is set; otherwise notifications go to the run log."""
    settings = _settings(env)
    return Notifier(
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
        return PostgresTotesysSource(**_postgres_server(settings, "ETL_ASSETS_TOTESYS_PG_", "totesys"))
    return DuckDBTotesysSource(path=settings.value("ETL_ASSETS_TOTESYS_DUCKDB_PATH", str(DATA_DIR / "totesys.duckdb")))


def build_resources(env: Settings | Mapping[str, str] | None = None) -> dict:
    """The shared resources for the environment: landing zone, warehouse (and its IO manager), notifier."""
    settings = _settings(env)
    warehouse, notifier = build_warehouse(settings), build_notifier(settings)
    return {
        "landing_zone": build_landing_zone(settings),
        "warehouse": warehouse,
        "warehouse_io_manager": WarehouseIOManager(warehouse=warehouse, notifier=notifier),
        "notifier": notifier,
    }


def deploy(*domains: dg.Definitions, env: Settings | Mapping[str, str] | None = None) -> dg.Definitions:
    """The code location: the domains' definitions on the deployment `env` (default: the process
    environment) chooses, with its resources (dbt's profile target is the warehouse chosen here),
    executor and totesys schedule; every asset's step sets up the `deployment` resource first."""
    from etl_assets.dbt_project.project import DbtCli, dbt_executable, dbt_project

    settings = _settings(env)
    resources = {**build_resources(settings), "totesys_source": build_totesys_source(settings),
                 "dbt": DbtCli(project_dir=dbt_project, dbt_executable=dbt_executable(),
                               target=settings.warehouse)}
    defs = dg.Definitions.merge(*domains, dg.Definitions(
        resources={**resources, DEPLOYMENT: settings.deployment()},  # after every value is read
        executor=executor_for(settings.run_executor, settings.celery_queue),
        schedules=[build_totesys_schedule(settings.totesys_cron, settings.totesys_schedule)],
    ))
    return dg.Definitions(
        assets=[asset.with_hooks({on_the_deployment}) if isinstance(asset, dg.AssetsDefinition) else asset
                for asset in defs.assets or []],
        asset_checks=defs.asset_checks, jobs=defs.jobs, schedules=defs.schedules, sensors=defs.sensors,
        resources=defs.resources, executor=defs.executor, loggers=defs.loggers, metadata=defs.metadata,
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
