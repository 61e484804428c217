"""The landing zone is a boundary (issue 25): a key from a partition, the CLI or a listing never reaches a
file outside the landing root (no '..', no absolute path, no control character, no symbolic link out of it;
on S3 nothing outside the prefix), and the names derived from a key (reason files, archived copies) fit the
file system. Each defect's test failed before the fix; where a warehouse is involved, on DuckDB and
PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from etl_assets.files.assets import datalake_loads, external_feed_loads
from etl_assets.landing.zone import LocalLandingZone, S3LandingZone, UnsafeKey, check_key, shortened
from etl_assets.notifications import Notifier
from etl_assets.warehouse.audit import find_loads
from etl_assets_tests.conftest import S3_CREDENTIALS, sns_to_sqs

UNSAFE = ["../x.csv", "datalake/../../x.json", "external/inbound/../../../../etc/passwd", "/etc/passwd",
          "a//b.csv", "a/./b.csv", "a/\x00b.csv", "external/inbound/new\nline.csv", "external/inbound/tab\t.csv",
          "a/.."]
SAFE = ["", "external/inbound/", "external/inbound/bank_txn_1.csv", "backup/20240501_Differential/...", "a/..b/c.csv",
        "csv/input/sales/caf\u00e9 menu.csv"]


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file under `root` with its bytes (a symbolic link: where it points)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            found[path.relative_to(root).as_posix()] = "-> " + os.readlink(path)
        elif path.is_file():
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


@pytest.mark.parametrize("key", UNSAFE)
def test_unsafe_keys_are_refused_by_the_rule(key):
    with pytest.raises(UnsafeKey, match="landing key"):
        check_key(key)


@pytest.mark.parametrize("key", SAFE)
def test_keys_inside_the_root_pass(key):
    assert check_key(key) == key


def test_every_local_zone_method_refuses_a_key_out_of_the_root(tmp_path):
    root, outside = tmp_path / "landing", tmp_path / "outside"
    (root / "external/inbound").mkdir(parents=True)
    outside.mkdir()
    (outside / "victim.json").write_text("secret")
    source = tmp_path / "source.csv"
    source.write_text("x\n")
    zone = LocalLandingZone(root=str(root))
    for key in ("external/inbound/../../../outside/victim.json", str(outside / "victim.json"), "a/\x00.csv"):
        for call in (lambda: zone.exists(key), lambda: zone.open_seekable(key), lambda: zone.check(key),
                     lambda: zone.put_text(key, "overwritten"), lambda: zone.put_file(key, source),
                     lambda: zone.move(key, "archive/x"), lambda: zone.move("external/inbound/x", key),
                     lambda: zone.local_copy(key).__enter__(), lambda: zone.location(key),
                     lambda: list(zone.list_files(key))):
            with pytest.raises(UnsafeKey):
                call()
    assert (outside / "victim.json").read_text() == "secret" and tree(root) == {}


def test_symbolic_links_are_followed_only_inside_the_root(tmp_path):
    root, outside = tmp_path / "landing", tmp_path / "outside"
    (root / "external/inbound").mkdir(parents=True)
    (root / "shared").mkdir()
    outside.mkdir()
    (outside / "secret.csv").write_text("first secret line\nlast secret line\n")
    (root / "shared/rates.csv").write_text("inside\n")
    (root / "external/inbound/bank_txn_out.csv").symlink_to(outside / "secret.csv")
    (root / "external/inbound/bank_txn_in.csv").symlink_to(root / "shared/rates.csv")
    (root / "external/escape").symlink_to(outside, target_is_directory=True)
    zone = LocalLandingZone(root=str(root))

    with zone.local_copy("external/inbound/bank_txn_in.csv") as path:
        assert path.read_text() == "inside\n"
    for key in ("external/inbound/bank_txn_out.csv", "external/escape/secret.csv"):
        with pytest.raises(UnsafeKey, match="resolves outside the landing root"):
            zone.open_seekable(key)
        with pytest.raises(UnsafeKey):
            zone.put_text(key, "written through the link")
    # Listed, so a run refuses them in sight; never followed: nothing of the outside folder is listed.
    assert [f.key for f in zone.list_files("external/")] == [
        "external/escape", "external/inbound/bank_txn_in.csv", "external/inbound/bank_txn_out.csv"]
    with pytest.raises(UnsafeKey):
        zone.put_text("external/escape/new.reason.txt", "written through the folder link")
    assert tree(outside) == {"secret.csv": b"first secret line\nlast secret line\n"}


def test_symbolic_link_loops_are_listed_once_and_never_walked(tmp_path):
    """A link back to a folder above it, a link to itself and two links to each other: the listing ends,
    lists each link once as a key (so a load refuses it in sight) and still lists every real file."""
    root = tmp_path / "landing"
    (root / "backup/20240501_Differential/Account").mkdir(parents=True)
    (root / "backup/20240501_Differential/Account/part1.csv").write_text("Id\n001\n")
    (root / "backup/20240501_Differential/Account/up").symlink_to("../..", target_is_directory=True)
    (root / "backup/self").symlink_to("self")
    (root / "backup/ping").symlink_to("pong")
    (root / "backup/pong").symlink_to("ping")
    zone = LocalLandingZone(root=str(root))
    assert [f.key for f in zone.list_files("backup/")] == [
        "backup/20240501_Differential/Account/part1.csv", "backup/20240501_Differential/Account/up",
        "backup/ping", "backup/pong", "backup/self"]
    assert [f.key for f in zone.list_files("backup/", start_after="backup/ping")] == ["backup/pong", "backup/self"]


def test_a_looping_link_is_refused_with_its_reason(tmp_path, warehouse):
    root = tmp_path / "landing"
    (root / "external/inbound").mkdir(parents=True)
    key = "external/inbound/bank_txn_20240501.csv"
    (root / key).symlink_to("bank_txn_20240501.csv")
    result = materialize(external_feed_loads, key, root, warehouse)
    assert not result.success
    [audit] = [a for a in find_loads(warehouse) if a["source_key"] == key]
    assert audit["status"] == "ABORTED" and "symbolic links" in audit["error"], audit
    assert (root / key).is_symlink()  # left where it landed


def test_an_s3_zone_keeps_every_key_under_its_prefix(s3_endpoint, s3_bucket, tmp_path):
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="other/victim.json", Body=b"secret")
    zone = S3LandingZone(s3=S3Resource(endpoint_url=s3_endpoint, max_attempts=1, **S3_CREDENTIALS), bucket=bucket,
                         prefix="landing")
    source = tmp_path / "x.csv"
    source.write_text("x\n")
    for key in ("../other/victim.json", "external/inbound/../../../other/victim.json", "/other/victim.json"):
        for call in (lambda: zone.exists(key), lambda: zone.open_seekable(key), lambda: zone.put_file(key, source),
                     lambda: zone.put_text(key, "x"), lambda: zone.move(key, "archive/x"),
                     lambda: zone.local_copy(key).__enter__(), lambda: zone.location(key)):
            with pytest.raises(UnsafeKey):
                call()
    assert {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]} == {"other/victim.json"}


def test_derived_names_fit_the_limits_and_stay_apart():
    key = "error/external/inbound/bank_txn_" + "7" * 236 + ".csv"
    name = shortened(key, ".reason.txt", 255, None)
    assert len(name.rpartition("/")[2].encode()) <= 255 and name.endswith(".csv.reason.txt")
    assert name.startswith("error/external/inbound/bank_txn_777")
    assert name == shortened(key, ".reason.txt", 255, None) != shortened(key[:-5] + "8.csv", ".reason.txt", 255, None)
    assert shortened("error/a.csv", ".reason.txt", 255, None) == "error/a.csv.reason.txt"  # short names unchanged
    wide = "external/inbound/" + "\u00e9" * 600 + ".csv"  # 2 bytes a letter: cut on a letter boundary
    s3 = shortened(wide, ".previous-failure.txt", None, 1024 - len("landing/"))
    assert len(("landing/" + s3).encode()) <= 1024 and s3.endswith(".csv.previous-failure.txt")


# --- Through a run: a partition key is a landing key like any other. -----------------------------------


def materialize(asset, key: str, root: Path, warehouse, notifier=None):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(asset.partitions_def.name, [key])
    return dg.materialize([asset], partition_key=key, instance=instance, raise_on_error=False, resources={
        "landing_zone": LocalLandingZone(root=str(root)), "warehouse": warehouse, "notifier": notifier or Notifier()})


@pytest.mark.parametrize("key", ["datalake/../../outside/victim.json",
                                 "external/inbound/../../../outside/victim.json", "ABSOLUTE"])
def test_a_partition_key_out_of_the_root_is_refused_before_anything_moves(tmp_path, warehouse, key):
    root, outside = tmp_path / "landing", tmp_path / "outside"
    (root / "datalake").mkdir(parents=True)
    outside.mkdir()
    (outside / "victim.json").write_text('{"columns": [{"name": "id", "type": "integer"}]}')
    key = str(outside / "victim.json") if key == "ABSOLUTE" else key
    before = tree(root), tree(outside)
    asset = external_feed_loads if key.startswith("external/") else datalake_loads
    result = materialize(asset, key, root, warehouse)
    assert not result.success
    assert (tree(root), tree(outside)) == before  # nothing moved, nothing written: no reason file beside the target
    [audit] = [a for a in find_loads(warehouse) if a["source_key"] == key]
    assert audit["status"] == "ABORTED" and "landing key" in audit["error"], audit
    assert "is not allowed" in audit["error"]


def test_a_symbolic_link_out_of_the_root_is_refused_without_reading_it(tmp_path, warehouse):
    root, outside = tmp_path / "landing", tmp_path / "outside"
    (root / "external/inbound").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.csv").write_text("SECRET first line\nsome middle\nSECRET last line\n")
    key = "external/inbound/bank_txn_20240501.csv"
    (root / key).symlink_to(outside / "secret.csv")
    before = tree(root), tree(outside)
    result = materialize(external_feed_loads, key, root, warehouse)
    assert not result.success
    assert (tree(root), tree(outside)) == before  # the link stays where it landed; nothing written
    [audit] = [a for a in find_loads(warehouse) if a["source_key"] == key]
    assert audit["status"] == "ABORTED" and "resolves outside the landing root" in audit["error"], audit
    assert "SECRET" not in json.dumps(find_loads(warehouse), default=str)


def bank_file(*rows: str) -> str:
    return "txn_id|account|amount|currency|booked_at\n" + "".join(r + "\n" for r in rows) + f"TRL|{len(rows)}\n"


def test_a_249_character_file_name_is_refused_with_its_reason_then_loads(tmp_path, warehouse, s3_endpoint):
    """The reason file's name would be 260 bytes: it is shortened (a hash keeps it apart), says the full key,
    and the audit row and the notification carry the full key; fixed, the file loads and its refused copy
    and reason move to archive/ under names that fit too."""
    root = tmp_path / "landing"
    name = "bank_txn_" + "4" * 236 + ".csv"
    assert len(name) == 249
    key = f"external/inbound/{name}"
    (root / "external/inbound").mkdir(parents=True)
    (root / key).write_text(bank_file("1|ACC1|lots|EUR|2024-05-01T10:00:00Z"))
    topic, sqs, queue = sns_to_sqs(s3_endpoint, "long")
    notifier = Notifier(topic_arn=topic, endpoint_url=s3_endpoint, **S3_CREDENTIALS)

    assert not materialize(external_feed_loads, key, root, warehouse, notifier).success
    [audit] = [a for a in find_loads(warehouse) if a["source_key"] == key]
    assert audit["status"] == "FAILED" and "amount: not a valid float: 'lots'" in audit["error"]
    [reason] = [p for p in (root / "error/external/inbound").iterdir() if p.name.endswith(".reason.txt")]
    assert len(reason.name.encode()) <= 255 and reason.name.startswith("bank_txn_444")
    assert reason.read_text() == f"FAILED: {audit['error']}\nkey: {key}\n"
    assert (root / "error" / key).is_file() and not (root / key).exists()
    [message] = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
                 .get("Messages", [])]
    assert (message["file"], message["status"]) == (key, "FAILED")

    (root / key).write_text(bank_file("1|ACC1|10.5|EUR|2024-05-01T10:00:00Z"))
    assert materialize(external_feed_loads, key, root, warehouse, notifier).success
    assert find_loads(warehouse)[0]["status"] == "FINISHED" and find_loads(warehouse)[0]["source_key"] == key
    assert warehouse.count_rows("finance", "bank_transactions") == 1
    archived = sorted(p.name for p in (root / "archive/external/inbound").iterdir())
    assert name in archived and len(archived) == 3  # the file, its refused copy and that copy's reason
    assert all(len(n.encode()) <= 255 for n in archived)
    assert not any((root / "error/external/inbound").iterdir())


def etl_assets(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "etl_assets.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)


def test_the_cli_refuses_keys_out_of_the_root_and_says_where_refused_files_are(tmp_path):
    root, outside = tmp_path / "landing", tmp_path / "outside"
    (root / "datalake").mkdir(parents=True)
    outside.mkdir()
    (outside / "victim.json").write_text("{}")
    env = {"ETL_ASSETS_LANDING_ROOT": str(root), "ETL_ASSETS_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb")}
    before = tree(outside)
    done = etl_assets("files", "--ephemeral", "--key", "datalake/../../outside/victim.json",
                      "--key", "external/inbound/not_landed.csv", "--key", "elsewhere/x.csv", env=env)
    assert done.returncode == 1, done.stderr
    assert ("datalake/../../outside/victim.json: REFUSED (nothing moved)\n"
            "  landing key 'datalake/../../outside/victim.json': '..' is not allowed") in done.stdout, done.stdout
    assert "elsewhere/x.csv: REFUSED (nothing moved)\n  not a landing key under datalake/" in done.stdout
    assert "external/inbound/not_landed.csv: REFUSED (nothing moved)\n" in done.stdout  # not "see error/"
    assert tree(outside) == before and not (root / "error").exists()


def test_cli_keys_may_name_the_folder_a_file_is_in(tmp_path, capsys):
    from etl_assets.cli.files import _named_file_keys

    zone = LocalLandingZone(root=str(tmp_path))
    named, refused = _named_file_keys(zone, ["held/external/inbound/a.csv", "datalake/s/append/t/b.csv",
                                             "error/../x.csv", "archive/elsewhere/c.csv"],
                                      ["datalake/", "external/inbound/", "csv/input/"])
    assert named == {"datalake/": ["datalake/s/append/t/b.csv"], "external/inbound/": ["external/inbound/a.csv"],
                     "csv/input/": []}
    assert refused == ["error/../x.csv", "archive/elsewhere/c.csv"]
    assert "error/../x.csv: REFUSED (nothing moved)\n  landing key '../x.csv': '..' is not allowed" in capsys.readouterr().out
