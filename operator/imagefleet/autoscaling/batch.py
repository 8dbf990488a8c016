"""Every autoscaled resource's readings in one query per signal (`sum by (namespace, imagefleet_io_name, job)`).

A round runs the nine queries of `batch_queries` once for all resources and
slices the answers per resource, so the queries per interval do not grow with
the fleet; a round with ImageModelPools runs one more, what every pool pod holds
resident (`imagefleet_resident`), whatever the number of pools and members. The
meanings stay per resource: the queue depth is read per pod with each pod's
sample age; a resource with no series, a NaN or a stale sample has no signal,
never zero.

The gateway's demand (arrivals, queued requests and their work, `imagefleet.metrics`) and the p95
of the requests each resource served are one query: each signal's sum over every gateway replica,
tagged with a `signal` label and joined by `or`. Its series name the resource by
`resource_namespace` and `resource_name` (a scrape sets `namespace` to the gateway's own), and
arrivals are read with rate() over the counters, so a gateway replica that restarts does not take
the sum to zero.

Series of one resource that come from more than one scrape job (a foreign
exporter with the same namespace and imagefleet_io_name labels) collide: the
resource is reported, not summed. When Prometheus times out or refuses a query
as too large, the round splits its resources in halves (down to one resource)
and says so in a log line and `imagefleet_autoscaler_batch_splits_total`; a
resource whose own query still fails gets that failure, none is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from prometheus_client import Counter

from imagefleet import metrics

from .prometheus import (
    PrometheusClient,
    PrometheusError,
    PrometheusQueryError,
    PrometheusTimeout,
    PrometheusTooLarge,
    Sample,
)
from .queries import NAME_LABEL, NAMESPACE_LABEL, Readings, queue_reading

Key = tuple[str, str]
JOB_LABEL = "job"
BY = f"{NAMESPACE_LABEL}, {NAME_LABEL}, {JOB_LABEL}"
# The gateway's demand signals, as the `signal` label of its one query names them.
SIGNAL_LABEL = "signal"
GATEWAY_ARRIVALS = "arrivals"
GATEWAY_QUEUED = "queued"
GATEWAY_WORK = "work"
GATEWAY_P95 = "p95"
RESIDENT = "resident"

logger = logging.getLogger(__name__)

# Served on the operator's /metrics (handlers.metrics registers them).
QUERIES = Counter(
    "imagefleet_autoscaler_prometheus_queries", "PromQL queries the autoscaler sent", registry=None
)
SPLITS = Counter(
    "imagefleet_autoscaler_batch_splits",
    "Batched reads split in halves because Prometheus timed out or refused the query as too large",
    registry=None,
)


def batch_selector(keys: Collection[Key] | None) -> str:
    """Every resource's series (None), or those of a batch (a superset: the answers are filtered by key)."""
    if keys is None:
        return f'{{{NAME_LABEL}!=""}}'
    namespaces = "|".join(sorted({_regex(namespace) for namespace, _ in keys}))
    names = "|".join(sorted({_regex(name) for _, name in keys}))
    return f'{{{NAMESPACE_LABEL}=~"{namespaces}",{NAME_LABEL}=~"{names}"}}'


def gateway_selector(keys: Collection[Key] | None) -> str:
    """The gateway's demand series of every resource (None), or of a batch (a superset, as `batch_selector`)."""
    namespace_label, name_label = metrics.GATEWAY_RESOURCE_LABELS
    if keys is None:
        return f'{{{name_label}!=""}}'
    namespaces = "|".join(sorted({_regex(namespace) for namespace, _ in keys}))
    names = "|".join(sorted({_regex(name) for _, name in keys}))
    return f'{{{namespace_label}=~"{namespaces}",{name_label}=~"{names}"}}'


