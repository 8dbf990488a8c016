"""Where the dev tooling keeps built binaries and cluster state (outside the repository)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$IMAGEFLEET_CACHE_DIR`, else `$XDG_CACHE_HOME/imagefleet`, else `~/.cache/imagefleet`."""
    explicit = os.environ.get("IMAGEFLEET_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "imagefleet"


def default_state_dir() -> Path:
    """The state of `imagefleet dev up` when no `--state-dir` is given."""
    return cache_dir() / "dev-cluster"
