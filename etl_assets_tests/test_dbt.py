"""The dbt star schema and Salesforce marts, built through Dagster on DuckDB and on PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.loader import LoadingContextForTest
from dagster._core.test_utils import freeze_time
from dagster._daemon.freshness import FreshnessDaemon

from etl_assets.dbt_project.assets import dbt_models
from etl_assets.dbt_project.project import DbtCli, dbt_executable, dbt_project
from etl_assets.landing.zone import LocalLandingZone
from etl_assets.notifications import Notifier
from etl_assets.salesforce.personal_data import HashKey
from etl_assets.samples.salesforce import generate_sample
from etl_assets.samples.totesys import seed_totesys
from etl_assets.totesys.assets import totesys_extraction_assets
from etl_assets.totesys.source import (
    DuckDBTotesysSource,
    PostgresTotesysSource,
    TotesysSource,
)
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.duckdb import DuckDBWarehouse
from etl_assets.warehouse.io_manager import WarehouseIOManager
from etl_assets.warehouse.postgres import PostgresWarehouse
from etl_assets_tests import live
from etl_assets_tests.conftest import sns_to_sqs
from etl_assets_tests.helpers import folders_in, materialize_folders, resources

DIMENSIONS = ["dim_date", "dim_staff", "dim_location", "dim_design", "dim_currency", "dim_counterparty",
              "dim_payment_type", "dim_transaction", "dim_user", "dim_matter"]
FACTS = ["fact_sales_order", "fact_purchase_order", "fact_payment", "fact_task"]
FOREIGN_KEYS = {
    "fact_sales_order": [("sales_staff_id", "dim_staff", "staff_id"), ("counterparty_id", "dim_counterparty", "counterparty_id"),
                         ("currency_id", "dim_currency", "currency_id"), ("design_id", "dim_design", "design_id"),
                         ("agreed_delivery_location_id", "dim_location", "location_id")],
    "fact_purchase_order": [("staff_id", "dim_staff", "staff_id"), ("counterparty_id", "dim_counterparty", "counterparty_id"),
                            ("currency_id", "dim_currency", "currency_id"),
                            ("agreed_delivery_location_id", "dim_location", "location_id")],
    "fact_payment": [("transaction_id", "dim_transaction", "transaction_id"),
                     ("counterparty_id", "dim_counterparty", "counterparty_id"),
                     ("currency_id", "dim_currency", "currency_id"),
                     ("payment_type_id", "dim_payment_type", "payment_type_id")],
}
FACT_DATES = {
    "fact_sales_order": ["created_date", "last_updated_date", "agreed_delivery_date", "agreed_payment_date"],
    "fact_purchase_order": ["created_date", "last_updated_date", "agreed_delivery_date", "agreed_payment_date"],
    "fact_payment": ["created_date", "last_updated_date", "payment_date"],
}


def warehouse_on_duckdb(path: Path, monkeypatch) -> DuckDBWarehouse:
    """The embedded warehouse at `path`, deployed as settings reads it (ETL_ASSETS_*), which is also where
    dbt's profile finds its target."""
    for name, value in live.duckdb_warehouse(path).items():
        monkeypatch.setenv(name, value)
    return DuckDBWarehouse(path=str(path))


def warehouse_on_postgres(database: dict, monkeypatch) -> PostgresWarehouse:
    """The PostgreSQL warehouse in `database`, deployed as settings reads it (ETL_ASSETS_*), which is also
    where dbt's profile finds its target."""
    for name, value in live.postgres_warehouse(database).items():
        monkeypatch.setenv(name, value)
    return PostgresWarehouse(host=database["host"], port=database["port"], user=database["user"],
                             database=database["database"])


