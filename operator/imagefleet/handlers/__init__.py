"""The kopf handlers, one module per concern. Importing this package registers them all."""

from ..measuredmemory import handlers as measured_memory
from ..modelcache import handlers as model_cache
from . import autoscaling, children, indexes, metrics, peering, pools, resources, startup

__all__ = ["autoscaling", "children", "indexes", "measured_memory", "metrics", "model_cache", "peering", "pools",
           "resources", "startup"]
