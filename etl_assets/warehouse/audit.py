"""One audit trail for every load of every domain, kept in the warehouse itself.

This replaces the DynamoDB log tables and the configuration-database audit table
of the systems we retire: a row per load attempt, queried with `etl-assets audit`
or the read-only HTTP endpoint. FINISHED, FAILED and ABORTED as before; a file feed
also records DUPLICATE (content already loaded under another key) and HELD (a
destructive load a guard stopped). Reads never run DDL: a missing table or column
reads as no rows or empty values, and only writing a row creates or extends it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import asdict, dataclass, field

from etl_assets.notifications import Notifier
from etl_assets.warehouse.base import Deferred, Step, Warehouse
from etl_assets.warehouse.spec import Column, ColumnType, TableSpec, quote

AUDIT_SCHEMA, AUDIT_TABLE = "etl_audit", "loads"
STATUSES = ("FINISHED", "FAILED", "ABORTED", "DUPLICATE", "HELD")
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
