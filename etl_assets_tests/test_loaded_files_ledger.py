"""The loaded-files ledger (etl_assets/salesforce/loaded_files.py), through the object asset and Dagster, on
DuckDB and the real PostgreSQL: a re-run of a loaded folder opens no file and leaves the table as it was; a
changed file, a changed column policy or the force tag loads the folder again; a load that fails records
nothing; the ledger's rows commit in the load's own transaction; a table made anew forgets its files."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from etl_assets.landing.zone import LocalLandingZone
from etl_assets.salesforce.assets import build_object_asset
from etl_assets.salesforce.backup_files import ObjectFile
from etl_assets.salesforce.catalog import parse_catalog
from etl_assets.salesforce.loaded_files import FORCE_RELOAD_TAG, LEDGER_TABLE
from etl_assets.salesforce.partitions import differential_folders
from etl_assets.warehouse.audit import find_loads
from etl_assets.warehouse.postgres import PostgresWarehouse
from etl_assets_tests.helpers import resources, table_digest

pytestmark = pytest.mark.slow  # each test is several Dagster runs: seconds each, over the quick tier's budget

FOLDERS = ["20240501_Differential", "20240502_Differential"]
KEY = "k3y-for-the-ledger-test-0123456789"
HEADER = "Id,LastName,Email,SystemModstamp,NumberOfEmployees__c\n"


def catalog(policy: str = "hash") -> dict:
    return {"objects": {"Contact": {
        "columns": {"Id": {"type": "id", "nullable": False}, "LastName": "string", "Email": "string",
                    "SystemModstamp": "datetime", "NumberOfEmployees__c": {"type": "integer", "checks": {"min": 0}}},
        "column_policies": {"LastName": policy}}}}


def row(n: int, day: int, employees: str = "3") -> str:
    return f"003000000000{n:03d}AAA,Last {n},c{n}@example.com,2024-05-{day:02d}T06:00:00.000Z,{employees}\n"


def contact_file(root: Path, folder: str) -> Path:
    return root / "backup" / folder / "Contact" / "Contact.csv"


@pytest.fixture
def landing(tmp_path) -> Path:
    """Two folders of Contact; the first holds a rejected row (a negative count), line 4."""
    root = tmp_path / "landing"
    for folder, text in ((FOLDERS[0], HEADER + row(1, 1) + row(2, 1) + row(3, 1, employees="-1")),
                         (FOLDERS[1], HEADER + row(1, 2, employees="4") + row(4, 2))):
        path = contact_file(root, folder)
        path.parent.mkdir(parents=True)
        path.write_text(text)
    return root


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """The key of every object file the asset opens to read."""
    keys: list[str] = []
    original = ObjectFile.source

    def source(item, landing_zone):
        keys.append(item.key)
        return original(item, landing_zone)

    monkeypatch.setattr(ObjectFile, "source", source)
    return keys


class Runs:
    """The Contact asset of a catalog, run folder by folder on one instance."""

    def __init__(self, landing: Path, warehouse, instance: dg.DagsterInstance):
        self.zone, self.warehouse, self.instance = LocalLandingZone(root=str(landing)), warehouse, instance
        instance.add_dynamic_partitions(differential_folders.name, FOLDERS)

    def materialize(self, folder: str, policy: str = "hash", tags: dict | None = None,
                    raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
        asset = build_object_asset(parse_catalog(catalog(policy))["Contact"])
        return dg.materialize([asset], partition_key=folder, resources=resources(self.zone, self.warehouse, KEY),
                              instance=self.instance, tags=tags, raise_on_error=raise_on_error)

    def ledger(self) -> list[tuple]:
        return sorted(self.warehouse.query(
            f'SELECT "folder", "source_key", "run_id", "folder_rows_read" FROM salesforce."{LEDGER_TABLE}"'))


def metadata(result: dg.ExecuteInProcessResult) -> dict:
    [materialization] = result.asset_materializations_for_node("salesforce__contact")
    return {name: value.value for name, value in materialization.metadata.items()}


def checks(result: dg.ExecuteInProcessResult) -> dict:
    """Each check's verdict and what it counted (rows rejected, values truncated, columns not in the catalog)."""
    found = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.asset_check_evaluation_data
            counted = {k: v.value for k, v in evaluation.metadata.items() if k != "examples"}
            found[evaluation.check_name] = (evaluation.passed, counted.get("rows_rejected"), counted)
    return found


