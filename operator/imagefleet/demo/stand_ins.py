"""Stand-ins for the pods' endpoints: KWOK pods run no containers, so for each
runtime Deployment the operator made, the demo runs one real `imagefleet-runtime`
with that Deployment's settings (but the `tiny` model on CPU), and Prometheus
scrapes it with the labels a pod of that resource would carry. Batching and
queue settings are the resource's; image defaults are the `tiny` model's, so a
CPU warms up in seconds instead of rendering 1024x1024.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kubernetes import client

from imagefleet.autoscaling.queries import NAME_LABEL, NAMESPACE_LABEL
from imagefleet.catalog import model_catalog
from imagefleet.demo.runtimes import RuntimeProcess, start_runtime
from imagefleet.dev.prometheus import LocalPrometheus, Target

# Settings the stand-in decides itself: what the pod would load and where it listens.
_OWN_SETTINGS = {
    "IMAGEFLEET_MODEL", "IMAGEFLEET_MODEL_PATH", "IMAGEFLEET_OFFLINE", "IMAGEFLEET_PRECISION",
    "IMAGEFLEET_DEVICE", "IMAGEFLEET_HOST", "IMAGEFLEET_PORT",
}


class StandIns:
    """One runtime per runtime Deployment in `namespace`, registered with Prometheus once ready."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        prometheus: LocalPrometheus,
        logs: Path,
        on_start: Callable[[RuntimeProcess], None],
    ) -> None:
        self.apps = client.AppsV1Api(api)
        self.namespace = namespace
        self.prometheus = prometheus
        self.logs = logs
        self.on_start = on_start
        self.runtimes: dict[str, RuntimeProcess] = {}
        self._scraped: set[str] = set()

    def sync(self) -> None:
        """Start a runtime for each new Deployment; add each newly ready one to Prometheus."""
        for deployment in self.apps.list_namespaced_deployment(self.namespace).items:
            name = deployment.metadata.name
            if name not in self.runtimes:
                runtime = start_runtime(self.logs / f"runtime-{name}.log", settings=_settings(deployment))
                self.runtimes[name] = runtime
                self.on_start(runtime)
        ready = {name for name, runtime in self.runtimes.items() if runtime.ready()}
        if ready != self._scraped:
            self._scraped = ready
            self.prometheus.set_targets(
                [
                    Target(self.runtimes[name].address, {NAMESPACE_LABEL: self.namespace, NAME_LABEL: name})
                    for name in sorted(ready)
                ]
            )

    def url(self, name: str) -> str | None:
        """The endpoint standing in for `name`'s Service, once it serves."""
        return self.runtimes[name].url if name in self._scraped else None

    def stop(self) -> None:
        for runtime in self.runtimes.values():
            runtime.stop()
        self.runtimes.clear()
        self._scraped.clear()


def _settings(deployment: client.V1Deployment) -> dict[str, str]:
    """The runtime container's IMAGEFLEET_* settings, as the operator wrote them."""
    container = deployment.spec.template.spec.containers[0]
    resource = {
        env.name: env.value
        for env in container.env or []
        if env.name.startswith("IMAGEFLEET_") and env.name not in _OWN_SETTINGS and env.value is not None
    }
    tiny = model_catalog()["tiny"].defaults
    return {
        **resource,
        "IMAGEFLEET_DEFAULT_WIDTH": str(tiny.width),
        "IMAGEFLEET_DEFAULT_HEIGHT": str(tiny.height),
        "IMAGEFLEET_DEFAULT_STEPS": str(tiny.steps),
    }
