"""Fixtures for real services (the PostgreSQL server on this machine, an S3 API over HTTP), and the
suite's two tiers.

Nothing here mocks a database. PostgreSQL tests get a database of their own on
the running server (started here if it is down, or the run stops saying how).
S3 tests talk HTTP to moto's server mode, the way production code talks to AWS.

The quick tier (`make check`, `pytest -m quick`): every test is marked `quick` here unless it needs
a service or starts processes: it requests a service fixture (SERVICE_FIXTURES) or is a parametrized
case named for one (`[postgres]`, `[s3]`), is marked `slow`, or sits in a module of PROCESS_MODULES.
A quick test that reaches PostgreSQL or Redis anyway fails at once (see `_quick_tests_reach_no_service`),
so the tier stays true as tests are added. Under pytest-xdist (`make test` runs `-n`), every worker
has its own session: its own moto server, sample and temporary directories; databases and buckets
are uniquely named, so workers never share one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path

import boto3
import psycopg2
import pytest

from etl_assets.samples.salesforce import generate_sample
from etl_assets_tests.live import moto_server

# A test run never records into the developer's instance (the Makefile exports DAGSTER_HOME=data/dagster_home
# for `make run` and `make dev`): a test that needs an instance makes its own.
os.environ.pop("DAGSTER_HOME", None)

PG_HOST = os.environ.get("ETL_ASSETS_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ETL_ASSETS_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("ETL_ASSETS_TEST_PG_USER", "postgres")
REDIS_PORT = 6379
SAMPLE_FOLDERS = 5
SAMPLE_ROWS = 40

# A test that requests one of these needs a service: it is not quick. (test_landing_zone's `zones`
# builds an S3 zone beside the local one.)
SERVICE_FIXTURES = frozenset({"postgres_server", "postgres_database", "dagster_storage_database",
                              "postgres18_server", "postgres18_database", "s3_endpoint", "s3_bucket", "zones"})
# A parametrized case with one of these in its id runs on that service (`warehouse[postgres]`, `zone[s3]`).
SERVICE_PARAMS = frozenset({"postgres", "postgres18", "s3"})
# Modules whose tests start processes (Dagster's webserver, daemon and dev server, the etl-assets
# console script, dbt, make, Chromium) or run a benchmark: none of their tests is quick.
PROCESS_MODULES = {
    "test_bench": "the benchmark, as a process",
    "test_bench_catalog": "the catalog benchmark, as a process",
    "test_celery_backfill": "Celery workers on Redis",
    "test_cli": "the etl-assets console script, as a process",
    "test_dbt": "dbt runs",
    "test_dbt_as_of": "dbt runs",
    "test_dbt_redshift": "dbt compile, twice",
    "test_definitions_snapshot": "the code location in a fresh interpreter",
    "test_every_object": "a webserver and daemon",
    "test_folder_runs": "a webserver and daemon",
    "test_killed_runs": "the etl-assets console script, killed",
    "test_local_instance_heals": "dg dev, killed",
    "test_packaging": "make",
    "test_production_instance": "a webserver and daemon",
    "test_ui_browser": "the UI in Chromium",
}
# Tests (by function name, every parameter) elsewhere that take more than a few seconds without any
# service: they run the console script or the code location in a fresh interpreter, or Dagster runs of
# whole sample folders. A quick test that grows past QUICK_SECONDS is named at the end of the run.
HEAVY_TESTS = {
    "test_cli_errors": {"test_a_configuration_error_is_one_line_and_exit_2[bad-cron]",
                        "test_a_configuration_error_is_one_line_and_exit_2[bad-encoding]",
                        "test_a_configuration_error_is_one_line_and_exit_2[bad-timestamp]",
                        "test_a_warehouse_that_cannot_be_reached_is_one_line_and_exit_1",
                        "test_an_instance_file_dagster_cannot_read_is_one_line",
                        "test_an_unknown_object_or_folder_names_the_closest_one",
                        "test_files_and_catalog_refresh_print_a_line_per_step",
                        "test_materialize_on_a_terminal_shows_a_live_line_that_never_covers_the_output",
                        "test_materialize_prints_a_line_per_object_when_not_on_a_terminal"},
    "test_dagster_internals": {"test_only_a_bounded_number_of_run_shards_stay_open",
                               "test_many_events_open_one_connection_per_database"},
    "test_definitions": {"test_code_location_loads_without_any_warning"},
    "test_docs": {"test_the_cheap_commands_run"},
    "test_end_to_end": {"test_a_bad_file_in_a_multi_folder_run_fails_that_object_only",
                        "test_a_multi_folder_run_loads_each_folder_as_its_own_run_would",
                        "test_every_folder_loads_the_newest_version_of_every_row",
                        "test_out_of_order_and_repeated_runs_give_the_same_tables",
                        "test_schema_drift_is_added_as_text_and_reported",
                        "test_sensor_skips_what_dagster_already_materialized_but_not_late_files",
                        "test_unparseable_file_fails_the_object_and_loads_none_of_its_folder"},
    "test_faults": {"test_an_unreachable_warehouse_fails_fast_with_a_clear_message"},
    "test_feed_partitions": {"test_a_deleted_partitions_file_is_still_findable",
                             "test_a_file_landed_again_under_the_same_key_loads_again",
                             "test_settled_partitions_go_after_the_retention_and_unsettled_ones_stay"},
    "test_feed_races": {"test_a_load_that_may_repeat_content_claims_nothing",
                        "test_one_bad_feed_entry_refuses_only_its_own_files",
                        "test_the_cli_loads_the_good_feeds_and_says_where_each_refused_file_is",
                        "test_two_loads_of_the_same_content_at_once_load_it_once"},
    "test_first_cause": {"test_a_full_disk_fails_the_load_once_saying_so_and_the_table_is_unchanged",
                         "test_an_instance_that_cannot_write_leaves_no_half_made_run"},
    "test_hard_deletes": {"test_every_loading_order_gives_the_same_table_with_exactly_the_missing_id_marked"},
    "test_history": {"test_any_order_and_any_repeats_give_the_history_of_one_load_in_date_order"},
    "test_hostile_names": {"test_a_zoo_of_names_never_stops_refresh_the_code_location_the_sensor_or_a_load",
                           "test_materialize_names_the_refused_folders",
                           "test_the_code_location_loads_with_a_state_full_of_bad_names"},
    "test_landing_boundary": {"test_the_cli_refuses_keys_out_of_the_root_and_says_where_refused_files_are"},
    "test_lock_waits": {"test_a_load_waiting_for_the_duckdb_lock_says_so_in_its_run_log"},
    "test_personal_data": {"test_turning_a_policy_on_rewrites_the_rows_already_loaded_like_a_load_under_it",
                           "test_the_apply_policies_command_says_what_it_changes_and_that_turning_off_is_for_new_loads"},
    "test_real_exports": {"test_a_backup_tools_folders_through_the_sensor",
                          "test_a_data_export_zip_loads_as_its_unpacked_csvs",
                          "test_a_latin1_export_is_read_through_the_windows_1252_fallback",
                          "test_every_record_of_a_tools_export_lands_typed",
                          "test_fifty_good_objects_load_beside_one_unreadable_file",
                          "test_the_cli_refreshes_and_materializes_an_sf_cli_export",
                          "test_without_a_fallback_a_latin1_file_fails_its_object_naming_the_setting"},
    "test_self_describing": {"test_a_load_carries_row_count_schema_and_preview_and_a_failed_check_says_why"},
    "test_settings": {"test_a_bad_value_names_the_variable_and_the_choices",
                      "test_a_run_worker_without_a_value_the_launcher_had_fails",
                      "test_a_run_worker_whose_environment_names_another_deployment_fails",
                      "test_the_code_location_reads_the_environment_once"},
    "test_streaming_load": {"test_a_big_stream_freezes_the_heap_after_its_first_collection_and_unfreezes_it_at_the_end",
                            "test_a_duckdb_reload_without_history_streams_into_the_table_and_ends_as_the_staged_merge",
                            "test_a_duckdb_table_keeping_history_streams_its_reload_in_place_with_the_staged_merges_versions",
                            "test_a_full_backup_streamed_into_a_duckdb_table_marks_deletions_as_the_staged_merge",
                            "test_a_key_repeated_in_a_duckdb_reload_restarts_on_the_general_path",
                            "test_a_file_that_fails_mid_stream_loads_nothing_and_is_audited_failed",
                            "test_a_repeated_key_in_a_streamed_first_load_restarts_on_the_general_path",
                            "test_a_streamed_load_ends_as_the_staged_one_with_the_same_rejects_and_lines",
                            "test_a_streamed_materialization_reports_counts_checks_and_preview",
                            "test_a_streamed_reload_updates_what_is_newer_and_a_second_one_changes_nothing",
                            "test_a_value_that_widens_an_inferred_column_mid_stream_restarts_the_load_as_staging_would"},
    "test_totesys": {"test_seeder_is_deterministic_and_simulates_business"},
}
QUICK_SECONDS = 5.0
# Module-scoped fixtures that cost seconds (every command the docs run; two dbt compiles; one default
# `etl-assets bench` run; the sample loaded once, test_end_to_end's reference): the tests that use one run on
# one pytest-xdist worker (--dist loadgroup), so it is built once.
SHARED_FIXTURES = frozenset({"scratch_outcomes", "compiled", "default_bench", "sample_load"})
# The single tests that take a minute or more on a 2-core machine (`--durations`), longest first: pytest-xdist
# hands them out before every other single test, so no worker starts one of them near the end of the run and
# keeps running it alone while the others are idle (module names every test of the module).
LONGEST_FIRST = (
    "test_ui_browser",
    "test_local_instance_heals",
    "test_dbt::test_duckdb_star_schema_follows_changes_in_the_postgres_source",
    "test_dbt::test_dbt_build_passes_on_postgres_from_the_embedded_source",
    "test_production_instance",
    "test_concurrency::test_a_parallel_multiprocess_backfill_of_20_folders_equals_one_by_one_loads",
    "test_concurrency::test_the_full_sample_materialized_three_times_gives_identical_checksums",
    "test_dbt::test_the_cli_builds_the_marts_when_raw_tables_changed_since_the_last_build",
)
# Connections a quick test must not open: (host, port) of the services.
_SERVICE_ADDRESSES: set[tuple[str, int]] = set()


def _pg_connect(database: str = "postgres", server: dict | None = None):
    server = server or {"host": PG_HOST, "port": PG_PORT, "user": PG_USER}
    return psycopg2.connect(host=server["host"], port=server["port"], user=server["user"], dbname=database,
                            connect_timeout=3)


def _ensure_postgres() -> None:
    try:
        _pg_connect().close()
        return
    except psycopg2.OperationalError:
        pass
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if versions and shutil.which("pg_ctlcluster"):
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=False, timeout=60
        )
        try:
            _pg_connect().close()
            return
        except psycopg2.OperationalError:
            pass
    pytest.exit(
        f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {PG_USER}. Start it with "
        "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or point "
        "ETL_ASSETS_TEST_PG_HOST/PORT/USER at a server with trust auth.",
        returncode=3,
    )


@pytest.fixture(scope="session")
def postgres_server() -> dict:
    _ensure_postgres()
    return {"host": PG_HOST, "port": PG_PORT, "user": PG_USER}


@pytest.fixture(scope="session")
def postgres18_server() -> dict:
    """A PostgreSQL 18 server of this session (each xdist worker its own), beside the machine's 15:
    the merge that reads the row it replaced (`RETURNING old`) needs 18."""
    from etl_assets_tests.postgres18 import postgres18

    with postgres18() as server:
        yield server


@pytest.fixture
def postgres18_database(postgres18_server):
    """A fresh database on the PostgreSQL 18 server, dropped afterwards."""
    with _fresh_database(postgres18_server, "etl_test_") as database:
        yield database


@contextmanager
def _fresh_database(server: dict, prefix: str):
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    admin = _pg_connect(server=server)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {**server, "database": name}
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def postgres_database(postgres_server):
    """A fresh database on the real server, dropped afterwards."""
    with _fresh_database(postgres_server, "etl_test_") as database:
        yield database


@pytest.fixture
def dagster_storage_database(postgres_server):
    """Another fresh database: a Dagster instance's run, event log and schedule storage (dagster-postgres)."""
    with _fresh_database(postgres_server, "etl_test_dagster_") as database:
        yield database


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API over HTTP (moto's server mode) for the whole session."""
    with moto_server() as endpoint:
        host, port = endpoint.removeprefix("http://").split(":")
        _SERVICE_ADDRESSES.add((host, int(port)))
        yield endpoint


S3_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A new, empty bucket; returns (client, bucket name)."""
    client = boto3.client("s3", endpoint_url=s3_endpoint, **S3_CREDENTIALS)
    bucket = f"landing-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    """Sample backups generated once per session; copy before changing them."""
    root = tmp_path_factory.mktemp("sample_landing")
    generate_sample(root, folders=SAMPLE_FOLDERS, rows=SAMPLE_ROWS, seed=11)
    return root


@pytest.fixture
def landing_root(sample_root, tmp_path) -> Path:
    """A private, writable copy of the sample landing zone."""
    root = tmp_path / "landing"
    shutil.copytree(sample_root, root)
    return root


def sns_to_sqs(endpoint: str, prefix: str) -> tuple[str, object, str]:
    """A new SNS topic delivering raw messages to a new SQS queue: (topic ARN, SQS client, queue URL)."""
    sns = boto3.client("sns", endpoint_url=endpoint, **S3_CREDENTIALS)
    sqs = boto3.client("sqs", endpoint_url=endpoint, **S3_CREDENTIALS)
    topic = sns.create_topic(Name=f"{prefix}-{uuid.uuid4().hex[:8]}")["TopicArn"]
    queue = sqs.create_queue(QueueName=f"{prefix}-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    return topic, sqs, queue


def upload_tree(client, bucket: str, root: Path, prefix: str = "") -> int:
    count = 0
    for path in sorted(root.rglob("*")):
        key = prefix + path.relative_to(root).as_posix()
        if path.is_dir() and not any(path.iterdir()):
            client.put_object(Bucket=bucket, Key=key + "/", Body=b"")
        elif path.is_file():
            client.upload_file(str(path), bucket, key)
            count += 1
    return count


@pytest.fixture(params=["duckdb", "postgres"])
def engine(request, tmp_path):
    """A function returning an empty warehouse on the engine, for tests that compare loads: a new DuckDB
    file each call, or the test's PostgreSQL database with the schemas a load writes dropped."""
    from etl_assets_tests.helpers import engine_of

    return engine_of(request, tmp_path)


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request, tmp_path):
    """Each engine a test must hold on: the embedded default (a DuckDB file) and the real PostgreSQL server."""
    from etl_assets.warehouse.duckdb import DuckDBWarehouse
    from etl_assets.warehouse.postgres import PostgresWarehouse

    if request.param == "duckdb":
        return DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))
    database = request.getfixturevalue("postgres_database")
    return PostgresWarehouse(host=database["host"], port=database["port"], user=database["user"],
                             database=database["database"])


