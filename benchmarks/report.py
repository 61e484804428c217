"""Benchmark results: the printed table, JSON and Markdown under benchmarks/results/, an optional chart.

The chart is drawn only when matplotlib is already installed (it is not a dependency of the
project); otherwise the Markdown holds a text bar chart of the same stage times.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from benchmarks.loads import FLOOR_OF, STAGES
from benchmarks.postgres import PG

LABELS = {
    "raw_pg_copy": "PostgreSQL raw COPY FROM STDIN (limit)",
    "pipeline_pg_first": "pipeline -> PostgreSQL, first load",
    "pipeline_pg_reload": "pipeline -> PostgreSQL, re-load (all updates)",
    "floor_pg_update": "PostgreSQL floor: UPDATE FROM or ON CONFLICT from a loaded copy",
    "pipeline_pg_rerun": "pipeline -> PostgreSQL, re-run of the re-load (no change)",
    "pipeline_pg_mixed": "pipeline -> PostgreSQL, differential (30% new, 70% updates)",
    "raw_duckdb_csv": "DuckDB CTAS read_csv (limit)",
    "pipeline_duckdb_first": "pipeline -> DuckDB, first load",
    "pipeline_duckdb_reload": "pipeline -> DuckDB, re-load (all updates)",
    "floor_duckdb_merge": "DuckDB floor: read_csv, DELETE + INSERT into a copy (1M changed rows)",
    "pipeline_duckdb_rerun": "pipeline -> DuckDB, re-run of the re-load (no change)",
    "pipeline_duckdb_mixed": "pipeline -> DuckDB, differential (30% new, 70% updates)",
    "dlt_pg_first": "PEER dlt -> PostgreSQL, first load",
    "dlt_pg_reload": "PEER dlt -> PostgreSQL, re-load (all updates)",
    "dlt_duckdb_first": "PEER dlt -> DuckDB, first load",
    "dlt_duckdb_reload": "PEER dlt -> DuckDB, re-load (all updates)",
    "json_baseline_pg": "BASELINE replaced: pandas -> JSON -> COPY -> ON CONFLICT",
}
PACKAGES = ("dagster", "pandas", "pandera", "pyarrow", "duckdb", "psycopg2-binary", "numpy", "moto", "boto3",
            "dlt", "adbc-driver-postgresql")
GIB = 2**30


def environment() -> dict:
    """The machine, versions and load average this result was measured with."""
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = None
    try:
        memory = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))) * 1024
    except (OSError, StopIteration):
        pass
    versions = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    try:
        import psycopg2

        connection = psycopg2.connect(dbname="postgres", **PG)
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            versions["postgresql"] = cursor.fetchone()[0]
        connection.close()
    except Exception as error:  # the DuckDB-only benchmark runs without a server
        versions["postgresql"] = f"unavailable ({type(error).__name__})"
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "loadavg": os.getloadavg(),
        "commit": _commit(),
        "versions": versions,
    }


def _commit() -> str | None:
    """The checked-out commit, read from .git without running git."""
    try:
        git = Path(__file__).resolve().parents[1] / ".git"
        if git.is_file():  # a worktree: "gitdir: <path>"
            git = Path(git.read_text().split(":", 1)[1].strip())
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            path = git / ref
            if path.exists():
                return path.read_text().strip()[:12]
            for line in (git / "packed-refs").read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0][:12]
            return None
        return head[:12]
    except OSError:
        return None


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def load_rows(result: dict) -> list[list[str]]:
    rows = []
    for variant, s in result["variants"].items():
        if s.get("failed"):
            rows.append([LABELS.get(variant, variant), *[""] * len(STAGES), "FAILED", "", "", "", "",
                         f"{s['loadavg_before'][0]:.2f}"])
            continue
        stages = s["stages"]
        rows.append([
            LABELS.get(variant, variant),
            *[_seconds(stages.get(k)) for k in STAGES],
            _seconds(s["total_s"]),
            f"{s['rows_per_s']:,.0f}" if s["rows_per_s"] else "",
            f"{s['peak_rss_bytes'] / 2**20:,.0f}",
            _ratio(s["ratio_to_limit"]),
            _ratio(s["ratio_to_raw_copy"]),
            f"{s['loadavg_before'][0]:.2f}",
        ])
    return rows


LOAD_HEADER = ["variant", *STAGES, "total s", "rows/s", "peak RSS MiB", "x own limit", "x raw COPY", "load avg"]


def targets(result: dict, memory_point: dict | None = None, sensor: dict | None = None) -> list[dict]:
    """The issue's targets, evaluated on this run (ratios within the run; not timed tests)."""
    v = result["variants"]
    checks = []

    def ratio(variant, limit, label):
        if variant in v and v[variant].get("failed"):
            checks.append({"target": label, "value": f"FAILED: {v[variant]['error']}", "holds": False})
        elif variant in v and v[variant]["ratio_to_limit"] is not None:
            value = v[variant]["ratio_to_limit"]
            checks.append({"target": label, "value": f"{value:.2f}x", "holds": value <= limit})

    ratio("pipeline_pg_first", 2.0, "PostgreSQL first load <= 2.0x raw COPY")
    ratio("pipeline_pg_reload", 2.5, "PostgreSQL re-load (all updates) <= 2.5x raw COPY")
    ratio("pipeline_duckdb_first", 3.0, "DuckDB first load <= 3.0x DuckDB read_csv CTAS")
    ratio("pipeline_duckdb_reload", 2.5, "DuckDB re-load (all updates) <= 2.5x DuckDB read_csv CTAS")
    for ours, peer in (("pipeline_pg_first", "dlt_pg_first"), ("pipeline_pg_reload", "dlt_pg_reload"),
                       ("pipeline_duckdb_first", "dlt_duckdb_first"), ("pipeline_duckdb_reload", "dlt_duckdb_reload")):
        a, b = v.get(ours), v.get(peer)
        if a and b and not a.get("failed") and not b.get("failed"):
            checks.append({"target": f"{ours} ahead of dlt ({peer})",
                           "value": f"{a['total_s']:.2f} s vs {b['total_s']:.2f} s ({a['total_s'] / b['total_s']:.2f}x)",
                           "holds": a["total_s"] < b["total_s"]})
    for engine, name in (("pg", "PostgreSQL"), ("duckdb", "DuckDB")):
        first, rerun = v.get(f"pipeline_{engine}_first"), v.get(f"pipeline_{engine}_rerun")
        if first and rerun and not first.get("failed") and not rerun.get("failed"):
            share = rerun["total_s"] / first["total_s"]
            checks.append({"target": f"{name} re-run of the same file (nothing changes) <= 0.5x its first load",
                           "value": f"{rerun['total_s']:.2f} s vs {first['total_s']:.2f} s ({share:.2f}x)",
                           "holds": share <= 0.5})
        reload, floor = v.get(f"pipeline_{engine}_reload"), v.get(FLOOR_OF[engine])
        limit = v.get("raw_pg_copy" if engine == "pg" else "raw_duckdb_csv")
        if reload and floor and limit and not any(x.get("failed") for x in (reload, floor, limit)):
            work = floor["total_s"] + (limit["total_s"] if engine == "pg" else 0)
            what = "raw COPY + update floor" if engine == "pg" else "read_csv, DELETE + INSERT"
            checks.append({"target": f"{name} re-load (all updates) vs the engine's own work ({what}), "
                                     "measured, no target",
                           "value": f"{reload['total_s']:.2f} s vs {work:.2f} s ({reload['total_s'] / work:.2f}x; "
                                    f"{reload['ratio_to_floor']:.2f}x the floor alone)", "holds": None})
    for variant, s in v.items():
        if variant.startswith("pipeline_") and s.get("failed"):
            checks.append({"target": f"{variant} completes", "value": f"FAILED: {s['error']}", "holds": False})
        elif variant.startswith("pipeline_"):
            checks.append({"target": f"{variant}: peak RSS <= 1 GiB ({result['rows']:,} rows)",
                           "value": f"{s['peak_rss_bytes'] / 2**20:,.0f} MiB", "holds": s["peak_rss_bytes"] <= GIB})
            share = (s["stages"].get("validate") or 0) / s["total_s"]
            checks.append({"target": f"{variant}: Pandera validation <= 15% of end to end",
                           "value": f"{share:.1%}", "holds": share <= 0.15})
    if memory_point:
        for variant, s in memory_point["variants"].items():
            base = v.get(variant)
            if s.get("failed"):
                checks.append({"target": f"{variant} at {memory_point['rows']:,} rows completes",
                               "value": f"FAILED: {s['error']}", "holds": False})
            elif base and not base.get("failed"):
                checks.append({"target": f"{variant}: peak RSS <= 1 GiB ({memory_point['rows']:,} rows)",
                               "value": f"{s['peak_rss_bytes'] / 2**20:,.0f} MiB", "holds": s["peak_rss_bytes"] <= GIB})
                growth = s["peak_rss_bytes"] / base["peak_rss_bytes"]
                checks.append({"target": f"{variant}: peak RSS at {memory_point['rows']:,} rows within 1.2x of "
                                         f"{result['rows']:,} rows", "value": f"{growth:.2f}x "
                                         f"({s['peak_rss_bytes'] / 2**20:,.0f} MiB)", "holds": growth <= 1.2})
    for zone in (sensor or {}).get("landing_zones", []):
        tick = zone["one_new_folder"]
        checks.append({"target": f"sensor ({zone['kind']}, {zone['folders']:,} folders): tick with one new folder <= 2 s",
                       "value": f"{tick['seconds']:.3f} s, {tick['list_calls']} list calls",
                       "holds": tick["seconds"] <= 2.0 and tick["list_calls"] <= zone["list_call_bound"]})
    return checks


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def text_chart(result: dict, width: int = 50) -> str:
    """Stage times as stacked text bars: r=read t=transform v=validate s=stage m=merge, #=no stages
    (dlt's rows: r=extract s=normalize m=load)."""
    done = {k: s for k, s in result["variants"].items() if not s.get("failed")}
    longest = max([s["total_s"] for s in done.values()] or [1.0])
    lines = []
    for variant, s in result["variants"].items():
        if s.get("failed"):
            lines.append(f"{variant:<24} FAILED: {s['error'][:80]}")
            continue
        bar = ""
        if s["stages"]:
            for stage in STAGES:
                bar += stage[0] * round((s["stages"].get(stage) or 0) / longest * width)
        else:
            bar = "#" * round(s["total_s"] / longest * width)
        lines.append(f"{variant:<24} {bar} {s['total_s']:.1f} s")
    return "\n".join(lines)


