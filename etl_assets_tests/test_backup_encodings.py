"""A backup's encoding chosen by the settings, end to end (issue 24): one landing zone receiving a
Japanese org's Shift_JIS export in one folder and a UTF-16 one in another, next to UTF-8 folders;
every name lands as the right Unicode characters on each engine, and the materialization says which
encoding each folder was read in."""

from __future__ import annotations

from pathlib import Path

from etl_assets.landing.zone import LocalLandingZone
from etl_assets.salesforce.discovery import refresh_state
from etl_assets.samples.salesforce import salesforce_id
from etl_assets_tests.helpers import materialize_folders, resources

NAMES = {"20240501_Differential": ("utf-8", "Jos\u00e9 Pe\u00f1a M\u00fcller"),
         "20240502_Differential": ("shift_jis", "\u5c71\u7530\u592a\u90ce"),
         "20240503_Differential": ("utf-16", "\u00c9lodie \u5c71\u7530")}


def _backup(root: Path) -> None:
    for n, (folder, (encoding, name)) in enumerate(NAMES.items()):
        path = root / "backup" / folder / "Contact" / "contact.csv"
        path.parent.mkdir(parents=True)
        text = ('"Id","LastName","IsDeleted","SystemModstamp"\r\n'
                f'"{salesforce_id("003", n + 1)}","{name}","false","2024-05-0{n + 1} 06:32:11"\r\n')
        path.write_bytes(text.encode(encoding))


def test_each_folder_is_read_in_its_configured_encoding(tmp_path, monkeypatch, warehouse):
    root = tmp_path / "landing"
    _backup(root)
    monkeypatch.setenv("ETL_ASSETS_SALESFORCE_FOLDER_ENCODINGS", "20240502_*=shift_jis; 20240503_*=utf-16")
    state = tmp_path / "discovered.yaml"
    assert refresh_state(LocalLandingZone(root=str(root)), state, declared={"Contact"})["unreadable"] == []
    results = materialize_folders(list(NAMES), resources(LocalLandingZone(root=str(root)), warehouse),
                                  objects=["Contact"])
    assert all(r.success for r in results)
    encodings = [m.step_materialization_data.materialization.metadata["encoding"].value
                 for r in results for m in r.get_asset_materialization_events()]
    assert encodings == ["utf-8", "shift_jis", "utf-16"]
    got = dict(warehouse.query("SELECT _source_partition, lastname FROM salesforce.contact"))
    assert got == {folder: name for folder, (_, name) in NAMES.items()}
