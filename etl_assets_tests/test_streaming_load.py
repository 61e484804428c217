"""Streamed loads (issue 18, step 1) end exactly where staged loads do, on DuckDB and PostgreSQL.

`stream_object` hands the warehouse a batch not read yet: its rows are read, transformed and validated
inside the load's transaction, chunk by chunk, with no Parquet round trip. Each test loads the same
files both ways (the streamed batch into one table, `stage_object`'s staged batch into another) and
compares the tables, the rejects and the counts; through Dagster, a file that fails mid-stream leaves
nothing loaded and a FAILED audit row. Small chunks (CHUNK_BYTES) make a few thousand rows many chunks.
"""

from __future__ import annotations

import csv
import dataclasses
import sys
from pathlib import Path

import dagster as dg
import pytest

from etl_assets.landing.zone import LocalLandingZone
from etl_assets.salesforce import staging
from etl_assets.salesforce.catalog import load_catalog
from etl_assets.salesforce.ids import eighteen_character_id
from etl_assets.salesforce.staging import SourceFile, stage_object, stream_object
from etl_assets.warehouse.audit import find_loads
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets.warehouse.postgres import PostgresWarehouse
from etl_assets.warehouse.rows import RowStream
from etl_assets.warehouse.spec import TextLimits
from etl_assets_tests.helpers import materialize_folders, resources, table_digest

TASK = load_catalog()["Task"]
HEADER = ["Id", "IsDeleted", "SystemModstamp", "Subject", "Description", "CallDurationInSeconds", "ActivityDate"]
ROWS = 5_000
BAD_ROW = 2_500  # its ActivityDate is no date: rejected, in the middle of the file


def task_id(n: int) -> str:
    return eighteen_character_id(f"00T{n:012d}")


def task_rows(day: int = 1, ids=range(ROWS), bad: int | None = BAD_ROW) -> list[list[str]]:
    rows = []
    for n in ids:
        description = f"line one of {n}\nline two" if n % 7 == 0 else f"task {n}"
        activity = "2024-02-30" if n == bad else f"2024-05-{1 + n % 28:02d}"
        rows.append([task_id(n), "false", f"2024-05-{day:02d}T06:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
                     f"Subject {n}", description, str(n % 300), activity])
    return rows


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(staging, "CHUNK_BYTES", 1)  # the reader's smallest chunk: 1,000 rows



def reference_of(warehouse, tmp_path: Path):
    """Another table of the same engine, for the staged path."""
    if isinstance(warehouse, DuckDBWarehouse):
        return DuckDBWarehouse(path=str(tmp_path / "staged.duckdb")), "salesforce"
    return warehouse, "staged"


def load_both(warehouse, reference, schema: str, files: list[SourceFile], folder: str = "P", ran: list | None = None):
    """The streamed load into `warehouse`, the staged one into `reference`'s `schema`; `ran` keeps only
    the streamed load's statements."""
    streamed, report = stream_object(TASK, files, folder)
    assert streamed.source is not None and not streamed.files
    result = warehouse.load(streamed)
    if ran is not None:
        ran[:] = list(ran)  # a copy: the staged load's statements are left out
        kept = len(ran)
    staged, staged_report = stage_object(TASK, files, folder)
    staged.spec = dataclasses.replace(staged.spec, schema=schema)
    expected = reference.load(staged)
    staged.discard()
    streamed.discard()
    if ran is not None:
        del ran[kept:]
    return (result, report, streamed), (expected, staged_report)


def rejects(warehouse, schema: str) -> list[tuple]:
    return sorted(warehouse.select(schema, "task_rejects", ["_source_file", "_source_line", "column_name", "reason"]))


def test_a_streamed_load_ends_as_the_staged_one_with_the_same_rejects_and_lines(warehouse, tmp_path, statements):
    reference, schema = reference_of(warehouse, tmp_path)
    files = [SourceFile("backup/P/Task/a.csv", write_csv(tmp_path / "a.csv", task_rows()))]
    (result, report, batch), (expected, staged_report) = load_both(warehouse, reference, schema, files,
                                                                  ran=statements)

    assert (result.inserted, result.updated, result.rows_rejected) == (ROWS - 1, 0, 1)
    assert (result.inserted, result.updated, result.keys_staged) == (expected.inserted, expected.updated,
                                                                     expected.keys_staged)
    assert (report.rows_read, report.rows_rejected) == (staged_report.rows_read, staged_report.rows_rejected)
    assert batch.rows == ROWS - 1 and batch.keys_repeat is False and batch.head.num_rows == 5
    assert table_digest(warehouse, "task") == table_digest(reference, "task", schema=schema)
    found = rejects(warehouse, "salesforce")
    assert found == rejects(reference, schema)
    # the header is line 1 and every 7th row before it spans two lines
    line = 2 + BAD_ROW + len(range(0, BAD_ROW, 7))
    assert [(f, n, c) for f, n, c, _ in found] == [("backup/P/Task/a.csv", line, "activitydate")]
    ran = "\n".join(statements)
    assert "ROW_NUMBER" not in ran and "GROUP BY" not in ran, "distinct keys: no newest-version pass"
    if isinstance(warehouse, PostgresWarehouse):
        assert 'COPY "salesforce"."task"' in ran and "COPY etl_staging" not in ran, "straight into the new table"
    else:
        assert 'INSERT INTO "salesforce"."task"' in ran and "etl_rows" in ran


