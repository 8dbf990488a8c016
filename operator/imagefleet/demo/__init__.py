"""`imagefleet demo`: the local control plane, Prometheus, the operator and runtimes, with live status."""

from imagefleet.demo.command import demo

__all__ = ["demo"]
