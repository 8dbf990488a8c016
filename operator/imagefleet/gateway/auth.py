"""API keys: stored as SHA-256 hashes, compared in constant time, each optionally limited to model
groups and tiers.

The keys file (a Secret mounted into the gateway) is YAML:

    keys:
      - name: thumbnails-team          # for logs and metrics, never the key itself
        sha256: 9f86d081884c7d65...     # hex digest of the key: `printf %s KEY | sha256sum`
        groups: [team-a/sdxl]          # optional: these model groups only (namespace/group)
        tiers: [bulk, standard]        # optional: these tiers only

A model group belongs to a namespace, so a scope names both: `team-a/sdxl`. A bare `sdxl` means
that group in every namespace the gateway serves, which suits a gateway of one tenant only.
Names and hashes are unique in the file.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..crd.models import Tier
from .errors import Forbidden, Unauthorized

# `namespace/group`, or `group` in any namespace (DNS labels).
GROUP_SCOPE = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class ApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    groups: frozenset[Annotated[str, Field(pattern=GROUP_SCOPE)]] | None = None
    tiers: frozenset[Tier] | None = None


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
