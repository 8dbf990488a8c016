"""Queueing-model sizing: the fewest replicas that meet a p95 target at an arrival rate.

Each ready replica is a server that runs batches: over the window it served
`batch_size` requests per `batch_seconds` on average, so its throughput is
mu = batch_size / batch_seconds requests per second (a lower bound: batches grow
with load). With Poisson arrivals at lambda, Erlang C gives the chance that a
request waits and the tail of the wait, P(W > t) = C(n, lambda/mu) e^-(n mu - lambda) t,
halved for near-constant service times. A request's latency is its wait plus one
batch, so n meets the target when the 95th percentile of the wait is at most the
slack, targetP95Seconds - batch_seconds.

Replicas asked for now serve only after the start-up time. The requests waiting
now, plus what the fleet falls behind by until then (the ready replicas serving
throughout, those still starting for half of it), are to drain within DRAIN_SHARE
of the start-up time once the new ones serve.
"""

from __future__ import annotations

import math

QUANTILE = 0.95
MOST_REPLICAS = 1000
# Diffusion pipeline calls of one shape take a near-constant time: by the Allen-Cunneen
# approximation, waits are (1 + Cs^2) / 2 of the exponential-service M/M/n ones, Cs ~ 0.
VARIABILITY = 0.5
# The backlog is to drain within this share of the start-up time once new replicas serve
# (at least within the slack): a trade between replicas held and minutes over the target,
# chosen with `imagefleet simulate` on the shipped traces.
DRAIN_SHARE = 0.3
# Replicas already asked for serve, on average, halfway through the coming start-up time.
STARTING_SHARE = 0.5


def erlang_c(servers: int, load: float) -> float:
    """Probability that an arrival waits in an M/M/n queue with `load` = lambda / mu < n."""
    blocking = 1.0  # Erlang B, by its recursion
    for k in range(1, servers + 1):
        blocking = load * blocking / (k + load * blocking)
    return servers * blocking / (servers - load * (1.0 - blocking))


def wait_quantile(servers: int, arrival_rate: float, service_rate: float) -> float:
    """The QUANTILE of the wait in an M/M/n queue; inf when it is unstable."""
    load = arrival_rate / service_rate
    if servers * service_rate <= arrival_rate:
        return math.inf
    waits = erlang_c(servers, load)
    if waits <= 1.0 - QUANTILE:
        return 0.0
    return VARIABILITY * math.log(waits / (1.0 - QUANTILE)) / (servers * service_rate - arrival_rate)


def replicas_for(
    *,
    arrival_rate: float,
    batch_seconds: float,
    batch_size: float,
    queue: float,
    ready: int,
    starting: int,
    target_p95_seconds: float,
    startup_seconds: float,
) -> int | None:
    """Replicas for the p95 target; None when one batch alone takes the whole target."""
    slack = target_p95_seconds - batch_seconds
    if slack <= 0 or batch_seconds <= 0:
        return None
    service_rate = max(1.0, batch_size) / batch_seconds
    steady = 0
    if arrival_rate > 0:
        stable = math.floor(arrival_rate / service_rate) + 1
        steady = next(
            (n for n in range(stable, MOST_REPLICAS + 1) if wait_quantile(n, arrival_rate, service_rate) <= slack),
            MOST_REPLICAS,
        )
    backlog = max(0.0, queue + (arrival_rate - ready * service_rate) * startup_seconds
                  - STARTING_SHARE * starting * service_rate * startup_seconds)
    drain = (arrival_rate + backlog / max(slack, DRAIN_SHARE * startup_seconds)) / service_rate
    return max(steady, math.ceil(drain) if backlog > 0 else 0)
