"""What 100,000 landed files of one feed cost, before and after the partitions' lifecycle.

    python -m benchmarks --only partitions                      # 100,000 files, 2,016 kept
    python -m benchmarks --only partitions --partition-files 20000 --skip-graphql

One feed (external/inbound/, `files/external_feed_loads`) on a local instance of
deploy/dagster.local.yaml (the embedded default's storage) and a local landing zone:

- The history: N landed files, loaded (an empty file each under archive/), N dynamic partitions and
  one materialization each (runless materializations reported through the instance, with the metadata
  a real load writes; built once and kept under --data, ~11 min for 100,000 on 2 cores).
- Before (every partition kept, as before the lifecycle): the sensor tick as it was (list the landing
  prefix, request the waiting file, the daemon adding its partition); the first ticks of the sensor
  with the lifecycle on such an instance (each deletes at most DELETIONS_PER_TICK, oldest first).
- After (bounded): the partitions of the last `window` files (2,016: seven days of a file every five
  minutes, the default retention), every materialization still in the event log; the sensor tick
  with the lifecycle: a new file (one more file aged out), nothing new, and a tick sweeping for given-up
  files (it reads every partition's status, which Dagster rebuilds from the event log after a change).
- In both states: the code location load (a fresh interpreter imports `etl_assets.definitions`,
  resolves the repository and serializes its snapshot, as a code server does, with DAGSTER_HOME on the
  instance), the instance calls a partition page stands on (`get_dynamic_partitions`,
  `get_status_by_partition`), and the UI's own partitions-tab query (`PartitionHealthQuery`, read from
  the webserver's bundle) against dagster-webserver; plus `AssetPartitionDetailQuery` for a deleted
  partition: what the UI still shows of a file whose partition is gone.

Results: benchmarks/results/partitions.json and partitions.md.
"""

from __future__ import annotations

import datetime
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from etl_assets_tests import live

DEFAULT_FILES = 100_000
DEFAULT_WINDOW = 7 * 24 * 12  # seven days of one file every five minutes
BATCH = 10_000
REPO = live.REPO
LOCAL_YAML = REPO / "deploy" / "dagster.local.yaml"


def _asset():
    from etl_assets.files.assets import external_feed_loads

    return external_feed_loads


def file_keys(count: int) -> list[str]:
    return [f"external/inbound/bank_txn_{i:06d}.csv" for i in range(count)]


def _metadata(key: str, landing: Path, index: int) -> dict:
    """What a real load of a small bank file writes (etl_assets/files/assets.py), preview included."""
    import dagster as dg

    columns = [("txn_id", "integer"), ("account", "string"), ("amount", "float"), ("currency", "string"),
               ("booked_at", "datetime"), ("_source_partition", "lineage"), ("_source_file", "lineage"),
               ("_source_line", "lineage")]
    preview = "\n".join(["| txn_id | account | amount | currency | booked_at |", "|---|---|---|---|---|",
                         *(f"| {i} | ACC{i % 7:03d} | {i}.25 | EUR | 2024-05-01 00:00:00+00:00 |"
                           for i in range(index * 5, index * 5 + 5))])
    return {"dagster/table_name": "finance.bank_transactions", "action": "append", "rows_read": 5,
            "rows_loaded": 5, "archived_as": str(landing / "archive" / key),
            "dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn(n, t) for n, t in columns]),
            "preview": dg.MetadataValue.md(preview), "dagster/row_count": 5 * (index + 1)}


