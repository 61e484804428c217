"""File-driven loads against S3 over HTTP (moto, SNS included), on DuckDB and the real PostgreSQL server.

Each bad input has one exact outcome: its status, where the file ends up, what the
audit row says, the notification, and the target table unchanged. The behaviours
table of docs/file-feeds.md is what these tests check, case by case.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from etl_assets.audit_api import AuditServerConfigError, build_server
from etl_assets.files.assets import (
    csv_to_parquet_loads,
    datalake_loads,
    external_feed_loads,
)
from etl_assets.files.config import FEEDS_PATH
from etl_assets.files.loading import OVERRIDE_TAG
from etl_assets.files.sensors import landed_files_sensors
from etl_assets.landing.zone import S3LandingZone
from etl_assets.notifications import Notifier
from etl_assets.samples.files import ORDERS_SCHEMA
from etl_assets.warehouse.audit import find_loads
from etl_assets.warehouse.redshift import RedshiftWarehouse
from etl_assets.warehouse.steps import Step
from etl_assets_tests.conftest import S3_CREDENTIALS, sns_to_sqs

ASSET_FOR = {"datalake/": datalake_loads, "external/": external_feed_loads, "csv/": csv_to_parquet_loads}
BANK_HEADER = "txn_id|account|amount|currency|booked_at"
# A test feed whose post-load SQL fails when a balance goes negative (a CHECK constraint): the
# failure must take the file's rows with it.
LEDGER_FEED = """
  ledger:
    pattern: "ledger_*.csv"
    table: finance.ledger
    mode: append
    header: [entry_id, account, amount]
    columns: {entry_id: integer, account: string, amount: float}
    required: [entry_id, account, amount]
    post_load_sql:
      - CREATE TABLE IF NOT EXISTS finance.ledger_balances (account TEXT PRIMARY KEY, balance DOUBLE PRECISION CHECK (balance >= 0))
      - DELETE FROM finance.ledger_balances
      - INSERT INTO finance.ledger_balances SELECT account, SUM(amount) FROM finance.ledger GROUP BY account
