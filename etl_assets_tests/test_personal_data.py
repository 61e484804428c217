"""Personal data kept out by column policies, end to end (docs/personal-data.md): a backup whose personal
columns hold marker values is loaded by the object asset through Dagster, then the warehouse (every column of
every table), the Dagster storage and run logs, and the staging area are searched for the markers."""

from __future__ import annotations

import hashlib
import hmac
import tempfile
from pathlib import Path

import dagster as dg
import pytest

from etl_assets.landing.zone import LocalLandingZone
from etl_assets.salesforce.assets import build_object_asset
from etl_assets.salesforce.catalog import parse_catalog
from etl_assets_tests.helpers import materialize_folders, resources

MARKER = "markerpii"
KEY = "k3y-for-the-marker-test-0123456789"
FOLDERS = ["20240501_Differential", "20240502_Differential"]
CATALOG = {
    "column_policies": [{"match": "Birthdate", "policy": "exclude"}, {"match": "*Phone", "policy": "mask"},
                        {"match": "*Email*", "policy": "hash"}],
    "objects": {"Contact": {"columns": {"Id": {"type": "id", "nullable": False}, "LastName": "string",
                                        "Email": "string", "Birthdate": "string", "SystemModstamp": "datetime",
                                        "NumberOfEmployees__c": {"type": "integer", "checks": {"min": 0}}},
                            "column_policies": {"LastName": "hash"}}},
}
HEADER = "Id,LastName,Email,Personal_Email__c,Birthdate,MobilePhone,SystemModstamp,NumberOfEmployees__c\n"


def _row(n: int, stamp: str, employees: str = "3") -> str:
    return (f"003000000000{n:03d}AAA,{MARKER}-last-{n},{MARKER}-{n}@example.com,{MARKER}.home{n}@example.org,"
            f"{MARKER}-born-{n},+1 {MARKER} 555 01{n:02d},{stamp},{employees}\n")


def _backup(root: Path) -> None:
    first = root / "backup" / FOLDERS[0] / "Contact"
    first.mkdir(parents=True)
    # Row 3 is rejected (a negative count): its raw record is kept, so it must hold no clear value either.
    (first / "Contact.csv").write_text(HEADER + _row(1, "2024-05-01T06:00:00.000Z") + _row(2, "2024-05-01T06:00:00.000Z")
                                       + _row(3, "2024-05-01T06:00:00.000Z", employees="-1"))
    second = root / "backup" / FOLDERS[1] / "Contact"
    second.mkdir(parents=True)
    (second / "Contact.csv").write_text(HEADER + _row(1, "2024-05-02T06:00:00.000Z", employees="4"))


def _warehouse_hits(warehouse) -> list[str]:
    """Every column of every table (current, rejects, load changes, audit) holding the marker in any case."""
    columns = warehouse.query(
        "SELECT table_schema, table_name, column_name FROM information_schema.columns "
        "WHERE table_schema NOT IN ('information_schema', 'pg_catalog')")
    hits = []
    for schema, table, column in columns:
        [(count,)] = warehouse.query(f'SELECT count(*) FROM "{schema}"."{table}" '
                                     f"WHERE strpos(lower(CAST(\"{column}\" AS VARCHAR)), '{MARKER}') > 0")
        if count:
            hits.append(f"{schema}.{table}.{column}: {count}")
    return hits


def _file_hits(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and MARKER.encode() in p.read_bytes().lower()]


