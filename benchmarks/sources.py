"""The load benchmark's input files: export-shaped variants of the generated backup, and a user's own CSV.

Two jobs, both run in the parent before any variant:

- `export_shaped`: the generated Task backup (28 catalog columns, QUOTE_MINIMAL) rewritten the way
  Salesforce Data Export writes files: every value quoted (empty ones as `""`), plus custom fields
  `Bench_<n>__c` up to the wanted column count, each a copy of one of the typed Task columns (ids,
  datetimes, picklists, multi-line text ... in turn), so a wide file has Task's mix of types. DuckDB
  does the rewrite (seconds, not the minutes Python's csv module takes at 120 columns); the file is
  kept and reused like the generated ones.
- `user_csv`: `--csv PATH`. The object comes from `--object`, else the file's folder
  (`backup/<folder>/<Object>/x.csv`), else its name, matched against the project's catalog ignoring
  case, as the sensor does. A catalog object loads exactly as in production (header fields it does not
  declare load as text: schema drift). Any other object is typed the way `etl-assets catalog refresh`
  types it: `discovery.infer_column_types` over the first rows, written to a discovered-state file of
  the benchmark's own that the variants load the catalog with. The re-load file is the same rows with
  the version column moved 31 days later (so every row takes the update path), written by DuckDB.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

EXPORT_SHAPED_SEED = 7
SAMPLE_ROWS = 1000  # what `etl-assets catalog refresh` samples by default


def _apart(function, *args):
    """Run `function` in a fresh interpreter. The parent's peak RSS is inherited by every variant it
    starts (Linux keeps ru_maxrss across fork and exec), so the parent never runs DuckDB itself."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def _duckdb_connection():
    import duckdb

    connection = duckdb.connect()
    connection.execute("SET memory_limit = '6GB'; SET preserve_insertion_order = true; SET threads = 1; SET enable_progress_bar = false")
    return connection


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _header(path: Path) -> list[str]:
    from etl_assets.landing.csv_reader import read_header

    return list(read_header(path, path.name)[0])


def export_shaped(base: Path, target: Path, columns: int) -> Path:
    """`base` (a generated backup) as Data Export writes it, widened to `columns` columns; reused if present."""
    if target.exists():
        return target
    header = _header(base)
    if columns < len(header):
        raise ValueError(f"{columns} columns: the base file already has {len(header)}")
    typed = [name for name in header if name not in ("Id",)]
    select = [f"coalesce({_quote(name)}, '') AS {_quote(name)}" for name in header]
    select += [f"coalesce({_quote(typed[i % len(typed)])}, '') AS {_quote(f'Bench_{i + 1}__c')}"
               for i in range(columns - len(header))]
    target.parent.mkdir(parents=True, exist_ok=True)
    _apart(_rewrite, base, target, select)
    return target


def _rewrite(source: Path, target: Path, select: list[str]) -> None:
    """`COPY (SELECT select FROM source) TO target`, every value quoted, through a partial file."""
    partial = target.with_suffix(".csv.partial")
    connection = _duckdb_connection()
    try:
        connection.execute(
            f"COPY (SELECT {', '.join(select)} FROM read_csv({_literal(source)}, all_varchar = true, header = true, "
            f"quote = '\"', escape = '\"', delim = ',', strict_mode = true, parallel = false)) "
            f"TO {_literal(partial)} (FORMAT csv, HEADER true, FORCE_QUOTE *, NEW_LINE '\\n')")
    finally:
        connection.close()
    os.replace(partial, target)


@dataclass(frozen=True)
class UserFile:
    """A user's CSV laid out as a backup: the first-load file, the re-load file, and how to type it."""

    api_name: str
    first: Path
    reload: Path
    discovered: Path | None  # the benchmark's discovered-state file, when the catalog does not declare the object
    how: str  # one line for the report: where the object and its types came from


