"""The kopf handlers, one module per concern. Importing this package registers them all."""

from ..modelcache import handlers as model_cache
from . import autoscaling, children, indexes, metrics, peering, resources, startup

__all__ = ["autoscaling", "children", "indexes", "metrics", "model_cache", "peering", "resources", "startup"]
