"""The manifest `imagefleet-runtime download` writes last into a model cache directory: its presence marks
the directory complete, and it names the weights variant the loader must ask for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CACHE_MANIFEST = "imagefleet-cache.json"


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of a completed cache directory (None: not one)."""
    try:
        return dict(json.loads((directory / CACHE_MANIFEST).read_text()))
    except (OSError, ValueError):
        return None
