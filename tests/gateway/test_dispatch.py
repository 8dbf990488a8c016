"""Which waiting requests a change of the fleet wakes: the gateway's dispatcher, in process."""

from __future__ import annotations

import asyncio
import json

from imagefleet.gateway.routing import Route
from imagefleet.gateway.service import Gateway, Settings


async def test_a_fleet_change_dispatches_only_the_lanes_of_the_groups_it_concerns() -> None:
    """Finding 6 of the security review: a change woke every held request and routed each again.
    Now it routes each lane of a changed group once, and leaves the other groups' lanes alone."""
    gateway = Gateway(Settings(hold_timeout_seconds=60))
    routed: list[tuple[str, str, str]] = []
    route_lane = gateway._route

    def counting(lane_key: tuple[str, str, str]) -> Route | None:
        routed.append(lane_key)
        return route_lane(lane_key)

    gateway._route = counting  # type: ignore[method-assign]
    try:
        for name in ("quiet", "busy"):  # two groups, no pods yet: requests wait in their lanes
            gateway.fleet_changed(gateway.fleet.apply_resource("ADDED", {
                "metadata": {"namespace": "ns", "name": name},
                "spec": {"model": {"name": "tiny"}, "gpuClass": "cpu", "tier": "bulk"}}))
        waiting = [asyncio.ensure_future(gateway.generate(json.dumps({"prompt": "a fox", "model": "quiet"}).encode(),
                                                          None)) for _ in range(50)]
        lane = ("ns", "quiet", "bulk")
        for _ in range(200):
            if gateway.lanes.get(lane) is not None and gateway.lanes[lane].size == 50:
                break
            await asyncio.sleep(0.01)
        assert gateway.lanes[lane].size == 50
        routed.clear()
        changed = gateway.fleet.apply_resource("MODIFIED", {
            "metadata": {"namespace": "ns", "name": "busy"},
            "spec": {"model": {"name": "tiny"}, "gpuClass": "cpu", "tier": "bulk", "autoscaling": {"targetP95Seconds": 50}}})
        gateway.fleet_changed(changed)
        assert changed == {("ns", "busy")} and routed == []  # the quiet group's 50 requests were not woken
        gateway.fleet_changed(gateway.fleet.apply_resource("MODIFIED", {
            "metadata": {"namespace": "ns", "name": "quiet"},
            "spec": {"model": {"name": "tiny"}, "gpuClass": "cpu", "tier": "bulk", "autoscaling": {"targetP95Seconds": 50}}}))
        assert routed == [lane]  # its own change: one route for the lane, not one per waiting request
        assert not any(w.done() for w in waiting)
    finally:
        for w in waiting:
            w.cancel()
        await gateway.stop()