def test_no_clear_value_reaches_the_warehouse_dagster_or_staging(warehouse, tmp_path, monkeypatch):
    landing, home, staging = tmp_path / "landing", tmp_path / "dagster_home", tmp_path / "tmp"
    _backup(landing)
    staging.mkdir()
    home.mkdir()
    monkeypatch.setenv("TMPDIR", str(staging))
    monkeypatch.setattr(tempfile, "tempdir", str(staging))  # staged Parquet, spills and copies land here
    contact = parse_catalog(CATALOG)["Contact"]
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        results = materialize_folders(FOLDERS, resources(LocalLandingZone(root=str(landing)), warehouse, KEY),
                                      instance=instance, assets=[build_object_asset(contact)])
        assert all(r.success for r in results)
        events = [str(e) for r in results for e in instance.all_logs(r.run_id)]

    assert _warehouse_hits(warehouse) == []
    assert not any(MARKER in e.lower() for e in events)
    assert _file_hits(home) == []  # event log, run storage, compute logs
    assert _file_hits(staging) == []
    # Nor the hashing key: not in an event, the run storage, a log or a staged file.
    assert not any(KEY in e for e in events)
    assert [p for root in (home, staging) for p in root.rglob("*")
            if p.is_file() and KEY.encode() in p.read_bytes()] == []

    table = warehouse.read_table("salesforce", "contact").set_index("id")
    assert "birthdate" not in table.columns
    digest = hmac.new(KEY.encode(), f"{MARKER}-1@example.com".encode(), hashlib.sha256).hexdigest()
    assert table.loc["003000000000001AAA", "email"] == digest  # hashed, not dropped: it still joins
    assert table.loc["003000000000001AAA", "mobilephone"] == "***0101"
    assert table.loc["003000000000001AAA", "numberofemployees__c"] == 4  # the later folder merged
    assert len(table) == 2  # row 3 rejected
    assert warehouse.query("SELECT count(*) FROM salesforce.contact_rejects") == [(1,)]


def test_a_hash_policy_without_a_key_fails_the_run_at_start(tmp_path, monkeypatch):
    from etl_assets.salesforce.personal_data import HASH_KEY_ENV, hash_key_resource
    from etl_assets.warehouse.duckdb import DuckDBWarehouse

    landing = tmp_path / "landing"
    _backup(landing)
    monkeypatch.delenv(HASH_KEY_ENV, raising=False)
    contact = parse_catalog(CATALOG)["Contact"]
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    defs = {**resources(LocalLandingZone(root=str(landing)), warehouse), "column_policy_key": hash_key_resource([contact])}
    with pytest.raises(dg.DagsterInvalidConfigError, match=f'environment variable "{HASH_KEY_ENV}" which is not set'):
        materialize_folders(FOLDERS[:1], defs, assets=[build_object_asset(contact)])
    assert warehouse.query("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'salesforce'") == [(0,)]


def test_files_staged_for_redshift_copy_hold_no_clear_value(s3_endpoint, s3_bucket, postgres_database, tmp_path):
    """The Redshift target writes Parquet to S3 for COPY. Pointed at PostgreSQL, the load stops at the first
    Redshift-only statement after the upload (a view WITH NO SCHEMA BINDING, before the COPY itself) and keeps
    its staged files for diagnosis: every byte of them is searched."""
    from dagster_aws.s3 import S3Resource

    from etl_assets.warehouse.redshift import RedshiftWarehouse
    from etl_assets_tests.conftest import S3_CREDENTIALS

    client, bucket = s3_bucket
    landing = tmp_path / "landing"
    _backup(landing)
    target = RedshiftWarehouse(s3=S3Resource(endpoint_url=s3_endpoint, **S3_CREDENTIALS), staging_bucket=bucket,
                               staging_prefix="etl/staging", iam_role_arn="arn:aws:iam::123456789012:role/copy",
                               host=postgres_database["host"], port=postgres_database["port"],
                               user=postgres_database["user"], database=postgres_database["database"])
    [result] = materialize_folders(FOLDERS[:1], resources(LocalLandingZone(root=str(landing)), target, KEY),
                                   assets=[build_object_asset(parse_catalog(CATALOG)["Contact"])], raise_on_error=False)
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "staged files kept at s3://" in str(failure.step_failure_data.error)
    staged = {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
              for o in client.list_objects_v2(Bucket=bucket, Prefix="etl/staging/salesforce/contact/")["Contents"]}
    assert any(k.endswith("rejects.parquet") for k in staged) and any(k.endswith("rows.manifest") for k in staged)
    digest = hmac.new(KEY.encode(), f"{MARKER}-2@example.com".encode(), hashlib.sha256).hexdigest()
    assert any(digest.encode() in body for body in staged.values())  # the rows are there, hashed
    assert [k for k, body in staged.items() if MARKER.encode() in body.lower()] == []