class Pipeline:
    """Source -> raw_totesys -> dbt, run the way the schedule and the automation sensor run it."""

    def __init__(self, source: TotesysSource, warehouse: Warehouse, landing: Path):
        self.source = source
        self.warehouse = warehouse
        self.landing = LocalLandingZone(root=str(landing))
        self.instance = dg.DagsterInstance.ephemeral()
        self.resources = {
            "totesys_source": source,
            "landing_zone": self.landing,
            "warehouse": warehouse,
            "warehouse_io_manager": WarehouseIOManager(warehouse=warehouse),
            "column_policy_key": HashKey(),
            "dbt": DbtCli(project_dir=dbt_project, dbt_executable=dbt_executable()),
        }

    def load_salesforce(self, root: Path) -> None:
        """Two sample folders of the objects the dbt project reads (SALESFORCE_SOURCES)."""
        generate_sample(root, folders=2, rows=25, seed=4)
        materialize_folders(folders_in(root), resources(LocalLandingZone(root=str(root)), self.warehouse),
                            instance=self.instance, objects=SALESFORCE_SOURCES)

    def seed(self, **kwargs) -> dict:
        with self.source.connect() as connection:
            return seed_totesys(connection, seed=9, **kwargs)

    def extract(self) -> dg.ExecuteInProcessResult:
        return dg.materialize(totesys_extraction_assets, resources=self.resources, instance=self.instance)

    def build(self, full_refresh: bool = False, selection=None) -> dg.ExecuteInProcessResult:
        result = dg.materialize([dbt_models], resources=self.resources, instance=self.instance, selection=selection,
                                run_config={"ops": {"dbt_models": {"config": {"full_refresh": full_refresh}}}})
        failed = [(c.asset_key.to_user_string(), c.check_name) for c in result.get_asset_check_evaluations()
                  if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR]
        assert not failed, failed
        return result

    def scalar(self, sql: str):
        return self.warehouse.query(sql)[0][0]

    def change_order(self, order_id: int, units_sold: int) -> None:
        """What the OLTP application does: change a column and stamp last_updated."""
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        with self.source.connect() as connection:
            connection.execute(f'UPDATE "sales_order" SET "units_sold" = {connection.param}, '
                               f'"last_updated" = {connection.param} WHERE "sales_order_id" = {connection.param}',
                               [units_sold, now, order_id])

    def facts(self) -> dict[str, list[tuple]]:
        return {fact: self.warehouse.query(f'SELECT * FROM marts."{fact}" ORDER BY 1') for fact in TOTESYS_FACTS}


TOTESYS_FACTS = ["fact_sales_order", "fact_purchase_order", "fact_payment"]
# The Salesforce objects dbt/models/staging/salesforce/_salesforce__sources.yml reads (the others are no mart's input).
SALESFORCE_SOURCES = ["User", "Task", "litify_pm__Matter__c"]


def assert_full_refresh_gives_identical_facts(pipeline: Pipeline) -> None:
    """`dbt build --full-refresh` of the facts rebuilds them from the history, row for row."""
    before = pipeline.facts()
    result = pipeline.build(full_refresh=True, selection=[dg.AssetKey(["marts", f]) for f in TOTESYS_FACTS])
    assert {e.asset_key.path[-1] for e in result.get_asset_materialization_events()} == set(TOTESYS_FACTS)
    assert pipeline.facts() == before
    for fact in TOTESYS_FACTS:
        assert before[fact], fact


def assert_one_fact_row_per_extracted_version(pipeline: Pipeline) -> None:
    for fact, source, key in (("fact_sales_order", "sales_order", "sales_order_id"),
                              ("fact_purchase_order", "purchase_order", "purchase_order_id"),
                              ("fact_payment", "payment", "payment_id")):
        versions = pipeline.scalar(f'SELECT COUNT(*) FROM (SELECT DISTINCT "{key}", "last_updated" '
                                   f'FROM raw_totesys."{source}_history") AS v')
        assert pipeline.scalar(f'SELECT COUNT(*) FROM marts."{fact}"') == versions, fact


def assert_star_schema_is_complete(pipeline: Pipeline) -> None:
    for table in DIMENSIONS + FACTS:
        assert pipeline.scalar(f'SELECT COUNT(*) FROM marts."{table}"') > 0, table
    for fact, keys in FOREIGN_KEYS.items():
        for column, dim, dim_key in keys:
            dangling = pipeline.scalar(
                f'SELECT COUNT(*) FROM marts."{fact}" f LEFT JOIN marts."{dim}" d ON f."{column}" = d."{dim_key}" '
                f'WHERE d."{dim_key}" IS NULL')
            assert dangling == 0, f"{fact}.{column} -> {dim}"
    for fact, columns in FACT_DATES.items():
        for column in columns:
            missing = pipeline.scalar(
                f'SELECT COUNT(*) FROM marts."{fact}" f LEFT JOIN marts.dim_date d ON f."{column}" = d.date_id '
                f'WHERE d.date_id IS NULL')
            assert missing == 0, f"{fact}.{column} not in dim_date"


