"""The landing zone contract, checked against a local folder and S3 (moto over HTTP) holding the same tree."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from etl_assets.landing.zone import LocalLandingZone, S3LandingZone
from etl_assets.settings import build_landing_zone
from etl_assets_tests.conftest import S3_CREDENTIALS, upload_tree


def make_s3_zone(endpoint: str, bucket: str, prefix: str = "") -> S3LandingZone:
    """An S3LandingZone on the moto endpoint; moto is local, so no retries."""
    s3 = S3Resource(endpoint_url=endpoint, max_attempts=1, **S3_CREDENTIALS)
    return S3LandingZone(s3=s3, bucket=bucket, prefix=prefix)


@pytest.fixture
def zone_of(landing_root, request):
    """zone_of("local" | "s3"): the sample tree as that landing zone (S3: uploaded with upload_tree)."""

    def build(kind: str):
        if kind == "local":
            return LocalLandingZone(root=str(landing_root))
        client, bucket = request.getfixturevalue("s3_bucket")
        upload_tree(client, bucket, landing_root)
        return make_s3_zone(request.getfixturevalue("s3_endpoint"), bucket)

    return build


@pytest.fixture
def zones(zone_of) -> dict:
    return {"local": zone_of("local"), "s3": zone_of("s3")}


def keys(zone, prefix: str = "backup/", start_after: str = "") -> list[str]:
    return [f.key for f in zone.list_files(prefix, start_after=start_after)]


def tree_keys(root: Path) -> list[str]:
    """Every file, and every empty folder as 'folder/', computed from the file system directly."""
    found = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    found += [p.relative_to(root).as_posix() + "/" for p in root.rglob("*") if p.is_dir() and not any(p.iterdir())]
    return sorted(found)


def test_s3_landing_zone_accepts_an_s3_resource():
    """S3LandingZone(s3=S3Resource(...)) validates (a string-annotated ResourceDependency used to reject it)."""
    zone = S3LandingZone(s3=S3Resource(endpoint_url="http://127.0.0.1:9", **S3_CREDENTIALS), bucket="landing")
    assert zone.bucket == "landing"
    assert zone.s3.endpoint_url == "http://127.0.0.1:9"


def test_s3_landing_zone_builds_from_the_environment():
    """ETL_ASSETS_LANDING_ZONE=s3 gives an S3LandingZone with its nested S3Resource."""
    zone = build_landing_zone({"ETL_ASSETS_LANDING_ZONE": "s3", "ETL_ASSETS_LANDING_BUCKET": "landing"})
    assert isinstance(zone, S3LandingZone)
    assert isinstance(zone.s3, S3Resource)


def test_both_zones_list_the_same_keys_in_sorted_order(zones, landing_root):
    """Local and S3 list exactly the files of the tree, in key order, with their sizes."""
    expected = [k for k in tree_keys(landing_root) if k.startswith("backup/")]
    local, s3 = list(zones["local"].list_files("backup/")), list(zones["s3"].list_files("backup/"))
    assert [f.key for f in local] == [f.key for f in s3] == expected
    assert [f.size for f in local] == [f.size for f in s3]
    assert all(f.size == (landing_root / f.key).stat().st_size for f in local if not f.key.endswith("/"))


def test_empty_folders_are_listed_as_keys_ending_in_a_slash(zones):
    """The sample's empty middle folder shows up as one zero-size 'folder/' key in both zones."""
    for zone in zones.values():
        empty = [f for f in zone.list_files("backup/") if f.key.endswith("/")]
        assert [(f.key, f.size) for f in empty] == [("backup/20240503_Differential/", 0)]


START_AFTER = [
    "",
    "backup/20240501_Differential/Task/task_part1.csv",  # mid-folder, mid-object
    "backup/20240502_Differential0",  # the whole folder is done (the sensor's sentinel: '0' follows '/')
    "backup/20240503_Differential",  # just before the empty folder's marker
    "backup/20240503_Differential/",  # the empty folder's marker itself
    "backup/20240505_Differential0",  # past everything
]


@pytest.mark.parametrize(
    "kind, start_after",
    [(k, s) for k in ("local", "s3") for s in START_AFTER],
)
def test_start_after_skips_exactly_the_keys_up_to_it(zone_of, landing_root, kind, start_after):
    """Each zone lists exactly the keys > start_after, so a cursor can resume anywhere."""
    expected = [k for k in tree_keys(landing_root) if k.startswith("backup/") and k > start_after]
    assert keys(zone_of(kind), start_after=start_after) == expected


@pytest.mark.parametrize(
    "kind, start_after",
    [(k, "backup/20240502_Differential0") for k in ("local", "s3")],
)
def test_start_after_a_folder_skips_it_entirely(zone_of, kind, start_after):
    """Starting after a folder skips that folder and every older one, and nothing newer."""
    folders = sorted({k.split("/")[1] for k in keys(zone_of(kind), start_after=start_after)})
    assert folders == ["20240503_Differential", "20240504_Differential", "20240505_Differential"]


def test_local_scans_skip_directories_that_are_done(landing_root):
    """Starting after a folder, the local zone does not even open the folders before it."""
    everything, resumed = LocalLandingZone(root=str(landing_root)), LocalLandingZone(root=str(landing_root))
    keys(everything)
    keys(resumed, start_after="backup/20240504_Differential0")
    objects_in_0505 = len(list((landing_root / "backup/20240505_Differential").iterdir()))
    assert resumed.list_calls == 1 + 1 + objects_in_0505  # backup/, the folder, its object folders
    assert everything.list_calls > 3 * resumed.list_calls