def _current(warehouse) -> list[dict]:
    frame = warehouse.read_table("salesforce", "contact").drop(columns=["_loaded_at"]).sort_values("id")
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _rejects(warehouse) -> list[tuple]:
    return sorted(warehouse.query("SELECT _source_line, column_name, reason, raw_record FROM salesforce.contact_rejects"))


def _stored_hits(warehouse, tables) -> list[str]:
    """The marker in the bytes the engine keeps the tables in: the whole DuckDB file, or each PostgreSQL
    table's relation file (read by the server after a CHECKPOINT: the test user is a superuser), dead row
    versions included."""
    if hasattr(warehouse, "path"):
        return [warehouse.path] if MARKER.encode() in Path(warehouse.path).read_bytes().lower() else []
    with warehouse.session() as session:
        session.execute("CHECKPOINT")  # the table's pages as written to its files, not only in the server's buffers
    hits = []
    for schema, table in tables:
        [(stored,)] = warehouse.query("SELECT pg_read_binary_file(pg_relation_filepath(%s::regclass))",
                                      [f'"{schema}"."{table}"'])
        if MARKER.encode() in bytes(stored).lower():
            hits.append(f"{schema}.{table}")
    return hits


def test_turning_a_policy_on_rewrites_the_rows_already_loaded_like_a_load_under_it(warehouse, tmp_path):
    """Loaded in the clear, then the policies are turned on and the command's function run: the tables
    equal those of a load made under the policies, and a second run changes nothing."""
    from etl_assets.salesforce.personal_data import rewrite_existing, rewritten_tables
    from etl_assets.warehouse.duckdb import DuckDBWarehouse

    landing = tmp_path / "landing"
    _backup(landing)
    clear = parse_catalog({"objects": {"Contact": {**CATALOG["objects"]["Contact"], "column_policies": {}}}})["Contact"]
    protected = parse_catalog(CATALOG)["Contact"]
    zone = LocalLandingZone(root=str(landing))
    assert all(r.success for r in materialize_folders(FOLDERS, resources(zone, warehouse), assets=[build_object_asset(clear)]))
    assert _warehouse_hits(warehouse)  # the clear values are there

    planned = rewrite_existing(warehouse, protected, key=KEY.encode(), dry_run=True)
    assert {r.column: (r.action.value, r.values) for r in planned} == {
        "birthdate": ("exclude", 0), "email": ("hash", 2), "lastname": ("hash", 2), "mobilephone": ("mask", 2),
        "personal_email__c": ("hash", 2)}
    assert _warehouse_hits(warehouse)  # a dry run changes nothing
    rewrite_existing(warehouse, protected, key=KEY.encode())
    assert _warehouse_hits(warehouse) == []
    # The rewrite committed, but the engine keeps the replaced values in its files until it reclaims them.
    rewritten = rewritten_tables(protected)
    assert "no longer" in warehouse.reclaim_space(rewritten)
    assert _stored_hits(warehouse, rewritten) == []

    reference = DuckDBWarehouse(path=str(tmp_path / "reference.duckdb"))
    assert all(r.success for r in materialize_folders(FOLDERS, resources(zone, reference, KEY),
                                                      assets=[build_object_asset(protected)]))
    assert _current(warehouse) == _current(reference)
    assert [r[1:] for r in _rejects(warehouse)] == [r[1:] for r in _rejects(reference)]

    again = rewrite_existing(warehouse, protected, key=KEY.encode())
    assert all(r.values == 0 and r.rejects == 0 for r in again)
    assert _current(warehouse) == _current(reference)



