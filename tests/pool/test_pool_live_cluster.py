"""The live pool replay harness (benchmarks/pool_live.py) end to end on the local fleet: a fixed pool of
2 emulated SDXL pods, 3 checkpoint members and 4 LoRA members, the real operator and gateway, a
synthetic trace of 45 s replayed open loop. Every request of the trace is answered, each once counted
by the pods' residency counters, and the live hit rate is within 20 % of the simulator's on the same trace.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.pool_live import WITHIN, Case, relative, run_live
from imagefleet.pool.replay import replay
from tests.conftest import Cluster
from tests.gateway.process import gateway_process
from tests.operator.conftest import imagefleet_operator, imd_crd, operator_factory  # noqa: F401 - its fixtures
from tests.operator.harness import OperatorProcess

pytestmark = pytest.mark.slow

CASE = Case(checkpoints=3, adapters=4, replicas=2, minutes=0.75, rate=0.4, seed=0)


async def test_a_small_pool_replay_answers_every_request_near_the_simulators_hit_rate(
    cluster: Cluster, namespace: str, imagefleet_operator: OperatorProcess, tmp_path: Path
) -> None:
    requests = CASE.trace(tmp_path / "trace.csv")
    assert any(r.adapters for r in requests), "the trace should exercise an adapter member"
    with gateway_process(cluster.kubeconfig, namespace, tmp_path / "gateway.log") as gateway:
        live = await run_live(cluster.api_client, namespace, gateway.url, CASE, requests)
    assert [(r.arrival, r.member) for r in live.records] == sorted(
        (r.time, r.adapters[0] if r.adapters else r.model) for r in requests)
    assert live.statuses() == {200: len(requests)}
    # The pods counted each answered request once, as a hit or a miss.
    assert live.counters.hits + live.counters.misses == len(requests)
    simulated = replay(requests, CASE.setup(), pooled=True)
    assert abs(relative(live.hit_rate, simulated.hit_rate)) <= WITHIN, (live.hit_rate, simulated.hit_rate)