def build_history(root: Path, files: int, log=print) -> dict:
    """root/home (an instance) and root/landing (the archived files): N partitions, N materializations.
    Kept and reused when complete (root/setup.json)."""
    import dagster as dg

    setup = root / "setup.json"
    if setup.exists():
        shutil.copy(LOCAL_YAML, root / "home" / "dagster.yaml")  # the instance as deployed today, on the kept storage
        return json.loads(setup.read_text())
    shutil.rmtree(root, ignore_errors=True)
    home, landing = root / "home", root / "landing"
    home.mkdir(parents=True)
    shutil.copy(LOCAL_YAML, home / "dagster.yaml")
    keys, asset = file_keys(files), _asset()
    started = time.perf_counter()
    (landing / "archive" / "external" / "inbound").mkdir(parents=True)
    for key in keys:
        (landing / "archive" / key).touch()
    (landing / "external" / "inbound").mkdir(parents=True)
    files_seconds = time.perf_counter() - started
    log(f"partitions: {files:,} archived files in {files_seconds:.1f} s")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        started = time.perf_counter()
        for start in range(0, files, BATCH):
            instance.add_dynamic_partitions(asset.partitions_def.name, keys[start:start + BATCH])
        add_seconds = time.perf_counter() - started
        log(f"partitions: {files:,} partitions added in {add_seconds:.1f} s ({BATCH:,} a call)")
        started = time.perf_counter()
        for index, key in enumerate(keys):
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset.key, partition=key, metadata=_metadata(key, landing, index)))
            if (index + 1) % BATCH == 0:
                log(f"partitions: {index + 1:,} materializations, {time.perf_counter() - started:.0f} s")
        events_seconds = time.perf_counter() - started
    result = {"files": files, "archived_files_seconds": files_seconds, "add_partitions_seconds": add_seconds,
              "materializations_seconds": events_seconds,
              "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    setup.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _best(fn, rounds: int = 3) -> tuple[float, object]:
    best, value = math.inf, None
    for _ in range(rounds):
        started = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - started)
    return best, value


def _timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def apply_requests(instance, result) -> dict:
    """What Dagster's sensor daemon does with a tick's partition requests (dagster/_daemon/sensor.py:
    `has_dynamic_partition` for each key, then add the new ones, or delete the existing ones one by one)."""
    import dagster as dg

    added = deleted = 0
    started = time.perf_counter()
    for request in result.dynamic_partitions_requests or []:
        present = [k for k in request.partition_keys if instance.has_dynamic_partition(request.partitions_def_name, k)]
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            new = [k for k in request.partition_keys if k not in present]
            if new:
                instance.add_dynamic_partitions(request.partitions_def_name, new)
            added += len(new)
        else:
            for key in present:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
            deleted += len(present)
    return {"apply_s": time.perf_counter() - started, "added": added, "deleted": deleted}


class Feed:
    """The instance and landing zone of one state, and the events' timestamps (the feed's clock)."""

    def __init__(self, home: Path, landing: Path):
        import dagster as dg

        from etl_assets.landing.zone import LocalLandingZone

        self.home, self.landing = home, landing
        self.instance = dg.DagsterInstance.from_config(str(home))
        self.zone = LocalLandingZone(root=str(landing))
        self.asset = _asset()

    def close(self) -> None:
        self.instance.dispose()

    def partitions(self) -> int:
        return len(self.instance.get_dynamic_partitions(self.asset.partitions_def.name))

    def event(self, index: int):
        """The materialization record of the index-th file (storage id and timestamp)."""
        import dagster as dg

        [record] = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=self.asset.key, asset_partitions=[file_keys(index + 1)[-1]]),
            limit=1).records
        return record

    def land(self, name: str) -> str:
        key = f"external/inbound/{name}"
        (self.landing / key).write_text("")
        return key

    def unland(self, key: str) -> None:
        (self.landing / key).unlink(missing_ok=True)

    def old_tick(self) -> dict:
        """The sensor as it was before the lifecycle: list the prefix, request every waiting file, add
        its partition; nothing else reads the instance."""
        from etl_assets.files.external import PREFIX
        from etl_assets.files.sensors import landed_file_requests

        seconds, (requests, additions) = _timed(
            lambda: landed_file_requests(self.zone, PREFIX, self.asset.partitions_def))

        class Result:
            dynamic_partitions_requests = additions

        return {"evaluate_s": seconds, "run_requests": len(requests), **apply_requests(self.instance, Result)}

    def tick(self, now: float, cursor):
        """One evaluation of external_files_sensor (its code, in this process) with the time `now` and a
        retention of 0 (the cutoff is `now`), from `cursor`; then the daemon's part. Returns the figures
        and the next cursor."""
        import dagster as dg

        from etl_assets.files.external import PREFIX
        from etl_assets.files.sensors import LifecycleCursor, build_landed_files_sensor

        with dg.build_sensor_context(instance=self.instance, resources={"landing_zone": self.zone},
                                     cursor=cursor.dump()) as context:
            sensor = build_landed_files_sensor("external", PREFIX, self.asset, retention=0, clock=lambda: now)
            seconds, result = _timed(lambda: sensor(context))
        applied = apply_requests(self.instance, result)
        following = LifecycleCursor.parse(result.cursor)
        return ({"evaluate_s": seconds, "run_requests": len(result.run_requests), **applied,
                 "swept": following.swept_at != cursor.swept_at, "partitions_after": self.partitions()}, following)

    def instance_calls(self) -> dict:
        """What a partition page stands on: the keys, and each key's status (the asset status cache,
        rebuilt from the event log when the partitions changed since it was written)."""
        name, asset = self.asset.partitions_def.name, self.asset

        def statuses():
            keys = self.instance.get_dynamic_partitions(name)
            return self.instance.get_status_by_partition(asset.key, keys, asset.partitions_def)

        cold, value = _timed(statuses)
        warm, _ = _best(statuses)
        keys_s, keys = _best(lambda: self.instance.get_dynamic_partitions(name))
        return {"partitions": len(keys), "get_dynamic_partitions_s": keys_s, "status_cold_s": cold,
                "status_warm_s": warm, "materialized": sum(1 for s in (value or {}).values() if s is not None)}


