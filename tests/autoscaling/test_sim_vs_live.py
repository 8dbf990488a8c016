"""The simulator's service model against one live emulated pod behind the gateway, on the same arrivals.

A real `imagefleet-runtime --engine emulated` process (SDXL 1024², 30 steps on an A100's
published timings, time-compressed) behind the real gateway (its queue by deadline, with the
target scaled by the same speed-up) takes an open-loop Poisson burst above the pod's capacity
through the comparison benchmark's own client (benchmarks/sim_vs_live.py); the simulator
replays the same arrivals through its model of the gateway and one pod, with the cost model
mapped the benchmark's way (batch_seconds = base x (1 - c), image_seconds = base x c). The
gateway's queue, continuous batching and the pod must give the same tail (p95 within 20 %) and
the same refusals. The full fleet comparison, with the operator and Prometheus, is the benchmark.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from benchmarks.sim_vs_live import replay
from imagefleet.autoscaling import simulation
from imagefleet.autoscaling.simulation import Fleet, nearest_rank_p95, poisson_arrivals, simulate
from imagefleet.cost import builtin_plan, call_seconds
from imagefleet.gateway.service import Settings
from tests.gateway.support import running_gateway
from imagefleet_runtime import batcher
from tests.runtime.support import runtime_server

pytestmark = pytest.mark.slow

SPEEDUP = 5.0
# Trace seconds: 0.9 requests/s for a minute (one pod serves about 0.49/s at batch 4), then a
# quiet tail long enough for the backlog to drain.
TRACE = [(0.0, 0.9), (60.0, 0.0), (240.0, 0.0)]
TARGET_SECONDS = 60.0  # trace seconds


class OnePod:
    def __init__(self, url: str) -> None:
        self.url = url

    def pick(self) -> str:
        return self.url

    def release(self, url: str) -> None:
        pass


async def test_one_pod_queues_and_batches_as_simulated(tmp_path: Path) -> None:
    plan = builtin_plan(model="sdxl", gpu_class="a100-80gb", precision="fp16")
    base = call_seconds(plan, width=1024, height=1024, steps=30, images=1)
    c = plan.class_cost.batch_cost
    fleet = Fleet(batch_seconds=base * (1 - c), image_seconds=base * c, max_batch_size=4,
                  startup_seconds=0.0)
    simulated = simulate(TRACE, lambda _: 1, fleet, initial_replicas=1, target_p95_seconds=TARGET_SECONDS, seed=0)
    arrivals = poisson_arrivals(TRACE, random.Random(0))  # the simulator's seed-0 arrivals

    flags = ("--engine", "emulated", "--gpu-class", "a100-80gb", "--model", "sdxl", "--precision", "fp16",
             "--emulation-speedup", str(SPEEDUP), "--max-batch-size", "4", "--queue-size", "64",
             "--default-steps", "30")
    with runtime_server(tmp_path, *flags) as server, running_gateway(Settings(poll_interval_seconds=0.1)) as gateway:
        gateway.set_resource("one", tier="bulk", autoscaling={"targetP95Seconds": TARGET_SECONDS / SPEEDUP})
        gateway.set_endpoints("one", [server.base_url])
        gateway.wait_polled([server.base_url])
        replayed = await replay(OnePod(gateway.base_url), arrivals, SPEEDUP, model="one")

    live = [latency for _, latency in replayed.latencies]
    print(f"{len(arrivals)} requests: p95 live {nearest_rank_p95(live):.1f} s, simulated {simulated.p95_seconds:.1f} s "
          f"(trace seconds, emulated; one call of 1 image {base:.2f} s)")
    assert simulated.requests == len(live) == len(arrivals)
    assert replayed.refused == simulated.rejected == 0
    assert all(latency < float("inf") for latency in live)
    # The burst queued: the tail is several calls long, so batching and queueing decide it.
    assert simulated.p95_seconds > 4 * base
    assert simulated.p95_seconds == pytest.approx(nearest_rank_p95(live), rel=0.2)


def test_the_simulated_pods_average_their_calls_as_the_runtime_does() -> None:
    """The gateway's admission reads each pod's full-call estimate; the simulator's pods keep it
    with the runtime batcher's smoothing."""
    assert simulation.BATCH_TIME_SMOOTHING == batcher.BATCH_TIME_SMOOTHING