def png_chart(result: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    variants = [k for k, s in result["variants"].items() if not s.get("failed")]
    figure, axes = plt.subplots(figsize=(9, 0.5 * len(variants) + 1.5))
    left = [0.0] * len(variants)
    for stage in STAGES:
        widths = [result["variants"][v]["stages"].get(stage) or 0 for v in variants]
        axes.barh(variants, widths, left=left, label=stage)
        left = [a + b for a, b in zip(left, widths)]
    raw = [result["variants"][v]["total_s"] if not result["variants"][v]["stages"] else 0 for v in variants]
    axes.barh(variants, raw, label="raw (one step)", color="grey")
    axes.invert_yaxis()
    axes.set_xlabel("seconds (best of rounds); dlt: read = extract, stage = normalize, merge = load")
    files = result["files"]["first"]
    axes.set_title(f"{result['rows']:,} {result['object']} rows, {files['columns']} columns, "
                   f"{files['bytes'] / 2**20:,.0f} MiB")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


ONE_PROCESS = ("Processes: every variant ran in the benchmark's own process (--loads-one-process), not a fresh one "
               "each: peak RSS is that process's highest so far, not a variant's own")


def print_loads(result: dict, memory_point: dict | None = None) -> None:
    files = result["files"]["first"]
    print(f"\nLoad benchmark: {result['rows']:,} {result['object']} rows ({files['columns']} columns, "
          f"{files['bytes'] / 1e6:,.0f} MB CSV), best of {result['rounds']} round(s) "
          f"(baseline: {result['baseline_rounds']})")
    print(f"Source: {result.get('source', '')}")
    print(f"History: {result.get('history', 'on (the catalog default)')}")
    print(peer_line(result))
    if result.get("one_process"):
        print(ONE_PROCESS)
    print()
    print(table(LOAD_HEADER, load_rows(result)))
    if memory_point:
        print(f"\nMemory point: {memory_point['rows']:,} rows")
        print(table(LOAD_HEADER, load_rows(memory_point)))


def print_targets(checks: list[dict]) -> None:
    print("\nTargets (ratios within this run):")
    for c in checks:
        print(f"  [{'info' if c['holds'] is None else 'ok  ' if c['holds'] else 'MISS'}] {c['target']}: {c['value']}")


def peer_line(result: dict) -> str:
    """Whether dlt's rows ran, and how (or why not)."""
    peers = result.get("peers") or {}
    if peers.get("ran"):
        return (f"Peers: dlt {peers.get('dlt')}, read_csv_duckdb(use_pyarrow=True, chunk_size={peers.get('chunk_rows'):,}) "
                "-> Parquet (ADBC into PostgreSQL) -> merge strategy upsert on Id (benchmarks/peers.py)")
    return f"Peers: {peers.get('note') or 'not run (--no-peers)'}"


def write_loads(out: Path, result: dict, env: dict, memory_point: dict | None = None, name: str = "loads") -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    checks = targets(result, memory_point)
    document = {"environment": env, "loads": result, "memory_point": memory_point, "targets": checks}
    written = [out / f"{name}.json", out / f"{name}.md"]
    written[0].write_text(json.dumps(document, indent=2, default=str) + "\n")
    files = result["files"]["first"]
    md = [
        f"# Load benchmark: {result['rows']:,} {result['object']} rows",
        "",
        f"{files['columns']} columns, {files['bytes'] / 1e6:,.0f} MB CSV; best of {result['rounds']} round(s) "
        f"(the JSON baseline: {result['baseline_rounds']}), measured {result['started_at']}.",
        f"Machine: {env['cpu']}, {env['cores']} cores, {(env['memory_bytes'] or 0) / GIB:.0f} GiB; load average at "
        f"the end {', '.join(f'{x:.2f}' for x in env['loadavg'])}; commit {env['commit']}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + ".",
        f"Source: {result.get('source', '')}.",
        f"History: {result.get('history', 'on (the catalog default)')}.",
        peer_line(result) + ".",
        *([ONE_PROCESS + "."] if result.get("one_process") else []),
        "",
        markdown_table(LOAD_HEADER, load_rows(result)),
        "",
    ]
    if memory_point:
        md += [f"Memory point, {memory_point['rows']:,} rows:", "", markdown_table(LOAD_HEADER, load_rows(memory_point)), ""]
    md += ["Targets (ratios within this run; not timed tests):", ""]
    md += [f"- {'measured' if c['holds'] is None else 'holds' if c['holds'] else '**missed**'}: {c['target']}: "
           f"{c['value']}" for c in checks]
    md += ["", "Stage times (r=read t=transform v=validate s=stage m=merge, #=raw, one step):", "", "```",
           text_chart(result), "```", ""]
    if png_chart(result, out / f"{name}.png"):
        written.append(out / f"{name}.png")
        md += [f"![stage times]({name}.png)", ""]
    written[1].write_text("\n".join(md))
    return written


SENSOR_HEADER = ["landing zone", "folders", "files", "setup s", "first tick s", "first tick list calls",
                 "idle tick s", "idle tick list calls", "one new folder s", "one new folder list calls",
                 "run requests (first / new)"]


def sensor_rows(sensor: dict) -> list[list[str]]:
    return [[z["kind"], f"{z['folders']:,}", f"{z['files']:,}", f"{z['setup_seconds']:.1f}",
             f"{z['first_tick']['seconds']:.3f}", str(z["first_tick"]["list_calls"]),
             f"{z['idle_tick']['seconds']:.3f}", str(z["idle_tick"]["list_calls"]),
             f"{z['one_new_folder']['seconds']:.3f}", str(z["one_new_folder"]["list_calls"]),
             f"{z['first_tick']['run_requests']} / {z['one_new_folder']['run_requests']}"]
            for z in sensor.get("landing_zones", [])]


GRAPHQL_HEADER = ["query", "seconds (best)", "all", "result"]


def graphql_rows(sensor: dict) -> list[list[str]]:
    g = sensor.get("graphql") or {}
    return [[q["name"], f"{min(q['seconds']):.3f}", ", ".join(f"{x:.3f}" for x in q["seconds"]), q["result"]]
            for q in g.get("queries", [])]


def print_sensor(sensor: dict) -> None:
    print(f"\nSensor scale: {sensor['objects_per_folder']} objects per folder")
    print(table(SENSOR_HEADER, sensor_rows(sensor)))
    for note in sensor.get("notes", []):
        print(f"  note: {note}")
    g = sensor.get("graphql")
    if g:
        print(f"\nDagster UI GraphQL with {g['partitions']:,} dynamic partitions "
              f"(webserver ready in {g['startup_seconds']:.1f} s)")
        print(table(GRAPHQL_HEADER, graphql_rows(sensor)))


def write_sensor(out: Path, sensor: dict, env: dict) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    checks = targets({"variants": {}, "rows": 0}, sensor=sensor)
    (out / "sensor.json").write_text(json.dumps({"environment": env, "sensor": sensor, "targets": checks},
                                                indent=2, default=str) + "\n")
    zones = ", ".join(f"{z['folders']:,} folders ({z['kind']})" for z in sensor["landing_zones"])
    md = [f"# Sensor and partition scale: {zones}",
          "", f"Measured {sensor['started_at']}; load average at the end {', '.join(f'{x:.2f}' for x in env['loadavg'])}.",
          "", markdown_table(SENSOR_HEADER, sensor_rows(sensor)), ""]
    md += [f"- {n}" for n in sensor.get("notes", [])]
    g = sensor.get("graphql")
    if g:
        md += ["", f"Dagster UI GraphQL API (dagster-webserver, {g['partitions']:,} dynamic partitions; "
                   f"webserver ready in {g['startup_seconds']:.1f} s):", "", markdown_table(GRAPHQL_HEADER, graphql_rows(sensor))]
    md += ["", "Targets:", ""] + [f"- {'holds' if c['holds'] else '**missed**'}: {c['target']}: {c['value']}" for c in checks]
    (out / "sensor.md").write_text("\n".join(md) + "\n")
    return [out / "sensor.json", out / "sensor.md"]


# ---------------------------------------------------------------- discovered objects (bench/catalog.py)

MIB = 2**20
CATALOG_LOAD_HEADER = ["discovered objects", "assets", "asset checks", "groups", "import s", "repository s",
                       "snapshot s", "total s (best)", "all rounds", "peak RSS MiB", "snapshot MB"]
CATALOG_SENSOR_HEADER = ["landing zone", "folders x objects", "first tick s", "first list calls",
                         "unchanged tick s", "unchanged list calls", "one new folder s", "new folder list calls",
                         "expected (unchanged / new)", "run requests (first / new)"]
CATALOG_UI_HEADER = ["query", "what", "0 objects s", "N objects s", "x", "N result", "N response MB"]


def catalog_load_rows(c: dict) -> list[list[str]]:
    rows = []
    for label, r in (("0 (baseline)", c["load"]["baseline"]), (f"{c['objects']:,}", c["load"]["discovered"])):
        rows.append([label, str(r["assets"]), f"{r['asset_checks']:,}", str(r["groups"]), f"{r['import_s']:.2f}",
                     f"{r['repository_s']:.2f}", f"{r['snapshot_s']:.2f}", f"{r['total_s']:.2f}",
                     ", ".join(f"{x:.2f}" for x in r["rounds"]), f"{r['peak_rss_bytes'] / MIB:,.0f}",
                     f"{r['snapshot_bytes'] / 1e6:.1f}"])
    return rows


def catalog_sensor_rows(c: dict) -> list[list[str]]:
    rows = []
    for z in c["sensor"]:
        e = z["expected_list_calls"]
        rows.append([z["kind"], f"{z['folders']} x {z['objects']}", f"{z['first_tick']['seconds']:.3f}",
                     str(z["first_tick"]["list_calls"]), f"{z['unchanged_tick']['seconds']:.3f}",
                     str(z["unchanged_tick"]["list_calls"]), f"{z['one_new_folder']['seconds']:.3f}",
                     str(z["one_new_folder"]["list_calls"]), f"{e['unchanged']} / {e['one_new_folder']}",
                     f"{z['first_tick']['run_requests']} / {z['one_new_folder']['run_requests']}"])
    return rows


def catalog_ui_rows(c: dict) -> list[list[str]]:
    g = c.get("graphql")
    if not g:
        return []
    base = {q["name"]: q for q in g["baseline"]["queries"]}
    rows = []
    for q in g["discovered"]["queries"]:
        b = base.get(q["name"])
        rows.append([q["name"], q["what"], f"{b['best_s']:.3f}" if b else "", f"{q['best_s']:.3f}",
                     f"{q['best_s'] / b['best_s']:.1f}x" if b and b["best_s"] else "", q["result"],
                     f"{q['response_bytes'] / 1e6:.2f}"])
    rows.append(["(webserver start to location loaded)", "", f"{g['baseline']['startup_seconds']:.1f}",
                 f"{g['discovered']['startup_seconds']:.1f}", "", "", ""])
    return rows


def catalog_summary(c: dict) -> list[str]:
    s = c["state"]
    base, found = c["load"]["baseline"], c["load"]["discovered"]
    lines = [f"{c['objects']:,} generated objects ({s['standard']} standard, {s['custom']} custom, {s['managed']} managed "
             f"in 4 namespaces), {s['fields_min']}-{s['fields_max']} fields each, {s['fields_total']:,} in all; "
             f"discovered.yaml {s['bytes'] / 1e6:.1f} MB",
             f"code-location load: +{found['total_s'] - base['total_s']:.2f} s "
             f"({(found['total_s'] - base['total_s']) / max(c['objects'], 1) * 1000:.1f} ms per object), "
             f"+{(found['peak_rss_bytes'] - base['peak_rss_bytes']) / MIB:,.0f} MiB peak RSS"]
    for z in c["sensor"]:
        e = z["expected_list_calls"]
        ok = z["unchanged_tick"]["list_calls"] == e["unchanged"] and z["one_new_folder"]["list_calls"] == e["one_new_folder"]
        lines.append(f"sensor ({z['kind']}): list calls {'are' if ok else 'are NOT'} O(new): unchanged tick "
                     f"{z['unchanged_tick']['list_calls']} (the {c['open_folders']} open folders), one new folder "
                     f"+{z['one_new_folder']['list_calls'] - z['unchanged_tick']['list_calls']}")
    return lines


def print_catalog(c: dict) -> None:
    print(f"\nDiscovered objects: {c['objects']:,} (best of {c['rounds']})")
    for line in catalog_summary(c):
        print(f"  {line}")
    print()
    print(table(CATALOG_LOAD_HEADER, catalog_load_rows(c)))
    print()
    print(table(CATALOG_SENSOR_HEADER, catalog_sensor_rows(c)))
    if c.get("graphql"):
        print()
        print(table(CATALOG_UI_HEADER, catalog_ui_rows(c)))
    if c.get("graphql_error"):
        print(f"\nDagster UI GraphQL not measured: {c['graphql_error'][:1000]}")


def write_catalog(out: Path, c: dict, env: dict) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "catalog.json").write_text(json.dumps({"environment": env, "catalog": c}, indent=2, default=str) + "\n")
    md = [f"# Cost of {c['objects']:,} discovered Salesforce objects", "",
          f"Measured {c['started_at']}, best of {c['rounds']} (fresh interpreters for the load); machine: {env['cpu']}, "
          f"{env['cores']} cores; load average at the end {', '.join(f'{x:.2f}' for x in env['loadavg'])}; "
          f"commit {env['commit']}. Produced by `etl-assets bench --only catalog` (benchmarks/catalog.py); "
          "read with docs/salesforce-objects-cost.md.", ""]
    md += [f"- {line}" for line in catalog_summary(c)]
    md += ["", "Code-location load (import etl_assets.definitions, build the repository, serialize the snapshot a "
               "code server sends the webserver):", "", markdown_table(CATALOG_LOAD_HEADER, catalog_load_rows(c)), "",
           f"Sensor ticks (scan_backups; {c['open_folders']} open folders; every object folder holds one empty CSV):",
           "", markdown_table(CATALOG_SENSOR_HEADER, catalog_sensor_rows(c)), ""]
    if c.get("graphql"):
        g = c["graphql"]["discovered"]
        md += [f"Dagster UI GraphQL (dagster-webserver; the bundled UI's own query documents; {g['partitions']} dynamic "
               f"partitions; groups: {', '.join(g['groups'])}):", "", markdown_table(CATALOG_UI_HEADER, catalog_ui_rows(c)), ""]
    if c.get("graphql_error"):
        md += [f"Dagster UI GraphQL: not measured: {c['graphql_error'][:500]}", ""]
    if c.get("profile"):
        md += [f"Profile of one load: {c['profile']}", ""]
    (out / "catalog.md").write_text("\n".join(md))
    return [out / "catalog.json", out / "catalog.md"]


