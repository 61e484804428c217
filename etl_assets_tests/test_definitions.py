"""The code location as the UI and `dagster dev` load it."""

import subprocess
import sys

import dagster as dg
import pytest

from etl_assets.landing.zone import LocalLandingZone, S3LandingZone
from etl_assets.salesforce.catalog import load_catalog
from etl_assets.settings import build_landing_zone, build_resources, build_warehouse
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets.warehouse.postgres import PostgresWarehouse


def test_code_location_loads_without_any_warning():
    result = subprocess.run(
        # dagster-dbt requires sqlglot[rs], whose sqlglotrs module warns about itself on import.
        [sys.executable, "-W", "error", "-W", "ignore::DeprecationWarning:sqlglotrs", "-c",
         "import dagster as dg; from etl_assets.definitions import defs; dg.Definitions.validate_loadable(defs)"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr


def test_one_documented_partitioned_asset_with_checks_per_catalog_object():
    from etl_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    catalog = load_catalog()
    expected = {dg.AssetKey(["salesforce", api.lower()]) for api in catalog}
    assert expected <= set(graph.get_all_asset_keys())
    for key in expected:
        node = graph.get(key)
        assert node.group_name == catalog[next(a for a in catalog if a.lower() == key.path[-1])].group
        assert node.partitions_def.name == "salesforce_differential_folders"
        assert node.description and node.owners == ["team:data-engineering"]
        assert {"salesforce", "pandas"} <= set(node.kinds)
        assert node.pools == {"warehouse"}
        checks = {c.name for c in graph.get_check_keys_for_assets([key])}
        assert checks == {"no_schema_drift", "no_rejected_rows", "no_truncated_values"}
    assert defs.resolve_sensor_def("salesforce_backup_sensor").description
    assert defs.resolve_job_def("salesforce_backup_job").description


def test_environment_picks_the_backends_and_reads_secrets_through_envvar():
    assert isinstance(build_landing_zone({}), LocalLandingZone)
    assert isinstance(build_warehouse({}), DuckDBWarehouse)
    env = {
        "ETL_ASSETS_LANDING_ZONE": "s3", "ETL_ASSETS_LANDING_BUCKET": "b",
        "ETL_ASSETS_WAREHOUSE": "postgres", "ETL_ASSETS_PG_PASSWORD": "hunter2-not-real",
    }
    zone, warehouse = build_landing_zone(env), build_warehouse(env)
    assert isinstance(zone, S3LandingZone) and isinstance(warehouse, PostgresWarehouse)
    assert isinstance(warehouse.password, dg.EnvVar) and warehouse.password.env_var_name == "ETL_ASSETS_PG_PASSWORD"
    assert "hunter2" not in repr(build_resources(env))


def test_an_unknown_backend_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"ETL_ASSETS_WAREHOUSE='oracle': expected one of duckdb, postgres"):
        build_warehouse({"ETL_ASSETS_WAREHOUSE": "oracle"})


def test_the_code_location_shows_the_deployment_it_loaded_with():
    """The UI's resources page names where the deployment is chosen and what it is (no values, only choices)."""
    from etl_assets.definitions import defs
    from etl_assets.settings import Settings

    description = defs.get_repository_def().get_top_level_resources()["deployment"].description
    assert "etl_assets/settings.py" in description
    settings, deployment = Settings.read(), defs.resources["deployment"]  # its config: choices and names
    assert (deployment.warehouse, deployment.executor) == (settings.warehouse, settings.run_executor)
    assert "AWS_REGION" in deployment.variables_read  # the notifier reads it on every deployment
    assert set(deployment.variables_set) <= set(deployment.variables_read)
    assert all(name.startswith(("ETL_ASSETS_", "AWS_")) for name in deployment.variables_read)  # names, not values
