"""Small, cheap PNG images of any size: one flat colour, written with zlib (no PIL on the PNG path)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Bit depth 1, colour type 3 (palette): one bit per pixel, every pixel palette entry 0.
BIT_DEPTH = 1
PALETTE = 3


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@lru_cache(maxsize=32)
def _header_and_pixels(width: int, height: int) -> tuple[bytes, bytes]:
    """IHDR and IDAT of an all-zero 1-bit image: the same for every colour, so made once per size."""
    header = struct.pack(">IIBBBBB", width, height, BIT_DEPTH, PALETTE, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte "none", then the packed bits
    return _chunk(b"IHDR", header), _chunk(b"IDAT", zlib.compress(row * height, 9))


def flat_png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    """A valid PNG of `width` x `height` pixels, all of `colour` (RGB)."""
    header, pixels = _header_and_pixels(width, height)
    return SIGNATURE + header + _chunk(b"PLTE", bytes(colour)) + pixels + _chunk(b"IEND", b"")


@dataclass(frozen=True)
class FlatImage:
    """What the emulated engine makes: a size and one colour."""

    width: int
    height: int
    colour: tuple[int, int, int]

    def to_pil(self) -> Image.Image:
        return Image.new("RGB", (self.width, self.height), self.colour)