def test_postgres_reclaims_the_space_once_an_older_transaction_ends_and_says_who_holds_it_otherwise(postgres_database,
                                                                                                    tmp_path):
    """A transaction that began before the rewrite may still read the replaced row versions, so VACUUM FULL
    copies them into the new files (as it did when autovacuum's ANALYZE of a loaded table happened to be
    running). The reclaim says whom it waits for, and writes the tables again once they end; if they do
    not end in time, it fails naming the tables and the holder, and the values are indeed still there."""
    import psycopg2

    from etl_assets.salesforce.personal_data import rewrite_existing, rewritten_tables
    from etl_assets.warehouse.errors import SpaceNotReclaimed
    from etl_assets.warehouse.postgres import PostgresWarehouse
    from etl_assets.warehouse.postgres_reclaim import vacuum_full

    landing = tmp_path / "landing"
    _backup(landing)
    warehouse = PostgresWarehouse(host=postgres_database["host"], port=postgres_database["port"],
                                  user=postgres_database["user"], database=postgres_database["database"])
    clear = parse_catalog({"objects": {"Contact": {**CATALOG["objects"]["Contact"], "column_policies": {}}}})["Contact"]
    protected = parse_catalog(CATALOG)["Contact"]
    assert all(r.success for r in materialize_folders(FOLDERS, resources(LocalLandingZone(root=str(landing)), warehouse),
                                                      assets=[build_object_asset(clear)]))
    reader = psycopg2.connect(host=postgres_database["host"], port=postgres_database["port"],
                              dbname=postgres_database["database"], user=postgres_database["user"],
                              application_name="a report holding its snapshot")
    reader.set_session(isolation_level="REPEATABLE READ")
    try:
        # Its snapshot is taken now, before the rewrite (reading the catalog: a reader of Contact itself would
        # hold a lock VACUUM FULL waits for, and its snapshot would be gone when the VACUUM runs).
        with reader.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_class")
            cursor.execute("SELECT pg_backend_pid()")
            [(reader_pid,)] = cursor.fetchall()
        rewrite_existing(warehouse, protected, key=KEY.encode())
        assert _warehouse_hits(warehouse) == []
        rewritten = rewritten_tables(protected)

        connection = psycopg2.connect(host=postgres_database["host"], port=postgres_database["port"],
                                      dbname=postgres_database["database"], user=postgres_database["user"])
        connection.autocommit = True
        try:
            with pytest.raises(SpaceNotReclaimed) as held:
                vacuum_full(connection, rewritten, wait_seconds=0)
        finally:
            connection.close()
        assert "salesforce.contact (" in str(held.value)
        assert (f"pid {reader_pid} (a report holding its snapshot, database {postgres_database['database']}"
                in str(held.value))
        assert "salesforce.contact" in _stored_hits(warehouse, rewritten)  # what it says is so

        told = []

        def end_the_report(line: str) -> None:
            told.append(line)
            reader.rollback()

        assert "no longer" in warehouse.reclaim_space(rewritten, on_wait=end_the_report)
    finally:
        reader.close()
    assert f"pid {reader_pid} (a report holding its snapshot" in told[0]
    assert _stored_hits(warehouse, rewritten) == []

