"""The gateway's queue, pure parts: deadlines, the start prediction, admission, fair EDF dequeue, pricing."""

from __future__ import annotations

import math

import pytest

from imagefleet.cost import builtin_plan, call_seconds
from imagefleet.crd.models import ImageModelDeploymentSpec
from imagefleet.gateway.errors import InvalidRequest
from imagefleet.gateway.pricing import pricing_of
from imagefleet.gateway.queue import Capacity, Entry, Lane, admit, deadline_seconds, predicted_start


def test_deadline_is_the_target_or_a_shorter_header_and_a_bad_header_is_a_400() -> None:
    assert deadline_seconds(None, 30.0) == 30.0
    assert deadline_seconds("12.5", 30.0) == 12.5
    assert deadline_seconds("90", 30.0) == 30.0  # capped at the tier's target
    for bad in ("soon", "-1", "0", "nan", "inf", ""):
        with pytest.raises(InvalidRequest) as error:
            deadline_seconds(bad, 30.0)
        assert error.value.code == "invalid_deadline"
        assert error.value.param == "X-Imagefleet-Deadline-Seconds"


def capacity(ready_rate: float, starting_in: tuple[float, ...] = (), pod_rate: float = 1.0, at_pods: float = 0.0,
             service: float = 2.0) -> Capacity:
    return Capacity(ready_rate, pod_rate, starting_in, at_pods, service)


def test_start_prediction_counts_ready_rate_and_starting_pods_from_their_ready_time() -> None:
    assert predicted_start(0, capacity(1.0)) == 0.0
    assert predicted_start(10, capacity(2.0)) == pytest.approx(5.0)
    # One pod at 1/s now, a second from t=4: 4 served by then, the other 6 at 2/s -> 7 s.
    assert predicted_start(10, capacity(1.0, starting_in=(4.0,))) == pytest.approx(7.0)
    # Done before the starting pod serves: it changes nothing.
    assert predicted_start(3, capacity(1.0, starting_in=(4.0,))) == pytest.approx(3.0)
    # No ready pod: only the starting ones serve, from their ready time.
    assert predicted_start(4, capacity(0.0, starting_in=(10.0, 10.0))) == pytest.approx(12.0)
    assert predicted_start(1, capacity(0.0)) == math.inf


def test_admission_waits_while_start_plus_a_batch_meets_the_deadline_else_says_when_to_retry() -> None:
    assert admit(5, capacity(1.0, service=2.0), deadline=10.0).retry_after is None  # 5 + 2 <= 10
    late = admit(12, capacity(1.0, service=2.0), deadline=10.0)
    assert late.retry_after == pytest.approx(4.0) and late.predicted_start == pytest.approx(12.0)
    # What waits at the pods is ahead too.
    assert admit(5, capacity(1.0, at_pods=4.0, service=2.0), deadline=10.0).retry_after == pytest.approx(1.0)
    # Nothing to predict with (no ready pod's rate known): it waits.
    assert admit(1000, None, deadline=1.0).retry_after is None
    # No capacity at all, none coming: shed, retry after one batch.
    assert admit(1, capacity(0.0, service=2.0), deadline=10.0).retry_after == 2.0


def entry(key: str, deadline: float) -> Entry:
    return Entry(key=key, deadline=deadline, work_seconds=1.5)


def test_dequeue_is_fair_between_keys_and_earliest_deadline_first_within_one() -> None:
    lane = Lane()
    flood = [entry("flood", deadline) for deadline in (30.0, 10.0, 20.0, 40.0)]
    for item in flood:
        lane.push(item)
    calm = entry("calm", 50.0)
    lane.push(calm)
    assert lane.size == 5 and lane.work_seconds == pytest.approx(7.5)
    assert lane.ahead_of("calm") == 1 + 2  # its own one, and a turn of the flood before each of its two
    assert lane.ahead_of("new") == 1 + 1  # one turn of each other key
    order = [lane.pop() for _ in range(5)]
    assert order == [flood[1], calm, flood[2], flood[0], flood[3]]
    assert lane.pop() is None and lane.size == 0 and lane.work_seconds == 0.0


def test_a_removed_request_leaves_the_counts_at_once_and_is_never_dequeued() -> None:
    lane = Lane()
    gone, stays = entry("a", 1.0), entry("a", 2.0)
    lane.push(gone)
    lane.push(stays)
    assert lane.remove(gone) and not lane.remove(gone)
    assert lane.size == 1 and lane.count("a") == 1
    assert lane.pop() is stays
    assert not lane.remove(stays)  # dequeued already: nothing to take out


def test_a_request_is_priced_by_the_catalog_cost_model_with_the_resource_defaults() -> None:
    spec = ImageModelDeploymentSpec.model_validate(
        {"model": {"name": "sd35-medium"}, "gpuClass": "l4-24gb", "tier": "bulk", "precision": "fp16",
         "generation": {"defaultSteps": 20, "defaultWidth": 512, "defaultHeight": 512}})
    pricing = pricing_of(spec)
    assert pricing is not None
    plan = builtin_plan(model="sd35-medium", gpu_class="l4-24gb", precision="fp16")
    assert pricing.work_seconds(steps=None, size=None, images=1) == pytest.approx(
        call_seconds(plan, width=512, height=512, steps=20, images=1))
    assert pricing.work_seconds(steps=40, size=(1024, 768), images=3) == pytest.approx(
        call_seconds(plan, width=1024, height=768, steps=40, images=3))
    unknown = ImageModelDeploymentSpec.model_validate({"model": {"name": "someone/custom-model"}, "gpuClass": "l4-24gb"})
    assert pricing_of(unknown) is None

