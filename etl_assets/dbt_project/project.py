"""The dbt project, in a module of its own so `dagster-dbt project prepare-and-package` and
the CLI can build the manifest before the @dbt_assets module is imported."""

import dataclasses
import fcntl
import functools
import hashlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from dagster_dbt import DbtCliInvocation, DbtCliResource, DbtProject
from packaging import version  # dagster-dbt depends on it and compares these versions

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt"
PARTIAL_PARSE = "partial_parse.msgpack"
# Saved parses kept in target/partial_parse/ (one per profile, ~1 MB each): the most recently used.
SAVED_PARSES = 8


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
    opened in this process for each, and without a full parse of the project by each (`cli`). dagster-dbt asks
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

    def cli(self, args, *, raise_on_error=True, manifest=None, dagster_dbt_translator=None, context=None,
            target_path=None) -> DbtCliInvocation:
        """dagster-dbt's command, starting from the parse the last command on the same profile saved.

        dagster-dbt gives each command a target folder of its own, so dbt never finds the
        partial_parse.msgpack an earlier command wrote there and parses the whole project again (~3 s of
        CPU a command). Here the command's folder starts with the parse saved for its profile (the
        target, the profile's name and the variables the profile reads), and the parse it writes is saved
        for the next command, whether it succeeds or fails. dbt itself checks that a saved parse still
        matches the project files, the profile and its variables, and parses again when not."""
        name = uuid.uuid4().hex[:7]
        if context is not None:
            name = f"{context.op_execution_context.op.name}-{context.run.run_id[:7]}-{name}"
        target_path = target_path or Path(os.getenv("DBT_TARGET_PATH", "target"), name)
        folder = target_path if target_path.is_absolute() else Path(self.project_dir, target_path)
        saved = saved_parse_path(Path(self.project_dir), self.profiles_dir, self.profile, self.target)
        if saved.exists():
            folder.mkdir(parents=True, exist_ok=True)
            _copy_replacing(saved, folder / PARTIAL_PARSE)
        invocation = super().cli(args, raise_on_error=raise_on_error, manifest=manifest,
                                 dagster_dbt_translator=dagster_dbt_translator, context=context,
                                 target_path=target_path)
        given = {f.name: getattr(invocation, f.name) for f in dataclasses.fields(invocation) if f.init}
        return ParseSavingInvocation(**given, saved_parse=saved)


@dataclasses.dataclass
class ParseSavingInvocation(DbtCliInvocation):
    """A dbt command that, once its process has ended, saves the parse it wrote (`saved_parse`)."""

    saved_parse: Path | None = None

    def stream_raw_events(self) -> Iterator:
        try:
            yield from super().stream_raw_events()
        finally:
            self.save_parse()

    def save_parse(self) -> None:
        written = self.target_path / PARTIAL_PARSE
        if self.saved_parse is None or self.process.poll() is None or not written.exists():
            return
        self.saved_parse.parent.mkdir(parents=True, exist_ok=True)
        _copy_replacing(written, self.saved_parse)
        kept = sorted(self.saved_parse.parent.glob(f"*{PARTIAL_PARSE}"), key=_mtime_or_zero, reverse=True)
        for old in kept[SAVED_PARSES:]:
            old.unlink(missing_ok=True)


def saved_parse_path(project_dir: Path, profiles_dir: str | None, profile: str | None, target: str | None) -> Path:
    """Where the parse of commands on this profile is saved: target/partial_parse/<key>-partial_parse.msgpack,
    keyed by the profiles' folder, the profile's name, the target and the variables dbt's profile and
    project can read here."""
    read = sorted((k, v) for k, v in os.environ.items() if k.startswith(("ETL_ASSETS_", "DBT_")))
    key = hashlib.sha256(repr((profiles_dir, profile, target, read)).encode()).hexdigest()[:16]
    return project_dir / "target" / "partial_parse" / f"{key}-{PARTIAL_PARSE}"


def _copy_replacing(source: Path, destination: Path) -> None:
    """Copy in one rename: a process reading `destination` meanwhile reads the old file or the new one, whole."""
    with tempfile.NamedTemporaryFile(dir=destination.parent, prefix=f".{destination.name}.", delete=False) as copy:
        with open(source, "rb") as original:
            copy.write(original.read())
    os.replace(copy.name, destination)


def _mtime_or_zero(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


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