def gateway_query(selector: str, window_seconds: float) -> str:
    """The gateway's demand signals, summed over its replicas, and the p95 from arrival to answer of the
    requests each resource served, in one query (a `signal` label each)."""
    by = ", ".join(metrics.GATEWAY_RESOURCE_LABELS)
    window = f"[{round(window_seconds)}s]"
    bucket = f"{metrics.GATEWAY_RESOURCE_SECONDS}_bucket{selector}{window}"
    signals = {
        GATEWAY_ARRIVALS: f"sum by ({by}) (rate({metrics.GATEWAY_ARRIVALS_TOTAL}{selector}{window}))",
        GATEWAY_QUEUED: f"sum by ({by}) ({metrics.GATEWAY_QUEUED_REQUESTS}{selector})",
        GATEWAY_WORK: f"sum by ({by}) ({metrics.GATEWAY_QUEUED_WORK_SECONDS}{selector})",
        GATEWAY_P95: f"histogram_quantile(0.95, sum by ({by}, le) (rate({bucket})))",
    }
    return " or ".join(f'label_replace({query}, "{SIGNAL_LABEL}", "{name}", "", "")'
                       for name, query in signals.items())


def batch_queries(selector: str, window_seconds: float, gateway: str | None = None, *,
                  pools: bool = False) -> dict[str, str]:
    """The signals of a round, for every resource the selectors pick, grouped by resource and job;
    `gateway` selects the gateway's demand series (default: every resource's); `pools` adds what the
    pool pods hold resident (one series per pod, checkpoint, adapter and place)."""
    window = f"[{round(window_seconds)}s]"
    queue = f"{metrics.QUEUE_DEPTH}{selector}"

    def rate_sum(series: str) -> str:
        return f"sum by ({BY}) (rate({series}{selector}{window}))"

    def mean(histogram: str) -> str:
        return f"{rate_sum(histogram + '_sum')} / {rate_sum(histogram + '_count')}"

    bucket = f"{metrics.REQUEST_DURATION_SECONDS}_bucket{selector}{window}"
    return {
        "queue": queue,
        "age": f"time() - timestamp({queue})",
        "p95": f"histogram_quantile(0.95, sum by ({BY}, le) (rate({bucket})))",
        "busy": rate_sum(f"{metrics.BATCH_DURATION_SECONDS}_sum"),
        "served": rate_sum(f"{metrics.REQUEST_DURATION_SECONDS}_count"),
        "batch_seconds": mean(metrics.BATCH_DURATION_SECONDS),
        "batch_size": mean(metrics.BATCH_SIZE),
        "samples": f"max by ({BY}) (count_over_time({queue}{window}))",
        "gateway": gateway_query(gateway or gateway_selector(None), window_seconds),
        **({RESIDENT: f"{metrics.RESIDENT}{selector} == 1"} if pools else {}),
    }


