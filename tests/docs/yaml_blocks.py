"""The YAML blocks of README.md and docs/, and what each one is.

Every block is one of:

- `objects`: Kubernetes objects (each document has apiVersion and kind), applied to the local
  control plane with a server-side dry run; the ImageModelDeployments among them also go through
  the operator's own spec model and fit check;
- `spec`: a part of an ImageModelDeployment's spec (the only top-level key is `spec`), checked
  like an object after it is laid over BASE_SPEC;
- `values`: Helm values of charts/imagefleet (every top-level key is one of values.yaml's),
  rendered with `helm template`, which validates them against values.schema.json;
- `scrape-job`: the runtime pods' Prometheus scrape job, equal to the one the local Prometheus runs;
- `relabel`: relabelings, each one of that scrape job's;
- `gateway-keys`: the gateway's API keys file (the only top-level key is `keys`), read by its own model.

A block of none of these kinds fails the test that classifies them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
VALUES_KEYS = frozenset(yaml.safe_load((ROOT / "charts" / "imagefleet" / "values.yaml").read_text()))
# What a `spec` fragment is laid over: a model and a GPU class it fits on.
BASE_SPEC: dict[str, Any] = {"model": {"name": "sdxl"}, "gpuClass": "l4-24gb"}
# A block that says the operator refuses it (FitsGPU=False) is expected to be refused.
REFUSED_MARK = "FitsGPU=False"

# A fence may be indented (inside a list item); its lines are dedented by the fence's indent.
_BLOCK = re.compile(r"^( *)```ya?ml[^\n]*\n(.*?)^\1```", re.MULTILINE | re.DOTALL)

Kind = Literal["objects", "spec", "values", "scrape-job", "relabel", "gateway-keys"]


@dataclass(frozen=True)
class Block:
    """One fenced YAML block: where it is, its text and its documents."""

    page: Path
    line: int
    text: str
    documents: tuple[Any, ...]

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def expects_refusal(self) -> bool:
        return REFUSED_MARK in self.text


def blocks(pages: list[Path] = PAGES) -> list[Block]:
    found = []
    for page in pages:
        text = page.read_text()
        for match in _BLOCK.finditer(text):
            indent = len(match.group(1))
            body = "".join(line[indent:] for line in match.group(2).splitlines(keepends=True))
            documents = tuple(doc for doc in yaml.safe_load_all(body) if doc is not None)
            found.append(Block(page, text.count("\n", 0, match.start()) + 1, body, documents))
    return found


def kind_of(block: Block) -> Kind | None:
    """What the block is (None: none of the known kinds)."""
    documents = block.documents
    if not documents or not all(isinstance(doc, dict) for doc in documents):
        return None
    if all("apiVersion" in doc and "kind" in doc for doc in documents):
        return "objects"
    if len(documents) != 1:
        return None
    (document,) = documents
    if set(document) == {"spec"}:
        return "spec"
    if "job_name" in document:
        return "scrape-job"
    if set(document) == {"relabel_configs"}:
        return "relabel"
    if set(document) == {"keys"}:
        return "gateway-keys"
    if set(document) <= VALUES_KEYS:
        return "values"
    return None


def objects(block: Block) -> list[dict[str, Any]]:
    """The Kubernetes objects a block stands for: its documents, or its spec over BASE_SPEC."""
    if kind_of(block) == "spec":
        (document,) = block.documents
        return [{
            "apiVersion": "imagefleet.io/v1alpha1",
            "kind": "ImageModelDeployment",
            "metadata": {"name": f"fragment-{block.line}"},
            "spec": {**BASE_SPEC, **document["spec"]},
        }]
    return [doc for doc in block.documents]