# ---------------------------------------------------------------- folder runs (benchmarks/folder_run.py)

FOLDER_RUN_HEADER = ["setup", "run", "status", "steps ok", "run start->end s", "submit->end s", "sum of steps s",
                     "longest step s", "steps at once", "load avg (1 min) before/after"]
FOLDER_RUN_TARGETS = "targets (issue 17): 10 objects <= 10 s from run start; +<= 1 s per further object; 30 folders <= 180 s"


def folder_run_rows(f: dict) -> list[list[str]]:
    rows = []
    for setup in f["setups"]:
        label = f"{setup['setup']} (pool {setup['pool_limit']})"
        for r in setup["runs"]:
            rows.append([label, f"1 folder x {r['objects']} objects", r["status"], f"{r['steps_succeeded']}/{r['steps']}",
                         _seconds(r["wall_s"]), _seconds(r["submit_to_end_s"]), _seconds(r["step_sum_s"]),
                         _seconds(r["step_max_s"]), str(r["parallel_peak"]),
                         f"{r['loadavg_before'][0]:.2f} / {r['loadavg_after'][0]:.2f}"])
        b = setup.get("backfill")
        if b:
            rows.append([label, f"backfill {b['folders']} folders x {b['objects_per_folder']}", b["status"],
                         f"{b['runs_succeeded']}/{b['runs']} runs", _seconds(b["first_run_start_to_end_s"]),
                         _seconds(b["wall_s"]), _seconds(b["step_sum_s"]), "", "",
                         f"{b['loadavg_before'][0]:.2f} / {b['loadavg_after'][0]:.2f}"])
        if setup.get("error"):
            rows.append([label, "error", setup["error"][:120], "", "", "", "", "", "", ""])
    return rows


