"""The kopf handlers, one module per concern. Importing this package registers them all."""

from . import children, indexes, resources, startup

__all__ = ["children", "indexes", "resources", "startup"]
