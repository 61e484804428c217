"""Sensor and partition scale: the backup sensor over 10,000 differential folders, and the UI's API.

- Landing zones (local folder, and S3 through moto's HTTP server) holding N differential folders
  with one object folder per catalog object, each holding one empty-but-present CSV. The sensor's
  `scan_backups` is timed for the first tick (empty cursor: everything is new) and for a tick after
  one new folder arrives (with the cursor the first tick returned), counting the landing zone's
  list calls. What a tick lists is decided by the cursor, so list calls should grow with what is
  new (plus the few open folders), not with the history.
- Dagster's UI API: dagster-webserver in a subprocess, on a temporary DAGSTER_HOME whose instance
  holds N dynamic partitions; GraphQL queries for the asset graph and for one asset's partition
  keys and statuses are timed.
"""

from __future__ import annotations

import datetime
import json
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from etl_assets_tests import live

FIRST_FOLDER_DAY = datetime.date(1990, 1, 1)
S3_SETUP_BUDGET_SECONDS = 240.0


def folder_names(count: int) -> list[str]:
    return [f"{FIRST_FOLDER_DAY + datetime.timedelta(days=i):%Y%m%d}_Differential" for i in range(count)]


def _catalog():
    from etl_assets.salesforce.catalog import load_catalog

    return load_catalog()


def _keys(folder: str, objects: list[str]) -> list[str]:
    return [f"backup/{folder}/{name}/{name.lower()}_part1.csv" for name in objects]


def touch_keys(root: Path, keys) -> None:
    for key in keys:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def build_local_tree(root: Path, folders: int, objects: list[str]) -> float:
    """N folders x one empty CSV per object; reused when already complete."""
    marker = root / f".complete_{folders}"
    if marker.exists():
        return 0.0
    started = time.perf_counter()
    touch_keys(root, (k for f in folder_names(folders) for k in _keys(f, objects)))
    marker.touch()
    return time.perf_counter() - started


def local_folder_adder(root: Path, objects: list[str]):
    """add_folder(folder, remove=False): one empty CSV per object in a new folder of a local zone, or none."""
    def add_folder(folder: str, remove: bool = False) -> None:
        if remove:
            shutil.rmtree(root / "backup" / folder, ignore_errors=True)
        else:
            touch_keys(root, _keys(folder, objects))
    return add_folder


def _tick(zone_factory, cursor, catalog, loaded) -> tuple[dict, object]:
    from etl_assets.salesforce.sensors import scan_backups

    zone = zone_factory()
    started = time.perf_counter()
    scan = scan_backups(zone, cursor, catalog, loaded=loaded)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "list_calls": zone.list_calls, "run_requests": len(scan.run_requests),
            "new_folders": len(scan.new_folders), "unknown_objects": len(scan.unknown_objects)}, scan.cursor


def three_ticks(zone_factory, add_folder, folders: int, catalog: dict, instance) -> tuple[dict, dict, dict]:
    """The first tick (empty cursor: everything is new), a tick with nothing new (what every quiet
    tick costs), and one after a new folder (the same cursor), each with a fresh zone's list calls."""
    from etl_assets.salesforce.sensors import BackupCursor, loaded_from_instance

    loaded = loaded_from_instance(instance)
    first, cursor = _tick(zone_factory, BackupCursor(), catalog, loaded)
    idle, _ = _tick(zone_factory, cursor, catalog, loaded)
    new_folder = folder_names(folders + 1)[-1]
    add_folder(new_folder)
    try:
        one_new, _ = _tick(zone_factory, cursor, catalog, loaded)
    finally:
        add_folder(new_folder, remove=True)
    return first, idle, one_new


def _measure(kind: str, zone_factory, add_folder, folders: int, objects: list[str], setup: float,
             instance) -> dict:
    from etl_assets.salesforce.sensors import OPEN_FOLDERS

    first, idle, one_new = three_ticks(zone_factory, add_folder, folders, _catalog(), instance)
    # Local: one listing per directory (root, folders, object folders) of the open and new folders;
    # S3: one page per 1,000 keys of them. Anything near the history's size would fail.
    bound = (2 + (OPEN_FOLDERS + 1) * (1 + len(objects))) if kind == "local" else 2
    return {"kind": kind, "folders": folders, "files": folders * len(objects), "setup_seconds": setup,
            "first_tick": first, "idle_tick": idle, "one_new_folder": one_new, "list_call_bound": bound}


