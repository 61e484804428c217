"""salesforce_backup_sensor, tick by tick, on a local landing zone and on S3 (moto over HTTP).

Every test lands files behind the sensor's back, evaluates it with the cursor the
previous tick returned, and checks what a real deployment would act on: the run
requests, the partitions added and the cursor.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from etl_assets.landing.zone import LandingZone, LocalLandingZone
from etl_assets.salesforce.catalog import load_catalog
from etl_assets.salesforce.partitions import differential_folders
from etl_assets.salesforce.sensors import (
    OPEN_FOLDERS,
    BackupCursor,
    salesforce_backup_sensor,
    scan_backups,
)
from etl_assets_tests.conftest import upload_tree
from etl_assets_tests.test_landing_zone import make_s3_zone

CATALOG = load_catalog()
EMPTY = "20240503_Differential"  # the sample's quiet day
NEWEST = "20240505_Differential"
NEW = "20240506_Differential"


@dataclass
class Landing:
    """A landing zone under test and a way to land files in it behind the sensor's back."""

    zone: LandingZone
    put: Callable[[str, bytes], None]  # a file at a key
    mkdir: Callable[[str], None]  # an empty folder (key without the trailing '/')


def _landing(kind: str, root: Path, request) -> Landing:
    if kind == "local":

        def put(key: str, data: bytes) -> None:
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(data)

        return Landing(LocalLandingZone(root=str(root)), put, lambda key: (root / key).mkdir(parents=True))
    client, bucket = request.getfixturevalue("s3_bucket")
    if root.exists():
        upload_tree(client, bucket, root)
    return Landing(
        make_s3_zone(request.getfixturevalue("s3_endpoint"), bucket),
        lambda key, data: client.put_object(Bucket=bucket, Key=key, Body=data),
        lambda key: client.put_object(Bucket=bucket, Key=key + "/", Body=b""),
    )


@pytest.fixture
def landing(request, landing_root) -> Landing:
    """The sample backups (5 folders, the middle one empty) as a local or S3 landing zone."""
    return _landing(request.param, landing_root, request)


@pytest.fixture
def empty_landing(request, tmp_path) -> Landing:
    """A landing zone with nothing in it yet."""
    return _landing(request.param, tmp_path / "empty_landing", request)


BOTH = ["local", "s3"]
LATER_TICKS = BOTH


def tick(zone: LandingZone, cursor: str | None = None) -> tuple[dg.SensorResult, int]:
    """One sensor evaluation; returns its result and how many listing calls it made."""
    with dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), cursor=cursor, resources={"landing_zone": zone}
    ) as context:
        result = salesforce_backup_sensor(context)
        assert isinstance(result, dg.SensorResult)
        return result, context.resources.landing_zone.list_calls


def asset(api_name: str) -> dg.AssetKey:
    return dg.AssetKey(["salesforce", api_name.lower()])


def requested(result: dg.SensorResult) -> dict[str, set[dg.AssetKey]]:
    """Folder -> assets requested, checking there is one request per folder and no asset twice."""
    by_folder = {r.partition_key: set(r.asset_selection) for r in result.run_requests}
    assert len(by_folder) == len(result.run_requests)
    assert all(len(r.asset_selection) == len(by_folder[r.partition_key]) for r in result.run_requests)
    return by_folder


def added(result: dg.SensorResult) -> list[str]:
    """Partition keys the tick adds to the differential folders."""
    assert all(r.partitions_def_name == differential_folders.name for r in result.dynamic_partitions_requests)
    return [key for r in result.dynamic_partitions_requests for key in r.partition_keys]


def run_keys(result: dg.SensorResult) -> dict[str, str]:
    return {r.partition_key: r.run_key for r in result.run_requests}


def catalog_csv(api_name: str) -> bytes:
    """A CSV with the object's catalog header and no rows."""
    return (",".join(c.api_name for c in CATALOG[api_name].columns) + "\n").encode()


def objects_on_disk(root: Path) -> dict[str, set[dg.AssetKey]]:
    """Folder -> assets of the object folders holding CSVs, read from the tree itself."""
    found = {}
    for folder in sorted((root / "backup").iterdir()):
        objects = {asset(o.name) for o in folder.iterdir() if any(o.glob("*.csv"))}
        if objects:
            found[folder.name] = objects
    return found


