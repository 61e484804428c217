"""What N discovered Salesforce objects cost: code-location load, sensor ticks, the UI's asset queries.

Issue 13 makes every object of a backup an asset (3 checks each, dynamic partitions, one group per
standard/custom/managed namespace). This measures that cost on a generated `discovered.yaml` of N
objects (default 300), written with discovery.render_state into a temporary folder and pointed at by
ETL_ASSETS_SALESFORCE_DISCOVERED, against the same code location with 0 discovered objects:

- load: a fresh interpreter imports etl_assets.definitions, builds the repository (asset graph) and
  the snapshot a code server sends the webserver (RepositorySnap, serialized); best of `rounds`,
  with the process's peak RSS. Profiled with pyinstrument when asked and it is importable.
- sensor: scan_backups over F folders x every catalog object (local folder; S3 over moto's HTTP
  server): first tick, an unchanged tick, a tick with one new folder, in seconds and list calls.
- UI: dagster-webserver on a temporary instance; the GraphQL documents the bundled UI sends for the
  asset graph and catalog pages, taken from the webserver's own JavaScript so they match its version.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from etl_assets_tests import live
from benchmarks.sensor import (
    _keys,
    folder_names,
    local_folder_adder,
    moto_bucket,
    partitioned_webserver,
    three_ticks,
    time_queries,
    touch_keys,
)

REPO = live.REPO
NAMESPACES = ("npsp", "SBQQ", "dsfs", "litify_pm")  # managed packages: one asset group each
STANDARD = ("Campaign", "CampaignMember", "Contract", "Order", "OrderItem", "Product2", "Pricebook2",
            "PricebookEntry", "Quote", "QuoteLineItem", "Event", "EmailMessage", "Note", "Asset", "Entitlement",
            "ServiceContract", "WorkOrder", "WorkOrderLineItem", "Solution", "Idea", "ContentVersion",
            "ContentDocumentLink", "Group", "GroupMember", "UserRole", "Profile", "PermissionSet",
            "RecordType", "Partner", "OpportunityLineItem", "OpportunityContactRole", "AccountContactRelation",
            "CaseComment", "LiveChatTranscript", "Individual", "Location", "Shipment", "Invoice")
SUFFIXES = ("", "History", "Share", "Feed")  # what a full org's backup holds beside each object
WORDS = ("Claim", "Policy", "Vendor", "Invoice", "Payment", "Project", "Milestone", "Survey", "Response",
         "Referral", "Program", "Grant", "Donation", "Event", "Venue", "Asset", "Lease", "Unit", "Inspection",
         "Incident", "Vehicle", "Route", "Stop", "Device", "Reading", "Shift", "Timesheet", "Expense",
         "Budget", "Allocation", "Contract", "Rider", "Coverage", "Provider", "Visit", "Order", "Line")
FIELD_WORDS = ("Amount", "Status", "Type", "Stage", "Code", "Region", "Score", "Rate", "Total", "Notes",
               "Start", "End", "Due", "Primary", "Secondary", "External", "Billing", "Shipping", "Source",
               "Channel", "Owner", "Parent", "Level", "Priority", "Reason", "Category", "Count", "Flag")
# The usual describe type mix of a Salesforce object's fields (weights out of 100).
FIELD_TYPES = (("string", 44), ("id", 16), ("boolean", 11), ("float", 10), ("date", 7), ("datetime", 6),
               ("integer", 5), ("time", 1))
SYSTEM = {"Id": {"type": "id", "nullable": False}, "IsDeleted": {"type": "boolean"}, "CreatedDate": {"type": "datetime"},
          "CreatedById": {"type": "id"}, "LastModifiedDate": {"type": "datetime"},
          "LastModifiedById": {"type": "id"}, "SystemModstamp": {"type": "datetime"}}


# ---------------------------------------------------------------- the discovered state


def object_names(count: int, seed: int = 13) -> list[str]:
    """`count` API names: ~40% standard (with their History/Share/Feed), ~35% custom, ~25% managed."""
    rng = random.Random(seed)
    standard = [f"{name}{suffix}" for suffix in SUFFIXES for name in STANDARD]
    pairs = [f"{a}{b}" for a in WORDS for b in WORDS if a != b]
    rng.shuffle(pairs)
    n_standard = min(len(standard), round(count * 0.4))
    n_managed = round(count * 0.25)
    n_custom = count - n_standard - n_managed
    names = standard[:n_standard] + [f"{p}__c" for p in pairs[:n_custom]]
    names += [f"{NAMESPACES[i % len(NAMESPACES)]}__{p}__c" for i, p in enumerate(pairs[n_custom:n_custom + n_managed])]
    return names


def _field(rng: random.Random, type_: str, described: bool) -> dict:
    column = {"type": type_, "source": "describe" if described else "inferred"}
    if described and type_ == "string":
        column["length"] = rng.choice((40, 80, 255, 255, 255, 1300, 32768, 131072))
    if described and type_ == "float":
        column["precision"], column["scale"] = 18, rng.choice((0, 2, 2, 4))
    return column


def generate_objects(count: int, seed: int = 13) -> dict[str, dict]:
    """A discovered state of `count` objects, 10-150 fields each: half typed by a describe, half
    inferred; History objects lack SystemModstamp and carry Field/OldValue/NewValue, as in an org."""
    rng = random.Random(seed)
    types, weights = zip(*FIELD_TYPES)
    objects = {}
    for api_name in object_names(count, seed):
        described = rng.random() < 0.5
        history = api_name.endswith("History")
        columns = {}
        for name, base in SYSTEM.items():
            if history and name in ("SystemModstamp", "LastModifiedDate", "LastModifiedById"):
                continue
            columns[name] = {**_field(rng, base["type"], described), **({"nullable": False} if "nullable" in base else {})}
        if history:
            columns.update({"ParentId": _field(rng, "id", described), "Field": _field(rng, "string", described),
                            "OldValue": _field(rng, "string", described), "NewValue": _field(rng, "string", described)})
        else:
            columns.update({"Name": _field(rng, "string", described), "OwnerId": _field(rng, "id", described)})
        prefix = api_name.split("__")[0] + "__" if api_name.count("__") >= 2 else ""
        suffix = "__c" if "__" in api_name else ""
        target = rng.randint(10, 150)
        i = 0
        while len(columns) < target:
            type_ = rng.choices(types, weights)[0]
            stem = f"{rng.choice(FIELD_WORDS)}{rng.choice(FIELD_WORDS)}{i}" + ("Id" if type_ == "id" and not suffix else "")
            columns[f"{prefix}{stem}{suffix}"] = _field(rng, type_, described)
            i += 1
        entry = {"source": "describe" if described else "inferred", "columns": columns}
        if described:
            entry["label"] = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", api_name.split("__")[-2 if suffix else -1])
        objects[api_name] = entry
    return objects


def write_state(directory: Path, count: int) -> Path:
    from etl_assets.salesforce.discovery import render_state

    path = Path(directory) / f"discovered_{count}.yaml"
    path.write_text(render_state(generate_objects(count) if count else {}), encoding="utf-8")
    return path


# ---------------------------------------------------------------- code-location load


# What a code server does before the webserver can show the location: import the module, build the
# repository, and serialize the snapshot it sends (deferred job snapshots, as gRPC servers are asked).
LOAD_SCRIPT = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import etl_assets.definitions as module
t1 = time.perf_counter()
repo = module.defs.get_repository_def()
graph = repo.asset_graph
t2 = time.perf_counter()
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster_shared.serdes import serialize_value
snap = RepositorySnap.from_def(repo, defer_snapshots=True)
text = serialize_value(snap)
t3 = time.perf_counter()
print("LOAD " + json.dumps({
    "import_s": t1 - t0, "repository_s": t2 - t1, "snapshot_s": t3 - t2, "total_s": t3 - t0,
    "assets": len(snap.asset_nodes), "asset_checks": len(snap.asset_check_nodes or []),
    "salesforce_assets": sum(1 for a in snap.asset_nodes if a.asset_key.path[0] == "salesforce"),
    "groups": len({a.group_name for a in snap.asset_nodes}), "snapshot_bytes": len(text),
    "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
}))
"""


