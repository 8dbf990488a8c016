"""API keys: stored as SHA-256 hashes, compared in constant time, each optionally limited to model
groups and tiers.

The keys file (a Secret mounted into the gateway) is YAML:

    keys:
      - name: thumbnails-team          # for logs and metrics, never the key itself
        sha256: 9f86d081884c7d65...     # hex digest of the key: `printf %s KEY | sha256sum`
        groups: [team-a/sdxl]          # optional: these model groups only (namespace/group)
        tiers: [bulk, standard]        # optional: these tiers only
        rate: 2                        # optional: requests per second (a token bucket), more get a 429
        burst: 10                      # optional: requests at once above the rate (default: the rate, at least 1)

A model group belongs to a namespace, so a scope names both: `team-a/sdxl`. A bare `sdxl` means
that group in every namespace the gateway serves, which suits a gateway of one tenant only.
Names and hashes are unique in the file.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..crd.models import Tier
from .errors import Forbidden, Unauthorized

logger = logging.getLogger(__name__)

# How often the keys file is read again (a rotated Secret reaches the pod's volume within about a minute).
KEYS_RELOAD_SECONDS = 2.0
# `namespace/group`, or `group` in any namespace (DNS labels).
GROUP_SCOPE = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class ApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    groups: frozenset[Annotated[str, Field(pattern=GROUP_SCOPE)]] | None = None
    tiers: frozenset[Tier] | None = None
    rate: float | None = Field(None, gt=0, allow_inf_nan=False)
    burst: int | None = Field(None, ge=1)
    # This key's own bounds instead of the gateway's --max-queued-per-key and --max-in-flight-per-key.
    max_queued: int | None = Field(None, ge=1, alias="maxQueued")
    max_in_flight: int | None = Field(None, ge=1, alias="maxInFlight")

    @model_validator(mode="after")
    def burst_needs_rate(self) -> ApiKey:
        if self.burst is not None and self.rate is None:
            raise ValueError(f"key {self.name!r}: burst needs a rate")
        return self

    @property
    def effective_burst(self) -> int:
        """`burst`, else the rate rounded up (at least 1)."""
        return self.burst if self.burst is not None else max(1, math.ceil(self.rate or 1))


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[ApiKey]

    @field_validator("keys")
    @classmethod
    def unique(cls, keys: list[ApiKey]) -> list[ApiKey]:
        """Two entries with one hash would make the key's scope depend on their order."""
        for field in ("name", "sha256"):
            values = [getattr(key, field) for key in keys]
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                shown = ", ".join(repeated) if field == "name" else f"{len(repeated)} hash(es)"
                raise ValueError(f"each key's {field} must be unique; repeated: {shown}")
        return keys


def parse_keys(text: str) -> list[ApiKey]:
    """The keys of a keys file's text; ValueError (or yaml.YAMLError) says what is wrong."""
    return KeysFile.model_validate(yaml.safe_load(text)).keys


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """Who a bearer token is, and what it may use."""

    def __init__(self, keys: Sequence[ApiKey]) -> None:
        self._keys = tuple(keys)

    @classmethod
    def from_yaml(cls, text: str) -> KeyRing:
        return cls(parse_keys(text))

    def replace(self, keys: Sequence[ApiKey]) -> None:
        """Serve `keys` from now on (requests already authorized keep the key they had)."""
        self._keys = tuple(keys)

    def identify(self, authorization: str | None) -> ApiKey:
        """The key of an `Authorization: Bearer KEY` header; 401 when missing or unknown.

        Every stored hash is compared, with `hmac.compare_digest`, whether or not one matched earlier:
        the time taken does not tell how much of a guess was right.
        """
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing API key: send `Authorization: Bearer KEY`", code="missing_api_key")
        presented = digest(token.strip())
        found: ApiKey | None = None
        for key in self._keys:
            if hmac.compare_digest(presented, key.sha256):
                found = key
        if found is None:
            raise Unauthorized("invalid API key", code="invalid_api_key")
        return found

    @staticmethod
    def check_tier(key: ApiKey, tier: Tier) -> None:
        """403 when the key may not use this tier (of a group it may use)."""
        if not KeyRing.allows_tier(key, tier):
            raise Forbidden(f"API key {key.name!r} may not use tier {tier}; it may use "
                            f"{', '.join(sorted(key.tiers or ())) or 'none'}", param="quality",
                            code="tier_not_allowed")

    @staticmethod
    def allows_tier(key: ApiKey | None, tier: Tier) -> bool:
        return key is None or key.tiers is None or tier in key.tiers

    @staticmethod
    def allows_group(key: ApiKey | None, namespace: str, group: str) -> bool:
        """Whether `key` may use `group` of `namespace`: a group outside its scope is not shown to it."""
        return key is None or key.groups is None or f"{namespace}/{group}" in key.groups or group in key.groups


class KeysFileWatch:
    """Reads the keys file again every KEYS_RELOAD_SECONDS and, when its text changed, serves its keys:
    keys are rotated by changing the Secret, with no restart. A file that does not parse is logged
    and the keys served so far stay."""

    def __init__(self, path: Path, ring: KeyRing, interval: float = KEYS_RELOAD_SECONDS) -> None:
        self._path = path
        self._ring = ring
        self._interval = interval
        self._text = path.read_text()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                text = self._path.read_text()
                if text == self._text:
                    continue
                self._text = text
                keys = parse_keys(text)
            except (OSError, ValueError, yaml.YAMLError) as error:
                logger.error("the keys file %s cannot be used (%s); serving the keys read before", self._path, error)
                continue
            self._ring.replace(keys)
            logger.info("keys file %s read again: %d keys (%s)", self._path, len(keys),
                        ", ".join(key.name for key in keys))