def local_benchmark(root: Path, folders: int, instance) -> dict:
    from etl_assets.landing.zone import LocalLandingZone

    objects = list(_catalog())
    setup = build_local_tree(root, folders, objects)

    add_folder = local_folder_adder(root, objects)

    return _measure("local", lambda: LocalLandingZone(root=str(root)), add_folder, folders, objects, setup, instance)


def _seed_moto_backend(bucket: str, keys: list[str]) -> bool:
    """Put keys straight into the in-process moto server's store: what HTTP PUTs would leave there,
    without 100,000 requests of setup. Returns False if this moto version's internals differ."""
    try:
        from moto.s3.models import s3_backends

        partition, account = s3_backends.bucket_accounts[bucket]
        backend = s3_backends[account][partition]
        for key in keys:
            backend.put_object(bucket, key, b"")
        return True
    except Exception:
        return False


class MotoBucket:
    """A bucket of moto's S3 server (over HTTP), and the landing zone that lists it."""

    CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "bench", "aws_secret_access_key": "bench"}

    def __init__(self, endpoint: str, bucket: str):
        import boto3

        self.endpoint, self.bucket = endpoint, bucket
        self.client = boto3.client("s3", endpoint_url=endpoint, **self.CREDENTIALS)
        self.client.create_bucket(Bucket=bucket)

    def put(self, key: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=b"")

    def seed(self, keys: list[str]) -> bool:
        """Straight into the server's store (see _seed_moto_backend); False if not possible."""
        return _seed_moto_backend(self.bucket, keys)

    def folder_adder(self, objects: list[str]):
        """add_folder(folder, remove=False): one empty CSV per object in a new folder, or none."""
        def add_folder(folder: str, remove: bool = False) -> None:
            for key in _keys(folder, objects):
                if remove:
                    self.client.delete_object(Bucket=self.bucket, Key=key)
                else:
                    self.put(key)
        return add_folder

    def zone(self):
        from dagster_aws.s3 import S3Resource

        from etl_assets.landing.zone import S3LandingZone

        return S3LandingZone(s3=S3Resource(endpoint_url=self.endpoint, **self.CREDENTIALS), bucket=self.bucket)


@contextmanager
def moto_bucket(bucket: str) -> Iterator[MotoBucket]:
    with live.moto_server() as endpoint:
        yield MotoBucket(endpoint, bucket)


