"""`etl-assets` as an operator runs it: a real process, the environment as configuration."""

import json
import os
import signal
import subprocess
import sys
import urllib.request
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
        task_versions = connection.execute("SELECT COUNT(*) FROM salesforce_history.task").fetchone()[0]
    assert summary["salesforce.task"][0:1] + summary["salesforce.task"][-2:] == \
        ["salesforce.task", str(task_rows), str(task_versions)]
    assert task_versions > task_rows > 0  # the sample's folders change some records: history keeps both versions

    second = etl_assets("materialize", "--ephemeral", env=env)
    assert second.returncode == 0, second.stderr
    for line in second.stdout.splitlines():
        if line.startswith("salesforce."):
            _, _, _, _, inserted, updated, _, _ = line.split()  # ... table_rows, versions
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
    bad_date = tmp_path / "landing/backup/20240502_Differential/Task/bad_date.csv"
    bad_date.parent.mkdir(parents=True, exist_ok=True)
    bad_date.write_text("Id,IsDeleted,SystemModstamp\n00T000000000001AAA,false,2024-02-30T25:61:00Z\n")
    failed = etl_assets("materialize", "--ephemeral", "--from", "20240502_Differential", "--object", "Task", env=env)
    assert failed.returncode == 1
    # the failed folder, then why: the object, file, line and column
    assert ("20240503_Differential: FAILED (1 object(s))\n  Task in 20240503_Differential was not loaded: "
            "backup/20240503_Differential/Task/broken.csv, line 2") in failed.stdout
    assert "a quoted value is never closed" in failed.stdout
    assert "Rejected rows (file, line, column, reason) are in salesforce.task_rejects" in failed.stdout
    assert "folder(s) had failures: 20240503_Differential" in failed.stderr

    # the audit trail says the same, whole (the error is not cut), with the rejected row count
    audit = etl_assets("audit", "--status", "failed", env=env)
    assert audit.returncode == 0, audit.stderr
    header, *loads, count = audit.stdout.splitlines()
    assert header.split() == ["started_at", "status", "target_table", "action", "rows_read", "rows_loaded",
                              "rows_rejected", "source_key", "run_id", "error"]
    assert count == "(1 load(s))" and "FAILED  salesforce.task" in loads[0]
    assert loads[0].endswith("backup/20240503_Differential/Task/broken.csv, line 2, column 1: "
                             "a quoted value is never closed"), loads[0]
    task = etl_assets("audit", "--table", "task", "--status", "FINISHED", "--json", env=env)
    rejected = {l["source_key"]: l["rows_rejected"] for l in json.loads(task.stdout)}
    assert rejected["backup/20240502_Differential/Task/"] == 1
    assert etl_assets("audit", "--status", "nope", env=env).returncode == 2

    unknown = etl_assets("materialize", "--ephemeral", "--object", "Nope__c", env=env)
    assert unknown.returncode == 2 and unknown.stderr.startswith("etl-assets: Unknown object(s): Nope__c")


def test_files_says_why_a_file_was_refused(tmp_path: Path):
    env = {"ETL_ASSETS_LANDING_ROOT": str(tmp_path / "landing"),
           "ETL_ASSETS_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb")}
    inbound = tmp_path / "landing/external/inbound"
    inbound.mkdir(parents=True)
    (inbound / "headcount_2024-05.csv").write_text("branch,month,headcount\nLeeds,2024-05-01,many\n")
    refused = etl_assets("files", "--ephemeral", env=env)
    assert refused.returncode == 1
    assert ("external/inbound/headcount_2024-05.csv: REFUSED (see error/)\n"
            "  external/inbound/headcount_2024-05.csv: line 2, column 3: headcount: not a valid integer: 'many'"
            ) in refused.stdout, refused.stdout
    reason = tmp_path / "landing/error/external/inbound/headcount_2024-05.csv.reason.txt"
    assert reason.read_text().startswith("FAILED: line 2, column 3")
    audit = etl_assets("audit", "--status", "FAILED", "--json", env=env)
    [load] = json.loads(audit.stdout)
    assert (load["source_key"], load["status"]) == ("external/inbound/headcount_2024-05.csv", "FAILED")


