"""Finding 7: a client that sends a request again does not get a second generation.

Attack, on the real gateway process (watching the real API server, in front of a real runtime
process): a client sends the same request three times with one `Idempotency-Key`, twice at once (as
a client that timed out and retried does) and once more later; then the official `openai` client
with that key. The old gateway generated four images; now the pod generates one and every answer
is the same image. The same key from another API key is that key's own request, and the same key
with another body is refused.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai

from imagefleet import metrics as names
from imagefleet.gateway.auth import digest
from tests.conftest import Cluster
from tests.gateway.process import gateway_process
from tests.helpers import wait_until
from tests.operator.conftest import imd_crd  # noqa: F401 - the CRD, installed once
from tests.security.conftest import thumbs_served_by
from tests.runtime.support import RunningServer, sample

BODY = {"model": "thumbs", "prompt": "a lighthouse", "size": "64x64"}


def keys_file() -> str:
    return "".join(f"  - name: {name}\n    sha256: {digest(f'key-{name}')}\n" for name in ("team-a", "team-b"))


def generate(url: str, key: str, idempotency_key: str, body: dict[str, Any] = BODY) -> httpx.Response:
    return httpx.post(f"{url}/v1/images/generations", json=body, timeout=60,
                      headers={"authorization": f"Bearer key-{key}", "idempotency-key": idempotency_key})


def test_a_repeated_idempotency_key_gets_the_first_answer_not_a_second_image(
    cluster: Cluster, namespace: str, imd_crd: None, fleet_pod: RunningServer, tmp_path: Path  # noqa: F811
) -> None:
    thumbs_served_by(fleet_pod, cluster, namespace)
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n" + keys_file())
    with gateway_process(cluster.kubeconfig, namespace, tmp_path / "gateway.log", "--api-keys", str(keys)) as gw:
        wait_until(lambda: generate(gw.url, "team-a", "warm-up").status_code == 200, timeout=30, interval=0.2,
                   message="the gateway to route to the pod")
        before = fleet_pod.metric(names.IMAGES_GENERATED_TOTAL)

        with ThreadPoolExecutor(2) as pool:
            together = list(pool.map(lambda _: generate(gw.url, "team-a", "order-17"), range(2)))
        later = generate(gw.url, "team-a", "order-17")
        sdk = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="key-team-a", max_retries=2)
        via_sdk = sdk.images.generate(**BODY, extra_headers={"Idempotency-Key": "order-17"})  # type: ignore[arg-type]
        answers = [*together, later]
        assert [a.status_code for a in answers] == [200, 200, 200], [a.text[:200] for a in answers]
        images = {a.json()["data"][0]["b64_json"] for a in answers} | {via_sdk.data[0].b64_json}
        assert len(images) == 1  # one image, given four times (each generation draws its own seed)
        assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 2
        assert fleet_pod.metric(names.IMAGES_GENERATED_TOTAL) == before + 1
        assert sample(httpx.get(f"{gw.metrics_url}/metrics", timeout=5).text,
                      names.GATEWAY_IDEMPOTENT_REPLAYS_TOTAL) == 3

        # Another API key's "order-17" is its own request; another body under the key is refused.
        other = generate(gw.url, "team-b", "order-17")
        assert other.status_code == 200 and other.json()["data"][0]["b64_json"] not in images
        assert fleet_pod.metric(names.IMAGES_GENERATED_TOTAL) == before + 2
        reused = generate(gw.url, "team-a", "order-17", {**BODY, "prompt": "something else"})
        assert reused.status_code == 422 and reused.json()["error"]["code"] == "idempotency_key_reused"
        assert fleet_pod.metric(names.IMAGES_GENERATED_TOTAL) == before + 2
