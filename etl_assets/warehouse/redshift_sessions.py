"""How statements reach Redshift: psycopg2 to the cluster endpoint, or the Redshift Data API (no VPC
access, Serverless), where a load's transaction is one batch_execute_statement."""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections.abc import Sequence

from etl_assets.warehouse.postgres import PostgresSession
from etl_assets.warehouse.session import Session
from etl_assets.warehouse.spec import TableSpec
from etl_assets.warehouse.steps import PlanStep, Step

SAFE_LITERAL = re.compile(r"^[A-Za-z0-9_.:/=+@, -]*$")
DATA_API_DONE = {"FINISHED", "FAILED", "ABORTED"}


class RedshiftLoadError(RuntimeError):
    """A load Redshift refused; the message lists its load errors when it recorded any."""


class StatementFailed(RedshiftLoadError):
    """A statement the Data API ran failed; its message is Redshift's, in words only (no SQLSTATE)."""


def literal(value) -> str:
    """A SQL literal for a value of the Data API's batch, which takes no parameters.

    Text inside a conservative character set (S3 URLs, role ARNs, partition keys) is quoted as it is;
    any other text (a file key, JSON) travels as hex digits that Redshift decodes
    (`FROM_VARBYTE(TO_VARBYTE('<hex>', 'hex'), 'utf8')`), so no character of the data reaches the
    statement's text and nothing needs escaping. Datetimes are ISO text in the safe set.
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return f"'{value.isoformat(sep=' ') if isinstance(value, dt.datetime) else value.isoformat()}'"
    if not isinstance(value, str):
        raise ValueError(f"cannot render {type(value).__name__} as a literal")
    if SAFE_LITERAL.match(value):
        return f"'{value}'"
    return f"FROM_VARBYTE(TO_VARBYTE('{value.encode('utf-8').hex()}', 'hex'), 'utf8')"


def plain_literal(value: str) -> str:
    """A quoted literal where SQL takes only a literal (COPY's FROM and IAM_ROLE): refused unless `value` is
    in the safe character set (our own S3 URLs and the configured role ARN)."""
    if not isinstance(value, str) or not SAFE_LITERAL.match(value):
        raise ValueError(f"refusing to render {value!r} as a SQL literal")
    return f"'{value}'"


def render(sql: str, params: Sequence) -> str:
    """`sql` with its %s placeholders replaced by safe literals (the batch Data API takes no parameters)."""
    parts = sql.split("%s")
    if len(parts) - 1 != len(params):
        raise ValueError("placeholder and parameter counts differ")
    return parts[0] + "".join(literal(p) + rest for p, rest in zip(params, parts[1:]))


class RedshiftSession(PostgresSession):
    """psycopg2 on a cluster endpoint. Loads of a table are serialized by the plan's `LOCK` step, as
    Redshift has no advisory locks; DDL is committed statement by statement."""

    def lock_table(self, spec: TableSpec) -> None:
        pass

    def lock_catalog(self) -> None:
        pass

    def run_ddl(self, steps: Sequence[Step]) -> None:
        self.connection.commit()  # reading the table's columns opened a transaction
        self.connection.autocommit = True
        try:
            for step in steps:
                self.execute(step.sql, step.params)
        finally:
            if not self.connection.closed:  # a connection the server dropped: its error is the one raised
                self.connection.autocommit = False


class DataApiSession(Session):
    """Statements through the Redshift Data API; `run` sends them as one batch (one transaction)."""

    def __init__(self, client, target: dict, poll_seconds: float, timeout_seconds: float):
        self.client, self.target = client, target
        self.poll_seconds, self.timeout_seconds = poll_seconds, timeout_seconds

    def _wait(self, statement_id: str) -> dict:
        deadline = time.monotonic() + self.timeout_seconds
        while True:
            description = self.client.describe_statement(Id=statement_id)
            status = description["Status"]
            if status == "FINISHED":
                return description
            if status in DATA_API_DONE:
                raise StatementFailed(f"Redshift statement {statement_id} {status}: {description.get('Error', '')}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redshift statement {statement_id} still {status} after {self.timeout_seconds}s")
            time.sleep(self.poll_seconds)

    def _submit(self, sql: str, params: Sequence) -> str:
        names = iter(range(1, len(params) + 1))
        text = re.sub(r"%s", lambda _: f":p{next(names)}", sql)
        request = {"Sql": text, **self.target}
        if params:
            request["Parameters"] = [{"name": f"p{i}", "value": str(v)} for i, v in enumerate(params, start=1)]
        return self.client.execute_statement(**request)["Id"]

    def execute(self, sql: str, params: Sequence = ()) -> int:
        return max(self._wait(self._submit(sql, params)).get("ResultRows", 0), 0)

    def fetchall(self, sql: str, params: Sequence = ()) -> list[tuple]:
        statement_id = self._submit(sql, params)
        self._wait(statement_id)
        rows, token = [], None
        while True:
            page = self.client.get_statement_result(Id=statement_id, **({"NextToken": token} if token else {}))
            rows += [tuple(next(iter(field.values())) if not field.get("isNull") else None for field in record)
                     for record in page["Records"]]
            token = page.get("NextToken")
            if not token:
                return rows

    def run_ddl(self, steps: Sequence[Step]) -> None:
        for step in steps:  # each statement is its own transaction
            self.execute(step.sql, step.params)

    def run(self, steps: Sequence[PlanStep], results: dict[str, int] | None = None) -> dict[str, int]:
        if not all(isinstance(step, Step) for step in steps):
            raise RedshiftLoadError("the Data API sends a transaction at once: it cannot take a Branch")
        if any(step.files for step in steps):
            raise RedshiftLoadError("the Data API cannot stream local files; stage them in S3")
        batch = self.client.batch_execute_statement(Sqls=[render(s.sql, s.params) for s in steps], **self.target)
        description = self._wait(batch["Id"])
        results = {} if results is None else results
        for step, sub in zip(steps, description.get("SubStatements", [])):
            if not step.result:
                continue
            if step.fetch:
                record = self.client.get_statement_result(Id=sub["Id"])["Records"][0][0]
                results[step.result] = next(iter(record.values()))
            else:
                results[step.result] = max(sub.get("ResultRows", 0), 0)
        return results
