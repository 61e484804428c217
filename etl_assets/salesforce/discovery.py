"""Objects the catalog does not declare, typed without hand-written config: `discovered.yaml`.

Two sources write the state file. `refresh` samples the newest backup files of every object
folder and infers each column's type from Salesforce's export conventions; `import-describe`
reads the REST API's `sobjects/<Object>/describe`, which knows the types for certain. A
described column is never re-inferred: inference only adds the columns a describe lacks. The
file is written only when its content changes, in a fixed order, so a refresh that learned
nothing leaves no diff to review.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import datetime as dt
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import yaml

from etl_assets.landing.csv_reader import CsvFormatError, choose_encoding, open_binary
from etl_assets.landing.zone import LandingZone
from etl_assets.salesforce.backup_files import ObjectFile, Unreadable, list_object_files
from etl_assets.salesforce.catalog import object_name_problem
from etl_assets.salesforce.encodings import SETTING_HINT, folder_encoding
from etl_assets.salesforce.ids import normalize_ids
from etl_assets.salesforce.partitions import BACKUP_PREFIX
from etl_assets.warehouse.spec import column_name

STATE_PATH = Path(__file__).with_name("discovered.yaml")
CATALOG_YAML = Path(__file__).with_name("catalog.yaml")
TYPES = ("string", "id", "datetime", "date", "time", "boolean", "integer", "float")
DESCRIBE, INFERRED = "describe", "inferred"
HEADER = """\
# Written by `etl-assets catalog refresh` (types inferred from sampled rows) and `etl-assets catalog
# import-describe` (types from the REST API's describe). Reviewable state: commit it. To pin a type,
# declare the column in catalog.yaml, which wins over this file.
"""

# One value each, as Salesforce's tools write them (docs/salesforce-values.md, "Exports from
# Salesforce's tools"). Integers have no leading zeros or thousands separators: "00501" is a postal
# code. An exponent counts only after a decimal point, as Java's Double.toString (Data Loader, the
# APIs) writes it: "3.5E8" is a number, "1E5" may be a part number.
_BOOLEAN = re.compile(r"(?i:true|false)")
_INTEGER = re.compile(r"[+-]?(?:0|[1-9]\d{0,17})")
_DECIMAL = re.compile(r"[+-]?(?:0|[1-9]\d{0,17})\.\d+(?:[eE][+-]?\d{1,3})?")
# A date, alone or at midnight UTC (Data Export writes Date fields as `2024-05-01 00:00:00`).
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[T ]00:00:00(?:\.0+)?(?:Z|[+-]00:?00)?)?")
# A datetime: `T` or a space, seconds, any fraction, `Z`, `+0000`, `+00:00` or no zone (UTC).
_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?")
_TIME = re.compile(r"(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,3})?Z")
# Checkboxes as an API export writes them (`1` or empty): values 0/1 are booleans only under
# Salesforce's checkbox naming (IsDeleted, HasOptedOutOfEmail, DoNotCall); elsewhere they are numbers.
_CHECKBOX_NAME = re.compile(r"(?:Is|Has|Do)[A-Z]\w*")
_BITS = {"0", "1"}
_ID = re.compile(r"[0-9A-Za-z]{15}(?:[A-Z0-5]{3})?")

# Describe type -> catalog type. address/location are compounds (exports write their parts, fields
# of their own); base64 bodies are not in export CSVs. Every other type is text.
_DESCRIBE_TYPES = {
    "id": "id", "reference": "id", "boolean": "boolean", "int": "integer", "long": "integer",
    "double": "float", "currency": "float", "percent": "float",
    "date": "date", "datetime": "datetime", "time": "time",
}
_SKIPPED_TYPES = {
    "base64": "base64: Data Export does not write file bodies into CSVs",
    "address": "compound address: exported as its parts",
    "location": "compound location: exported as its parts",
}


def _valid_date(match: re.Match) -> bool:
    try:
        dt.date(*(int(g) for g in match.groups()[:3]))
    except ValueError:
        return False
    return True


def _valid_clock(h: str, m: str, s: str) -> bool:
    return int(h) < 24 and int(m) < 60 and int(s) < 60


def _kinds(value: str) -> set[str]:
    """Every type one non-empty value could belong to."""
    kinds = set()
    if _BOOLEAN.fullmatch(value):
        kinds.add("boolean")
    if _INTEGER.fullmatch(value):
        kinds |= {"integer", "float"}
    elif _DECIMAL.fullmatch(value):
        kinds.add("float")
    if (m := _DATE.fullmatch(value)) and _valid_date(m):
        kinds.add("date")
    if (m := _DATETIME.fullmatch(value)) and _valid_date(m) and _valid_clock(*m.groups()[3:]):
        kinds.add("datetime")
    if (m := _TIME.fullmatch(value)) and _valid_clock(*m.groups()):
        kinds.add("time")
    return kinds


def _checksums_valid(values: list[str]) -> bool:
    """Every 18-character value ends in the checksum of its first 15 (what a real Id always does)."""
    full = [v for v in values if len(v) == 18]
    if not full:
        return True
    recomputed, _ = normalize_ids(pd.Series([v[:15] for v in full], dtype="string[pyarrow]"))
    return list(recomputed) == full


# Salesforce's system fields, which every object that has them types the same way (Object Reference,
# "System Fields"): a header-only export (an object with no records) still types them, so its version
# column compares as a datetime and its Ids as Ids.
SYSTEM_FIELDS = {"id": "id", "isdeleted": "boolean", "createdbyid": "id", "createddate": "datetime",
                 "lastmodifiedbyid": "id", "lastmodifieddate": "datetime", "systemmodstamp": "datetime"}


def _infer_one(name: str, values: list[str]) -> str | None:
    """The column's type from its non-empty sampled values; a system field with none is typed by its
    name; None when there was nothing else to judge by."""
    if not values:
        return SYSTEM_FIELDS.get(name.lower())
    if all(_ID.fullmatch(v) for v in values) and _checksums_valid(values):
        named = name.lower() == "id" or name.lower().endswith("id")
        if named or all(len(v) == 18 for v in values):
            return "id"
    if _CHECKBOX_NAME.fullmatch(name) and set(values) <= _BITS:
        return "boolean"
    common = set(TYPES[2:])
    for value in values:
        common &= _kinds(value)
        if not common:
            return "string"
    for type_ in ("boolean", "integer", "float", "date", "datetime", "time"):
        if type_ in common:
            return type_
    return "string"


def _infer(header: list[str], rows: Iterable[list[str]]) -> dict[str, str | None]:
    values: list[list[str]] = [[] for _ in header]
    for row in rows:
        for i, value in enumerate(row[:len(header)]):
            if value != "":
                values[i].append(value)
    return {name: _infer_one(name, column) for name, column in zip(header, values)}


def _inferred_column(name: str, type_: str) -> dict:
    column = {"type": type_, "source": INFERRED}
    if name == "Id" and type_ == "id":
        column["nullable"] = False
    return column


def infer_column_types(header: list[str], rows: Iterable[list[str]]) -> dict[str, dict]:
    """Each field's type from a sample of its values; any doubt, or no value at all, is `string`."""
    return {name: _inferred_column(name, type_ or "string") for name, type_ in _infer(header, rows).items()}


