"""A clone has everything its README points to: every relative link in README.md and
docs/*.md resolves to a file inside the repository (and a #fragment to a heading there)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text("utf-8"), flags=re.S)
    return LINK.findall(text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves_inside_the_repository(page: Path) -> None:
    assert page.exists()
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, mailto: …: not a file
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if ROOT not in resolved.parents and resolved != ROOT:
            broken.append(f"{target}: outside the repository")
        elif not resolved.exists():
            broken.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md":
            headings = re.findall(r"^#+\s+(.*)$", resolved.read_text("utf-8"), flags=re.M)
            if fragment not in {_anchor(h) for h in headings}:
                broken.append(f"{target}: no heading #{fragment}")
    assert not broken, broken


def test_the_readme_names_no_file_outside_the_repository() -> None:
    """Paths in backticks count too: `../shared/…` once pointed outside a clone."""
    for page in PAGES:
        assert "../" not in " ".join(re.findall(r"`([^`]*)`", page.read_text("utf-8"))), page


def test_the_docs_the_readme_promises_are_there() -> None:
    for name in ("rules", "contracts", "engine", "onboarding", "deployment"):
        assert (ROOT / "docs" / f"{name}.md").exists(), name
    rules = (ROOT / "docs" / "rules.md").read_text("utf-8")
    assert all(f"**R{n}**" in rules or f"R{n}" in rules for n in range(1, 19))
    assert "FLYT_XLEDGER_SETTLE_S" in rules and "only truth" in rules
