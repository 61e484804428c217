"""The figures and pictures of docs/, made from what they show, never copied by hand: `make docs`.

    python docs/generate.py              # rewrite every page's generated blocks from benchmarks/results/
    python docs/generate.py --check      # change nothing; list the pages whose blocks are out of date (exit 1)
    python docs/generate.py --pictures   # the blocks, then the charts and the asset graph in docs/images/

A generated block sits in a page between two comments; what stands between them is replaced:

    <!-- generated: loads.md table 1 columns: variant, total s, x own limit, peak RSS MiB -->
    <!-- end generated -->

The first word names a result under benchmarks/results/ (the latest of each benchmark: the bench writes
it there), the rest what to take from it:

- `table N [columns: a, b, ...]`: the Nth Markdown table of that result (only the named columns);
- `targets`: the result's targets, each with its figure and whether it holds;
- `measured`: when, where and at which commit it was measured;
- `memory`: (several results, `loads.json loads_5m.json memory`) the peak RSS of each first
  load at 1M rows and at the memory point's length, from the newest result that measured it.

Pictures (`--pictures`; matplotlib from the bench extra, Chromium and the UI extra for the screenshot):
the load charts from benchmarks/results/loads*.json, the design page's charts from
benchmarks/results/history/, docs/images/architecture.png from its hand-written SVG, and
docs/images/asset-graph.png: the Dagster UI's asset graph of this
code location, served by dagster-webserver on a scratch instance, photographed by Playwright driving
/usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
HISTORY = RESULTS / "history"
IMAGES = REPO / "docs" / "images"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
BLOCK = re.compile(r"(<!-- generated: (?P<spec>.*?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.DOTALL)
MIB = 2**20
if str(REPO) not in sys.path:  # run as `python docs/generate.py`: the repository's packages, the bench's too
    sys.path.insert(0, str(REPO))


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every table of a Markdown text, as rows of cells (the header first, the separator left out)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def table(result: str, words: list[str]) -> str:
    number = int(words[0])
    rows = markdown_tables((RESULTS / result).read_text())[number - 1]
    columns = range(len(rows[0]))
    rest = " ".join(words[1:])
    if rest.startswith("columns:"):
        wanted = [c.strip() for c in rest.removeprefix("columns:").split(",")]
        missing = [c for c in wanted if c not in rows[0]]
        if missing:
            raise ValueError(f"{result} table {number} has no column {missing} (it has {rows[0]})")
        columns = [rows[0].index(c) for c in wanted]
    numeric = [i for i in columns if all(re.fullmatch(r"[\d.,x%/ -]*", r[i]) for r in rows[1:])]
    lines = ["| " + " | ".join(rows[0][i] for i in columns) + " |",
             "|" + "|".join("---:" if i in numeric else "---" for i in columns) + "|"]
    lines += ["| " + " | ".join(r[i] for i in columns) + " |" for r in rows[1:]]
    return "\n".join(lines)


def document(result: str) -> dict:
    return json.loads((RESULTS / Path(result).with_suffix(".json")).read_text())


def targets(result: str) -> str:
    return "\n".join(f"- {'measured' if t['holds'] is None else 'holds' if t['holds'] else '**missed**'}: "
                     f"{t['target']}: {t['value']}"
                     for t in document(result)["targets"])


def _started_at(doc: dict, markdown: str) -> str:
    """When a result was measured: its part's `started_at` (loads), else the Markdown's "Measured ..." line."""
    for part in doc.values():
        if isinstance(part, dict) and "started_at" in part:
            return part["started_at"]
    return re.search(r"[Mm]easured (\S+?)[,;]", markdown)[1]


def measured(result: str, page: Path) -> str:
    doc, markdown = document(result), RESULTS / Path(result).with_suffix(".md").name
    env = doc.get("environment", {})
    when = _started_at(doc, markdown.read_text())[:16].replace("T", " ")
    where = f"{env['cpu']}, {env['cores']} cores, " if "cpu" in env else ""
    load = f"load average {env['loadavg'][0]:.1f} at the end" if env.get("loadavg") else ""
    commit = f", commit {env['commit']}" if env.get("commit") else ""
    link = f"[benchmarks/results/{markdown.name}]({os.path.relpath(markdown, page.parent)})"
    return f"Measured {when} UTC on {where}{load}{commit}: {link}."


def memory(results: list[str]) -> str:
    """Peak RSS of each first load at the run's length and at its memory point's, from the newest result
    that measured that load."""
    newest: dict[str, tuple[str, dict, dict, dict]] = {}  # variant -> (started_at, result, loads, memory_point)
    for result in results:
        doc = document(result)
        point = doc.get("memory_point")
        for name in (point or {}).get("variants", {}):
            if name in doc["loads"]["variants"] and point["started_at"] > newest.get(name, ("",))[0]:
                newest[name] = (point["started_at"], result, doc["loads"], point)
    label = {"pipeline_pg_first": "PostgreSQL, first load", "pipeline_duckdb_first": "DuckDB, first load"}
    lines = ["| load | rows | peak RSS | rows | peak RSS | ratio | result |", "|---|---:|---:|---:|---:|---:|---|"]
    for name, (_, result, loads, point) in sorted(newest.items(), reverse=True):
        small, big = loads["variants"][name]["peak_rss_bytes"], point["variants"][name]["peak_rss_bytes"]
        lines.append(f"| {label.get(name, name)} | {loads['rows']:,} | {small / MIB:,.0f} MiB | {point['rows']:,} | "
                     f"{big / MIB:,.0f} MiB | {big / small:.2f}x | `{Path(result).with_suffix('.md').name}` |")
    return "\n".join(lines)


def render(spec: str, page: Path) -> str:
    words = spec.split()
    results = [w for w in words if re.fullmatch(r"[\w.-]+\.(md|json)", w)]
    what, args = words[len(results)], words[len(results) + 1:]
    if what == "memory":
        text = memory(results)
    elif what == "table":
        text = table(results[0], args)
    elif what == "targets":
        text = targets(results[0])
    elif what == "measured":
        text = measured(results[0], page)
    else:
        raise ValueError(f"{page}: unknown generated block {spec!r}")
    return text + "\n"


def generated(page: Path) -> str:
    """The page as the generator writes it."""
    text = page.read_text()
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("spec"), page) + m.group(4), text)


def stale_pages() -> list[Path]:
    return [page for page in PAGES if BLOCK.search(page.read_text()) and generated(page) != page.read_text()]


def write_blocks() -> list[Path]:
    changed = stale_pages()
    for page in changed:
        page.write_text(generated(page))
    return changed


# Pictures.

def _figures():
    """The benchmark's chart module, wherever the bench code lives."""
    for module in ("benchmarks.bench.figures", "benchmarks.figures", "etl_assets.tools.bench.figures"):
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError:
            continue
    raise SystemExit("the benchmark's figures module is not importable: install the bench extra (make install-bench)")