def test_audit_server_answers_then_stops_cleanly_on_sigterm(tmp_path: Path):
    env = {"ETL_ASSETS_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"), "PYTHONUNBUFFERED": ""}
    server = subprocess.Popen(
        [sys.executable, "-m", "etl_assets.cli", "audit-server", "--port", "0"], env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        url = server.stdout.readline().split()[-1]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/loads"), url
        with urllib.request.urlopen(f"{url}?table=salesforce.task&since=2024-05-01T00:00") as response:
            assert json.loads(response.read()) == []
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    finally:
        server.kill()
    assert server.returncode == 0 and "Audit endpoint stopped" in out and "Traceback" not in err, err


def test_sql_plans_on_the_warehouse_the_environment_names_and_a_bad_choice_is_one_clear_line(tmp_path: Path):
    env = {"ETL_ASSETS_PG_HOST": "db.internal", "ETL_ASSETS_PG_USER": "loader", "ETL_ASSETS_PG_PASSWORD": "hunter2"}
    plan = etl_assets("sql", "--target", "postgres", "--object", "Task", env=env)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines()[0].startswith("-- Load of Task into salesforce.task on ")
    assert "loader@db.internal" in plan.stdout.splitlines()[0] and "hunter2" not in plan.stdout

    bad = etl_assets("audit", env={"ETL_ASSETS_WAREHOUSE": "oracle", "ETL_ASSETS_DUCKDB_PATH": str(tmp_path / "w.duckdb")})
    assert bad.returncode == 2
    assert bad.stderr.strip() == "etl-assets: ETL_ASSETS_WAREHOUSE='oracle': expected one of duckdb, postgres, redshift"


def test_history_backfill_builds_the_versions_a_warehouse_with_history_always_on_has(tmp_path: Path):
    """Loaded with history off, then `etl-assets history backfill`: the versions equal those of a warehouse
    that kept history from its first load, and the object table is unchanged."""
    landing = tmp_path / "landing"
    assert etl_assets("generate-sample", "--root", str(landing), "--folders", "3", "--rows", "15",
                      env={}).returncode == 0
    always = {"ETL_ASSETS_LANDING_ROOT": str(landing), "ETL_ASSETS_DUCKDB_PATH": str(tmp_path / "always.duckdb")}
    late = {**always, "ETL_ASSETS_DUCKDB_PATH": str(tmp_path / "late.duckdb")}
    assert etl_assets("materialize", "--ephemeral", "--object", "Task", env=always).returncode == 0
    off = etl_assets("materialize", "--ephemeral", "--object", "Task",
                     env={**late, "ETL_ASSETS_SALESFORCE_HISTORY": "off"})
    assert off.returncode == 0, off.stderr
    assert [line.split()[-1] for line in off.stdout.splitlines() if line.startswith("salesforce.task")] == ["-"]

    refused = etl_assets("history", "backfill", "--ephemeral", "--object", "Task",
                         env={**late, "ETL_ASSETS_SALESFORCE_HISTORY": "off"})
    assert refused.returncode == 2 and "Task keep(s) no history" in refused.stderr
    backfill = etl_assets("history", "backfill", "--ephemeral", "--object", "Task", env=late)
    assert backfill.returncode == 0, backfill.stderr

    def read(path: str, table: str) -> list[tuple]:
        with duckdb.connect(path, read_only=True) as connection:
            columns = [c for (c,) in connection.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema || '.' || table_name = ? "
                "AND column_name NOT IN ('_loaded_at', '_load_changes') ORDER BY column_name", [table]).fetchall()]
            return connection.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY ALL").fetchall()

    versions = read(always["ETL_ASSETS_DUCKDB_PATH"], "salesforce_history.task")
    assert len(versions) > len(read(always["ETL_ASSETS_DUCKDB_PATH"], "salesforce.task"))  # records changed
    assert read(late["ETL_ASSETS_DUCKDB_PATH"], "salesforce_history.task") == versions
    assert read(late["ETL_ASSETS_DUCKDB_PATH"], "salesforce.task") == \
        read(always["ETL_ASSETS_DUCKDB_PATH"], "salesforce.task")
    records = len(read(always["ETL_ASSETS_DUCKDB_PATH"], "salesforce.task"))
    assert f"Task: {len(versions)} version(s) of {records} record(s) in salesforce_history.task" \
        in backfill.stdout
