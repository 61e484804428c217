"""File-driven loads against S3 over HTTP (moto, SNS included) and the real PostgreSQL server.

Each bad input has one exact outcome: its status, where the file ends up, what the
audit row says, the notification, and the target table unchanged.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
import uuid

import boto3
import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from etl_assets.files.assets import csv_to_parquet_loads, datalake_loads, external_feed_loads
from etl_assets.files.sample import ORDERS_SCHEMA
from etl_assets.files.sensors import landed_files_sensors
from etl_assets.resources.audit import find_loads
from etl_assets.resources.audit_api import make_server
from etl_assets.resources.landing_zone import S3LandingZone
from etl_assets.resources.notifications import Notifier
from etl_assets.resources.warehouse.postgres import PostgresWarehouse
from etl_assets_tests.conftest import S3_CREDENTIALS

ASSET_FOR = {"datalake/": datalake_loads, "external/": external_feed_loads, "csv/": csv_to_parquet_loads}
BANK_HEADER = "txn_id|account|amount|currency|booked_at"


@pytest.fixture
def env(s3_endpoint, s3_bucket, postgres_database, monkeypatch):
    """A landing bucket, an SNS topic delivering to an SQS queue we read, and a PostgreSQL warehouse."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # the notifier uses boto3's default credential chain
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client, bucket = s3_bucket
    sns = boto3.client("sns", endpoint_url=s3_endpoint, **S3_CREDENTIALS)
    sqs = boto3.client("sqs", endpoint_url=s3_endpoint, **S3_CREDENTIALS)
    topic = sns.create_topic(Name=f"loads-{uuid.uuid4().hex[:8]}")["TopicArn"]
    queue = sqs.create_queue(QueueName=f"loads-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    zone = S3LandingZone(s3=S3Resource(endpoint_url=s3_endpoint, **S3_CREDENTIALS), bucket=bucket)
    warehouse = PostgresWarehouse(host=postgres_database["host"], port=postgres_database["port"],
                                  user=postgres_database["user"], database=postgres_database["database"])
    notifier = Notifier(topic_arn=topic, endpoint_url=s3_endpoint, region_name="us-east-1")

    class Env:
        instance = dg.DagsterInstance.ephemeral()

        def put(self, key: str, text: str | bytes) -> str:
            client.put_object(Bucket=bucket, Key=key, Body=text.encode() if isinstance(text, str) else text)
            return key

        def keys(self) -> set[str]:
            return {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}

        def text(self, key: str) -> str:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()

        def load(self, key: str):
            asset = next(a for prefix, a in ASSET_FOR.items() if key.startswith(prefix))
            self.instance.add_dynamic_partitions(asset.partitions_def.name, [key])
            return dg.materialize([asset], partition_key=key, instance=self.instance, raise_on_error=False,
                                  resources={"landing_zone": zone, "warehouse": warehouse, "notifier": notifier})

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


def assert_refused(env, key: str, status: str, reason: str, table: str | None, before=None):
    result = env.load(key)
    assert not result.success
    assert key not in env.keys() and f"error/{key}" in env.keys()
    assert env.text(f"error/{key}.reason.txt").startswith(f"{status}") and reason in env.text(f"error/{key}.reason.txt")
    [audit] = [a for a in find_loads(env.warehouse) if a["source_key"] == key]
    assert (audit["status"], audit["rows_loaded"]) == (status, 0) and reason in audit["error"]
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
                   "ABORTED", "header mismatch", "sales.orders", before)
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


def bank_file(rows: int, declared: int | None = None, header: str = BANK_HEADER) -> str:
    body = "".join(f"{i}|ACC{i % 7:03d}|{i}.25|EUR|2024-05-01T{i % 24:02d}:00:00Z\n" for i in range(1, rows + 1))
    return f"{header}\n{body}TRL|{rows if declared is None else declared}\n"


def test_external_feeds_trailer_header_split_and_post_load_sql(env):
    small = env.put("external/inbound/bank_txn_1.csv", bank_file(3))
    assert env.load(small).success
    before = env.rows("finance.bank_transactions")
    assert_refused(env, env.put("external/inbound/bank_txn_2.csv", bank_file(3, declared=4)), "ABORTED",
                   "trailer count mismatch: the trailer declares 4 records, the file holds 3",
                   "finance.bank_transactions", before)
    assert_refused(env, env.put("external/inbound/bank_txn_3.csv", bank_file(2, header="txn|account|amount|x|y")),
                   "ABORTED", "header mismatch", "finance.bank_transactions", before)
    assert_refused(env, env.put("external/inbound/bank_txn_4.csv", "txn_id|account\n1|A\n"), "ABORTED",
                   "trailer missing", "finance.bank_transactions", before)
    assert_refused(env, env.put("external/inbound/unknown_feed.csv", "a\n"), "ABORTED", "no feed in feeds.yaml",
                   None)

    big = env.put("external/inbound/bank_txn_5.csv", bank_file(6000))  # ~290 KB > the 200 KB threshold
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
                   "FAILED", "line 2, column 2: required column order_date is empty", "sales_data.sales", before)


def test_audit_cli_query_and_read_only_http_endpoint(env):
    env.load(env.put("datalake/sales/schema/orders/v1.json", json.dumps(ORDERS_SCHEMA)))
    env.load(env.put("datalake/sales/append/orders/a.csv", orders_csv("1,C1,5,2024-05-01T00:00:00Z")))
    server = make_server(env.warehouse, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with urllib.request.urlopen(f"{base}/loads?table=sales.orders") as response:
            loads = json.loads(response.read())
        assert [(l["action"], l["status"], l["rows_loaded"]) for l in loads] == [("append", "FINISHED", 1),
                                                                                 ("schema", "FINISHED", 0)]
        with urllib.request.urlopen(f"{base}/loads?table=orders&since=2999-01-01T00:00:00") as response:
            assert json.loads(response.read()) == []
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(f"{base}/loads", data=b"{}", method="POST"))
        assert refused.value.code == 405
    finally:
        server.shutdown()


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
