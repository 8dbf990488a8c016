"""Pure builders: a resolved spec in, plain Kubernetes manifests out."""

from .deployment import build_deployment
from .disruption import build_pod_disruption_budget
from .inference_pool import EndpointPicker, build_inference_pool
from .labels import Owner, owner_reference, runtime_labels, selector_labels, selector_string
from .network_policy import RuntimeIngress, build_network_policy
from .service import build_service

__all__ = [
    "EndpointPicker",
    "Owner",
    "RuntimeIngress",
    "build_deployment",
    "build_inference_pool",
    "build_network_policy",
    "build_pod_disruption_budget",
    "build_service",
    "owner_reference",
    "runtime_labels",
    "selector_labels",
    "selector_string",
]
