"""Tiny but real result files for the simulated provider: PNG, WAV, an animated SVG, text."""

from __future__ import annotations

import math
import struct
import zlib

PNG_SIZE = 16
WAV_RATE = 8000


def png(seed: int) -> bytes:
    """A 16×16 gradient whose colour depends on `seed`."""
    r, g, b = (seed * 53) % 256, (seed * 97) % 256, (seed * 193) % 256
    rows = b"".join(
        b"\x00"
        + bytes(c for x in range(PNG_SIZE) for c in ((r + 8 * x) % 256, (g + 8 * y) % 256, b))
        for y in range(PNG_SIZE)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", PNG_SIZE, PNG_SIZE, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def wav(seed: int, seconds: float = 0.25) -> bytes:
    """A short 8-bit mono tone."""
    frequency = 220 + (seed % 12) * 40
    count = int(WAV_RATE * seconds)
    samples = bytes(
        int(128 + 100 * math.sin(2 * math.pi * frequency * i / WAV_RATE)) for i in range(count)
    )
    header = (
        b"RIFF"
        + struct.pack("<I", 36 + count)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, WAV_RATE, WAV_RATE, 1, 8)
        + b"data"
        + struct.pack("<I", count)
    )
    return header + samples


def video_placeholder(seed: int) -> bytes:
    """A looping animated SVG standing in for a video clip."""
    hue = (seed * 47) % 360
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="160" height="90" viewBox="0 0 160 90">'
        f'<rect width="160" height="90" fill="hsl({hue},60%,20%)"/>'
        f'<circle cx="20" cy="45" r="12" fill="hsl({(hue + 180) % 360},80%,60%)">'
        '<animate attributeName="cx" values="20;140;20" dur="2s" repeatCount="indefinite"/>'
        "</circle></svg>"
    ).encode()


def for_operation(operation: str, seed: int) -> tuple[bytes, str]:
    """The file and content type a simulated generation of `operation` produces."""
    if operation in ("image",):
        return png(seed), "image/png"
    if operation in ("audio", "music", "voice_creation"):
        return wav(seed), "audio/wav"
    if operation in ("video", "video_processing"):
        return video_placeholder(seed), "image/svg+xml"
    return f"simulated {operation} result #{seed}\n".encode(), "text/plain"