def test_the_graph_runs_from_oltp_tables_through_raw_and_staging_to_the_marts():
    from etl_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    chain = [dg.AssetKey(["totesys", "sales_order"]), dg.AssetKey(["raw_totesys", "sales_order_history"]),
             dg.AssetKey(["staging", "stg_totesys__sales_order_versions"]), dg.AssetKey(["marts", "fact_sales_order"]),
             dg.AssetKey(["marts", "dim_date"])]
    for parent, child in zip(chain, chain[1:]):
        assert parent in graph.get(child).parent_keys, f"{parent} -> {child}"
    assert dg.AssetKey(["salesforce", "task"]) in graph.get(dg.AssetKey(["staging", "stg_salesforce__tasks"])).parent_keys
    assert dg.AssetKey(["staging", "stg_salesforce__matters"]) in graph.get(dg.AssetKey(["marts", "fact_task"])).parent_keys

    checks = {c.name for c in graph.get_check_keys_for_assets([dg.AssetKey(["marts", "fact_sales_order"])])}
    assert "unique_fact_sales_order_sales_record_id" in checks
    assert any(name.startswith("relationships_fact_sales_order_sales_staff_id") for name in checks)
    for key in graph.get_all_asset_keys():
        if key.path[0] in ("staging", "marts"):
            node = graph.get(key)
            assert node.automation_condition is not None and node.pools == {"warehouse"}, key
            assert node.group_name in ("totesys_star", "salesforce_marts"), key
    for name in ("dim_staff", "dim_location", "dim_design", "dim_currency", "dim_counterparty", "dim_payment_type",
                 "dim_transaction", "fact_payment", "fact_purchase_order", "dim_user"):
        assert dg.AssetKey(["marts", name]) in graph.get_all_asset_keys()

    schedule = defs.resolve_schedule_def("totesys_extract_schedule")
    assert schedule.cron_schedule == "*/5 * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert defs.resolve_sensor_def("dbt_automation_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    for fact in TOTESYS_FACTS:
        policy = graph.get(dg.AssetKey(["marts", fact])).freshness_policy
        assert isinstance(policy, dg.FreshnessPolicy) and policy.fail_window.to_timedelta() == dt.timedelta(minutes=30)
    assert defs.resolve_sensor_def("notify_on_missed_freshness").default_status == dg.DefaultSensorStatus.RUNNING


