"""The chart's values: each key of values.schema.json with its type, its default from values.yaml
and its description from the `# --` comment above it in values.yaml."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from .markdown import code, header, table

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "imagefleet"
Schema = dict[str, Any]

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):")
_BOUNDS = (("minimum", ">="), ("maximum", "<="), ("exclusiveMinimum", ">"), ("minItems", "items >="),
           ("minLength", "length >="), ("maxLength", "length <="))
# A default longer than this is left to values.yaml.
MAX_DEFAULT = 60


def comments(values_yaml: str) -> dict[str, str]:
    """Dotted key path -> the comment block above it (from its `# --` line on, when it has one)."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    block: list[str] = []
    for line in values_yaml.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped.lstrip("#").strip())
            continue
        match = _KEY.match(line)
        if match and not stripped.startswith("-"):
            indent = len(match["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = ".".join([*(key for _, key in stack), match["key"]])
            stack.append((indent, match["key"]))
            marked = [i for i, text in enumerate(block) if text.startswith("--")]
            text = block[marked[-1]:] if marked else block
            if text:
                found[path] = " ".join(text).removeprefix("--").strip()
        block = []
    return found


def _resolve(schema: Schema, root: Schema) -> Schema:
    ref = schema.get("$ref", "")
    return _resolve(root["definitions"][ref.rsplit("/", 1)[1]], root) if ref.startswith("#/definitions/") else schema


def describe_type(schema: Schema) -> str:
    """The schema of one key in a few words: type or values, pattern and bounds."""
    if "enum" in schema:
        words = " or ".join(json.dumps(value) for value in schema["enum"])
    else:
        kinds = schema.get("type", "any")
        words = " or ".join(kinds) if isinstance(kinds, list) else kinds
        items = schema.get("items")
        if kinds == "array" and isinstance(items, dict) and "type" in items:
            words = f"array of {items['type']}"
    words += "".join(f", {sign} {schema[key]}" for key, sign in _BOUNDS if key in schema)
    if "pattern" in schema:
        words += f", pattern `{schema['pattern']}`"
    return words


def _default(values: Any, path: list[str]) -> str:
    for key in path:
        if not isinstance(values, dict) or key not in values:
            return ""
        values = values[key]
    text = json.dumps(values)
    return code(text) if len(text) <= MAX_DEFAULT else "(see values.yaml)"


def keys(schema: Schema, root: Schema, path: list[str]) -> Iterator[tuple[list[str], Schema]]:
    """Every key the values may set, depth first: objects with listed properties are walked into."""
    for name, child in schema.get("properties", {}).items():
        resolved = _resolve(child, root)
        if resolved.get("properties") and resolved.get("type") == "object":
            yield from keys(resolved, root, [*path, name])
        else:
            yield [*path, name], resolved


def rows() -> list[list[str]]:
    schema = json.loads((CHART / "values.schema.json").read_text())
    text = (CHART / "values.yaml").read_text()
    values, notes = yaml.safe_load(text), comments(text)
    found = []
    for path, child in keys(schema, schema, []):
        dotted = ".".join(path)
        parent = ".".join(path[:-1])
        note = notes.get(dotted) or (f"({parent}) {notes[parent]}" if parent in notes else "")
        found.append([code(dotted), describe_type(child), _default(values, path), note])
    return found


def values_table() -> str:
    return table(["key", "type", "default", "description"], rows())


def render() -> str:
    return (
        header("python -m imagefleet_docs", "charts/imagefleet/values.schema.json and values.yaml")
        + "\n# Helm values of charts/imagefleet\n\n"
        "Every key the chart's `values.schema.json` accepts; `helm install` refuses any other, and a value\n"
        "of the wrong type or out of bounds, naming the key. Defaults are those of `values.yaml`; a\n"
        "description in parentheses is its parent key's. Install and upgrade: [install](../install.md),\n"
        "[operations](../operations.md#upgrading).\n\n"
        + values_table()
    )
