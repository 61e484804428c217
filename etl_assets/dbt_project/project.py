"""The dbt project, in a module of its own so `dagster-dbt project prepare-and-package` and
the CLI can build the manifest before the @dbt_assets module is imported."""

import fcntl
import functools
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject
from packaging import version  # dagster-dbt depends on it and compares these versions

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt"


def dbt_executable() -> str:
    """The venv's dbt, found even when the venv is not activated (`.venv/bin/python -m pytest`)."""
    beside_python = Path(sys.executable).with_name("dbt")
    return str(beside_python) if beside_python.exists() else "dbt"


@functools.cache
def dbt_cli_version(executable: str) -> version.Version:
    """The version of the dbt at `executable`: the installed dbt-core's when it is this venv's dbt, else
    what `dbt --version` prints, asked once a process."""
    if Path(executable) == Path(sys.executable).with_name("dbt"):
        return version.parse(importlib.metadata.version("dbt-core"))
    printed = subprocess.check_output([executable, "--version"], text=True)
    match = re.search(r"(\d+\.\d+\.\d+)", printed)
    if not match:
        raise ValueError(f"Could not parse dbt version from output: {printed}")
    return version.parse(match.group(1))


class DbtCli(DbtCliResource):
    """dagster-dbt's DbtCliResource, without a `dbt --version` before every command nor a dbt adapter
    opened in this process for each. dagster-dbt asks
    the executable for its version (to tell dbt Core from the Fusion engine) once a resource instance,
    and Dagster builds the resource anew for every run: each dbt build ran `dbt --version` first,
    about 3 s of CPU that also asks PyPI for dbt's latest release. Here the version is the installed
    dbt-core's when the executable is the venv's own dbt, and is asked once a process otherwise."""

    @property
    def _cli_version(self) -> version.Version:
        return dbt_cli_version(self.dbt_executable)

    def _initialize_dbt_core_adapter(self, args):
        """No dbt adapter in this process. dagster-dbt opens one (importing the adapter and loading
        every macro, ~2 s of CPU a command) only for `.fetch_row_counts()` and
        `.fetch_column_metadata()`, which no asset here calls; with none, those would attach nothing.
        An asset that wants them takes a plain DbtCliResource."""
        return None


dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def prepare_manifest(project: DbtProject = dbt_project) -> Path:
    """`dbt parse` into target/manifest.json (what @dbt_assets reads), once for processes that start
    together (pytest-xdist workers, `dagster dev`'s servers, the CLI): one parses under a lock, in a
    folder of its own, and moves the manifest into place in one rename, so no process reads a
    half-written file and the others, after waiting, find it fresh and parse nothing."""
    target = project.project_dir / project.target_path
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".manifest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if manifest_is_stale(project):
            with tempfile.TemporaryDirectory(dir=target, prefix=".parse-") as scratch:
                DbtCli(project_dir=project, dbt_executable=dbt_executable()).cli(
                    ["parse", "--quiet"], target_path=Path(scratch)
                ).wait()
                os.replace(Path(scratch) / "manifest.json", project.manifest_path)
    return project.manifest_path


def manifest_is_stale(project: DbtProject = dbt_project) -> bool:
    """No manifest yet (a fresh clone), or a project file changed since it was built."""
    if not project.manifest_path.exists():
        return True
    built = project.manifest_path.stat().st_mtime
    sources = [project.project_dir / "dbt_project.yml", project.project_dir / "profiles.yml"]
    for folder in ("models", "macros", "seeds", "tests"):
        sources += [p for p in (project.project_dir / folder).rglob("*") if p.is_file()]
    return any(p.stat().st_mtime > built for p in sources if p.exists())


# The manifest is rebuilt when it is missing (a fresh clone) or older than the project's files (a
# model edited under `dagster dev` shows up on the next reload). Not `prepare_if_dev()`: under
# `dagster dev` it re-parsed in every run and step process too, ~7 s of CPU each.
if manifest_is_stale():
    prepare_manifest()
