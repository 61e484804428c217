"""The Redshift target without a cluster.

What these tests prove: every statement the Redshift path emits parses as Redshift
SQL; staging, manifests and clean-up work against a real S3 API over HTTP; the
Redshift-generated DDL and merge (everything except COPY FROM S3 and
pg_last_copy_count, which PostgreSQL lacks) give the right tables when executed on
the real PostgreSQL server; Data API requests are well-formed and their results
parsed; load errors reach the failure message. What they cannot prove: that a real
cluster accepts COPY ... FORMAT AS PARQUET MANIFEST with these files, the
batch_execute_statement transaction (moto does not implement it), and Redshift's
own performance. The README says how to run the same assets against a real cluster.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import threading
import time
import uuid

import boto3
import psycopg2
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import sqlglot
from dagster_aws.s3 import S3Resource
from sqlglot import exp
from sqlglot.errors import ErrorLevel

from etl_assets.cli.warehouse import plan_for
from etl_assets.salesforce.catalog import load_catalog
from etl_assets.warehouse.batch import StagedBatchWriter
from etl_assets.warehouse.dialect import STAGING
from etl_assets.warehouse.errors import CannotWrite, WarehouseLimitError
from etl_assets.warehouse.redshift import RedshiftWarehouse
from etl_assets.warehouse.redshift_sessions import DataApiSession, RedshiftLoadError, literal, render
from etl_assets.warehouse.spec import Column, ColumnType, TableSpec
from etl_assets.warehouse.steps import Step
from etl_assets_tests.conftest import S3_CREDENTIALS
from etl_assets_tests.helpers import assert_the_first_cause_outlives_an_ended_session

OPAQUE = {  # statements sqlglot keeps as opaque commands: their exact shape is checked instead
    "CALL": re.compile(r'^CALL "[a-z_][a-z0-9_]*"(\."[a-z_][a-z0-9_]*")?\(\)$'),
    "LOCK": re.compile(r'^LOCK "[a-z_][a-z0-9_]*"\."[a-z_][a-z0-9_]*"$'),
}
SPEC = TableSpec("salesforce", "note__c", "id", "systemmodstamp", (
    Column("id", ColumnType.STRING, False), Column("systemmodstamp", ColumnType.DATETIME, False),
    Column("body", ColumnType.STRING), Column("amount", ColumnType.FLOAT)))


def assert_redshift_sql(sql: str) -> None:
    keyword = sql.split()[0].upper()
    if keyword in OPAQUE:
        assert OPAQUE[keyword].match(sql), sql
        return
    parsed = sqlglot.parse_one(sql, read="redshift", error_level=ErrorLevel.RAISE)
    assert not isinstance(parsed, exp.Command), f"not understood as Redshift SQL: {sql[:120]}"


@pytest.mark.parametrize("api_name", list(load_catalog()))
def test_every_statement_for_every_object_parses_as_redshift(api_name):
    _, _, plan = plan_for("redshift", api_name)
    statements = plan.statements()
    assert any(s.sql.startswith("COPY etl_staging FROM 's3://") and "MANIFEST" in s.sql for s in statements)
    for step in statements:
        assert_redshift_sql(render(step.sql, step.params))


@pytest.mark.parametrize("target, dialect", [("postgres", "postgres"), ("duckdb", "duckdb")])
def test_the_other_targets_plans_parse_in_their_dialects(target, dialect):
    _, _, plan = plan_for(target, "Task")
    for step in plan.statements():
        sqlglot.parse_one(step.sql.replace("%s", "'x'").replace("?", "'x'"), read=dialect, error_level=ErrorLevel.RAISE)


def test_catalog_table_design_and_stored_procedure_reach_the_ddl():
    from etl_assets.salesforce.catalog import parse_catalog
    obj = parse_catalog({"objects": {"Task": {"redshift": {"distkey": "Id", "sortkey": ["SystemModstamp"],
                                                         "procedure": "litify.update_litify_task"},
                                            "columns": {"Id": "string", "SystemModstamp": "datetime"}}}})["Task"]
    warehouse = RedshiftWarehouse(s3=S3Resource(), staging_bucket="b", iam_role_arn="arn:aws:iam::1:role/r")
    writer = StagedBatchWriter(obj.table_spec(), "P")
    plan = warehouse.plan(writer.close(), existing={})
    sqls = [s.sql for s in plan.statements()]
    assert any('DISTSTYLE KEY DISTKEY ("id") COMPOUND SORTKEY ("systemmodstamp")' in s for s in sqls)
    assert sqls[-1] == 'CALL "litify"."update_litify_task"()'


def test_the_staged_rows_are_distributed_as_the_table_so_the_merge_joins_stay_on_each_slice():
    """At 100M rows an undistributed staging table sends every staged row across the cluster for the
    UPDATE ... FROM and the anti-join INSERT (docs/redshift.md, "Re-loads at scale")."""
    from etl_assets.salesforce.catalog import parse_catalog
    obj = parse_catalog({"objects": {"Task": {"redshift": {"distkey": "Id", "sortkey": ["SystemModstamp"]},
                                            "columns": {"Id": "string", "SystemModstamp": "datetime"}}}})["Task"]
    warehouse = RedshiftWarehouse(s3=S3Resource(), staging_bucket="b", iam_role_arn="arn:aws:iam::1:role/r")
    writer = StagedBatchWriter(obj.table_spec(), "P")
    plan = warehouse.plan(writer.close(), existing={"id": None, "systemmodstamp": None})
    created = {s.sql.split()[3]: s.sql for s in plan.statements() if s.sql.startswith("CREATE TEMPORARY TABLE")}
    for name in ("etl_staging", "etl_latest"):
        assert 'DISTSTYLE KEY DISTKEY ("id")' in created[name], created[name]
        assert_redshift_sql(created[name])
    undesigned = RedshiftWarehouse(s3=S3Resource(), staging_bucket="b", iam_role_arn="arn:aws:iam::1:role/r")
    plain = undesigned.plan(StagedBatchWriter(SPEC, "P").close(), existing={"id": None})
    assert not any("DISTKEY" in s.sql for s in plain.statements())


def test_literals_keep_every_character_of_data_out_of_the_statement_text():
    """The Data API's batch takes no parameters: text outside the safe set travels as hex digits Redshift
    decodes, so a quote, backslash or newline of the data never reaches the statement; COPY's literals
    (no expression allowed there) refuse such text instead."""
    from etl_assets.warehouse.redshift_sessions import plain_literal

    assert literal("s3://bucket/etl/x.manifest") == "'s3://bucket/etl/x.manifest'"
    assert literal(42) == "42" and literal(None) == "NULL" and literal(2.5) == "2.5"
    assert literal(dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=dt.timezone.utc)) == \
        "'2026-01-02 03:04:05.600000+00:00'"
    for hostile in ("x'; DROP TABLE t; --", "a\\b", "line\nbreak", 'size=3,etag="9b2cf5"', "Ünïcode/ключ.csv"):
        rendered = literal(hostile)
        assert rendered == f"FROM_VARBYTE(TO_VARBYTE('{hostile.encode().hex()}', 'hex'), 'utf8')"
        assert_redshift_sql(f"SELECT {rendered}")
        with pytest.raises(ValueError):
            plain_literal(hostile)
    assert render("DELETE FROM t WHERE p = %s", ["20240501_Differential"]) == \
        "DELETE FROM t WHERE p = '20240501_Differential'"


def test_a_data_api_batch_with_any_text_and_times_writes_them_back_exactly(postgres_database):
    """The batch's rendered statements run on PostgreSQL, which reads backslashes in literals as escapes
    when standard_conforming_strings is off (as Redshift does) and is given Redshift's two VARBYTE
    functions: every value comes back as it was."""
    values = ["x'; DROP TABLE t; --", "a\\b\\'c", "line\nbreak", '{"k": "v\\"q"}', "Ünïcode/ключ.csv", "plain_key",
              dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=dt.timezone.utc), None]
    connection = psycopg2.connect(**{k: postgres_database[k] for k in ("host", "port", "user")},
                                  dbname=postgres_database["database"])
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("SET standard_conforming_strings = off; SET TIME ZONE 'UTC'")
            cursor.execute("CREATE FUNCTION to_varbyte(text, text) RETURNS bytea LANGUAGE sql AS "
                           "'SELECT decode($1, $2)'")
            cursor.execute("CREATE FUNCTION from_varbyte(bytea, text) RETURNS text LANGUAGE sql AS "
                           "'SELECT convert_from($1, ''UTF8'')'")
            cursor.execute("CREATE TABLE written (n int, text_value text, time_value timestamptz)")
            for n, value in enumerate(values):
                as_time = isinstance(value, dt.datetime)
                cursor.execute(render("INSERT INTO written VALUES (%s, %s, %s)",
                                      [n, None if as_time else value, value if as_time else None]))
            cursor.execute("SELECT text_value, time_value FROM written ORDER BY n")
            back = [t if t is not None else w for t, w in cursor.fetchall()]
    finally:
        connection.close()
    assert back == values


def batch_of(rows, partition="P", spec=SPEC, reject=False):
    writer = StagedBatchWriter(spec, partition)
    writer.write(pa.table({
        "id": [r[0] for r in rows],
        "systemmodstamp": pa.array([dt.datetime(2024, 5, r[1], tzinfo=dt.timezone.utc) for r in rows],
                                   pa.timestamp("us", tz="UTC")),
        "body": [r[2] for r in rows], "amount": [float(r[1]) for r in rows],
        "_source_partition": [partition] * len(rows), "_source_file": ["f.csv"] * len(rows),
        "_source_line": list(range(2, 2 + len(rows)))}))
    if reject:
        writer.reject(pa.table({"_source_partition": [partition], "_source_file": ["f.csv"], "_source_line": [99],
                                "column_name": ["id"], "reason": ["bad"], "raw_record": ["{}"]}))
    return writer.close()


@pytest.fixture
def redshift(s3_endpoint, s3_bucket):
    _, bucket = s3_bucket
    return RedshiftWarehouse(s3=S3Resource(endpoint_url=s3_endpoint, **S3_CREDENTIALS), staging_bucket=bucket,
                             staging_prefix="etl/staging", iam_role_arn="arn:aws:iam::123456789012:role/copy")


def test_staging_writes_exactly_the_batch_files_and_a_manifest_then_cleans_up(redshift, s3_bucket):
    client, bucket = s3_bucket
    batch = batch_of([("A", 1, "a"), ("B", 2, "b")], reject=True)
    staging = redshift.upload(batch)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=staging.prefix)["Contents"])
    assert keys == sorted(f"{staging.prefix}/{n}" for n in
                          ("part-00000.parquet", "rejects.parquet", "rows.manifest", "rejects.manifest"))
    assert staging.prefix.startswith("etl/staging/salesforce/note__c/P/")
    manifest = json.loads(client.get_object(Bucket=bucket, Key=f"{staging.prefix}/rows.manifest")["Body"].read())
    assert manifest == {"entries": [{"url": f"s3://{bucket}/{staging.prefix}/part-00000.parquet", "mandatory": True,
                                     "meta": {"content_length": batch.files[0].stat().st_size}}]}
    staged = pq.read_table(io.BytesIO(client.get_object(Bucket=bucket, Key=keys[0])["Body"].read()))
    assert staged.column("id").to_pylist() == ["A", "B"]
    redshift.remove(staging)
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix=staging.prefix)
    batch.discard()


def run_plan_on_postgres(redshift: RedshiftWarehouse, database: dict, batch) -> dict:
    """Execute the Redshift plan on PostgreSQL, standing in only where the dialects differ:
    COPY FROM S3 becomes COPY FROM STDIN of the same Parquet, the COPY-count guard is skipped, and a
    late-binding view (history mode's) is an ordinary one."""
    connection = psycopg2.connect(**{k: database[k] for k in ("host", "port", "user")}, dbname=database["database"])
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT column_name, character_maximum_length FROM information_schema.columns "
                       "WHERE table_schema = %s AND table_name = %s", [batch.spec.schema, batch.spec.name])
        plan = redshift.plan(batch, dict(cursor.fetchall()))
        connection.commit()
        connection.autocommit = True
        for step in plan.prepare:
            cursor.execute(step.sql.removesuffix(" WITH NO SCHEMA BINDING"), step.params or None)
        connection.autocommit = False
        results = {}
        for step in plan.transaction:
            if step.sql.startswith("COPY "):
                table = step.sql.split()[1]
                files = batch.files if table == STAGING else batch.reject_files
                for path in files:
                    buffer = io.BytesIO()
                    pacsv.write_csv(pq.read_table(path), buffer,
                                    pacsv.WriteOptions(include_header=False, quoting_style="all_valid"))
                    buffer.seek(0)
                    cursor.copy_expert(f"COPY {table} FROM STDIN WITH (FORMAT csv)", buffer)
            elif "pg_last_copy_count" in step.sql:
                continue
            else:
                cursor.execute(step.sql, step.params or None)
                if step.result:
                    results[step.result] = cursor.fetchone()[0] if step.fetch else cursor.rowcount
        connection.commit()
        return results
    finally:
        connection.close()