def _load_once(home: Path, landing: Path) -> dict:
    from benchmarks.catalog import LOAD_SCRIPT

    done = subprocess.run([sys.executable, "-c", LOAD_SCRIPT], cwd=REPO, env=live.environment(landing=landing, home=home),
                          capture_output=True, text=True, timeout=900)
    line = next((x for x in done.stdout.splitlines() if x.startswith("LOAD ")), None)
    if done.returncode or not line:
        raise RuntimeError(f"loading the code location failed: {done.stderr[-3000:]}")
    return json.loads(line[5:])


def time_code_location_loads(homes: dict[str, Path], landing: Path, rounds: int) -> dict:
    """Each home's best of `rounds` fresh interpreters loading the code location with DAGSTER_HOME on it,
    the homes taking turns (a busy machine slows every one alike, not one state)."""
    runs: dict[str, list] = {name: [] for name in homes}
    for _ in range(rounds):
        for name, home in homes.items():
            runs[name].append(_load_once(home, landing))
    result = {}
    for name, done in runs.items():
        best = min(done, key=lambda r: r["total_s"])
        result[name] = {"total_s": best["total_s"], "import_s": best["import_s"],
                        "repository_s": best["repository_s"], "snapshot_s": best["snapshot_s"],
                        "rounds": [r["total_s"] for r in done]}
    return result