def xmin(warehouse: PostgresWarehouse, sql: str) -> set:
    return {value for (value,) in warehouse.query(sql)}


def test_a_rerun_opens_no_file_and_leaves_the_table_its_rejects_and_checks_as_they_were(
        warehouse, landing, opened):
    with dg.instance_for_test() as instance:
        runs = Runs(landing, warehouse, instance)
        first = runs.materialize(FOLDERS[0])
        assert opened == [f"backup/{FOLDERS[0]}/Contact/Contact.csv"]
        ledger, table = runs.ledger(), table_digest(warehouse, "contact")
        rejects = table_digest(warehouse, "contact_rejects")
        assert ledger == [(FOLDERS[0], f"backup/{FOLDERS[0]}/Contact/Contact.csv", first.run_id, 3)]
        if isinstance(warehouse, PostgresWarehouse):
            versions = xmin(warehouse, 'SELECT xmin::text FROM salesforce.contact')
        opened.clear()

        again = runs.materialize(FOLDERS[0])

        assert opened == []  # the file was never opened
        shown = metadata(again)
        assert shown["skipped_already_loaded"] is True and shown["load_mode"] == "skipped"
        assert [(f["file"], f["run_id"]) for f in shown["already_loaded_files"]] == [
            (f"backup/{FOLDERS[0]}/Contact/Contact.csv", first.run_id)]
        assert FORCE_RELOAD_TAG in shown["force_reload"] and shown["dagster/row_count"] == 2
        assert runs.ledger() == ledger  # still the first run's rows
        assert table_digest(warehouse, "contact") == table and table_digest(warehouse, "contact_rejects") == rejects
        if isinstance(warehouse, PostgresWarehouse):  # no row of the table was written again
            assert xmin(warehouse, 'SELECT xmin::text FROM salesforce.contact') == versions
        # The checks show what the load that read the file found: its rejected row is still reported.
        assert checks(again) == checks(first) and checks(again)["no_rejected_rows"][:2] == (False, 1)
        [skip, load] = find_loads(warehouse, "salesforce.contact")
        assert (skip["status"], load["status"]) == ("SKIPPED", "FINISHED")
        assert first.run_id in skip["error"] and FORCE_RELOAD_TAG in skip["error"]
        assert skip["run_id"] == again.run_id


def test_a_rewritten_file_loads_its_folder_again(warehouse, landing, opened):
    with dg.instance_for_test() as instance:
        runs = Runs(landing, warehouse, instance)
        runs.materialize(FOLDERS[0])
        with contact_file(landing, FOLDERS[0]).open("a") as rewritten:
            rewritten.write(row(5, 1))
        opened.clear()
        again = runs.materialize(FOLDERS[0])
        assert opened == [f"backup/{FOLDERS[0]}/Contact/Contact.csv"]
        assert "skipped_already_loaded" not in metadata(again) and metadata(again)["inserted"] == 1
        assert ("003000000000005AAA",) in warehouse.query("SELECT id FROM salesforce.contact")
        assert runs.ledger() == [(FOLDERS[0], f"backup/{FOLDERS[0]}/Contact/Contact.csv", again.run_id, 4)]