def test_redshift_ddl_and_merge_give_the_right_table_on_postgres(redshift, postgres_database):
    newer = batch_of([("A", 3, "a-new"), ("B", 4, "b")], partition="P2")
    older = batch_of([("A", 1, "a-old"), ("C", 1, "x" * 3000)], partition="P1", reject=True)
    assert run_plan_on_postgres(redshift, postgres_database, newer) == {"keys_staged": 2, "updated": 0, "inserted": 2}
    assert run_plan_on_postgres(redshift, postgres_database, older) == {"keys_staged": 2, "updated": 0, "inserted": 1}
    assert run_plan_on_postgres(redshift, postgres_database, older) == {"keys_staged": 2, "updated": 0, "inserted": 0}
    connection = psycopg2.connect(**{k: postgres_database[k] for k in ("host", "port", "user")},
                                  dbname=postgres_database["database"])
    with connection, connection.cursor() as cursor:
        cursor.execute('SELECT id, left(body, 5), _source_partition FROM salesforce.note__c ORDER BY id')
        assert cursor.fetchall() == [("A", "a-new", "P2"), ("B", "b", "P2"), ("C", "xxxxx", "P1")]
        cursor.execute("SELECT character_maximum_length FROM information_schema.columns "
                       "WHERE table_name = 'note__c' AND column_name = 'body'")
        assert cursor.fetchone()[0] == 4096, "the 3,000-byte value widened VARCHAR(256) to the next bucket"
        cursor.execute("SELECT COUNT(*) FROM salesforce.note__c_rejects")
        assert cursor.fetchone()[0] == 1
    connection.close()