def s3_benchmark(folders: int, instance, notes: list[str], budget: float = S3_SETUP_BUDGET_SECONDS) -> dict:
    """The tree is put into the moto server's store directly (listing still goes over HTTP); if
    that is not possible, keys are uploaded with concurrent PUTs and, if the rate says the whole
    tree would take longer than `budget`, the folder count is reduced (and said so in the notes)."""
    objects = list(_catalog())
    with moto_bucket("bench-landing") as s3:
        started = time.perf_counter()
        names = folder_names(folders)
        target = folders
        if s3.seed([k for f in names for k in _keys(f, objects)]):
            notes.append("S3: the keys were put into the moto server's store in-process (setup); every listing "
                         "the sensor makes goes over HTTP to the server")
            names = []
        with ThreadPoolExecutor(max_workers=16) as pool:
            # A probe of 100 folders sets the rate; then the rest, or as many as the budget allows.
            probe = min(100, len(names))
            list(pool.map(s3.put, [k for f in names[:probe] for k in _keys(f, objects)]))
            rate = probe / (time.perf_counter() - started)
            if names and folders / rate > budget:
                target = max(probe, int(rate * budget) // 1000 * 1000 or probe)
                notes.append(f"S3 (moto) uploads ran at {rate * len(objects):,.0f} keys/s: {folders:,} folders would "
                             f"take {folders / rate:,.0f} s, so the S3 landing zone holds {target:,} folders "
                             f"({target * len(objects):,} keys)")
            list(pool.map(s3.put, [k for f in names[probe:target] for k in _keys(f, objects)]))
        setup = time.perf_counter() - started
        # moto holds the listing in-process Python; its per-page cost is moto's, not S3's.
        return _measure("s3 (moto server)", s3.zone, s3.folder_adder(objects), target, objects, setup, instance)


# ---------------------------------------------------------------- GraphQL


ASSET_GRAPH = """query AssetGraph { assetNodes { id assetKey { path } groupName isPartitioned
  dependencyKeys { path } dependedByKeys { path } computeKind kinds description } }"""
PARTITION_KEYS = """query PartitionKeys($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) {
  ... on AssetNode { partitionKeysByDimension { name partitionKeys } } } }"""
PARTITION_STATUS = """query PartitionStatus($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) {
  ... on AssetNode { partitionStats { numMaterialized numPartitions numFailed }
  assetPartitionStatuses { ... on DefaultPartitionStatuses { materializedPartitions failedPartitions
  materializingPartitions unmaterializedPartitions } } } } }"""


@contextmanager
def partitioned_webserver(partitions: list[str], timeout: float, env: dict | None = None) -> Iterator[dict]:
    """dagster-webserver on a temporary instance holding `partitions` as the backup folders' dynamic
    partitions, once it has loaded the code location: {"server", "partitions" (stored),
    "add_partitions_seconds", "startup_seconds"}. `env`: more variables for the webserver."""
    import dagster as dg

    from etl_assets.salesforce.partitions import differential_folders

    home = Path(tempfile.mkdtemp(prefix="etl_assets_bench_home_"))
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    started = time.perf_counter()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(differential_folders.name, partitions)
        stored = len(instance.get_dynamic_partitions(differential_folders.name))
    added = time.perf_counter() - started
    server = live.Server("webserver", live.environment(home=home, **(env or {})), home)
    try:
        startup = server.wait_loaded(timeout)
        yield {"server": server, "partitions": stored, "add_partitions_seconds": added, "startup_seconds": startup}
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


def time_queries(url: str, plan, repeats: int) -> list[dict]:
    """Each (name, query, variables, summary) of `plan` sent `repeats` times: the seconds of each,
    the best, the summary of the answer and its size."""
    queries = []
    for name, query, variables, summary in plan:
        seconds, result, size = [], "", 0
        for _ in range(repeats):
            started = time.perf_counter()
            data = live.graphql(url, query, variables, timeout=300)
            seconds.append(time.perf_counter() - started)
            result, size = summary(data), len(json.dumps(data))
        queries.append({"name": name, "seconds": seconds, "best_s": min(seconds), "result": result,
                        "response_bytes": size})
    return queries


def graphql_benchmark(partitions: int, repeats: int = 3, startup_timeout: float = 240.0) -> dict:
    """dagster-webserver on a temporary instance holding `partitions` dynamic partitions."""
    with partitioned_webserver(folder_names(partitions), startup_timeout) as web:
        path = {"path": ["salesforce", "task"]}
        queries = time_queries(web["server"].url, (
            ("asset graph (assetNodes)", ASSET_GRAPH, None, lambda d: f"{len(d['assetNodes'])} asset nodes"),
            ("salesforce/task partition keys", PARTITION_KEYS, path,
             lambda d: f"{len(d['assetNodeOrError']['partitionKeysByDimension'][0]['partitionKeys']):,} keys"),
            ("salesforce/task partition statuses", PARTITION_STATUS, path,
             lambda d: f"{d['assetNodeOrError']['partitionStats']['numPartitions']:,} partitions"),
        ), repeats)
        return {"partitions": web["partitions"], "add_partitions_seconds": web["add_partitions_seconds"],
                "startup_seconds": web["startup_seconds"], "queries": queries}


def run_sensor_benchmark(folders: int, data_root: Path, s3: bool = True, graphql: bool = True, log=print) -> dict:
    import dagster as dg

    notes: list[str] = []
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    zones = []
    with dg.DagsterInstance.ephemeral() as instance:
        log(f"sensor: local landing zone, {folders:,} folders")
        zones.append(local_benchmark(data_root / f"sensor_local_{folders}", folders, instance))
        if s3:
            log(f"sensor: S3 landing zone (moto server), {folders:,} folders")
            zones.append(s3_benchmark(folders, instance, notes))
    notes.append("each object folder holds one empty CSV; a tick's time is scan_backups: listing, grouping, "
                 "fingerprints and the instance look-up of what is already materialized (an empty instance here)")
    notes.append("idle tick: the cursor from the first tick and nothing new; one new folder: the same cursor after "
                 "a folder with one file per object arrives (the sensor's steady state)")
    if s3:
        notes.append("moto answers each list request by scanning its whole in-memory key store, so a request "
                     "costs in proportion to the bucket (compare the idle tick's single call); the list-call "
                     "counts, not moto's seconds, are what carries over to S3")
    result = {"kind": "sensor", "objects_per_folder": len(_catalog()), "started_at": started,
              "landing_zones": zones, "notes": notes}
    if graphql:
        log(f"graphql: dagster-webserver with {folders:,} dynamic partitions")
        result["graphql"] = graphql_benchmark(folders)
    return result
