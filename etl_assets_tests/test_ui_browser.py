"""The Dagster UI in a real browser: `dagster dev` as `make dev` runs it, driven by clicks.

Headless Chromium from Debian's packages (/usr/bin/chromium), driven by Playwright with
`executable_path` (Playwright's own browser download is not used). The test starts `dagster dev`
from the repository root against a temporary DAGSTER_HOME (deploy/dagster.local.yaml), a temporary
landing zone and a temporary DuckDB warehouse, then through the UI:

1. the asset graph shows every group with its number of assets, and the catalog, filtered by
   group, lists every asset of every domain (salesforce, files, totesys, dbt);
2. the launch dialog materializes one Salesforce object (Account) for one folder;
3. the partitions view launches a backfill of Task over two folders;
4. the run and the backfill succeed (the pages say so), the materialization shows its row
   count and preview;
5. the asset check that fails on the sample data (`no_schema_drift` on Task: the newest folder
   holds a column the catalog does not know) shows Failed and its reason.

Screenshots of each step go to ETL_ASSETS_UI_SCREENSHOTS (default: the test's temporary
directory, printed). With ETL_ASSETS_UPDATE_SCREENSHOTS=1 the asset graph picture is also written
to docs/images/asset-graph.png (the README's). On failure: a screenshot and the tail of the
`dagster dev` log.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections import defaultdict
from pathlib import Path

import dagster as dg
import pytest

from etl_assets.salesforce.partitions import differential_folders
from etl_assets_tests import live
from etl_assets.samples.salesforce import generate_sample
from etl_assets_tests.helpers import LOCAL_YAML, diagnosed, wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# What works headless with Debian's chromium on this machine kind (see ../shared/README.md).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
README_PICTURE = REPO / "docs" / "images" / "asset-graph.png"

ONE_FOLDER = "20240501_Differential"
# Two neighbouring folders (the empty one, then the newest): the backfill is one run over their range, so
# Task's newest check results are the drift folder's. Two runs (folders apart) finish in either order,
# and the check's latest result was then the other folder's ("Not evaluated" for the newest materialization).
TWO_FOLDERS = ["20240502_Differential", "20240503_Differential"]
DRIFT_FOLDER = "20240503_Differential"  # the sample's newest folder: Task has a column not in the catalog
DRIFT_COLUMN = "legacy_reference__c"

STARTUP_TIMEOUT = 180  # `dagster dev` with a dbt parse takes 20-40 s here
RUNS_TIMEOUT = 300  # two runs one after another (pool limit 1), each ~30 s under `dagster dev`


def dagster_dev(root: Path, services: list) -> live.Server:
    """`dagster dev` as `make dev` runs it, on a temporary instance, landing zone and warehouse, serving
    the code location; every sensor and schedule stopped once each sensor has ticked (on an empty
    landing zone), so that only what the test launches runs."""
    home, landing = root / "dagster_home", root / "landing"
    home.mkdir()
    landing.mkdir()
    shutil.copy(LOCAL_YAML, home / "dagster.yaml")
    env = live.environment(landing=landing, home=home, **live.duckdb_warehouse(root / "warehouse.duckdb"),
                           ETL_ASSETS_TOTESYS_SOURCE="duckdb",
                           ETL_ASSETS_TOTESYS_DUCKDB_PATH=str(root / "totesys.duckdb"))
    dev = live.Server("dagster_dev", env, root, kind="dagster")
    services.append(dev)
    dev.wait_loaded(STARTUP_TIMEOUT)
    dev.stopped = live.stop_instigators(dev.url, first_tick_timeout=90)
    return dev


def expected_groups() -> dict[str, set[str]]:
    """Every asset of the code location by group, spelled as the UI spells keys ("a / b")."""
    from etl_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    groups: dict[str, set[str]] = defaultdict(set)
    for key in graph.get_all_asset_keys():
        groups[graph.get(key).group_name].add(" / ".join(key.path))
    return dict(groups)


def run_folders(run: dict, folders: list[str]) -> list[str]:
    """The folders a run loads: its partition, or the range of a backfill run (in partition order)."""
    tags = {t["key"]: t["value"] for t in run["tags"]}
    if "dagster/partition" in tags:
        return [tags["dagster/partition"]]
    first = folders.index(tags["dagster/asset_partition_range_start"])
    return folders[first:folders.index(tags["dagster/asset_partition_range_end"]) + 1]


def test_the_ui_shows_every_domain_launches_a_run_and_a_backfill_and_explains_a_failed_check(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Debian's Chromium is not installed ({CHROMIUM} is missing); the UI test needs it. Install it with "
            "`apt-get update && apt-get install -y --no-install-recommends chromium` (.ci/run does this). "
            "Playwright's own browser download is not used."
        )
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("ETL_ASSETS_UI_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {shots}")
    groups = expected_groups()
    assert {"salesforce", "files", "totesys", "totesys_star", "salesforce_marts"} <= set(groups)

    started = time.monotonic()
    home = tmp_path / "dagster_home"
    with diagnosed(home) as services:
        dev = dagster_dev(tmp_path, services)
        ui = dev.base_url
        print(f"{time.monotonic() - started:6.1f} s  dagster dev serves the code location")
        dev.query("mutation { setNuxSeen }")  # the community modal would cover the page on a first visit
        assert "salesforce_backup_sensor" in dev.stopped and "totesys_extract_schedule" in dev.stopped
        # Sample backups land only now, with every sensor stopped; their folders become partitions.
        sample = generate_sample(tmp_path / "landing", folders=3, rows=20, seed=11)
        assert list(sample) == ["20240501_Differential", "20240502_Differential", DRIFT_FOLDER]
        with dg.DagsterInstance.from_config(str(home)) as instance:
            instance.add_dynamic_partitions(differential_folders.name, list(sample))

        with sync_playwright() as playwright:
            # Playwright gives the browser a temporary profile of its own (its --user-data-dir).
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)  # generous: the machine may be busy with other work
            expect.set_options(timeout=60_000)

            def shot(name: str) -> Path:
                path = shots / f"{name}.png"
                page.screenshot(path=str(path))
                print(f"{time.monotonic() - started:6.1f} s  {name}")
                return path

            try:
                # 1. The asset graph: every group, with its number of assets.
                page.goto(f"{ui}/asset-groups")
                expect(page.get_by_text("Global asset lineage")).to_be_visible()
                for group, keys in groups.items():  # each group node: its name, then its number of assets
                    wait_for(lambda: re.search(rf"^{group}\n{len(keys)}$", page.inner_text("body"), re.M), 30,
                               f"the graph's {group} group with {len(keys)} assets", interval=0.5)
                picture = shot("01-asset-graph")
                if os.environ.get("ETL_ASSETS_UPDATE_SCREENSHOTS") == "1":
                    README_PICTURE.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(picture, README_PICTURE)

                # ... and the catalog, filtered by group, lists every asset of each domain.
                page.set_viewport_size({"width": 1600, "height": 3200})  # the table renders what fits
                for group, keys in sorted(groups.items()):
                    page.get_by_role("link", name="Catalog").click()
                    search = page.locator(".CodeMirror").first
                    search.click()
                    page.keyboard.press("Control+A")
                    page.keyboard.type(f'group:"{group}"')
                    page.keyboard.press("Enter")
                    expect(page).to_have_url(re.compile(r"asset-selection=group"))
                    for key in sorted(keys):
                        link = page.locator(f'a[href="/assets/{key.replace(" / ", "/")}"]').first
                        expect(link).to_be_visible()
                        expect(link).to_contain_text(key)
                    shot(f"02-catalog-{group}")
                page.set_viewport_size({"width": 1600, "height": 1000})

                # 2. One Salesforce object, one folder, through the launch dialog.
                page.goto(f"{ui}/assets/salesforce/account")
                page.get_by_role("button", name="Materialize…").click()
                dialog = page.locator(".dagster-dialog")
                expect(dialog.get_by_text("Launch runs to materialize salesforce / account")).to_be_visible()
                dialog.get_by_text("Select a partition or create one").click()
                page.locator(".dagster-popover").get_by_role("menuitem").filter(has_text=ONE_FOLDER).click()
                dialog.get_by_text("Launch runs to materialize salesforce / account").click()  # close the list
                expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
                shot("03-launch-one-partition")
                dialog.get_by_role("button", name="Launch 1 run").click()
                expect(page.get_by_text(re.compile(r"Launched run \w+"))).to_be_visible()
                run_link = page.get_by_role("link", name="View", exact=True).first
                run_href = run_link.get_attribute("href")
                assert run_href and run_href.startswith("/runs/"), run_href
                shot("04-run-launched")

                # 3. A backfill of two folders from the partitions view.
                page.goto(f"{ui}/assets/salesforce/task?view=partitions")
                expect(page.get_by_text("Missing (3)")).to_be_visible()
                page.get_by_role("button", name="Materialize…").click()
                expect(dialog.get_by_text("Launch runs to materialize salesforce / task")).to_be_visible()
                dialog.get_by_text("Select a partition or create one").click()
                for folder in TWO_FOLDERS:
                    page.locator(".dagster-popover").get_by_role("menuitem").filter(has_text=folder).click()
                dialog.get_by_text("Launch runs to materialize salesforce / task").click()
                expect(dialog.get_by_text("2 partitions", exact=True)).to_be_visible()
                shot("05-launch-backfill")
                dialog.get_by_role("button", name="Launch backfill").click()
                toast = page.get_by_text(re.compile(r"Created backfill \w+"))
                expect(toast).to_be_visible()
                backfill_id = toast.inner_text().split()[-1]

                # 4. Wait for success, then see it in the UI.
                backfill = live.wait_backfill(dev.url, backfill_id, RUNS_TIMEOUT, services)
                runs = wait_for(lambda: (r := live.runs(dev.url)) and all(x["status"] in live.RUN_FINISHED for x in r)
                                and r, RUNS_TIMEOUT, "every run to finish", 2.0, services)
                assert backfill["status"] in ("COMPLETED_SUCCESS", "COMPLETED"), backfill
                # The UI's two runs, nothing else: the launched one, and the backfill's one run over its range.
                assert [r["status"] for r in runs] == ["SUCCESS"] * 2, runs
                # A backfill run covers a range of folders (the assets' BackfillPolicy); a launched run one folder.
                partitions = sorted(folder for r in runs for folder in run_folders(r, list(sample)))
                assert partitions == sorted([ONE_FOLDER, *TWO_FOLDERS]), partitions

                page.goto(f"{ui}/runs/b/{backfill_id}")
                expect(page.get_by_text(re.compile(r"^(Succeeded|Completed)$")).first).to_be_visible()
                expect(page.get_by_text("100% completed")).to_be_visible()
                shot("06-backfill-completed")
                page.goto(ui + run_href)
                expect(page.get_by_text("Success", exact=True).first).to_be_visible()
                shot("07-run-succeeded")

                # The materialization carries its row count, table schema and a preview of the rows.
                page.goto(f"{ui}/assets/salesforce/task?view=partitions")
                expect(page.get_by_text("Materialized (2)")).to_be_visible()
                page.get_by_text(DRIFT_FOLDER, exact=True).first.click()
                for key in ("dagster/row_count", "dagster/column_schema", "preview", "rows_loaded", "schema_drift"):
                    expect(page.get_by_text(key, exact=True).first).to_be_visible()
                shot("08-materialization-metadata")
                page.get_by_text("[Show Markdown]").first.click()  # the preview: the first staged rows
                preview = page.locator(".dagster-dialog")
                expect(preview.get_by_role("table")).to_be_visible()
                expect(preview.get_by_role("columnheader", name="_source_partition")).to_be_visible()
                expect(preview.get_by_role("cell", name=DRIFT_FOLDER).first).to_be_visible()
                shot("09-materialization-preview")
                page.keyboard.press("Escape")
                expect(preview).to_have_count(0)

                # 5. The check that failed, and why.
                page.get_by_text("Checks", exact=True).first.click()
                page.get_by_text("no_schema_drift", exact=True).first.click()
                expect(page).to_have_url(re.compile(r"checkDetail=no_schema_drift"))
                expect(page.get_by_text("Failed", exact=True).first).to_be_visible()
                reason = page.get_by_text(re.compile(rf"not in the catalog: {DRIFT_COLUMN}")).first
                expect(reason).to_be_visible()
                assert DRIFT_FOLDER in reason.inner_text()
                shot("10-failed-check-reason")
            except BaseException:
                print(f"failure screenshot: {shot('failure')}; page: {page.url}")
                raise
            finally:
                browser.close()