def test_limits_are_checked_before_any_ddl(redshift):
    wide = TableSpec("s", "wide", "c0", "c1", tuple(Column(f"c{i}", ColumnType.STRING) for i in range(1597)))
    with pytest.raises(WarehouseLimitError, match=r"1601 columns; .* allows 1600"):
        redshift.check_limits(wide)
    batch = batch_of([("A", 1, "x")])
    batch.max_bytes["body"] = 70_000
    with pytest.raises(WarehouseLimitError, match="70000-byte value; Redshift allows 65535"):
        redshift.dialect().create_table_sql(SPEC, batch)


@pytest.fixture
def data_api(s3_endpoint):
    """moto's redshift-data over HTTP. moto never finishes statements, so `finish` plays the cluster."""
    from moto.redshiftdata.models import redshiftdata_backends

    client = boto3.client("redshift-data", endpoint_url=s3_endpoint, **S3_CREDENTIALS)
    backend = redshiftdata_backends["123456789012"]["us-east-1"]

    stop = threading.Event()

    def finish(rows_affected=7):
        def worker():
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not stop.is_set():
                for statement in list(backend.statements.values()):
                    if statement.status == "STARTED":
                        statement.status, statement.result_rows = "FINISHED", rows_affected
                time.sleep(0.02)
        threading.Thread(target=worker, daemon=True).start()

    yield client, backend, finish
    stop.set()


