"""Fixtures for real services: the PostgreSQL server on this machine and an S3 API over HTTP.

Nothing here mocks a database. PostgreSQL tests get a database of their own on
the running server (started here if it is down, or the run stops saying how).
S3 tests talk HTTP to moto's server mode, the way production code talks to AWS.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path

import boto3
import psycopg2
import pytest

from etl_assets.samples.salesforce import generate_sample
from etl_assets_tests.live import moto_server

PG_HOST = os.environ.get("ETL_ASSETS_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ETL_ASSETS_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("ETL_ASSETS_TEST_PG_USER", "postgres")
SAMPLE_FOLDERS = 5
SAMPLE_ROWS = 40


def _pg_connect(database: str = "postgres"):
    return psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=database, connect_timeout=3)


def _ensure_postgres() -> None:
    try:
        _pg_connect().close()
        return
    except psycopg2.OperationalError:
        pass
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if versions and shutil.which("pg_ctlcluster"):
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=False, timeout=60
        )
        try:
            _pg_connect().close()
            return
        except psycopg2.OperationalError:
            pass
    pytest.exit(
        f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {PG_USER}. Start it with "
        "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or point "
        "ETL_ASSETS_TEST_PG_HOST/PORT/USER at a server with trust auth.",
        returncode=3,
    )


@pytest.fixture(scope="session")
def postgres_server() -> dict:
    _ensure_postgres()
    return {"host": PG_HOST, "port": PG_PORT, "user": PG_USER}


@contextmanager
def _fresh_database(server: dict, prefix: str):
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    admin = _pg_connect()
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {**server, "database": name}
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def postgres_database(postgres_server):
    """A fresh database on the real server, dropped afterwards."""
    with _fresh_database(postgres_server, "etl_test_") as database:
        yield database


@pytest.fixture
def dagster_storage_database(postgres_server):
    """Another fresh database: a Dagster instance's run, event log and schedule storage (dagster-postgres)."""
    with _fresh_database(postgres_server, "etl_test_dagster_") as database:
        yield database


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API over HTTP (moto's server mode) for the whole session."""
    with moto_server() as endpoint:
        yield endpoint


S3_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A new, empty bucket; returns (client, bucket name)."""
    client = boto3.client("s3", endpoint_url=s3_endpoint, **S3_CREDENTIALS)
    bucket = f"landing-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    """Sample backups generated once per session; copy before changing them."""
    root = tmp_path_factory.mktemp("sample_landing")
    generate_sample(root, folders=SAMPLE_FOLDERS, rows=SAMPLE_ROWS, seed=11)
    return root


@pytest.fixture
def landing_root(sample_root, tmp_path) -> Path:
    """A private, writable copy of the sample landing zone."""
    root = tmp_path / "landing"
    shutil.copytree(sample_root, root)
    return root


def sns_to_sqs(endpoint: str, prefix: str) -> tuple[str, object, str]:
    """A new SNS topic delivering raw messages to a new SQS queue: (topic ARN, SQS client, queue URL)."""
    sns = boto3.client("sns", endpoint_url=endpoint, **S3_CREDENTIALS)
    sqs = boto3.client("sqs", endpoint_url=endpoint, **S3_CREDENTIALS)
    topic = sns.create_topic(Name=f"{prefix}-{uuid.uuid4().hex[:8]}")["TopicArn"]
    queue = sqs.create_queue(QueueName=f"{prefix}-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    return topic, sqs, queue


def upload_tree(client, bucket: str, root: Path, prefix: str = "") -> int:
    count = 0
    for path in sorted(root.rglob("*")):
        key = prefix + path.relative_to(root).as_posix()
        if path.is_dir() and not any(path.iterdir()):
            client.put_object(Bucket=bucket, Key=key + "/", Body=b"")
        elif path.is_file():
            client.upload_file(str(path), bucket, key)
            count += 1
    return count


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request, tmp_path):
    """Each engine a test must hold on: the embedded default (a DuckDB file) and the real PostgreSQL server."""
    from etl_assets.warehouse.duckdb import DuckDBWarehouse
    from etl_assets.warehouse.postgres import PostgresWarehouse

    if request.param == "duckdb":
        return DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))
    database = request.getfixturevalue("postgres_database")
    return PostgresWarehouse(host=database["host"], port=database["port"], user=database["user"],
                             database=database["database"])


@pytest.fixture
def statements(monkeypatch):
    """The SQL of every statement the warehouse's sessions run, in order (COPYs included)."""
    from etl_assets.warehouse.duckdb import DuckDBSession
    from etl_assets.warehouse.postgres import PostgresSession

    ran: list[str] = []
    for cls in (DuckDBSession, PostgresSession):
        for name in ("execute", "fetchall", "copy_files", "copy_rows", "copy_chunks"):
            if name not in vars(cls):
                continue
            original = getattr(cls, name)

            def spy(session, first, *args, _original=original, **kwargs):
                ran.append(first.sql if hasattr(first, "sql") else first)
                return _original(session, first, *args, **kwargs)

            monkeypatch.setattr(cls, name, spy)
    return ran