def test_duckdb_star_schema_follows_changes_in_the_postgres_source(postgres_database, tmp_path: Path, monkeypatch):
    source = PostgresTotesysSource(host=postgres_database["host"], port=postgres_database["port"],
                                   user=postgres_database["user"], database=postgres_database["database"])
    pipeline = Pipeline(source, warehouse_on_duckdb(tmp_path / "warehouse.duckdb", monkeypatch), tmp_path / "landing")
    pipeline.load_salesforce(tmp_path / "salesforce")
    seeded = pipeline.seed()
    pipeline.extract()
    pipeline.build()
    assert_star_schema_is_complete(pipeline)
    assert pipeline.scalar("SELECT COUNT(*) FROM marts.fact_sales_order") == seeded["sales_order"]["inserted"]
    assert pipeline.scalar("SELECT currency_name FROM marts.dim_currency WHERE currency_code = 'GBP'") == \
        "British pound sterling"

    staff_id, order_id = 3, 7
    with source.connect() as connection:
        old_location = connection.fetchall('SELECT "location" FROM "department" WHERE "department_id" = 1')[0][0]
    changed = pipeline.seed()  # a tick of business
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    with source.connect() as connection:
        connection.execute('UPDATE "department" SET "location" = %s, "last_updated" = %s WHERE "department_id" = 1',
                           ["Timbuktu", now])
        connection.execute('UPDATE "staff" SET "department_id" = 1, "last_updated" = %s WHERE "staff_id" = %s',
                           [now, staff_id])
        connection.execute('UPDATE "sales_order" SET "units_sold" = 4242, "last_updated" = %s '
                           'WHERE "sales_order_id" = %s', [now, order_id])
    assert old_location != "Timbuktu"
    pipeline.extract()
    pipeline.change_order(order_id, 4343)  # a second change, extracted before dbt runs again
    pipeline.extract()
    pipeline.build()

    assert_star_schema_is_complete(pipeline)
    department = pipeline.warehouse.query(
        "SELECT department_name, location FROM marts.dim_staff WHERE staff_id = ?", [staff_id])[0]
    assert department[1] == "Timbuktu"
    versions = pipeline.warehouse.query(
        "SELECT units_sold FROM marts.fact_sales_order WHERE sales_order_id = ? ORDER BY sales_record_id", [order_id])
    assert [v[0] for v in versions[-2:]] == [4242, 4343] and len(versions) == 3, "both versions reach the fact"
    assert_one_fact_row_per_extracted_version(pipeline)
    assert pipeline.scalar("SELECT COUNT(*) FROM marts.fact_sales_order") >= \
        seeded["sales_order"]["inserted"] + changed["sales_order"]["inserted"] + changed["sales_order"]["updated"] + 1
    assert pipeline.scalar("SELECT COUNT(DISTINCT sales_record_id) FROM marts.fact_sales_order") == \
        pipeline.scalar("SELECT COUNT(*) FROM marts.fact_sales_order")
    assert_full_refresh_gives_identical_facts(pipeline)

    assert pipeline.extract().get_asset_materialization_events() == [], "no source changes, no new materializations"


def test_dbt_build_passes_on_postgres_from_the_embedded_source(postgres_database, tmp_path: Path, monkeypatch):
    warehouse = warehouse_on_postgres(postgres_database, monkeypatch)
    pipeline = Pipeline(DuckDBTotesysSource(path=str(tmp_path / "totesys.duckdb")), warehouse, tmp_path / "landing")
    pipeline.load_salesforce(tmp_path / "salesforce")
    pipeline.seed()
    pipeline.extract()
    pipeline.build()
    before = pipeline.scalar("SELECT COUNT(*) FROM marts.fact_payment")
    ticks = []
    for units in (5151, 5252):  # two ticks of business, each extracted, one dbt build after both
        ticks.append(pipeline.seed())
        pipeline.change_order(11, units)
        pipeline.extract()
    pipeline.build()
    assert_star_schema_is_complete(pipeline)
    assert pipeline.scalar("SELECT COUNT(*) FROM marts.fact_payment") == \
        before + sum(t["payment"]["inserted"] + t["payment"]["updated"] for t in ticks)
    versions = pipeline.warehouse.query(
        "SELECT units_sold FROM marts.fact_sales_order WHERE sales_order_id = 11 ORDER BY sales_record_id")
    assert [v[0] for v in versions[-2:]] == [5151, 5252], "both versions reach the fact"
    assert_one_fact_row_per_extracted_version(pipeline)
    assert_full_refresh_gives_identical_facts(pipeline)
    assert pipeline.scalar("SELECT data_type FROM information_schema.columns WHERE table_schema = 'marts' "
                           "AND table_name = 'fact_sales_order' AND column_name = 'unit_price'") == "numeric"


def test_a_fact_not_built_within_30_minutes_turns_fail_in_dagster_and_notifies_once(s3_endpoint, monkeypatch):
    """Dagster's own freshness daemon code evaluates the facts' policy (at frozen times, no waiting);
    the sensor turns the recorded FAIL into one SNS message, and the recovery into another."""
    from etl_assets.definitions import defs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # the notifier uses boto3's default credential chain
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    topic, sqs, queue = sns_to_sqs(s3_endpoint, "freshness")

    def messages() -> list[dict]:
        received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        return sorted((json.loads(m["Body"]) for m in received), key=lambda m: m["status"])

    graph = defs.resolve_asset_graph()
    key = dg.AssetKey(["marts", "fact_sales_order"])
    instance = dg.DagsterInstance.ephemeral()
    daemon = FreshnessDaemon()

    def state_at(timestamp: float) -> FreshnessState:
        with freeze_time(timestamp):
            asyncio.run(daemon._evaluate_asset(context=LoadingContextForTest(instance), node=graph.get(key)))
        return instance.get_freshness_state_records([key])[key].freshness_state

    sensor = defs.resolve_sensor_def("notify_on_missed_freshness")
    context = dg.build_sensor_context(instance=instance, resources={
        "notifier": Notifier(topic_arn=topic, endpoint_url=s3_endpoint, region_name="us-east-1")})
    instance.report_runless_asset_event(dg.AssetMaterialization(key))
    built = instance.get_latest_materialization_event(key).timestamp
    assert state_at(built + 10 * 60) == FreshnessState.PASS
    assert isinstance(sensor(context), dg.SkipReason)
    assert state_at(built + 25 * 60) == FreshnessState.WARN
    assert state_at(built + 31 * 60) == FreshnessState.FAIL
    sensor(context)
    assert [(m["table"], m["status"]) for m in messages()] == [("marts/fact_sales_order", "FRESHNESS_FAIL")]
    assert isinstance(sensor(context), dg.SkipReason), "a FAIL that lasts is notified once"

    instance.report_runless_asset_event(dg.AssetMaterialization(key))
    rebuilt = instance.get_latest_materialization_event(key).timestamp
    assert state_at(rebuilt + 60) == FreshnessState.PASS
    sensor(context)
    assert [(m["table"], m["status"]) for m in messages()] == [("marts/fact_sales_order", "FRESHNESS_PASS")]


