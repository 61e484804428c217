"""CSVs shaped like Salesforce Data Export's, written from a describe, for discovery tests.

Every exportable field of the describe is a column, in describe order; every value is quoted;
booleans are `true`/`false`, datetimes `2024-05-01T06:32:11.000Z`, dates `2024-05-01`, times
`10:30:00.000Z`, Ids 18 characters with a valid checksum, null an empty value, and text holds
commas, quotes and newlines. Values come from `random.Random` seeded per object and field, so a
seed always gives the same bytes.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from pathlib import Path

from etl_assets.salesforce.discovery import columns_from_describe
from etl_assets.samples.salesforce import salesforce_id

KEY_PREFIXES = {"User": "005", "Account": "001", "Contact": "003", "Opportunity": "006", "UserRole": "00E",
                "Group": "00G", "RecordType": "012", "Lead": "00Q", "Case": "500", "Event": "00U"}
WORDS = ["North", "Harbor", "Widget", "Quarterly review", "Café", "Smith & Sons", "Ünïcode", "Follow-up"]
EPOCH = dt.datetime(2001, 1, 1)


def exportable_fields(describe: dict) -> list[dict]:
    """The describe's fields Data Export writes (compound and base64 fields have no column)."""
    names = columns_from_describe(describe).columns
    return [field for field in describe["fields"] if field["name"] in names]


def _text(rng: random.Random, length: int) -> str:
    parts = [rng.choice(WORDS) for _ in range(rng.randint(1, 4))]
    text = rng.choice([", ", " ", '", "', '"quoted" ', "\n"]).join(parts)
    return text[:length] if length else text


def _value(field: dict, row: int, rng: random.Random, key_prefix: str) -> str:
    sf_type = field["type"]
    if sf_type == "id":
        return salesforce_id(key_prefix, row + 1)
    if sf_type == "reference":
        target = (field.get("referenceTo") or ["?"])[0]
        return salesforce_id(KEY_PREFIXES.get(target, "a0Z"), rng.randrange(1, 10**6))
    if sf_type == "boolean":
        return rng.choice(["true", "false"])
    if sf_type in ("int", "long"):
        return str(rng.randrange(-500, 100_000))
    if sf_type in ("double", "currency", "percent"):
        scale = min(field.get("scale") or 0, 6)
        whole = 10 ** max(1, min(6, (field.get("precision") or 18) - (field.get("scale") or 0)))
        value = rng.uniform(-whole, whole)
        return f"{value:.{scale}f}" if scale else str(int(value))
    if sf_type == "date":
        return (EPOCH.date() + dt.timedelta(days=rng.randrange(12_000))).isoformat()
    if sf_type == "datetime":
        return (EPOCH + dt.timedelta(seconds=rng.randrange(10**9))).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    if sf_type == "time":
        return f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}.000Z"
    if sf_type == "email":
        return f"{rng.choice(['ana', 'li', 'o.brien'])}{rng.randrange(1000)}@example.com"
    if sf_type == "phone":
        return f"(555) {rng.randrange(1000):03d}-{rng.randrange(10000):04d}"
    if sf_type == "url":
        return f"https://www.example.com/{rng.randrange(10**6)}"
    picklist = [p["value"] for p in field.get("picklistValues") or []]
    if sf_type in ("picklist", "combobox") and picklist:
        return rng.choice(picklist)
    if sf_type == "multipicklist" and picklist:
        return ";".join(rng.sample(picklist, rng.randint(1, min(3, len(picklist)))))
    return _text(rng, field.get("length") or 0)


def write_export_csv(describe: dict, path: Path, rows: int, seed: int, blank_booleans_rows: int = 0) -> list[str]:
    """Write `rows` records; booleans are empty in the first `blank_booleans_rows`. Returns the header."""
    fields = exportable_fields(describe)
    key_prefix = describe.get("keyPrefix") or "a0Z"
    rngs = [random.Random(f"{seed}:{describe['name']}:{field['name']}") for field in fields]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow([field["name"] for field in fields])
        for row in range(rows):
            record = []
            for field, rng in zip(fields, rngs):
                blanked = field["type"] == "boolean" and row < blank_booleans_rows
                null = field["nillable"] and field["type"] != "id" and rng.random() < 0.2
                record.append("" if blanked or null else _value(field, row, rng, key_prefix))
            writer.writerow(record)
    return [field["name"] for field in fields]


def build_backup(
    root: Path,
    describes: list[dict],
    rows: int = 50,
    seed: int = 0,
    folder: str = "20240601_Differential",
    blank_booleans: tuple[str, int] | None = None,
) -> dict[str, Path]:
    """One `backup/<folder>/<Object>/<Object>.csv` per describe; `blank_booleans=(object, n)` leaves
    that object's booleans empty in its first n rows. Returns object -> file."""
    written = {}
    for describe in describes:
        name = describe["name"]
        path = Path(root) / "backup" / folder / name / f"{name}.csv"
        blank = blank_booleans[1] if blank_booleans and blank_booleans[0] == name else 0
        write_export_csv(describe, path, rows, seed, blank)
        written[name] = path
    return written