def graphql_partition_page(home: Path, landing: Path, kept: str, deleted: str | None, repeats: int = 3,
                           timeout: float = 300.0) -> dict:
    """dagster-webserver on the instance: the UI's partitions tab query (the first answer after the
    partitions changed, then the best of `repeats`), and a partition's detail for a kept and a deleted key."""
    from benchmarks.catalog import ui_documents
    from benchmarks.sensor import time_queries

    documents = ui_documents(("PartitionHealthQuery", "AssetPartitionDetailQuery"))
    asset_key = {"path": list(_asset().key.path)}
    logs = Path(tempfile.mkdtemp(prefix="etl_assets_bench_partitions_web_"))
    server = live.Server("webserver", live.environment(landing=landing, home=home), logs)
    try:
        startup = server.wait_loaded(timeout)

        def health(d):
            node = d["assetNodeOrError"]
            statuses = node["assetPartitionStatuses"]
            return (f"{len(node['partitionKeysByDimension'][0]['partitionKeys']):,} keys, "
                    f"{len(statuses['materializedPartitions']):,} materialized")

        def detail(d):
            history = d["assetOrError"]["definition"]
            events = d["assetOrError"]["assetEventHistory"]["results"]
            return f"{len(events)} event(s), metadata {sorted(m['label'] for m in events[0]['metadataEntries'])[:3]}" \
                if events else f"no events (latest run {history['latestRunForPartition']})"

        first = time_queries(server.url, [("PartitionHealthQuery (first)", documents["PartitionHealthQuery"],
                                           {"assetKey": asset_key}, health)], 1)
        plan = [("PartitionHealthQuery", documents["PartitionHealthQuery"], {"assetKey": asset_key}, health),
                ("AssetPartitionDetailQuery, a kept partition", documents["AssetPartitionDetailQuery"],
                 {"assetKey": asset_key, "partitionKey": kept}, detail)]
        if deleted:
            plan.append(("AssetPartitionDetailQuery, a deleted partition", documents["AssetPartitionDetailQuery"],
                         {"assetKey": asset_key, "partitionKey": deleted}, detail))
        return {"startup_seconds": startup, "queries": first + time_queries(server.url, plan, repeats)}
    finally:
        server.stop()
        shutil.rmtree(logs, ignore_errors=True)


def measure_state(feed: Feed, label: str, graphql: bool, kept: str, deleted: str | None, log=print) -> dict:
    log(f"partitions: {label}: instance calls")
    state = {"label": label, "instance": feed.instance_calls()}
    if graphql:
        log(f"partitions: {label}: dagster-webserver, the partitions tab")
        # One key added for the webserver's time makes its first answer follow a change of partitions (a
        # status cache to rebuild), as the first look after a tick that added or deleted one does.
        bump = "external/inbound/bench_partition_page.csv"
        feed.instance.add_dynamic_partitions(feed.asset.partitions_def.name, [bump])
        try:
            state["graphql"] = graphql_partition_page(feed.home, feed.landing, kept, deleted)
        finally:
            feed.instance.delete_dynamic_partition(feed.asset.partitions_def.name, bump)
    return state