def _env(state: Path) -> dict:
    return {**os.environ, "ETL_ASSETS_SALESFORCE_DISCOVERED": str(state)}


def time_load(state: Path, rounds: int) -> dict:
    """Best of `rounds` fresh interpreters (each phase's best, and the best total with its RSS)."""
    runs = []
    for _ in range(rounds):
        done = subprocess.run([sys.executable, "-c", LOAD_SCRIPT], cwd=REPO, env=_env(state), capture_output=True,
                              text=True, timeout=900)
        line = next((x for x in done.stdout.splitlines() if x.startswith("LOAD ")), None)
        if done.returncode or not line:
            raise RuntimeError(f"loading the code location failed: {done.stderr[-3000:]}")
        runs.append(json.loads(line[5:]))
    best = min(runs, key=lambda r: r["total_s"])
    return {**best, "rounds": [r["total_s"] for r in runs],
            **{f"best_{k}": min(r[k] for r in runs) for k in ("import_s", "repository_s", "snapshot_s")},
            "peak_rss_max_bytes": max(r["peak_rss_bytes"] for r in runs)}


def profile_load(state: Path, out: Path) -> Path | None:
    """pyinstrument's text tree of one load, if pyinstrument can be imported (it is not a dependency)."""
    script = Path(tempfile.mkdtemp(prefix="etl_assets_bench_profile_")) / "load.py"
    script.write_text(LOAD_SCRIPT)
    target = out / "catalog_profile.txt"
    done = subprocess.run([sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(target),
                           str(script)], cwd=REPO, env=_env(state), capture_output=True, text=True, timeout=900)
    shutil.rmtree(script.parent, ignore_errors=True)
    return target if done.returncode == 0 and target.exists() else None


# ---------------------------------------------------------------- sensor ticks


def _ticks(kind: str, make_zone, add_folder, folders: int, catalog: dict, setup: float) -> dict:
    """First tick (empty cursor), unchanged tick, one new folder: each with a fresh zone's list-call count."""
    import dagster as dg

    with dg.DagsterInstance.ephemeral() as instance:
        first, unchanged, one_new = three_ticks(make_zone, add_folder, folders, catalog, instance)
    return {"kind": kind, "folders": folders, "objects": len(catalog), "files": folders * len(catalog),
            "setup_seconds": setup, "first_tick": first, "unchanged_tick": unchanged, "one_new_folder": one_new}


def sensor_local(root: Path, folders: int, catalog: dict) -> dict:
    from etl_assets.landing.zone import LocalLandingZone

    objects = list(catalog)
    started = time.perf_counter()
    touch_keys(root, (k for f in folder_names(folders) for k in _keys(f, objects)))
    setup = time.perf_counter() - started
    return _ticks("local", lambda: LocalLandingZone(root=str(root)), local_folder_adder(root, objects), folders,
                  catalog, setup)


def sensor_s3(folders: int, catalog: dict) -> dict:
    objects = list(catalog)
    with moto_bucket(f"bench-catalog-{os.getpid()}") as s3:
        started = time.perf_counter()
        keys = [k for f in folder_names(folders) for k in _keys(f, objects)]
        if not s3.seed(keys):  # the store is moto-internal; PUTs over HTTP otherwise
            for key in keys:
                s3.put(key)
        setup = time.perf_counter() - started
        return _ticks("s3 (moto server)", s3.zone, s3.folder_adder(objects), folders, catalog, setup)


def expected_list_calls(kind: str, objects: int, open_folders: int) -> dict:
    """What O(new) means for each zone: local lists `backup/`, each open folder and its object
    folders; S3 lists pages of 1,000 keys of the open (+ new) folders."""
    if kind == "local":
        return {"unchanged": 1 + open_folders * (1 + objects), "one_new_folder": 1 + (open_folders + 1) * (1 + objects)}
    return {"unchanged": max(1, math.ceil(open_folders * objects / 1000)),
            "one_new_folder": max(1, math.ceil((open_folders + 1) * objects / 1000))}


# ---------------------------------------------------------------- the UI's GraphQL

UI_QUERIES = ("LocationWorkspaceAssetsQuery", "AssetCatalogTableQuery", "AssetCatalogGroupTableQuery",
              "AssetGraphLiveQuery", "AssetHealthQuery")


def ui_documents(names=UI_QUERIES) -> dict[str, str]:
    """Each named query of the bundled UI with the fragments it spreads, read from the webserver's build."""
    import dagster_webserver

    build = Path(dagster_webserver.__file__).parent / "webapp" / "build" / "_next" / "static" / "chunks"
    blocks: dict[tuple[str, str], str] = {}
    for path in build.rglob("*.js"):
        source = path.read_text(errors="ignore")
        if "fragment " not in source:
            continue
        text = source.replace("\\n", "\n")
        for match in re.finditer(r"\n\s*(query|fragment) (\w+)[^{]*\{", text):
            i, depth = match.end(), 1
            while depth and i < len(text) and text[i] not in '"`':
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            if depth == 0:
                blocks.setdefault((match.group(1), match.group(2)), text[match.start():i].strip())
    fragments = {name: body for (kind, name), body in blocks.items() if kind == "fragment"}
    documents = {}
    for name in names:
        query = blocks.get(("query", name))
        if query is None:
            raise RuntimeError(f"the webserver's UI has no query {name} (another Dagster version?)")
        used, todo = [], re.findall(r"\.\.\.(\w+)", query)
        while todo:
            spread = todo.pop()
            if spread not in used and spread in fragments:
                used.append(spread)
                todo += re.findall(r"\.\.\.(\w+)", fragments[spread])
        documents[name] = "\n".join([query, *(fragments[n] for n in used)])
    return documents


