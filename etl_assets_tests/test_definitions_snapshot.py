"""A snapshot of the code location: every asset key and its group, every asset check, every job
with its selection, every sensor and schedule, one sorted line each, in fixtures/definitions_snapshot.txt.

An accidental change (an asset renamed or regrouped, a check or a job's asset gone, a sensor's
target or a schedule's cron changed) fails with a diff. The snapshot is built from
`etl_assets.definitions.defs` in a fresh interpreter with no ETL_ASSETS_* or DAGSTER_* variable:
the default environment, so the Salesforce assets are catalog.yaml's objects plus the repo's
discovered.yaml. When the change is meant, regenerate it and commit the file:

    ETL_ASSETS_UPDATE_SNAPSHOT=1 .venv/bin/python -m pytest etl_assets_tests/test_definitions_snapshot.py
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from pathlib import Path

from etl_assets_tests import live

SNAPSHOT = Path(__file__).parent / "fixtures" / "definitions_snapshot.txt"
UPDATE_ENV = "ETL_ASSETS_UPDATE_SNAPSHOT"
REGENERATE = f"{UPDATE_ENV}=1 .venv/bin/python -m pytest etl_assets_tests/test_definitions_snapshot.py"
HEADER = ["# The etl_assets code location in the default environment; one line per item, sorted.",
          f"# Written by etl_assets_tests/test_definitions_snapshot.py; regenerate with: {REGENERATE}"]


def describe() -> list[str]:
    """The snapshot's lines for the code location loaded in this interpreter."""
    from etl_assets.definitions import defs

    repository = defs.get_repository_def()
    graph = defs.resolve_asset_graph()
    lines = []
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        partitions = f" partitions={node.partitions_def.name}" if getattr(node.partitions_def, "name", None) else ""
        lines.append(f"asset {key.to_user_string()} group={node.group_name}{partitions}")
    lines += [f"check {check.asset_key.to_user_string()} {check.name}" for check in graph.asset_check_keys]

    def selection(job_name: str) -> list[str]:
        job = repository.get_job(job_name)
        keys = sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys)
        return keys or sorted(f"op {node.name}" for node in job.graph.node_defs)

    for job in repository.get_all_jobs():
        if not job.name.startswith("__"):  # the implicit asset job and sensors' anonymous jobs
            lines += [f"job {job.name} {item}" for item in selection(job.name)]
    for sensor in repository.sensor_defs:
        lines.append(f"sensor {sensor.name} {type(sensor).__name__} default={sensor.default_status.value} "
                     f"interval={sensor.minimum_interval_seconds}s")
        for target in sensor.targets:
            items = selection(target.job_name) if target.job_name.startswith("__") else [f"job {target.job_name}"]
            lines += [f"sensor {sensor.name} targets {item}" for item in items]
        if sensor.asset_selection is not None:
            lines += [f"sensor {sensor.name} evaluates {k.to_user_string()}"
                      for k in sensor.asset_selection.resolve(graph)]
    for schedule in repository.schedule_defs:
        lines.append(f"schedule {schedule.name} cron={schedule.cron_schedule} job={schedule.job_name} "
                     f"timezone={schedule.execution_timezone or 'UTC'} default={schedule.default_status.value}")
    return sorted(set(lines))


def current() -> list[str]:
    """describe() in a fresh interpreter with the default environment (nothing this session imported)."""
    code = "from etl_assets_tests.test_definitions_snapshot import describe; print('\\n'.join(describe()))"
    done = subprocess.run([sys.executable, "-c", code], cwd=live.REPO, env=live.environment(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def test_the_code_location_matches_its_snapshot():
    lines = current()
    assert any(line.startswith("asset salesforce/") for line in lines) and any(
        line.startswith("schedule ") for line in lines), lines[:20]
    if os.environ.get(UPDATE_ENV) == "1":
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text("\n".join(HEADER + lines) + "\n", encoding="utf-8")
    recorded = [line for line in SNAPSHOT.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    diff = "\n".join(difflib.unified_diff(recorded, lines, "snapshot", "code location", n=0, lineterm=""))
    assert not diff, (f"the code location differs from {os.path.relpath(SNAPSHOT, live.REPO)} ('-' recorded, '+' now). "
                      f"If the change is meant, regenerate it with `{REGENERATE}` and commit the file.\n{diff}")
