"""The runtime's Prometheus metrics, by the names in imagefleet.metrics (docs/reference/metrics.md lists them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from imagefleet import metrics as names
from imagefleet.residency import Snapshot

from .errors import RuntimeAPIError
from .memory import MemoryReading

if TYPE_CHECKING:  # the batcher imports this module
    from .batcher import Prepared

# Requests per pipeline call: powers of two up to the largest batch the settings allow.
BATCH_SIZE_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
PIPELINE_ERROR_KINDS = ("error", "device", "timeout")
REJECT_REASONS = (names.REJECT_QUEUE_FULL, names.REJECT_INVALID, names.REJECT_OOM, names.REJECT_DRAINING)


class Metrics:
    """One registry per server (so tests can run several apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_depth = Gauge(
            names.QUEUE_DEPTH, "Requests waiting, not yet in a batch.", registry=self.registry
        )
        self.queue_capacity = Gauge(
            names.QUEUE_CAPACITY, "Most images that may wait; beyond it requests get 429.", registry=self.registry
        )
        self.request_duration = Histogram(
            names.REQUEST_DURATION_SECONDS,
            "Seconds from a request's arrival to its response, per served request.",
            buckets=names.LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self.batch_duration = Histogram(
            names.BATCH_DURATION_SECONDS,
            "Seconds one pipeline call took.",
            buckets=names.LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            names.BATCH_SIZE, "Requests per pipeline call.", buckets=BATCH_SIZE_BUCKETS, registry=self.registry
        )
        self.images_generated = Counter(
            names.IMAGES_GENERATED_TOTAL, "Images returned to clients.", registry=self.registry
        )
        self.requests_rejected = Counter(
            names.REQUESTS_REJECTED_TOTAL, "Requests refused, by reason.", ["reason"], registry=self.registry
        )
        for reason in REJECT_REASONS:
            self.requests_rejected.labels(reason)
        self.abandoned = Counter(
            names.REQUESTS_ABANDONED_TOTAL, "Requests dropped before their batch ran because their client had gone.",
            registry=self.registry,
        )
        self.requests_running = Gauge(
            names.REQUESTS_RUNNING, "Requests in the batch being collected or run.", registry=self.registry
        )
        self.model_ready = Gauge(
            names.MODEL_READY, "1 once the model is loaded and warmed up.", registry=self.registry
        )
        self.engine_info = Gauge(
            names.ENGINE_INFO,
            "Always 1: what serves (engine diffusers, or emulated for a stand-in accelerator), GPU class and model.",
            ["engine", "gpu_class", "model"],
            registry=self.registry,
        )

        self.pipeline_errors = Counter(
            names.PIPELINE_ERRORS_TOTAL,
            "Pipeline faults: error (one batch got a 500), device (sticky device error), timeout (watchdog).",
            ["kind"],
            registry=self.registry,
        )
        for kind in PIPELINE_ERROR_KINDS:
            self.pipeline_errors.labels(kind)
        self.oom_splits = Counter(
            names.OOM_SPLITS_TOTAL, "Pipeline calls that ran out of memory and were split.", registry=self.registry
        )
        self.fitting_batch_pixels = Gauge(
            names.FITTING_BATCH_PIXELS,
            "Largest images x width x height that fitted one call since an out-of-memory error; batches stay "
            "under it (0: no such error yet).",
            registry=self.registry,
        )

        self.memory = Gauge(
            names.MEMORY_BYTES,
            "Measured memory by kind (allocated, reserved, peak) and source (cuda: the card's allocator; "
            "process: the server process's resident memory, on CPU and with the emulated engine).",
            ["kind", "source"],
            registry=self.registry,
        )

        self.residency_hits = Counter(
            names.RESIDENCY_HITS_TOTAL, "Pool mode: requests whose checkpoint and adapters were already on the GPU.",
            ["checkpoint"], registry=self.registry,
        )
        self.residency_misses = Counter(
            names.RESIDENCY_MISSES_TOTAL, "Pool mode: requests that waited for a checkpoint or adapter to be loaded.",
            ["checkpoint"], registry=self.registry,
        )
        self.swaps = Counter(
            names.SWAPS_TOTAL, "Pool mode: checkpoints moved onto the GPU, by where they came from (host, disk).",
            ["checkpoint", "source"], registry=self.registry,
        )
        self.adapter_loads = Counter(
            names.ADAPTER_LOADS_TOTAL, "Pool mode: LoRA adapters loaded into a resident checkpoint.",
            ["checkpoint"], registry=self.registry,
        )
        self.swap_seconds = Histogram(
            names.SWAP_SECONDS, "Pool mode: seconds one load onto the GPU took, the evictions that made room for it "
            "included, by kind (checkpoint, adapter) and source (host, disk).",
            ["kind", "source"], buckets=names.LATENCY_BUCKETS_SECONDS, registry=self.registry,
        )
        self.resident = Gauge(
            names.RESIDENT,
            "Pool mode: 1 for each checkpoint (adapter \"\") and adapter resident, by place (gpu, host).",
            ["checkpoint", "adapter", "place"], registry=self.registry,
        )

    def record_residency(self, prepared: Prepared, requests: int) -> None:
        """Count one pool call's hit or miss (for each of its requests), its moves, and what is resident now."""
        touch = prepared.touch
        (self.residency_hits if touch.hit else self.residency_misses).labels(touch.checkpoint).inc(requests)
        waited = 0.0  # evictions come before the load they make room for, and count in its seconds
        for move, seconds in zip(touch.moves, prepared.seconds, strict=True):
            waited += seconds
            if move.target != "gpu":
                continue
            if move.adapter is None:
                self.swaps.labels(move.checkpoint, move.source).inc()
                self.swap_seconds.labels("checkpoint", move.source).observe(waited)
            else:
                self.adapter_loads.labels(move.checkpoint).inc()
                self.swap_seconds.labels("adapter", move.source).observe(waited)
            waited = 0.0
        self.set_resident(prepared.resident)

    def set_resident(self, resident: Snapshot) -> None:
        self.resident.clear()
        for place, names_ in (("gpu", resident.gpu), ("host", resident.host)):
            for checkpoint in names_:
                self.resident.labels(checkpoint, "", place).set(1)
        for checkpoint, adapter in resident.adapters:
            self.resident.labels(checkpoint, adapter, "gpu").set(1)

    def record_memory(self, reading: MemoryReading) -> None:
        """Set the kinds the reading has; kinds it cannot tell are not exported."""
        for kind in ("allocated", "reserved", "peak"):
            value = getattr(reading, kind)
            if value is not None:
                self.memory.labels(kind, reading.source).set(value)

    def count_reject(self, error: RuntimeAPIError) -> None:
        """Count an error answered to a client, if its code is one of the fixed reasons."""
        if error.code in REJECT_REASONS:
            self.requests_rejected.labels(error.code).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
