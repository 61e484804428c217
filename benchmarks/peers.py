"""Peer rows of the load benchmark: dlt's fastest CSV path on the same file, in the same run.

The path (dlt 1.31's own documented fast path for files into SQL warehouses): the filesystem
source's `read_csv_duckdb` transformer with `use_pyarrow=True` (DuckDB parses and types the CSV, hands
Arrow record batches over; dlt writes them to Parquet without per-row Python), the `parquet` loader
file format, which on PostgreSQL loads through ADBC (`adbc-driver-postgresql`) and on DuckDB with its
own Parquet reader, and `write_disposition={"disposition": "merge", "strategy": "upsert"}` on the
primary key `Id` (the project's semantics: insert new keys, update known ones). dlt's three steps are
timed apiece and shown in the stage columns they correspond to: extract (read the CSV, write Parquet)
as `read`, normalize as `stage`, load (Parquet into the staging dataset, then the upsert) as `merge`.

dlt is never a runtime dependency: it comes with the optional `bench` extra (`make bench` installs it).
When it is missing, `available()` says why and the parent skips only these rows.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from pathlib import Path

PEERS = ("dlt_pg_first", "dlt_pg_reload", "dlt_duckdb_first", "dlt_duckdb_reload")
CHUNK_ROWS = 100_000  # read_csv_duckdb's Arrow batch (its default 5,000 is meant for JSON rows); not tuned further
DATASET = "dlt_bench"
INSTALL_HINT = "make bench installs the bench extra"


def available(target: str | None = None) -> tuple[bool, str]:
    """Whether the peer rows can run, and if not, why (the bench prints it)."""
    missing = [name for name in ("dlt", "duckdb", "pyarrow") if importlib.util.find_spec(name) is None]
    if target in (None, "pg"):
        missing += [name for name in ("adbc_driver_postgresql", "psycopg2") if importlib.util.find_spec(name) is None]
    if missing:
        return False, f"dlt peer rows skipped: {', '.join(missing)} not installed ({INSTALL_HINT})"
    return True, ""


def version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("dlt")
    except metadata.PackageNotFoundError:
        return None


def _pipelines_dir(args) -> Path:
    """One dlt pipeline (state, schema) per round and target: the re-load finds what the first load left."""
    stem = args.db if args.variant.startswith("dlt_pg") else Path(args.duckdb).stem
    return args.workdir / f"dlt_{stem}"


def run_peer(args) -> dict:
    """One dlt variant: extract, normalize and load timed apiece."""
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    import dlt
    from dlt.sources.filesystem import filesystem, read_csv_duckdb

    target = "pg" if args.variant.startswith("dlt_pg") else "duckdb"
    home = _pipelines_dir(args)
    if args.variant.endswith("_first"):
        shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    if target == "pg":
        from benchmarks.postgres import PG

        destination = dlt.destinations.postgres(
            credentials=f"postgresql://{PG['user']}:trust@{PG['host']}:{PG['port']}/{args.db}")
    else:
        destination = dlt.destinations.duckdb(credentials=str(Path(args.duckdb).with_name(Path(args.duckdb).stem + "_dlt.duckdb")))
    table = args.object.lower()
    pipeline = dlt.pipeline(pipeline_name=f"bench_{target}", destination=destination, dataset_name=DATASET,
                            pipelines_dir=str(home))
    file = Path(args.file).resolve()
    files = filesystem(bucket_url=file.parent.as_uri(), file_glob=file.name)
    reader = (files | read_csv_duckdb(use_pyarrow=True, chunk_size=CHUNK_ROWS)).with_name(table)
    reader.apply_hints(primary_key="Id", write_disposition={"disposition": "merge", "strategy": "upsert"})
    stages: dict[str, float] = {}
    started = time.perf_counter()
    pipeline.extract(reader, loader_file_format="parquet")
    extracted = time.perf_counter()
    stages["read"] = extracted - started
    pipeline.normalize()  # as pipeline.run() calls it
    normalized = time.perf_counter()
    stages["stage"] = normalized - extracted
    info = pipeline.load()
    finished = time.perf_counter()
    stages["merge"] = finished - normalized
    info.raise_on_failed_jobs()
    formats = sorted({job.job_file_info.file_format for package in info.load_packages
                      for job in package.jobs.get("completed_jobs", [])})
    rows = int(pipeline.last_trace.last_normalize_info.row_counts.get(table, 0))
    with pipeline.sql_client() as client:
        in_table = client.execute_sql(f"SELECT COUNT(*) FROM {client.make_qualified_table_name(table)}")[0][0]
    return {"rows": rows, "total": finished - started, "stages": stages, "rows_in_table": int(in_table),
            "file_formats": formats, "dlt": version(), "chunk_rows": CHUNK_ROWS}
