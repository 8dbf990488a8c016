"""A small async client for Prometheus's HTTP query API (instant queries only).

Every call has a timeout; every failure is a typed exception, so the autoscaler
can hold and say why instead of hanging a reconcile or reading a failure as zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_TIMEOUT_SECONDS = 5.0


class PrometheusError(Exception):
    """A query gave no usable answer."""


class PrometheusUnavailable(PrometheusError):
    """Prometheus could not be reached or did not answer in time."""


class PrometheusTimeout(PrometheusUnavailable):
    """Prometheus took the query but did not answer in time (perhaps too large: a smaller one may pass)."""


class PrometheusQueryError(PrometheusError):
    """Prometheus answered with an error (bad PromQL, overload, unexpected payload)."""


class PrometheusTooLarge(PrometheusQueryError):
    """Prometheus refused the query as too large or too slow (its timeout or sample limit)."""


# How Prometheus says a query was too big for it: errorType "timeout", or the sample limit.
_TOO_LARGE_TYPES = frozenset({"timeout"})
_TOO_LARGE_MESSAGE = "too many samples"
# Answers that mean "Prometheus is down", not "the query is wrong": a 503 in plain text is what
# Prometheus itself answers while it starts or shuts down (its readiness gate: "Service
# Unavailable"); 502 and 504 without JSON are what a proxy in front of it answers while it is
# gone. Its API's own errorType "unavailable" says the same. (A JSON 503 of errorType "timeout"
# is a query too large, above.)
_DOWN_STATUSES = frozenset({502, 503, 504})
_UNAVAILABLE_TYPE = "unavailable"


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float  # may be NaN or ±Inf, as Prometheus reports it


class PrometheusClient:
    """`await client.query("sum(up)")` against one Prometheus server."""

    def __init__(self, url: str, *, timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout)

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def query(self, promql: str) -> list[Sample]:
        """Evaluate an instant query; a scalar result comes back as one unlabelled sample."""
        return _samples(await self._call("POST", "/api/v1/query", repr(promql), data={"query": promql}), promql)

    async def active_targets(self) -> list[dict[str, Any]]:
        """The active scrape targets, each with its `labels` and `scrapeInterval`."""
        data = await self._call("GET", "/api/v1/targets", "the targets", params={"state": "active"})
        targets = data.get("activeTargets")
        if not isinstance(targets, list):
            raise PrometheusQueryError(f"Prometheus at {self.url} answered the targets without activeTargets")
        return [target for target in targets if isinstance(target, dict)]

    async def _call(self, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.ReadTimeout as error:  # it took the query but did not answer in time
            raise PrometheusTimeout(f"Prometheus at {self.url} timed out: {error!r}") from error
        except httpx.TimeoutException as error:  # connecting (or a free connection) took too long
            raise PrometheusUnavailable(f"Prometheus at {self.url} timed out: {error!r}") from error
        except httpx.TransportError as error:
            raise PrometheusUnavailable(f"Prometheus at {self.url} is unreachable: {error!r}") from error
        kind: type[PrometheusError]
        try:
            payload: dict[str, Any] = response.json()
        except ValueError as error:
            kind = PrometheusUnavailable if response.status_code in _DOWN_STATUSES else PrometheusQueryError
            raise kind(
                f"Prometheus at {self.url} answered HTTP {response.status_code} without JSON: "
                f"{response.text[:200].strip()!r}"
            ) from error
        if payload.get("status") != "success":
            error_type, message = str(payload.get("errorType", "")), str(payload.get("error", ""))
            if error_type in _TOO_LARGE_TYPES or _TOO_LARGE_MESSAGE in message:
                kind = PrometheusTooLarge
            elif error_type == _UNAVAILABLE_TYPE:
                kind = PrometheusUnavailable
            else:
                kind = PrometheusQueryError
            raise kind(
                f"Prometheus at {self.url} rejected {what} (HTTP {response.status_code}): "
                f"{payload.get('errorType', 'error')}: {payload.get('error', 'no message')}"
            )
        data = payload.get("data", {})
        return data if isinstance(data, dict) else {}

    async def value(self, promql: str) -> float | None:
        """The single value of a query that aggregates to one series; None for no signal.

        An empty result and a NaN (e.g. a quantile of zero traffic) both mean "no signal".
        """
        samples = await self.query(promql)
        if not samples:
            return None
        if len(samples) > 1:
            raise PrometheusQueryError(f"{promql!r} returned {len(samples)} series, expected one")
        value = samples[0].value
        return None if math.isnan(value) else value


def _samples(data: dict[str, Any], promql: str) -> list[Sample]:
    kind = data.get("resultType")
    result: Any = data.get("result")
    try:
        if kind == "vector":
            return [Sample(dict(item["metric"]), float(item["value"][1])) for item in result]
        if kind == "scalar":
            return [Sample({}, float(result[1]))]
    except (TypeError, KeyError, IndexError, ValueError) as error:
        raise PrometheusQueryError(f"malformed result for {promql!r}: {error!r}") from error
    raise PrometheusQueryError(f"{promql!r} gave a {kind!r} result; expected an instant vector or scalar")