"""


@pytest.fixture
def env(s3_endpoint, s3_bucket, warehouse, monkeypatch, tmp_path):
    """A landing bucket, an SNS topic delivering to an SQS queue we read, a warehouse (DuckDB or
    PostgreSQL), and the bundled feeds plus the test feed `ledger`."""
    bundled = (Path(FEEDS_PATH).read_text(encoding="utf-8")).replace("external_feeds:\n", "external_feeds:" + LEDGER_FEED, 1)
    (tmp_path / "feeds.yaml").write_text(bundled, encoding="utf-8")
    monkeypatch.setenv("ETL_ASSETS_FEEDS", str(tmp_path / "feeds.yaml"))
    client, bucket = s3_bucket
    topic, sqs, queue = sns_to_sqs(s3_endpoint, "loads")
    zone = S3LandingZone(s3=S3Resource(endpoint_url=s3_endpoint, **S3_CREDENTIALS), bucket=bucket)
    notifier = Notifier(topic_arn=topic, endpoint_url=s3_endpoint, **S3_CREDENTIALS)  # the landing zone's keys

    class Env:
        instance = dg.DagsterInstance.ephemeral()

        def put(self, key: str, text: str | bytes) -> str:
            client.put_object(Bucket=bucket, Key=key, Body=text.encode() if isinstance(text, str) else text)
            return key

        def keys(self) -> set[str]:
            return {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}

        def text(self, key: str) -> str:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()

        def load(self, key: str, override: str | None = None):
            asset = next(a for prefix, a in ASSET_FOR.items() if key.startswith(prefix))
            self.instance.add_dynamic_partitions(asset.partitions_def.name, [key])
            return dg.materialize([asset], partition_key=key, instance=self.instance, raise_on_error=False,
                                  tags={OVERRIDE_TAG: override} if override else None,
                                  resources={"landing_zone": zone, "warehouse": warehouse, "notifier": notifier})

        def audit(self, key: str) -> dict:
            return next(a for a in find_loads(warehouse) if a["source_key"] == key)

        def messages(self) -> list[dict]:
            got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            return [json.loads(m["Body"]) for m in got]

        def rows(self, table: str) -> list[tuple]:
            return sorted(warehouse.query(f"SELECT * FROM {table}"), key=repr)

    e = Env()
    e.warehouse, e.zone, e.notifier = warehouse, zone, notifier
    return e


def orders_csv(*rows: str) -> str:
    return "order_id,customer,amount,ordered_at\n" + "".join(r + "\n" for r in rows)


PLACE = {"ABORTED": "error/", "FAILED": "error/", "DUPLICATE": "duplicate/", "HELD": "held/"}


def assert_refused(env, key: str, status: str, reason: str, table: str | None, before=None, override=None):
    result = env.load(key, override)
    assert not result.success
    place = PLACE[status]
    assert key not in env.keys() and f"{place}{key}" in env.keys()
    text = env.text(f"{place}{key}.reason.txt")
    assert text.startswith(f"{status}") and reason in text, text
    [audit] = [a for a in find_loads(env.warehouse) if a["source_key"] == key][:1]
    assert (audit["status"], audit["rows_loaded"]) == (status, 0) and reason in audit["error"], audit
    [message] = [m for m in env.messages() if m["file"] == key]
    assert message["status"] == status and reason in message["reason"]
    if table is not None:
        assert env.rows(table) == before, "a refused file changed the table"
        assert audit["target_table"] == table and message["table"] == table, "the refusal does not name its table"


def test_schema_append_truncate_and_schema_evolution(env):
    assert env.load(env.put("datalake/sales/schema/orders/v1.json", json.dumps(ORDERS_SCHEMA))).success
    append = env.put("datalake/sales/append/orders/day1.csv",
                     orders_csv("1,C1,10.50,2024-05-01T10:00:00Z", "2,C2,,2024-05-01T11:00:00+02:00"))
    assert env.load(append).success
    assert env.load(append).success, "a re-run on demand finds the file in archive/"
    assert len(env.rows("sales.orders")) == 2, "and loading the same file again adds nothing"
    assert [a["status"] for a in find_loads(env.warehouse, table="sales.orders")][:2] in (["FINISHED", "FINISHED"],)

    evolved = json.loads(json.dumps(ORDERS_SCHEMA))
    evolved["columns"].append({"name": "channel", "type": "string"})
    assert env.load(env.put("datalake/sales/schema/orders/v2.json", json.dumps(evolved))).success
    columns = [r[0] for r in env.warehouse.query("SELECT column_name FROM information_schema.columns "
                                                  "WHERE table_name = 'orders' ORDER BY ordinal_position")]
    assert "channel" in columns

    truncate = env.put("datalake/sales/truncate/orders/reset.csv",
                       "order_id,customer,amount,ordered_at,channel\n9,C9,1.00,2024-05-03T00:00:00Z,web\n")
    assert env.load(truncate).success
    assert [r[:2] for r in env.warehouse.query("SELECT order_id, customer FROM sales.orders")] == [(9, "C9")]
    assert f"archive/{truncate}" in env.keys()
    assert any(m["file"] == truncate and m["status"] == "FINISHED" for m in env.messages())


def test_each_bad_datalake_input_has_its_exact_outcome(env):
    env.load(env.put("datalake/sales/schema/orders/v1.json",
                     json.dumps({**ORDERS_SCHEMA, "allowed_operations": ["append", "schema"]})))
    env.load(env.put("datalake/sales/append/orders/good.csv", orders_csv("1,C1,5,2024-05-01T00:00:00Z")))
    before = env.rows("sales.orders")
    assert_refused(env, env.put("datalake/sales/truncate/orders/t.csv", orders_csv("2,C2,1,2024-05-01T00:00:00Z")),
                   "ABORTED", "truncate is not allowed for sales.orders", "sales.orders", before)
    assert_refused(env, env.put("datalake/sales/append/orders/bad.csv",
                                orders_csv("3,C3,1,2024-05-01T00:00:00Z", "4,C4,lots,2024-05-01T00:00:00Z")),
                   "FAILED", "line 3, column 3: amount: not a valid float: 'lots'", "sales.orders", before)
    assert_refused(env, env.put("datalake/sales/append/orders/header.csv", "order_id,client\n1,x\n"),
                   "ABORTED", "header mismatch: missing column(s) amount, customer, ordered_at; unexpected column(s) "
                   "client", "sales.orders", before)
    assert_refused(env, env.put("datalake/sales/append/orders/empty.csv", b""),
                   "ABORTED", "the file is empty", "sales.orders", before)
    assert_refused(env, env.put("datalake/sales/append/invoices/x.csv", "a\n1\n"),
                   "ABORTED", "unknown table sales.invoices", None)
    assert_refused(env, env.put("datalake/sales/upsert/orders/x.csv", "a\n1\n"),
                   "ABORTED", "unknown action 'upsert'", None)
    assert_refused(env, env.put("datalake/loose.csv", "a\n1\n"), "ABORTED", "unknown prefix", None)
    narrowed = {**ORDERS_SCHEMA, "columns": [{"name": "order_id", "type": "string", "nullable": False}]}
    assert_refused(env, env.put("datalake/sales/schema/orders/v2.json", json.dumps(narrowed)), "ABORTED",
                   "column order_id would change type integer -> string", "sales.orders", before)
    assert "incompatible schema change: column amount would be dropped" in \
        env.text("error/datalake/sales/schema/orders/v2.json.reason.txt")


def bank_file(rows: int, declared: int | None = None, header: str = BANK_HEADER, first: int = 1) -> str:
    body = "".join(f"{i}|ACC{i % 7:03d}|{i}.25|EUR|2024-05-01T{i % 24:02d}:00:00Z\n" for i in range(first, rows + first))
    return f"{header}\n{body}TRL|{rows if declared is None else declared}\n"


def test_external_feeds_trailer_header_split_and_post_load_sql(env):
    small = env.put("external/inbound/bank_txn_1.csv", bank_file(3))
    assert env.load(small).success
    before = env.rows("finance.bank_transactions")
    assert_refused(env, env.put("external/inbound/bank_txn_2.csv", bank_file(3, declared=4)), "ABORTED",
                   "trailer count mismatch: the trailer declares 4 records, the file holds 3",
                   "finance.bank_transactions", before)
    assert_refused(env, env.put("external/inbound/bank_txn_3.csv", bank_file(2, header="txn|account|amount|x|y")),
                   "ABORTED", "header mismatch: missing column(s) txn_id, currency, booked_at; unexpected column(s) "
                   "txn, x, y", "finance.bank_transactions", before)
    assert_refused(env, env.put("external/inbound/bank_txn_4.csv", "txn_id|account\n1|A\n"), "ABORTED",
                   "trailer missing", "finance.bank_transactions", before)
    assert_refused(env, env.put("external/inbound/unknown_feed.csv", "a\n"), "ABORTED", "no feed in feeds.yaml",
                   None)

    big = env.put("external/inbound/bank_txn_5.csv", bank_file(6000, first=10))  # ~290 KB > the 200 KB threshold
    result = env.load(big)
    assert result.success
    metadata = result.asset_materializations_for_node("files__external_feed_loads")[0].metadata
    assert metadata["parts"].value == 2 and metadata["rows_loaded"].value == 6000
    assert len(env.rows("finance.bank_transactions")) == 6003
    balances = env.warehouse.query("SELECT SUM(balance) FROM finance.daily_balances")[0][0]
    assert balances == pytest.approx(env.warehouse.query("SELECT SUM(amount) FROM finance.bank_transactions")[0][0])


def test_csv_to_parquet_discovers_schema_reports_drift_and_checks_nulls(env):
    first = env.put("csv/input/sales/may.csv", "order_id,order_date,region,product,quantity,unit_price\n"
                                               "1,2024-05-01,North,Widget,2,9.99\n")
    result = env.load(first)
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["discovered_schema"].value["order_date"] == "date"
    assert "csv/processed/sales/may.parquet" in env.keys()

    second = env.put("csv/input/sales/june.csv", "order_id,order_date,region,product,quantity,unit_price,channel\n"
                                                 "2,2024-06-01,South,Gadget,1,19.5,web\n")
    [check] = env.load(second).get_asset_check_evaluations()
    assert not check.passed and check.metadata["drift"].value == {"added": ["channel"]}
    assert env.rows("etl_files.schema_registry")[0][0] == "sales"
    assert len(env.rows("sales_data.sales")) == 2

    before = env.rows("sales_data.sales")
    assert_refused(env, env.put("csv/input/sales/nulls.csv", "order_id,order_date,region,product,quantity,unit_price\n"
                                                             "3,,East,Gizmo,1,2.0\n"),
                   "FAILED", "line 2, column 2: order_date: a value is required", "sales_data.sales", before)


def test_sensors_request_each_file_once_and_schema_files_first(env):
    env.put("datalake/sales/append/orders/a.csv", orders_csv("1,C1,5,2024-05-01T00:00:00Z"))
    env.put("datalake/sales/schema/orders/v1.json", json.dumps(ORDERS_SCHEMA))
    env.put("external/inbound/bank_txn_9.csv", bank_file(1))
    sensors = {s.name: s for s in landed_files_sensors}
    with dg.build_sensor_context(instance=env.instance, resources={"landing_zone": env.zone}) as context:
        datalake = sensors["datalake_files_sensor"](context)
    assert [r.partition_key for r in datalake.run_requests] == ["datalake/sales/schema/orders/v1.json"]
    with dg.build_sensor_context(instance=env.instance, resources={"landing_zone": env.zone}) as context:
        external = sensors["external_files_sensor"](context)
    assert [r.partition_key for r in external.run_requests] == ["external/inbound/bank_txn_9.csv"]
    assert external.dynamic_partitions_requests[0].partition_keys == ["external/inbound/bank_txn_9.csv"]


def test_run_failure_sensor_notifies_runs_that_die_once(env):
    from etl_assets.files.sensors import notify_on_run_failure

    @dg.asset
    def crashes():
        raise RuntimeError("worker lost")

    @dg.asset
    def refuses():
        raise dg.Failure("bad file", metadata={"notified": True})

    sent = []
    for asset in (crashes, refuses):
        result = dg.materialize([asset], instance=env.instance, raise_on_error=False)
        failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
        context = dg.build_run_status_sensor_context(
            sensor_name="notify_on_run_failure", dagster_event=failure, dagster_instance=env.instance,
            dagster_run=env.instance.get_run_by_id(result.run_id), resources={"notifier": env.notifier},
        ).for_run_failure()
        notify_on_run_failure(context)
        sent += [m for m in env.messages() if m.get("run_id") == result.run_id]
    assert len(sent) == 1 and sent[0]["status"] == "FAILED" and sent[0]["job"] == "__ephemeral_asset_job__"


# Issue 15: one test per defect, each on DuckDB and PostgreSQL (the `warehouse` fixture's params).

def ledger_file(*rows: str) -> str:
    return "entry_id,account,amount\n" + "".join(r + "\n" for r in rows)


def test_post_load_sql_is_inside_the_load_transaction(env):
    """Defect 1: a post-load statement that fails takes the file's rows with it, and the audit says so."""
    assert env.load(env.put("external/inbound/ledger_1.csv", ledger_file("1,A,10", "2,B,5"))).success
    ledger, balances = env.rows("finance.ledger"), env.rows("finance.ledger_balances")
    assert sorted(r[:2] for r in balances) == [("A", 10.0), ("B", 5.0)]
    key = env.put("external/inbound/ledger_2.csv", ledger_file("3,A,-50"))  # A's balance would go negative
    assert_refused(env, key, "FAILED", "post-load SQL statement 3 of 3 (INSERT ...) failed", "finance.ledger", ledger)
    assert env.rows("finance.ledger_balances") == balances, "the post-load table was emptied"
    assert env.audit(key)["rows_read"] == 0 and env.audit(key)["target_table"] == "finance.ledger"


