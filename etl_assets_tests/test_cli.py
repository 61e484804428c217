"""`etl-assets` as an operator runs it: a real process, the environment as configuration."""

import os
import subprocess
import sys
from pathlib import Path

import duckdb


def etl_assets(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "etl_assets.cli", *args],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=600,
    )


def test_generate_then_materialize_then_nothing_changes(tmp_path: Path):
    env = {"ETL_ASSETS_LANDING_ROOT": str(tmp_path / "landing"),
           "ETL_ASSETS_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb")}
    generated = etl_assets("generate-sample", "--root", str(tmp_path / "landing"), "--folders", "3", "--rows", "15",
                           env=env)
    assert generated.returncode == 0, generated.stderr
    assert "Wrote 3 differential folders" in generated.stdout
    again = etl_assets("generate-sample", "--root", str(tmp_path / "landing"), "--if-empty", env=env)
    assert "already holds backups" in again.stdout

    first = etl_assets("materialize", "--ephemeral", env=env)
    assert first.returncode == 0, first.stderr
    assert "20240501_Differential: ok" in first.stdout
    summary = {line.split()[0]: line.split() for line in first.stdout.splitlines() if line.startswith("salesforce.")}
    assert set(summary) == {f"salesforce.{api.lower()}" for api in (
        "Task", "User", "Account", "Contact", "Opportunity", "Case", "Lead",
        "litify_pm__Matter__c", "litify_pm__Intake__c", "litify_pm__Role__c")}
    with duckdb.connect(env["ETL_ASSETS_DUCKDB_PATH"], read_only=True) as connection:
        task_rows = connection.execute("SELECT COUNT(*) FROM salesforce.task").fetchone()[0]
    assert int(summary["salesforce.task"][-1]) == task_rows > 0

    second = etl_assets("materialize", "--ephemeral", env=env)
    assert second.returncode == 0, second.stderr
    for line in second.stdout.splitlines():
        if line.startswith("salesforce."):
            _, _, _, _, inserted, updated, _ = line.split()
            assert (inserted, updated) == ("0", "0"), line


def test_one_object_one_folder_and_a_failing_folder(tmp_path: Path):
    env = {"ETL_ASSETS_LANDING_ROOT": str(tmp_path / "landing"),
           "ETL_ASSETS_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb")}
    etl_assets("generate-sample", "--root", str(tmp_path / "landing"), "--folders", "3", "--rows", "10", env=env)
    one = etl_assets("materialize", "--ephemeral", "--folder", "20240501_Differential", "--object", "Task", env=env)
    assert one.returncode == 0, one.stderr
    assert [l.split()[0] for l in one.stdout.splitlines() if l.startswith("salesforce.")] == ["salesforce.task"]

    broken = tmp_path / "landing/backup/20240503_Differential/Task/broken.csv"
    broken.write_text('Id,SystemModstamp\n"unterminated\n')
    failed = etl_assets("materialize", "--ephemeral", "--from", "20240502_Differential", "--object", "Task", env=env)
    assert failed.returncode == 1
    assert "20240503_Differential: FAILED" in failed.stdout
    assert "folder(s) had failures: 20240503_Differential" in failed.stderr

    unknown = etl_assets("materialize", "--ephemeral", "--object", "Nope__c", env=env)
    assert unknown.returncode == 2 and "Unknown object(s): nope__c" in unknown.stderr
