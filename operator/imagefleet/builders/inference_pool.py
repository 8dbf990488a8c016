"""The InferencePool (Gateway API Inference Extension, inference.networking.k8s.io/v1) of one resource.

One pool per ImageModelDeployment, not per routing group: a pool's selector is
matchLabels only, and the pods of one resource are the one set that shares a
model, a tier and a configuration, which an endpoint picker assumes of a pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .labels import RUNTIME_PORT, Owner, child_metadata, runtime_labels, selector_labels

API_GROUP = "inference.networking.k8s.io"
API_VERSION = f"{API_GROUP}/v1"
KIND = "InferencePool"
CRD_NAME = f"inferencepools.{API_GROUP}"


@dataclass(frozen=True)
class EndpointPicker:
    """The endpoint picker's Service: `service` may hold `{name}`, the resource's name."""

    service: str
    port: int

    def service_for(self, name: str) -> str:
        return self.service.replace("{name}", name)


def build_inference_pool(owner: Owner, tier: str, picker: EndpointPicker) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": child_metadata(owner, runtime_labels(owner.name, tier)),
        "spec": {
            "selector": {"matchLabels": selector_labels(owner.name)},
            "targetPorts": [{"number": RUNTIME_PORT}],
            "endpointPickerRef": {"name": picker.service_for(owner.name), "port": {"number": picker.port}},
        },
    }


# The Service and port the Gateway API Inference Extension's inferencepool Helm chart gives its picker.
DEFAULT_ENDPOINT_PICKER = EndpointPicker(service="{name}-epp", port=9002)
