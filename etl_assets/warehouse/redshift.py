"""Amazon Redshift: staged Parquet in S3, COPY with a manifest, then the same SCD1 merge.

A load uploads the batch's Parquet files under one prefix per load, writes a
manifest naming exactly those files (so COPY cannot load some and report
success), COPYs them into a temporary staging table, checks the loaded row count
inside the transaction, merges, and optionally CALLs the object's stored
procedure. Staged files are removed after success and kept after a failure, whose
message carries Redshift's own load errors (SYS_LOAD_ERROR_DETAIL).

Two ways to connect, one plan (redshift_sessions.py): psycopg2 to the cluster
endpoint, or the Redshift Data API, where the transaction is one batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import psycopg2
from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr

from etl_assets.aws import aws_client, s3_client
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.batch import StagedBatch
from etl_assets.warehouse.dialect import STAGING, Capabilities, Dialect, rejects_table, table
from etl_assets.warehouse.errors import WarehouseLimitError
from etl_assets.warehouse.postgres import psycopg2_session, sqlstate_fix
from etl_assets.warehouse.redshift_sessions import (
    DataApiSession,
    RedshiftLoadError,
    RedshiftSession,
    StatementFailed,
    plain_literal,
)
from etl_assets.warehouse.session import Session
from etl_assets.warehouse.spec import Column, ColumnType, TableSpec, TextLimits, quote
from etl_assets.warehouse.steps import Step

MAX_VARCHAR_BYTES = 65_535
# A SUPER string's limit where the cluster sets enable_large_strings_opt_in (65,535 bytes otherwise).
MAX_SUPER_STRING_BYTES = 16_000_000
WIDTH_BUCKETS = (256, 1024, 4096, 16384, MAX_VARCHAR_BYTES)

# SQLSTATE -> what a person must fix; the Data API names the error only in words (`_FIX_WORDS`).
_REDSHIFT_FIXES = {
    "53100": "the cluster's disk is full: free space (drop or VACUUM tables it no longer needs) or resize the cluster",
    "42501": "user {user} lacks a privilege: GRANT it (CREATE on the database for a new schema, USAGE and CREATE "
             "on the schema, SELECT, INSERT, UPDATE and DELETE on its tables), or set ETL_ASSETS_REDSHIFT_USER "
             "(Data API: ETL_ASSETS_REDSHIFT_DB_USER or the secret's user) to a user that has it",
    "25006": "the database accepts no writes (a read-only transaction, or a datashare's consumer): load into a "
             "database the cluster owns, or turn default_transaction_read_only off",
}
_FIX_WORDS = {"disk full": "53100", "permission denied": "42501", "read-only transaction": "25006"}


@dataclass(frozen=True)
class S3Staging:
    """Where one load's files sit in S3, and the manifests that name them."""

    bucket: str
    prefix: str
    rows_manifest: str | None
    rejects_manifest: str | None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/"


def staging_location(bucket: str, prefix: str, batch: StagedBatch) -> S3Staging:
    """Where a batch is staged: one prefix per batch, so a plan names the files its load uploads."""
    spec = batch.spec
    key = "/".join(part.strip("/") for part in (prefix, spec.schema, spec.name, batch.partition or "all",
                                                    batch.load_id))
    url = f"s3://{bucket}/{key}"
    return S3Staging(bucket, key, f"{url}/rows.manifest", f"{url}/rejects.manifest")


