"""Fetching a provider's result so it can be copied into our object store before any charge.

Through egress/ with the result rules: public addresses only (unless
CREDITSTREAM_RESULT_FETCH_ALLOW_PRIVATE=1), each redirect hop checked again, one deadline for
the whole download. A refused or failed fetch fails the job (its hold is released)."""

from __future__ import annotations

import base64
import binascii
import re

from egress import Egress, Failed, UrlRefused

MAX_RESULT_BYTES = 200 * 1024 * 1024
EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "audio/wav": ".wav",
    "audio/mpeg": ".mp3",
    "video/mp4": ".mp4",
    "image/svg+xml": ".svg",
    "text/plain": ".txt",
    "application/json": ".json",
}
_DATA_URL = re.compile(r"^data:([\w.+/-]+)?(;base64)?,(.*)$", re.DOTALL)


class FetchFailed(Exception):
    """The result could not be downloaded from where the provider said it is."""


def extension_for(content_type: str) -> str:
    return EXTENSIONS.get(content_type.split(";")[0].strip().lower(), ".bin")


def data_url(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


async def fetch(url: str, egress: Egress) -> tuple[bytes, str]:
    """The bytes and content type behind a `data:` or `http(s):` URL."""
    match = _DATA_URL.match(url)
    if match:
        content_type = match.group(1) or "application/octet-stream"
        try:
            data = (
                base64.b64decode(match.group(3), validate=True)
                if match.group(2)
                else match.group(3).encode()
            )
        except binascii.Error as exc:
            raise FetchFailed("result data URL is not valid base64") from exc
        return data, content_type
    if not url.startswith(("http://", "https://")):
        raise FetchFailed(f"Expected an http(s) or data: result URL, got {url[:60]!r}")
    try:
        async with egress.open("GET", url, egress.results) as response:
            if response.status_code != 200:
                raise FetchFailed(f"result download answered {response.status_code}")
            body = bytearray()
            async for chunk in response.chunks():
                body += chunk
                if len(body) > MAX_RESULT_BYTES:
                    raise FetchFailed(f"result is larger than {MAX_RESULT_BYTES} bytes")
            return bytes(body), response.headers.get("content-type", "application/octet-stream")
    except UrlRefused as exc:
        raise FetchFailed(f"result URL refused: {exc}") from exc
    except Failed as exc:
        raise FetchFailed(f"result download failed: {exc}") from exc
