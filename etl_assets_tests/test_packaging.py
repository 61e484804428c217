"""Installs come from uv.lock exactly (issue 27): a dependency changed in pyproject.toml without
`make lock` stops every make target before it installs anything, saying what to run."""

import shutil
import subprocess

from etl_assets_tests.helpers import REPO


def test_a_pin_changed_without_relocking_stops_make_with_the_command_to_run(tmp_path):
    for name in ("Makefile", "pyproject.toml", "uv.lock", "setup.cfg", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / ".venv-tools").symlink_to(REPO / ".venv-tools")  # make test made it; its uv is what runs
    pyproject = (tmp_path / "pyproject.toml").read_text()
    assert '"duckdb>=2.0,<2.1"' in pyproject  # the lock holds a 2.0.x; the new pin excludes it
    (tmp_path / "pyproject.toml").write_text(pyproject.replace('"duckdb>=2.0,<2.1"', '"duckdb>=1.3,<2.0"', 1))

    stale = subprocess.run(["make", "-C", str(tmp_path), "install-run"], capture_output=True, text=True, timeout=300)
    assert stale.returncode != 0
    assert "uv.lock does not match pyproject.toml: run 'make lock' and commit uv.lock" in stale.stderr, stale.stderr
    assert not (tmp_path / ".venv").exists(), "nothing installed from a stale lock"

    (tmp_path / "pyproject.toml").write_text(pyproject)  # the lock matches again: the check passes
    fresh = subprocess.run([str(tmp_path / ".venv-tools/bin/uv"), "lock", "--check", "--quiet"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr
