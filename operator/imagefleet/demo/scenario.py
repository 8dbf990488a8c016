"""The demo's script: the sample resources, the burst of load, and what must hold."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from imagefleet import GROUP, PLURAL, VERSION, conditions
from imagefleet.autoscaling.loop import GATEWAY_DEMAND_READ
from imagefleet.bench.load import Plan, request_body, run_load
from imagefleet.bench.stats import RequestRecord, summarize
from imagefleet.fit import INSUFFICIENT_MEMORY

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
BULK = "thumbnails"
PREMIUM = "renders"
REFUSED = "renders-on-l4"

# The burst, through the gateway: many requests for the `images` group at quality low (the
# bulk tier), one at a time at quality high (the premium tier), each at its resource's
# default size and steps (the emulated pods take the time a card would). Long enough for
# the bulk tier to scale up in steps (the gateway sheds what the ready pods cannot serve within
# the target, so the autoscaler sees only what the pods serve and grows a step at a time), load
# its model and serve the whole burst for a window at the end.
BURST_SECONDS = 180.0
GROUP_NAME = "images"
BULK_CONCURRENCY = 48
PREMIUM_CONCURRENCY = 1
BULK_BODY = {**request_body(prompt="a lighthouse at dusk"), "model": GROUP_NAME, "quality": "low"}
PREMIUM_BODY = {**request_body(prompt="a lighthouse at dusk"), "model": GROUP_NAME, "quality": "high"}
# The client-side figures in the live table cover this much of the recent past.
WINDOW_SECONDS = 30.0
# A client p95 needs this many answers in its window to be shown or judged.
MIN_WINDOW_REQUESTS = 20

Resource = Mapping[str, Any]


@dataclass(frozen=True)
class Snapshot:
    """The demo namespace at one moment: resources by name, and which have a Deployment."""

    resources: dict[str, Resource]
    deployments: frozenset[str]


def read_snapshot(api: client.ApiClient, namespace: str) -> Snapshot:
    listed: dict[str, Any] = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )
    deployments = client.AppsV1Api(api).list_namespaced_deployment(namespace).items
    return Snapshot(
        resources={item["metadata"]["name"]: item for item in listed["items"]},
        deployments=frozenset(d.metadata.name for d in deployments),
    )


def example_files() -> list[Path]:
    files = sorted(EXAMPLES.glob("*.yaml"))
    if not files:
        raise FileNotFoundError(f"no sample resources in {EXAMPLES}: run the demo from an imagefleet checkout")
    return files


def apply_examples(api: client.ApiClient, namespace: str) -> list[str]:
    """Create every resource of examples/ in `namespace`; their names."""
    objects = client.CustomObjectsApi(api)
    names = []
    for path in example_files():
        body = yaml.safe_load(path.read_text())
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        names.append(body["metadata"]["name"])
    return names


def _condition(resource: Resource | None, type_: str) -> Mapping[str, Any] | None:
    status = (resource or {}).get("status") or {}
    return conditions.find(status.get("conditions"), type_)


def is_ready(snapshot: Snapshot, name: str) -> bool:
    ready = _condition(snapshot.resources.get(name), conditions.READY)
    return ready is not None and ready.get("status") == conditions.TRUE


def is_refused_for_memory(snapshot: Snapshot, name: str) -> bool:
    fits = _condition(snapshot.resources.get(name), conditions.FITS_GPU)
    return (
        fits is not None
        and fits.get("status") == conditions.FALSE
        and fits.get("reason") == INSUFFICIENT_MEMORY
        and name not in snapshot.deployments
    )


def scaled_up_and_ready(snapshot: Snapshot, name: str) -> bool:
    status = (snapshot.resources.get(name) or {}).get("status") or {}
    desired = status.get("desiredReplicas") or 0
    return bool(desired > 1 and status.get("readyReplicas") == desired)


def sizes_from_gateway_demand(snapshot: Snapshot, name: str) -> bool:
    """The autoscaler's last reading of the resource included the gateway's demand series."""
    available = _condition(snapshot.resources.get(name), conditions.METRICS_AVAILABLE)
    return (
        available is not None
        and available.get("status") == conditions.TRUE
        and str(available.get("message", "")).startswith(GATEWAY_DEMAND_READ)
    )


@dataclass
class Expectation:
    """Something the scenario must show; it stays met once seen."""

    description: str
    check: Callable[[Snapshot], bool]
    met_after_seconds: float | None = None

    def update(self, snapshot: Snapshot, elapsed: float) -> None:
        if self.met_after_seconds is None and self.check(snapshot):
            self.met_after_seconds = elapsed


def settle_expectations() -> list[Expectation]:
    """What must hold before the burst."""
    return [
        Expectation(f"{BULK} (bulk) becomes Ready", lambda s: is_ready(s, BULK)),
        Expectation(f"{PREMIUM} (premium) becomes Ready", lambda s: is_ready(s, PREMIUM)),
        Expectation(
            f"{REFUSED} is refused: FitsGPU=False ({INSUFFICIENT_MEMORY}), no Deployment",
            lambda s: is_refused_for_memory(s, REFUSED),
        ),
    ]


def burst_expectations() -> list[Expectation]:
    return [
        Expectation(
            f"{BULK} is sized from the gateway's demand (MetricsAvailable)",
            lambda s: sizes_from_gateway_demand(s, BULK),
        ),
        Expectation(
            f"{BULK} scales up under the burst (desired > 1, all ready)", lambda s: scaled_up_and_ready(s, BULK)
        ),
    ]


def target_p95(snapshot: Snapshot, name: str) -> float | None:
    resource = snapshot.resources.get(name) or {}
    target = ((resource.get("spec") or {}).get("autoscaling") or {}).get("targetP95Seconds")
    return None if target is None else float(target)


@dataclass(frozen=True)
class Answer:
    """One answered request of the burst: when it was sent and answered (demo clock), and how."""

    resource: str
    sent: float
    finished: float
    record: RequestRecord


@dataclass(frozen=True)
class WindowFigures:
    """What the clients saw of one resource over a window."""

    requests: int
    p95_seconds: float | None
    images_per_minute: float
    errors: int


def window_figures(answers: list[Answer], resource: str, start: float, end: float) -> WindowFigures:
    """For `resource` over [start, end): the p95 latency of the requests sent then, and the
    images/min and errors of the answers that came then."""
    mine = [a for a in answers if a.resource == resource]
    sent = summarize([a.record for a in mine if start <= a.sent < end], end - start)
    answered = summarize([a.record for a in mine if start <= a.finished < end], end - start)
    p95 = sent.latency_p95_seconds if sent.succeeded >= MIN_WINDOW_REQUESTS else None
    return WindowFigures(sent.requests, p95, answered.images_per_minute, answered.failed)


@dataclass
class Burst:
    """The load, in a thread of its own; keeps every answer with the time it came."""

    # resource -> (the gateway's URL, the request body that routes to it, concurrency)
    targets: dict[str, tuple[str, dict[str, Any], int]]
    clock: Callable[[], float]
    seconds: float = BURST_SECONDS
    sent: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _task: asyncio.Task[Any] | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="demo-burst", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass  # the loop closed meanwhile: the burst is over
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _count(self, resource: str, record: RequestRecord) -> None:
        self.sent += 1
        finished = self.clock()
        self.answers.append(Answer(resource, finished - record.latency_s, finished, record))
        if record.error is not None:
            self.failed += 1
            self.errors[record.error] = self.errors.get(record.error, 0) + 1

    def _run(self) -> None:
        async def main() -> None:
            self._task = asyncio.current_task()
            await asyncio.gather(
                *(
                    run_load(
                        url,
                        body,
                        Plan(concurrency=concurrency, duration_s=self.seconds),
                        lambda record, resource=resource: self._count(resource, record),  # type: ignore[misc]
                    )
                    for resource, (url, body, concurrency) in self.targets.items()
                )
            )

        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(main())
        except asyncio.CancelledError:
            pass
        finally:
            self._loop.close()