def test_data_api_statements_are_well_formed_and_results_parsed(data_api):
    client, backend, finish = data_api
    session = DataApiSession(client, {"Database": "dev", "WorkgroupName": "analytics"}, 0.01, 5)
    finish()
    affected = session.execute('DELETE FROM "s"."t_rejects" WHERE "_source_partition" = %s', ["P1"])
    assert affected == 7
    sent = [s for s in backend.statements.values() if s.query_string.startswith("DELETE")][-1]
    assert sent.query_string == 'DELETE FROM "s"."t_rejects" WHERE "_source_partition" = :p1'
    assert sent.query_parameters == [{"name": "p1", "value": "P1"}], "values travel as parameters, not SQL text"
    finish()
    rows = session.fetchall("SELECT number, street, city FROM addresses")
    assert rows == [(10, "Alpha st", "Vancouver"), (50, "Beta st", "Toronto"), (100, "Gamma av", "Seattle")]


def test_data_api_statement_that_never_finishes_times_out_clearly(data_api):
    client, _, _ = data_api
    session = DataApiSession(client, {"Database": "dev", "ClusterIdentifier": "c"}, 0.01, 0.2)
    with pytest.raises(TimeoutError, match=r"still STARTED after 0.2s"):
        session.execute("SELECT 1")


