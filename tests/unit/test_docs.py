"""The documentation holds together: every "docs/architecture.md §N" cited anywhere in the
repository is a numbered section of that page, no reference to the superseded design contract is
left, and every relative link of the Markdown pages (and every ``docs/*.md`` path named in code)
leads to a file — and, with an ``#anchor``, to a heading — that exists."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[2]
ARCHITECTURE: Final = ROOT / "docs" / "architecture.md"

#: Hidden directories that hold the project's own files; every other hidden directory (.git,
#: virtualenvs, caches) and every build output is skipped.
HIDDEN_SCANNED: Final = {".ci", ".github"}
SKIPPED_DIRS: Final = {"__pycache__", "node_modules", "build", "dist"}
TEXT_SUFFIXES: Final = {".py", ".md", ".yaml", ".yml", ".tpl", ".txt", ".sh", ".json", ".toml", ""}

#: "architecture.md §5", "docs/architecture.md §5, §6", "architecture.md §5/§6 and §7".
CITATION: Final = re.compile(r"architecture\.md\s+§\d+(?:\s*(?:,|/|and)\s*§\d+)*")
SECTION: Final = re.compile(r"^## (\d+)\. \S", re.MULTILINE)
#: Built from parts so that this file does not match itself.
OLD_CONTRACT: Final = re.compile("DESIGN" + r"(?:\s*§|\.md)")
MD_LINK: Final = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
#: A repository path in backticks with a directory part: `kube/apply.py`, `tests/support/pss.py`.
SOURCE_PATH: Final = re.compile(r"`((?:[\w.-]+/)+[\w.-]+\.(?:py|sh|tpl|yaml|json))`")
DOC_PATH: Final = re.compile(r"(?<![\w./-])docs/[\w./-]+?\.md\b")


def scanned_files() -> Iterator[Path]:
    """Every text file of the repository: sources, docs, charts, manifests, CI scripts."""
    for directory, subdirs, files in os.walk(ROOT):
        subdirs[:] = sorted(
            d
            for d in subdirs
            if (not d.startswith(".") or d in HIDDEN_SCANNED)
            and d not in SKIPPED_DIRS
            and not d.endswith(".egg-info")
        )
        for name in sorted(files):
            path = Path(directory) / name
            if path.suffix in TEXT_SUFFIXES and not name.startswith("."):
                yield path


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def sections(text: str) -> list[int]:
    return [int(n) for n in SECTION.findall(text)]


def cited_sections(text: str) -> list[int]:
    return [int(n) for match in CITATION.finditer(text) for n in re.findall(r"§(\d+)", match[0])]


def without_code_blocks(markdown: str) -> str:
    """Markdown with fenced code blocks blanked (keeping line numbers)."""
    out: list[str] = []
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else line)
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in without_code_blocks(markdown).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match[1])
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Relative links of one Markdown page (of the tree at ``root``) that lead nowhere."""
    text = read(page)
    problems: list[str] = []
    for number, line in enumerate(without_code_blocks(text).splitlines(), start=1):
        for target in MD_LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            where = f"{page.relative_to(root)}:{number}: {target}"
            resolved = (page.parent / path_part).resolve() if path_part else page
            if not resolved.exists():
                problems.append(f"{where}: no such file")
            elif not resolved.is_relative_to(root):
                problems.append(f"{where}: outside the repository")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(read(resolved)):
                problems.append(f"{where}: no heading with that anchor")
    return problems


def markdown_pages() -> list[Path]:
    return [p for p in scanned_files() if p.suffix == ".md"]


# --- the architecture page and its citations ------------------------------------------------------


def test_architecture_sections_are_numbered_one_by_one() -> None:
    numbers = sections(read(ARCHITECTURE))
    assert numbers, "docs/architecture.md has no numbered sections (## 1. ...)"
    assert numbers == list(range(1, len(numbers) + 1))


def test_every_cited_section_exists() -> None:
    existing = set(sections(read(ARCHITECTURE)))
    missing = []
    cited = 0
    for path in scanned_files():
        for number in cited_sections(read(path)):
            cited += 1
            if number not in existing:
                missing.append(f"{path.relative_to(ROOT)}: §{number}")
    assert cited > 0, "no citation found at all: the scan is broken"
    assert missing == [], f"citations of sections docs/architecture.md does not have: {missing}"


