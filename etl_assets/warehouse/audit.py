"""One audit trail for every load of every domain, kept in the warehouse itself.

This replaces the DynamoDB log tables and the configuration-database audit table
of the systems we retire: a row per load attempt, queried with `etl-assets audit`
or the read-only HTTP endpoint. FINISHED, FAILED and ABORTED as before; a file feed
also records DUPLICATE (content already loaded under another key) and HELD (a
destructive load a guard stopped); a Salesforce folder whose files were already loaded as they
are is SKIPPED (not read again). Reads never run DDL: a missing table or column
reads as no rows or empty values, and only writing a row creates or extends it.

`etl_audit.content_claims` makes "loaded once" exact: a load claims its content's hash in
its own transaction, and the table's primary key lets only one load hold a claim.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import asdict, dataclass, field

from etl_assets.notifications import Notifier
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.spec import Column, ColumnType, TableSpec, quote
from etl_assets.warehouse.steps import Deferred, Step

AUDIT_SCHEMA, AUDIT_TABLE = "etl_audit", "loads"
STATUSES = ("FINISHED", "FAILED", "ABORTED", "DUPLICATE", "HELD", "SKIPPED")
COLUMNS = {
    "load_id": ColumnType.STRING,
    "domain": ColumnType.STRING,
    "source_key": ColumnType.STRING,
    "target_table": ColumnType.STRING,
    "action": ColumnType.STRING,
    "rows_read": ColumnType.INTEGER,
    "rows_loaded": ColumnType.INTEGER,
    "rows_rejected": ColumnType.INTEGER,
    "status": ColumnType.STRING,
    "error": ColumnType.STRING,
    "landed_at": ColumnType.DATETIME,
    "started_at": ColumnType.DATETIME,
    "finished_at": ColumnType.DATETIME,
    "run_id": ColumnType.STRING,
    "schema_drift": ColumnType.STRING,  # JSON: columns added, removed or retyped against the previous file
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class LoadRecord:
    domain: str
    source_key: str
    target_table: str
    action: str
    status: str = "FINISHED"
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    error: str | None = None
    landed_at: dt.datetime | None = None
    started_at: dt.datetime = field(default_factory=utcnow)
    finished_at: dt.datetime | None = None
    run_id: str | None = None
    schema_drift: str | None = None
    load_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")


AUDIT = TableSpec(AUDIT_SCHEMA, AUDIT_TABLE, None, None, tuple(Column(n, t) for n, t in COLUMNS.items()))


def _table() -> str:
    return f"{quote(AUDIT_SCHEMA)}.{quote(AUDIT_TABLE)}"


def record_load(warehouse: Warehouse, record: LoadRecord) -> LoadRecord:
    """Write one audit row (its own transaction, so a failed load is still recorded)."""
    record.finished_at = record.finished_at or utcnow()
    warehouse.ensure_table(AUDIT)
    values = asdict(record)
    with warehouse.session() as session:
        session.run(warehouse.upsert_steps(AUDIT, {n: values[n] for n in COLUMNS}))
    return record


def ensure_audit_table(warehouse: Warehouse) -> None:
    """The audit table, with every column, before a load writes its row in its own transaction."""
    warehouse.ensure_table(AUDIT)


def record_steps(warehouse: Warehouse, record: LoadRecord, **deferred: Deferred) -> list[Step]:
    """The audit row as steps of the load's own transaction (`Warehouse.load(batch, after=...)`): it
    commits exactly when the load does. `deferred` columns (`rows_loaded` from the load's results;
    `rows_read` and `rows_rejected` of a batch read during the load) and `finished_at` are resolved
    when the steps run. The audit table must exist: `warehouse.ensure_table(AUDIT)`."""
    values = asdict(record)
    values["finished_at"] = record.finished_at or Deferred(lambda results: utcnow())
    values.update(deferred)
    return warehouse.upsert_steps(AUDIT, {n: values[n] for n in COLUMNS})


def report_load(warehouse: Warehouse, record: LoadRecord, notifier: Notifier | None, log) -> None:
    """The one way every domain tells a load's outcome: the audit row, then the notification (the
    run log when there is no notifier). A notification that cannot be sent is logged as an error
    and nothing more: the load and its audit row stand."""
    record_load(warehouse, record)
    notify_load(record, notifier, log)


def notify_load(record: LoadRecord, notifier: Notifier | None, log) -> None:
    """The notification of an outcome whose audit row is written (the run log when there is no notifier)."""
    message = {"file": record.source_key, "table": record.target_table, "status": record.status,
               "reason": record.error, "rows_loaded": record.rows_loaded, "run_id": record.run_id}
    try:
        (notifier or Notifier()).publish(message, log=log)
    except Exception as error:
        log.error(f"Notification for {record.source_key} ({record.status}) could not be sent: {error}")


def find_loads(warehouse: Warehouse, table: str | None = None, since: dt.datetime | None = None,
               limit: int = 1000, status: str | None = None) -> list[dict]:
    """Audit rows, newest first, for a target table (schema.table or table), since a time, with a status.
    A read: no DDL, so a read-only user can run it and a missing table is simply no loads."""
    present = set(warehouse.column_types(AUDIT_SCHEMA, AUDIT_TABLE))
    if not present:
        return []
    clauses, params = [], []
    if table:
        clauses.append(f'("target_table" = {warehouse.param} OR "target_table" LIKE {warehouse.param})')
        params += [table, f"%.{table}"]
    if since:
        clauses.append(f'"started_at" >= {warehouse.param}')
        params.append(since)
    if status:
        clauses.append(f'"status" = {warehouse.param}')
        params.append(status)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    names = ", ".join(quote(n) if n in present else "NULL" for n in COLUMNS)
    rows = warehouse.query(
        f'SELECT {names} FROM {_table()}{where} ORDER BY "started_at" DESC LIMIT {int(limit)}', params
    )
    return [dict(zip(COLUMNS, row)) for row in rows]


CLAIMS_TABLE = "content_claims"  # etl_audit.content_claims: which key's load holds each content of each table


def _claims() -> str:
    return f"{quote(AUDIT_SCHEMA)}.{quote(CLAIMS_TABLE)}"


def ensure_claims_table(warehouse: Warehouse) -> None:
    """The claims table with its primary key (target_table, content_sha256), which `ensure_table` cannot
    declare; made once, DDL only when it is missing."""
    if warehouse.has_table(AUDIT_SCHEMA, CLAIMS_TABLE):
        return
    types = warehouse.dialect().type_names
    text, timestamp = types[ColumnType.STRING], types[ColumnType.DATETIME]
    with warehouse.session() as session:
        session.lock_catalog()
        session.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(AUDIT_SCHEMA)}")
        session.execute(f"CREATE TABLE IF NOT EXISTS {_claims()} (target_table {text} NOT NULL, content_sha256 "
                        f"{text} NOT NULL, source_key {text} NOT NULL, claimed_at {timestamp}, "
                        "PRIMARY KEY (target_table, content_sha256))")


def claim_steps(warehouse: Warehouse, target_table: str, content_sha256: str, source_key: str,
                claim: bool = True) -> list[Step]:
    """Steps of a load's own transaction: drop what `source_key` claimed in the table before (its content
    changed, or it is re-run), then with `claim` claim `content_sha256` for it. A second load of the same
    content then fails inside its transaction, however the two interleave: by the primary key on
    PostgreSQL (the insert waits for the first transaction, then fails) and DuckDB (the later commit
    fails); Redshift does not enforce keys, but its load LOCKs the target table first, so the count
    sees the earlier claim and its cast fails. `ensure_claims_table` first."""
    p, table = warehouse.param, _claims()
    steps = [Step(f"DELETE FROM {table} WHERE target_table = {p} AND source_key = {p}", (target_table, source_key))]
    if claim:
        steps += [
            Step(f"INSERT INTO {table} (target_table, content_sha256, source_key, claimed_at) "
                 f"VALUES ({p}, {p}, {p}, {p})", (target_table, content_sha256, source_key, utcnow())),
            Step(f"SELECT CAST(CASE WHEN COUNT(*) > 1 THEN 'content claimed twice' ELSE '1' END AS INTEGER) "
                 f"FROM {table} WHERE target_table = {p} AND content_sha256 = {p}", (target_table, content_sha256)),
        ]
    return steps


def claimed_by(warehouse: Warehouse, target_table: str, content_sha256: str) -> str | None:
    """The key whose committed load holds the content's claim in the table, if any."""
    rows = warehouse.select(AUDIT_SCHEMA, CLAIMS_TABLE, ["source_key"],
                            {"target_table": target_table, "content_sha256": content_sha256})
    return rows[0][0] if rows else None
