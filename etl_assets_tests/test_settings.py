"""The deployment is decided in etl_assets/settings.py, from one reading of the environment, and a
run whose environment disagrees with it fails clearly instead of being silently ignored."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from etl_assets.execution import forkserver_executor
from etl_assets.landing.zone import LandingZone, LocalLandingZone
from etl_assets.settings import (
    CHOICES,
    Deployment,
    Settings,
    build_dry_run_warehouse,
    build_resources,
    build_totesys_source,
    build_warehouse,
    default_executor,
    deploy,
)
from etl_assets.totesys.source import (
    DuckDBTotesysSource,
    PostgresTotesysSource,
    TotesysSource,
)
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets.warehouse.postgres import PostgresWarehouse

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "etl_assets"
CHOICE_VARIABLES = {variable for variable, _, _ in CHOICES.values()}


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """The process environment with no deployment variable set but a scratch warehouse and landing zone."""
    for name in list(os.environ):
        if name.startswith(("ETL_ASSETS_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ETL_ASSETS_DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("ETL_ASSETS_LANDING_ROOT", str(tmp_path / "landing"))
    return monkeypatch


@dg.asset
def probe(context: dg.AssetExecutionContext, warehouse: Warehouse, landing_zone: LandingZone,
          totesys_source: TotesysSource) -> dg.MaterializeResult:
    """What the run's resources hold once Dagster has set them up in the run's process."""
    return dg.MaterializeResult(metadata={"warehouse": type(warehouse).__name__, "path": getattr(warehouse, "path", ""),
                                          "landing_root": getattr(landing_zone, "root", "")})


def code_location() -> dg.Definitions:
    """The deployment as etl_assets/definitions.py loads it (from the process environment), around the probe."""
    return deploy(dg.Definitions(assets=[probe]))


def run(defs: dg.Definitions) -> dg.ExecuteInProcessResult:
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(raise_on_error=False)


def failure(events) -> str:
    """Why a run failed (its events, or an in-process result), with every cause, as its log shows it."""
    text = []
    for event in getattr(events, "all_events", events):
        error = getattr(event.event_specific_data, "error", None) \
            if event.is_failure or event.is_resource_init_failure else None
        while error is not None:
            text.append(error.message)
            error = error.cause
    return "\n".join(text)


def probe_job() -> dg.JobDefinition:
    """The probe's job in whichever process imports it (reconstructable, for a run worker)."""
    job = dg.define_asset_job("probe_job", selection=[probe])
    return dg.Definitions.merge(code_location(), dg.Definitions(jobs=[job])).resolve_job_def("probe_job")


def test_every_choice_is_read_and_validated_in_one_place():
    assert Settings.read({}) == Settings(present=frozenset())
    env = {"ETL_ASSETS_WAREHOUSE": "Postgres", "ETL_ASSETS_LANDING_ZONE": "s3", "ETL_ASSETS_LANDING_BUCKET": "b",
           "ETL_ASSETS_TOTESYS_SOURCE": "postgres", "ETL_ASSETS_EXECUTOR": "celery",
           "ETL_ASSETS_CELERY_BROKER": "redis://b:6379/0", "ETL_ASSETS_CELERY_BACKEND": "redis://b:6379/1",
           "ETL_ASSETS_CELERY_QUEUE": "etl", "ETL_ASSETS_TOTESYS_CRON": "0 * * * *",
           "ETL_ASSETS_TOTESYS_SCHEDULE": "stopped"}
    settings = Settings.read(env)
    assert (settings.warehouse, settings.landing_zone, settings.totesys_source, settings.run_executor,
            settings.celery_queue) == ("postgres", "s3", "postgres", "celery", "etl")

    defs = deploy(env=settings)  # everything the environment decides, from that one reading
    assert isinstance(defs.resources["warehouse"], PostgresWarehouse)
    assert isinstance(defs.resources["totesys_source"], PostgresTotesysSource)
    assert defs.resources["landing_zone"].bucket.env_var_name == "ETL_ASSETS_LANDING_BUCKET"
    assert defs.executor.name == "celery"
    schedule = defs.resolve_schedule_def("totesys_extract_schedule")
    assert (schedule.cron_schedule, schedule.default_status) == ("0 * * * *", dg.DefaultScheduleStatus.STOPPED)

    defaults = deploy(env={})
    assert isinstance(defaults.resources["warehouse"], DuckDBWarehouse)
    assert isinstance(defaults.resources["totesys_source"], DuckDBTotesysSource)
    assert isinstance(defaults.resources["landing_zone"], LocalLandingZone)
    assert defaults.executor is dg.in_process_executor  # auto on the single-writer embedded DuckDB
    assert default_executor(Settings.read({"ETL_ASSETS_WAREHOUSE": "redshift"})) is forkserver_executor
    schedule = defaults.resolve_schedule_def("totesys_extract_schedule")
    assert (schedule.cron_schedule, schedule.default_status) == ("*/5 * * * *", dg.DefaultScheduleStatus.RUNNING)