@pytest.fixture
def statements(monkeypatch):
    """The SQL of every statement the warehouse's sessions run, in order (COPYs included)."""
    from etl_assets.warehouse.duckdb import DuckDBSession
    from etl_assets.warehouse.postgres import PostgresSession

    ran: list[str] = []
    for cls in (DuckDBSession, PostgresSession):
        for name in ("execute", "fetchall", "copy_files", "copy_rows", "copy_chunks"):
            if name not in vars(cls):
                continue
            original = getattr(cls, name)

            def spy(session, first, *args, _original=original, **kwargs):
                ran.append(first.sql if hasattr(first, "sql") else first)
                return _original(session, first, *args, **kwargs)

            monkeypatch.setattr(cls, name, spy)
    return ran


# ---------------------------------------------------------------- the quick tier


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0].rpartition("/")[2].removesuffix(".py")


def _not_quick(item: pytest.Item) -> str | None:
    """Why the test is not in the quick tier, or None."""
    module = _module(item)
    if module in PROCESS_MODULES:
        return PROCESS_MODULES[module]
    if item.get_closest_marker("slow"):
        return "marked slow"
    used = SERVICE_FIXTURES & set(getattr(item, "fixturenames", ()))
    if used:
        return f"uses {', '.join(sorted(used))}"
    callspec = getattr(item, "callspec", None)
    if callspec is not None and SERVICE_PARAMS & set(callspec.id.split("-")):
        return f"runs on {', '.join(sorted(SERVICE_PARAMS & set(callspec.id.split('-'))))}"
    heavy = HEAVY_TESTS.get(module, ())
    if item.name in heavy or getattr(item, "originalname", item.name) in heavy:
        return "heavy"
    return None


