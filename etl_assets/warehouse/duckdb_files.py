"""Opening a DuckDB file that another process may be writing, and a transaction on it.

DuckDB allows one writing process per file; a second one gets an IOException
about the lock. Waiting for it, with backoff and a deadline, is what every user of
a shared DuckDB file here wants (the warehouse, the embedded totesys source).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from etl_assets.warehouse.base import roll_back

# The longest sleep between two attempts. A writer holds the file for one step's load (~0.1 s for a
# small object): sleeping up to 2 s after it let go left the file idle for longer than the loads took.
# A failed attempt costs well under a millisecond.
MAX_WAIT_INTERVAL_SECONDS = 0.25


def connect_waiting(path: str, timeout_seconds: float, read_only: bool = False,
                    config: dict | None = None) -> duckdb.DuckDBPyConnection:
    """Open `path`, waiting up to `timeout_seconds` while another process holds its writer lock."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_seconds
    delay = 0.05
    while True:
        try:
            return duckdb.connect(path, read_only=read_only, config=config or {})
        except duckdb.IOException as error:
            if "lock" not in str(error).lower() or time.monotonic() > deadline:
                raise
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