@pytest.mark.parametrize("landing", BOTH, indirect=True)
def test_first_tick_requests_each_non_empty_folder_with_its_objects(landing, landing_root):
    """One run request per folder holding CSVs, selecting exactly those objects; partitions for those folders only."""
    result, _ = tick(landing.zone)
    expected = objects_on_disk(landing_root)
    assert EMPTY not in expected and len(expected) == 4
    assert requested(result) == expected
    assert requested(result)["20240502_Differential"] == {
        asset(n) for n in ("Account", "Case", "Lead", "Opportunity", "Task", "User",
                           "litify_pm__Intake__c", "litify_pm__Role__c")
    }
    assert added(result) == sorted(expected)
    assert len(set(run_keys(result).values())) == 4


@pytest.mark.parametrize("landing", LATER_TICKS, indirect=True)
def test_an_unchanged_tick_requests_nothing(landing):
    """With the returned cursor and nothing new, a tick requests no runs, adds no partitions, keeps the cursor."""
    first, first_calls = tick(landing.zone)
    second, second_calls = tick(landing.zone, first.cursor)
    assert second.run_requests == [] and added(second) == []
    assert BackupCursor.parse(second.cursor) == BackupCursor.parse(first.cursor)
    assert second_calls <= first_calls  # strictly fewer once the history is large: see the next test


@pytest.mark.slow
@pytest.mark.parametrize("empty_landing", LATER_TICKS, indirect=True)
def test_an_unchanged_tick_lists_the_open_folders_not_the_history(empty_landing):
    """The second tick's listing cost stays flat as the history doubles from 30 to 60 folders."""
    objects, files = list(CATALOG), 4  # 40 keys a folder: 60 folders are 3 pages of S3 listing
    folders = [f"{dt.date(2024, 1, 1) + dt.timedelta(days=i):%Y%m%d}_Differential" for i in range(60)]

    def land(batch: list[str]) -> None:
        keys = [f"backup/{f}/{o}/{o.lower()}_part{n}.csv" for f in batch for o in objects for n in range(files)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda key: empty_landing.put(key, catalog_csv(key.split("/")[2])), keys))

    cost = {}
    for count, batch in ((30, folders[30:]), (60, folders[:30])):  # grow the history with older folders
        land(batch)
        first, first_calls = tick(empty_landing.zone)
        assert len(first.run_requests) == count
        second, second_calls = tick(empty_landing.zone, first.cursor)
        assert second.run_requests == [] and added(second) == []
        cost[count] = (first_calls, second_calls)

    assert cost[60][0] > cost[30][0]  # a full listing grows with the history...
    assert cost[60][1] == cost[30][1]  # ...the cursor's does not
    assert cost[60][1] * 3 <= cost[60][0]
    local_scans = 1 + OPEN_FOLDERS * (1 + len(objects))  # backup/, then each open folder and its objects
    assert cost[60][1] <= (local_scans if isinstance(empty_landing.zone, LocalLandingZone) else 1)


@pytest.mark.parametrize("landing", LATER_TICKS, indirect=True)
def test_a_new_folder_is_requested_and_added(landing):
    """A folder that lands between ticks gets one request for its objects and its partition."""
    first, _ = tick(landing.zone)
    landing.put(f"backup/{NEW}/Task/task_part1.csv", catalog_csv("Task"))
    landing.put(f"backup/{NEW}/Account/account_part1.csv", catalog_csv("Account"))
    second, _ = tick(landing.zone, first.cursor)
    assert requested(second) == {NEW: {asset("Task"), asset("Account")}}
    assert added(second) == [NEW]


@pytest.mark.parametrize("landing", LATER_TICKS, indirect=True)
def test_an_empty_newest_folder_stays_open_until_files_arrive(landing):
    """An empty newest folder is kept open (no request, no partition) and is picked up once a CSV lands in it."""
    cursor, _ = tick(landing.zone)
    landing.mkdir(f"backup/{NEW}")
    for _ in range(2):
        result, _ = tick(landing.zone, cursor.cursor)
        assert result.run_requests == [] and added(result) == []
        state = BackupCursor.parse(result.cursor)
        assert state.open[NEW] == {} and state.closed < NEW
        cursor = result
    landing.put(f"backup/{NEW}/Task/task_part1.csv", catalog_csv("Task"))
    result, _ = tick(landing.zone, cursor.cursor)
    assert requested(result) == {NEW: {asset("Task")}}
    assert added(result) == [NEW]