def test_local_copy_gives_the_same_bytes(zones, landing_root):
    """local_copy yields a readable local path holding exactly the landed bytes."""
    key = "backup/20240504_Differential/Task/task_part2.csv"
    for zone in zones.values():
        with zone.local_copy(key) as path:
            assert path.read_bytes() == (landing_root / key).read_bytes()


def test_s3_local_copy_is_removed_afterwards(zones):
    """The S3 download lives only as long as the context."""
    with zones["s3"].local_copy("backup/20240501_Differential/Case/case_part1.csv") as path:
        assert path.stat().st_size > 0
    assert not path.exists()


def test_put_file_then_list_shows_it(zones, tmp_path):
    """A file put at a key is listed at that key with its size, and reads back identically."""
    source = tmp_path / "late.csv"
    source.write_bytes(b"Id,Subject\n00T000000000001AAA,Call back\n")
    key = "backup/20240506_Differential/Task/late.csv"
    for zone in zones.values():
        zone.put_file(key, source)
        listed = [(f.key, f.size) for f in zone.list_files("backup/20240506_Differential/")]
        assert listed == [(key, source.stat().st_size)]
        assert keys(zone)[-1] == key
        with zone.local_copy(key) as path:
            assert path.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("zone_prefix", ["exports", "exports/", "team/exports"])
def test_s3_prefix_is_stripped_from_keys(landing_root, s3_endpoint, s3_bucket, zone_prefix, tmp_path):
    """With a key prefix, S3 keys come back relative to it, exactly as the local zone lists them."""
    client, bucket = s3_bucket
    upload_tree(client, bucket, landing_root, prefix=zone_prefix.strip("/") + "/")
    client.put_object(Bucket=bucket, Key="backup/elsewhere.csv", Body=b"x")  # outside the prefix
    zone = make_s3_zone(s3_endpoint, bucket, prefix=zone_prefix)
    assert keys(zone) == keys(LocalLandingZone(root=str(landing_root)))
    resume = "backup/20240504_Differential0"
    assert keys(zone, start_after=resume) == keys(LocalLandingZone(root=str(landing_root)), start_after=resume)
    key = "backup/20240501_Differential/Task/task_part1.csv"
    with zone.local_copy(key) as path:
        assert path.read_bytes() == (landing_root / key).read_bytes()
    source = tmp_path / "new.csv"
    source.write_bytes(b"Id\n")
    zone.put_file("backup/20240509_Differential/Task/new.csv", source)
    stored = client.list_objects_v2(Bucket=bucket, Prefix=zone_prefix.strip("/") + "/backup/20240509")["Contents"]
    assert [o["Key"] for o in stored] == [zone_prefix.strip("/") + "/backup/20240509_Differential/Task/new.csv"]
    assert zone.location("backup/x.csv") == f"s3://{bucket}/{zone_prefix.strip('/')}/backup/x.csv"


def test_s3_zone_works_as_an_initialized_dagster_resource(zones):
    """Through build_resources (as assets and sensors get it) the S3 zone lists the same keys."""
    with dg.build_resources({"landing_zone": zones["s3"]}) as resources:
        assert keys(resources.landing_zone) == keys(zones["local"])
        assert resources.landing_zone.list_calls == 1  # one page of listing


@pytest.mark.parametrize(
    "kind",
    ["local", "s3"],
)
def test_listing_is_in_key_order_when_a_name_extends_a_folder_name(zone_of, landing_root, kind):
    """A file named like a folder plus '.zip' or '-old' sorts before that folder's contents, in both zones."""
    (landing_root / "backup/20240501_Differential.zip").write_bytes(b"zip")
    (landing_root / "backup/20240505_Differential/Task-old.csv").write_bytes(b"Id\n")
    listed = keys(zone_of(kind))
    assert listed == [k for k in tree_keys(landing_root) if k.startswith("backup/")]


def test_move_copies_large_files_in_parts(zones, s3_bucket, tmp_path):
    """A move is boto3's managed copy: above 8 MB it copies in parts (an ETag ending in -<parts>, where
    the file was put whole), the path that also moves files over copy_object's 5 GB limit; the bytes
    arrive and the source goes."""
    client, bucket = s3_bucket
    source = tmp_path / "big.csv"
    source.write_bytes(b"Id,Body\n" + b"00T000000000001AAA," + b"x" * (9 << 20) + b"\n")
    zones["local"].put_file("files/big.csv", source)
    client.put_object(Bucket=bucket, Key="files/big.csv", Body=source.read_bytes())
    assert "-" not in client.head_object(Bucket=bucket, Key="files/big.csv")["ETag"]
    for kind, zone in zones.items():
        zone.move("files/big.csv", "archive/files/big.csv")
        assert not zone.exists("files/big.csv") and zone.exists("archive/files/big.csv"), kind
        with zone.local_copy("archive/files/big.csv") as path:
            assert path.read_bytes() == source.read_bytes(), kind
    assert client.head_object(Bucket=bucket, Key="archive/files/big.csv")["ETag"].strip('"').endswith("-2")
