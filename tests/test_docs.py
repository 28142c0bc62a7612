"""The user documentation stands alone: no pointers outside the package, no broken links.

README.md and docs/*.md ship in the sdist (MANIFEST.in); a user has neither the
project's shared notes nor any file the docs do not carry, so every relative
link must resolve inside the repository and nothing may point at ../shared.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
FILES = [ROOT / "README.md", *DOCS]
FORBIDDEN = ("../shared", "xen-p2m-reference")

#: inline Markdown links and images: [text](target) / ![alt](target)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
#: fenced code blocks, whose brackets are not links
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
#: inline code spans
CODE_SPAN = re.compile(r"`[^`\n]*`")


def relative_links(text: str) -> list[str]:
    """Targets of the relative links in Markdown ``text`` (code excluded)."""
    text = CODE_SPAN.sub("", FENCE.sub("", text))
    out = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # http:, mailto:, ... and links within the same page
        out.append(target)
    return out


def test_docs_exist():
    names = {p.name for p in DOCS}
    assert {"README.md", "p2m-tree.md", "p2m-list.md", "x86-paging.md", "shared-info.md",
            "containers.md", "sources.md"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pointer_outside_the_package(path):
    text = path.read_text(encoding="utf-8")
    for bad in FORBIDDEN:
        assert bad not in text, f"{path.name} mentions {bad!r}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    text = path.read_text(encoding="utf-8")
    broken = []
    for target in relative_links(text):
        file_part = target.split("#", 1)[0]
        dest = (path.parent / file_part).resolve()
        if not dest.exists():
            broken.append(target)
    assert not broken, f"{path.name}: links to missing files: {broken}"


def test_readme_lists_every_doc():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {Path(t.split("#", 1)[0]).name for t in relative_links(readme)
              if t.startswith("docs/")}
    missing = [p.name for p in DOCS if p.name not in linked]
    assert not missing, f"README.md's Documentation section lacks {missing}"


def test_link_finder_sees_links_and_skips_code():
    """The checker itself: real links are found, code and URLs are not."""
    text = ("see [a](docs/a.md#x) and ![img](pic.png \"t\")\n"
            "`[not](a-link.md)` [web](https://example.org) [here](#anchor)\n"
            "```\n[fenced](nope.md)\n```\n")
    assert relative_links(text) == ["docs/a.md#x", "pic.png"]
