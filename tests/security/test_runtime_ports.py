"""Finding 3 (ports): Prometheus is let in to a runtime pod's metrics port only, so that port must serve
nothing but /metrics. Attack against a real runtime process, as a scraper that tries the metrics port
for work: a generation, the load answer and the model list are 404 there, with no image made; /metrics
is not on the generation port, so the gateway's port shows no metrics either."""

from __future__ import annotations

import httpx

from imagefleet import metrics as names
from tests.runtime.support import RunningServer


def test_the_metrics_port_serves_metrics_and_nothing_else(bulk_pod: RunningServer) -> None:
    made = bulk_pod.metric(names.IMAGES_GENERATED_TOTAL)
    with httpx.Client(base_url=bulk_pod.metrics_url, timeout=30) as scraper:
        generation = scraper.post("/v1/images/generations", json={"prompt": "a lighthouse", "size": "64x64"})
        assert generation.status_code == 404, generation.text
        for path in ("/v1/load", "/v1/models", "/readyz", "/docs", "/openapi.json"):
            assert scraper.get(path).status_code == 404, path
        scraped = scraper.get("/metrics")
    assert scraped.status_code == 200 and names.IMAGES_GENERATED_TOTAL in scraped.text
    assert bulk_pod.metric(names.IMAGES_GENERATED_TOTAL) == made
    assert httpx.get(f"{bulk_pod.base_url}/metrics", timeout=10).status_code == 404