def _object_name(path: Path, wanted: str | None, catalog: dict) -> tuple[str, bool]:
    """(API name, whether the catalog knows it)."""
    by_lower = {name.lower(): name for name in catalog}
    candidates = [wanted] if wanted else [path.parent.name, path.stem, path.stem.split("_")[0]]
    for name in candidates:
        if name and name.lower() in by_lower:
            return by_lower[name.lower()], True
    if wanted:
        return wanted, False
    name = path.parent.name if path.parent.name and path.parent.name.lower() != "backup" else path.stem
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name) or "BenchObject", False


def _sample(path: Path, rows: int) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        sample = []
        for row in reader:
            sample.append(row)
            if len(sample) >= rows:
                break
    return header, sample


def _link(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        if target.resolve() == source.resolve():
            return target
        target.unlink()
    target.symlink_to(source.resolve())
    return target


def _later_versions(source: Path, target: Path, version: str, days: int = 31) -> Path:
    """The same rows with `version` moved `days` later: every row of the re-load is newer."""
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    header = _header(source)
    column = next(name for name in header if name.lower() == version.lower())
    later = (f"CASE WHEN {_quote(column)} IS NULL OR {_quote(column)} = '' THEN {_quote(column)} ELSE "
             f"strftime(CAST(replace(replace({_quote(column)}, 'T', ' '), 'Z', '') AS TIMESTAMP) "
             f"+ INTERVAL {days} DAY, '%Y-%m-%dT%H:%M:%S.000Z') END")
    select = [later + f" AS {_quote(name)}" if name == column else f"coalesce({_quote(name)}, '') AS {_quote(name)}"
              for name in header]
    target.parent.mkdir(parents=True, exist_ok=True)
    _apart(_rewrite, source, target, select)
    return target


def user_csv(path: Path, wanted: str | None, root: Path, first_folder: str, reload_folder: str) -> UserFile:
    """Lay `path` out as a backup under `root` (a symlink, no copy) and decide how its object is typed."""
    from etl_assets.salesforce.catalog import column_name, load_catalog
    from etl_assets.salesforce.discovery import infer_column_types, render_state

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--csv {path}: no such file")
    catalog = load_catalog()
    api_name, known = _object_name(path, wanted, catalog)
    digest = hashlib.sha256(f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    home = root / "csv" / digest
    first = _link(path, home / "backup" / first_folder / api_name / path.name)
    discovered = None
    if known:
        obj = catalog[api_name]
        header = _header(path)
        declared = {c.name for c in obj.columns}
        drift = [h for h in header if column_name(h) not in declared]
        how = (f"catalog object {api_name} ({len(obj.columns)} columns as declared"
               + (f"; {len(drift)} header field(s) it does not declare load as text, as in production)" if drift else ")"))
    else:
        header, rows = _sample(path, SAMPLE_ROWS)
        columns = infer_column_types(header, rows)
        discovered = home / "discovered.yaml"
        discovered.write_text(render_state({api_name: {"source": "inferred", "columns": columns}}), encoding="utf-8")
        obj = load_catalog(discovered=discovered)[api_name]
        how = (f"{api_name} is not in the catalog: {len(header)} columns typed from the first {len(rows):,} rows by "
               f"discovery.infer_column_types (as `etl-assets catalog refresh` would), state in {discovered}")
    reload_target = home / "backup" / reload_folder / api_name / path.name
    if obj.version_column and any(column_name(h) == column_name(obj.version_column) for h in _header(path)):
        reload = _later_versions(path, reload_target, obj.version_column)
        how += f"; re-load: the same rows, {obj.version_column} 31 days later"
    else:
        reload = _link(path, reload_target)
        how += "; re-load: the same file in a later folder (no version column: the later folder wins)"
    return UserFile(api_name, first, reload, discovered, how)


def describe(path: Path) -> dict:
    """Bytes, columns and whether the first record is fully quoted (the export shape)."""
    header = _header(path)
    with open(path, "rb") as f:
        f.readline()
        line = f.readline().decode("utf-8", "replace")
    return {"path": str(path), "bytes": path.stat().st_size, "columns": len(header),
            "all_quoted": line.startswith('"'), "modified": datetime.datetime.fromtimestamp(
                path.stat().st_mtime, datetime.UTC).isoformat(timespec="seconds")}