def test_a_failed_copy_names_redshift_load_errors(redshift, postgres_database):
    """SYS_LOAD_ERROR_DETAIL is faked as a table with Redshift's columns on the real PostgreSQL server."""
    settings = {**redshift.model_dump(), "s3": redshift.s3, "host": postgres_database["host"],
                "port": postgres_database["port"], "user": postgres_database["user"],
                "database": postgres_database["database"]}
    pg = RedshiftWarehouse(**settings)
    staging = pg.staging_location(batch_of([("A", 1, "a")]))
    with pg.session() as session:
        session.execute("CREATE TABLE sys_load_error_detail (file_name CHAR(256), line_number BIGINT, "
                        "column_name CHAR(127), error_code INTEGER, error_message CHAR(512), start_time TIMESTAMP)")
        session.execute("INSERT INTO sys_load_error_detail VALUES (%s, 3, 'amount', 1207, "
                        "'Invalid digit, Value ''x'', Pos 0', now())", [staging.url + "part-00000.parquet"])
    message = pg.explain_failure(staging, RuntimeError("COPY failed"))
    assert f"staged files kept at {staging.url}" in message
    assert f"{staging.url}part-00000.parquet, line 3, column amount: error 1207: Invalid digit" in message


def test_the_same_asset_on_the_redshift_target_stages_in_s3_and_copies(landing_root, redshift, s3_bucket,
                                                                       postgres_database):
    """Pointed (through psycopg2) at PostgreSQL, which has no COPY FROM S3: the asset reaches exactly
    that statement, fails with the staged location, and leaves the staged files for diagnosis."""
    import dagster as dg

    from etl_assets.landing.zone import LocalLandingZone
    from etl_assets_tests.helpers import folders_in, materialize_folders, resources

    client, bucket = s3_bucket
    settings = {**redshift.model_dump(), "s3": redshift.s3, "host": postgres_database["host"],
                "port": postgres_database["port"], "user": postgres_database["user"],
                "database": postgres_database["database"]}
    target = RedshiftWarehouse(**settings)
    folder = folders_in(landing_root)[0]
    long_id = "005000000000LONGAAA"[:18]
    (landing_root / "backup" / folder / "User" / "long.csv").write_text(
        f"Id,IsDeleted,SystemModstamp,Username,AboutMe\n{long_id},false,2024-06-01T00:00:00.000Z,u@example.com,"
        f"{'x' * 70_000}\n")
    [result] = materialize_folders([folder], resources(LocalLandingZone(root=str(landing_root)),
                                   target), objects=["User"], raise_on_error=False)
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    message = str(failure.step_failure_data.error)
    assert "Redshift load failed" in message and "staged files kept at s3://" in message
    staged = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="etl/staging/salesforce/user/")["Contents"]]
    assert any(k.endswith("rows.manifest") for k in staged) and any(k.endswith(".parquet") for k in staged)
    # The 70,000-byte AboutMe (not in the catalog: the default policy) was cut to fit a VARCHAR, and the row says so.
    parts = [pq.read_table(io.BytesIO(client.get_object(Bucket=bucket, Key=k)["Body"].read()))
             for k in staged if k.endswith(".parquet") and "rejects" not in k]
    [row] = [r for part in parts for r in part.to_pylist() if r["id"] == long_id]
    assert row["aboutme"] == "x" * 65_535
    assert json.loads(row["_load_changes"])[0] == {
        "column": "aboutme", "change": "truncated", "reason": "70000 bytes, over the target's 65535-byte text limit",
        "bytes": 70000, "kept_bytes": 65535}
    assert all(r["_load_changes"] is None for part in parts for r in part.to_pylist() if r["id"] != long_id)


@pytest.mark.parametrize("target", ["duckdb", "postgres", "redshift"])
def test_etl_assets_sql_prints_the_plan_without_credentials(target, monkeypatch, capsys):
    from etl_assets.cli import main

    monkeypatch.setenv("ETL_ASSETS_REDSHIFT_PASSWORD", "not-a-real-password")
    monkeypatch.setenv("ETL_ASSETS_PG_PASSWORD", "not-a-real-password")
    assert main(["sql", "--target", target, "--object", "litify_pm__Matter__c"]) == 0
    out = capsys.readouterr().out
    assert 'CREATE TABLE IF NOT EXISTS "salesforce"."litify_pm__matter__c"' in out
    assert "INSERT INTO" in out and "not-a-real-password" not in out
    # DuckDB replaces the rows a batch beats (DELETE by row id, then the INSERT) rather than UPDATE them in memory.
    assert ('DELETE FROM "salesforce"."litify_pm__matter__c" WHERE rowid IN (SELECT etl_row FROM etl_matched'
            in out) == (target == "duckdb")
    # (Its only UPDATEs set the few `_deleted_in_source_at` marks, and versions' intervals, that change.)
    merge_updates = [line for line in out.splitlines() if line.startswith("UPDATE") and not any(
        f'SET "{narrow}"' in line for narrow in ("_deleted_in_source_at", "_valid_to", "_deleted_at"))]
    assert bool(merge_updates) == (target != "duckdb")
    if target == "redshift":
        assert "FORMAT AS PARQUET MANIFEST" in out and "pg_last_copy_count() = 1000" in out


def test_only_transient_failures_are_left_to_the_retry_policy(redshift):
    from botocore.exceptions import ClientError

    def wrapped(cause):
        try:
            raise RedshiftLoadError("load failed") from cause
        except RedshiftLoadError as error:
            return error

    assert redshift.is_transient(wrapped(psycopg2.OperationalError("server closed the connection")))
    assert redshift.is_transient(wrapped(ClientError({"Error": {"Code": "ThrottlingException"}}, "ExecuteStatement")))
    assert not redshift.is_transient(wrapped(psycopg2.ProgrammingError('syntax error at or near "FROM"')))
    assert not redshift.is_transient(wrapped(ClientError({"Error": {"Code": "ValidationException"}}, "X")))