class RedshiftDialect(Dialect):
    """Redshift: VARCHAR widths that grow as values need, SUPER for long text, COPY from the batch's S3
    manifests with a count check, a LOCK for concurrent loads, the catalog's table design and procedure."""

    late_binding_views = True
    late_binding_clause = " WITH NO SCHEMA BINDING"
    type_names: ClassVar[dict[ColumnType, str]] = {
        **Dialect.type_names,
        ColumnType.STRING: f"VARCHAR({MAX_VARCHAR_BYTES})",
    }

    def __init__(self, capabilities: Capabilities, iam_role_arn: str, bucket: str, prefix: str):
        super().__init__(capabilities)
        self.iam_role_arn, self.bucket, self.prefix = iam_role_arn, bucket, prefix

    def column_type(self, column: Column, batch: StagedBatch | None = None) -> str:
        if column.type is not ColumnType.STRING:
            return super().column_type(column, batch)
        if column.long_text == "super":  # the catalog's choice for text longer than a VARCHAR holds
            return "SUPER"
        return f"VARCHAR({width(column.name, batch)})"

    def widen_steps(self, spec: TableSpec, batch: StagedBatch, existing: dict[str, int | None]) -> list[Step]:
        steps = []
        for column in spec.columns:
            current = existing.get(column.name)
            if (column.type is ColumnType.STRING and column.long_text != "super" and current
                    and width(column.name, batch) > current):
                steps.append(Step(f"ALTER TABLE {table(spec)} ALTER COLUMN {quote(column.name)} "
                                  f"TYPE VARCHAR({width(column.name, batch)})"))
        return steps

    def retype_steps(self, batch: StagedBatch) -> list[Step]:
        """Redshift changes a column's type only between VARCHAR widths: refuse before any DDL, saying how."""
        if batch.retyped:
            changes = ", ".join(f"{name} {old.value} -> {new.value}" for name, (old, new) in batch.retyped.items())
            raise WarehouseLimitError(
                f"{batch.spec.schema}.{batch.spec.name}: values no longer fit inferred types ({changes}) and Redshift "
                "cannot change a column's type; declare these columns in catalog.yaml and rebuild the table")
        return []

    def lock_steps(self, spec: TableSpec) -> list[Step]:
        return [Step(f"LOCK {table(spec)}")]

    def copy_sql(self, target: str, manifest: str) -> str:
        role = plain_literal(self.iam_role_arn)
        return f"COPY {target} FROM {plain_literal(manifest)} IAM_ROLE {role} FORMAT AS PARQUET MANIFEST"

    def stage_steps(self, batch: StagedBatch) -> tuple[str, tuple, list[Step]]:
        location = staging_location(self.bucket, self.prefix, batch)
        steps = [Step(self.create_staging_sql(batch))]
        if batch.files:
            steps.append(Step(self.copy_sql(STAGING, location.rows_manifest)))
            # Fails the transaction (division by zero) unless COPY loaded exactly the staged rows.
            steps.append(Step(f"SELECT 1 / (CASE WHEN pg_last_copy_count() = {int(batch.rows)} THEN 1 ELSE 0 END)",
                              result="copy_check", fetch=True))
        return STAGING, (), steps

    def rejects_steps(self, batch: StagedBatch) -> list[Step]:
        if not batch.reject_files:
            return []
        location = staging_location(self.bucket, self.prefix, batch)
        return [Step(self.copy_sql(rejects_table(batch.spec), location.rejects_manifest))]

    def after_merge_steps(self, spec: TableSpec) -> list[Step]:
        procedure = spec.extra.get("redshift", {}).get("procedure")
        if not procedure:
            return []
        return [Step("CALL " + ".".join(quote(part) for part in procedure.split(".")) + "()")]

    def _lineage_types(self) -> tuple[str, str]:
        return "VARCHAR(1024)", "BIGINT"

    def _rejects_types(self) -> tuple[str, str]:
        return f"VARCHAR({MAX_VARCHAR_BYTES})", "BIGINT"

    def temporary_attributes(self, spec: TableSpec) -> str:
        """The staging table and LATEST distributed as the table is: the merge's joins of the staged rows
        with the table (UPDATE ... FROM, the anti-join INSERT) then stay on each slice instead of sending
        every staged row across the cluster (DS_DIST_NONE rather than DS_DIST_INNER)."""
        distkey = spec.extra.get("redshift", {}).get("distkey")
        return f" DISTSTYLE KEY DISTKEY ({quote(distkey)})" if distkey else ""

    def _table_attributes(self, spec: TableSpec) -> str:
        design = spec.extra.get("redshift", {})
        attributes = ""
        if "distkey" in design:
            attributes += f" DISTSTYLE KEY DISTKEY ({quote(design['distkey'])})"
        if design.get("sortkey"):
            attributes += " COMPOUND SORTKEY (" + ", ".join(quote(c) for c in design["sortkey"]) + ")"
        return attributes


def width(name: str, batch: StagedBatch | None) -> int:
    """The VARCHAR width a text column needs for the batch's widest value: the next of WIDTH_BUCKETS."""
    needed = batch.max_bytes.get(name, 0) if batch else 0
    for bucket in WIDTH_BUCKETS:
        if needed <= bucket:
            return bucket
    raise WarehouseLimitError(f"column {name} holds a {needed}-byte value; Redshift allows {MAX_VARCHAR_BYTES}")


