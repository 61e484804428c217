"""`etl-assets` behaves as people expect a command line to: help on every command and option, a
version, documented exit statuses, every configuration error one line on stderr with exit status 2
(never a traceback), and progress while a long command works (docs/cli.md).

Each case runs the installed console script in a process of its own with an environment built
here (none of the caller's ETL_ASSETS_* or DAGSTER_* variables), except where a process adds
nothing (the help of every command, through click's CliRunner)."""

from __future__ import annotations

import importlib.metadata
import io
import os
import pty
import re
import select
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import click
import pytest
from click.testing import CliRunner

from etl_assets import cli, environment
from etl_assets.samples.salesforce import generate_sample

REPO = Path(__file__).resolve().parents[1]
ETL_ASSETS = Path(sys.executable).parent / "etl-assets"  # the console script pyproject.toml installs
FOLDER = "20240501_Differential"
OBJECTS = 10  # the sample's objects, every one in FOLDER


def clean_env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_ASSETS_", "DAGSTER_"))}
    return {**env, **variables}


def etl_assets(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(ETL_ASSETS), *args], capture_output=True, text=True, env=env, timeout=timeout)


def assert_one_line(done: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 2, nothing on stdout, one line on stderr (no traceback) holding every fragment."""
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-3000:])
    assert done.stdout == "", done.stdout
    assert done.stderr.endswith("\n") and done.stderr.count("\n") == 1, done.stderr
    line = done.stderr.rstrip("\n")
    assert line.startswith("etl-assets"), line
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """One differential folder of the ten sample objects (about 20 rows each), shared read-only."""
    root = tmp_path_factory.mktemp("cli_landing")
    generate_sample(root, folders=2, rows=20, seed=3)  # the second folder is left empty
    return root


@pytest.fixture
def local(sample, tmp_path) -> dict[str, str]:
    """An environment on a copy of the sample: local landing zone, DuckDB warehouse, discovered state."""
    shutil.copytree(sample, tmp_path / "landing")
    shutil.copy(REPO / "etl_assets" / "salesforce" / "discovered.yaml", tmp_path / "discovered.yaml")
    return clean_env(ETL_ASSETS_LANDING_ROOT=str(tmp_path / "landing"),
                     ETL_ASSETS_DUCKDB_PATH=str(tmp_path / "warehouse.duckdb"),
                     ETL_ASSETS_SALESFORCE_DISCOVERED=str(tmp_path / "discovered.yaml"),
                     ETL_ASSETS_TOTESYS_DUCKDB_PATH=str(tmp_path / "totesys.duckdb"))


# -- Help, version, exit statuses

def command_paths(command: click.Command, path: tuple[str, ...] = ()):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from command_paths(sub, (*path, name))


COMMANDS = list(command_paths(cli.cli))


def test_the_command_tree_is_the_one_the_docs_and_make_use():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert names == {"", "generate-sample", "materialize", "files", "audit", "audit-server", "bench", "catalog",
                     "catalog refresh", "catalog import-describe", "catalog apply-policies", "history",
                     "history backfill", "sql", "seed-totesys", "totesys"}


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "etl-assets" for p, _ in COMMANDS])
def test_every_command_and_option_has_help(path, command):
    if path == ("bench",):  # its options are the benchmark's own (argparse), below
        return
    result = CliRunner().invoke(cli.cli, [*path, "--help"], prog_name="etl-assets")
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.startswith(f"Usage: {' '.join(('etl-assets', *path))} ")
    assert command.help and command.help.strip(), f"{path}: no description"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help and param.help.strip(), f"etl-assets {' '.join(path)} {param.opts[0]}: no help"
            assert param.opts[0] in text
        else:  # an argument: the description says what it is
            assert param.name.upper() in command.help, f"etl-assets {' '.join(path)}: {param.name} not described"
    assert "Exit status:" in text
    for code in cli.EXIT_STATUSES:
        assert re.search(rf"^\s+{code}\s", text, re.MULTILINE), f"exit status {code} not in the help"


def test_the_console_script_helps_and_bench_shows_its_own_options(capsys):
    done = etl_assets("--help", env=clean_env())
    assert done.returncode == 0 and done.stderr == "", done.stderr
    for path, command in COMMANDS:
        if len(path) == 1:
            assert f"  {path[0]} " in done.stdout, path
    assert cli.main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: etl-assets bench") and "--rows ROWS" in out and "--only" in out


def test_version_is_the_installed_package_version():
    done = etl_assets("--version", env=clean_env())
    assert (done.returncode, done.stdout) == (0, f"etl-assets {importlib.metadata.version('etl_assets')}\n")


def test_docs_cli_page_documents_every_exit_status():
    page = (REPO / "docs" / "cli.md").read_text()
    for code in cli.EXIT_STATUSES:
        assert re.search(rf"^\| `{code}` \|", page, re.MULTILINE), f"docs/cli.md has no row for exit status {code}"
    for path, _ in COMMANDS[1:]:
        assert f"`{' '.join(path)}" in page, f"docs/cli.md does not show {' '.join(path)}"


# -- The known variables

MENTION = re.compile(r"\bETL_ASSETS_[A-Z0-9_]*")


def mentioned(paths) -> set[str]:
    return {name for path in paths for name in MENTION.findall(path.read_text())}


def test_every_variable_the_code_or_the_tests_name_is_in_the_one_list():
    sources = [p for p in (REPO / "etl_assets").rglob("*.py") if p.name != "environment.py"]
    sources += [REPO / "dbt" / "profiles.yml", *(REPO / "deploy").glob("*.yaml"), REPO / "Makefile"]
    tests = list((REPO / "etl_assets_tests").glob("*.py"))
    names = mentioned(sources + tests)
    assert {"ETL_ASSETS_WAREHOUSE", "ETL_ASSETS_PG_", "ETL_ASSETS_TEST_PG_HOST"} <= names  # the scan finds them
    for name in sorted(names - {environment.PREFIX}):
        if name.endswith("_"):  # a prefix the code completes ("ETL_ASSETS_PG_" + "HOST")
            assert any(v.startswith(name) for v in environment.VARIABLES), f"no known variable starts with {name}"
        else:
            assert name in environment.VARIABLES, f"{name} is read but not in etl_assets/environment.py"
    in_code, in_tests = mentioned(sources), mentioned(tests)
    for name, variable in environment.VARIABLES.items():
        where = in_tests if variable.tests_only else in_code
        assert name in where or any(name.startswith(p) for p in where if p.endswith("_") and p != "ETL_ASSETS_"), (
            f"{name} is in etl_assets/environment.py but nothing reads it")


def test_a_misspelt_variable_gets_the_closest_known_one():
    assert environment.unknown_variables({"ETL_ASSETS_WAREHOUSE": "postgres", "PATH": "/bin"}) == []
    misspelt = environment.PREFIX + "WAREHOUS"
    assert environment.unknown_variables({misspelt: "postgres"}) == [
        f"{misspelt} is set but etl_assets reads no such variable (did you mean ETL_ASSETS_WAREHOUSE?)"]
    far = environment.PREFIX + "QQQ_ZZZ"
    assert environment.unknown_variables({far: "1"}) == [
        f"{far} is set but etl_assets reads no such variable (docs/configuration.md lists the variables)"]


def test_the_backup_suffix_rule_is_the_one_partitions_applies(monkeypatch):
    from etl_assets.salesforce.partitions import full_backup_suffix

    variable = environment.VARIABLES["ETL_ASSETS_FULL_BACKUP_SUFFIX"]
    for value in ("_Full", "_Weekly2", "Full", "_Differential", "_a-b", "_"):
        monkeypatch.setenv(variable.name, value)
        try:
            full_backup_suffix()
            accepted = True
        except ValueError:
            accepted = False
        assert (environment.CHECKS["suffix"](variable, value) is None) == accepted, value


# -- Configuration errors: one line, exit 2

MISSPELT = environment.PREFIX + "WAREHOUS"

ENVIRONMENT_ERRORS = {
    "bad-port": (["audit"], {"ETL_ASSETS_WAREHOUSE": "postgres", "ETL_ASSETS_PG_PORT": "abc"},
                 ["etl-assets: ETL_ASSETS_PG_PORT='abc': expected a port number (1-65535)"]),
    "bad-value-of-an-unused-variable": (["materialize", "--ephemeral"], {"ETL_ASSETS_TOTESYS_PG_PORT": "99999"},
                                        ["ETL_ASSETS_TOTESYS_PG_PORT='99999'"]),
    "bad-choice": (["audit"], {"ETL_ASSETS_WAREHOUSE": "Oracle"},
                   ["etl-assets: ETL_ASSETS_WAREHOUSE='oracle': expected one of duckdb, postgres, redshift"]),
    "bad-cron": (["audit"], {"ETL_ASSETS_TOTESYS_CRON": "every minute"},
                 ["ETL_ASSETS_TOTESYS_CRON='every minute': expected a cron expression"]),
    "bad-encoding": (["materialize", "--ephemeral"], {"ETL_ASSETS_SALESFORCE_ENCODING": "latin-9000"},
                     ["ETL_ASSETS_SALESFORCE_ENCODING='latin-9000': not an encoding Python knows"]),
    "bad-suffix": (["materialize", "--ephemeral"], {"ETL_ASSETS_FULL_BACKUP_SUFFIX": "Full"},
                   ["ETL_ASSETS_FULL_BACKUP_SUFFIX='Full': expected '_' then letters or digits"]),
    "missing-feeds-file": (["files", "--ephemeral"], {"ETL_ASSETS_FEEDS": "/nonexistent/feeds.yaml"},
                           ["ETL_ASSETS_FEEDS='/nonexistent/feeds.yaml': no such file"]),
    "secret-never-shown": (["materialize", "--ephemeral"], {"ETL_ASSETS_EXECUTOR": "celery",
                                                            "ETL_ASSETS_CELERY_BROKER": "s3cr3t-not-a-url"},
                           ["ETL_ASSETS_CELERY_BROKER: expected a URL",
                            "ETL_ASSETS_CELERY_BACKEND is not set (needed with ETL_ASSETS_EXECUTOR=celery)"]),
    "missing-bucket-variable": (["catalog", "refresh"], {"ETL_ASSETS_LANDING_ZONE": "s3"},
                                ["ETL_ASSETS_LANDING_BUCKET is not set (needed with ETL_ASSETS_LANDING_ZONE=s3)"]),
    "missing-redshift-variables": (["materialize", "--ephemeral"], {"ETL_ASSETS_WAREHOUSE": "redshift",
                                                                    "ETL_ASSETS_REDSHIFT_HOST": "cluster"},
                                   ["ETL_ASSETS_REDSHIFT_STAGING_BUCKET is not set (needed with "
                                    "ETL_ASSETS_WAREHOUSE=redshift)", "ETL_ASSETS_REDSHIFT_IAM_ROLE_ARN is not set"]),
    "unknown-variable": (["audit"], {MISSPELT: "postgres"},
                         [f"etl-assets: {MISSPELT} is set but etl_assets reads no such variable "
                          "(did you mean ETL_ASSETS_WAREHOUSE?)"]),
    "dagster-home-unset-materialize": (["materialize"], {}, ["DAGSTER_HOME is not set", "--ephemeral"]),
    "dagster-home-unset-files": (["files"], {}, ["DAGSTER_HOME is not set"]),
    "dagster-home-unset-totesys": (["totesys"], {}, ["DAGSTER_HOME is not set"]),
    "dagster-home-relative": (["materialize"], {"DAGSTER_HOME": "data/dagster_home"},
                              ["DAGSTER_HOME='data/dagster_home' is not an absolute path"]),
    "dagster-home-missing": (["files"], {"DAGSTER_HOME": "/nonexistent/dagster_home"},
                             ["DAGSTER_HOME='/nonexistent/dagster_home' is not a directory"]),
    "unknown-option": (["materialize", "--folders", "x"], {},
                       ["etl-assets materialize: No such option '--folders'", "--folder"]),
    "unknown-command": (["materialise"], {}, ["No such command 'materialise' (did you mean materialize?)"]),
    "bad-option-value": (["audit", "--status", "done"], {}, ["Invalid value for '--status'", "'finished'"]),
    "bad-log-level": (["materialize", "--log-level", "LOUD"], {}, ["Invalid value for '--log-level'"]),
    "bad-timestamp": (["audit", "--since", "yesterday"], {}, ["'yesterday' is not an ISO timestamp"]),
}


@pytest.mark.parametrize("case", list(ENVIRONMENT_ERRORS))
def test_a_configuration_error_is_one_line_and_exit_2(case, local):
    args, variables, fragments = ENVIRONMENT_ERRORS[case]
    line = assert_one_line(etl_assets(*args, env={**local, **variables}), *fragments)
    assert "s3cr3t" not in line


def test_an_unknown_object_or_folder_names_the_closest_one(local):
    assert_one_line(etl_assets("materialize", "--ephemeral", "--object", "Taks", "--object", "Account",
                               "--object", "litify_pm__Mater__c", env=local),
                    "etl-assets: Unknown object(s): Taks (did you mean Task?), litify_pm__Mater__c (did you mean "
                    "litify_pm__Matter__c?): not in catalog.yaml nor in the discovered state")
    assert_one_line(etl_assets("sql", "--target", "duckdb", "--object", "Acount", env=local),
                    "etl-assets: Unknown object: Acount (did you mean Account?)")
    assert_one_line(etl_assets("materialize", "--ephemeral", "--folder", "20240501_Diferential", env=local),
                    "etl-assets: No backup folder 20240501_Diferential (did you mean 20240501_Differential?) in ")


def test_an_instance_file_dagster_cannot_read_is_one_line(local, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: sometimes\n")
    assert_one_line(etl_assets("materialize", "--folder", FOLDER, env={**local, "DAGSTER_HOME": str(home)}),
                    "etl-assets: ", "sometimes")


def test_a_missing_bucket_is_one_line_and_an_existing_one_passes(local, s3_endpoint, tmp_path):
    s3 = {"ETL_ASSETS_LANDING_ZONE": "s3", "ETL_ASSETS_S3_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
          "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
    missing = etl_assets("catalog", "refresh", "--state", str(tmp_path / "state.yaml"),
                         env={**local, **s3, "ETL_ASSETS_LANDING_BUCKET": "no-such-landing-bucket"})
    assert_one_line(missing, f"etl-assets: ETL_ASSETS_LANDING_BUCKET='no-such-landing-bucket': no such bucket at "
                             f"{s3_endpoint}")
    boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket="an-empty-landing-bucket")
    present = etl_assets("catalog", "refresh", "--state", str(tmp_path / "state.yaml"),
                         env={**local, **s3, "ETL_ASSETS_LANDING_BUCKET": "an-empty-landing-bucket"})
    assert present.returncode == 0, present.stderr
    assert f"Unchanged: {tmp_path / 'state.yaml'}" in present.stdout or "Wrote" in present.stdout


def test_a_warehouse_that_cannot_be_reached_is_one_line_and_exit_1(local):
    done = etl_assets("audit", env={**local, "ETL_ASSETS_WAREHOUSE": "postgres", "ETL_ASSETS_PG_HOST": "127.0.0.1",
                                    "ETL_ASSETS_PG_PORT": "1"})
    assert done.returncode == 1 and done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("etl-assets: postgresql://postgres@127.0.0.1:1/postgres is unreachable: "), done.stderr


def test_main_returns_the_status_in_process(capsys, monkeypatch):
    """`main` (what tests and the console script call) returns the status rather than exiting."""
    for name in [n for n in os.environ if n.startswith(environment.PREFIX)]:
        monkeypatch.delenv(name)
    monkeypatch.setenv(MISSPELT, "duckdb")
    assert cli.main(["catalog", "import-describe", "x.json"]) == 2
    assert capsys.readouterr().err == (f"etl-assets: {MISSPELT} is set but etl_assets reads no such variable "
                                       "(did you mean ETL_ASSETS_WAREHOUSE?)\n")
    assert cli.main(["--help"]) == 0


# -- Progress

STEP = re.compile(rf"^materialize: {FOLDER}: salesforce/(\w+): (\d+) rows \((\d+)/{OBJECTS} objects, ([\d,]+) rows, "
                  r"(?:[\d,]+ rows/s, )?\d+:\d\d elapsed\)$")


def test_materialize_prints_a_line_per_object_when_not_on_a_terminal(local):
    done = etl_assets("materialize", "--ephemeral", env=local)
    assert done.returncode == 0, done.stderr
    steps = [STEP.match(line) for line in done.stderr.splitlines() if line.startswith(f"materialize: {FOLDER}:")]
    assert len(steps) == OBJECTS and all(steps), done.stderr
    assert [int(m.group(3)) for m in steps] == list(range(1, OBJECTS + 1))  # objects done, in order
    total = 0
    for step in steps:
        total += int(step.group(2))
        assert int(step.group(4).replace(",", "")) == total  # rows done so far
    # the rows of each object are the rows_read of the summary table on stdout
    summary = {line.split()[0]: int(line.split()[2]) for line in done.stdout.splitlines()
               if line.startswith("salesforce.")}
    assert {f"salesforce.{m.group(1)}": int(m.group(2)) for m in steps} == summary
    assert re.search(rf"^materialize: {OBJECTS} objects, {total:,} rows, .*elapsed$", done.stderr, re.MULTILINE)
    assert f"{FOLDER}: ok ({OBJECTS} object(s))" in done.stdout and "\x1b" not in done.stdout + done.stderr


def test_files_and_catalog_refresh_print_a_line_per_step(local, tmp_path):
    inbound = Path(local["ETL_ASSETS_LANDING_ROOT"]) / "external" / "inbound"
    inbound.mkdir(parents=True)
    (inbound / "headcount_2024-05.csv").write_text("branch,month,headcount\nLeeds,2024-05-01,12\nYork,2024-05-01,9\n")
    files = etl_assets("files", "--ephemeral", env=local)
    assert files.returncode == 0, files.stdout + files.stderr
    assert re.search(r"^files: external/inbound/headcount_2024-05\.csv: 2 rows \(1/1 files, 2 rows, .*elapsed\)$",
                     files.stderr, re.MULTILINE), files.stderr

    refresh = etl_assets("catalog", "refresh", "--state", str(tmp_path / "state.yaml"), env=local)
    assert refresh.returncode == 0, refresh.stderr
    lines = [line for line in refresh.stderr.splitlines() if line.startswith("catalog refresh: ")]
    objects = sorted(p.name for p in (Path(local["ETL_ASSETS_LANDING_ROOT"]) / "backup" / FOLDER).iterdir())
    assert [re.sub(r", \d+:\d\d elapsed\)$", ")", line) for line in lines[:-1]] == [
        f"catalog refresh: {name} ({number} of {len(objects)} objects)" for number, name in enumerate(objects, 1)]
    assert re.fullmatch(rf"catalog refresh: {len(objects)} objects, \d+:\d\d elapsed", lines[-1]), lines[-1]


def read_terminal(argv: list[str], env: dict[str, str], timeout: float = 600) -> tuple[int, str]:
    """Run `argv` with stdin, stdout and stderr on a pseudo-terminal; (exit status, what the terminal got)."""
    master, slave = pty.openpty()
    process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    received = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                process.kill()
                pytest.fail(f"nothing from {argv} on the terminal for {timeout} s")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has exited
                break
            if not chunk:
                break
            received += chunk
    finally:
        os.close(master)
    return process.wait(timeout=60), received.decode(errors="replace")


def test_materialize_on_a_terminal_shows_a_live_line_that_never_covers_the_output(local):
    status, screen = read_terminal([str(ETL_ASSETS), "materialize", "--ephemeral"], {**local, "COLUMNS": "200"})
    assert status == 0, screen[-3000:]
    live = re.findall(r"\r\x1b\[Kmaterialize: ([^\r\n]*?)(?=\r|\n|$)", screen)
    assert any(re.search(rf"{FOLDER} salesforce/\w+: \d+/{OBJECTS} objects", line) for line in live), live
    assert f"\x1b[K{FOLDER}: ok ({OBJECTS} object(s))\r\n" in screen  # the live line was cleared first
    assert re.search(rf"(?:\n|\x1b\[K)materialize: {OBJECTS} objects, [\d,]+ rows, .*elapsed\r\n", screen)
    assert not re.search(r"salesforce/\w+: \d+ rows \(", screen)  # no plain per-step lines on a terminal


def test_bench_on_a_terminal_shows_its_last_step_in_the_live_line(monkeypatch):
    """`bench` prints its own steps; on a terminal the live line repeats the last one with the time elapsed."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out, err = Terminal(), Terminal()
    monkeypatch.setenv("COLUMNS", "200")  # the live line is cut to the terminal's width (80 under pytest-xdist)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    with cli.Progress("bench", "steps", follow_output=True) as progress:
        assert progress.live
        print("Load benchmark: 3,000 rows of Task, 1 round(s), targets ['duckdb']")
        progress.settle()  # draws the live line now
        print("  duckdb first load: 0.4 s")
    assert out.getvalue() == ("Load benchmark: 3,000 rows of Task, 1 round(s), targets ['duckdb']\n"
                              "  duckdb first load: 0.4 s\n")
    assert re.search(r"\r\x1b\[Kbench: Load benchmark: 3,000 rows of Task, .* \(0:\d\d elapsed\)\r\x1b\[K$",
                     err.getvalue()), repr(err.getvalue())
    assert sys.stdout is out and sys.stderr is err  # restored
