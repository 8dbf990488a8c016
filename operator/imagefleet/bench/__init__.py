"""`imagefleet bench`: a load generator for runtimes speaking the generations API."""

from imagefleet.bench.command import bench

__all__ = ["bench"]