def test_redshift_plan_runs_post_load_sql_in_the_load_transaction(tmp_path):
    """Defect 1 on Redshift, as a plan (no cluster): post-load steps follow the merge inside `transaction`."""
    from etl_assets.files.loading import table_spec
    from etl_assets.warehouse.batch import StagedBatchWriter
    from etl_assets.warehouse.spec import ColumnType

    redshift = RedshiftWarehouse(s3=S3Resource(), staging_bucket="b", iam_role_arn="arn:aws:iam::1:role/r")
    batch = StagedBatchWriter(table_spec("finance", "ledger", {"entry_id": ColumnType.INTEGER}), "k",
                              mode="append").close()
    plan = redshift.plan(batch, {}, after=[Step("DELETE FROM finance.ledger_balances", label="post-load 1")])
    assert plan.transaction[-1].sql == "DELETE FROM finance.ledger_balances"
    assert all("ledger_balances" not in s.sql for s in plan.prepare)
    assert plan.transaction[0].sql.startswith("LOCK"), "one transaction, locked first"
    batch.discard()


SALES_HEADER = "order_id,order_date,region,product,quantity,unit_price\n"


def test_csv_to_parquet_refuses_values_that_do_not_fit_with_line_and_column(env):
    """Defect 2 and 5: 2.5 in an integer column is refused with line and column, never rounded; a bad date
    names its line and column rather than database text; a refused file leaves no Parquet."""
    assert env.load(env.put("csv/input/sales/may.csv", SALES_HEADER + "1,2024-05-01,North,Widget,2,9.99\n")).success
    before = env.rows("sales_data.sales")
    key = env.put("csv/input/sales/june.csv", SALES_HEADER + "2,2024-06-01,South,Gadget,3,1.0\n"
                                                             "3,2024-06-02,East,Gizmo,2.5,1.0\n")
    assert_refused(env, key, "FAILED", "line 3, column 5: quantity: not a valid integer: '2.5'", "sales_data.sales",
                   before)
    assert "csv/processed/sales/june.parquet" not in env.keys()
    assert json.loads(env.audit(key)["schema_drift"]) == {"retyped": ["quantity: integer -> float"]}
    key = env.put("csv/input/sales/july.csv", SALES_HEADER + "4,2024-07-40,East,Gizmo,2,1.0\n")
    assert_refused(env, key, "FAILED", "line 2, column 2: order_date: not a valid date: '2024-07-40'",
                   "sales_data.sales", before)
    assert "csv/processed/sales/july.parquet" not in env.keys()


