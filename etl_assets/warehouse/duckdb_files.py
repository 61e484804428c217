"""Opening a DuckDB file that another process may be writing, and a transaction on it.

DuckDB allows one writing process per file; a second one gets an IOException
about the lock. Waiting for it, with backoff and a deadline, is what every user of
a shared DuckDB file here wants (the warehouse, the embedded totesys source).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from etl_assets.warehouse.errors import roll_back

# The longest sleep between two attempts. A writer holds the file for one step's load (~0.1 s for a
# small object): sleeping up to 2 s after it let go left the file idle for longer than the loads took.
# A failed attempt costs well under a millisecond.
MAX_WAIT_INTERVAL_SECONDS = 0.25
WAIT_REPORT_SECONDS = 30
# DuckDB's lock error names the holder: "Conflicting lock is held in /usr/bin/python3 (PID 1234)".
_LOCK_HOLDER = re.compile(r"held in .*?\(PID \d+\)")


def connect_waiting(path: str, timeout_seconds: float, read_only: bool = False,
                    config: dict | None = None) -> duckdb.DuckDBPyConnection:
    """Open `path`, waiting up to `timeout_seconds` while another process holds its writer lock. A wait
    past a second says so (the run's log in the UI and the CLI's output, through Dagster's logger),
    naming the process DuckDB says holds the lock, then again every WAIT_REPORT_SECONDS."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    deadline, next_report = started + timeout_seconds, started + 1.0
    delay = 0.05
    while True:
        try:
            return duckdb.connect(path, read_only=read_only, config=config or {})
        except duckdb.IOException as error:
            now = time.monotonic()
            if "lock" not in str(error).lower() or now > deadline:
                raise
            if now >= next_report:
                holder = _LOCK_HOLDER.search(str(error))
                dg.get_dagster_logger().warning(
                    f"waiting for the DuckDB warehouse {path}: another process holds its writer lock"
                    f"{f' ({holder.group(0)})' if holder else ''}; waited {now - started:.0f} s of {timeout_seconds:.0f} s")
                next_report = now + WAIT_REPORT_SECONDS
            time.sleep(delay)
            delay = min(delay * 2, MAX_WAIT_INTERVAL_SECONDS)


@contextmanager
def transaction(connection: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Commit when the block ends, roll back if it raises; the connection is closed either way."""
    try:
        connection.begin()
        yield connection
        connection.commit()
    except BaseException as error:
        roll_back(connection, error)  # a failed commit already ended the transaction: its error is the one raised
        raise
    finally:
        connection.close()
