"""The docs are a reference, their history in docs/design/: every generated block is what
docs/generate.py writes from benchmarks/results/ (figures are not copied by hand), the reference pages
carry no dated lab notes, every design page is linked from one and its links resolve (test_docs.py
checks the reference pages' links and commands).

Quick (under a second): reads files only, no service, no picture drawn.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("docs_generate", REPO / "docs" / "generate.py")
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)

WITH_BLOCKS = [p for p in generate.PAGES if generate.BLOCK.search(p.read_text())]
DESIGN = sorted((REPO / "docs" / "design").glob("*.md")) + [REPO / "benchmarks" / "results" / "history" / "README.md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_the_pages_with_figures_have_generated_blocks():
    names = {p.relative_to(REPO).as_posix() for p in WITH_BLOCKS}
    assert {"docs/big-file-loads.md", "docs/performance.md"} <= names, names


@pytest.mark.parametrize("page", WITH_BLOCKS, ids=[str(p.relative_to(REPO)) for p in WITH_BLOCKS])
def test_every_generated_block_is_what_the_generator_writes(page: Path):
    assert generate.generated(page) == page.read_text(), (
        f"{page.relative_to(REPO)}: a generated block differs from benchmarks/results/ (edited by hand, or the "
        "results changed): run `make docs` (or `.venv/bin/python docs/generate.py` for the blocks only)")


def test_a_block_names_a_result_and_what_to_take_from_it(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- generated: loads.md table 1 columns: variant, total s -->\nstale\n<!-- end generated -->\n")
    text = generate.generated(page)
    assert "stale" not in text and "| variant | total s |" in text and text.endswith("<!-- end generated -->\n")
    page.write_text("<!-- generated: loads.md table 1 columns: no such column -->\n<!-- end generated -->\n")
    with pytest.raises(ValueError, match="no column"):
        generate.generated(page)
    page.write_text("<!-- generated: loads.md frobnicate -->\n<!-- end generated -->\n")
    with pytest.raises(ValueError, match="unknown generated block"):
        generate.generated(page)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {re.sub(r"[^\w\- ]", "", re.sub(r"[`*_]", "", h.strip().lower())).replace(" ", "-")
            for h in re.findall(r"^#+\s+(.*)$", text, re.MULTILINE)}


@pytest.mark.parametrize("doc", DESIGN, ids=[str(d.relative_to(REPO)) for d in DESIGN])
def test_the_design_pages_links_and_paths_resolve(doc: Path):
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.DOTALL)
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = doc.parent / path if path else doc
        assert linked.exists(), f"{doc.relative_to(REPO)}: link to {target}: no such file"
        assert not anchor or anchor in anchors(linked), f"{doc.relative_to(REPO)}: link to {target}: no such heading"
    mentioned = re.findall(r"(?<![\w/.<$])(benchmarks/results/[\w./-]*[\w])", text)
    missing = sorted({m for m in mentioned if not (REPO / m).exists()})
    assert not missing, f"{doc.relative_to(REPO)} mentions {missing}, which do not exist"


def test_every_design_page_is_linked_from_a_reference_page():
    reference = "\n".join(p.read_text() for p in (REPO / "docs").glob("*.md"))
    for page in (REPO / "docs" / "design").glob("*.md"):
        assert f"design/{page.name}" in reference, f"no reference page links docs/design/{page.name}"


def test_every_picture_is_shown_somewhere():
    shown = "\n".join(p.read_text() for p in [REPO / "README.md", *(REPO / "docs").rglob("*.md")])
    for picture in (REPO / "docs" / "images").rglob("*.png"):
        assert picture.name in shown, f"{picture.relative_to(REPO)} is shown by no page"


REFERENCE = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# What a lab notebook writes and a reference page should not: the day of a measurement, this project's
# issue numbers, commit ids. (Data examples are dated 2024; an external project's issue is a link.)
NOTEBOOK = re.compile(r"\b202[5-9]-\d\d-\d\d\b|\b[Ii]ssue \d+\b|\bcommit `?[0-9a-f]{7,40}\b")


@pytest.mark.parametrize("page", REFERENCE, ids=[str(p.relative_to(REPO)) for p in REFERENCE])
def test_reference_pages_keep_their_history_in_docs_design(page: Path):
    text = re.sub(r"<!-- generated:.*?<!-- end generated -->", "", page.read_text(), flags=re.DOTALL)
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    text = re.sub(r"\[[^\]]*\]\(https?://[^)]*\)", "", text)  # another project's issue, linked
    found = sorted({m.group(0) for m in NOTEBOOK.finditer(text)})
    assert not found, (f"{page.relative_to(REPO)} reads like a lab notebook ({found}): say what is true now, and "
                       "move the dated history to a page under docs/design/ linked from this one")