CASES = {  # the same defect in each kind of feed: (datalake file, external file, csv file)
    "fraction in an integer column": (
        "order_id,customer,amount,ordered_at\n1.5,C1,1,2024-05-01T00:00:00Z\n",
        f"{BANK_HEADER}\n1.5|A|1|EUR|2024-05-01T00:00:00Z\nTRL|1\n",
        SALES_HEADER + "1.5,2024-05-01,North,Widget,2,9.99\n",
    ),
    "blank required value": (
        "order_id,customer,amount,ordered_at\n,C1,1,2024-05-01T00:00:00Z\n",
        f"{BANK_HEADER}\n|A|1|EUR|2024-05-01T00:00:00Z\nTRL|1\n",
        SALES_HEADER + ",2024-05-01,North,Widget,2,9.99\n",
    ),
    "missing column": (
        "customer,amount,ordered_at\nC1,1,2024-05-01T00:00:00Z\n",
        "account|amount|currency|booked_at\nA|1|EUR|2024-05-01T00:00:00Z\nTRL|1\n",
        "order_date,region,product,quantity,unit_price\n2024-05-01,North,Widget,2,9.99\n",
    ),
}
EXPECTED = {"fraction in an integer column": ("FAILED", "line 2, column 1: order_id: not a valid integer: '1.5'"),
            "blank required value": ("FAILED", "line 2, column 1: order_id: a value is required"),
            "missing column": ("ABORTED", "line 1: header mismatch: missing column(s) order_id")}