class DescribedObject(NamedTuple):
    api_name: str
    columns: dict[str, dict]
    skipped: dict[str, str]  # field -> why it has no column
    label: str | None = None


def columns_from_describe(describe: dict) -> DescribedObject:
    """An object's describe JSON to its columns in field order (and the fields exports do not write)."""
    if "fields" not in describe or "name" not in describe:
        raise ValueError("not a describe of one object: expected its 'name' and 'fields' "
                         "(save GET sobjects/<Object>/describe, not the global describe)")
    columns, skipped = {}, {}
    for field in describe["fields"]:
        name, sf_type = field["name"], field["type"]
        if sf_type in _SKIPPED_TYPES:
            skipped[name] = _SKIPPED_TYPES[sf_type]
            continue
        type_ = _DESCRIBE_TYPES.get(sf_type, "string")
        column = {"type": type_, "source": DESCRIBE}
        if type_ == "string" and field.get("length"):
            column["length"] = field["length"]
        if type_ == "float":
            column["precision"], column["scale"] = field.get("precision", 0), field.get("scale", 0)
        if sf_type == "id":
            column["nullable"] = False
        columns[name] = column
    return DescribedObject(describe["name"], columns, skipped, describe.get("label"))


def load_state(path: Path) -> dict[str, dict]:
    """The state file's objects; none when it does not exist yet."""
    if not Path(path).exists():
        return {}
    document = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return document.get("objects") or {}


