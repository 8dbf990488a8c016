"""imagefleet-runtime: a diffusers inference server with dynamic batching and Prometheus metrics."""
