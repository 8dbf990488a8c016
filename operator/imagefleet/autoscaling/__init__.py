"""Autoscaling on queue depth and p95 latency read from Prometheus."""
