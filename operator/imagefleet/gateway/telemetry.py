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
        self.shed = Counter(names.GATEWAY_SHED_TOTAL, "Requests answered 429: their deadline could not be met, "
                            "or a queue bound was reached.", ["group", "tier"], registry=self.registry)
        self.held = Gauge(names.GATEWAY_HELD_REQUESTS, "Requests waiting in the gateway's queue.", ["group", "tier"],
                          registry=self.registry)
        by_resource = list(names.GATEWAY_RESOURCE_LABELS)
        self.arrivals = Counter(names.GATEWAY_ARRIVALS_TOTAL, "Requests that arrived for the resource, each once, "
                                "whatever became of it.", by_resource, registry=self.registry)
        self.queued = Gauge(names.GATEWAY_QUEUED_REQUESTS, "Requests for the resource waiting in the gateway's "
                            "queue.", by_resource, registry=self.registry)
        self.queued_work = Gauge(names.GATEWAY_QUEUED_WORK_SECONDS, "GPU-seconds of work waiting in the gateway's "
                                 "queue for the resource, by the catalog's cost model.", by_resource,
                                 registry=self.registry)
        self.queue_wait = Histogram(names.GATEWAY_QUEUE_WAIT_SECONDS, "Seconds a request waited in the gateway's "
                                    "queue before it left for a pod.", by_resource,
                                    buckets=names.LATENCY_BUCKETS_SECONDS, registry=self.registry)
        self.resource_seconds = Histogram(names.GATEWAY_RESOURCE_SECONDS, "Seconds from a request's arrival to "
                                          "the pod's answer, by the resource that served it (a pool member's p95).",
                                          by_resource, buckets=names.LATENCY_BUCKETS_SECONDS, registry=self.registry)
        self.hold_timeouts = Counter(names.GATEWAY_HOLD_TIMEOUTS_TOTAL, "Held requests answered 503: no pod "
                                     "became ready in time.", ["group", "tier"], registry=self.registry)
        self.retries = Counter(names.GATEWAY_RETRIES_TOTAL, "Requests sent again to another pod because the "
                               "first never took them, or died holding them unanswered.", registry=self.registry)
        self.upstream_seconds = Histogram(names.GATEWAY_UPSTREAM_SECONDS, "Seconds waiting on a pod's answer.",
                                          buckets=names.LATENCY_BUCKETS_SECONDS, registry=self.registry)
        self.ignored_overflow = Gauge(names.GATEWAY_IGNORED_OVERFLOW, "Resources whose spec.routing.overflowTo "
                                      "is ignored (missing target, other group, or a loop).", registry=self.registry)
        self.key_requests = Counter(names.GATEWAY_KEY_REQUESTS_TOTAL, "Generation requests answered, by API key "
                                    "name (from the keys file, so bounded; - when none or unknown) and HTTP code.",
                                    ["key", "code"], registry=self.registry)
        self.idempotent_replays = Counter(names.GATEWAY_IDEMPOTENT_REPLAYS_TOTAL, "Requests answered with the "
                                          "answer of an earlier request with their Idempotency-Key.",
                                          registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