def test_the_apply_policies_command_says_what_it_changes_and_that_turning_off_is_for_new_loads(tmp_path, monkeypatch,
                                                                                                 capsys):
    """`etl-assets catalog apply-policies`: a dry run lists each column and changes nothing, a run rewrites,
    and once a policy is turned off again the command says the values already written stay."""
    from click.testing import CliRunner

    from etl_assets import cli
    from etl_assets.salesforce import catalog as catalog_module
    from etl_assets.warehouse.duckdb import DuckDBWarehouse

    landing, path = tmp_path / "landing", tmp_path / "w.duckdb"
    _backup(landing)
    clear = parse_catalog({"objects": {"Contact": {**CATALOG["objects"]["Contact"], "column_policies": {}}}})
    warehouse = DuckDBWarehouse(path=str(path))
    assert all(r.success for r in materialize_folders(FOLDERS, resources(LocalLandingZone(root=str(landing)), warehouse),
                                                      assets=[build_object_asset(clear["Contact"])]))
    monkeypatch.setenv("ETL_ASSETS_WAREHOUSE", "duckdb")
    monkeypatch.setenv("ETL_ASSETS_DUCKDB_PATH", str(path))
    monkeypatch.setenv("ETL_ASSETS_HASH_KEY", KEY)

    def run(catalog, *args):
        monkeypatch.setattr(catalog_module, "load_catalog", lambda *a, **k: catalog)
        result = CliRunner().invoke(cli.cli, ["catalog", "apply-policies", *args], prog_name="etl-assets")
        assert result.exit_code == 0, result.output
        return result.output

    monkeypatch.delenv("ETL_ASSETS_HASH_KEY")  # a dry run hashes nothing, so it needs no key
    dry = run(parse_catalog(CATALOG), "--dry-run")
    assert "Contact.email: hash: 2 distinct value(s) hashed; 1 reject record(s) rewritten (would)" in dry
    assert ("Contact.birthdate: exclude: dropped from salesforce.contact, salesforce_superseded.contact (would)"
            in dry)  # the table and its versions (docs/history.md)
    assert _warehouse_hits(warehouse)
    monkeypatch.setattr(catalog_module, "load_catalog", lambda *a, **k: parse_catalog(CATALOG))
    capsys.readouterr()
    assert cli.main(["catalog", "apply-policies"]) == 2  # the console script's configuration error
    refused = capsys.readouterr().err
    assert refused.count("\n") == 1 and "ETL_ASSETS_HASH_KEY is not set" in refused  # one line, no traceback
    assert _warehouse_hits(warehouse)
    monkeypatch.setenv("ETL_ASSETS_HASH_KEY", KEY)
    done = run(parse_catalog(CATALOG), "--object", "contact")
    assert "(would)" not in done and _warehouse_hits(warehouse) == []
    # Nor in the file's free blocks: DuckDB reuses them without clearing, so the command writes the database anew.
    assert "copied into a new file" in done and MARKER.encode() not in path.read_bytes().lower()
    assert "kept, but" not in done
    off = run(parse_catalog({**CATALOG, "column_policies": []}))  # Contact's own LastName hash stays
    assert ("Contact.email: kept, but 2 value(s) look hashed or masked: turning a policy off applies to new loads "
            "only") in off
    assert "Contact.lastname: hash: nothing left to rewrite" in off


def test_catalog_refresh_lists_the_columns_each_policy_caught(tmp_path, monkeypatch, capsys):
    """Rules are patterns: what they caught in the objects refresh discovered is listed, by rule."""
    import argparse

    import yaml

    from etl_assets.salesforce import catalog as catalog_module
    from etl_assets.salesforce import discovery

    document = yaml.safe_load(catalog_module.CATALOG_PATH.read_text())
    document["column_policies"] = CATALOG["column_policies"]
    document["objects"]["User"]["column_policies"] = {"Phone": "exclude"}
    catalog_file = tmp_path / "catalog.yaml"
    catalog_file.write_text(yaml.safe_dump(document, sort_keys=False))
    monkeypatch.setattr(discovery, "CATALOG_YAML", catalog_file)
    landing = tmp_path / "landing" / "backup" / FOLDERS[0] / "Prospect__c"
    landing.mkdir(parents=True)
    (landing / "Prospect__c.csv").write_text(
        "Id,Work_Email__c,Birthdate,Fax_Phone,SystemModstamp\n"
        "a0B000000000001AAA,a@example.com,1980-01-01,+1 415 555 0101,2024-05-01T06:00:00.000Z\n")
    try:
        discovery.refresh_command(argparse.Namespace(state=str(tmp_path / "state.yaml"), sample_rows=100),
                                  LocalLandingZone(root=str(tmp_path / "landing")))
    finally:
        catalog_module.load_catalog.cache_clear()
    caught = {line.split(": ", 1)[0]: line.split(": ", 1)[1].split(", ")
              for line in capsys.readouterr().out.splitlines() if line.startswith("column policy ")}
    assert {"Prospect__c.Birthdate exclude", "Contact.Birthdate exclude"} <= set(caught["column policy rule 'Birthdate'"])
    assert {"Prospect__c.Fax_Phone mask", "Contact.MobilePhone mask"} <= set(caught["column policy rule '*Phone'"])
    assert {"Prospect__c.Work_Email__c hash", "Contact.Email hash"} <= set(caught["column policy rule '*Email*'"])
    assert caught["column policy objects.User.column_policies"] == ["User.Phone exclude"]
    assert not any(c.startswith("User.Phone") for c in caught["column policy rule '*Phone'"])  # its own entry won
