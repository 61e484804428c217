"""Find new backup folders and late files; this replaces the DynamoDB table.

What was processed is Dagster's own record: every materialization stores the
fingerprint of the files it read, a folder the cursor has not seen yet is skipped
when its objects are already materialized (by a run from the UI, a backfill or
`etl-assets materialize`), and each run request's key is the folder plus the
fingerprint, which Dagster never launches twice. The cursor only makes listing cheap:

- `closed`: every folder up to this name is done; listing starts after it, so a
  tick lists only the open folders and whatever is new, never the whole history.
- `open`: the newest OPEN_FOLDERS folders, with a fingerprint per object. They
  are listed again each tick, so a late file changes a fingerprint and re-runs
  that object for that folder. The newest folder is always open: an empty folder
  counts as processed only once a newer folder exists (files may still arrive).
- `pending`: object folders the code location does not know yet (not in catalog.yaml
  nor in the discovered state), by folder. Each tick says so in its log; once
  `etl-assets catalog refresh` has added the object and the code location is
  reloaded, the next tick lists just those folders again and loads them.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from etl_assets.landing.zone import LandedFile, LandingZone, fingerprint_files
from etl_assets.salesforce.assets import (
    SOURCE_FINGERPRINT,
    object_asset_key,
    salesforce_objects,
)
from etl_assets.salesforce.backup_files import ObjectFile, Unreadable, expand
from etl_assets.salesforce.catalog import SalesforceObject, load_catalog, object_name_problem, refused_objects
from etl_assets.salesforce.partitions import (
    BACKUP_PREFIX,
    differential_folders,
    is_backup_folder,
)

OPEN_FOLDERS = 3
ALREADY_LOADED = "*"  # materialized before the cursor knew the folder; its files are not compared

# (object, folders) -> {folder: fingerprint it was materialized with, or ALREADY_LOADED}
LoadedLookup = Callable[[SalesforceObject, list[str], set[str]], dict[str, str]]


@dataclass
class BackupCursor:
    closed: str = ""
    open: dict[str, dict[str, str]] = field(default_factory=dict)  # folder -> object -> fingerprint
    pending: dict[str, list[str]] = field(default_factory=dict)  # unknown object folder -> backup folders

    @classmethod
    def parse(cls, text: str | None) -> BackupCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(data.get("closed", ""), data.get("open", {}), data.get("pending", {}))

    def serialize(self) -> str:
        return json.dumps({"closed": self.closed, "open": self.open, "pending": self.pending}, sort_keys=True)


@dataclass
class BackupScan:
    run_requests: list[dg.RunRequest]
    new_folders: list[str]
    cursor: BackupCursor
    ignored: list[str]
    unknown_objects: dict[str, list[str]] = field(default_factory=dict)  # object folder -> backup folders
    unreadable: list[Unreadable] = field(default_factory=list)  # archives that could not be opened
    refused: dict[str, list[str]] = field(default_factory=dict)  # object names that cannot be assets -> folders


def _fingerprint(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:16]


def loaded_from_instance(instance: dg.DagsterInstance) -> LoadedLookup:
    """What Dagster already materialized: partitions from the status cache, fingerprints
    (one query each) only for folders that are still open, where late files matter."""

    def lookup(obj: SalesforceObject, folders: list[str], open_now: set[str]) -> dict[str, str]:
        key = object_asset_key(obj)
        done = instance.get_materialized_partitions(key) & set(folders)
        loaded = {}
        for folder in done:
            loaded[folder] = ALREADY_LOADED
            if folder in open_now:
                records = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=key, asset_partitions=[folder]), limit=1
                ).records
                value = records[0].asset_materialization.metadata.get(SOURCE_FINGERPRINT) if records else None
                if value is not None:
                    loaded[folder] = value.value
        return loaded

    return lookup


def scan_backups(
    landing_zone: LandingZone,
    cursor: BackupCursor,
    catalog: dict[str, SalesforceObject],
    open_folders: int = OPEN_FOLDERS,
    loaded: LoadedLookup | None = None,
) -> BackupScan:
    by_name = {api.lower(): obj for api, obj in catalog.items()}
    # "0" sorts right after "/": listing starts past every key of the closed folders,
    # using only characters that every S3 implementation accepts in StartAfter.
    start_after = f"{BACKUP_PREFIX}/{cursor.closed}0" if cursor.closed else ""
    folders: dict[str, dict[str, list[LandedFile]]] = {}
    ignored: set[str] = set()
    unknown: dict[str, set[str]] = defaultdict(set)
    refused: dict[str, set[str]] = defaultdict(set)
    unreadable: list[Unreadable] = []
    for item in _listing(landing_zone, cursor, by_name, start_after):
        if isinstance(item, Unreadable):
            unreadable.append(item)
            folders.setdefault(item.folder, defaultdict(list))
            continue
        if isinstance(item, ObjectFile):
            objects = folders.setdefault(item.folder, defaultdict(list))
            if item.object_name.lower() in by_name:
                objects[by_name[item.object_name.lower()].api_name].append(item.landed)
            elif object_name_problem(item.object_name):  # never an asset: said each tick it is listed, not pending
                refused[item.object_name].add(item.folder)
            else:
                unknown[item.object_name].add(item.folder)
            continue
        parts = item.key.split("/")
        if len(parts) < 3 or not is_backup_folder(parts[1]):
            ignored.add("/".join(parts[:2]))
            continue
        folders.setdefault(parts[1], defaultdict(list))
        if not (item.key.endswith("/") and len(parts) == 3):  # an empty folder is no surprise
            ignored.add(item.key)

    ordered = sorted(set(folders) | set(cursor.open))
    keep = ordered[-open_folders:] if open_folders > 0 else []
    unseen = sorted(f for f in folders if f not in cursor.open)
    previously: dict[str, dict[str, str]] = defaultdict(dict)
    if loaded and unseen:
        for api_name, obj in catalog.items():
            for folder, fp in loaded(obj, unseen, set(keep)).items():
                previously[folder][api_name] = fp

    requests, new_folders, seen = [], [], {}
    for folder in sorted(folders):
        prints = {obj: fingerprint_files(files) for obj, files in folders[folder].items()}
        seen[folder] = prints
        known = cursor.open.get(folder) or previously.get(folder, {})
        changed = sorted(obj for obj, fp in prints.items() if known.get(obj) not in (fp, ALREADY_LOADED))
        if prints and not known:
            new_folders.append(folder)
        if changed:
            run_key = f"{folder}:" + _fingerprint([f"{obj}={prints[obj]}" for obj in changed])
            requests.append(
                dg.RunRequest(
                    run_key=run_key,
                    partition_key=folder,
                    asset_selection=[object_asset_key(catalog[obj]) for obj in changed],
                    tags={"salesforce/folder": folder, "salesforce/objects": ",".join(changed)},
                )
            )

    closed = max([cursor.closed] + [f for f in ordered if f not in keep])
    pending = {name: set(found) for name, found in cursor.pending.items() if name.lower() not in by_name}
    for name, found in unknown.items():
        pending.setdefault(name, set()).update(found)
    next_cursor = BackupCursor(closed, {f: seen.get(f, cursor.open.get(f, {})) for f in keep},
                               {name: sorted(found) for name, found in sorted(pending.items())})
    return BackupScan(requests, new_folders, next_cursor, sorted(ignored), next_cursor.pending, unreadable,
                      {name: sorted(found) for name, found in sorted(refused.items())})


def _listing(landing_zone: LandingZone, cursor: BackupCursor, by_name: dict[str, SalesforceObject],
             start_after: str):
    """The object files (and other keys) to scan: everything after the closed folders, and the files
    of objects that were pending and are known now (their object folders, and their members of the
    folder's archives: one listing per folder, once)."""
    yield from expand(landing_zone, landing_zone.list_files(f"{BACKUP_PREFIX}/", start_after=start_after))
    again: dict[str, set[str]] = defaultdict(set)
    for name, found in cursor.pending.items():
        if name.lower() in by_name:
            for folder in found:
                if not start_after or f"{BACKUP_PREFIX}/{folder}/" < start_after:  # else listed above already
                    again[folder].add(name.lower())
    for folder, names in sorted(again.items()):
        for item in expand(landing_zone, landing_zone.list_files(f"{BACKUP_PREFIX}/{folder}/")):
            if isinstance(item, ObjectFile) and item.object_name.lower() in names:
                yield item


@dg.sensor(
    name="salesforce_backup_sensor",
    description="Watches the landing zone for new Salesforce backup folders and late files, "
    "adds each folder as a partition and materializes the objects it holds.",
    target=salesforce_objects,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def salesforce_backup_sensor(context: dg.SensorEvaluationContext, landing_zone: LandingZone):
    scan = scan_backups(
        landing_zone, BackupCursor.parse(context.cursor), load_catalog(), loaded=loaded_from_instance(context.instance)
    )
    if scan.ignored:
        context.log.warning(f"Ignored {len(scan.ignored)} unexpected key(s), e.g. {scan.ignored[:5]}")
    for name, found in scan.refused.items():
        context.log.warning(f"Object folder {name!r} in {', '.join(found[:3])}{', ...' if len(found) > 3 else ''} "
                            f"is not loaded: {object_name_problem(name)}")
    for name, reason in refused_objects().items():
        context.log.warning(f"{name!r} in the discovered state is not an asset: {reason}")
    for item in scan.unreadable:
        context.log.warning(f"{item.key} cannot be read, so no object of {item.folder} in it is loaded: {item.reason}")
    if scan.unknown_objects:
        listed = "; ".join(f"{name} ({', '.join(found[:3])}{', ...' if len(found) > 3 else ''})"
                           for name, found in scan.unknown_objects.items())
        context.log.warning(
            f"{len(scan.unknown_objects)} object(s) in the backups are not assets yet and were not loaded: {listed}. "
            "Run `etl-assets catalog refresh` and reload the code location; the next tick loads their folders.")
    context.log.info(
        f"{len(scan.new_folders)} new folder(s), {len(scan.run_requests)} run request(s), "
        f"{landing_zone.list_calls} list call(s); closed up to {scan.cursor.closed or '-'}"
    )
    return dg.SensorResult(
        run_requests=scan.run_requests,
        dynamic_partitions_requests=[differential_folders.build_add_request(scan.new_folders)] if scan.new_folders else [],
        cursor=scan.cursor.serialize(),
    )
