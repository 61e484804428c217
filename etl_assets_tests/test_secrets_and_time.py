"""Secrets never leak; timestamps round-trip as UTC on every target.

Secrets: a dedicated PostgreSQL role with a known fake password, passed only as
ETL_ASSETS_PG_PASSWORD (read through dagster.EnvVar), runs a failing load (the
role may not create the schema) and a succeeding one through `etl-assets
materialize` in subprocesses on a persistent DAGSTER_HOME. The password appears
in no file of the instance (run and event-log sqlite databases, compute logs),
no stdout/stderr, no event message or metadata, and not in `etl-assets sql`.
(The audit table is checked once it exists; see the README's Reliability section.)

Time zones: offsets, DST edges, microseconds and zone-less values load as the
same UTC instants into DuckDB, PostgreSQL and through the Redshift plan (executed
on PostgreSQL), with the sessions set to non-UTC time zones.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
from dagster_aws.s3 import S3Resource

from etl_assets.aws import aws_client
from etl_assets.salesforce.catalog import load_catalog
from etl_assets.salesforce.staging import SourceFile, stage_object
from etl_assets.samples.salesforce import salesforce_id
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets.warehouse.postgres import PostgresWarehouse
from etl_assets.warehouse.redshift import RedshiftWarehouse
from etl_assets_tests.conftest import S3_CREDENTIALS
from etl_assets_tests.helpers import folders_in
from etl_assets_tests.test_faults import assert_failed_once_without_retry
from etl_assets_tests.test_redshift import run_plan_on_postgres

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
UTC = dt.timezone.utc


def admin(database: dict, dbname: str | None = None):
    connection = psycopg2.connect(host=database["host"], port=database["port"], user=database["user"],
                                  dbname=dbname or database["database"])
    connection.autocommit = True
    return connection


@pytest.fixture
def secret_role(postgres_database):
    role, password = f"etl_secret_{uuid.uuid4().hex[:8]}", f"fake-pw-{uuid.uuid4().hex}"
    connection = admin(postgres_database)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", [password])
        cursor.execute(f'GRANT CREATE ON DATABASE "{postgres_database["database"]}" TO {role}')
        cursor.execute("CREATE SCHEMA salesforce")  # owned by postgres: the role may not create tables in it yet
    connection.close()
    yield role, password
    connection = admin(postgres_database, "postgres")
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{postgres_database["database"]}" WITH (FORCE)')
        cursor.execute(f"DROP ROLE IF EXISTS {role}")
    connection.close()


def test_the_password_appears_in_no_log_metadata_error_or_sql_output(postgres_database, secret_role, landing_root,
                                                                      tmp_path):
    role, password = secret_role
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.local.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "ETL_ASSETS_WAREHOUSE": "postgres",
           "ETL_ASSETS_LANDING_ZONE": "local", "ETL_ASSETS_LANDING_ROOT": str(landing_root),
           "ETL_ASSETS_PG_HOST": postgres_database["host"], "ETL_ASSETS_PG_PORT": str(postgres_database["port"]),
           "ETL_ASSETS_PG_DATABASE": postgres_database["database"], "ETL_ASSETS_PG_USER": role,
           "ETL_ASSETS_PG_PASSWORD": password}
    folder = next(f for f in folders_in(landing_root) if (landing_root / "backup" / f / "Task").is_dir())
    command = [str(BIN / "etl-assets"), "materialize", "--folder", folder, "--object", "Task", "--log-level", "DEBUG"]

    failing = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert failing.returncode == 1
    with admin(postgres_database) as connection, connection.cursor() as cursor:
        cursor.execute(f"GRANT ALL ON SCHEMA salesforce TO {role}")
    succeeding = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert succeeding.returncode == 0, succeeding.stderr
    sql = subprocess.run([str(BIN / "etl-assets"), "sql", "--target", "postgres", "--object", "Task"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert sql.returncode == 0

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_run_records()
        assert sorted(r.dagster_run.status.value for r in runs) == ["FAILURE", "SUCCESS"]
        # A refused statement is not retried: one attempt, no STEP_UP_FOR_RETRY, the deliberate
        # dg.Failure naming the warehouse and PostgreSQL's refusal (the run's events, not its duration).
        [failed] = [r.dagster_run.run_id for r in runs if r.dagster_run.status == dg.DagsterRunStatus.FAILURE]
        failure = assert_failed_once_without_retry(instance, failed)
        message = str(failure.step_failure_data.error)
        assert f"postgresql://{role}@{postgres_database['host']}:{postgres_database['port']}/" in message
        assert "salesforce.task was not loaded, and retrying cannot help" in message  # a privilege: CannotWrite
        assert "permission denied for schema salesforce" in message
        texts = []
        for record in runs:
            for entry in instance.all_logs(record.dagster_run.run_id):
                texts.append(entry.user_message or "")
                event = entry.dagster_event
                if event is not None:
                    texts.append(repr(event.event_specific_data))
        events = "\n".join(texts)
    assert "permission denied for schema salesforce" in events, "the failing load's error reached the event log"
    assert f"postgresql://{role}@" in events, "the scan sees what the run recorded (the user name is in metadata)"
    assert password not in events

    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files) and any("compute_logs" in str(p) or "storage" in str(p)
                                                         for p in files)
    leaks = [str(p) for p in files if password.encode() in p.read_bytes()]
    assert leaks == [], f"password found in {leaks}"
    for output in (failing, succeeding, sql):
        assert password not in output.stdout + output.stderr
    assert "permission denied" in failing.stdout + failing.stderr or "FAILED" in failing.stdout + failing.stderr

    with admin(postgres_database) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status, error, source_key, target_table, run_id FROM etl_audit.loads")
        audit = cursor.fetchall()
    assert {row[0] for row in audit} == {"FAILED", "FINISHED"}, "both loads are in the audit table"
    assert password not in repr(audit)


STAMPS = {  # as written in the CSV -> the UTC instant it is
    "2024-03-31T01:30:00.000+02:00": dt.datetime(2024, 3, 30, 23, 30, tzinfo=UTC),  # DST starts in Europe
    "2024-10-27T02:30:00.000+01:00": dt.datetime(2024, 10, 27, 1, 30, tzinfo=UTC),  # DST ends
    "2024-05-01T10:00:00.000Z": dt.datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
    "2024-05-01T10:00:00": dt.datetime(2024, 5, 1, 10, 0, tzinfo=UTC),  # no offset: UTC by rule
    "2024-12-31T23:59:59.999999-05:00": dt.datetime(2025, 1, 1, 4, 59, 59, 999999, tzinfo=UTC),
    "2024-07-01T00:00:00+05:30": dt.datetime(2024, 6, 30, 18, 30, tzinfo=UTC),
}


def staged_stamps(tmp_path: Path, obj=None):
    keys = {salesforce_id("00T", 500 + i): text for i, text in enumerate(STAMPS)}
    path = tmp_path / "stamps.csv"
    path.write_text("Id,IsDeleted,SystemModstamp\n" + "".join(f"{k},false,{v}\n" for k, v in keys.items()))
    batch, report = stage_object(obj or load_catalog()["Task"], [SourceFile("stamps.csv", path)], "P")
    assert report.rows_rejected == 0
    return batch, {k: STAMPS[v] for k, v in keys.items()}


def as_utc(value) -> dt.datetime:
    value = value.to_pydatetime() if hasattr(value, "to_pydatetime") else value
    assert value.tzinfo is not None, "timestamps come back zone-aware"
    return value.astimezone(UTC)


def test_timestamps_round_trip_as_utc_on_duckdb_postgres_and_the_redshift_path(tmp_path, postgres_database,
                                                                               s3_endpoint, s3_bucket, monkeypatch):
    with admin(postgres_database) as connection, connection.cursor() as cursor:
        cursor.execute(f'ALTER DATABASE "{postgres_database["database"]}" SET timezone TO \'Asia/Kolkata\'')
    monkeypatch.setenv("TZ", "America/New_York")  # DuckDB's session time zone follows the process's
    time.tzset()
    try:
        duck = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
        batch, expected = staged_stamps(tmp_path)
        duck.load(batch)
        got = duck.read_table("salesforce", "task")
        assert {k: as_utc(v) for k, v in zip(got["id"], got["systemmodstamp"])} == expected
        assert duck.query("SELECT current_setting('TimeZone')")[0][0] == "America/New_York"
        as_text = dict(duck.query("SELECT id, strftime(systemmodstamp AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%f') "
                                  "FROM salesforce.task"))
        assert as_text == {k: v.strftime("%Y-%m-%dT%H:%M:%S.%f") for k, v in expected.items()}

        postgres = PostgresWarehouse(host=postgres_database["host"], port=postgres_database["port"],
                                     user=postgres_database["user"], database=postgres_database["database"])
        batch, _ = staged_stamps(tmp_path)
        postgres.load(batch)
        assert postgres.query("SHOW timezone") == [("Asia/Kolkata",)]
        got = postgres.read_table("salesforce", "task")
        assert {k: as_utc(v) for k, v in zip(got["id"], got["systemmodstamp"])} == expected
        as_text = dict(postgres.query("SELECT id, to_char(systemmodstamp AT TIME ZONE 'UTC', "
                                      "'YYYY-MM-DD\"T\"HH24:MI:SS.US') FROM salesforce.task"))
        assert as_text == {k: v.strftime("%Y-%m-%dT%H:%M:%S.%f") for k, v in expected.items()}

        _, bucket = s3_bucket
        redshift = RedshiftWarehouse(s3=S3Resource(endpoint_url=s3_endpoint, **S3_CREDENTIALS), staging_bucket=bucket,
                                     iam_role_arn="arn:aws:iam::123456789012:role/copy")
        # DISTKEY/SORTKEY are Redshift-only table attributes; the rest of the plan runs on PostgreSQL.
        batch, _ = staged_stamps(tmp_path, dataclasses.replace(load_catalog()["Task"], redshift={}))
        database = {**postgres_database}
        with admin(postgres_database) as connection, connection.cursor() as cursor:
            cursor.execute("DROP SCHEMA salesforce CASCADE")
        run_plan_on_postgres(redshift, database, batch)
        with admin(postgres_database) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT data_type FROM information_schema.columns "
                           "WHERE table_name = 'task' AND column_name = 'systemmodstamp'")
            assert cursor.fetchone()[0] == "timestamp with time zone"
            cursor.execute("SELECT id, systemmodstamp FROM salesforce.task")
            assert {k: as_utc(v) for k, v in cursor.fetchall()} == expected
    finally:
        monkeypatch.undo()
        time.tzset()


def test_notifications_and_the_data_api_sign_with_the_configured_credentials(monkeypatch):
    """SNS and the Redshift Data API clients use the keys the deployment configured (the S3Resource's,
    given to the Notifier the same way), not whatever boto3's default chain finds in the environment."""
    from etl_assets.notifications import Notifier

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-environment")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-the-environment")
    configured = {"aws_access_key_id": "configured-key", "aws_secret_access_key": "configured-secret",
                  "aws_session_token": "configured-token"}
    redshift = RedshiftWarehouse(connection="data_api", workgroup_name="w", region_name="eu-west-1",
                                 s3=S3Resource(**configured), staging_bucket="b", iam_role_arn="arn:aws:iam::1:role/r")
    notifier = Notifier(topic_arn="arn:aws:sns:eu-west-1:1:t", region_name="eu-west-1", **configured)
    for client in (redshift.data_api_client(), aws_client(notifier, "sns")):
        credentials = client._request_signer._credentials
        assert (credentials.access_key, credentials.secret_key, credentials.token) == (
            "configured-key", "configured-secret", "configured-token")
        assert client.meta.region_name == "eu-west-1"
