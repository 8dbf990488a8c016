"""Every relative link and anchor in README.md and docs/ resolves, by GitHub's anchor rules."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: its text lowercased, punctuation other than - and _ dropped,
    spaces turned into hyphens (inline code, links and emphasis reduced to their text)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text)
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The heading ids of one document; the n-th repeat of a heading gets `-n`."""
    seen: Counter[str] = Counter()
    found = set(_HTML_ANCHOR.findall(text))
    for heading in _HEADING.findall(_FENCE.sub("", text)):
        anchor = github_anchor(heading)
        found.add(anchor if seen[anchor] == 0 else f"{anchor}-{seen[anchor]}")
        seen[anchor] += 1
    return found


def links(text: str) -> list[str]:
    prose = _INLINE_CODE.sub("", _FENCE.sub("", text))
    return _INLINE_LINK.findall(prose) + _REFERENCE_DEFINITION.findall(prose)


def broken_links(document: Path) -> list[str]:
    broken = []
    for target in links(document.read_text()):
        if not target or _EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (document.parent / unquote(path_part)).resolve() if path_part else document
        if not resolved.exists():
            broken.append(f"{target}: {resolved} does not exist")
        elif anchor and resolved.suffix == ".md" and unquote(anchor) not in anchors(resolved.read_text()):
            broken.append(f"{target}: {resolved.name} has no heading with anchor #{anchor}")
    return broken


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(document: Path) -> None:
    assert broken_links(document) == []


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Install on a real GPU cluster", "install-on-a-real-gpu-cluster"),
        ("`spec.model`", "specmodel"),
        ("Alerts: ImagefleetP95AboveTarget", "alerts-imagefleetp95abovetarget"),
        ("What's new (v0.2)?", "whats-new-v02"),
        ("snake_case and -dashes-", "snake_case-and--dashes-"),
        ("[Linked](other.md) heading", "linked-heading"),
    ],
)
def test_github_anchor_rules(heading: str, anchor: str) -> None:
    assert github_anchor(heading) == anchor


def test_a_broken_link_and_anchor_are_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n\n## A section\n")
    document = tmp_path / "doc.md"
    document.write_text(
        "# Doc\n\n[ok](other.md#a-section) [second](other.md#a-section-1) [self](#doc)\n"
        "[missing file](nowhere.md) [missing anchor](other.md#b-section) [web](https://example.com/x)\n"
        "```\n[in a fence](fenced.md)\n```\n`[in code](code.md)`\n[ref]: gone.md\n"
    )
    assert [entry.split(":")[0] for entry in broken_links(document)] == [
        "nowhere.md", "other.md#b-section", "gone.md"
    ]
