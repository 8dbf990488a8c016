"""Names of the runtime's Prometheus metrics: the one source for the runtime,
the operator's queries and the tests (docs/reference/metrics.md is generated from them)."""

PREFIX = "imagefleet_"

QUEUE_DEPTH = "imagefleet_queue_depth"
QUEUE_CAPACITY = "imagefleet_queue_capacity"
REQUEST_DURATION_SECONDS = "imagefleet_request_duration_seconds"
BATCH_DURATION_SECONDS = "imagefleet_batch_duration_seconds"
BATCH_SIZE = "imagefleet_batch_size"
IMAGES_GENERATED_TOTAL = "imagefleet_images_generated_total"
REQUESTS_REJECTED_TOTAL = "imagefleet_requests_rejected_total"
MODEL_READY = "imagefleet_model_ready"
# Always 1; labels engine ("diffusers" or "emulated"), gpu_class and model say what serves.
ENGINE_INFO = "imagefleet_engine_info"
# Pipeline faults, by `kind`: error (one batch failed), device (sticky device error), timeout (watchdog).
PIPELINE_ERRORS_TOTAL = "imagefleet_pipeline_errors_total"
# Out-of-memory errors that split a pipeline call, and the largest images x pixels that fitted since.
OOM_SPLITS_TOTAL = "imagefleet_oom_splits_total"
FITTING_BATCH_PIXELS = "imagefleet_fitting_batch_pixels"
# Measured memory, by `kind` (allocated, reserved, peak) and `source` (cuda: the card's allocator;
# process: resident memory of the server process, on CPU and with the emulated engine).
MEMORY_BYTES = "imagefleet_memory_bytes"
# Requests taken from the queue into the batch being collected or run; with QUEUE_DEPTH (the waiting
# ones) these are the queued/running gauges an endpoint picker reads.
REQUESTS_RUNNING = "imagefleet_requests_running"
# Requests dropped before their batch ran because their client had gone.
REQUESTS_ABANDONED_TOTAL = "imagefleet_requests_abandoned_total"
# Pool pods (runtime --pool-family): requests whose checkpoint and adapters were already on the GPU
# (hits) or not (misses), by `checkpoint`; checkpoints moved onto the GPU by `checkpoint` and
# `source` (host, disk); adapters loaded by `checkpoint`; the seconds of each move by `kind`
# (checkpoint, adapter) and `source`; and what is resident now: 1 per checkpoint x adapter ("" for
# the checkpoint itself) x `place` (gpu, host).
RESIDENCY_HITS_TOTAL = "imagefleet_residency_hits_total"
RESIDENCY_MISSES_TOTAL = "imagefleet_residency_misses_total"
SWAPS_TOTAL = "imagefleet_swaps_total"
ADAPTER_LOADS_TOTAL = "imagefleet_adapter_loads_total"
SWAP_SECONDS = "imagefleet_swap_seconds"
RESIDENT = "imagefleet_resident"

# The gateway's own metrics (`imagefleet gateway`), labelled by model group and tier.
GATEWAY_REQUESTS_TOTAL = "imagefleet_gateway_requests_total"  # by group, tier, code
GATEWAY_OVERFLOWED_TOTAL = "imagefleet_gateway_overflowed_total"  # by group, tier, and the resource taking them
GATEWAY_SHED_TOTAL = "imagefleet_gateway_shed_total"  # by group, tier: 429, the deadline cannot be met or a bound is reached
GATEWAY_HELD_REQUESTS = "imagefleet_gateway_held_requests"  # waiting in the gateway's queue, by group and tier
GATEWAY_HOLD_TIMEOUTS_TOTAL = "imagefleet_gateway_hold_timeouts_total"  # by group, tier
GATEWAY_RETRIES_TOTAL = "imagefleet_gateway_retries_total"  # sent again: the first pod never got it, or died holding it
GATEWAY_UPSTREAM_SECONDS = "imagefleet_gateway_upstream_seconds"  # time spent waiting on the pod
GATEWAY_IGNORED_OVERFLOW = "imagefleet_gateway_ignored_overflow"  # resources whose overflowTo is missing or loops
GATEWAY_KEY_REQUESTS_TOTAL = "imagefleet_gateway_key_requests_total"  # by API key name (the keys file's), code
GATEWAY_IDEMPOTENT_REPLAYS_TOTAL = "imagefleet_gateway_idempotent_replays_total"  # answered from an Idempotency-Key
# The gateway's demand, by the resource it is for (labels GATEWAY_RESOURCE_LABELS: not `namespace`,
# which a scrape sets to the gateway's own). A request of a route with several first-choice
# resources counts a share on each. Each gateway replica counts its own: the fleet's is the sum.
GATEWAY_ARRIVALS_TOTAL = "imagefleet_gateway_arrivals_total"  # each request once, whatever became of it
GATEWAY_QUEUED_REQUESTS = "imagefleet_gateway_queued_requests"  # waiting in the gateway's queue now
GATEWAY_QUEUED_WORK_SECONDS = "imagefleet_gateway_queued_work_seconds"  # their work, GPU-seconds by the cost model
GATEWAY_QUEUE_WAIT_SECONDS = "imagefleet_gateway_queue_wait_seconds"  # time from arrival to leaving for a pod
GATEWAY_RESOURCE_SECONDS = "imagefleet_gateway_resource_seconds"  # from arrival to the pod's answer, by the resource that served it
GATEWAY_RESOURCE_LABELS = ("resource_namespace", "resource_name")

# Values of the `reason` label of REQUESTS_REJECTED_TOTAL.
REJECT_QUEUE_FULL = "queue_full"
REJECT_INVALID = "invalid"
REJECT_OOM = "oom"
REJECT_DRAINING = "draining"

# Latency buckets reach minutes: a premium render can take 60 s and more, and
# the client library's default buckets stop at 10 s (every p95 would cap there).
LATENCY_BUCKETS_SECONDS = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0,
    15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
)
