"""Installs come from uv.lock exactly (issue 27): a dependency changed in pyproject.toml without
`make lock` stops every make target before it installs anything, saying what to run. The wheel holds
the product alone (etl_assets/), and `etl-assets bench` runs the repository's benchmarks only where the
project is installed for development (issue 26)."""

import os
import shutil
import subprocess
import sys
import zipfile

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


def test_the_wheel_holds_the_product_and_neither_benchmarks_nor_tests(tmp_path):
    for name in ("pyproject.toml", "etl_assets", "benchmarks", "etl_assets_tests"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, tmp_path / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                               if (REPO / name).is_dir() else {}))
    built = subprocess.run([str(REPO / ".venv-tools/bin/uv"), "build", "--wheel", "--quiet", "-o", str(tmp_path / "dist")],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("etl_assets-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"etl_assets", wheel.name.split("-py3")[0] + ".dist-info"}
    assert not [n for n in names if n.startswith("etl_assets/tools/bench/")], "the benchmarks are not in the product"
    for shipped in ("etl_assets/cli/__init__.py", "etl_assets/samples/salesforce.py", "etl_assets/salesforce/catalog.yaml",
                    "etl_assets/totesys/schema.sql"):
        assert shipped in names
    entry_points = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-py3')[0]}.dist-info/entry_points.txt").decode()
    assert "etl-assets = etl_assets.cli:main" in entry_points


def test_bench_runs_from_the_development_install_wherever_it_is_started(tmp_path):
    """The editable install maps etl_assets/ alone; `bench` finds benchmarks/ beside it, not on the working directory."""
    helped = subprocess.run([sys.executable, "-m", "etl_assets.cli", "bench", "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: etl-assets bench")


def test_bench_where_etl_assets_is_installed_without_the_repository_exits_2_saying_to_use_make_bench(tmp_path):
    installed = tmp_path / "site-packages"
    shutil.copytree(REPO / "etl_assets", installed / "etl_assets", ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import sys, etl_assets; assert etl_assets.__file__.startswith(sys.argv[1]), etl_assets.__file__; "
            "from etl_assets.cli import main; sys.exit(main(['bench', '--rows', '10']))")
    refused = subprocess.run([sys.executable, "-c", code, str(installed)], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(installed)})
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip() == ("etl-assets: the benchmarks are not part of the installed package: run them "
                                      "from the repository, installed for development, with `make bench`")