def test_the_long_text_policy_of_the_catalog_shapes_the_redshift_plan(capsys):
    """Matter's description is `long_text: super` in the catalog: a SUPER column (strings up to 16 MB),
    while text columns without a policy stay VARCHAR and are cut at 65,535 bytes, which the plan says."""
    _, obj, plan = plan_for("redshift", "litify_pm__Matter__c")
    create = next(s.sql for s in plan.prepare if s.sql.startswith('CREATE TABLE IF NOT EXISTS "salesforce"."litify'))
    assert '"litify_pm__description__c" SUPER' in create and '"name" VARCHAR(256)' in create
    staging = next(s.sql for s in plan.transaction if s.sql.startswith("CREATE TEMPORARY TABLE etl_staging"))
    assert '"litify_pm__description__c" SUPER' in staging
    assert_redshift_sql(create)
    from etl_assets.cli import main
    assert main(["sql", "--target", "redshift", "--object", "litify_pm__Matter__c"]) == 0
    header = capsys.readouterr().out.split("\n-- prepare")[0]
    assert "long text (super): stored as SUPER: values up to 16,000,000 bytes load whole: litify_pm__description__c" in header
    assert re.search(r"long text \(truncate\): a value over 65,535 bytes is cut to it, recorded in the row's "
                     r"_load_changes .*: id, .*\bname\b", header)
    redshift = RedshiftWarehouse(s3=S3Resource(), staging_bucket="b", iam_role_arn="arn:aws:iam::1:role/r")
    batch = StagedBatchWriter(obj.table_spec(), "P").close()
    batch.max_bytes["litify_pm__description__c"] = 500_000  # no VARCHAR bucket holds it; SUPER needs none
    assert '"litify_pm__description__c" SUPER' in redshift.dialect().create_table_sql(obj.table_spec(), batch)
    assert redshift.dialect().widen_steps(obj.table_spec(), batch, {"litify_pm__description__c": None}) == []


def test_the_plan_copies_from_the_manifests_its_load_uploads(redshift, s3_bucket):
    """The staging location is the batch's own (no location passed around): the plan printed for a
    batch names exactly the manifests its upload writes."""
    client, bucket = s3_bucket
    batch = batch_of([("A", 1, "a")], reject=True)
    copies = [s.sql for s in redshift.plan(batch, {}).transaction if s.sql.startswith("COPY ")]
    staging = redshift.upload(batch)
    assert copies == [redshift.dialect().copy_sql(STAGING, staging.rows_manifest),
                      redshift.dialect().copy_sql('"salesforce"."note__c_rejects"', staging.rejects_manifest)]
    for manifest in (staging.rows_manifest, staging.rejects_manifest):
        client.head_object(Bucket=bucket, Key=manifest.removeprefix(f"s3://{bucket}/"))
    redshift.remove(staging)
    batch.discard()


def test_removing_staged_files_goes_through_every_page_of_the_listing(redshift, s3_bucket):
    """More staged keys than one listing page (1,000) are all removed."""
    client, bucket = s3_bucket
    batch = batch_of([("A", 1, "a")])
    staging = redshift.staging_location(batch)
    for n in range(1_001):
        client.put_object(Bucket=bucket, Key=f"{staging.prefix}/part-{n:05d}.parquet", Body=b"")
    redshift.remove(staging)
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix=staging.prefix)
    batch.discard()


# --- Redshift names the errors a person must fix, and the first cause wins, as on the other engines ----


def redshift_on_postgres(redshift: RedshiftWarehouse, database: dict, user: str | None = None) -> RedshiftWarehouse:
    """The Redshift target connected through psycopg2 to the real PostgreSQL server, as `user`."""
    return RedshiftWarehouse(**{**redshift.model_dump(), "s3": redshift.s3, "host": database["host"],
                                "port": database["port"], "user": user or database["user"],
                                "database": database["database"]})


@pytest.fixture
def select_only_user(postgres_database):
    """A login that may read but not create: its DDL fails with insufficient_privilege (42501)."""
    name = f"etl_reader_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(**{k: postgres_database[k] for k in ("host", "port", "user")},
                             dbname=postgres_database["database"])
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {name} LOGIN")
        cursor.execute(f"REVOKE CREATE ON SCHEMA public FROM {name}")
    try:
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP OWNED BY {name}")
            cursor.execute(f"DROP ROLE {name}")
        admin.close()


