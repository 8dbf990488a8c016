"""Image encoding (PNG, JPEG, WebP as OpenAI's `output_format`) and base64, on threads of their own.

The pipeline thread only computes; the event loop only routes. Encoding a 1024x1024 PNG takes
tens of milliseconds and base64 of a few megabytes takes milliseconds: both run here.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from PIL import Image, features

from imagefleet.images_api import OUTPUT_FORMATS, OutputFormat

__all__ = ["OUTPUT_FORMATS", "OutputFormat"]

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# Threads that encode: two keep the pipeline fed at small sizes and leave CPU to the rest.
ENCODER_THREADS = 2


def pillow_formats() -> frozenset[str]:
    """The output formats this Pillow build can write (WebP needs libwebp)."""
    return frozenset(name for name in OUTPUT_FORMATS if name != "webp" or features.check("webp"))


def encode_pil(image: object, output_format: str) -> bytes:
    """A PIL image as `output_format` bytes."""
    assert isinstance(image, Image.Image)
    buffer = io.BytesIO()
    image.save(buffer, format=output_format.upper())
    return buffer.getvalue()


class Encoder:
    """Encodes an engine's images and base64s them on its own threads."""

    def __init__(self, encode: Callable[[object, str], bytes]) -> None:
        self._encode = encode
        self._pool = ThreadPoolExecutor(max_workers=ENCODER_THREADS, thread_name_prefix="encode")

    async def b64(self, images: Sequence[object], output_format: str) -> list[str]:
        """Each image encoded as `output_format`, then base64 (ASCII), in order."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._b64_all, images, output_format)

    def _b64_all(self, images: Sequence[object], output_format: str) -> list[str]:
        return [base64.b64encode(self._encode(image, output_format)).decode("ascii") for image in images]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
