"""The autoscaling rounds' peering gate: kopf's rule read from its peering objects' status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from imagefleet.handlers.peering import active, statuses

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def peer(priority: int, seen_seconds_ago: float, lifetime: int = 60) -> dict[str, object]:
    return {"priority": priority, "lifetime": lifetime,
            "lastseen": (NOW - timedelta(seconds=seen_seconds_ago)).isoformat()}


def test_a_live_peer_of_higher_priority_pauses_the_rounds() -> None:
    assert not active([{"me": peer(10, 5), "other": peer(20, 5)}], 10, NOW)


def test_alone_or_above_every_live_peer_runs_the_rounds() -> None:
    assert active([{"me": peer(10, 5)}], 10, NOW)
    assert active([{"me": peer(10, 5), "standby": peer(3, 5)}], 10, NOW)
    assert active([], 10, NOW)


def test_a_dead_peer_of_higher_priority_does_not_pause() -> None:
    assert active([{"me": peer(10, 5), "gone": peer(20, 61, lifetime=60)}], 10, NOW)
    assert not active([{"me": peer(10, 5), "late": peer(20, 59, lifetime=60)}], 10, NOW)


def test_any_namespace_peering_pauses_the_whole_operator() -> None:
    assert not active([{"me": peer(10, 5)}, {"me": peer(10, 5), "other": peer(11, 1)}], 10, NOW)


def test_statuses_pick_the_named_peering_in_every_namespace() -> None:
    index = {"imagefleet": [{"c": 3}, {"d": 4}], "other": [{"b": 2}]}
    assert statuses("imagefleet", index) == [{"c": 3}, {"d": 4}]
    assert statuses("absent", index) == []
