"""PostgreSQL: writing rewritten tables anew so the values they replaced leave the server's files.

`VACUUM FULL` copies a table into new files and removes the old ones, but it copies a dead row version
too while a transaction that began before the rewrite committed may still read it (VACUUM's "dead row
versions cannot be removed yet"): a report, an ANALYZE (autovacuum's too), a session left idle in a
transaction. So each table's VACUUM reports how many it kept (VERBOSE); when some were kept, the
command waits for the transactions older than itself and writes those tables again each time one of
them ends. If they do not end in time it says which ones hold the old versions, rather than claiming
the values are gone.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from etl_assets.warehouse.errors import SpaceNotReclaimed
from etl_assets.warehouse.spec import quote

_KEPT = re.compile(r"(\d+) dead row versions cannot be removed yet")
WAIT_SECONDS = 300.0  # how long a reclaim waits, in all, for older transactions to end
POLL_SECONDS = 0.5  # how often the transactions that hold the old versions are looked at while waiting


@dataclass(frozen=True)
class Holder:
    """A transaction that began before the reclaim and may still read the replaced row versions."""
    pid: int
    database: str | None
    application: str | None
    since: object

    def __str__(self) -> str:
        return (f"pid {self.pid} ({self.application or 'no application name'}, database {self.database}, "
                f"in a transaction since {self.since})")


def _holders(cursor, started) -> list[Holder]:
    """Every other session whose transaction (or snapshot) began before `started`."""
    cursor.execute("SELECT pid, datname, application_name, xact_start FROM pg_stat_activity "
                   "WHERE pid <> pg_backend_pid() AND xact_start < %s "
                   "AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL) ORDER BY xact_start", [started])
    return [Holder(*row) for row in cursor.fetchall()]


def _vacuum_full(connection, cursor, schema: str, name: str) -> int:
    """VACUUM FULL one table; the dead row versions it had to keep."""
    del connection.notices[:]
    cursor.execute(f"VACUUM (FULL, VERBOSE) {quote(schema)}.{quote(name)}")
    return sum(int(m.group(1)) for notice in connection.notices for m in _KEPT.finditer(notice))


def vacuum_full(connection, tables: Sequence[tuple[str, str]], wait_seconds: float,
                on_wait: Callable[[str], None] | None = None) -> str:
    """VACUUM FULL each table on `connection` (autocommit); a table that kept dead row versions is written
    again each time a transaction older than this call ends, for at most `wait_seconds` in all (`on_wait`
    is told, as a line of text, whom it waits for, each time that changes). Returns what it did; raises
    SpaceNotReclaimed naming the tables and the transactions still holding their old versions."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        [(started,)] = cursor.fetchall()
        deadline = time.monotonic() + wait_seconds
        kept: dict[tuple[str, str], int] = {}
        for schema, name in tables:
            kept[(schema, name)] = _vacuum_full(connection, cursor, schema, name)
        waited_for: list[Holder] = []
        while any(kept.values()) and time.monotonic() < deadline:
            holders = _holders(cursor, started)
            if len(holders) < len(waited_for) or not holders:  # one has ended: write the tables again
                for table in [t for t, count in kept.items() if count]:
                    kept[table] = _vacuum_full(connection, cursor, *table)
                if not holders or not any(kept.values()):
                    break  # done, or nobody older is left to wait for
            if holders != waited_for and on_wait is not None:
                on_wait("waiting for the transactions that may still read the replaced row versions to end: "
                        + "; ".join(map(str, holders)))
            waited_for = holders
            time.sleep(POLL_SECONDS)
        names = ", ".join(f"{schema}.{name}" for schema, name in tables)
        still = {t: count for t, count in kept.items() if count}
        if still:
            holders = _holders(cursor, started)
            listed = ", ".join(f"{schema}.{name} ({count:,})" for (schema, name), count in still.items())
            why = ("; held by " + "; ".join(map(str, holders)) if holders else
                   "; no older transaction is open: a replication slot or a prepared transaction may hold them")
            raise SpaceNotReclaimed(
                f"VACUUM FULL {names}: replaced row versions are still in the files of {listed}{why}. "
                f"Run VACUUM FULL on those tables once that ends.")
    return f"VACUUM FULL {names}: the replaced row versions are no longer in their files"