def test_a_repeated_key_in_a_streamed_first_load_restarts_on_the_general_path(warehouse, tmp_path, statements):
    reference, schema = reference_of(warehouse, tmp_path)
    rows = task_rows(day=2, bad=None)
    rows.append(task_rows(day=1, ids=[10], bad=None)[0])  # older version of Id 10, last in the file
    rows.append(task_rows(day=3, ids=[20], bad=None)[0])  # newer version of Id 20
    rows[-1][3] = "newest of 20"
    files = [SourceFile("backup/P/Task/a.csv", write_csv(tmp_path / "a.csv", rows))]
    (result, report, batch), (expected, _) = load_both(warehouse, reference, schema, files, ran=statements)

    assert batch.keys_repeat is True and report.rows_read == ROWS + 2
    assert (result.keys_staged, result.inserted, result.updated) == (ROWS, ROWS, 0)
    assert (result.keys_staged, result.inserted) == (expected.keys_staged, expected.inserted)
    assert table_digest(warehouse, "task") == table_digest(reference, "task", schema=schema)
    assert warehouse.select("salesforce", "task", ["subject"], where={"id": task_id(20)}) == [("newest of 20",)]
    assert warehouse.select("salesforce", "task", ["subject"], where={"id": task_id(10)}) == [("Subject 10",)]
    streams = {s.split(" (")[0] for s in statements if "etl_rows" in s or "FROM STDIN" in s}
    assert streams == ({'COPY "salesforce"."task"', "COPY etl_staging"} if isinstance(warehouse, PostgresWarehouse)
                       else {'INSERT INTO "salesforce"."task"', "INSERT INTO etl_staging"}), \
        "read straight into the table, then again into the staging table"


def test_a_streamed_reload_updates_what_is_newer_and_a_second_one_changes_nothing(warehouse, tmp_path):
    reference, schema = reference_of(warehouse, tmp_path)
    first = [SourceFile("backup/P/Task/a.csv", write_csv(tmp_path / "a.csv", task_rows(day=1)))]
    load_both(warehouse, reference, schema, first, "P")
    newer = task_rows(day=9, bad=None)
    newer.append(newer[5][:])  # a repeated key in a reload: the general newest-version pass
    newer[-1][3] = "repeated"
    second = [SourceFile("backup/Q/Task/b.csv", write_csv(tmp_path / "b.csv", newer))]
    (result, _, batch), (expected, _) = load_both(warehouse, reference, schema, second, "Q")
    assert batch.keys_repeat is True
    assert (result.inserted, result.updated) == (expected.inserted, expected.updated) == (1, ROWS - 1)
    assert table_digest(warehouse, "task") == table_digest(reference, "task", schema=schema)
    assert rejects(warehouse, "salesforce") == rejects(reference, schema)
    before = table_digest(warehouse, "task")

    again, _ = stream_object(TASK, second, "Q")
    result = warehouse.load(again)
    again.discard()
    assert (result.inserted, result.updated) == (0, 0)
    assert table_digest(warehouse, "task") == before