def test_the_same_input_gets_the_same_status_in_every_kind(env):
    """Defect 2 and 7: one typing and validation path: same status, same line, column and wording."""
    env.load(env.put("datalake/sales/schema/orders/v1.json", json.dumps(ORDERS_SCHEMA)))
    env.load(env.put("csv/input/sales/first.csv", SALES_HEADER + "1,2024-05-01,North,Widget,2,9.99\n"))
    for n, (case, (datalake, external, csv)) in enumerate(CASES.items()):
        status, reason = EXPECTED[case]
        for key, text in ((f"datalake/sales/append/orders/{n}.csv", datalake),
                          (f"external/inbound/bank_txn_case{n}.csv", external), (f"csv/input/sales/case{n}.csv", csv)):
            env.put(key, text)
            expected = reason.replace("order_id", "txn_id") if key.startswith("external/") else reason
            assert_refused(env, key, status, expected, None)


def test_renamed_resends_are_duplicates_in_every_kind(env):
    """Defect 3: the same content under a new name is DUPLICATE (moved to duplicate/), never loaded twice;
    a keyed feed catches a re-send whose bytes differ; a feed can opt out; an override loads it anyway."""
    env.load(env.put("datalake/sales/schema/orders/v1.json", json.dumps(ORDERS_SCHEMA)))
    day = orders_csv("1,C1,5,2024-05-01T00:00:00Z")
    assert env.load(env.put("datalake/sales/append/orders/day1.csv", day)).success
    before = env.rows("sales.orders")
    assert_refused(env, env.put("datalake/sales/append/orders/day1_resend.csv", day), "DUPLICATE",
                   "duplicate of datalake/sales/append/orders/day1.csv", "sales.orders", before)
    assert env.load("datalake/sales/append/orders/day1.csv").success, "a re-run of the same key is not a duplicate"

    assert env.load(env.put("external/inbound/bank_txn_20240501.csv", bank_file(3))).success
    bank, balances = env.rows("finance.bank_transactions"), env.rows("finance.daily_balances")
    assert_refused(env, env.put("external/inbound/bank_txn_20240501_resend.csv", bank_file(3)), "DUPLICATE",
                   "duplicate of external/inbound/bank_txn_20240501.csv", "finance.bank_transactions", bank)
    reordered = f"{BANK_HEADER}\n" + "".join(reversed(bank_file(3).splitlines(True)[1:4])) + "TRL|3\n"
    assert_refused(env, env.put("external/inbound/bank_txn_20240501_v2.csv", reordered), "DUPLICATE",
                   "3 of its 3 business keys were already loaded from other files (txn_id=1 from "
                   "external/inbound/bank_txn_20240501.csv)", "finance.bank_transactions", bank)
    assert env.rows("finance.daily_balances") == balances

    sales = SALES_HEADER + "1,2024-05-01,North,Widget,2,9.99\n"
    assert env.load(env.put("csv/input/sales/may.csv", sales)).success
    before = env.rows("sales_data.sales")
    assert_refused(env, env.put("csv/input/sales/may_copy.csv", sales), "DUPLICATE",
                   "duplicate of csv/input/sales/may.csv", "sales_data.sales", before)
    assert "csv/processed/sales/may_copy.parquet" not in env.keys()
    assert env.load("csv/input/sales/may_copy.csv", override="duplicates").success, "the override loads it"
    assert len(env.rows("sales_data.sales")) == 2 and "duplicate/csv/input/sales/may_copy.csv" not in env.keys()

    rates = "HDR|20240401\ncurrency|rate\nUSD|1.08\n"  # fx_rates opts out: duplicates: allow
    assert env.load(env.put("external/inbound/fx_rates_20240401.csv", rates)).success
    assert env.load(env.put("external/inbound/fx_rates_20240401_again.csv", rates)).success