@pytest.mark.parametrize("landing", LATER_TICKS, indirect=True)
@pytest.mark.parametrize(
    "folder, api_name",
    [(NEWEST, "Task"), (NEWEST, "Opportunity"), ("20240504_Differential", "Case")],
    ids=["existing-object", "object-new-to-folder", "older-open-folder"],
)
def test_a_late_file_in_an_open_folder_reruns_only_that_object(landing, folder, api_name):
    """A late CSV in a processed, still open folder requests that object for that folder, under a new run key."""
    first, _ = tick(landing.zone)
    landing.put(f"backup/{folder}/{api_name}/{api_name.lower()}_late.csv", catalog_csv(api_name))
    second, _ = tick(landing.zone, first.cursor)
    assert requested(second) == {folder: {asset(api_name)}}
    assert run_keys(second)[folder] != run_keys(first)[folder]
    assert added(second) == []  # the partition exists already
    third, _ = tick(landing.zone, second.cursor)
    assert third.run_requests == []  # the late file is now part of the cursor


@pytest.mark.parametrize("landing", LATER_TICKS, indirect=True)
def test_folders_past_the_open_window_are_closed_and_no_longer_watched(landing):
    """Only the newest OPEN_FOLDERS folders stay open; a late file in a closed folder is not picked up (by design:
    the operator re-runs that partition with a backfill)."""
    first, _ = tick(landing.zone)
    state = BackupCursor.parse(first.cursor)
    assert state.closed == "20240502_Differential"
    assert sorted(state.open) == [EMPTY, "20240504_Differential", NEWEST]

    landing.put(f"backup/{NEW}/Task/task_part1.csv", catalog_csv("Task"))
    second, _ = tick(landing.zone, first.cursor)
    state = BackupCursor.parse(second.cursor)
    assert state.closed == EMPTY
    assert sorted(state.open) == ["20240504_Differential", NEWEST, NEW]
    assert len(state.open) == OPEN_FOLDERS

    landing.put("backup/20240502_Differential/Task/task_late.csv", catalog_csv("Task"))
    landing.put(f"backup/{EMPTY}/Task/task_late.csv", catalog_csv("Task"))
    third, _ = tick(landing.zone, second.cursor)
    assert third.run_requests == [] and added(third) == []
    assert BackupCursor.parse(third.cursor) == state


JUNK = {
    f"backup/{NEW}/NotInCatalog__c/x.csv": None,  # key -> what is reported as ignored (None: an unknown object)
    "backup/readme.txt": "backup/readme.txt",
    "backup/2024_bad/Task/x.csv": "backup/2024_bad",
}


@pytest.mark.parametrize("landing", BOTH, indirect=True)
def test_unknown_objects_and_non_differential_keys_are_ignored(landing):
    """Objects outside the catalog and keys outside differential folders change no request and are reported."""
    clean, _ = tick(landing.zone)
    for key in JUNK:
        landing.put(key, b"Id\n")
    with_junk, _ = tick(landing.zone)
    assert requested(with_junk) == requested(clean)
    assert run_keys(with_junk) == run_keys(clean)
    assert added(with_junk) == added(clean)
    scan = scan_backups(landing.zone, BackupCursor(), CATALOG)
    assert scan.ignored == sorted(v for v in JUNK.values() if v)
    assert scan.unknown_objects == {"NotInCatalog__c": [NEW]} == BackupCursor.parse(scan.cursor.serialize()).pending