def test_a_file_that_fails_mid_stream_loads_nothing_and_is_audited_failed(warehouse, tmp_path):
    landing = tmp_path / "landing"
    rows = task_rows(bad=None)
    rows[4_000].append("an eleventh field")  # Arrow refuses it after four chunks went into the COPY
    write_csv(landing / "backup/20240501_Differential/Task/a.csv", rows)
    [result] = materialize_folders(["20240501_Differential"], resources(LocalLandingZone(root=str(landing)), warehouse),
                                   objects=["Task"], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("Task in 20240501_Differential was not loaded: backup/20240501_Differential/"
                                  "Task/a.csv, line "), description
    assert not warehouse.has_table("salesforce", "task") or warehouse.count_rows("salesforce", "task") == 0
    [audit] = find_loads(warehouse, "salesforce.task")
    assert audit["status"] == "FAILED" and "a.csv, line" in audit["error"]


def test_a_streamed_materialization_reports_counts_checks_and_preview(warehouse, tmp_path):
    landing = tmp_path / "landing"
    write_csv(landing / "backup/20240501_Differential/Task/a.csv", task_rows())
    [result] = materialize_folders(["20240501_Differential"], resources(LocalLandingZone(root=str(landing)), warehouse),
                                   objects=["Task"])
    [materialization] = result.asset_materializations_for_node("salesforce__task")
    metadata = materialization.metadata
    assert (metadata["rows_read"].value, metadata["rows_loaded"].value, metadata["rows_rejected"].value) == (
        ROWS, ROWS - 1, 1)
    assert metadata["inserted"].value == ROWS - 1 and metadata["dagster/row_count"].value == ROWS - 1
    assert task_id(0) in metadata["preview"].value and "source_fingerprint" in metadata
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["no_rejected_rows"].passed and checks["no_rejected_rows"].metadata["rows_rejected"].value == 1
    assert checks["no_schema_drift"].passed and checks["no_truncated_values"].passed
    [audit] = find_loads(warehouse, "salesforce.task")
    assert (audit["status"], audit["rows_read"], audit["rows_loaded"], audit["rows_rejected"]) == (
        "FINISHED", ROWS, ROWS - 1, 1)


def test_a_value_that_widens_an_inferred_column_mid_stream_restarts_the_load_as_staging_would(warehouse, tmp_path):
    from etl_assets.salesforce.catalog import parse_catalog
    from etl_assets.warehouse.spec import ColumnType
    from etl_assets_tests.test_catalog import DECLARED, DISCOVERED

    invoice = parse_catalog(DECLARED, DISCOVERED)["Invoice__c"]
    reference, schema = reference_of(warehouse, tmp_path)
    header = "Id,SystemModstamp,Amount__c,Paid__c,Due__c,At__c\n"
    first = tmp_path / "first.csv"
    first.write_text(header + "".join(f"{task_id(i)},2024-05-01T00:00:00Z,{i},true,2024-05-01,10:00:00.000Z\n"
                                      for i in range(3_000)))
    second = tmp_path / "second.csv"  # newer versions; a float Amount__c deep in the file
    second.write_text(header + "".join(f"{task_id(i)},2024-06-01T00:00:00Z,{12.5 if i == 2_500 else i},false,,\n"
                                       for i in range(3_000)))
    for name, path in (("P", first), ("Q", second)):
        files = [SourceFile(f"backup/{name}/Invoice__c/{path.name}", path)]
        streamed, report = stream_object(invoice, files, name,
                                         table_types=warehouse.column_types("salesforce", "invoice__c"))
        result = warehouse.load(streamed)
        streamed.discard()
        staged, _ = stage_object(invoice, files, name, table_types=reference.column_types(schema, "invoice__c"))
        staged.spec = dataclasses.replace(staged.spec, schema=schema)
        expected = reference.load(staged)
        staged.discard()
        assert (result.inserted, result.updated) == (expected.inserted, expected.updated)
    assert report.widened_columns["amount__c"].startswith("integer -> float: backup/Q/Invoice__c/second.csv line")
    assert warehouse.column_types("salesforce", "invoice__c")["amount__c"] is ColumnType.FLOAT
    assert table_digest(warehouse, "invoice__c") == table_digest(reference, "invoice__c", schema=schema)
    assert warehouse.select("salesforce", "invoice__c", ["amount__c"], where={"id": task_id(2_500)}) == [(12.5,)]


# --- PostgreSQL: a re-load merged chunk by chunk as it streams ---------------------------------------


@pytest.fixture
def postgres(postgres_database) -> PostgresWarehouse:
    return PostgresWarehouse(host=postgres_database["host"], port=postgres_database["port"],
                             user=postgres_database["user"], database=postgres_database["database"])


@pytest.fixture
def tiny_merge_chunks(monkeypatch):
    from etl_assets.warehouse import postgres

    monkeypatch.setattr(postgres, "MERGE_CHUNK_BYTES", 1)  # every reader chunk (1,000 rows) merged on its own


def reload_rows() -> list[list[str]]:
    """Newer versions of most keys, older ones of every fifth (the table's row stays), and 100 new keys."""
    rows = []
    for n in range(ROWS + 100):
        [row] = task_rows(day=1 if n % 5 == 0 and n < ROWS else 9, ids=[n], bad=None)
        row[3] = f"reloaded {n}"
        rows.append(row)
    return rows


def test_a_postgres_reload_is_merged_chunk_by_chunk_and_ends_as_the_staged_merge(postgres, tmp_path, statements,
                                                                                 tiny_merge_chunks):
    first = [SourceFile("backup/P/Task/a.csv", write_csv(tmp_path / "a.csv", task_rows(day=2)))]
    load_both(postgres, postgres, "staged", first, "P")
    second = [SourceFile("backup/Q/Task/b.csv", write_csv(tmp_path / "b.csv", reload_rows()))]
    (result, _, batch), (expected, _) = load_both(postgres, postgres, "staged", second, "Q", ran=statements)

    assert batch.keys_repeat is False
    assert (result.inserted, result.updated, result.keys_staged) == (expected.inserted, expected.updated,
                                                                     expected.keys_staged)
    # every fifth key keeps the table's row, but BAD_ROW (2,500) was rejected by the first load: a new key here
    assert (result.inserted, result.updated, result.keys_staged) == (100 + 1, ROWS - ROWS // 5, ROWS + 100)
    assert table_digest(postgres, "task") == table_digest(postgres, "task", schema="staged")
    assert postgres.select("salesforce", "task", ["subject"], where={"id": task_id(5)}) == [("Subject 5",)]
    assert postgres.select("salesforce", "task", ["subject"], where={"id": task_id(6)}) == [("reloaded 6",)]
    merges = [s for s in statements if s.startswith('WITH merged AS (INSERT INTO "salesforce"."task"')]
    emptied = [s for s in statements if s == "TRUNCATE etl_chunk"]
    assert len(merges) == len(emptied) >= 5, "one merge per chunk, as the rows were read"
    ran = "\n".join(statements)
    assert "COPY etl_staging" not in ran and 'UPDATE "salesforce"."task"' not in ran, "no staged batch, no UPDATE"

    again, _ = stream_object(TASK, second, "Q")
    result = postgres.load(again)
    again.discard()
    assert (result.inserted, result.updated) == (0, 0), "a second load of the same file rewrites nothing"
    assert table_digest(postgres, "task") == table_digest(postgres, "task", schema="staged")


def locked_or_written_rows(warehouse: PostgresWarehouse, since: int) -> int:
    """Rows of salesforce.task a transaction after `since` wrote or locked: a lock leaves its transaction
    id in the row's `xmax`; a row it updated is a new version whose `xmin` is that transaction's."""
    with warehouse.session() as session:
        return session.fetchall("SELECT COUNT(*) FROM salesforce.task WHERE (xmax::text::bigint > %s) "
                                "OR (xmin::text::bigint > %s)", (since, since))[0][0]


def current_transaction(warehouse: PostgresWarehouse) -> int:
    with warehouse.session() as session:
        return session.fetchall("SELECT txid_current() % (2^32)::bigint")[0][0]


@pytest.mark.parametrize(("history", "server"), [(False, 15), (True, 15), (True, 18)],
                         ids=["no-history", "history", "history-postgres18"])
def test_a_postgres_reload_that_changes_little_probes_before_merging_and_touches_no_other_row(
        postgres, tmp_path, statements, tiny_merge_chunks, monkeypatch, request, history, server):
    """ON CONFLICT locks every row it meets, a write of its page: a re-run of a big file wrote the whole
    table again (26.9 s against a 9.3 s first load, 1M rows). After a chunk that changed fewer than half
    its rows the next is probed first, so only new and newer rows reach the merge, with the same result.
    A table keeping history probes every chunk once, for its versions, and that probe takes the rows the
    merge would leave out of the chunk: the merge then probes nothing itself. On PostgreSQL 18 a busy
    chunk's merge keeps the versions itself (it reads the rows it replaced: `RETURNING old`), and only
    the chunk after a quiet one is probed, as without history."""
    monkeypatch.setattr(sys.modules[__name__], "TASK", dataclasses.replace(TASK, history=history))
    if server == 18:
        database = request.getfixturevalue("postgres18_database")
        postgres = PostgresWarehouse(host=database["host"], port=database["port"], user=database["user"],
                                     database=database["database"])
    assert postgres.query("SHOW server_version_num")[0][0].startswith(str(server))
    first = [SourceFile("backup/P/Task/a.csv", write_csv(tmp_path / "a.csv", task_rows(day=2)))]
    load_both(postgres, postgres, "staged", first, "P")
    # Three chunks (1,000 rows each) of the first file's own rows at an older day, then the reload's rows.
    rows = task_rows(day=1, ids=range(3_000), bad=None) + reload_rows()[3_000:]
    second = [SourceFile("backup/Q/Task/b.csv", write_csv(tmp_path / "b.csv", rows))]
    (result, _, _), (expected, _) = load_both(postgres, postgres, "staged", second, "Q", ran=statements)

    assert (result.inserted, result.updated) == (expected.inserted, expected.updated)
    assert table_digest(postgres, "task") == table_digest(postgres, "task", schema="staged")
    merges = [s for s in statements if s.startswith('WITH merged AS (INSERT INTO "salesforce"."task"')]
    probed = [s for s in merges if "LEFT JOIN LATERAL" in s]
    versions = [s for s in statements if s.startswith("WITH looked AS MATERIALIZED")]
    returned = [s for s in merges if "moved AS" in s]  # a merge keeping its versions (PostgreSQL 18)
    if history and server == 18:
        assert "moved AS" in merges[0] and 2 <= len(versions) < len(merges) == len(returned) + len(versions) \
            and not probed, "the first chunk and the busy ones merged with their versions, the quiet ones probed once"
    elif history:
        assert len(versions) == len(merges) > 3 and not probed and not returned, "one probe a chunk, the versions' own"
    if history:
        assert result.versions_added == expected.versions_added > 0
        assert table_digest(postgres, "task", schema="salesforce_superseded") == \
            table_digest(postgres, "task", schema="staged_superseded")
    else:
        assert "LEFT JOIN LATERAL" not in merges[0] and 2 <= len(probed) < len(merges) and not versions, \
            "the first chunk merged as it came, the quiet ones after it probed, the busy ones after those not"

    before = current_transaction(postgres)
    again, _ = stream_object(TASK, second, "Q")
    result = postgres.load(again)
    again.discard()
    assert (result.inserted, result.updated) == (0, 0)
    if history and server == 15:  # every chunk was probed before its merge: no row met ON CONFLICT
        assert locked_or_written_rows(postgres, before) == 0
    else:  # only the first chunk's rows (about 1,000: the reader cuts chunks at block ends) met ON CONFLICT,
        # not the file's 5,100 (each of which it locked before); with history on 18, as without
        assert 0 < locked_or_written_rows(postgres, before) < 2_000
    assert table_digest(postgres, "task") == table_digest(postgres, "task", schema="staged")


@pytest.mark.parametrize("apart", [1, 4_000], ids=["in-one-chunk", "across-chunks"])
def test_a_key_repeated_in_a_postgres_reload_restarts_on_the_general_path(postgres, tmp_path, statements,
                                                                         tiny_merge_chunks, apart):
    first = [SourceFile("backup/P/Task/a.csv", write_csv(tmp_path / "a.csv", task_rows(day=2)))]
    load_both(postgres, postgres, "staged", first, "P")
    rows = reload_rows()
    rows.insert(11 + apart, rows[11][:])  # Id 11 twice, the later line newer by its lineage
    rows[11 + apart][3] = "the later line"
    second = [SourceFile("backup/Q/Task/b.csv", write_csv(tmp_path / "b.csv", rows))]
    (result, _, batch), (expected, _) = load_both(postgres, postgres, "staged", second, "Q", ran=statements)

    assert batch.keys_repeat is True
    assert (result.inserted, result.updated, result.keys_staged) == (expected.inserted, expected.updated,
                                                                     expected.keys_staged)
    assert table_digest(postgres, "task") == table_digest(postgres, "task", schema="staged")
    assert postgres.select("salesforce", "task", ["subject"], where={"id": task_id(11)}) == [("the later line",)]
    ran = "\n".join(statements)
    assert "COPY etl_chunk" in ran and "COPY etl_staging" in ran, "merged by chunk, rolled back, then staged"


def test_a_full_backup_merged_chunk_by_chunk_marks_deletions_as_the_staged_merge(postgres, tmp_path, statements,
                                                                                 tiny_merge_chunks):
    from datetime import date

    first = [SourceFile("backup/P/Task/a.csv", write_csv(tmp_path / "a.csv", task_rows(day=2)))]
    load_both(postgres, postgres, "staged", first, "P")
    rows = [row for n, row in enumerate(reload_rows()) if n % 11]  # a full backup lacking every 11th key
    second = [SourceFile("backup/Q/Task/b.csv", write_csv(tmp_path / "b.csv", rows))]
    streamed, _ = stream_object(TASK, second, "Q")
    streamed.full_snapshot_date = date(2024, 6, 1)
    result = postgres.load(streamed)
    streamed.discard()
    staged, _ = stage_object(TASK, second, "Q")
    staged.spec, staged.full_snapshot_date = dataclasses.replace(staged.spec, schema="staged"), date(2024, 6, 1)
    expected = postgres.load(staged)
    staged.discard()

    assert any(s.startswith('WITH merged AS (INSERT INTO "salesforce"."task"') for s in statements)
    assert (result.inserted, result.updated) == (expected.inserted, expected.updated)
    assert table_digest(postgres, "task") == table_digest(postgres, "task", schema="staged")
    marked = postgres.count_rows("salesforce", "task", non_null="_deleted_in_source_at")
    assert marked == len([n for n in range(ROWS) if n % 11 == 0 and n != BAD_ROW]) > 0
    assert sorted(postgres.select("salesforce", "task_full_backup_ids", ["id", "last_full_partition"])) == \
        sorted(postgres.select("staged", "task_full_backup_ids", ["id", "last_full_partition"]))


def test_a_postgres_table_without_its_primary_key_is_merged_by_the_general_path(postgres, tmp_path, statements):
    first = [SourceFile("backup/P/Task/a.csv", write_csv(tmp_path / "a.csv", task_rows(day=2)))]
    load_both(postgres, postgres, "staged", first, "P")
    with postgres.session() as session:
        session.execute("ALTER TABLE salesforce.task DROP CONSTRAINT task_pkey")
    second = [SourceFile("backup/Q/Task/b.csv", write_csv(tmp_path / "b.csv", reload_rows()))]
    (result, _, _), (expected, _) = load_both(postgres, postgres, "staged", second, "Q", ran=statements)

    assert (result.inserted, result.updated) == (expected.inserted, expected.updated) == (101, ROWS - ROWS // 5)
    assert table_digest(postgres, "task") == table_digest(postgres, "task", schema="staged")
    ran = "\n".join(statements)
    assert 'UPDATE "salesforce"."task"' in ran and "etl_chunk" not in ran


def test_a_postgres_reload_that_fails_after_chunks_were_merged_changes_nothing(postgres, tmp_path, statements,
                                                                               tiny_merge_chunks):
    from etl_assets.landing.csv_reader import CsvFormatError

    first = [SourceFile("backup/P/Task/a.csv", write_csv(tmp_path / "a.csv", task_rows(day=2)))]
    load_both(postgres, postgres, "staged", first, "P")
    before = table_digest(postgres, "task")
    rows = reload_rows()
    rows[4_500].append("an eleventh field")  # refused after several chunks were merged into the table
    second = [SourceFile("backup/Q/Task/b.csv", write_csv(tmp_path / "b.csv", rows))]
    streamed, _ = stream_object(TASK, second, "Q")
    with pytest.raises(CsvFormatError, match="b.csv, line"):
        postgres.load(streamed)
    streamed.discard()
    assert sum(s.startswith('WITH merged AS (INSERT INTO "salesforce"."task"') for s in statements) >= 3
    assert table_digest(postgres, "task") == before


def test_a_big_stream_freezes_the_heap_after_its_first_collection_and_unfreezes_it_at_the_end(tmp_path):
    """The later collections scan only what the load made (staging.GC_EVERY_CHUNKS); the process's
    heap is collectable again once the load ends, read to the end or stopped early."""
    import gc

    files = [SourceFile("backup/P/Task/a.csv", write_csv(tmp_path / "a.csv", task_rows(ids=range(12_000), bad=None)))]
    for stop_after in (None, staging.GC_EVERY_CHUNKS + 2):  # chunks of ~1,000 rows
        assert gc.get_freeze_count() == 0
        batch, _ = stream_object(TASK, files, "P")
        frozen, stream = [], iter(RowStream(batch, TextLimits()))
        for n, _rows in enumerate(stream, start=1):
            frozen.append(gc.get_freeze_count())
            if n == stop_after:
                stream.close()
                break
        batch.discard()
        assert len(frozen) == stop_after if stop_after else len(frozen) > staging.GC_EVERY_CHUNKS + 2
        # the source runs a chunk ahead: it may have ended (and unfrozen) before the last chunk is taken
        assert frozen[0] == 0 and max(frozen) > 0, f"frozen after the first collection, not before: {frozen}"
        assert gc.get_freeze_count() == 0, "unfrozen when the load ended"


# --- DuckDB: a re-load of a table without history streamed straight into it ----------------------------

PLAIN_TASK = dataclasses.replace(TASK, history=False)  # no versions kept: the re-load may stream in place


def load_plain(warehouse, files: list[SourceFile], folder: str, schema: str | None = None, staged: bool = False,
               full_snapshot=None):
    """PLAIN_TASK's files loaded into `warehouse` (streamed, or `staged` first), into `schema` if given."""
    batch, _ = (stage_object if staged else stream_object)(PLAIN_TASK, files, folder)
    if schema:
        batch.spec = dataclasses.replace(batch.spec, schema=schema)
    batch.full_snapshot_date = full_snapshot
    try:
        return warehouse.load(batch), batch
    finally:
        batch.discard()


def first_loaded_pair(tmp_path: Path) -> tuple[DuckDBWarehouse, DuckDBWarehouse]:
    """Two DuckDB warehouses holding the same first folder: one for the streamed re-load, one for the staged."""
    warehouse = DuckDBWarehouse(path=str(tmp_path / "streamed.duckdb"))
    reference = DuckDBWarehouse(path=str(tmp_path / "staged.duckdb"))
    first = [SourceFile("backup/P/Task/a.csv", write_csv(tmp_path / "a.csv", task_rows(day=2)))]
    load_plain(warehouse, first, "P")
    load_plain(reference, first, "P", staged=True)
    return warehouse, reference


def in_place_merges(statements: list[str]) -> list[str]:
    return [s for s in statements if s.startswith("CREATE TEMPORARY TABLE etl_matched AS") and "n.rowid" in s]


def test_a_duckdb_reload_without_history_streams_into_the_table_and_ends_as_the_staged_merge(tmp_path, statements):
    """Newer rows replace the table's, older ones leave it as it was, new keys are added and the rejects
    are the file's: as the staged merge does, with the rows read once, straight into the table."""
    warehouse, reference = first_loaded_pair(tmp_path)
    rows = reload_rows()
    rows[7][6] = "2024-13-01"  # rejected
    second = [SourceFile("backup/Q/Task/b.csv", write_csv(tmp_path / "b.csv", rows))]
    statements.clear()
    result, batch = load_plain(warehouse, second, "Q")
    ran = list(statements)
    expected, _ = load_plain(reference, second, "Q", staged=True)

    assert batch.files == [] and batch.keys_repeat is False, "streamed, not staged"
    assert len(in_place_merges(ran)) == 1 and not any("etl_staging" in s and "INSERT" in s for s in ran)
    assert any(s.startswith('INSERT INTO "salesforce"."task"') and "etl_rows" in s for s in ran)
    # every fifth key keeps the table's row; BAD_ROW (2,500) was rejected by the first load: a new key here
    assert (result.inserted, result.updated, result.keys_staged, result.rows_rejected) == \
        (expected.inserted, expected.updated, expected.keys_staged, expected.rows_rejected) == \
        (100 + 1, ROWS - ROWS // 5 - 1, ROWS + 100 - 1, 1)
    assert table_digest(warehouse, "task") == table_digest(reference, "task")
    assert rejects(warehouse, "salesforce") == rejects(reference, "salesforce") != []
    assert warehouse.select("salesforce", "task", ["subject"], where={"id": task_id(5)}) == [("Subject 5",)]
    assert warehouse.select("salesforce", "task", ["subject"], where={"id": task_id(6)}) == [("reloaded 6",)]
    assert warehouse.count_rows("salesforce", "task") == ROWS + 100

    before = table_digest(warehouse, "task")
    again, _ = load_plain(warehouse, second, "Q")
    assert (again.inserted, again.updated) == (0, 0), "a second load of the same file changes nothing"
    assert table_digest(warehouse, "task") == before


def test_duckdb_reloads_in_place_end_the_same_whatever_the_order(tmp_path):
    """Newest wins by version, then partition, file and line: loading the later folder first ends as
    loading it last, the second load of either order taking the in-place merge."""
    later = reload_rows()
    later[40][2] = later[41][2] = "2024-05-02T06:00:00.000Z"  # the same version as the first file's rows:
    later[40][3], later[41][3] = "tie 40", "tie 41"           # the later folder wins the tie
    files = {"P": [SourceFile("backup/P/Task/a.csv", write_csv(tmp_path / "a.csv", task_rows(day=2)))],
             "Q": [SourceFile("backup/Q/Task/b.csv", write_csv(tmp_path / "b.csv", later))]}
    digests = []
    for order in (("P", "Q"), ("Q", "P")):
        warehouse = DuckDBWarehouse(path=str(tmp_path / f"{''.join(order)}.duckdb"))
        for folder in order:
            load_plain(warehouse, files[folder], folder)
        digests.append(table_digest(warehouse, "task"))
        assert warehouse.count_rows("salesforce", "task") == ROWS + 100
    assert digests[0] == digests[1]


def test_a_key_repeated_in_a_duckdb_reload_restarts_on_the_general_path(tmp_path, statements):
    warehouse, reference = first_loaded_pair(tmp_path)
    rows = reload_rows()
    rows.insert(3_011, rows[11][:])  # Id 11 twice, the later line newer by its lineage
    rows[3_011][3] = "the later line"
    second = [SourceFile("backup/Q/Task/b.csv", write_csv(tmp_path / "b.csv", rows))]
    statements.clear()
    result, batch = load_plain(warehouse, second, "Q")
    expected, _ = load_plain(reference, second, "Q", staged=True)

    assert batch.keys_repeat is True
    assert (result.inserted, result.updated, result.keys_staged) == (expected.inserted, expected.updated,
                                                                     expected.keys_staged)
    assert table_digest(warehouse, "task") == table_digest(reference, "task")
    assert warehouse.select("salesforce", "task", ["subject"], where={"id": task_id(11)}) == [("the later line",)]
    streams = [s.split(" (")[0] for s in statements if "etl_rows" in s]
    assert streams == ['INSERT INTO "salesforce"."task"', "INSERT INTO etl_staging"], \
        "straight into the table, rolled back, then read again on the general path"


def test_a_full_backup_streamed_into_a_duckdb_table_marks_deletions_as_the_staged_merge(tmp_path, statements):
    from datetime import date

    warehouse, reference = first_loaded_pair(tmp_path)
    rows = [row for n, row in enumerate(reload_rows()) if n % 11]  # a full backup lacking every 11th key
    second = [SourceFile("backup/Q/Task/b.csv", write_csv(tmp_path / "b.csv", rows))]
    statements.clear()
    result, _ = load_plain(warehouse, second, "Q", full_snapshot=date(2024, 6, 1))
    expected, _ = load_plain(reference, second, "Q", staged=True, full_snapshot=date(2024, 6, 1))

    assert len(in_place_merges(statements)) == 1
    assert (result.inserted, result.updated) == (expected.inserted, expected.updated)
    assert table_digest(warehouse, "task") == table_digest(reference, "task")
    marked = warehouse.count_rows("salesforce", "task", non_null="_deleted_in_source_at")
    assert marked == len([n for n in range(ROWS) if n % 11 == 0 and n != BAD_ROW]) > 0
    for name in ("task_full_backup_ids", "etl_full_backups"):
        assert table_digest(warehouse, name) == table_digest(reference, name)


def test_a_duckdb_reload_that_fails_mid_stream_changes_nothing(tmp_path, statements):
    from etl_assets.landing.csv_reader import CsvFormatError

    warehouse = DuckDBWarehouse(path=str(tmp_path / "streamed.duckdb"))
    load_plain(warehouse, [SourceFile("backup/P/Task/a.csv", write_csv(tmp_path / "a.csv", task_rows(day=2)))], "P")
    before = table_digest(warehouse, "task")
    rows = reload_rows()
    rows[4_500].append("an eleventh field")  # refused after most rows went into the table
    statements.clear()
    with pytest.raises(CsvFormatError, match="b.csv, line"):
        load_plain(warehouse, [SourceFile("backup/Q/Task/b.csv", write_csv(tmp_path / "b.csv", rows))], "Q")
    assert any(s.startswith('INSERT INTO "salesforce"."task"') and "etl_rows" in s for s in statements)
    assert table_digest(warehouse, "task") == before
    assert warehouse.count_rows("salesforce", "task") == ROWS - 1


def test_a_duckdb_table_keeping_history_streams_its_reload_in_place_with_the_staged_merges_versions(
        tmp_path, statements):
    """Its versions come from the same match of each key's two rows: the table rows that newer versions
    displace are copied into the superseded table before they go, and the batch rows older than the
    table's (every fifth key here) go where a staged merge puts a batch's older versions. Current rows,
    versions and counts equal the staged merge's."""
    warehouse = DuckDBWarehouse(path=str(tmp_path / "history.duckdb"))
    reference = DuckDBWarehouse(path=str(tmp_path / "staged.duckdb"))
    first = [SourceFile("backup/P/Task/a.csv", write_csv(tmp_path / "a.csv", task_rows(day=2)))]
    second = [SourceFile("backup/Q/Task/b.csv", write_csv(tmp_path / "b.csv", reload_rows()))]
    results = []
    for target, load in ((warehouse, stream_object), (reference, stage_object)):
        for files, folder in ((first, "P"), (second, "Q")):
            batch, _ = load(TASK, files, folder)
            assert batch.spec.history
            statements.clear()
            results.append(target.load(batch))
            batch.discard()
        if target is warehouse:
            assert not batch.files and len(in_place_merges(statements)) == 1, "streamed straight into the table"
    _, streamed, _, staged = results
    assert (streamed.inserted, streamed.updated) == (staged.inserted, staged.updated) == (101, ROWS - ROWS // 5)
    assert streamed.versions_added == staged.versions_added == ROWS + 100
    assert table_digest(warehouse, "task") == table_digest(reference, "task")
    assert table_digest(warehouse, "task", schema="salesforce_superseded") == \
        table_digest(reference, "task", schema="salesforce_superseded")
    # a superseded version for every key of the first load: displaced, or the reload's older one (BAD_ROW,
    # rejected by the first load, is one of the 101 new keys)
    assert warehouse.count_rows("salesforce_superseded", "task") == ROWS - 1
