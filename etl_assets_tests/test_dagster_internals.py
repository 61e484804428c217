"""The one module allowed to use Dagster's private API (etl_assets/dagster_internals.py): the fence holds
(no other module imports a private Dagster name, and the installed Dagster is the release line the private
names were read against), and the local instance's event log keeps its connections open.

The event log is asserted on a real instance built from deploy/dagster.local.yaml: runs, their events, materializations,
check evaluations and pool slots read back as with Dagster's own SQLite storage; a process forked
from one that holds connections writes through its own; many events open one connection per
database, not one per event; a wipe deletes the run shards it had open.
"""

import ast
import multiprocessing
import os
import sqlite3
import time

import dagster as dg
import pytest
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SqliteEventLogStorage,
)

from etl_assets.dagster_internals import (
    OPEN_RUN_SHARDS,
    LocalInstance,
    OpenConnectionEventLogStorage,
    version_problem,
)
from etl_assets_tests.helpers import LOCAL_YAML, REPO

FENCE = "etl_assets/dagster_internals.py"


def private_imports(path) -> list[str]:
    """The private modules of Dagster and its integrations (`dagster._x`, `dagster_dbt._x`...) a file imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        found += [n for n in names if n.split(".")[0].startswith("dagster") and
                  any(part.startswith("_") for part in n.split(".")[1:])]
    return found


def test_only_the_fence_imports_private_dagster_names():
    outside = {str(path.relative_to(REPO)): names for path in sorted((REPO / "etl_assets").rglob("*.py"))
               if str(path.relative_to(REPO)) != FENCE and (names := private_imports(path))}
    assert outside == {}, f"private Dagster names belong in {FENCE} (with the reason in its docstring)"
    assert private_imports(REPO / FENCE), "the fence holds the private imports"


def test_the_installed_dagster_is_the_line_the_private_names_were_read_against():
    assert version_problem() is None, version_problem()


def test_the_dbt_resource_overrides_name_members_the_installed_dagster_dbt_has():
    """DbtCli (etl_assets/dbt_project/project.py) replaces two private members of DbtCliResource; were they
    renamed, its overrides would silently save nothing. The adapter it declines is optional to cli()."""
    import inspect

    from dagster_dbt import DbtCliResource

    from etl_assets.dbt_project.project import DbtCli

    for name in ("_cli_version", "_initialize_dbt_core_adapter"):
        assert name in vars(DbtCliResource), f"dagster-dbt no longer has DbtCliResource.{name}: re-read DbtCli"
        assert name in vars(DbtCli)
    assert "adapter: BaseAdapter | None = None" in inspect.getsource(DbtCliResource.cli)


def test_a_setting_runs_the_local_instance_on_dagsters_stock_storage(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(LOCAL_YAML.read_text())
    monkeypatch.setenv("ETL_ASSETS_LOCAL_STORAGE", "dagster")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        assert type(storage) is SqliteEventLogStorage  # Dagster's own, over the same files
        assert os.path.normpath(storage._base_dir) == os.path.join(home, "history", "runs")
        assert dg.materialize([numbers], instance=instance).success
    monkeypatch.setenv("ETL_ASSETS_LOCAL_STORAGE", "etl_assets")  # the same history, read by ours
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, OpenConnectionEventLogStorage)
        assert instance.get_latest_materialization_event(numbers.key) is not None
    monkeypatch.setenv("ETL_ASSETS_LOCAL_STORAGE", "sqlite")
    with pytest.raises(dg.DagsterInvariantViolationError, match="ETL_ASSETS_LOCAL_STORAGE='sqlite'"):
        dg.DagsterInstance.from_config(str(home))


@pytest.fixture
def local_instance(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(LOCAL_YAML.read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()  # built from the yaml, as `make dev` and `make run` build it
    try:
        yield instance
    finally:
        instance.dispose()


@dg.asset(check_specs=[dg.AssetCheckSpec("positive", asset="numbers")])
def numbers(context: dg.AssetExecutionContext):
    context.log.info("computing numbers")
    yield dg.MaterializeResult(metadata={"count": 3})
    yield dg.AssetCheckResult(check_name="positive", passed=True)


@dg.asset(deps=[numbers])
def doubled() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"count": 6})


def recording_connects():
    """A stand-in for sqlite3.connect that records the file name of every new connection."""
    opened: list[str] = []
    original = sqlite3.dbapi2.connect

    def connect(database, *args, **kwargs):
        opened.append(os.path.basename(str(database)))
        return original(database, *args, **kwargs)

    return opened, connect


def test_the_local_yaml_selects_the_open_connection_event_log(local_instance, tmp_path, monkeypatch):
    assert isinstance(local_instance, LocalInstance)
    storage = local_instance.event_log_storage
    assert isinstance(storage, OpenConnectionEventLogStorage)
    # The same files as Dagster's default SQLite storage: an existing local instance keeps its history.
    assert os.path.normpath(storage._base_dir) == os.path.join(os.environ["DAGSTER_HOME"], "history", "runs")
    # Opened from its directory alone (no DAGSTER_HOME), as tests and tools open an instance.
    home = os.environ["DAGSTER_HOME"]
    monkeypatch.delenv("DAGSTER_HOME")
    with dg.DagsterInstance.from_config(home) as instance:
        assert isinstance(instance.event_log_storage, OpenConnectionEventLogStorage)
        assert os.path.normpath(instance.event_log_storage._base_dir) == os.path.join(home, "history", "runs")


def test_runs_events_materializations_and_checks_read_back(local_instance):
    result = dg.materialize([numbers, doubled], instance=local_instance)
    assert result.success
    run_id = result.run_id
    records = local_instance.get_records_for_run(run_id).records
    types = [r.event_log_entry.dagster_event_type for r in records if r.event_log_entry.is_dagster_event]
    assert dg.DagsterEventType.RUN_SUCCESS in types
    assert types.count(dg.DagsterEventType.ASSET_MATERIALIZATION) == 2
    assert any("computing numbers" in r.event_log_entry.user_message for r in records)
    latest = local_instance.get_latest_materialization_event(dg.AssetKey("doubled"))
    assert latest.asset_materialization.metadata["count"].value == 6
    check = local_instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("numbers"), "positive")])
    assert check[dg.AssetCheckKey(dg.AssetKey("numbers"), "positive")].status.value == "SUCCEEDED"
    # A second instance on the same DAGSTER_HOME (another process: the webserver, the daemon) sees it all.
    other = dg.DagsterInstance.get()
    try:
        assert other.get_run_by_id(run_id).is_success
        assert len(other.get_records_for_run(run_id).records) == len(records)
        assert other.get_latest_materialization_event(dg.AssetKey("numbers")) is not None
    finally:
        other.dispose()


def test_many_events_open_one_connection_per_database(local_instance, monkeypatch):
    storage = local_instance.event_log_storage
    assert dg.materialize([numbers, doubled], instance=local_instance).success  # the index shard is open
    opened, connect = recording_connects()
    monkeypatch.setattr(sqlite3.dbapi2, "connect", connect)  # what SQLAlchemy's pysqlite dialect calls
    for _ in range(3):
        assert dg.materialize([numbers, doubled], instance=local_instance).success
    run_ids = [run.run_id for run in local_instance.get_runs()[:3]]
    records = local_instance.get_records_for_run(run_ids[0]).records
    assert len(records) > 20
    # Dozens of events per run, and the index shard is not opened again; a new run shard takes the
    # few connections Dagster's own creation of it makes (its schema, its alembic stamp), then one.
    assert "index.db" not in opened, opened
    for run_id in run_ids:
        assert opened.count(f"{run_id}.db") <= 6, opened
    # Dagster's own SQLite event log: a connection (and a close, with its checkpoint) per event.
    plain = SqliteEventLogStorage(storage._base_dir)
    opened.clear()
    for number in range(len(records)):
        plain.store_event(log_line(run_ids[0], f"line {number}"))
    assert opened.count(f"{run_ids[0]}.db") >= len(records)


def log_line(run_id: str, message: str) -> EventLogEntry:
    return EventLogEntry(error_info=None, level=20, user_message=message, run_id=run_id, timestamp=time.time(),
                         step_key=None, job_name="j", dagster_event=None)


def _child_writes(storage: OpenConnectionEventLogStorage, run_id: str, queue) -> None:
    """In a forked child: the parent's storage object, with the parent's open connections in it."""
    assert storage._engines  # inherited, not to be used by this process
    storage.store_event(log_line(run_id, "from the child"))
    queue.put(os.getpid())


def test_a_forked_child_writes_through_its_own_connection(local_instance):
    storage = local_instance.event_log_storage
    result = dg.materialize([numbers], instance=local_instance)  # the parent now holds open connections
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_writes, args=(storage, result.run_id, queue))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) != os.getpid()
    messages = [r.event_log_entry.user_message for r in storage.get_records_for_run(result.run_id).records]
    assert "from the child" in messages
    # The parent's connections still work after the child exited.
    assert dg.materialize([numbers], instance=local_instance).success


def test_only_a_bounded_number_of_run_shards_stay_open(local_instance):
    storage = local_instance.event_log_storage
    for _ in range(OPEN_RUN_SHARDS + 3):
        assert dg.materialize([numbers], instance=local_instance).success
    open_run_shards = [s for s in storage._engines if s != "index"]
    assert len(open_run_shards) == OPEN_RUN_SHARDS


def test_wipe_deletes_the_run_shards_it_had_open(local_instance):
    storage = local_instance.event_log_storage
    run_id = dg.materialize([numbers], instance=local_instance).run_id
    assert os.path.exists(storage.path_for_shard(run_id))
    storage.wipe()
    assert not os.path.exists(storage.path_for_shard(run_id))
    assert storage.get_records_for_run(run_id).records == []
    # And the storage works after it.
    assert dg.materialize([numbers], instance=local_instance).success