def test_the_architecture_page_cites_only_its_own_sections() -> None:
    text = read(ARCHITECTURE)
    existing = set(sections(text))
    own = {int(n) for n in re.findall(r"§(\d+)", text)}
    assert own - existing == set()


def test_no_reference_to_the_superseded_design_contract() -> None:
    leftovers = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in scanned_files()
        for number, line in enumerate(read(path).splitlines(), start=1)
        if OLD_CONTRACT.search(line)
    ]
    assert leftovers == [], f"cite docs/architecture.md §N instead: {leftovers}"


def test_layers_of_the_page_are_the_layers_of_the_package() -> None:
    """The two-level tree in §4 names exactly the package's subpackages."""
    text = read(ARCHITECTURE)
    tree = text.split("operator/gocd_ha_operator/\n", 1)[1].split("```", 1)[0]
    named = {line.split()[0].rstrip("/") for line in tree.splitlines() if line.strip()}
    package = ROOT / "operator" / "gocd_ha_operator"
    actual = {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}
    assert named == actual


# --- links ----------------------------------------------------------------------------------------


def test_relative_markdown_links_resolve() -> None:
    pages = markdown_pages()
    assert ROOT / "README.md" in pages and ARCHITECTURE in pages
    problems = [problem for page in pages for problem in broken_links(page)]
    assert problems == []


def test_docs_paths_named_anywhere_exist() -> None:
    missing = sorted(
        {
            f"{path.relative_to(ROOT)}: {found}"
            for path in scanned_files()
            for found in DOC_PATH.findall(read(path))
            if not (ROOT / found).is_file()
        }
    )
    assert missing == []


def test_source_paths_named_in_the_docs_exist() -> None:
    """`kube/apply.py`, `tests/support/pss.py`, `tools/chart_values.py`: a page that names a file
    names one that exists: from the repository root, from the page's folder, or (paths starting
    with a layer) from the package."""
    package = ROOT / "operator" / "gocd_ha_operator"
    layers = {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}
    missing = []
    for page in markdown_pages():
        for found in SOURCE_PATH.findall(without_code_blocks(read(page))):
            base = package if found.split("/", 1)[0] in layers else ROOT
            if not (base / found).exists() and not (page.parent / found).exists():
                missing.append(f"{page.relative_to(ROOT)}: {found}")
    assert missing == []


# --- the checks themselves can fail ---------------------------------------------------------------


def test_citation_parsing() -> None:
    text = "see docs/architecture.md §5, §6 and architecture.md §9/§10; not architecture §7"
    assert cited_sections(text) == [5, 6, 9, 10]
    assert sections("## 1. One\n### 1.1 sub\n## 2. Two\n## Notes\n") == [1, 2]
    assert OLD_CONTRACT.search("the protocol of " + "DESIGN" + " §7")
    assert OLD_CONTRACT.search("see " + "DESIGN" + ".md")
    assert not OLD_CONTRACT.search("a DESIGNER's choice")
    found = SOURCE_PATH.findall("`kube/apply.py`, `spec.py`, `scripts/entrypoint.sh`, `a b/c.py`")
    assert found == ["kube/apply.py", "scripts/entrypoint.sh"]


def test_slugs_match_github() -> None:
    assert slug("9. Promotion") == "9-promotion"
    assert slug("The operator's client (`postgres/client.py`)") == (
        "the-operators-client-postgresclientpy"
    )
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


@pytest.mark.parametrize(
    ("link", "wrong"),
    [
        ("[x](missing.md)", "no such file"),
        ("[x](present.md#nowhere)", "no heading with that anchor"),
        ("[x](../nothing-here.md)", "no such file"),
    ],
)
def test_broken_links_are_reported(tmp_path: Path, link: str, wrong: str) -> None:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    page = root / "docs" / "present.md"
    page.write_text(f"# Present\n\n{link}\n\n```\n[in code](ignored.md)\n```\n")
    (tmp_path / "outside.md").write_text("# Outside\n")
    problems = broken_links(page, root)
    assert len(problems) == 1 and wrong in problems[0], problems


def test_a_link_out_of_the_repository_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (tmp_path / "outside.md").write_text("# Outside\n")
    page = root / "docs" / "page.md"
    page.write_text("[x](../../outside.md) and [fine](page.md#page)\n# Page\n")
    (problem,) = broken_links(page, root)
    assert "outside the repository" in problem