def _order(item: pytest.Item) -> tuple[int, int]:
    """Longest first, so parallel workers do not end on one long test: LONGEST_FIRST, then processes
    (webserver, daemon, dbt, the browser), then services and heavy tests, then the quick tier. (Tests an
    xdist_group keeps together go out before all of these: pytest-xdist's loadgroup hands out its groups
    of most tests first.)"""
    module, name = _module(item), getattr(item, "originalname", item.name)
    for rank, longest in enumerate(LONGEST_FIRST):
        if longest in (module, f"{module}::{name}"):
            return 0, rank
    if module in PROCESS_MODULES or item.get_closest_marker("slow"):
        return 1, 0
    return (3 if item.get_closest_marker("quick") else 2), 0


@pytest.hookimpl(wrapper=True)  # marks before every other implementation (before `-m` selects on them)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if _not_quick(item) is None:
            item.add_marker(pytest.mark.quick)
        if SHARED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group(_module(item)))
    config.stash[_TIERS] = (sum(1 for item in items if item.get_closest_marker("quick")), len(items))
    items.sort(key=_order)  # stable: each tier keeps the modules' order
    result = yield
    if getattr(config.option, "loadgroup", False):  # a pytest-xdist worker under --dist loadgroup
        _group_node_ids(items)
    return result