@pytest.mark.parametrize("landing", BOTH, indirect=True)
def test_an_object_the_code_location_learns_later_gets_its_closed_folders_loaded(landing):
    """Seen while unknown (the tick's log names it), it is pending in the cursor; once the catalog has
    it, the next tick lists just its folders, even closed ones, and requests them; then it is done."""
    from etl_assets.salesforce.catalog import parse_catalog

    first, _ = tick(landing.zone)
    folder = sorted(requested(first))[-1]  # open: listed again by the next tick
    landing.put(f"backup/{folder}/Widget__c/Widget__c.csv", b"Id,Name\na0W000000000001AAA,w\n")
    for day in range(OPEN_FOLDERS + 1):  # newer folders close the one the widget is in
        landing.put(f"backup/{dt.date(2031, 1, 1 + day):%Y%m%d}_Differential/Task/t.csv", catalog_csv("Task"))
    unknown = scan_backups(landing.zone, BackupCursor.parse(first.cursor), CATALOG)
    assert unknown.unknown_objects == {"Widget__c": [folder]}
    assert folder <= unknown.cursor.closed and all(dg.AssetKey(["salesforce", "widget__c"]) not in r.asset_selection
                                                  for r in unknown.run_requests)

    learned = {**CATALOG, **parse_catalog({"objects": {}}, {"objects": {"Widget__c": {
        "columns": {"Id": {"type": "id"}, "Name": {"type": "string"}}}}})}
    later = scan_backups(landing.zone, unknown.cursor, learned)
    assert [(r.partition_key, r.asset_selection) for r in later.run_requests] == [
        (folder, [dg.AssetKey(["salesforce", "widget__c"])])]
    assert later.cursor.pending == {} and later.unknown_objects == {}
    assert scan_backups(landing.zone, later.cursor, learned).run_requests == []


@pytest.mark.parametrize("landing", LATER_TICKS, indirect=True)
def test_junk_arriving_between_ticks_requests_nothing(landing):
    """Unknown objects and stray keys landing after the first tick give no run request and no partition."""
    first, _ = tick(landing.zone)
    for key in JUNK:
        landing.put(key, b"Id\n")
    second, _ = tick(landing.zone, first.cursor)
    assert second.run_requests == [] and added(second) == []


@pytest.mark.parametrize("landing", BOTH, indirect=True)
def test_run_keys_are_deterministic(landing):
    """Scanning the same tree twice from an empty cursor gives the same run keys (so Dagster dedups re-scans)."""
    first, _ = tick(landing.zone)
    again, _ = tick(landing.zone)
    assert run_keys(again) == run_keys(first)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]
    direct = scan_backups(landing.zone, BackupCursor(), CATALOG)
    assert [r.run_key for r in direct.run_requests] == [r.run_key for r in first.run_requests]


def _zip(members: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("empty_landing", BOTH, indirect=True)
def test_a_data_export_zip_requests_the_objects_it_holds(empty_landing):
    """The Data Export service delivers zips of one `<Object>.csv` each: the folder's run selects the
    objects of every archive (member names matched ignoring case, as object folders are); a member
    that changes (the archive replaced) re-runs only its object; a corrupt archive is reported, not
    fatal, and the other archives' objects are still requested."""
    folder = "20240601_Full"
    empty_landing.put(f"backup/{folder}/WE_00D000000000001_1.ZIP",
                      _zip({"Account.csv": catalog_csv("Account"), "contact.csv": catalog_csv("Contact")}))
    empty_landing.put(f"backup/{folder}/WE_00D000000000001_2.ZIP",
                      _zip({"Task.csv": catalog_csv("Task"), "Attachments/readme.txt": b"not an object"}))
    result, _ = tick(empty_landing.zone)
    assert requested(result) == {folder: {asset("Account"), asset("Contact"), asset("Task")}}
    assert added(result) == [folder]

    empty_landing.put(f"backup/{folder}/WE_00D000000000001_2.ZIP",
                      _zip({"Task.csv": catalog_csv("Task") + b"\n"}))
    empty_landing.put(f"backup/{folder}/WE_00D000000000001_3.ZIP", b"PK\x03\x04 not really a zip")
    with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), cursor=result.cursor,
                                 resources={"landing_zone": empty_landing.zone}) as context:
        scan = scan_backups(context.resources.landing_zone, BackupCursor.parse(result.cursor), CATALOG)
    assert {r.partition_key: set(r.asset_selection) for r in scan.run_requests} == {folder: {asset("Task")}}
    assert [u.key for u in scan.unreadable] == [f"backup/{folder}/WE_00D000000000001_3.ZIP"]
    assert "zip" in scan.unreadable[0].reason.lower()
