"""API keys: stored as SHA-256 hashes, compared in constant time, each optionally limited to model
groups and tiers.

The keys file (a Secret mounted into the gateway) is YAML:

    keys:
      - name: thumbnails-team          # for logs and metrics, never the key itself
        sha256: 9f86d081884c7d65...     # hex digest of the key: `printf %s KEY | sha256sum`
        groups: [sdxl]                 # optional: these model groups only
        tiers: [bulk, standard]        # optional: these tiers only
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ..crd.models import Tier
from .errors import Forbidden, Unauthorized


class ApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    groups: frozenset[str] | None = None
    tiers: frozenset[Tier] | None = None


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[ApiKey]


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """Who a bearer token is, and what it may use."""

    def __init__(self, keys: Sequence[ApiKey]) -> None:
        self._keys = tuple(keys)

    @classmethod
    def from_yaml(cls, text: str) -> KeyRing:
        return cls(KeysFile.model_validate(yaml.safe_load(text)).keys)

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
    def check(key: ApiKey, group: str, tier: Tier) -> None:
        """403 when the key may not use this group or tier."""
        if key.groups is not None and group not in key.groups:
            raise Forbidden(f"API key {key.name!r} may not use model group {group!r}; it may use "
                            f"{', '.join(sorted(key.groups)) or 'none'}", param="model", code="group_not_allowed")
        if key.tiers is not None and tier not in key.tiers:
            raise Forbidden(f"API key {key.name!r} may not use tier {tier}; it may use "
                            f"{', '.join(sorted(key.tiers)) or 'none'}", param="quality", code="tier_not_allowed")

    @staticmethod
    def allows_group(key: ApiKey | None, group: str) -> bool:
        return key is None or key.groups is None or group in key.groups
