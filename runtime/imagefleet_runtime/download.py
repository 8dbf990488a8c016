"""`imagefleet-runtime download`: fill a model cache directory from the Hugging Face Hub, all or nothing.

The operator's model-cache Job runs this once per resource; the runtime pods then
mount the directory read-only and load it offline. It fetches what
`DiffusionPipeline.download` fetches, the same code `from_pretrained` uses: only
the folders the pipeline's model_index.json names, safetensors over pickles, and
the requested variant's weights (fp16) where the repo has them. HF_ENDPOINT,
HF_TOKEN and the other HF_* variables of huggingface_hub apply.

All or nothing: the files go to a staging directory next to the target, which
is renamed to the target only once every file is there and the manifest
(`imagefleet-cache.json`) is written. A failed or killed download leaves no
target, so no pod ever loads a half-filled cache; the next try starts over.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffusers import DiffusionPipeline

from .models.loader import CATALOG
from .models.manifest import CACHE_MANIFEST, read_manifest

EXIT_FAILED = 1

logger = logging.getLogger(__name__)


def _materialize(snapshot: Path, destination: Path) -> list[str]:
    """Turn a Hub cache snapshot (symlinks into blobs) into a plain diffusers folder at `destination`,
    hard-linking each blob (same volume: no copy); the relative paths of the files."""
    files = []
    for link in sorted(snapshot.rglob("*")):
        if link.is_dir():
            continue
        relative = link.relative_to(snapshot)
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        blob = link.resolve(strict=True)
        try:
            os.link(blob, target)
        except OSError:  # a volume without hard links (some network filesystems): copy
            shutil.copyfile(blob, target)
        files.append(relative.as_posix())
    return files


def download(repo_id: str, target: Path, *, variant: str | None, revision: str | None = None) -> dict[str, Any]:
    """Fill `target` with the pipeline `repo_id` (in `variant` where it exists, at `revision`: the
    main branch when None); its manifest.

    A `target` that already holds a manifest is kept as is.
    """
    existing = read_manifest(target)
    if existing is not None:
        logger.info("%s already holds %s: nothing to download", target, existing.get("repoId"))
        return existing
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".staging-{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        snapshot = Path(DiffusionPipeline.download(repo_id, variant=variant, revision=revision,
                                                        cache_dir=staging / "hub"))
        files = _materialize(snapshot, staging / "model")
        manifest = {"repoId": repo_id, "revision": snapshot.name, "variant": variant, "files": files}
        (staging / "model" / CACHE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():  # an empty or partial directory (no manifest) from something else: replace it
            shutil.rmtree(target)
        os.rename(staging / "model", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("cached %s@%s (%s) in %s: %d files", repo_id, snapshot.name, variant or "default weights",
                target, len(files))
    return manifest


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="imagefleet-runtime download",
        description="Download a model into a cache directory that runtime pods load offline (IMAGEFLEET_MODEL_PATH).",
    )
    parser.add_argument("--model", required=True, help="catalog name or Hugging Face repo id")
    parser.add_argument("--target", required=True, type=Path, help="the cache directory to create")
    parser.add_argument("--variant", default=None, help="weights variant to prefer where it exists (e.g. fp16)")
    parser.add_argument("--revision", default=None, help="commit sha, tag or branch to download (default: main)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        download(CATALOG.get(args.model, args.model), args.target, variant=args.variant, revision=args.revision)
    except Exception as error:  # noqa: BLE001 - one line, the last of the log: the pod's termination message
        print(f"downloading {args.model} failed: {_reasons(error)}".replace("\n", " "), file=sys.stderr)
        raise SystemExit(EXIT_FAILED) from error


def _reasons(error: BaseException) -> str:
    """The error and its causes (huggingface_hub wraps the HTTP status of a failed file in a generic one)."""
    reasons = []
    current: BaseException | None = error
    while current is not None and len(reasons) < 4:
        reasons.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "; caused by ".join(reasons)