def test_a_file_added_to_a_loaded_folder_loads_the_folder_whole(warehouse, landing, opened):
    """Every file of the folder is read, the unchanged one too: its rejects are the folder's, replaced
    by the load, and must not vanish."""
    with dg.instance_for_test() as instance:
        runs = Runs(landing, warehouse, instance)
        runs.materialize(FOLDERS[0])
        (contact_file(landing, FOLDERS[0]).parent / "Contact_2.csv").write_text(HEADER + row(6, 1))
        opened.clear()
        runs.materialize(FOLDERS[0])
        assert sorted(opened) == [f"backup/{FOLDERS[0]}/Contact/Contact.csv", f"backup/{FOLDERS[0]}/Contact/Contact_2.csv"]
        assert warehouse.count_rows("salesforce", "contact_rejects") == 1
        assert [r[1] for r in runs.ledger()] == sorted(opened)


def test_a_changed_column_policy_loads_again_under_it(warehouse, landing, opened):
    with dg.instance_for_test() as instance:
        runs = Runs(landing, warehouse, instance)
        runs.materialize(FOLDERS[0], policy="hash")
        opened.clear()
        # The rows the file loads as differ under the new policy: read and merged again, recorded anew.
        masked = runs.materialize(FOLDERS[0], policy="mask")
        assert opened == [f"backup/{FOLDERS[0]}/Contact/Contact.csv"]
        assert "skipped_already_loaded" not in metadata(masked) and metadata(masked)["rows_read"] == 3
        assert [r[2] for r in runs.ledger()] == [masked.run_id]
        opened.clear()
        runs.materialize(FOLDERS[0], policy="mask")
        assert opened == []  # the same policy again: skipped


def test_the_force_tag_reads_and_merges_a_loaded_folder_again(warehouse, landing, opened):
    with dg.instance_for_test() as instance:
        runs = Runs(landing, warehouse, instance)
        runs.materialize(FOLDERS[0])
        # Out of band: the table emptied by hand. The ledger cannot know; forcing puts the rows back.
        _execute(warehouse, "DELETE FROM salesforce.contact")
        opened.clear()
        forced = runs.materialize(FOLDERS[0], tags={FORCE_RELOAD_TAG: "true"})
        assert opened == [f"backup/{FOLDERS[0]}/Contact/Contact.csv"]
        assert metadata(forced)["forced_reload"] is True and metadata(forced)["inserted"] == 2
        assert runs.ledger()[0][2] == forced.run_id


def _execute(warehouse, sql: str) -> None:
    with warehouse.session() as session:
        session.execute(sql)


def test_a_failed_load_records_no_file_and_the_next_run_loads_it(warehouse, landing, opened):
    """A file that breaks mid-read (an unterminated quote after good rows) fails the load inside its
    transaction: no row, no reject and no ledger row; once fixed, the folder loads."""
    with dg.instance_for_test() as instance:
        runs = Runs(landing, warehouse, instance)
        runs.materialize(FOLDERS[0])
        broken = contact_file(landing, FOLDERS[1])
        good = broken.read_text()
        broken.write_text(good + '003000000000009AAA,"never closed,c9@example.com,2024-05-02T06:00:00.000Z,1\n')
        failed = runs.materialize(FOLDERS[1], raise_on_error=False)
        assert not failed.success
        assert [r[0] for r in runs.ledger()] == [FOLDERS[0]]
        assert warehouse.count_rows("salesforce", "contact") == 2  # the first folder's only
        broken.write_text(good)
        opened.clear()
        loaded = runs.materialize(FOLDERS[1])
        assert opened == [f"backup/{FOLDERS[1]}/Contact/Contact.csv"] and metadata(loaded)["inserted"] == 1
        assert [r[0] for r in runs.ledger()] == FOLDERS


def test_the_ledger_rows_commit_in_the_transaction_of_the_rows_they_record(postgres_database, landing):
    warehouse = PostgresWarehouse(**{k: postgres_database[k] for k in ("host", "port", "user", "database")})
    with dg.instance_for_test() as instance:
        runs = Runs(landing, warehouse, instance)
        runs.materialize(FOLDERS[0])
        runs.materialize(FOLDERS[1])
        for folder in FOLDERS:
            ledger = xmin(warehouse, f"SELECT xmin::text FROM salesforce.{LEDGER_TABLE} WHERE folder = '{folder}'")
            rows = xmin(warehouse, f"SELECT xmin::text FROM salesforce.contact WHERE _source_partition = '{folder}'")
            audit = xmin(warehouse, "SELECT xmin::text FROM etl_audit.loads WHERE source_key LIKE "
                                    f"'backup/{folder}/%'")
            assert len(ledger) == 1 and ledger == rows == audit


