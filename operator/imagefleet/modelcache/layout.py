"""Where a resource's cached model lives: the claim, the directory in it, the Job that fills it. Pure."""

from __future__ import annotations

import hashlib

from .. import GROUP
from ..catalog import Precision

# The runtime pods mount this directory of the claim read-only at the runtime's IMAGEFLEET_MODEL_PATH.
CACHE_LABEL = f"{GROUP}/model-cache-of"
JOB_NAME_PREFIX_LENGTH = 46  # + "-cache-" + 8 hex digits: within the 63 characters of a label value


def claim_name(owner: str) -> str:
    return f"{owner}-model-cache"


def variant_for(precision: Precision) -> str | None:
    """The weights variant to fetch: fp16 files where the repo has them for fp16; otherwise the default
    weights (bf16 models such as FLUX ship no variant; fp32 needs the full-precision files)."""
    return "fp16" if precision == "fp16" else None


def cache_directory(model: str, precision: Precision, revision: str | None) -> str:
    """The claim's directory for this model, variant and revision: a new one is a new directory,
    so a running Deployment keeps reading the old one until the new one is complete."""
    pinned = "" if revision is None else f"@{revision.replace('/', '--')}"
    return f"{model.replace('/', '--')}{pinned}-{variant_for(precision) or 'default'}"


def job_name(owner: str, directory: str) -> str:
    digest = hashlib.sha256(directory.encode()).hexdigest()[:8]
    return f"{owner[:JOB_NAME_PREFIX_LENGTH]}-cache-{digest}"