class _Dumper(yaml.SafeDumper):
    """Block style for the document, one flow mapping per column: a changed type is a one-line diff."""


class _Flow(dict):
    pass


_Dumper.add_representer(_Flow, lambda dumper, data: dumper.represent_mapping(
    "tag:yaml.org,2002:map", data.items(), flow_style=True))


def render_state(objects: dict[str, dict]) -> str:
    """The file's text: objects sorted by name, columns in source order, keys in a fixed order."""
    document = {"objects": {}}
    for api_name in sorted(objects):
        entry = objects[api_name]
        out = {"source": entry["source"]}
        if entry.get("label"):
            out["label"] = entry["label"]
        out["columns"] = {
            name: _Flow({k: column[k] for k in ("type", "source", "length", "precision", "scale", "nullable")
                         if k in column})
            for name, column in entry["columns"].items()
        }
        document["objects"][api_name] = out
    return HEADER + yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)


def _write_if_changed(path: Path, objects: dict[str, dict]) -> bool:
    text = render_state(objects)
    path = Path(path)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True


def _counts(entry: dict) -> dict[str, int]:
    counts = {DESCRIBE: 0, INFERRED: 0}
    for column in entry["columns"].values():
        counts[column["source"]] += 1
    return counts


def _object_files(landing_zone: LandingZone, unreadable: list[dict]) -> dict[str, dict[str, list[ObjectFile]]]:
    """Object name -> backup folder -> its files (CSVs in object folders, members of zip archives).
    Names are compared ignoring case, as the sensor does; the newest backup's spelling names the
    object. An archive that cannot be opened goes to `unreadable`."""
    found: dict[str, dict[str, list[ObjectFile]]] = {}
    spelling: dict[str, tuple[str, str]] = {}
    for item in list_object_files(landing_zone, f"{BACKUP_PREFIX}/"):
        if isinstance(item, Unreadable):
            unreadable.append({"object": None, "folder": item.folder, "file": item.key, "reason": item.reason})
            continue
        if not isinstance(item, ObjectFile):
            continue
        key = item.object_name.lower()
        found.setdefault(key, {}).setdefault(item.folder, []).append(item)
        spelling[key] = max(spelling.get(key, ("", "")), (item.folder, item.object_name))
    return {spelling[key][1]: folders for key, folders in found.items()}


class UnreadableFile(Exception):
    """A backup file discovery cannot read; the refresh lists it and goes on with the others."""


def _register_fallback(fallback: str) -> str:
    """A codec error handler that reads each byte sequence invalid in UTF-8 in `fallback`: sampling
    needs no whole-file check (the load makes one), and a Latin-1 file's header and values come out
    as the characters the load will read."""
    name = f"etl_assets_fallback_{fallback}"
    try:
        codecs.lookup_error(name)
    except LookupError:
        def handler(error: UnicodeDecodeError):
            return error.object[error.start:error.end].decode(fallback, errors="replace"), error.end
        codecs.register_error(name, handler)
    return name


@contextmanager
def _text_stream(source, folder: str) -> Iterator[io.TextIOWrapper]:
    """The file's text in its folder's encoding (a UTF-8 BOM dropped)."""
    chosen = folder_encoding(folder)
    errors = _register_fallback(chosen.fallback) if chosen.fallback else "strict"
    encoding = "utf-8-sig" if chosen.encoding == "utf-8" else chosen.encoding
    with open_binary(source) as raw:
        yield io.TextIOWrapper(raw, encoding=encoding, errors=errors, newline="")


