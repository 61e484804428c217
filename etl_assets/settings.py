"""Resources shared by every domain: the landing zone and the warehouse."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource

from etl_assets.landing.zone import LandingZone, LocalLandingZone, S3LandingZone
from etl_assets.notifications import Notifier
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets.warehouse.io_manager import WarehouseIOManager
from etl_assets.warehouse.postgres import PostgresWarehouse
from etl_assets.warehouse.redshift import RedshiftWarehouse

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = PROJECT_ROOT / "data"

LANDING_ZONES = ("local", "s3")
WAREHOUSES = ("duckdb", "postgres", "redshift")


def _setting(env: Mapping[str, str], name: str, default=None):
    """An EnvVar when the variable is set (so Dagster reads it at run time), else the default."""
    return dg.EnvVar(name) if env.get(name) else default


def _int_setting(env: Mapping[str, str], name: str, default: int):
    return dg.EnvVar.int(name) if env.get(name) else default


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, default).lower()
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
    return value


def build_s3(env: Mapping[str, str] = os.environ) -> S3Resource:
    """dagster-aws' S3Resource; with no keys set, boto3's default credential chain (IAM role, profile)."""
    return S3Resource(
        region_name=_setting(env, "AWS_REGION", "us-east-1"),
        endpoint_url=_setting(env, "ETL_ASSETS_S3_ENDPOINT_URL"),
        aws_access_key_id=_setting(env, "AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=_setting(env, "AWS_SECRET_ACCESS_KEY"),
    )


def build_landing_zone(env: Mapping[str, str] = os.environ) -> LandingZone:
    if _choice(env, "ETL_ASSETS_LANDING_ZONE", "local", LANDING_ZONES) == "s3":
        return S3LandingZone(
            s3=build_s3(env),
            bucket=dg.EnvVar("ETL_ASSETS_LANDING_BUCKET"),
            prefix=_setting(env, "ETL_ASSETS_LANDING_PREFIX", ""),
        )
    return LocalLandingZone(root=_setting(env, "ETL_ASSETS_LANDING_ROOT", str(DATA_DIR / "landing")))


def build_warehouse(env: Mapping[str, str] = os.environ) -> Warehouse:
    target = _choice(env, "ETL_ASSETS_WAREHOUSE", "duckdb", WAREHOUSES)
    if target == "redshift":
        return RedshiftWarehouse(
            connection=_setting(env, "ETL_ASSETS_REDSHIFT_CONNECTION", "psycopg2"),
            host=_setting(env, "ETL_ASSETS_REDSHIFT_HOST", ""),
            port=_int_setting(env, "ETL_ASSETS_REDSHIFT_PORT", 5439),
            database=_setting(env, "ETL_ASSETS_REDSHIFT_DATABASE", "dev"),
            user=_setting(env, "ETL_ASSETS_REDSHIFT_USER", ""),
            password=_setting(env, "ETL_ASSETS_REDSHIFT_PASSWORD", ""),
            cluster_identifier=_setting(env, "ETL_ASSETS_REDSHIFT_CLUSTER_IDENTIFIER", ""),
            workgroup_name=_setting(env, "ETL_ASSETS_REDSHIFT_WORKGROUP", ""),
            secret_arn=_setting(env, "ETL_ASSETS_REDSHIFT_SECRET_ARN", ""),
            db_user=_setting(env, "ETL_ASSETS_REDSHIFT_DB_USER", ""),
            region_name=_setting(env, "AWS_REGION", "us-east-1"),
            data_api_endpoint_url=_setting(env, "ETL_ASSETS_REDSHIFT_DATA_API_ENDPOINT_URL", ""),
            s3=build_s3(env),
            staging_bucket=dg.EnvVar("ETL_ASSETS_REDSHIFT_STAGING_BUCKET"),
            staging_prefix=_setting(env, "ETL_ASSETS_REDSHIFT_STAGING_PREFIX", "etl_assets/staging"),
            iam_role_arn=dg.EnvVar("ETL_ASSETS_REDSHIFT_IAM_ROLE_ARN"),
        )
    if target == "postgres":
        return PostgresWarehouse(
            host=_setting(env, "ETL_ASSETS_PG_HOST", "127.0.0.1"),
            port=_int_setting(env, "ETL_ASSETS_PG_PORT", 5432),
            database=_setting(env, "ETL_ASSETS_PG_DATABASE", "postgres"),
            user=_setting(env, "ETL_ASSETS_PG_USER", "postgres"),
            password=_setting(env, "ETL_ASSETS_PG_PASSWORD", ""),
        )
    return DuckDBWarehouse(path=_setting(env, "ETL_ASSETS_DUCKDB_PATH", str(DATA_DIR / "warehouse.duckdb")))


def build_resources(env: Mapping[str, str] = os.environ) -> dict:
    """The resources for the environment: the one place deployment is decided."""
    warehouse, notifier = build_warehouse(env), build_notifier(env)
    return {
        "landing_zone": build_landing_zone(env),
        "warehouse": warehouse,
        "warehouse_io_manager": WarehouseIOManager(warehouse=warehouse, notifier=notifier),
        "notifier": notifier,
    }


def build_notifier(env: Mapping[str, str] = os.environ) -> Notifier:
    """SNS when ETL_ASSETS_SNS_TOPIC_ARN is set; otherwise notifications go to the run log."""
    return Notifier(
        topic_arn=_setting(env, "ETL_ASSETS_SNS_TOPIC_ARN", ""),
        region_name=_setting(env, "AWS_REGION", "us-east-1"),
        endpoint_url=_setting(env, "ETL_ASSETS_SNS_ENDPOINT_URL", ""),
    )
