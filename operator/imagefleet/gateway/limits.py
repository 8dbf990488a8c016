"""What one tenant may take of the gateway, checked before anything is held or woken.

- `RateLimits`: a token bucket per API key (`rate` requests per second, `burst` at once, from the
  keys file); an empty bucket is a 429 `rate_limited` with the Retry-After of the next token.
- `InFlight`: generation requests being served at once, in all and per API key; more are a
  `too_many_in_flight` with Retry-After, before their body is read: a 503 over the gateway's bound
  (it is overloaded), a 429 over the key's (that client sends too much, as a rate limit says).
- `check_generation`: each resource's `spec.generation` limits (most steps, largest width and
  height, as the operator gives them to its pods; `fleet.Resource.generation`); a request over the limits of
  its route's first-choice resources is a 422 naming the field, as the pod would answer, but
  without holding it or waking a resource at zero.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .auth import ApiKey
from .errors import InvalidRequest, Shed, Unavailable
from .routing import Route
from .schemas import GatewayRequest

# Retry-After of a 503 for too many requests in flight: they are short, or held and bounded.
IN_FLIGHT_RETRY_SECONDS = 1.0


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: int  # most tokens held
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take a token: 0.0 when there was one, else the seconds until there is (none taken)."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class RateLimits:
    """One bucket per API key name with a `rate` (keys without one are not rate limited)."""

    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def check(self, key: ApiKey | None, now: float) -> None:
        """Take one request from `key`'s bucket; Shed (429) when it is empty."""
        if key is None or key.rate is None:
            return
        burst = key.effective_burst
        bucket = self.buckets.get(key.name)
        if bucket is None or bucket.rate != key.rate or bucket.burst != burst:  # new, or the keys file changed
            bucket = self.buckets[key.name] = TokenBucket(key.rate, burst, float(burst), now)
        wait = bucket.take(now)
        if wait:
            raise Shed(f"API key {key.name!r} may send {key.rate:g} requests per second (bursts of {burst}); "
                       "retry later", code="rate_limited", retry_after=wait)


@dataclass
class InFlight:
    """Generation requests being served now, in all and per API key, under bounds."""

    limit: int
    per_key_limit: int
    total: int = 0
    by_key: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def slot(self, key: ApiKey | None) -> Iterator[None]:
        """Hold one slot while the request is served; Unavailable (503) at the gateway's bound, Shed (429)
        at the key's."""
        name = "" if key is None else key.name
        if self.total >= self.limit:
            raise Unavailable(f"the gateway is serving {self.limit} requests already; retry later",
                              code="too_many_in_flight", retry_after=IN_FLIGHT_RETRY_SECONDS)
        per_key_limit = self.per_key_limit if key is None else key.max_in_flight or self.per_key_limit
        if key is not None and self.by_key.get(name, 0) >= per_key_limit:  # the key's own excess: a 429
            raise Shed(f"API key {name!r} has {per_key_limit} requests in flight already; retry later",
                       code="too_many_in_flight", retry_after=IN_FLIGHT_RETRY_SECONDS)
        self.total += 1
        self.by_key[name] = self.by_key.get(name, 0) + 1
        try:
            yield
        finally:
            self.total -= 1
            self.by_key[name] -= 1
            if not self.by_key[name]:
                del self.by_key[name]


def check_generation(route_: Route, request: GatewayRequest) -> None:
    """InvalidRequest (422, naming `steps` or `size`) when the request is over the limits of any of
    its route's first-choice resources: every pod it may be sent to first must accept it."""
    for resource in route_.stages[0]:
        generation = resource.generation
        if generation is None:
            continue
        where = f"model group {route_.group!r} ({route_.tier}, resource {resource.name})"
        if request.steps is not None and request.steps > generation.max_steps:
            raise InvalidRequest(f"steps: {request.steps} is above the max_steps {generation.max_steps} of {where}",
                                 param="steps", code="invalid")
        size = request.dimensions()
        if size is not None and (size[0] > generation.max_width or size[1] > generation.max_height):
            raise InvalidRequest(f"size: {size[0]}x{size[1]} is above the largest size {generation.max_width}x"
                                 f"{generation.max_height} of {where}", param="size", code="invalid")
