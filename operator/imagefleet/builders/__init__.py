"""Pure builders: a resolved spec in, plain Kubernetes manifests out."""

from .deployment import build_deployment
from .labels import Owner, owner_reference, runtime_labels, selector_labels, selector_string
from .service import build_service

__all__ = [
    "Owner",
    "build_deployment",
    "build_service",
    "owner_reference",
    "runtime_labels",
    "selector_labels",
    "selector_string",
]
