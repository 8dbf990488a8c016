"""Measured memory next to the fit estimate: the runtime pods' peak, read from Prometheus once per interval
for every resource, written to `status.measuredMemory`, with a Warning Event when it is above the estimate."""