def graphql_benchmark(state: Path, repeats: int = 3, folders: int = 30, timeout: float = 300.0) -> dict:
    """Webserver start to a loaded location, then each UI query best of `repeats`, on an instance
    holding `folders` dynamic partitions (the asset nodes' partition definitions list them)."""
    documents = ui_documents()
    location = live.LOCATION
    with partitioned_webserver(folder_names(folders), timeout, {"ETL_ASSETS_SALESFORCE_DISCOVERED": str(state)}) as web:
        url = web["server"].url
        workspace = live.graphql(url, documents["LocationWorkspaceAssetsQuery"], {"name": location}, timeout=300)
        entry = workspace["workspaceLocationEntryOrError"]
        nodes = [n for r in entry["locationOrLoadError"]["repositories"] for n in r["assetNodes"]]
        keys = [{"path": n["assetKey"]["path"]} for n in nodes]
        groups = sorted({n["groupName"] for n in nodes})
        group = {"groupName": "salesforce_custom", **live.REPOSITORY_SELECTOR}
        plan = [
            ("LocationWorkspaceAssetsQuery", "asset graph + catalog: every asset node of the location",
             {"name": location}, lambda d: f"{len(nodes)} nodes, {len(groups)} groups"),
            ("AssetCatalogTableQuery", "catalog table, first page (limit 1000)", {"limit": 1000},
             lambda d: f"{len(d['assetsOrError']['nodes'])} assets"),
            ("AssetCatalogGroupTableQuery", "catalog of the group salesforce_custom", {"group": group},
             lambda d: f"{len(d['assetNodes'])} nodes"),
            ("AssetGraphLiveQuery", "graph live state, every asset at once", {"assetKeys": keys},
             lambda d: f"{len(d['assetNodes'])} nodes"),
            ("AssetHealthQuery", "asset health, every asset at once", {"assetKeys": keys},
             lambda d: f"{len(d['assetsOrError']['nodes'])} assets"),
        ]
        what = {name: text for name, text, _, _ in plan}
        queries = time_queries(url, [(name, documents[name], variables, summary)
                                     for name, _, variables, summary in plan], repeats)
        return {"startup_seconds": web["startup_seconds"], "location": location, "asset_nodes": len(nodes),
                "groups": groups, "partitions": folders,
                "queries": [{"name": q["name"], "what": what[q["name"]], **q} for q in queries]}


# ---------------------------------------------------------------- all of it


def run_catalog_benchmark(objects: int = 300, folders: int = 30, rounds: int = 3, s3: bool = True,
                          graphql: bool = True, profile: bool = False, out: Path | None = None, log=print) -> dict:
    from etl_assets.salesforce.catalog import CATALOG_PATH, load_catalog
    from etl_assets.salesforce.sensors import OPEN_FOLDERS

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    work = Path(tempfile.mkdtemp(prefix="etl_assets_bench_catalog_"))
    try:
        baseline_state, state = write_state(work, 0), write_state(work, objects)
        generated = generate_objects(objects)
        fields = [len(e["columns"]) for e in generated.values()]
        result = {"kind": "catalog", "started_at": started, "objects": objects, "folders": folders,
                  "rounds": rounds, "open_folders": OPEN_FOLDERS,
                  "state": {"bytes": state.stat().st_size, "fields_min": min(fields, default=0),
                            "fields_max": max(fields, default=0), "fields_total": sum(fields),
                            "standard": sum(1 for n in generated if "__" not in n),
                            "custom": sum(1 for n in generated if n.count("__") == 1),
                            "managed": sum(1 for n in generated if n.count("__") >= 2)}}
        log(f"catalog: code-location load, 0 and {objects} discovered objects, best of {rounds}")
        result["load"] = {"baseline": time_load(baseline_state, rounds), "discovered": time_load(state, rounds)}
        if profile and out is not None:
            out.mkdir(parents=True, exist_ok=True)
            written = profile_load(state, out)
            result["profile"] = str(written) if written else "pyinstrument not importable: no profile"
        catalog = load_catalog(CATALOG_PATH, state)
        log(f"catalog: sensor ticks, {folders} folders x {len(catalog)} objects (local)")
        zones = [sensor_local(work / "landing", folders, catalog)]
        if s3:
            log(f"catalog: sensor ticks, {folders} folders x {len(catalog)} objects (S3 over moto's server)")
            zones.append(sensor_s3(folders, catalog))
        for zone in zones:
            zone["expected_list_calls"] = expected_list_calls("local" if zone["kind"] == "local" else "s3",
                                                              len(catalog), OPEN_FOLDERS)
        result["sensor"] = zones
        if graphql:
            log(f"catalog: dagster-webserver with {objects} discovered objects, UI queries best of {rounds}")
            try:
                result["graphql"] = {"baseline": graphql_benchmark(baseline_state, rounds, folders),
                                     "discovered": graphql_benchmark(state, rounds, folders)}
            except RuntimeError as error:  # keep the load and sensor figures; say why the UI part is missing
                result["graphql_error"] = str(error)[-3000:]
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
