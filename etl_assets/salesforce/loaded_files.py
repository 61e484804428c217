"""The loaded-files ledger: which backup files each object table holds, as they were and as they were read.

Like Snowflake's COPY load metadata, and the file feeds' `loaded_files`: one row per (table, file key)
in `<schema>.etl_loaded_files` (the `etl_` prefix of `etl_full_backups`: no Salesforce object is named
so), written by the load's own transaction (`Bookkeeping` on the batch), so a row exists exactly when
the rows it stands for committed. A row holds the file's fingerprint (size, modification time at full
precision, the S3 ETag where the listing gives one, a zip member's CRC-32) and the fingerprint of what
the load applied (`applied_fingerprint`).

The skip rule (`already_loaded`): a folder's object is not read again when *every* file of it in the
folder is recorded for the table with the same fingerprints, and no other file is recorded for that
folder. Loading only the files that changed would not give the table a full load gives: a load
replaces the folder's rejects (those of the skipped files would vanish), a full backup records the keys
it holds and the snapshot's cutoff as evidence for deletion marks (the skipped files' keys would look
deleted), and ties in newest-wins are decided by file and line across the folder's files. A folder with
one changed file therefore loads whole, as before; a folder with none costs a listing and one read.

What the ledger cannot know: a table emptied or altered by hand. A load that creates the table forgets
every earlier row of the ledger for it (`Bookkeeping.on_new_table`), and `etl-assets catalog
apply-policies` forgets the table's rows when it rewrites them; anything else done outside the
platform needs a forced reload (the run tag FORCE_RELOAD_TAG, `etl-assets materialize --force-reload`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from etl_assets.salesforce.backup_files import ObjectFile
from etl_assets.salesforce.catalog import SalesforceObject
from etl_assets.salesforce.encodings import FolderEncoding
from etl_assets.salesforce.staging import StageReport
from etl_assets.salesforce.transform import TRANSFORM_VERSION
from etl_assets.warehouse.audit import utcnow
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.batch import Bookkeeping, StagedBatch
from etl_assets.warehouse.spec import Column, ColumnType, TableSpec, quote
from etl_assets.warehouse.steps import Deferred, Step

LEDGER_TABLE = "etl_loaded_files"
# A run tag: "true" loads every selected folder again, whatever the ledger holds.
FORCE_RELOAD_TAG = "salesforce/force_reload"
FORCE_HINT = (f"to load them again, launch with the run tag {FORCE_RELOAD_TAG}=true "
              "(or `etl-assets materialize --force-reload`)")

COLUMNS = {
    "table_name": ColumnType.STRING,
    "source_key": ColumnType.STRING,  # the file's landing key (a zip member: `<archive key>/<member>`)
    "folder": ColumnType.STRING,
    "file_fingerprint": ColumnType.STRING,  # compared: size, modification time, ETag, CRC-32
    "file_size": ColumnType.INTEGER,
    "file_modified_at": ColumnType.DATETIME,  # for people; the fingerprint holds the exact time
    "applied_spec": ColumnType.STRING,  # compared: `applied_fingerprint`
    "folder_rows_read": ColumnType.INTEGER,  # rows the load read from the object's files in the folder
    "folder_report": ColumnType.STRING,  # JSON: what the checks found reading them, shown again on a skip
    "run_id": ColumnType.STRING,
    "loaded_at": ColumnType.DATETIME,
}


def ledger_spec(schema: str) -> TableSpec:
    return TableSpec(schema, LEDGER_TABLE, None, None, tuple(Column(n, t) for n, t in COLUMNS.items()))


def file_fingerprint(item: ObjectFile) -> str:
    """What identifies the file's bytes without reading them: size, modification time (repr: every digit
    the listing gave), the S3 ETag where listed, and a zip member's CRC-32 (its archive's time and ETag)."""
    landed = item.landed
    parts = [f"size={landed.size}", f"modified={landed.modified!r}"]
    if landed.etag:
        parts.append(f"etag={landed.etag}")
    if item.member is not None:
        parts.append(f"crc32={item.member.crc:08x}")
    return ";".join(parts)


def _canonical(value):
    """A JSON-able form of catalog values that is the same in every process (no set order, no ids)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(_canonical(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, re.Pattern):
        return value.pattern
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def applied_fingerprint(obj: SalesforceObject, encoding: FolderEncoding, hash_key: bytes | None) -> str:
    """A digest of everything besides the file that decides the rows a load writes: the object's columns
    (types, checks, nullability, long-text handling), key, version column, history, its column policies,
    the folder's encodings, the hash key's identity (an HMAC of a constant, never the key) and
    TRANSFORM_VERSION. Its description and Redshift table attributes change no row and are left out."""
    described = {name: value for name, value in _canonical(obj).items() if name not in ("description", "redshift")}
    applied = {
        "object": described,
        "encoding": [encoding.encoding, encoding.fallback],
        "hash_key": hmac.new(hash_key, b"etl_assets loaded-files ledger", "sha256").hexdigest()[:16]
        if hash_key else None,
        "transform_version": TRANSFORM_VERSION,
    }
    return hashlib.sha256(json.dumps(applied, sort_keys=True, default=repr).encode()).hexdigest()


@dataclass(frozen=True)
class EarlierLoad:
    """A file's row in the ledger: what the skip's metadata shows."""

    source_key: str
    run_id: str
    loaded_at: dt.datetime | None
    folder_rows_read: int | None
    folder_report: StageReport


def look_up(warehouse: Warehouse, obj: SalesforceObject, folder: str, files: Sequence[ObjectFile], applied: str,
            forced: bool) -> list[EarlierLoad] | None:
    """`already_loaded` unless `forced`; when the folder is to load, the ledger table made ready for its
    rows. The asset's first use of the warehouse: an error a retry cannot cure (an unreachable address, a
    permission) fails the step at once, naming it, as the IO manager's load would; a transient one is raised."""
    try:
        earlier = None if forced else already_loaded(warehouse, obj, folder, files, applied)
        if earlier is None:
            warehouse.ensure_table(ledger_spec(obj.schema))
        return earlier
    except Exception as error:
        if warehouse.is_transient(error):
            raise
        fix, table = warehouse.what_to_fix(error), f"{obj.schema}.{obj.table}"
        raise dg.Failure(description=f"{table} was not loaded, and retrying cannot help: {fix}" if fix else
                         f"{warehouse.describe()} refused the load of {table}: {error}", allow_retries=False) from error


def already_loaded(warehouse: Warehouse, obj: SalesforceObject, folder: str, files: Sequence[ObjectFile],
                   applied: str) -> list[EarlierLoad] | None:
    """The ledger's rows for `files` when every one is recorded as it is now under `applied` and the
    folder has no other file recorded for the table (the module's skip rule); else None. A read only: no
    ledger or no table (dropped by hand) is no skip."""
    schema, table = obj.schema, obj.table
    if not files or not warehouse.has_table(schema, LEDGER_TABLE) or not warehouse.has_table(schema, table):
        return None
    rows = warehouse.select(schema, LEDGER_TABLE, ["source_key", "file_fingerprint", "applied_spec", "run_id",
                                                   "loaded_at", "folder_rows_read", "folder_report"],
                            {"table_name": table, "folder": folder})
    recorded = {row[0]: row for row in rows}
    now = {item.key: file_fingerprint(item) for item in files}
    if set(recorded) != set(now):
        return None
    if any(recorded[key][1] != fingerprint or recorded[key][2] != applied or recorded[key][6] is None
           for key, fingerprint in now.items()):
        return None
    return [EarlierLoad(key, recorded[key][3], recorded[key][4], recorded[key][5], report_from(recorded[key][6]))
            for key in sorted(now)]


REPORTED = ("rows_read", "rows_rejected", "values_truncated", "drift_columns", "widened_columns")
# The fields of the first samples the checks show (a reject's raw record stays in the rejects table only).
SAMPLED = {"reject_samples": ("_source_file", "_source_line", "column_name", "reason"),
           "truncated_samples": ("file", "line", "column", "bytes")}


def report_summary(report: StageReport) -> str:
    """What the checks of a load found (StageReport's counts, columns and first samples), as JSON."""
    summary = {name: _canonical(getattr(report, name)) for name in REPORTED}
    summary.update({name: [{k: sample.get(k) for k in fields} for sample in getattr(report, name)]
                    for name, fields in SAMPLED.items()})
    return json.dumps(summary, default=str)


def report_from(summary: str) -> StageReport:
    values = json.loads(summary)
    values["drift_columns"] = tuple(values.get("drift_columns") or ())
    return StageReport(**{name: values[name] for name in (*REPORTED, *SAMPLED) if name in values})


def bookkeeping(warehouse: Warehouse, obj: SalesforceObject, folder: str, files: Sequence[ObjectFile],
                applied: str, run_id: str, batch: StagedBatch, report: StageReport) -> Bookkeeping:
    """The ledger's rows for a load of the folder's `files` into `batch` (`report`: what reading them
    finds), as steps of its transaction: the folder's earlier rows replaced (a file gone from the folder
    is no longer recorded), and every row of the table forgotten first when the load creates the table."""
    spec = ledger_spec(obj.schema)  # made by `look_up`
    p, target, table = warehouse.param, f"{quote(spec.schema)}.{quote(spec.name)}", obj.table
    # Known once the rows were read: as the transaction runs, or (an engine that stages first) when it is planned.
    deferred = warehouse.capabilities.runs_steps_in_order

    def known(value: Callable[[], object]):
        return Deferred(lambda results: value()) if deferred else value()

    def steps() -> list[Step]:
        stamp: list[dt.datetime] = []

        def loaded_at() -> dt.datetime:  # one time for all the folder's rows
            if not stamp:
                stamp.append(utcnow())
            return stamp[0]

        found = {"folder_rows_read": known(lambda: batch.rows + batch.rejected_rows),
                 "folder_report": known(lambda: report_summary(report)), "loaded_at": known(loaded_at)}
        made = [Step(f'DELETE FROM {target} WHERE "table_name" = {p} AND "folder" = {p}', (table, folder))]
        for item in files:
            row = {"table_name": table, "source_key": item.key, "folder": folder,
                   "file_fingerprint": file_fingerprint(item), "file_size": item.landed.size,
                   "file_modified_at": dt.datetime.fromtimestamp(item.landed.modified, dt.timezone.utc),
                   "applied_spec": applied, "run_id": run_id, **found}
            made += warehouse.upsert_steps(spec, {name: row[name] for name in COLUMNS})
        return made

    return Bookkeeping(steps=steps, on_new_table=(forget_step(warehouse, obj.schema, table),))


def forget_step(warehouse: Warehouse, schema: str, table: str) -> Step:
    """Forget every file recorded for `table` (it was made anew or rewritten): its folders load again."""
    return Step(f'DELETE FROM {quote(schema)}.{quote(LEDGER_TABLE)} WHERE "table_name" = {warehouse.param}',
                (table,))


def skip_metadata(earlier: Sequence[EarlierLoad]) -> dict:
    """What a skipped materialization shows: each file, the run that loaded it and when, how to force."""
    return {
        "skipped_already_loaded": True,
        "already_loaded_files": [
            {"file": e.source_key, "run_id": e.run_id,
             "loaded_at": e.loaded_at.isoformat() if isinstance(e.loaded_at, dt.datetime) else e.loaded_at,
             "folder_rows_read": e.folder_rows_read} for e in earlier],
        "force_reload": FORCE_HINT,
    }


def skip_reason(obj: SalesforceObject, folder: str, earlier: Sequence[EarlierLoad]) -> str:
    runs = sorted({e.run_id for e in earlier})
    return (f"{obj.api_name} in {folder}: {len(earlier)} file(s) already loaded into {obj.schema}.{obj.table} "
            f"as they are now, by run(s) {', '.join(runs)}; not read again ({FORCE_HINT})")


def force_requested(tags: Mapping[str, str]) -> bool:
    return tags.get(FORCE_RELOAD_TAG, "").strip().lower() in ("true", "1", "yes")
