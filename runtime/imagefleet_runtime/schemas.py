"""Request and response bodies of the HTTP API (OpenAI's images API plus a few diffusion knobs)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from imagefleet.images_api import MAX_SEED, GenerationRequest, OutputFormat

__all__ = ["MAX_SEED", "GenerationRequest", "GenerationResponse", "ImageData", "Load", "ModelCard", "ModelList",
           "Resident", "ResidentAdapter", "Status"]


class ImageData(BaseModel):
    b64_json: str = Field(description="the image in the response's output_format, base64-encoded")
    seed: int = Field(description="the seed that reproduces this image")


class GenerationResponse(BaseModel):
    created: int
    data: list[ImageData]
    output_format: OutputFormat


class ModelCard(BaseModel):
    """OpenAI's model object, plus what serves it (clients ignore the extra fields)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "imagefleet"
    engine: str = Field(description="diffusers, or emulated: a stand-in that takes a real card's time")
    emulated: bool
    gpu_class: str | None = Field(description="the GPU class the pod runs on, or stands in for when emulated")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Status(BaseModel):
    """Body of /healthz and /readyz."""

    status: str
    model: str
    detail: str | None = None


class ResidentAdapter(BaseModel):
    checkpoint: str
    name: str


class Resident(BaseModel):
    """Pool mode: what a pod holds, most recently used first."""

    gpu: list[str] = Field(description="checkpoints on the GPU")
    host: list[str] = Field(description="checkpoints in host RAM")
    adapters: list[ResidentAdapter] = Field(description="LoRA adapters loaded, with the checkpoint they are on")
    gpu_budget_mib: float
    host_budget_mib: float


class Load(BaseModel):
    """Body of GET /v1/load: what the gateway's picker polls, cheaper than parsing /metrics."""

    ready: bool
    queued: int = Field(description="images waiting, not yet in a batch (the unit of queue_limit)")
    running: int = Field(description="requests in the batch being collected or run")
    queue_limit: int = Field(description="images that may wait; a request that would pass it gets 429")
    max_batch_size: int
    batch_seconds: float | None = Field(
        description="seconds of one call of max_batch_size images (measured average, or estimated until one ran); "
        "null until loaded"
    )
    resident: Resident | None = Field(None, description="pool mode: what is resident; null otherwise")