def _group_node_ids(items: list[pytest.Item]) -> None:
    """The `@group` suffix pytest-xdist's loadgroup scheduler groups tests by, on the ids of the tests an
    xdist_group mark names. xdist 3.8 writes it to `item._nodeid`, which pytest 9.2 no longer reads (its ids
    are structured, `item._id`): every test of a group went to whichever worker was free, and each worker
    built the group's module-scoped fixture again (pytest-dev/pytest-xdist#1386). An id xdist did suffix is
    left as it is."""
    from _pytest.nodeid import NodeId

    for item in items:
        names = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                        for mark in item.iter_markers("xdist_group")})
        if names and item.nodeid.rfind("@") <= item.nodeid.rfind("]"):
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")


_TIERS = pytest.StashKey[tuple[int, int]]()


def pytest_report_collectionfinish(config, start_path, items):
    quick, collected = config.stash.get(_TIERS, (0, 0))
    return f"quick tier: {quick} of the {collected} tests collected; {len(items)} selected"


# ---------------------------------------------------------------- CPU per test (--cpu-durations)


def pytest_addoption(parser):
    parser.addoption("--cpu-durations", type=int, default=None, metavar="N",
                     help="show the N tests that used the most CPU (0: all), and each module's CPU: the test "
                          "process's own and its finished child processes' (not the PostgreSQL server's), per "
                          "test; under pytest-xdist, wall times are stretched by the other workers, CPU is not")
    parser.addoption("--cpu-report", default=None, metavar="PATH",
                     help="write every test's CPU seconds (setup, call, teardown) to PATH as tab-separated lines")


