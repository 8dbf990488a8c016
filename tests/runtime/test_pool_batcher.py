"""The batcher in pool mode, with a recording engine: one batch holds one checkpoint and one set of
adapters, `prepare` runs once before each call, and a refused adapter fails only its own batch."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from imagefleet import metrics as names
from imagefleet.residency import Adapter, Residency
from imagefleet_runtime.batcher import AdapterRef, Batcher, BatchKey, CheckpointRef, ImageSpec, Prepared
from imagefleet_runtime.errors import AdapterRefused
from imagefleet_runtime.metrics import Metrics

from .test_runtime_batcher import images, queue_depth, until

BASE = BatchKey(64, 64, 4, 7.0)
FINE_TUNE = BatchKey(64, 64, 4, 7.0, CheckpointRef("/models/fine-tune"))
WITH_LORA = BatchKey(64, 64, 4, 7.0, CheckpointRef("/models/fine-tune"), (AdapterRef("/loras/pixel"),))
BAD_LORA = BatchKey(64, 64, 4, 7.0, None, (AdapterRef("/loras/broken"),))


class PoolRecordingEngine:
    """Records prepare and generate calls in order; residency by the real LRU; `gate` holds the first call."""

    def __init__(self) -> None:
        self.residency = Residency(gpu_budget_mib=100, host_budget_mib=100, adapter_slots=2)
        self.residency.touch("base", 60)
        self.log: list[tuple[str, BatchKey, list[int]]] = []
        self.entered = 0
        self.gate = threading.Event()

    def prepare(self, key: BatchKey) -> Prepared:
        self.log.append(("prepare", key, []))
        if key.adapters and key.adapters[0].name == "/loras/broken":
            raise AdapterRefused("adapter '/loras/broken' cannot be loaded: corrupt", param="adapters")
        name = "base" if key.checkpoint is None else key.checkpoint.key
        touch = self.residency.touch(name, 60, [Adapter(a.key, 1) for a in key.adapters])
        return Prepared(touch, tuple(0.5 for _ in touch.moves), self.residency.snapshot())

    def generate(self, key: BatchKey, specs: Sequence[ImageSpec]) -> list[bytes]:
        self.entered += 1
        assert self.gate.wait(timeout=10), "test never opened the gate"
        self.log.append(("generate", key, [spec.seed for spec in specs]))
        return [str(spec.seed).encode() for spec in specs]


async def test_a_batch_holds_one_checkpoint_and_adapter_set_and_is_prepared_first() -> None:
    engine, metrics = PoolRecordingEngine(), Metrics()
    batcher = Batcher(engine, metrics, max_batch_size=4, queue_size=16, initial_batch_seconds=1.0,
                      call_timeout_seconds=60)
    batcher.start()
    first = asyncio.create_task(batcher.submit(BASE, images(0)))
    await until(lambda: engine.entered == 1, "the first call to start")
    keys = [FINE_TUNE, WITH_LORA, BASE, FINE_TUNE, BAD_LORA, WITH_LORA]
    rest = [asyncio.create_task(batcher.submit(key, images(seed))) for seed, key in enumerate(keys, start=1)]
    await until(lambda: queue_depth(metrics) == len(keys), "the waiting requests")
    engine.gate.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert isinstance(results[5], AdapterRefused) and "/loras/broken" in results[5].message
    assert [r for i, r in enumerate(results) if i != 5] == [[b"0"], [b"1"], [b"2"], [b"3"], [b"4"], [b"6"]]
    # Oldest first, each batch only its own key, each call right after its prepare.
    assert [(step, key, seeds) for step, key, seeds in engine.log] == [
        ("prepare", BASE, []), ("generate", BASE, [0]),
        ("prepare", FINE_TUNE, []), ("generate", FINE_TUNE, [1, 4]),
        ("prepare", WITH_LORA, []), ("generate", WITH_LORA, [2, 6]),
        ("prepare", BASE, []), ("generate", BASE, [3]),
        ("prepare", BAD_LORA, []),
    ]
    value = metrics.registry.get_sample_value
    # Requests, not calls: the fine-tune's batch of two missed (a load from disk), the base's first hit.
    assert value(names.RESIDENCY_MISSES_TOTAL, {"checkpoint": "/models/fine-tune"}) == 4.0
    assert value(names.RESIDENCY_HITS_TOTAL, {"checkpoint": "base"}) == 1.0
    assert value(names.RESIDENCY_MISSES_TOTAL, {"checkpoint": "base"}) == 1.0  # back from host
    assert value(names.SWAPS_TOTAL, {"checkpoint": "/models/fine-tune", "source": "disk"}) == 1.0
    assert value(names.SWAPS_TOTAL, {"checkpoint": "base", "source": "host"}) == 1.0
    assert value(names.ADAPTER_LOADS_TOTAL, {"checkpoint": "/models/fine-tune"}) == 1.0
    assert value(names.SWAP_SECONDS + "_count", {"kind": "checkpoint", "source": "disk"}) == 1.0
    assert value(names.RESIDENT, {"checkpoint": "base", "adapter": "", "place": "gpu"}) == 1.0
    assert value(names.RESIDENT, {"checkpoint": "/models/fine-tune", "adapter": "", "place": "host"}) == 1.0
    assert value(names.RESIDENT, {"checkpoint": "/models/fine-tune", "adapter": "/loras/pixel", "place": "gpu"}) is None
    await batcher.close()

