"""Replay a per-request multi-model trace through a pool and through one resource per model.

Both arms see the same requests, the same cost model and the same p95 target:

- **pool**: one set of pods for every model of the family. A request goes to the pod the
  residency router picks (`pool.routing.placements`), and the pod's residency model
  (`imagefleet.residency.Residency`) says what it moves before the call: a swap priced by
  `residency.swap_seconds` from the catalog's bandwidths. The pool's size is
  `pool.sizing.pool_replicas` over its members' demand and the swap seconds observed.
- **per model**: each resource (a checkpoint, or a checkpoint with its adapters) has its own pods,
  scales from zero (the first request starts a pod, which serves after the cold start priced from
  the catalog's load figures: the weights from the model cache, then the warm-up call) and back to
  zero when idle, sized by the same function for one member without swaps.

A request's call takes the cost model's seconds for its steps and images at the family's default
size (`imagefleet.cost.call_seconds`); a pod runs its requests one call each, in the order
sent. Every `interval_seconds` each arm is sized from the last `window_seconds` of demand; a scale
down waits for `scale_down_seconds` of lower recommendations (the autoscaler's stabilization).
A new pod holds its GPU from the moment it is asked for.

Figures: GPU-minutes (pod time, starting included), SLO-violation minutes (minutes of arrival
whose p95 latency is above the target), residency hits (requests that moved nothing), the p95 of
the seconds a checkpoint swap and an adapter load add, swaps per minute, pods started.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from ..autoscaling.simulation import nearest_rank_p95, slo_violation_minutes
from ..catalog import Precision, emulation_table
from ..cost import Plan, builtin_plan, call_seconds, load_seconds
from ..fit import estimate, usable_mib
from ..residency import Adapter, Residency, SwapCost, checkpoint_mib, move_seconds, swap_cost
from ..tiers import PRESETS
from .routing import PodView, Recent, Resident, Want, placements, swap_prices
from .sizing import MemberDemand, pool_replicas, working_set
from .trace import Request

LARGEST_IMAGES = 8  # the largest request the GPU budget leaves room for, by default
# A pod takes a request while fewer images than one batch (the pool's max batch size, the standard
# tier's 4) wait at it: the gateway's filter (gateway/picking.py `batch_has_room`, on the images
# queued that the pod's /v1/load reports). The gateway filters before it ranks: a request goes to the
# best pod with room, and waits at the gateway only when no pod has room.
BATCH_IMAGES = PRESETS["standard"].batching.max_batch_size


@dataclass(frozen=True)
class Setup:
    """What both arms run on, and how they are scaled."""

    family: str = "sdxl"
    gpu_class: str = "h100-80gb"
    precision: Precision = "fp16"
    target_p95_seconds: float = 30.0
    gpu_budget_mib: float | None = None  # None: what the card holds beside the largest call
    host_budget_mib: float = 65536.0
    adapter_slots: int = 16
    interval_seconds: float = 15.0
    window_seconds: float = 60.0
    scale_down_seconds: float = 300.0
    pool_max_replicas: int = 64
    model_max_replicas: int = 8
    # A fixed pool (autoscaling off): this many pods, serving from the trace's start with the family's
    # base checkpoint on the GPU, as a pool pod loads it with itself. None: the pool is sized as above.
    pool_replicas: int | None = None

    def plan(self) -> Plan:
        return builtin_plan(model=self.family, gpu_class=self.gpu_class, precision=self.precision)

    def budget_mib(self) -> float:
        """The GPU budget for checkpoints: given, or the card's usable memory less one call of the largest
        request with everything but the checkpoints (the shared components and the activations)."""
        if self.gpu_budget_mib is not None:
            return self.gpu_budget_mib
        plan = self.plan()
        size = plan.native_size
        peak = estimate(plan.model, self.precision, LARGEST_IMAGES, size, size)
        total = sum(peak.weights_mib.values()) + peak.activations_mib + peak.overhead_mib
        return usable_mib(plan.gpu_class) - (total - checkpoint_mib(plan.model, self.precision))


@dataclass(frozen=True)
class ArmResult:
    gpu_minutes: float
    slo_violation_minutes: int
    requests: int
    p95_seconds: float
    hits: int  # requests that moved nothing (the per-model arm: that waited for no cold start)
    checkpoint_swaps: int
    host_swaps: int  # of the checkpoint swaps, those from host RAM (the rest read the disk)
    adapter_loads: int
    checkpoint_swap_p95_seconds: float  # over the requests that swapped a checkpoint (0: none did)
    adapter_load_p95_seconds: float  # over the requests that loaded an adapter (0: none did)
    pods_started: int
    minutes: float

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    @property
    def swaps_per_minute(self) -> float:
        return (self.checkpoint_swaps + self.adapter_loads) / self.minutes if self.minutes else 0.0


@dataclass(eq=False)
class _Pod:
    name: str
    started: float
    ready_at: float
    residency: Residency | None
    free_at: float = 0.0
    leaving: bool = False
    retired: float | None = None
    # (start, finish, checkpoint, images) of what was sent and not finished.
    running: list[tuple[float, float, str, int]] = field(default_factory=list)

    def wait(self, now: float) -> float:
        return max(0.0, self.free_at - now)

    def waiting(self, now: float) -> int:
        """Requests sent to it that have not started."""
        return sum(1 for start, _, _, _ in self.running if start > now)

    def has_room(self, now: float) -> bool:
        """Fewer than one batch of images sent to it has not started."""
        return sum(images for start, _, _, images in self.running if start > now) < BATCH_IMAGES


@dataclass
class _Served:
    """What one request took, as recorded."""

    arrival: float
    latency: float
    hit: bool
    checkpoint_swap: float | None
    adapter_load: float | None
    from_host: bool = False  # its checkpoint swap came from host RAM


class _Group:
    """Pods that serve one set of resources (the whole pool, or one resource), with their autoscaler."""

    def __init__(self, key: str, start_seconds: float, max_replicas: int,
                 make_residency: Callable[[], Residency | None]) -> None:
        self.key = key
        self.pods: list[_Pod] = []
        # Requests waiting at the gateway, each with whether a pod was serving when it arrived.
        self.waiting: deque[tuple[Request, bool]] = deque()
        self.arrivals: deque[tuple[float, str, float]] = deque()  # (time, resource, work seconds)
        self.swaps: deque[tuple[float, float]] = deque()  # (time, seconds)
        self.recommendations: deque[tuple[float, int]] = deque()
        self.last_seen: dict[str, float] = {}  # checkpoint -> its latest arrival
        self.start_seconds = start_seconds
        self.max_replicas = max_replicas
        self.make_residency = make_residency
        self.started = 0

    def active(self) -> list[_Pod]:
        return [p for p in self.pods if not p.leaving]

    def ready(self, now: float) -> list[_Pod]:
        return [p for p in self.pods if not p.leaving and p.ready_at <= now]

    def add(self, now: float) -> _Pod:
        pod = _Pod(name=f"pod-{self.started}", started=now, ready_at=now + self.start_seconds,
                   residency=self.make_residency())
        pod.free_at = pod.ready_at
        self.pods.append(pod)
        self.started += 1
        return pod


class _Replay:
    def __init__(self, requests: Sequence[Request], setup: Setup, *, pooled: bool) -> None:
        self.requests = requests
        self.setup = setup
        self.pooled = pooled
        self.plan = setup.plan()
        self.cost: SwapCost = swap_cost(setup.gpu_class)
        family_cost = emulation_table().models[setup.family]
        self.adapter_mib = family_cost.adapter_mib or 0.0
        self.checkpoint_mib = checkpoint_mib(self.plan.model, setup.precision)
        self.gpu_budget = setup.budget_mib()
        self.slots = max(1, int(self.gpu_budget // self.checkpoint_mib))
        self.prices = swap_prices(self.cost, self.checkpoint_mib, self.adapter_mib)
        size = self.plan.native_size
        # A pod's cold start: its weights from the model cache, then the runtime's warm-up call.
        self.cold_start = load_seconds(self.plan) + call_seconds(self.plan, width=size, height=size, steps=2, images=1)
        self.groups: dict[str, _Group] = {}
        if pooled and setup.pool_replicas is not None:
            self.groups["pool"] = self._fixed_pool(setup.pool_replicas)
        self.recent = Recent()
        self.served: list[_Served] = []
        self.events: list[tuple[float, int, str, str]] = []
        self.order = 0

    # -- the parts of each arm -------------------------------------------------------------

    def group_of(self, request: Request) -> _Group:
        key = "pool" if self.pooled else request.resource
        group = self.groups.get(key)
        if group is None:
            if self.pooled:
                group = _Group(key, self.cold_start, self.setup.pool_max_replicas, self._residency)
            else:
                extra = sum(self.adapter_mib / self.cost.disk_to_host_mib_per_second for _ in request.adapters)
                group = _Group(key, self.cold_start + extra, self.setup.model_max_replicas, lambda: None)
            self.groups[key] = group
        return group

    def _fixed_pool(self, replicas: int) -> _Group:
        group = _Group("pool", 0.0, replicas, self._residency)
        for _ in range(replicas):
            pod = group.add(0.0)
            assert pod.residency is not None
            pod.residency.touch(self.setup.family, self.checkpoint_mib)
        return group

    def _residency(self) -> Residency:
        return Residency(gpu_budget_mib=self.gpu_budget, host_budget_mib=self.setup.host_budget_mib,
                         adapter_slots=self.setup.adapter_slots)

    def work(self, request: Request) -> float:
        size = self.plan.native_size
        return call_seconds(self.plan, width=size, height=size, steps=request.steps, images=request.images)

    def choose(self, group: _Group, request: Request, now: float) -> _Pod | None:
        """The pod to send `request` to now, among those with room; None when none has room (it waits at
        the gateway, as the gateway holds a request until a pod has room)."""
        ready = group.ready(now)
        for pod in ready:
            pod.running = [entry for entry in pod.running if entry[1] > now]
        ready = [pod for pod in ready if pod.has_room(now)]
        if not self.pooled:
            return min(ready, key=lambda p: p.wait(now)) if ready else None
        views = []
        for index, pod in enumerate(ready):
            assert pod.residency is not None
            pending = self.recent.in_use(pod.name, now)
            for _, _, ckpt, _ in pod.running:
                pending[ckpt] = pending.get(ckpt, 0) + 1
            snapshot = pod.residency.snapshot()
            resident = Resident(gpu=snapshot.gpu, host=snapshot.host,
                                adapters=tuple(a for c, a in snapshot.adapters if c == request.model),
                                gpu_slots=self.slots)
            views.append(PodView(str(index), resident, pod.wait(now), pending))
        if not views:
            return None
        return ready[int(placements(Want(request.model, request.adapters), views, own_seconds=self.work(request),
                                    target_seconds=self.setup.target_p95_seconds, prices=self.prices)[0].url)]

    def send(self, group: _Group, pod: _Pod, request: Request, warm: bool, now: float) -> None:
        checkpoint_swap = adapter_load = None
        from_host = False
        if pod.residency is not None:
            touch = pod.residency.touch(request.model, self.checkpoint_mib,
                                        [Adapter(name, self.adapter_mib) for name in request.adapters])
            seconds = [(move, move_seconds(self.cost, move)) for move in touch.moves]
            from_host = touch.source == "host"
            if touch.source != "gpu":
                checkpoint_swap = sum(s for m, s in seconds if m.adapter is None)
            if touch.adapters_loaded:
                adapter_load = sum(s for m, s in seconds if m.adapter is not None)
            swap = sum(s for _, s in seconds)
            hit = touch.hit
            if swap:
                group.swaps.append((now, swap))
        else:
            # In the per-model arm, a hit is a request that waited for no cold start.
            swap, hit = 0.0, warm
        self.recent.sent(pod.name, request.model, now)
        begin = max(now, pod.free_at)
        pod.free_at = begin + swap + self.work(request)
        pod.running.append((begin, pod.free_at, request.model, request.images))
        self.schedule(pod.free_at, "done", group.key)
        self.served.append(_Served(request.time, pod.free_at - request.time, hit, checkpoint_swap, adapter_load,
                                   from_host))

    def dispatch(self, group: _Group, now: float) -> None:
        """Send every waiting request whose pod has room, oldest first (each model is its own lane at
        the gateway: one that waits for its pod does not hold back the others)."""
        kept: deque[tuple[Request, bool]] = deque()
        while group.waiting:
            request, warm = group.waiting.popleft()
            pod = self.choose(group, request, now)
            if pod is None:
                kept.append((request, warm))
            else:
                self.send(group, pod, request, warm, now)
        group.waiting = kept

    # -- the event loop -------------------------------------------------------------------

    def schedule(self, time: float, kind: str, key: str = "") -> None:
        self.order += 1
        heapq.heappush(self.events, (time, self.order, kind, key))

    def arrive(self, request: Request) -> None:
        now = request.time
        group = self.group_of(request)
        group.arrivals.append((now, request.resource, self.work(request)))
        group.last_seen[request.model] = now
        group.waiting.append((request, bool(group.ready(now))))
        if not group.active():  # scale from zero: the gateway's demand signal starts a pod at once
            pod = group.add(now)
            self.schedule(pod.ready_at, "ready", group.key)
            group.recommendations.append((now, 1))
        self.dispatch(group, now)

    def evaluate(self, group: _Group, now: float) -> None:
        window = self.setup.window_seconds
        while group.arrivals and group.arrivals[0][0] <= now - window:
            group.arrivals.popleft()
        while group.swaps and group.swaps[0][0] <= now - window:
            group.swaps.popleft()
        by_member: dict[str, list[float]] = {}
        for _, resource, work in group.arrivals:
            by_member.setdefault(resource, []).append(work)
        # Waiting for a pod, and sent but not started (each pod runs one at a time).
        queued = len(group.waiting) + sum(p.waiting(now) for p in group.pods)
        members = [MemberDemand(name, len(works) / window, sum(works) / len(works), self.setup.target_p95_seconds)
                   for name, works in sorted(by_member.items())]
        if members:
            members[0] = replace(members[0], queued=queued)
        elif queued:
            members = [MemberDemand("queued", 0.0, 0.0, self.setup.target_p95_seconds, queued=queued)]
        active = group.active()
        ready = sum(1 for p in active if p.ready_at <= now)
        size = pool_replicas(members, swap_seconds=sum(s for _, s in group.swaps) / window, min_replicas=0,
                             max_replicas=group.max_replicas, ready=ready, starting=len(active) - ready,
                             startup_seconds=group.start_seconds, resident_slots=self.slots if self.pooled else 1,
                             working_set=working_set(group.last_seen, now) if self.pooled else 0)
        group.recommendations.append((now, size.replicas))
        while group.recommendations and group.recommendations[0][0] <= now - self.setup.scale_down_seconds:
            group.recommendations.popleft()
        desired = max(size.replicas, max(r for _, r in group.recommendations))
        if desired > len(active):
            for _ in range(desired - len(active)):
                pod = group.add(now)
                self.schedule(pod.ready_at, "ready", group.key)
        elif desired < len(active):
            # Starting pods first, then those with the least work left.
            victims = sorted(active, key=lambda p: (p.ready_at <= now, p.free_at))[: len(active) - desired]
            for pod in victims:
                pod.leaving = True
                pod.retired = max(now, pod.free_at) if pod.ready_at <= now else now

    def run(self) -> ArmResult:
        for index, request in enumerate(self.requests):
            self.schedule(request.time, "arrival", str(index))
        end = self.requests[-1].time
        tick = self.setup.interval_seconds
        # On past the last request until every pod could have scaled away (a fixed pool is not sized).
        setup = self.setup
        fixed = self.pooled and setup.pool_replicas is not None
        while not fixed and tick <= end + setup.window_seconds + setup.scale_down_seconds + 2 * setup.interval_seconds:
            self.schedule(tick, "evaluate")
            tick += self.setup.interval_seconds
        while self.events:
            now, _, kind, key = heapq.heappop(self.events)
            if kind == "arrival":
                self.arrive(self.requests[int(key)])
            elif kind in ("ready", "done"):
                self.dispatch(self.groups[key], now)
            else:
                for group in self.groups.values():
                    if group.pods or group.waiting or group.arrivals:
                        self.evaluate(group, now)
        return self.result(end if fixed else tick)

    def result(self, end: float) -> ArmResult:
        gpu_seconds = 0.0
        started = 0
        for group in self.groups.values():
            started += group.started
            for pod in group.pods:
                gpu_seconds += (pod.retired if pod.retired is not None else max(end, pod.free_at)) - pod.started
        by_minute: dict[int, list[float]] = {}
        for served in self.served:
            by_minute.setdefault(int(served.arrival // 60), []).append(served.latency)
        swaps = [s.checkpoint_swap for s in self.served if s.checkpoint_swap is not None]
        loads = [s.adapter_load for s in self.served if s.adapter_load is not None]
        return ArmResult(
            gpu_minutes=gpu_seconds / 60,
            slo_violation_minutes=slo_violation_minutes(by_minute, self.setup.target_p95_seconds),
            requests=len(self.served),
            p95_seconds=nearest_rank_p95([s.latency for s in self.served]),
            hits=sum(1 for s in self.served if s.hit),
            checkpoint_swaps=len(swaps),
            host_swaps=sum(1 for s in self.served if s.from_host),
            adapter_loads=len(loads),
            checkpoint_swap_p95_seconds=nearest_rank_p95(swaps),
            adapter_load_p95_seconds=nearest_rank_p95(loads),
            pods_started=started,
            minutes=(self.requests[-1].time - self.requests[0].time) / 60 or 1.0,
        )


def replay(requests: Sequence[Request], setup: Setup, *, pooled: bool) -> ArmResult:
    """One arm over the trace (deterministic: the trace fixes every arrival)."""
    if not requests:
        raise ValueError("an empty trace")
    return _Replay(requests, setup, pooled=pooled).run()


@dataclass(frozen=True)
class Comparison:
    pool: ArmResult
    per_model: ArmResult

    @property
    def gpu_minutes_saved(self) -> float:
        """The pool's GPU-minutes below the per-model arm's, as a share of those."""
        return 1.0 - self.pool.gpu_minutes / self.per_model.gpu_minutes if self.per_model.gpu_minutes else math.nan


def compare(requests: Sequence[Request], setup: Setup) -> Comparison:
    return Comparison(replay(requests, setup, pooled=True), replay(requests, setup, pooled=False))
