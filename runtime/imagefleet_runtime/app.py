"""The FastAPI application: routes, and a lifespan that loads the model, warms it up and starts the batcher.

Loading runs in the background so /healthz answers at once; /readyz turns 200 after the warm-up, which
runs the largest call a request can make (engines.warm_up).
Nothing here imports torch at import time: only loading the diffusers engine does (load_engine).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from enum import Enum

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from imagefleet import metrics as names
from imagefleet.disconnect import unless_disconnected
from imagefleet.servers import metrics_app

from .batcher import Batcher, BatchKey
from .encoding import Encoder
from .engines import ServingEngine, warm_up
from .errors import Broken, Draining, ModelLoadError, NotReady, install_handlers
from .limits import BodyLimit
from .metrics import Metrics
from .schemas import (
    GenerationRequest,
    GenerationResponse,
    ImageData,
    Load,
    ModelCard,
    ModelList,
    Resident,
    ResidentAdapter,
    Status,
)
from .settings import SPEED_OPTIONS, Settings
from .validation import to_work

logger = logging.getLogger(__name__)


class Phase(str, Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"  # the model did not load
    BROKEN = "broken"  # the accelerator is out of service (sticky device error, hung call): restart


class Runtime:
    """What the routes share: settings, metrics, and the engine and batcher once the model is up."""

    def __init__(
        self, settings: Settings, on_fatal: Callable[[str], None] | None, load: Callable[[Settings], ServingEngine]
    ) -> None:
        self.settings = settings
        self._load = load
        self.metrics = Metrics()
        self.metrics.engine_info.labels(settings.engine, settings.gpu_class or "", settings.model).set(1)
        self.phase = Phase.LOADING
        self.detail: str | None = None
        self.started = int(time.time())
        self.engine: ServingEngine | None = None
        self.batcher: Batcher | None = None
        self.encoder: Encoder | None = None
        self._on_fatal = on_fatal

    def default_key(self, engine: ServingEngine) -> BatchKey:
        s = self.settings
        width = s.default_width or engine.native_size
        height = s.default_height or engine.native_size
        return BatchKey(width, height, s.default_steps, s.default_guidance_scale)

    def largest_key(self, engine: ServingEngine) -> BatchKey:
        """The largest size a request may ask for (max_width x max_height, else the native size)."""
        s = self.settings
        default = self.default_key(engine)
        return replace(default, width=s.max_width or engine.native_size, height=s.max_height or engine.native_size)

    def compiled_sizes(self, engine: ServingEngine) -> tuple[tuple[int, int], ...]:
        """With compile: the sizes a request may ask for (the default size and compile_sizes), largest first;
        without: none (any size within the limits)."""
        if not self.settings.compile:
            return ()
        default = self.default_key(engine)
        sizes = dict.fromkeys(((default.width, default.height), *self.settings.compile_buckets))
        return tuple(sorted(sizes, key=lambda size: size[0] * size[1], reverse=True))

    async def start(self) -> None:
        """Load, check the defaults against the model, warm up at the largest call, start batching; a
        failure is fatal."""
        s = self.settings
        try:
            engine = await asyncio.to_thread(self._load, s)
            key, largest = self.default_key(engine), self.largest_key(engine)
            buckets = self.compiled_sizes(engine)
            _check_sizes(key, largest, engine, s, buckets)
            sizes = dict.fromkeys(buckets or ((largest.width, largest.height), (key.width, key.height)))
            logger.info(
                "model %s loaded, %s; warming up at %s, %d image(s)",
                s.model, engine.summary, " and ".join(f"{w}x{h}" for w, h in sizes), s.max_batch_size,
            )
            call_seconds = await asyncio.to_thread(warm_up, engine, key, largest, s.max_batch_size, buckets)
        except Exception as error:  # noqa: BLE001 - reported on /healthz and in the log, then the process exits
            self.phase, self.detail = Phase.FAILED, str(error)
            logger.exception("model %s failed to load", s.model)
            if self._on_fatal is not None:
                self._on_fatal(self.detail)
            return
        self.engine = engine
        resident = getattr(engine, "resident", None)
        if resident is not None:
            self.metrics.set_resident(resident())
        self.encoder = Encoder(engine.encode)
        self.batcher = Batcher(
            engine,
            self.metrics,
            max_batch_size=s.max_batch_size,
            queue_size=s.queue_size,
            # The batcher keeps calls by their number of images and scales the largest seen up to a full call.
            initial_batch_seconds=call_seconds / s.max_batch_size,
            call_timeout_seconds=s.pipeline_timeout_seconds,
            on_broken=self.break_down,
        )
        self.batcher.start()
        self.metrics.queue_capacity.set(s.queue_size)
        if self.phase is Phase.LOADING:
            self.phase = Phase.READY
            self.metrics.model_ready.set(1)
            logger.info("ready: %s", s.model)

    def break_down(self, reason: str) -> None:
        """The accelerator is lost: /readyz and /healthz fail from now on, so the kubelet restarts the pod."""
        self.phase, self.detail = Phase.BROKEN, reason
        self.metrics.model_ready.set(0)

    async def drain(self) -> None:
        """Stop taking requests (503), answer every accepted one, then return."""
        if self.phase is not Phase.BROKEN:  # out of service stays so, for the probes, until the exit
            self.phase = Phase.DRAINING
        self.metrics.model_ready.set(0)
        logger.info("draining: no new requests; finishing the queue")
        if self.batcher is not None:
            await self.batcher.drain()
        logger.info("drained")

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        if self.encoder is not None:
            self.encoder.close()

    def accepting(self) -> tuple[Batcher, ServingEngine, Encoder]:
        if self.phase is Phase.BROKEN:
            raise Broken(f"the accelerator is out of service ({self.detail}); retry on another replica")
        if self.phase is Phase.DRAINING:
            raise Draining("the server is shutting down and accepts no new requests; retry on another replica")
        if self.batcher is None or self.engine is None or self.encoder is None:
            raise NotReady(f"model {self.settings.model} is {self.phase.value}; retry when /readyz is 200")
        return self.batcher, self.engine, self.encoder


def load_engine(settings: Settings) -> ServingEngine:
    """Load the model (blocking: run it in a thread); raises ModelLoadError with what to change."""
    if settings.engine == "emulated":
        from .emulated.engine import load_emulated

        kernel_options = [name for name in SPEED_OPTIONS if getattr(settings, name)]
        if kernel_options:
            logger.warning(
                "%s: no effect on the emulated engine (it runs no kernels; its timings are the cost table's); "
                "compile still limits request sizes to the compiled ones", ", ".join(kernel_options),
            )
        return load_emulated(settings)
    from .engine import PipelineEngine
    from .models.loader import load_pipeline
    from .speed import apply_speed

    pipeline, device = load_pipeline(settings)
    applied = apply_speed(pipeline, device, settings)
    if settings.pool:
        from .pool_engine import PoolPipelineEngine

        engine: PipelineEngine = PoolPipelineEngine(pipeline, device, settings)
    else:
        engine = PipelineEngine(pipeline, device)
    if applied:
        engine.summary += f" ({', '.join(applied)})"
    return engine


def _check_sizes(
    key: BatchKey, largest: BatchKey, engine: ServingEngine, settings: Settings, buckets: tuple[tuple[int, int], ...]
) -> None:
    for name, (width, height) in (
        ("default", (key.width, key.height)), ("largest", (largest.width, largest.height)),
        *(("compile_sizes", bucket) for bucket in settings.compile_buckets),
    ):
        if width % engine.size_multiple or height % engine.size_multiple:
            raise ModelLoadError(
                f"{name} size {width}x{height} is not a multiple of {engine.size_multiple}, which {settings.model} "
                "needs; set default_width/default_height, max_width/max_height and compile_sizes to multiples of it"
            )
    for width, height in buckets:
        if width > largest.width or height > largest.height:
            raise ModelLoadError(
                f"compile_sizes: {width}x{height} is above max_width x max_height {largest.width}x{largest.height} "
                f"({settings.model}'s native size when unset); raise those or drop the size"
            )
    if key.width > largest.width or key.height > largest.height:
        raise ModelLoadError(
            f"default size {key.width}x{key.height} is above max_width/max_height "
            f"{largest.width}x{largest.height}; raise those or set default_width/default_height"
        )


def create_app(
    settings: Settings,
    *,
    on_fatal: Callable[[str], None] | None = None,
    load: Callable[[Settings], ServingEngine] = load_engine,
) -> FastAPI:
    """The application; `on_fatal(message)` is called if the model cannot be loaded; `load` makes the engine
    (tests pass fault-injecting ones)."""
    runtime = Runtime(settings, on_fatal, load)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(runtime.start(), name="load-model")
        yield
        loading.cancel()
        await asyncio.gather(loading, return_exceptions=True)
        await runtime.stop()

    app = FastAPI(title="imagefleet-runtime", lifespan=lifespan)
    app.state.runtime = runtime
    install_handlers(app, runtime.metrics.count_reject)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_request_bytes,
        on_refused=lambda _: runtime.metrics.requests_rejected.labels(names.REJECT_INVALID).inc(),
    )

    @app.get("/healthz", response_model=Status)
    async def healthz() -> JSONResponse:
        """Process alive: 503 when the model failed to load or the accelerator is out of service."""
        failed = runtime.phase in (Phase.FAILED, Phase.BROKEN)
        code = 503 if failed else 200
        body = Status(status=runtime.phase.value if failed else "ok", model=settings.model, detail=runtime.detail)
        return JSONResponse(body.model_dump(), status_code=code)

    @app.get("/readyz", response_model=Status)
    async def readyz() -> JSONResponse:
        """200 once the model is loaded and warm; 503 while loading, draining or failed."""
        code = 200 if runtime.phase is Phase.READY else 503
        body = Status(status=runtime.phase.value, model=settings.model, detail=runtime.detail)
        return JSONResponse(body.model_dump(), status_code=code)

    runtime.metrics.requests_running.set_function(lambda: runtime.batcher.running if runtime.batcher else 0)

    @app.get("/v1/load", response_model=Load)
    async def load() -> Load:
        """The queue as the gateway's picker sees it (polled every few hundred milliseconds)."""
        batcher = runtime.batcher
        snapshot = getattr(runtime.engine, "resident", None)
        resident = None
        if snapshot is not None:
            now = snapshot()
            resident = Resident(
                gpu=list(now.gpu),
                host=list(now.host),
                adapters=[ResidentAdapter(checkpoint=c, name=a) for c, a in now.adapters],
                gpu_budget_mib=now.gpu_budget_mib,
                host_budget_mib=now.host_budget_mib,
            )
        return Load(
            ready=runtime.phase is Phase.READY,
            queued=batcher.waiting_images if batcher else 0,
            running=batcher.running if batcher else 0,
            queue_limit=settings.queue_size,
            max_batch_size=settings.max_batch_size,
            batch_seconds=batcher.batch_seconds if batcher else None,
            resident=resident,
        )

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        card = ModelCard(
            id=settings.model,
            created=runtime.started,
            engine=settings.engine,
            emulated=settings.engine == "emulated",
            gpu_class=settings.gpu_class,
        )
        return ModelList(data=[card])

    @app.post("/v1/images/generations", response_model=GenerationResponse)
    async def generate(request: GenerationRequest, http: Request) -> GenerationResponse | Response:
        arrived = time.monotonic()
        batcher, engine, encoder = runtime.accepting()
        key, images = to_work(
            request,
            settings,
            runtime.default_key(engine),
            runtime.largest_key(engine),
            size_multiple=engine.size_multiple,
            output_formats=engine.output_formats,
            compiled_sizes=runtime.compiled_sizes(engine),
        )
        made = await unless_disconnected(http, batcher.submit(key, images))
        if made is None:  # the client left; its job was dropped unless it was already running
            return Response(status_code=499)
        encoded = await encoder.b64(made, request.output_format)
        runtime.metrics.request_duration.observe(time.monotonic() - arrived)
        runtime.metrics.images_generated.inc(len(encoded))
        return GenerationResponse(
            created=int(time.time()),
            data=[ImageData(b64_json=text, seed=image.seed) for text, image in zip(encoded, images, strict=True)],
            output_format=request.output_format,
        )

    return app


def create_metrics_app(runtime: Runtime) -> FastAPI:
    """GET /metrics alone, for the metrics port (`settings.metrics_port`) that only Prometheus may reach."""

    def exposition() -> bytes:
        if runtime.engine is not None:
            runtime.metrics.record_memory(runtime.engine.memory())
        return runtime.metrics.exposition()

    return metrics_app("imagefleet-runtime-metrics", exposition)