def test_the_cli_builds_the_marts_when_raw_tables_changed_since_the_last_build(tmp_path: Path, monkeypatch):
    """On the embedded default (DuckDB source and warehouse): one order changed twice and extracted
    twice outside the CLI (as from the UI or the schedule); `etl-assets totesys` then finds nothing
    new to extract but builds the marts, since they are older than their inputs, and both versions
    reach the fact; run again, it has nothing to build."""
    from etl_assets.settings import build_resources, build_totesys_source
    from etl_assets.samples.totesys import seed_embedded_if_empty
    from etl_assets.totesys import totesys_extract_job, totesys_source_tables
    from etl_assets.execution import SupervisedRuns
    from etl_assets.totesys.pipeline import resolved_source, run_totesys_pipeline

    for name, value in {"ETL_ASSETS_WAREHOUSE": "duckdb", "ETL_ASSETS_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
                        "ETL_ASSETS_TOTESYS_SOURCE": "duckdb",
                        "ETL_ASSETS_TOTESYS_DUCKDB_PATH": str(tmp_path / "totesys.duckdb"),
                        "ETL_ASSETS_LANDING_ZONE": "local", "ETL_ASSETS_LANDING_ROOT": str(tmp_path / "landing")}.items():
        monkeypatch.setenv(name, value)
    defs = dg.Definitions(
        assets=[*totesys_source_tables, *totesys_extraction_assets, dbt_models], jobs=[totesys_extract_job],
        resources={**build_resources(), "totesys_source": build_totesys_source(),
                   "dbt": DbtCli(project_dir=dbt_project, dbt_executable=dbt_executable())},
    )
    instance = dg.DagsterInstance.ephemeral()
    runs = SupervisedRuns(instance)  # ephemeral: each run executes in this process
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    seeded = seed_embedded_if_empty(resolved_source(defs))  # what `etl-assets totesys` does first
    first = run_totesys_pipeline(defs, runs, quiet)
    assert seeded and first.success and first.dbt_ran and first.dbt_skipped_groups == ["salesforce_marts"]

    pipeline = Pipeline(DuckDBTotesysSource(path=str(tmp_path / "totesys.duckdb")),
                        DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb")), tmp_path / "landing")
    for units in (6161, 6262):
        pipeline.change_order(5, units)
        assert defs.resolve_job_def("totesys_extract_job").execute_in_process(instance=instance, run_config=quiet).success

    second = run_totesys_pipeline(defs, runs, quiet)
    assert second.success and second.extracted == {}, "nothing new since the UI's extractions"
    assert "staging/stg_totesys__sales_order_versions" in second.stale_models and second.dbt_ran
    versions = pipeline.warehouse.query(
        "SELECT units_sold FROM marts.fact_sales_order WHERE sales_order_id = 5 ORDER BY sales_record_id")
    assert [v[0] for v in versions[-2:]] == [6161, 6262] and len(versions) == 3
    assert_one_fact_row_per_extracted_version(pipeline)

    third = run_totesys_pipeline(defs, runs, quiet)
    assert third.success and third.extracted == {} and third.stale_models == [] and not third.dbt_ran


PREPARE_AND_READ = """
import sys
import orjson
from dagster_dbt import DbtProject
from etl_assets.dbt_project.project import prepare_manifest
project = DbtProject(project_dir=sys.argv[1], profiles_dir=sys.argv[1])
manifest = prepare_manifest(project)
nodes = orjson.loads(manifest.read_bytes())["nodes"]
print(len(nodes), manifest.stat().st_mtime_ns)
"""


def test_processes_starting_together_on_a_fresh_clone_parse_the_manifest_once_and_read_it_whole(tmp_path: Path):
    """CI's xdist workers import the dbt assets at once on a clone with no manifest: one read the file
    while another's `dbt parse` was writing it (orjson: unexpected end of data). Now one process
    parses, the others wait and read the same, whole file."""
    project = tmp_path / "dbt"
    shutil.copytree(dbt_project.project_dir, project, ignore=shutil.ignore_patterns("target", "logs"))
    processes = [subprocess.Popen([sys.executable, "-c", PREPARE_AND_READ, str(project)], text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    results = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], [err[-2000:] for _, err in results]
    printed = {" ".join(out.split()[-2:]) for out, _ in results}
    assert len(printed) == 1, f"each process wrote its own manifest: {printed}"
    nodes = int(next(iter(printed)).split()[0])
    assert nodes == len(json.loads(dbt_project.manifest_path.read_text())["nodes"])
    assert not [p.name for p in (project / "target").iterdir() if p.name.startswith(".parse-")]


def test_a_dbt_command_starts_from_the_parse_the_last_one_on_its_profile_saved(tmp_path: Path, monkeypatch):
    """dagster-dbt gives each command a target folder of its own, where dbt never found an earlier parse: every
    command parsed the whole project. DbtCli saves each command's parse for its profile and starts the next
    command on that profile from it; a command on another profile parses in full (dbt's own check) and saves
    its own, beside the first."""
    project = tmp_path / "dbt"
    shutil.copytree(dbt_project.project_dir, project, ignore=shutil.ignore_patterns("target", "logs"))
    dbt = DbtCli(project_dir=str(project), profiles_dir=str(project), dbt_executable=dbt_executable())

    def parse(warehouse: Path) -> list[str]:
        """`dbt parse` on a DuckDB warehouse at `warehouse`: why dbt could not start from a saved parse, if so."""
        monkeypatch.setenv("ETL_ASSETS_WAREHOUSE", "duckdb")
        monkeypatch.setenv("ETL_ASSETS_DUCKDB_PATH", str(warehouse))
        events = [event.raw_event for event in dbt.cli(["parse"]).stream_raw_events()]
        return [e["data"].get("reason", "") for e in events if e["info"]["name"] == "UnableToPartialParse"]

    saved = project / "target" / "partial_parse"
    assert parse(tmp_path / "one.duckdb") == ["saved manifest not found. Starting full parse."]
    assert len(list(saved.iterdir())) == 1
    assert parse(tmp_path / "one.duckdb") == [], "the second command on the profile starts from the saved parse"
    assert parse(tmp_path / "two.duckdb") == ["saved manifest not found. Starting full parse."]
    assert len(list(saved.iterdir())) == 2, "each profile has its own saved parse"
    assert parse(tmp_path / "two.duckdb") == [] and parse(tmp_path / "one.duckdb") == []