def _cpu_seconds() -> float:
    import resource

    return sum(usage.ru_utime + usage.ru_stime
               for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


_CPU_STARTED = pytest.StashKey[float]()


def _measured(item: pytest.Item) -> bool:
    return item.config.getoption("cpu_durations") is not None or bool(item.config.getoption("cpu_report"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    if _measured(item):
        item.stash[_CPU_STARTED] = _cpu_seconds()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    if _measured(item):
        item.stash[_CPU_STARTED] = _cpu_seconds()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    if _measured(item):
        item.stash[_CPU_STARTED] = _cpu_seconds()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    started = item.stash.get(_CPU_STARTED, None)
    if started is not None:
        report.cpu_s = _cpu_seconds() - started  # a plain attribute: pytest-xdist sends it to the controller
    return report


def _cpu_summary(terminalreporter, config) -> None:
    count, path = config.getoption("cpu_durations"), config.getoption("cpu_report")
    if count is None and not path:
        return
    per_test: dict[str, float] = {}
    phases: list[tuple[str, str, float]] = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            cpu = getattr(report, "cpu_s", None)
            if cpu is None or not hasattr(report, "when"):
                continue
            per_test[report.nodeid] = per_test.get(report.nodeid, 0.0) + cpu
            phases.append((report.nodeid, report.when, cpu))
    if path:
        Path(path).write_text("".join(f"{cpu:.2f}\t{when}\t{nodeid}\n" for nodeid, when, cpu
                                      in sorted(phases, key=lambda x: -x[2])))
    if count is None:
        return
    modules: dict[str, float] = {}
    for nodeid, cpu in per_test.items():
        modules[nodeid.split("::")[0]] = modules.get(nodeid.split("::")[0], 0.0) + cpu
    terminalreporter.section(f"CPU per test (self and finished children): {sum(per_test.values()):.0f} s in all")
    ranked = sorted(per_test.items(), key=lambda x: -x[1])
    for nodeid, cpu in ranked[:count] if count else ranked:
        terminalreporter.write_line(f"{cpu:7.1f} s {nodeid}")
    terminalreporter.section("CPU per module")
    for module, cpu in sorted(modules.items(), key=lambda x: -x[1]):
        terminalreporter.write_line(f"{cpu:7.1f} s {module}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """In a quick-tier run, the quick tests that took longer than QUICK_SECONDS (list them in HEAVY_TESTS);
    with --cpu-durations, the CPU each test used."""
    _cpu_summary(terminalreporter, config)
    if "quick" not in (config.option.markexpr or ""):
        return
    slow = sorted({(report.duration, report.nodeid) for kind in ("passed", "failed")
                   for report in terminalreporter.stats.get(kind, [])
                   if report.when in ("setup", "call") and "quick" in report.keywords
                   and report.duration > QUICK_SECONDS}, reverse=True)
    if slow:
        terminalreporter.section("quick tests over the quick tier's budget")
        for duration, nodeid in slow:
            terminalreporter.write_line(f"{duration:6.1f} s {nodeid} (list it in conftest.py's HEAVY_TESTS)")


class ServiceReached(AssertionError):
    """A quick test opened a connection to PostgreSQL, Redis or moto."""


@pytest.fixture(autouse=True)
def _quick_tests_reach_no_service(request, monkeypatch):
    """A test marked quick fails as soon as it connects to PostgreSQL, Redis or this session's moto
    server: the quick tier runs without any of them (mark the test `slow`, or request the service's
    fixture, and it leaves the tier)."""
    if request.node.get_closest_marker("quick") is None:
        return
    refused = {(PG_HOST, PG_PORT), ("127.0.0.1", REDIS_PORT), ("localhost", REDIS_PORT), *_SERVICE_ADDRESSES}
    why = f"{request.node.nodeid} is in the quick tier (conftest.py) but reached"

    def guarded(connect):
        def connect_checked(sock, address, *args, **kwargs):
            if isinstance(address, tuple) and tuple(address[:2]) in refused:
                raise ServiceReached(f"{why} {address[0]}:{address[1]}")
            return connect(sock, address, *args, **kwargs)
        return connect_checked

    monkeypatch.setattr(socket.socket, "connect", guarded(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(socket.socket.connect_ex))

    connect = psycopg2.connect

    def connect_unless_postgres(dsn=None, connection_factory=None, cursor_factory=None, **kwargs):
        # libpq opens its own sockets, out of Python's sight: its address is read from the arguments.
        given = {**(psycopg2.extensions.parse_dsn(dsn) if dsn else {}), **kwargs}
        host, port = given.get("host") or "localhost", int(given.get("port") or 5432)
        if (host, port) in refused or (host in ("localhost", "127.0.0.1") and port == PG_PORT):
            raise ServiceReached(f"{why} PostgreSQL at {host}:{port}")
        return connect(dsn, connection_factory, cursor_factory, **kwargs)

    monkeypatch.setattr(psycopg2, "connect", connect_unless_postgres)
