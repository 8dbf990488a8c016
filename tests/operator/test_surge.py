"""RolloutBlocked: a rollout that needs a surge pod and finds no free GPU for it says so (pure; the
cluster test is in test_disruption_cluster.py)."""

from __future__ import annotations

from typing import Any

import pytest

from imagefleet import GROUP, VERSION
from imagefleet.catalog import load_gpu_classes
from imagefleet.crd.models import RolloutSpec
from imagefleet.reconcile.plan import Config, Observed, plan
from imagefleet.reconcile.surge import ROLLOUT_BLOCKED, surge_blocked_message, surge_gpus_needed

CLASSES = load_gpu_classes()
L4 = CLASSES["l4-24gb"]


@pytest.mark.parametrize(("surge", "unavailable", "replicas", "needed"), [
    (1, 0, 1, 1),  # a single replica that must not drop to zero: one surge pod first
    (0, 1, 1, 0),  # the default: the old pod goes first, no spare GPU needed
    (1, 1, 1, 0),  # may drop one: the controller does not wait for the surge pod
    ("25%", "25%", 1, 1),  # 25 % of 1: surge rounds up to 1, unavailable down to 0
    ("25%", "25%", 4, 0),  # 25 % of 4: one of each
    (2, 0, 3, 1),  # one replica's GPUs are enough for the first step
    (1, 0, 0, 0),  # nothing to roll
])
def test_surge_gpus_needed(surge: int | str, unavailable: int | str, replicas: int, needed: int) -> None:
    rollout = RolloutSpec(max_surge=surge, max_unavailable=unavailable)
    assert surge_gpus_needed(rollout, replicas, L4) == needed


def test_cpu_class_never_waits_for_a_gpu() -> None:
    assert surge_gpus_needed(RolloutSpec(max_surge=1, max_unavailable=0), 1, CLASSES["cpu"]) == 0


def test_message_names_the_class_and_the_way_out() -> None:
    rollout = RolloutSpec(max_surge=1, max_unavailable=0)
    assert surge_blocked_message(rollout, 1, L4, free_gpus=1) is None
    message = surge_blocked_message(rollout, 1, L4, free_gpus=0)
    assert message is not None and message.startswith("no free l4-24gb GPU for the surge pod (0 free, 1 needed)")
    assert "the rollout waits" in message and "spec.rollout.maxUnavailable to 1" in message


def _imd(steps: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageModelDeployment",
        "metadata": {"name": "solo", "namespace": "ns", "uid": "uid-1", "generation": 2},
        "spec": {"model": {"name": "sd15"}, "gpuClass": "l4-24gb", "replicas": 1,
                 "rollout": {"maxSurge": 1, "maxUnavailable": 0}, "generation": {"defaultSteps": steps}},
    }


def test_plan_warns_once_when_the_template_changes_and_no_gpu_is_free() -> None:
    config = Config(gpu_classes=CLASSES, runtime_image="runtime:test")
    first = plan(Observed(_imd(20), None, None), config)
    assert first.deployment.manifest is not None
    live = first.deployment.manifest

    def reasons(steps: int, free: int | None) -> list[str]:
        planned = plan(Observed(_imd(steps), live, None, free_gpus=free), config)
        return [event.reason for event in planned.deployment.events]

    assert ROLLOUT_BLOCKED in reasons(30, 0)  # a new pod template: the rollout starts and cannot surge
    assert ROLLOUT_BLOCKED not in reasons(30, 1)  # a GPU is free
    assert ROLLOUT_BLOCKED not in reasons(30, None)  # capacity unknown: nothing said
    assert reasons(20, 0) == []  # nothing to roll out: nothing said