def test_destructive_loads_are_held_by_their_guards_until_overridden(env):
    """Defect 4: a header-only truncate/replace file, or one dropping more than allowed, is HELD (held/),
    the table untouched; the run tag files/override=guards applies it."""
    env.load(env.put("datalake/sales/schema/regions/v1.json", json.dumps(
        {"columns": [{"name": "region", "type": "string", "nullable": False}], "allowed_operations": ["truncate"]})))
    assert env.load(env.put("datalake/sales/truncate/regions/r1.csv", "region\nNorth\nSouth\n")).success
    before = env.rows("sales.regions")
    key = env.put("datalake/sales/truncate/regions/r2.csv", "region\n")
    assert_refused(env, key, "HELD", "held: the file has no rows; replacing sales.regions (2 rows) with it was not "
                   "applied; to apply it, re-run with the run tag files/override=guards", "sales.regions", before)
    assert env.load(key, override="guards").success and env.rows("sales.regions") == []
    assert "held/" + key not in env.keys() and f"archive/{key}.previous-held.txt" in env.keys()

    assert env.load(env.put("external/inbound/headcount_202404.csv",
                            "branch,month,headcount\nN,2024-04-01,1\nS,2024-04-01,2\nE,2024-04-01,3\n")).success
    before = env.rows("hr.branch_headcount")
    assert_refused(env, env.put("external/inbound/headcount_202405.csv", "branch,month,headcount\n"), "HELD",
                   "held: the file has no rows", "hr.branch_headcount", before)
    assert_refused(env, env.put("external/inbound/headcount_202406.csv", "branch,month,headcount\nN,2024-06-01,1\n"),
                   "HELD", "would drop 67% of its rows (3 -> 1), more than the 50% allowed", "hr.branch_headcount",
                   before)
    assert env.audit("external/inbound/headcount_202406.csv")["rows_read"] == 1