@dataclass
class Round:
    """One round's answers, sliced by resource."""

    series: dict[Key, dict[str, list[Sample]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    # Resources whose batch failed even alone, with the error.
    failures: dict[Key, PrometheusError] = field(default_factory=dict)
    # The resources the round was asked about when it had to split (None: it read every resource).
    covered: set[Key] | None = None
    splits: int = 0
    queries: int = 0
    seconds: float = 0.0  # how long the read took
    pools: bool = False  # whether it reads the pool pods' residency

    def covers(self, key: Key) -> bool:
        return self.covered is None or key in self.covered

    def collision(self, key: Key) -> str | None:
        """Why the resource's series cannot be summed (more than one job reports them); None when they can."""
        jobs = {sample.labels.get(JOB_LABEL, "") for signal, samples in self.series.get(key, {}).items()
                if signal != "gateway" for sample in samples}
        if len(jobs) <= 1:
            return None
        return (
            f"series with namespace={key[0]!r} and {NAME_LABEL}={key[1]!r} come from {len(jobs)} scrape jobs "
            f"({', '.join(sorted(jobs))}): another exporter uses this resource's labels, so they are not summed; "
            "drop or relabel the foreign series"
        )

    def readings(self, key: Key, max_age_seconds: float) -> Readings:
        """The resource's readings, as `queries.read` gives them for one resource."""
        found = self.series.get(key, {})
        queue = queue_reading(found.get("queue", []), found.get("age", []), max_age_seconds)

        def value(signal: str) -> float | None:
            samples = found.get(signal)
            if not samples or math.isnan(samples[0].value):
                return None
            return samples[0].value

        demand = {sample.labels.get(SIGNAL_LABEL): sample.value for sample in found.get("gateway", [])
                   if math.isfinite(sample.value)}
        return Readings(
            queue_depth=queue.total,
            p95_seconds=value("p95"),
            busy_replicas=value("busy"),
            age_seconds=queue.newest_age_seconds,
            queue_series=queue.fresh,
            stale_series=queue.stale,
            served_rate=value("served"),
            batch_seconds=value("batch_seconds"),
            batch_size=value("batch_size"),
            window_samples=value("samples"),
            gateway_arrival_rate=demand.get(GATEWAY_ARRIVALS),
            gateway_queued=demand.get(GATEWAY_QUEUED),
            gateway_queued_work_seconds=demand.get(GATEWAY_WORK),
            gateway_p95_seconds=demand.get(GATEWAY_P95),
        )

    def resident(self, key: Key) -> list[Sample]:
        """What the pods of `key` (a pool's `<pool>-pool`) hold resident: one sample per pod, checkpoint,
        adapter and place (empty when the round read no pools)."""
        return list(self.series.get(key, {}).get(RESIDENT, []))


async def read_round(
    client: PrometheusClient, window_seconds: float, keys: Sequence[Key], *, split_from_start: bool = False,
    pools: bool = False,
) -> Round:
    """Read every resource's series (first in one batch); `keys` are the resources to split into on failure;
    `pools`: the pool pods' residency too.

    Failures that a smaller query cannot cure (Prometheus unreachable, bad answers)
    propagate, as they do for one resource.
    """
    started = time.monotonic()
    result = Round(pools=pools)
    if not split_from_start:
        try:
            await _read_into(client, window_seconds, None, result)
            result.seconds = time.monotonic() - started
            return result
        except (PrometheusTimeout, PrometheusTooLarge) as error:
            result = Round(queries=result.queries, pools=pools)
            _split(result, len(keys), error)
    result.covered = set(keys)
    half = max(1, math.ceil(len(keys) / 2))
    await asyncio.gather(*(_read_batch(client, window_seconds, list(keys[i:i + half]), result)
                           for i in range(0, len(keys), half)))
    result.seconds = time.monotonic() - started
    return result


async def read_one(
    client: PrometheusClient, namespace: str, name: str, window_seconds: float, max_age_seconds: float = 90.0
) -> Readings:
    """One resource's readings (a batch of one); PrometheusError propagates, a collision as PrometheusQueryError."""
    key = (namespace, name)
    result = await read_round(client, window_seconds, [key], split_from_start=True)
    if key in result.failures:
        raise result.failures[key]
    collision = result.collision(key)
    if collision is not None:
        raise PrometheusQueryError(collision)
    return result.readings(key, max_age_seconds)


async def _read_batch(client: PrometheusClient, window_seconds: float, keys: list[Key], result: Round) -> None:
    try:
        await _read_into(client, window_seconds, keys, result)
    except (PrometheusTimeout, PrometheusTooLarge) as error:
        if len(keys) == 1:
            result.failures[keys[0]] = error
            return
        _split(result, len(keys), error)
        half = math.ceil(len(keys) / 2)
        await asyncio.gather(_read_batch(client, window_seconds, keys[:half], result),
                             _read_batch(client, window_seconds, keys[half:], result))


async def _read_into(client: PrometheusClient, window_seconds: float, keys: list[Key] | None, result: Round) -> None:
    """Run one batch's queries; file the answers by resource (only the batch's resources)."""
    wanted = None if keys is None else set(keys)
    texts = batch_queries(batch_selector(keys), window_seconds, gateway_selector(keys), pools=result.pools)
    result.queries += len(texts)
    QUERIES.inc(len(texts))
    answers = await asyncio.gather(*(client.query(text) for text in texts.values()))
    gateway_labels = metrics.GATEWAY_RESOURCE_LABELS
    for signal, samples in zip(texts, answers, strict=True):
        labels = gateway_labels if signal == "gateway" else (NAMESPACE_LABEL, NAME_LABEL)
        for sample in samples:
            key = (sample.labels.get(labels[0], ""), sample.labels.get(labels[1], ""))
            if wanted is None or key in wanted:
                result.series[key][signal].append(sample)


def _split(result: Round, size: int, error: PrometheusError) -> None:
    result.splits += 1
    SPLITS.inc()
    logger.warning("a batched read of %s resources failed (%s): splitting it in halves", size or "all", error)


def _regex(value: str) -> str:
    """A label value as an exact RE2 alternative inside a PromQL string."""
    return re.escape(value).replace("\\", "\\\\").replace('"', '\\"')