def folder_run_summary(f: dict) -> list[str]:
    lines = []
    runs = {r["objects"]: r for s in f["setups"] if s["warehouse"] == "duckdb" for r in s["runs"]}
    if 10 in runs and runs[10]["wall_s"]:
        lines.append(f"10 objects on DuckDB: {runs[10]['wall_s']:.1f} s from run start (target 10 s)")
    ten = runs.get(10)
    for n in sorted(k for k in runs if k > 10):
        if ten and runs[n]["wall_s"] and ten["wall_s"]:
            per = (runs[n]["wall_s"] - ten["wall_s"]) / (n - 10)
            lines.append(f"{n} objects: {runs[n]['wall_s']:.1f} s, {per:.2f} s per object beyond 10 (target 1 s)")
    for s in f["setups"]:
        if s.get("backfill"):
            b = s["backfill"]
            lines.append(f"backfill of {b['folders']} folders on {s['setup']}: {b['wall_s']:.0f} s from submission "
                         "(target 180 s)")
        if s["warehouse"] == "postgres":
            for r in s["runs"]:
                lines.append(f"PostgreSQL, pool {s['pool_limit']}: {r['objects']} objects in {_seconds(r['wall_s'])} s "
                             f"from run start, up to {r['parallel_peak']} steps at once")
    return lines