def test_external_header_records_are_checked_and_stripped(env):
    """Defect 6: HDR|<business date> before the column header: its date must be the file name's; line
    numbers still count it."""
    key = env.put("external/inbound/fx_rates_20240401.csv", "HDR|20240401\ncurrency|rate\nUSD|1.08\nGBP|0.85\n")
    result = env.load(key)
    assert result.success
    metadata = result.asset_materializations_for_node("files__external_feed_loads")[0].metadata
    assert metadata["header_record"].value == {"business_date": "2024-04-01"}
    before = env.rows("finance.fx_rates")
    assert sorted(r[:2] for r in before) == [("GBP", 0.85), ("USD", 1.08)]
    assert_refused(env, env.put("external/inbound/fx_rates_20240402.csv", "currency|rate\nUSD|1.1\n"), "ABORTED",
                   "line 1: header record missing: the first line should be HDR|<business_date>, found 'currency|rate'",
                   "finance.fx_rates", before)
    assert_refused(env, env.put("external/inbound/fx_rates_20240403.csv", "HDR|20240402\ncurrency|rate\nUSD|1.1\n"),
                   "ABORTED", "business_date 20240402 does not match the file name fx_rates_20240403.csv",
                   "finance.fx_rates", before)
    assert_refused(env, env.put("external/inbound/fx_rates_20240404.csv", "HDR|2024-04-04\ncurrency|rate\n"),
                   "ABORTED", "business_date '2024-04-04' is not a date (%Y%m%d)", "finance.fx_rates", before)
    assert_refused(env, env.put("external/inbound/fx_rates_20240405.csv", "HDR|20240405\ncurrency|rate\nUSD|x\n"),
                   "FAILED", "line 3, column 2: rate: not a valid float: 'x'", "finance.fx_rates", before)


def test_smaller_items_refused_copies_header_only_schema_and_drift(env):
    """Defect 7: a fixed file clears its refused copy from error/; a header-only CSV types nothing, so the
    next file is not reported retyped; drift is in the audit row and the CLI's listing."""
    key = env.put("csv/input/sales/may.csv", SALES_HEADER + "1,,North,Widget,2,9.99\n")
    assert not env.load(key).success and f"error/{key}" in env.keys()
    env.put(key, SALES_HEADER + "1,2024-05-01,North,Widget,2,9.99\n")  # fixed and put back
    assert env.load(key).success
    assert f"error/{key}" not in env.keys() and f"error/{key}.reason.txt" not in env.keys()
    assert {f"archive/{key}", f"archive/{key}.previous-failure", f"archive/{key}.previous-failure.txt"} <= env.keys()

    header_only = env.put("csv/input/sales/empty.csv", SALES_HEADER)
    result = env.load(header_only)
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert set(check.metadata["discovered_schema"].value.values()) == {None}, "no values: no type, not text"
    after = env.put("csv/input/sales/june.csv", SALES_HEADER.strip() + ",channel\n2,2024-06-01,S,Gadget,1,1.5,web\n")
    [check] = env.load(after).get_asset_check_evaluations()
    assert check.metadata["drift"].value == {"added": ["channel"]}, "nothing reported retyped"
    assert json.loads(env.audit(after)["schema_drift"]) == {"added": ["channel"]}


