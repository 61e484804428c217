"""What reading a Latin-1 export costs (`--only encodings`; also after the load benchmark).

The benchmark's generated backup is read through `iter_csv_chunks` as it is, UTF-8 (the fast path:
no transcoding, Arrow validates it), and as an ISO-8859-1 copy (written once), which the reader
decodes and re-encodes as UTF-8 block by block. The generator's names carry accents (José, Müller,
...), so the copy's bytes really differ; the few characters Latin-1 lacks (an en dash, ễ) become '?'.
Also timed: `choose_encoding`'s strict UTF-8 check of the UTF-8 file, what a feed configured as UTF-8
pays per file before reading it. Best of --rounds, in this process, every file read once first so the
page cache holds all of them alike.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

LATIN1 = "iso-8859-1"


def latin1_copy(source: Path, target: Path) -> dict:
    """`source` (UTF-8) rewritten as ISO-8859-1, streamed; reused while newer than the source. Returns its
    count of non-ASCII bytes (the accented letters) and of characters Latin-1 lacks (written as '?')."""
    stats = target.with_suffix(".json")
    if target.exists() and stats.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return json.loads(stats.read_text())
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    accented = replaced = 0
    with open(source, encoding="utf-8", newline="") as reader, open(partial, "wb") as writer:
        while text := reader.read(4 << 20):
            data = text.encode(LATIN1, errors="replace")
            accented += int(np.count_nonzero(np.frombuffer(data, np.uint8) >= 0x80))
            replaced += data.count(b"?") - text.count("?")
            writer.write(data)
    os.replace(partial, target)
    counts = {"accented_bytes": accented, "replaced_characters": replaced}
    stats.write_text(json.dumps(counts))
    return counts


def _read(path: Path, encoding: str) -> tuple[int, float]:
    from etl_assets.landing.csv_reader import iter_csv_chunks, read_header

    started = time.perf_counter()
    header, header_lines = read_header(path, path.name, encoding)
    rows = sum(chunk.batch.num_rows for chunk in iter_csv_chunks(path, path.name, header, header_lines, encoding))
    return rows, time.perf_counter() - started


def _warm_up(path: Path) -> None:
    """One chunk, untimed: Arrow's thread pool and the imports are not the first variant's cost."""
    from etl_assets.landing.csv_reader import iter_csv_chunks, read_header

    header, header_lines = read_header(path, path.name)
    chunks = iter_csv_chunks(path, path.name, header, header_lines)
    next(chunks, None)
    chunks.close()


def _check(path: Path) -> tuple[int, float]:
    from etl_assets.landing.csv_reader import choose_encoding

    started = time.perf_counter()
    choice = choose_encoding(path, path.name, "utf-8", fallback=LATIN1)
    assert choice.note is None, choice.note
    return 0, time.perf_counter() - started


def run_encoding_benchmark(rows: int, data_root: Path, rounds: int = 3, log=print) -> dict:
    from benchmarks.loads import ensure_backups

    utf8, _ = ensure_backups(data_root, "Task", rows, reload=False)
    latin1 = data_root / "encodings" / f"{utf8.stem}_latin1.csv"
    started = time.perf_counter()
    counts = latin1_copy(utf8, latin1)
    log(f"  Latin-1 copy ready in {time.perf_counter() - started:.1f} s: {latin1}")
    runs = {"utf8_read": lambda: _read(utf8, "utf-8"), "latin1_read": lambda: _read(latin1, LATIN1),
            "utf8_check": lambda: _check(utf8)}
    for path in (utf8, latin1):  # into the page cache, for every variant alike
        with open(path, "rb") as f:
            while f.read(16 << 20):
                pass
    _warm_up(utf8)
    best: dict[str, float] = {}
    read_rows = {}
    for round_number in range(rounds):
        for name, run in runs.items():
            count, seconds = run()
            read_rows[name] = count
            best[name] = min(best.get(name, seconds), seconds)
            log(f"  round {round_number + 1}/{rounds} {name:<12} {seconds:6.2f} s")
    if read_rows["utf8_read"] != read_rows["latin1_read"] or read_rows["utf8_read"] != rows:
        raise SystemExit(f"rows differ: {read_rows}")
    return {"kind": "encodings", "rows": rows, "rounds": rounds, "utf8_file": str(utf8), "latin1_file": str(latin1),
            "utf8_bytes": utf8.stat().st_size, "latin1_bytes": latin1.stat().st_size, **counts, "seconds": best,
            "latin1_ratio": best["latin1_read"] / best["utf8_read"],
            "check_ratio": best["utf8_check"] / best["utf8_read"]}


def print_encodings(result: dict) -> None:
    s = result["seconds"]
    print(f"\nEncodings: {result['rows']:,} Task rows read by iter_csv_chunks, best of {result['rounds']} round(s)")
    print(f"  UTF-8 file {result['utf8_bytes'] / 1e6:,.0f} MB; "
          f"its ISO-8859-1 copy {result['latin1_bytes'] / 1e6:,.0f} MB "
          f"({result['accented_bytes']:,} accented letters; {result['replaced_characters']:,} characters outside "
          "Latin-1 written as '?')")
    print(f"  read as UTF-8 (no transcoding)             {s['utf8_read']:7.2f} s")
    print(f"  read as ISO-8859-1 (transcoded to UTF-8)   {s['latin1_read']:7.2f} s   "
          f"{result['latin1_ratio']:.2f}x the UTF-8 read")
    print(f"  choose_encoding: strict UTF-8 check        {s['utf8_check']:7.2f} s   "
          f"{result['check_ratio']:.2f}x the UTF-8 read")


def write_encodings(out: Path, result: dict, env: dict) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "encodings.json"
    path.write_text(json.dumps({"environment": env, "encodings": result}, indent=2, default=str) + "\n")
    return [path]
