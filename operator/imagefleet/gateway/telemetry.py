"""The gateway's Prometheus metrics (names in imagefleet.metrics), one registry per gateway."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .. import metrics as names


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(names.GATEWAY_REQUESTS_TOTAL, "Generation requests answered, by group, tier and "
                                "HTTP code.", ["group", "tier", "code"], registry=self.registry)
        self.overflowed = Counter(names.GATEWAY_OVERFLOWED_TOTAL, "Requests sent to an overflow resource because "
                                  "every pod of the preferred one was saturated.", ["group", "tier", "to"],
                                  registry=self.registry)
        self.shed = Counter(names.GATEWAY_SHED_TOTAL, "Requests answered 429: every pod of the route saturated.",
                            ["group", "tier"], registry=self.registry)
        self.held = Gauge(names.GATEWAY_HELD_REQUESTS, "Requests waiting for a ready pod.", ["group", "tier"],
                          registry=self.registry)
        self.hold_timeouts = Counter(names.GATEWAY_HOLD_TIMEOUTS_TOTAL, "Held requests answered 503: no pod "
                                     "became ready in time.", ["group", "tier"], registry=self.registry)
        self.retries = Counter(names.GATEWAY_RETRIES_TOTAL, "Requests sent again to another pod because the "
                               "first never took them.", registry=self.registry)
        self.upstream_seconds = Histogram(names.GATEWAY_UPSTREAM_SECONDS, "Seconds waiting on a pod's answer.",
                                          buckets=names.LATENCY_BUCKETS_SECONDS, registry=self.registry)
        self.ignored_overflow = Gauge(names.GATEWAY_IGNORED_OVERFLOW, "Resources whose spec.routing.overflowTo "
                                      "is ignored (missing target, other group, or a loop).", registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