def test_no_other_module_reads_a_deployment_choice():
    """A newcomer finds the deployment in etl_assets/settings.py: no other module reads a choice's
    variable from an environment (`env.get(...)`, `os.getenv(...)`, `os.environ[...]`); tools that
    start processes may still set them."""
    readers = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "get", "getenv", "pop", "setdefault"):
                names = node.args[:1]
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
                names = [node.slice]
            else:
                continue
            read = {n.value for n in names if isinstance(n, ast.Constant) and n.value in CHOICE_VARIABLES}
            if read:
                readers.setdefault(str(path.relative_to(PACKAGE)), set()).update(read)
    assert readers == {}, f"read outside etl_assets/settings.py (its CHOICES table): {readers}"


def test_the_code_location_reads_the_environment_once():
    script = ("import etl_assets.settings as s\n"
              "calls = []\n"
              "read = s.Settings.read.__func__\n"
              "s.Settings.read = classmethod(lambda cls, env=None: calls.append(env) or read(cls, env))\n"
              "import etl_assets.definitions\n"
              "print(len(calls), calls[0] is None)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["1", "True"]


def test_a_bad_value_names_the_variable_and_the_choices():
    with pytest.raises(ValueError) as raised:
        Settings.read({"ETL_ASSETS_WAREHOUSE": "oracle", "ETL_ASSETS_EXECUTOR": "k8s",
                       "ETL_ASSETS_TOTESYS_SOURCE": "mysql", "ETL_ASSETS_TOTESYS_SCHEDULE": "sometimes",
                       "ETL_ASSETS_TOTESYS_CRON": "every five minutes"})
    message = str(raised.value)
    for expected in ("ETL_ASSETS_WAREHOUSE='oracle': expected one of duckdb, postgres, redshift",
                     "ETL_ASSETS_EXECUTOR='k8s': expected one of multiprocess, in_process, celery, forkserver, auto",
                     "ETL_ASSETS_TOTESYS_SOURCE='mysql': expected one of duckdb, postgres",
                     "ETL_ASSETS_TOTESYS_SCHEDULE='sometimes': expected one of running, stopped",
                     "ETL_ASSETS_TOTESYS_CRON='every five minutes': expected a cron expression"):
        assert expected in message
    with pytest.raises(ValueError, match="ETL_ASSETS_EXECUTOR=celery needs ETL_ASSETS_CELERY_BROKER"):
        Settings.read({"ETL_ASSETS_EXECUTOR": "celery", "ETL_ASSETS_CELERY_BACKEND": "redis://b:6379/1"})

    env = {**os.environ, "ETL_ASSETS_LANDING_ZONE": "ftp"}  # the code location refuses to load
    result = subprocess.run([sys.executable, "-c", "import etl_assets.definitions"], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode != 0
    assert "ETL_ASSETS_LANDING_ZONE='ftp': expected one of local, s3" in result.stderr


def test_values_are_envvars_resolved_when_the_run_starts(clean_env, tmp_path):
    defs = code_location()
    assert defs.resources["warehouse"].path.env_var_name == "ETL_ASSETS_DUCKDB_PATH"
    clean_env.setenv("ETL_ASSETS_DUCKDB_PATH", str(tmp_path / "moved.duckdb"))  # after the code location loaded
    clean_env.setenv("ETL_ASSETS_LANDING_ROOT", str(tmp_path / "elsewhere"))
    result = run(defs)
    assert result.success
    [materialization] = result.asset_materializations_for_node("probe")
    assert materialization.metadata["path"].value == str(tmp_path / "moved.duckdb")
    assert materialization.metadata["landing_root"].value == str(tmp_path / "elsewhere")


@pytest.mark.parametrize("variable, value, loaded", [
    ("ETL_ASSETS_WAREHOUSE", "postgres", "'duckdb'"),
    ("ETL_ASSETS_LANDING_ZONE", "s3", "'local'"),
    ("ETL_ASSETS_TOTESYS_SOURCE", "postgres", "'duckdb'"),
    ("ETL_ASSETS_EXECUTOR", "multiprocess", "'in_process'"),
])
def test_a_run_whose_environment_names_another_choice_fails_saying_to_reload(clean_env, variable, value, loaded):
    defs = code_location()
    clean_env.setenv(variable, value)  # set for the run only, not when the code location loaded
    result = run(defs)
    assert not result.success
    message = failure(result)
    assert f"{variable} gives {value!r} in this run's environment, but the code location loaded with {loaded}" \
        in message
    assert "Reload the code location" in message
    assert not result.asset_materializations_for_node("probe"), "nothing ran on the wrong deployment"


def test_a_value_set_only_for_the_run_is_not_silently_ignored(clean_env, tmp_path):
    clean_env.delenv("ETL_ASSETS_TOTESYS_DUCKDB_PATH", raising=False)
    defs = code_location()  # the totesys source takes its default path
    clean_env.setenv("ETL_ASSETS_TOTESYS_DUCKDB_PATH", str(tmp_path / "totesys.duckdb"))
    result = run(defs)
    assert not result.success
    assert ("ETL_ASSETS_TOTESYS_DUCKDB_PATH is set in this run's environment but was not when the code location "
            "loaded") in failure(result)

    clean_env.delenv("ETL_ASSETS_TOTESYS_DUCKDB_PATH")
    clean_env.setenv("ETL_ASSETS_PG_HOST", "db.internal")  # not a variable this (DuckDB) deployment reads
    assert run(defs).success


RUN_WORKER = """
import sys
import dagster as dg
from dagster._core.execution.api import execute_run
from etl_assets_tests.test_settings import probe_job
with dg.DagsterInstance.get() as instance:
    execute_run(dg.reconstructable(probe_job), instance.get_run_by_id(sys.argv[1]), instance)
"""


def run_elsewhere(clean_env, tmp_path, variable: str, value: str) -> list[dg.DagsterEvent]:
    """Creates the probe's run where the code location loaded with `variable`=`value` (as a code server
    records it in the run's job snapshot) and executes it in a run worker, a process that imports the
    code location itself, whose environment lacks `variable`. The run's events."""
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    clean_env.setenv("DAGSTER_HOME", str(tmp_path))
    clean_env.setenv(variable, value)
    with dg.DagsterInstance.get() as instance:
        run_id = instance.create_run_for_job(job_def=probe_job()).run_id
    worker_env = {name: value for name, value in os.environ.items() if name != variable}
    worker = subprocess.run([sys.executable, "-c", RUN_WORKER, run_id], cwd=REPO, env=worker_env,
                            capture_output=True, text=True, timeout=300)
    assert worker.returncode == 0, worker.stderr
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
        return [entry.dagster_event for entry in instance.all_logs(run_id) if entry.dagster_event]


def test_a_run_worker_whose_environment_names_another_deployment_fails(clean_env, tmp_path):
    """The launcher loaded with PostgreSQL, the run worker with the DuckDB default: that process's own
    reading is consistent, but it is not the run's deployment."""
    events = run_elsewhere(clean_env, tmp_path, "ETL_ASSETS_WAREHOUSE", "postgres")
    message = failure(events)
    assert ("ETL_ASSETS_WAREHOUSE gives 'duckdb' in this run's environment, but the code location loaded "
            "with 'postgres'") in message
    assert "Reload the code location" in message
    assert not [e for e in events if e.is_step_materialization], "nothing ran on the wrong deployment"


def test_a_run_worker_without_a_value_the_launcher_had_fails(clean_env, tmp_path):
    """The launcher read the totesys source's path from its variable; the run worker, without it, would
    silently open the default file instead."""
    events = run_elsewhere(clean_env, tmp_path, "ETL_ASSETS_TOTESYS_DUCKDB_PATH", str(tmp_path / "totesys.duckdb"))
    message = failure(events)
    assert ("ETL_ASSETS_TOTESYS_DUCKDB_PATH was set when the code location loaded but is not in this run's "
            "environment") in message
    assert "Reload the code location" in message
    assert not [e for e in events if e.is_step_materialization], "nothing ran on the wrong deployment"


def test_every_asset_of_the_code_location_checks_the_run_environment_first():
    """`deploy` gives each asset of etl_assets/definitions.py the `deployment` resource (its run-start
    check), so an asset added to a domain cannot run unchecked."""
    from etl_assets.definitions import defs

    assets = [asset for asset in defs.assets if isinstance(asset, dg.AssetsDefinition)]
    assert assets
    unchecked = [asset.key for asset in assets if "deployment" not in asset.required_resource_keys]
    assert unchecked == []
    assert isinstance(defs.resources["deployment"], Deployment)


def test_resources_built_for_an_explicit_environment_are_plain_and_not_checked(clean_env):
    """Tests and tools build resources for a mapping of their own: those are the plain classes."""
    warehouse = build_warehouse({"ETL_ASSETS_WAREHOUSE": "postgres"})
    assert type(warehouse) is PostgresWarehouse
    assert type(build_totesys_source({})) is DuckDBTotesysSource
    clean_env.setenv("ETL_ASSETS_WAREHOUSE", "postgres")
    result = dg.materialize([probe], resources={**build_resources({}), "totesys_source": build_totesys_source({})})
    assert result.success
    # From the process environment the same plain classes: the run check is the `deployment` resource,
    # which every asset of the code location requires (through its hook), and only those.
    assert type(build_warehouse()) is PostgresWarehouse
    assert "deployment" in code_location().resolve_assets_def("probe").required_resource_keys
    assert "deployment" not in probe.required_resource_keys


def test_the_dry_run_warehouse_reads_the_same_variables_but_no_secret():
    env = {"ETL_ASSETS_PG_HOST": "db.internal", "ETL_ASSETS_PG_PASSWORD": "not-a-real-password",
           "ETL_ASSETS_REDSHIFT_WORKGROUP": "etl", "ETL_ASSETS_DUCKDB_PATH": "/srv/warehouse.duckdb"}
    postgres = build_dry_run_warehouse("postgres", env)
    assert (postgres.host, postgres.password) == ("db.internal", "")
    assert build_dry_run_warehouse("duckdb", env).path == "/srv/warehouse.duckdb"
    redshift = build_dry_run_warehouse("redshift", env)
    assert (redshift.workgroup_name, redshift.host, redshift.password) == ("etl", "CLUSTER_ENDPOINT", "")
    with pytest.raises(ValueError, match="expected one of duckdb, postgres, redshift"):
        build_dry_run_warehouse("oracle", env)
