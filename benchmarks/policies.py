"""What column policies cost: hashing (HMAC-SHA-256) and masking 1M e-mail addresses on their own,
and the time a `hash` policy on Contact's Email adds to a whole DuckDB load of 1M Contacts (the same
file loaded with and without the policy, best of N each). docs/personal-data.md quotes the result."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa

CHUNK_ROWS = 100_000  # about what one CSV chunk of a load holds for a narrow object
KEY = b"benchmark-key-not-a-secret-0123456789"


def _best(run, rounds: int) -> float:
    return min(run() for _ in range(rounds))


def _timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def _addresses(rows: int) -> pa.Array:
    return pa.array([f"firstname.lastname{i}@company{i % 5_000}.example.com" for i in range(rows)])


def _each_chunk(function, values: pa.Array, *args) -> None:
    for start in range(0, len(values), CHUNK_ROWS):
        function(values.slice(start, CHUNK_ROWS), *args)


def _load_seconds(file: Path, obj, workdir: Path) -> float:
    """One DuckDB load of `file` into a new warehouse file, as the asset runs it (stream_object + load)."""
    from etl_assets.salesforce.staging import SourceFile, stream_object
    from etl_assets.warehouse.duckdb import DuckDBWarehouse

    with tempfile.TemporaryDirectory(dir=workdir) as directory:
        warehouse = DuckDBWarehouse(path=str(Path(directory) / "w.duckdb"))
        folder = file.parent.parent.name
        started = time.perf_counter()
        batch, _ = stream_object(obj, [SourceFile(f"backup/{folder}/Contact/{file.name}", file)], partition=folder,
                                 hash_key=KEY)
        warehouse.load(batch)
        seconds = time.perf_counter() - started
        batch.discard()
    return seconds


def run_policy_benchmark(rows: int, data_root: Path, rounds: int = 3, log=print) -> dict:
    from etl_assets.landing.column_policies import hash_values, mask_values, parse_object_policies
    from etl_assets.salesforce.catalog import load_catalog

    from benchmarks.loads import ensure_backups

    values = _addresses(rows)
    hash_s = _best(lambda: _timed(_each_chunk, hash_values, values, KEY), rounds)
    mask_s = _best(lambda: _timed(_each_chunk, mask_values, values), rounds)
    log(f"  hash {rows:,} addresses {hash_s:.2f} s, mask {mask_s:.2f} s")

    file, _ = ensure_backups(data_root, "Contact", rows, reload=False)
    contact = load_catalog()["Contact"]
    hashed = contact.with_policies(parse_object_policies("Contact", {"Email": "hash"}, protected=["Id", "SystemModstamp"]))
    plain = replace(contact, policies=None)
    workdir = data_root / "policies"
    workdir.mkdir(parents=True, exist_ok=True)
    loads = {"keep": [], "hash": []}
    for round_number in range(rounds):
        for name, obj in (("keep", plain), ("hash", hashed)):
            loads[name].append(_load_seconds(file, obj, workdir))
            log(f"  round {round_number + 1}/{rounds} load with Email {name:<4} {loads[name][-1]:6.2f} s")
    best = {name: min(times) for name, times in loads.items()}
    return {"kind": "policies", "rows": rows, "rounds": rounds, "chunk_rows": CHUNK_ROWS, "hash_seconds": hash_s,
            "mask_seconds": mask_s, "load_keep_seconds": best["keep"], "load_hash_seconds": best["hash"],
            "load_added_seconds": best["hash"] - best["keep"], "file": str(file)}


def print_policies(result: dict) -> None:
    print(f"\nColumn policies: {result['rows']:,} e-mail addresses, best of {result['rounds']} round(s)")
    print(f"  hash (HMAC-SHA-256), in chunks of {result['chunk_rows']:,}  {result['hash_seconds']:7.2f} s")
    print(f"  mask (keep the domain)                        {result['mask_seconds']:7.2f} s")
    print(f"  DuckDB load of {result['rows']:,} Contacts, Email kept    {result['load_keep_seconds']:7.2f} s")
    print(f"  the same load, Email hashed                   {result['load_hash_seconds']:7.2f} s   "
          f"adds {result['load_added_seconds']:+.2f} s")
    verdict = "ok" if result["load_added_seconds"] < 1.0 else "MISSED"
    print(f"[{verdict}] hashing {result['rows']:,} e-mails adds under 1 s to a load: {result['load_added_seconds']:+.2f} s")


def write_policies(out: Path, result: dict, env: dict) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "policies.json"
    path.write_text(json.dumps({"environment": env, "policies": result}, indent=2, default=str) + "\n")
    return [path]