def test_a_redshift_session_refused_a_privilege_says_what_to_grant_and_is_not_retried(redshift, postgres_database,
                                                                                      select_only_user):
    """RedshiftWarehouse did not extend PostgresWarehouse, so its sessions raised psycopg2's error as it came:
    no CannotWrite, nothing saying what to fix. Every engine's session now names it the same way."""
    target = redshift_on_postgres(redshift, postgres_database, select_only_user)
    with pytest.raises(CannotWrite) as refused, target.session() as session:
        session.execute("CREATE TABLE half_made (a integer)")
    message = str(refused.value)
    assert message.startswith(f"redshift://{select_only_user}:***@"), message
    assert f"user {select_only_user} lacks a privilege: GRANT it" in message and "ETL_ASSETS_REDSHIFT_USER" in message
    assert "permission denied" in message, "the server's own words"
    assert isinstance(refused.value.__cause__, psycopg2.errors.InsufficientPrivilege)
    assert not target.is_transient(refused.value)

    # A whole load: the DDL refused inside the load, wrapped with where its staged files were kept.
    batch = batch_of([("A", 1, "a")])
    with pytest.raises(RedshiftLoadError) as failed:
        target.load(batch)
    assert "staged files kept at s3://" in str(failed.value)
    fix = target.what_to_fix(failed.value)
    assert fix is not None and f"user {select_only_user} lacks a privilege" in fix, fix
    assert not target.is_transient(failed.value)
    batch.discard()


def test_a_redshift_session_the_server_ended_keeps_the_error_that_caused_the_rollback(redshift, postgres_database):
    """The first cause wins on Redshift's cluster endpoint too: a session the server ended cannot roll back,
    and that failure is a note on the error that caused the rollback, never the error."""
    target = redshift_on_postgres(redshift, postgres_database)
    assert_the_first_cause_outlives_an_ended_session(target.session, postgres_database)
    assert not target.has_table("public", "half_made")


def test_redshift_ddl_on_a_connection_the_server_ends_raises_the_servers_error(redshift, postgres_database):
    """Redshift commits DDL statement by statement (autocommit on, then off again): resetting it on the
    connection the server ended ("connection already closed") used to replace the server's own error."""
    target = redshift_on_postgres(redshift, postgres_database)
    with pytest.raises(psycopg2.OperationalError) as raised, target.session() as session:
        session.run_ddl([Step("SELECT pg_terminate_backend(pg_backend_pid())")])
    assert "terminating connection" in str(raised.value) or "server closed the connection" in str(raised.value)


def test_a_data_api_statement_refused_a_privilege_says_what_to_grant(data_api, monkeypatch):
    """Through the Data API Redshift's error is words only (no SQLSTATE): they are read for the same fixes.
    moto's statements carry no `Error`; it is added here as the Data API returns it."""
    from moto.redshiftdata.models import Statement

    client, backend, _ = data_api
    listed = Statement.__iter__

    def with_error(statement):
        yield from listed(statement)
        if getattr(statement, "error", None):
            yield "Error", statement.error
    monkeypatch.setattr(Statement, "__iter__", with_error)
    target = RedshiftWarehouse(connection="data_api", workgroup_name="analytics", db_user="loader",
                               data_api_endpoint_url=client.meta.endpoint_url,
                               s3=S3Resource(endpoint_url=client.meta.endpoint_url, **S3_CREDENTIALS),
                               staging_bucket="b", iam_role_arn="arn:aws:iam::123456789012:role/copy",
                               poll_seconds=0.01, statement_timeout_seconds=5)

    earlier = set(backend.statements)  # other tests' statements, some never finished

    def refuse():
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for key, statement in list(backend.statements.items()):
                if key not in earlier and statement.status == "STARTED":
                    statement.status, statement.error = "FAILED", "ERROR: permission denied for schema salesforce"
                    return
            time.sleep(0.01)
    threading.Thread(target=refuse, daemon=True).start()
    with pytest.raises(CannotWrite) as refused, target.session() as session:
        session.execute('DELETE FROM "salesforce"."task_rejects" WHERE "_source_partition" = %s', ["P1"])
    message = str(refused.value)
    assert message.startswith("redshift-data://analytics/dev: user loader lacks a privilege: GRANT it"), message
    assert "permission denied for schema salesforce" in message
    assert not target.is_transient(refused.value)