def print_folder_run(f: dict) -> None:
    print("\nFolder runs through dagster-webserver + dagster-daemon (runs submitted over GraphQL)")
    print(table(FOLDER_RUN_HEADER, folder_run_rows(f)))
    for line in folder_run_summary(f):
        print(f"  {line}")
    print(f"  {FOLDER_RUN_TARGETS}")


def write_folder_run(out: Path, f: dict, env: dict) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "folder_run.json").write_text(json.dumps({"environment": env, "folder_run": f}, indent=2, default=str) + "\n")
    md = ["# Folder runs through the daemon", "",
          f"Measured {f['started_at']}; machine: {env['cpu']}, {env['cores']} cores; load average at the end "
          f"{', '.join(f'{x:.2f}' for x in env['loadavg'])} (each run's own before/after is in the table); commit "
          f"{env['commit']}. Produced by `etl-assets bench --only folder_run` (benchmarks/folder_run.py); read "
          "with docs/runs-and-executors.md. Run start->end is Dagster's run start (the run process has loaded the "
          "code location) to its end; submit->end adds the queue and the run process's start.", ""]
    md += [f"- {line}" for line in folder_run_summary(f)] + [f"- {FOLDER_RUN_TARGETS}", ""]
    md += [markdown_table(FOLDER_RUN_HEADER, folder_run_rows(f)), ""]
    (out / "folder_run.md").write_text("\n".join(md))
    return [out / "folder_run.json", out / "folder_run.md"]