def charts() -> list[Path]:
    figures = _figures()
    design = IMAGES / "design"
    design.mkdir(parents=True, exist_ok=True)
    load = lambda path: json.loads(path.read_text())  # noqa: E731
    written = [IMAGES / "big-file-loads.png", IMAGES / "big-file-stages.png", IMAGES / "big-file-memory.png"]
    latest = load(RESULTS / "loads.json")
    figures.ratios_chart(latest, written[0])
    figures.stages_chart(latest, written[1])
    # By length (33 columns, 1M then 5M rows: each engine's 5M-row point from the newest run that measured it),
    # then by width (120 columns).
    five_m = {}
    for name in ("loads", "loads_5m", "loads_5m_duckdb"):
        point = load(RESULTS / f"{name}.json").get("memory_point") or {"variants": {}, "started_at": ""}
        for variant, figures_ in point["variants"].items():
            if variant not in five_m or point["started_at"] > five_m[variant][0]:
                five_m[variant] = (point["started_at"], figures_)
    wide = load(RESULTS / "loads_120col.json")
    points = [("33 columns\n1M rows", latest["loads"]["variants"]),
              ("33 columns\n5M rows", {variant: f for variant, (_, f) in five_m.items()}),
              (f"{wide['loads']['files']['first']['columns']} columns\n1M rows", wide["loads"]["variants"])]
    figures.memory_chart(points, written[2])
    first = load(HISTORY / "2026-12-01_loads_33col.json")
    figures.ratios_chart(first, design / "big-file-loads-first-measurement.png")
    profiles = {t: load(HISTORY / f"2026-12-01_loads_profile_{t}.json") for t in ("pg", "duckdb")}
    figures.profile_chart(profiles, design / "big-file-profile.png")
    return written + [design / "big-file-loads-first-measurement.png", design / "big-file-profile.png"]


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def architecture(source: Path = IMAGES / "architecture.svg") -> Path:
    """The hand-written data-flow picture, rendered at its own size."""
    from playwright.sync_api import sync_playwright

    size = re.search(r'<svg[^>]*\bwidth="(\d+)"[^>]*\bheight="(\d+)"', source.read_text())
    out = source.with_suffix(".png")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": int(size[1]), "height": int(size[2])})
        page.goto(source.as_uri())
        page.screenshot(path=str(out))
        browser.close()
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(f"{url}/graphql", json.dumps({"query": query}).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def asset_graph(out: Path = IMAGES / "asset-graph.png", timeout: float = 300) -> Path:
    """The UI's global asset lineage with every group collapsed to its name and number of assets."""
    from playwright.sync_api import sync_playwright

    from etl_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    groups: dict[str, int] = {}
    for key in graph.get_all_asset_keys():
        groups[graph.get(key).group_name] = groups.get(graph.get(key).group_name, 0) + 1
    with tempfile.TemporaryDirectory(prefix="docs-ui-") as scratch:
        root = Path(scratch)
        home, landing = root / "dagster_home", root / "landing"
        home.mkdir()
        landing.mkdir()
        shutil.copy(REPO / "deploy" / "dagster.local.yaml", home / "dagster.yaml")
        shutil.copy(REPO / "etl_assets" / "salesforce" / "discovered.yaml", root / "discovered.yaml")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_ASSETS_", "DAGSTER_"))}
        env.update(DAGSTER_HOME=str(home), ETL_ASSETS_LANDING_ROOT=str(landing),
                   ETL_ASSETS_DUCKDB_PATH=str(root / "warehouse.duckdb"),
                   ETL_ASSETS_SALESFORCE_DISCOVERED=str(root / "discovered.yaml"),
                   ETL_ASSETS_TOTESYS_SOURCE="duckdb", ETL_ASSETS_TOTESYS_DUCKDB_PATH=str(root / "totesys.duckdb"),
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        log = (root / "webserver.log").open("w")
        server = subprocess.Popen([str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml",
                                   "-h", "127.0.0.1", "-p", str(port)], cwd=REPO, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    nodes = _graphql(url, "{ workspaceOrError { ... on Workspace { locationEntries {"
                                          " locationOrLoadError { __typename } } } } }")
                    entries = nodes["data"]["workspaceOrError"]["locationEntries"]
                    if entries and all(e["locationOrLoadError"] for e in entries):
                        break
                except OSError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"dagster-webserver did not serve the code location:\n"
                                     f"{(root / 'webserver.log').read_text()[-3000:]}")
                time.sleep(1)
            _graphql(url, "mutation { setNuxSeen }")  # the community modal would cover the page
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.set_default_timeout(120_000)
                page.goto(f"{url}/asset-groups")
                page.get_by_text("Global asset lineage").wait_for()
                for group, count in groups.items():  # each group node shows its name, then its number of assets
                    end = time.monotonic() + 60
                    while not re.search(rf"^{group}\n{count}$", page.inner_text("body"), re.M):
                        if time.monotonic() > end:
                            raise SystemExit(f"the graph shows no group {group} with {count} assets")
                        time.sleep(0.5)
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out))
                browser.close()
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
    print(f"{out.relative_to(REPO)}: {len(groups)} groups, {sum(groups.values())} assets")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 naming each out-of-date page")
    parser.add_argument("--pictures", action="store_true",
                        help="also draw the charts and photograph the asset graph (docs/images/)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages()
        for page in stale:
            print(f"{page.relative_to(REPO)}: generated blocks out of date; run `make docs`")
        return 1 if stale else 0
    for page in write_blocks():
        print(f"wrote {page.relative_to(REPO)}")
    if args.pictures:
        for picture in [*charts(), architecture()]:
            print(f"wrote {picture.relative_to(REPO)}")
        asset_graph()
    return 0


if __name__ == "__main__":
    sys.exit(main())
