"""The charts of docs/big-file-loads.md, drawn from the load results under benchmarks/results/.

    python -m benchmarks.figures --results benchmarks/results --out docs/images

- big-file-loads.png: each variant's time as a multiple of its own raw limit (PostgreSQL COPY, DuckDB
  read_csv CTAS) measured in the same run, the project beside dlt, with the issue's targets;
- big-file-stages.png: where the time goes, stage by stage (dlt: extract, normalize, load);
- big-file-memory.png: peak RSS of the first loads by file width (28, 33, 120 columns) and length;
- big-file-profile.png: CPU seconds by stage and statement (benchmarks/profile_load.py).

Needs matplotlib (the `bench` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.loads import STAGES

TARGETS = {("pg", "first"): 2.0, ("pg", "reload"): 2.5, ("duckdb", "first"): 3.0, ("duckdb", "reload"): 2.5}
COLORS = {"pipeline": "#1f77b4", "dlt": "#ff7f0e", "raw": "#7f7f7f"}
MIB = 2**20


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def ratios_chart(document: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = document["loads"]["variants"]
    files = document["loads"]["files"]["first"]
    groups = [("pg", "first"), ("pg", "reload"), ("duckdb", "first"), ("duckdb", "reload")]
    figure, axes = plt.subplots(figsize=(9, 4.2))
    width = 0.38
    for i, (target, kind) in enumerate(groups):
        for j, who in enumerate(("pipeline", "dlt")):
            s = v.get(f"{who}_{target}_{kind}")
            if not s or s.get("failed"):
                continue
            x = i + (j - 0.5) * width
            axes.bar(x, s["ratio_to_limit"], width, color=COLORS[who], label=("this project" if who == "pipeline"
                                                                               else "dlt (fastest path)") if i == 0 else None)
            axes.text(x, s["ratio_to_limit"] + 0.05, f"{s['ratio_to_limit']:.2f}x\n{s['total_s']:.1f} s",
                      ha="center", va="bottom", fontsize=8)
        axes.hlines(TARGETS[(target, kind)], i - 0.45, i + 0.45, colors="black", linestyles="dashed",
                    label="target" if i == 0 else None)
    limit = {t: v[n]["total_s"] for t, n in (("pg", "raw_pg_copy"), ("duckdb", "raw_duckdb_csv")) if n in v}
    axes.set_xticks(range(len(groups)), [
        f"PostgreSQL\n{kind}" + (f" (raw COPY {limit['pg']:.1f} s)" if "pg" in limit and kind == "first" else "")
        if t == "pg" else f"DuckDB\n{kind}" + (f" (read_csv {limit['duckdb']:.1f} s)" if "duckdb" in limit and
                                               kind == "first" else "") for t, kind in groups], fontsize=8)
    axes.set_ylabel("x the raw limit of the same run (lower is better)")
    axes.set_title(f"{document['loads']['rows']:,} {document['loads']['object']} rows, {files['columns']} columns, "
                   f"{files['bytes'] / MIB:,.0f} MiB, every value quoted; best of {document['loads']['rounds']}",
                   fontsize=10)
    axes.legend(fontsize=8, loc="upper left")
    axes.set_ylim(0, max(s["ratio_to_limit"] for s in v.values() if not s.get("failed")) * 1.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def stages_chart(document: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = {k: s for k, s in document["loads"]["variants"].items() if not s.get("failed")}
    names = list(v)
    figure, axes = plt.subplots(figsize=(9, 0.42 * len(names) + 1.4))
    left = [0.0] * len(names)
    for stage in STAGES:
        widths = [v[n]["stages"].get(stage) or 0 for n in names]
        axes.barh(names, widths, left=left, label=stage)
        left = [a + b for a, b in zip(left, widths)]
    axes.barh(names, [v[n]["total_s"] if not v[n]["stages"] else 0 for n in names], color=COLORS["raw"],
              label="raw (one step)")
    rest = [max(v[n]["total_s"] - left[i], 0) if v[n]["stages"] else 0 for i, n in enumerate(names)]
    axes.barh(names, rest, left=left, color="#dddddd", label="other")
    for i, n in enumerate(names):
        axes.text(v[n]["total_s"] + 0.3, i, f"{v[n]['total_s']:.1f} s", va="center", fontsize=8)
    axes.set_xlim(0, max(v[n]["total_s"] for n in names) * 1.12)
    axes.invert_yaxis()
    axes.tick_params(axis="y", labelsize=8)
    axes.set_xlabel("seconds, best of rounds (dlt: read = extract, stage = normalize, merge = load)")
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


PROFILE_PARTS = (  # label, statement prefixes (None: a staging part)
    ("read (reader threads)", None), ("transform + validate", None), ("stage to Parquet", None),
    ("COPY into staging", ("COPY etl_staging",)),
    ("dedupe (PG DELETE / DuckDB etl_latest)", ("DELETE FROM etl_staging", "CREATE TEMPORARY TABLE etl_latest")),
    ("UPDATE / DELETE beaten rows", ("UPDATE \"", "DELETE FROM \"")),
    ("INSERT ... WHERE NOT EXISTS", ("INSERT INTO \"",)),
    ("deletion marks", ("CREATE TEMPORARY TABLE etl_deleted",)),
)


def _profile_parts(run: dict) -> list[float]:
    main = run["stages_main_thread_cpu_s"]
    parts = [max(run["staging_process_cpu_s"] - main.get("transform", 0) - main.get("stage", 0), 0),
             main.get("transform", 0), main.get("stage", 0)]
    steps = run["load_steps"]
    for _, prefixes in PROFILE_PARTS[3:]:
        chosen = [x for x in steps if x["sql"].startswith(prefixes)]
        parts.append(sum(x["client_cpu_s"] + (x["server_cpu_s"] or 0) for x in chosen))
    counted = sum(parts[3:])
    total = run["load_process_cpu_s"] + sum(x["server_cpu_s"] or 0 for x in steps)
    return parts + [max(total - counted, 0)]


def profile_chart(profiles: dict[str, dict], path: Path) -> None:
    """CPU seconds by stage and statement (client + PostgreSQL backend), from profile_load's JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(f"{'PostgreSQL' if t == 'pg' else 'DuckDB'} {'first load' if k == 'first' else 're-load'}", run)
            for t, doc in profiles.items() for k, run in doc["runs"].items()]
    labels = [label for label, _ in PROFILE_PARTS] + ["other statements"]
    figure, axes = plt.subplots(figsize=(9, 4.4))
    left = [0.0] * len(bars)
    values = [_profile_parts(run) for _, run in bars]
    for i, label in enumerate(labels):
        widths = [v[i] for v in values]
        axes.barh([b for b, _ in bars], widths, left=left, label=label)
        left = [a + b for a, b in zip(left, widths)]
    for i, total in enumerate(left):
        axes.text(total + 0.2, i, f"{total:.1f} s CPU", va="center", fontsize=8)
    axes.set_xlim(0, max(left) * 1.18)
    axes.invert_yaxis()
    axes.tick_params(axis="y", labelsize=8)
    axes.set_xlabel("CPU seconds (client threads + PostgreSQL backend), 1M rows, 33 columns")
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def memory_chart(points: list[tuple[str, dict]], path: Path) -> None:
    """points: (label, variants) with each variant's peak RSS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [("pipeline_pg_first", "project -> PostgreSQL", COLORS["pipeline"], "-"),
              ("pipeline_duckdb_first", "project -> DuckDB", COLORS["pipeline"], "--"),
              ("dlt_pg_first", "dlt -> PostgreSQL", COLORS["dlt"], "-"),
              ("dlt_duckdb_first", "dlt -> DuckDB", COLORS["dlt"], "--")]
    figure, axes = plt.subplots(figsize=(8, 3.8))
    labels = [label for label, _ in points]
    for variant, name, color, style in series:
        values = [(i, vs[variant]["peak_rss_bytes"] / MIB) for i, (_, vs) in enumerate(points)
                  if variant in vs and not vs[variant].get("failed")]
        if values:
            axes.plot([i for i, _ in values], [m for _, m in values], style, marker="o", color=color, label=name)
            for i, m in values:
                axes.annotate(f"{m:,.0f}", (i, m), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=7)
    axes.axhline(1024, color="black", linestyle=":", label="1 GiB target")
    axes.set_xticks(range(len(labels)), labels, fontsize=8)
    axes.set_ylabel("peak RSS, MiB (first load)")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--main", default="loads", help="the result drawn in the ratio and stage charts")
    parser.add_argument("--memory", default="loads_28col:28 columns,loads:33 columns,loads_5m:33 columns,loads_120col:120 columns",
                        help="comma-separated result:label for the memory chart, in order")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    main_doc = _load(args.results / f"{args.main}.json")
    ratios_chart(main_doc, args.out / "big-file-loads.png")
    stages_chart(main_doc, args.out / "big-file-stages.png")
    points = []
    for item in args.memory.split(","):
        name, _, label = item.partition(":")
        path = args.results / f"{name}.json"
        if path.exists():
            doc = _load(path)
            points.append((f"{label}\n{doc['loads']['rows'] / 1e6:g}M rows", doc["loads"]["variants"]))
            if doc.get("memory_point"):
                rows = doc["memory_point"]["rows"]
                points.append((f"{label}\n{rows / 1e6:g}M rows", doc["memory_point"]["variants"]))
    memory_chart(points, args.out / "big-file-memory.png")
    profiles = {t: _load(args.results / f"loads_profile_{t}.json") for t in ("pg", "duckdb")
                if (args.results / f"loads_profile_{t}.json").exists()}
    if profiles:
        profile_chart(profiles, args.out / "big-file-profile.png")
    print("wrote " + ", ".join(str(args.out / f"big-file-{n}.png") for n in ("loads", "stages", "memory", "profile")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
