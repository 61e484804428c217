"""Deterministic sample files for every file feed, so `make run` shows each of them load."""

from __future__ import annotations

import json
import random
from pathlib import Path

ORDERS_SCHEMA = {
    "columns": [
        {"name": "order_id", "type": "integer", "nullable": False},
        {"name": "customer", "type": "string", "nullable": False},
        {"name": "amount", "type": "float"},
        {"name": "ordered_at", "type": "datetime"},
    ],
    "allowed_operations": ["append", "truncate", "schema"],
}
REGIONS_SCHEMA = {
    "columns": [{"name": "region", "type": "string", "nullable": False}, {"name": "manager", "type": "string"}],
    "allowed_operations": ["truncate", "schema"],
}


def write_sample_files(root: Path, seed: int = 7) -> list[str]:
    """Write the sample files under `root`; returns their keys. A file already there, archived or
    in error is not written again, so running this twice does not load anything twice."""
    rng = random.Random(seed)
    files: dict[str, str] = {
        "datalake/sales/schema/orders/orders.json": json.dumps(ORDERS_SCHEMA, indent=2),
        "datalake/sales/schema/regions/regions.json": json.dumps(REGIONS_SCHEMA, indent=2),
        "datalake/sales/truncate/regions/regions_2024-05.csv":
            "region,manager\nNorth,Ada Lovelace\nSouth,Grace Hopper\nEast,Alan Turing\n",
    }
    order_id = 1000
    for day in ("2024-05-01", "2024-05-02"):
        lines = ["order_id,customer,amount,ordered_at"]
        for _ in range(40):
            order_id += 1
            lines.append(f"{order_id},C{rng.randint(1, 30):03d},{rng.randint(500, 50000) / 100:.2f},"
                         f"{day}T{rng.randint(8, 18):02d}:{rng.randint(0, 59):02d}:00Z")
        files[f"datalake/sales/append/orders/orders_{day}.csv"] = "\n".join(lines) + "\n"

    txn_id = 0
    for day, count in (("20240501", 60), ("20240502", 5000)):  # the second exceeds the split threshold
        lines = ["txn_id|account|amount|currency|booked_at"]
        for _ in range(count):
            txn_id += 1
            lines.append(f"{txn_id}|ACC{rng.randint(1, 12):03d}|{rng.randint(-20000, 90000) / 100:.2f}|EUR|"
                         f"{day[:4]}-{day[4:6]}-{day[6:]}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z")
        lines.append(f"TRL|{count}")
        files[f"external/inbound/bank_txn_{day}.csv"] = "\n".join(lines) + "\n"
    files["external/inbound/headcount_202405.csv"] = (
        "branch,month,headcount\nNorth,2024-05-01,42\nSouth,2024-05-01,37\nEast,2024-05-01,19\n")

    for month, extra in (("2024-05", False), ("2024-06", True)):  # June adds a column: schema drift
        header = "order_id,order_date,region,product,quantity,unit_price" + (",channel" if extra else "")
        lines = [header]
        for n in range(30):
            row = (f"{n + 1},{month}-{rng.randint(1, 28):02d},{rng.choice(['North', 'South', 'East'])},"
                   f"{rng.choice(['Widget', 'Gadget', 'Gizmo'])},{rng.randint(1, 9)},{rng.randint(100, 9999) / 100:.2f}")
            lines.append(row + (f",{rng.choice(['web', 'store'])}" if extra else ""))
        files[f"csv/input/sales/sales_{month}.csv"] = "\n".join(lines) + "\n"

    for key, text in files.items():
        path = root / key
        if not any((root / place).exists() for place in (key, f"archive/{key}", f"error/{key}")):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    return sorted(files)