def _decode_error(source, key: str, error: UnicodeDecodeError) -> str:
    """Where a file stops being valid in its encoding: the reader's own check names line and
    column (the text stream decodes ahead of the CSV parser, so its position says little)."""
    try:
        choose_encoding(source, key, error.encoding, None, SETTING_HINT)
    except CsvFormatError as located:
        return str(located)[len(key) + 2:] if str(located).startswith(key) else str(located)
    return f"bytes not valid {error.encoding}: {error.object[error.start:error.end]!r}; {SETTING_HINT}"


def _records(landing_zone: LandingZone, folders: dict[str, list[ObjectFile]], header: list[str],
             unreadable: list[dict], object_name: str):
    """Every row of the object's files, newest backup first, aligned to `header` (which grows with
    the fields of each file read, in the newest header's order; fields match ignoring case). A file
    that cannot be read is listed in `unreadable` and skipped: the other files still type the object."""
    positions_of = {name.lower(): i for i, name in enumerate(header)}
    for folder in sorted(folders, reverse=True):
        for item in sorted(folders[folder], key=lambda f: f.key):
            try:
                with item.source(landing_zone) as source, _text_stream(source, folder) as f:
                    reader = csv.reader(f, strict=True)
                    try:
                        names = next(reader, [])
                        for name in names:
                            if name.lower() not in positions_of:
                                positions_of[name.lower()] = len(header)
                                header.append(name)
                        positions = [positions_of[n.lower()] for n in names]
                        for record in reader:
                            row = [""] * len(header)
                            for position, value in zip(positions, record):
                                row[position] = value
                            yield row
                    except csv.Error as error:
                        raise UnreadableFile(f"line {reader.line_num + 1}: {error}") from None
                    except UnicodeDecodeError as error:
                        raise UnreadableFile(_decode_error(source, item.key, error)) from None
            except (UnreadableFile, OSError, ValueError, RuntimeError) as error:
                unreadable.append({"object": object_name, "folder": folder, "file": item.key,
                                   "reason": str(error) or type(error).__name__})


LATE_VALUES_FACTOR = 100  # a column empty in the sample is looked for in up to 100 x sample_rows rows


def _sample(landing_zone: LandingZone, folders: dict[str, list[ObjectFile]], sample_rows: int,
            unreadable: list[dict] | None = None, object_name: str = "") -> tuple[list[str], list[list[str]]]:
    """Each column's non-empty values (columns in the newest header's order).

    The first `sample_rows` rows (newest backups first) give every column its values. A column with
    no value in them (a field that is empty in the newest rows: booleans before a field was used,
    a field added recently) is read on, alone, until it has `sample_rows` values or
    `LATE_VALUES_FACTOR` x `sample_rows` rows have been read or the files end: a sparse field is typed
    from its values instead of defaulting to text, and an object's refresh stays bounded."""
    header: list[str] = []
    values: list[list[str]] = []
    late: set[int] | None = None
    bound = sample_rows * LATE_VALUES_FACTOR
    rows = _records(landing_zone, folders, header, [] if unreadable is None else unreadable, object_name)
    for count, row in enumerate(rows):
        if count < sample_rows:
            values += [[] for _ in range(len(header) - len(values))]
            for i, value in enumerate(row):
                if value != "":
                    values[i].append(value)
            continue
        if late is None:
            late = {i for i, column in enumerate(values) if not column}
        if len(header) > len(values):  # a field first seen in an older file had no value in the sample
            late |= set(range(len(values), len(header)))
            values += [[] for _ in range(len(header) - len(values))]
        if count >= bound:
            break
        for i in list(late):
            if row[i] != "":
                values[i].append(row[i])
                if len(values[i]) >= sample_rows:
                    late.discard(i)
        if not late:
            break
    rows.close()  # the file being read is closed now, not when the generator is collected
    values += [[] for _ in range(len(header) - len(values))]
    return header, values


def _merge_inferred(entry: dict | None, header: list[str], types: dict[str, str | None]) -> dict:
    """Re-inferred columns replace inferred ones; described columns, and a column the sample had no
    value for, keep what they had; columns no longer in the files stay."""
    old = (entry or {}).get("columns", {})
    source = (entry or {}).get("source", INFERRED)
    columns = {}
    if source == DESCRIBE:
        columns.update(old)
    for name in header:
        if name in columns:
            continue
        if types[name] is None and name in old:
            columns[name] = old[name]
        else:
            columns[name] = _inferred_column(name, types[name] or "string")
    for name, column in old.items():
        columns.setdefault(name, column)
    merged = {"source": source, "columns": columns}
    if entry and entry.get("label"):
        merged["label"] = entry["label"]
    return merged