def run_partitions_benchmark(files: int = DEFAULT_FILES, window: int = DEFAULT_WINDOW, data_root: Path = Path("data/bench"),
                             rounds: int = 3, graphql: bool = True, drain_ticks: int = 3, log=print) -> dict:
    from etl_assets.files.sensors import DELETIONS_PER_TICK, LifecycleCursor

    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    root = data_root / f"partitions_{files}"
    log(f"partitions: the history of {files:,} files of one feed under {root}")
    setup = build_history(root, files, log)
    work = Path(tempfile.mkdtemp(prefix="etl_assets_bench_partitions_"))
    keys = file_keys(files)
    aged = files - window  # files settled longer than the retention ago
    try:
        home = work / "home"
        shutil.copytree(root / "home", home)
        feed = Feed(home, root / "landing")
        try:
            boundary = feed.event(aged - 1)  # the last file past the retention
            cutoff = boundary.timestamp + 1e-6  # the time "now" of the ticks, with a retention of 0
            waiting = feed.land("bank_txn_waiting_1.csv")
            before_ticks = {"old sensor, one new file": feed.old_tick()}
            feed.unland(waiting)
            feed.instance.delete_dynamic_partition(feed.asset.partitions_def.name, waiting)
            before = measure_state(feed, f"before: {feed.partitions():,} partitions", graphql,
                                   kept=keys[-1], deleted=None, log=log)
            before["ticks"] = before_ticks
            # The lifecycle's first ticks on an instance that kept every partition.
            drain, cursor = [], LifecycleCursor()
            for n in range(drain_ticks):
                figures, cursor = feed.tick(cutoff, cursor)
                drain.append(figures)
                log(f"partitions: lifecycle tick {n + 1} on the full instance: {figures['evaluate_s']:.2f} s, "
                    f"{figures['deleted']:,} deleted in {figures['apply_s']:.2f} s")
            rest = [k for k in keys[:aged] if feed.instance.has_dynamic_partition(feed.asset.partitions_def.name, k)]
            log(f"partitions: deleting the other {len(rest):,} as the daemon would")
            rest_s, _ = _timed(lambda: [feed.instance.delete_dynamic_partition(feed.asset.partitions_def.name, k)
                                        for k in rest])
            # The walk caught up to the boundary, as the remaining drain ticks would have.
            cursor = LifecycleCursor(boundary.storage_id, cursor.swept_at, cursor.refused)
            # After, the steady state. A tick sweeping for given-up files after a change of partitions
            # (it reads every partition's status: Dagster rebuilds its cache from the event log); a tick
            # where one more file ages past the retention and a new one lands; a tick with nothing new.
            nxt = feed.event(aged)
            swept, _ = feed.tick(cutoff, LifecycleCursor(cursor.settled_after))
            waiting = feed.land("bank_txn_waiting_2.csv")
            changed, cursor = feed.tick(nxt.timestamp + 1e-6, cursor)
            feed.unland(waiting)
            feed.instance.delete_dynamic_partition(feed.asset.partitions_def.name, waiting)
            quiet, cursor = feed.tick(nxt.timestamp + 1e-6, cursor)
            after = measure_state(feed, f"after: {feed.partitions():,} partitions", graphql,
                                  kept=keys[-1], deleted=keys[0], log=log)
            after["ticks"] = {"sweep": swept, "new file": changed, "quiet": quiet}
        finally:
            feed.close()
        log(f"partitions: code location load, {rounds} round(s) for each state, taking turns")
        loads = time_code_location_loads({"before": root / "home", "after": home}, root / "landing", rounds)
        before["code_location_load"], after["code_location_load"] = loads["before"], loads["after"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    notes = [
        f"{files:,} files of one feed (external/inbound/, files/external_feed_loads), each loaded: an empty file "
        f"under archive/, a partition, one materialization with a real load's metadata (setup: partitions added "
        f"in {setup['add_partitions_seconds']:.1f} s, {BATCH:,} a call; materializations in "
        f"{setup['materializations_seconds']:.0f} s, reported one by one)",
        f"after: the partitions of the last {window:,} files (seven days of a file every five minutes, the default "
        "retention); every materialization stays in the event log",
        f"the lifecycle's first ticks on the full instance delete at most {DELETIONS_PER_TICK:,} each (oldest "
        f"first): {math.ceil(aged / DELETIONS_PER_TICK)} ticks drain {aged:,}, about "
        f"{math.ceil(aged / DELETIONS_PER_TICK) * 30 / 60:.0f} min at one tick per 30 s; the remaining "
        f"{len(rest):,} were deleted here directly in {rest_s:.1f} s",
        "evaluate: the sensor's own code in this process (a code server runs the same); apply: what the daemon "
        "does with its partition requests (has_dynamic_partition per key, then add, or delete one by one)",
        "code location load: a fresh interpreter imports etl_assets.definitions, resolves the repository and "
        "serializes its snapshot, with DAGSTER_HOME on each state's instance, the two states taking turns; the "
        "definitions read no partition, so the two figures differ only by the machine's noise",
        "get_status_by_partition (and the UI's partition statuses) first after a change of partitions: Dagster "
        "rebuilds the asset's status cache from its whole event log (every materialization ever, the deleted "
        "partitions' too), so this figure follows the history, not the partitions kept",
        "PartitionHealthQuery is the UI's partitions-tab query (every key and its status), sent to a fresh "
        "dagster-webserver; its first answer follows a change of partitions (one key added for it, removed "
        "after), so it rebuilds the status cache; then the best of 3",
        "sweep: the tick that also reads every partition's status for given-up files (when error/, duplicate/ or "
        "held/ changed, and at least hourly), right after a change of partitions; the first tick on the full "
        f"instance sweeps too ({files:,} statuses), the next ones do not",
    ]
    return {"kind": "partitions", "files": files, "window": window, "started_at": started_at, "setup": setup,
            "before": before, "drain": drain, "rest_deleted": len(rest), "rest_delete_s": rest_s, "after": after,
            "deletions_per_tick": DELETIONS_PER_TICK, "notes": notes}


# ---------------------------------------------------------------- report

def _s(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def rows(result: dict) -> list[list[str]]:
    """The published table: one row per figure, before (every partition kept) and after (bounded)."""
    b, a = result["before"], result["after"]
    old, ticks, drain = b["ticks"]["old sensor, one new file"], a["ticks"], result["drain"]
    out = [["partitions of the feed's asset", f"{b['instance']['partitions']:,}", f"{a['instance']['partitions']:,}"],
           ["sensor tick, a new file: evaluate s + the daemon's part s",
            f"{_s(old['evaluate_s'])} + {_s(old['apply_s'])} (no lifecycle: its partition added)",
            f"{_s(ticks['new file']['evaluate_s'])} + {_s(ticks['new file']['apply_s'])} (its partition added, "
            f"{ticks['new file']['deleted']} aged out deleted)"],
           ["sensor tick, nothing new: evaluate s", "", _s(ticks["quiet"]["evaluate_s"])],
           ["sensor tick with the sweep for given-up files (hourly, or refused folders changed): evaluate s", "",
            _s(ticks["sweep"]["evaluate_s"])]]
    if drain:
        out.append(["the lifecycle's first ticks on the full instance: evaluate s + the daemon's part s", "",
                    ", ".join(f"{_s(t['evaluate_s'])} + {_s(t['apply_s'])}" for t in drain)
                    + f" (each deletes {drain[0]['deleted']:,}; the first sweeps)"])
    for name, key in (("get_dynamic_partitions s", "get_dynamic_partitions_s"),
                      ("get_status_by_partition s, first after a change of partitions", "status_cold_s"),
                      ("get_status_by_partition s, unchanged", "status_warm_s")):
        out.append([name, _s(b["instance"][key]), _s(a["instance"][key])])
    out.append(["code location load s (best; fresh interpreter)", _s(b["code_location_load"]["total_s"]),
                _s(a["code_location_load"]["total_s"])])
    if "graphql" in b and "graphql" in a:
        bq = {q["name"]: q for q in b["graphql"]["queries"]}
        aq = {q["name"]: q for q in a["graphql"]["queries"]}
        for name, what in (("PartitionHealthQuery (first)", "first answer after a change"),
                           ("PartitionHealthQuery", "best of 3")):
            out.append([f"UI partitions tab (PartitionHealthQuery), {what} s",
                        f"{_s(bq[name]['best_s'])} ({bq[name]['response_bytes']:,} B)",
                        f"{_s(aq[name]['best_s'])} ({aq[name]['response_bytes']:,} B)"])
        deleted = aq.get("AssetPartitionDetailQuery, a deleted partition")
        if deleted:
            out.append(["a deleted partition's detail in the UI (AssetPartitionDetailQuery)", "",
                        f"{_s(deleted['best_s'])} s: {deleted['result']}"])
    return out


def print_partitions(result: dict) -> None:
    from benchmarks.report import table

    print(f"\nPartitions: {result['files']:,} files of one feed, before and after the lifecycle "
          f"(the last {result['window']:,} kept)")
    print(table(["", "before", "after"], rows(result)))
    for note in result["notes"]:
        print(f"- {note}")


def write_partitions(out: Path, result: dict, env: dict) -> list[Path]:
    from benchmarks.report import markdown_table

    out.mkdir(parents=True, exist_ok=True)
    (out / "partitions.json").write_text(json.dumps({"environment": env, "partitions": result}, indent=2,
                                                    default=str) + "\n")
    md = [f"# Partitions: {result['files']:,} landed files of one feed, before and after the lifecycle", "",
          f"Measured {result['started_at']}; load average at the end {', '.join(f'{x:.2f}' for x in env['loadavg'])}.",
          "", markdown_table(["", "before", "after"], rows(result)), ""]
    md += [f"- {note}" for note in result["notes"]]
    (out / "partitions.md").write_text("\n".join(md) + "\n")
    return [out / "partitions.json", out / "partitions.md"]