class RedshiftWarehouse(Warehouse):
    """Redshift through S3 staging and COPY; every secret is set with dagster.EnvVar."""

    connection: str = Field(default="psycopg2", description="psycopg2 or data_api")
    host: str = ""
    port: int = 5439
    database: str = "dev"
    user: str = ""
    password: str = Field(default="", description="psycopg2 password; never logged.")
    cluster_identifier: str = Field(default="", description="Data API: a provisioned cluster")
    workgroup_name: str = Field(default="", description="Data API: a Serverless workgroup")
    secret_arn: str = Field(default="", description="Data API: Secrets Manager credentials")
    db_user: str = Field(default="", description="Data API: temporary credentials for this user")
    region_name: str = "us-east-1"
    data_api_endpoint_url: str = ""
    s3: S3Resource
    staging_bucket: str
    staging_prefix: str = "etl_assets/staging"
    iam_role_arn: str = Field(description="The role Redshift assumes to read the staged files (COPY IAM_ROLE).")
    keep_staged_files: bool = False
    poll_seconds: float = 0.5
    statement_timeout_seconds: float = 3600.0

    capabilities: ClassVar[Capabilities] = Capabilities(
        max_columns=1600, text_limits=TextLimits(MAX_VARCHAR_BYTES, MAX_SUPER_STRING_BYTES))

    _client = PrivateAttr(default=None)

    def describe(self) -> str:
        if self.connection == "data_api":
            where = self.workgroup_name or self.cluster_identifier
            return f"redshift-data://{where}/{self.database}"
        return f"redshift://{self.user}:***@{self.host}:{self.port}/{self.database}"

    def dialect(self) -> RedshiftDialect:
        return RedshiftDialect(self.capabilities, self.iam_role_arn, self.staging_bucket, self.staging_prefix)

    def _transient(self, error: BaseException) -> bool:
        from botocore.exceptions import ClientError, EndpointConnectionError

        if isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError, EndpointConnectionError)):
            return True
        return isinstance(error, ClientError) and "Throttl" in error.response.get("Error", {}).get("Code", "")

    def _what_to_fix(self, error: BaseException) -> str | None:
        """A privilege, a full disk or a read-only database, from the SQLSTATE (psycopg2) or, through the
        Data API, from the words of the statement's error."""
        user = self.user if self.connection != "data_api" else (self.db_user or "of the secret")
        fix = sqlstate_fix(error, _REDSHIFT_FIXES, user=user)
        if fix is None and isinstance(error, StatementFailed):
            words = str(error).lower()
            code = next((code for word, code in _FIX_WORDS.items() if word in words), None)
            fix = f"{_REDSHIFT_FIXES[code].format(user=user)} ({str(error).strip()})" if code else None
        return f"{self.describe()}: {fix}" if fix else super()._what_to_fix(error)

    def _target(self) -> dict:
        target = {"Database": self.database}
        if self.workgroup_name:
            target["WorkgroupName"] = self.workgroup_name
        else:
            target["ClusterIdentifier"] = self.cluster_identifier
        if self.secret_arn:
            target["SecretArn"] = self.secret_arn
        elif self.db_user:
            target["DbUser"] = self.db_user
        return target

    def data_api_client(self):
        """The Data API client, with the credentials the S3 resource was given."""
        if self._client is None:
            self._client = aws_client(self.s3, "redshift-data", self.region_name, self.data_api_endpoint_url)
        return self._client

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        if self.connection == "data_api":  # `run` sends a transaction as one batch: nothing to roll back here
            yield DataApiSession(self.data_api_client(), self._target(), self.poll_seconds,
                                 self.statement_timeout_seconds)
            return
        if self.connection != "psycopg2":
            raise ValueError(f"connection must be psycopg2 or data_api, not {self.connection!r}")
        with psycopg2_session(self.describe(), RedshiftSession, host=self.host, port=self.port,
                              dbname=self.database, user=self.user, password=self.password or None,
                              connect_timeout=10) as session:
            yield session

    @contextmanager
    def _staged(self, batch: StagedBatch) -> Iterator[None]:
        """The batch's files uploaded to S3 for COPY; removed after the load commits, kept after a
        failure, whose message then carries Redshift's own load errors."""
        staging = self.upload(batch)
        try:
            yield
        except Exception as error:
            raise RedshiftLoadError(self.explain_failure(staging, error)) from error
        if not self.keep_staged_files:
            self.remove(staging)

    def staging_location(self, batch: StagedBatch) -> S3Staging:
        return staging_location(self.staging_bucket, self.staging_prefix, batch)

    def upload(self, batch: StagedBatch) -> S3Staging:
        """The batch's files, and a manifest naming exactly them (COPY then cannot load some and succeed)."""
        staging = self.staging_location(batch)
        client = s3_client(self.s3)
        for files, name in ((batch.files, "rows"), (batch.reject_files, "rejects")):
            entries = []
            for path in files:
                key = f"{staging.prefix}/{path.name}"
                client.upload_file(str(path), staging.bucket, key)
                entries.append({"url": f"s3://{staging.bucket}/{key}", "mandatory": True,
                                "meta": {"content_length": path.stat().st_size}})
            if entries:
                client.put_object(Bucket=staging.bucket, Key=f"{staging.prefix}/{name}.manifest",
                                  Body=json.dumps({"entries": entries}).encode())
        return staging

    def remove(self, staging: S3Staging) -> None:
        """Delete every staged key, a page (at most 1,000 keys, delete_objects' limit) at a time."""
        client = s3_client(self.s3)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=staging.bucket,
                                                                     Prefix=staging.prefix + "/"):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=staging.bucket, Delete={"Objects": keys})

    def explain_failure(self, staging: S3Staging, error: Exception) -> str:
        """The failure with Redshift's own load errors for these files, when it recorded any."""
        message = f"Redshift load failed ({error}); staged files kept at {staging.url}"
        try:
            with self.session() as session:
                rows = session.fetchall(
                    "SELECT TRIM(file_name), line_number, TRIM(column_name), error_code, TRIM(error_message) "
                    "FROM sys_load_error_detail WHERE file_name LIKE %s ORDER BY start_time DESC LIMIT 10",
                    [staging.url + "%"],
                )
        except Exception as lookup_error:  # the original failure matters more than this lookup
            return f"{message}; load errors could not be read: {lookup_error}"
        details = [f"{f}, line {line}, column {col}: error {code}: {reason}" for f, line, col, code, reason in rows]
        return message + ("; load errors: " + " | ".join(details) if details else "")