def refresh_state(landing_zone: LandingZone, state_path: Path, declared: set[str] | dict[str, set[str]],
                  sample_rows: int = 1000, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Infer every object's columns from the landing zone and record them in the state file.

    Objects declared in catalog.yaml are sampled too: the catalog refines what discovery finds (its
    columns win when the catalog is merged), so their other columns are typed rather than text.
    Each object is sampled from its newest `sample_rows` rows; a column empty in all of them is read
    on in older rows (up to 100 x `sample_rows`, see `_sample`), so a late field is still typed. A
    file that cannot be read is listed under `unreadable` (object, folder, file, reason) and never
    stops the others. A declared object's entry records only the columns catalog.yaml does not
    declare (none: no entry), so the state holds what the catalog does not already say.

    `declared`: catalog.yaml's objects, with the columns each declares; names alone are looked up
    in catalog.yaml. `progress(object, number, total)` is called as each object's sampling starts."""
    objects = load_state(state_path)
    if not isinstance(declared, dict):
        known = {name.lower(): columns for name, columns in declared_objects().items()}
        declared = {name: known.get(name.lower(), set()) for name in declared}
    declared_lower = {name.lower(): columns for name, columns in declared.items()}
    by_lower = {name.lower(): name for name in objects}
    summary = {"state": str(state_path), "added": [], "updated": [], "kept": [], "declared": [], "missing": [],
               "unreadable": [], "objects": {}}
    summary["refused"] = []
    for api_name in [name for name in objects if object_name_problem(name)]:  # written before the rule
        summary["refused"].append({"object": api_name, "folders": [], "reason": object_name_problem(api_name)})
        del objects[api_name]
    found = _object_files(landing_zone, summary["unreadable"])
    for number, folder_name in enumerate(sorted(found), 1):
        if progress is not None:
            progress(folder_name, number, len(found))
        if (problem := object_name_problem(folder_name)) is not None:  # names are data: never in the state
            summary["refused"].append({"object": folder_name, "folders": sorted(found[folder_name]), "reason": problem})
            continue
        if folder_name.lower() in declared_lower:
            summary["declared"].append(folder_name)
        api_name = by_lower.get(folder_name.lower(), folder_name)
        try:
            header, values = _sample(landing_zone, found[folder_name], sample_rows, summary["unreadable"], api_name)
        except Exception as error:  # anything unforeseen fails this object only, and says so
            summary["unreadable"].append({"object": api_name, "folder": None, "file": None,
                                          "reason": f"{type(error).__name__}: {error}"})
            continue
        if not header:  # no file of it could be read: nothing to type it by (listed as unreadable)
            continue
        pinned = declared_lower.get(folder_name.lower(), set())
        sampled = [(name, column) for name, column in zip(header, values) if column_name(name) not in pinned]
        before = objects.get(api_name)
        if not sampled and before is None:  # a declared object whose files hold only declared columns
            continue
        types = {name: _infer_one(name, column) for name, column in sampled}
        after = _merge_inferred(before, [name for name, _ in sampled], types)
        objects[api_name] = after
        summary["added" if before is None else "updated" if after != before else "kept"].append(api_name)
    summary["refused"].sort(key=lambda item: item["object"])
    present = {name.lower() for name in found}
    for api_name in sorted(objects):
        if api_name.lower() not in present:
            summary["missing"].append(api_name)
    summary["objects"] = {name: _counts(objects[name]) for name in sorted(objects)}
    summary["written"] = _write_if_changed(state_path, objects)
    return summary


def import_describes(paths: Iterable[Path], state_path: Path) -> dict:
    """Record describe JSON files (one object each) in the state file; inferred columns the describe
    lacks are kept, still marked inferred."""
    objects = load_state(state_path)
    summary = {"state": str(state_path), "added": [], "updated": [], "kept": [], "skipped": {}, "objects": {}}
    for path in paths:
        described = columns_from_describe(json.loads(Path(path).read_text(encoding="utf-8")))
        existing = next((n for n in objects if n.lower() == described.api_name.lower()), None)
        before = objects.pop(existing) if existing else None
        columns = dict(described.columns)
        described_lower = {name.lower() for name in columns}
        for name, column in (before or {}).get("columns", {}).items():
            if column["source"] == INFERRED and name.lower() not in described_lower:
                columns[name] = column
        after = {"source": DESCRIBE, "columns": columns}
        if described.label:
            after["label"] = described.label
        objects[described.api_name] = after
        summary["added" if before is None else "updated" if after != before else "kept"].append(described.api_name)
        if described.skipped:
            summary["skipped"][described.api_name] = described.skipped
        summary["objects"][described.api_name] = _counts(after)
    summary["written"] = _write_if_changed(state_path, objects)
    return summary


def declared_objects(path: Path = CATALOG_YAML) -> dict[str, set[str]]:
    """catalog.yaml's API names, each with the columns it declares (its own and `common_columns`, as
    column names), read from the file itself: the catalog loader also merges this state."""
    document = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    common = set(document.get("common_columns") or {})
    return {name: {column_name(c) for c in common | set(((entry or {}).get("columns") or {}))}
            for name, entry in (document.get("objects") or {}).items()}


def _print_summary(summary: dict) -> None:
    for label in ("added", "updated", "kept", "declared", "missing"):
        names = summary.get(label)
        if names:
            note = {"declared": " (in catalog.yaml: its columns win, the others are inferred)",
                    "missing": " (no longer in the landing zone; kept)"}
            print(f"{label}{note.get(label, '')}: {', '.join(names)}")
    for name, counts in summary["objects"].items():
        print(f"  {name}: {counts[DESCRIBE]} described, {counts[INFERRED]} inferred columns")
    for name, fields in summary.get("skipped", {}).items():
        print(f"  {name}: skipped " + "; ".join(f"{field} ({why})" for field, why in fields.items()))
    for item in summary.get("refused") or []:
        folders = f" (in {', '.join(item['folders'][:3])}{', ...' if len(item['folders']) > 3 else ''})" if item["folders"] else ""
        print(f"refused: {item['object']!r}{folders}: {item['reason']}; its files are not loaded")
    unreadable = summary.get("unreadable") or []
    if unreadable:
        print(f"unreadable: {len(unreadable)} file(s) could not be read (the other files and objects were discovered):")
        for item in unreadable:
            where = ", ".join(f"{k} {item[k]}" for k in ("object", "folder", "file") if item.get(k))
            print(f"  {where}: {item['reason']}")
    print(f"{'Wrote' if summary['written'] else 'Unchanged:'} {summary['state']}")


def refresh_command(args: argparse.Namespace, landing_zone: LandingZone,
                    progress: Callable[[str, int, int], None] | None = None) -> int:
    """`etl-assets catalog refresh`: args.state, args.sample_rows."""
    _print_summary(refresh_state(landing_zone, Path(args.state), declared_objects(), args.sample_rows, progress))
    _print_policies(Path(args.state))
    return 0


def _print_policies(state: Path) -> None:
    """The columns each column policy catches (docs/personal-data.md), with the state just written:
    a rule is a pattern, and what it caught in newly discovered objects is worth a look."""
    from etl_assets.salesforce.catalog import load_catalog

    load_catalog.cache_clear()
    caught: dict[str, list[str]] = {}
    for obj in load_catalog(CATALOG_YAML, state).values():
        for origin, columns in obj.policy_catches().items():
            caught.setdefault(origin, []).extend(columns)
    for origin, columns in caught.items():
        print(f"column policy {origin}: {', '.join(columns)}")


def import_describe_command(args: argparse.Namespace) -> int:
    """`etl-assets catalog import-describe FILE...`: args.state, args.files."""
    try:
        summary = import_describes([Path(p) for p in args.files], Path(args.state))
    except (OSError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        print(f"import-describe: {error}")
        return 1
    _print_summary(summary)
    return 0