def test_audit_endpoint_uvicorn_token_filters_and_no_ddl(env, monkeypatch):
    """Defect 7 (endpoint): uvicorn + Starlette; the same filters as `etl-assets audit`; a token whenever one
    is set, and required beyond loopback; a read on an empty warehouse creates nothing."""
    assert find_loads(env.warehouse) == [] and not env.warehouse.query(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = 'etl_audit'"), "a read ran DDL"
    env.load(env.put("datalake/sales/schema/orders/v1.json", json.dumps(ORDERS_SCHEMA)))
    env.load(env.put("datalake/sales/append/orders/a.csv", orders_csv("1,C1,5,2024-05-01T00:00:00Z")))
    env.load(env.put("datalake/sales/append/orders/b.csv", orders_csv("2,C1,x,2024-05-01T00:00:00Z")))
    monkeypatch.delenv("ETL_ASSETS_AUDIT_TOKEN", raising=False)
    with pytest.raises(AuditServerConfigError, match="without a token"):
        build_server(env.warehouse, "0.0.0.0", 0)
    server, sock = build_server(env.warehouse, "127.0.0.1", 0, token="s3cret")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"

    def get(path: str, token: str | None = "s3cret"):
        request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    try:
        for _ in range(100):
            if server.started:
                break
            threading.Event().wait(0.05)
        assert get("/loads", token=None)[0] == 401 and get("/loads", token="wrong")[0] == 401
        status, loads = get("/loads?table=sales.orders")
        assert status == 200 and [(x["action"], x["status"]) for x in loads] == [
            ("append", "FAILED"), ("append", "FINISHED"), ("schema", "FINISHED")]
        assert [x["source_key"] for x in get("/loads?status=failed")[1]] == ["datalake/sales/append/orders/b.csv"]
        assert len(get("/loads?limit=1")[1]) == 1
        assert get("/loads?table=orders&since=2999-01-01T00:00:00") == (200, [])
        assert get("/loads?status=BOGUS")[0] == 400 and get("/loads?limit=0")[0] == 400
        assert get("/loads?tabel=x")[0] == 400
        request = urllib.request.Request(f"{base}/loads", data=b"{}", method="POST",
                                         headers={"Authorization": "Bearer s3cret"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 405
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_warehouse_interface_the_feeds_use(warehouse):
    """What domains call instead of writing SQL: `ensure_table` creates a bookkeeping table and adds the
    columns a later version declares; `upsert_steps` rows commit with the load they follow (or roll back
    with it) and replace the rows of their key; `select` filters by values, lists and lower bounds;
    `count_rows` counts rows, or the set values of one column."""
    import pyarrow as pa

    from etl_assets.files.loading import bookkeeping_table, table_spec
    from etl_assets.warehouse.errors import StepFailed
    from etl_assets.warehouse.batch import StagedBatchWriter
    from etl_assets.warehouse.spec import ColumnType

    text, number = ColumnType.STRING, ColumnType.INTEGER
    registry = bookkeeping_table("etl_test", "registry", {"name": text, "n": number})
    assert not warehouse.has_table("etl_test", "registry")
    warehouse.ensure_table(registry)
    registry = bookkeeping_table("etl_test", "registry", {"name": text, "n": number, "note": text})
    warehouse.ensure_table(registry)
    assert warehouse.column_types("etl_test", "registry") == {"name": text, "n": number, "note": text}

    def load(n: int, *after: Step):
        writer = StagedBatchWriter(table_spec("etl_test", "data", {"x": number}), "P", mode="append")
        writer.write(pa.table({"x": [n, n], "_source_partition": ["P"] * 2, "_source_file": [f"f{n}.csv"] * 2,
                               "_source_line": [2, 3]}))
        steps = warehouse.upsert_steps(registry, {"name": "a", "n": n, "note": None}, key=("name",))
        return warehouse.load(writer.close(), after=[*steps, *after])

    load(1)
    load(2)
    with pytest.raises(StepFailed, match="a later step failed"):
        load(3, Step("INSERT INTO etl_test.missing VALUES (1)", label="a later step"))
    assert warehouse.select("etl_test", "registry", ["name", "n"]) == [("a", 2)]
    assert sorted(warehouse.select("etl_test", "data", ["x"], {"_source_file": ["f1.csv", "f3.csv"]})) == [(1,), (1,)]
    assert warehouse.select("etl_test", "data", ["x"], {"_source_line": 3}, at_least={"x": 2}) == [(2,)]
    assert warehouse.count_rows("etl_test", "data") == 4
    assert warehouse.count_rows("etl_test", "registry", non_null="note") == 0