def test_a_table_made_anew_forgets_the_files_of_the_table_that_was_dropped(warehouse, landing, opened):
    with dg.instance_for_test() as instance:
        runs = Runs(landing, warehouse, instance)
        runs.materialize(FOLDERS[0])
        runs.materialize(FOLDERS[1])
        _execute(warehouse, "DROP TABLE salesforce.contact CASCADE")
        opened.clear()
        runs.materialize(FOLDERS[1])  # no table: not skipped; the load creates it and forgets the others
        assert opened == [f"backup/{FOLDERS[1]}/Contact/Contact.csv"]
        assert [r[0] for r in runs.ledger()] == [FOLDERS[1]]
        runs.materialize(FOLDERS[0])
        assert opened[-1] == f"backup/{FOLDERS[0]}/Contact/Contact.csv"
        assert warehouse.count_rows("salesforce", "contact") == 3


def test_redshift_writes_the_ledger_in_its_load_transaction_with_values_known_at_planning(
        s3_endpoint, s3_bucket, postgres_database):
    """Redshift's Data API sends a transaction at once (no Deferred values): the ledger's counts come from
    the staged batch when the load is planned. Its SQL runs on PostgreSQL, as test_redshift.py's plans do."""
    from dagster_aws.s3 import S3Resource

    from etl_assets.landing.zone import LandedFile
    from etl_assets.salesforce.loaded_files import already_loaded, bookkeeping, ledger_spec
    from etl_assets.salesforce.staging import StageReport
    from etl_assets.warehouse.redshift import RedshiftWarehouse
    from etl_assets.warehouse.steps import Deferred, flatten
    from etl_assets_tests.conftest import S3_CREDENTIALS
    from etl_assets_tests.test_redshift import batch_of, redshift_on_postgres, run_plan_on_postgres

    redshift = RedshiftWarehouse(s3=S3Resource(endpoint_url=s3_endpoint, **S3_CREDENTIALS), staging_bucket=s3_bucket[1],
                                 iam_role_arn="arn:aws:iam::123456789012:role/copy")
    target = redshift_on_postgres(redshift, postgres_database)
    note = parse_catalog({"objects": {"Note__c": {"columns": {
        "Id": {"type": "id", "nullable": False}, "SystemModstamp": "datetime", "Body": "string",
        "Amount": "float"}}}})["Note__c"]
    folder = FOLDERS[0]
    item = ObjectFile(folder, "Note__c", LandedFile(f"backup/{folder}/Note__c/n.csv", 120, 1714550400.123456, '"e1"'))
    batch = batch_of([("A", 1, "a"), ("B", 2, "b")], partition=folder)
    target.ensure_table(ledger_spec(note.schema))
    batch.bookkeeping = bookkeeping(target, note, folder, [item], "applied", "run-1", batch, StageReport(rows_read=2))
    steps = flatten(target.plan(batch, {}).transaction)
    assert not any(isinstance(p, Deferred) for step in steps for p in step.params)
    assert already_loaded(target, note, folder, [item], "applied") is None  # the table is not there yet
    run_plan_on_postgres(target, postgres_database, batch)
    [earlier] = already_loaded(target, note, folder, [item], "applied")
    assert (earlier.run_id, earlier.folder_rows_read, earlier.folder_report.rows_read) == ("run-1", 2, 2)
    assert already_loaded(target, note, folder, [item], "other spec") is None
    assert target.query(f'SELECT file_fingerprint FROM salesforce."{LEDGER_TABLE}"') == [
        ("size=120;modified=1714550400.123456;etag=\"e1\"",)]
