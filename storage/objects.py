"""Object stores for generation results: S3-compatible (R2, S3, MinIO) via boto3, or a local
directory served under /results/. boto3 blocks, so its calls run in a worker thread; it is
imported only by an S3 store (~24 MiB of RSS an instance without one does not carry)."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from pathlib import Path
from typing import Any

from core.ports import StorageFailed

_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,511}$")
# types a browser shows without running anything; any other (SVG, HTML, XML, JS, PDF, …) is
# served as a download, since a result's type is the provider's choice
INLINE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/webp",
        "image/gif",
        "audio/wav",
        "audio/x-wav",
        "audio/wave",
        "audio/mpeg",
        "audio/ogg",
        "video/mp4",
        "video/webm",
        "text/plain",
        "application/json",
    }
)


def disposition_for(content_type: str, filename: str) -> str | None:
    """`Content-Disposition: attachment` for active content types, None for inline ones."""
    if content_type.split(";")[0].strip().lower() in INLINE_TYPES:
        return None
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", filename) or "result"
    return f'attachment; filename="{safe}"'


def check_key(key: str) -> str:
    if not _SAFE_KEY.fullmatch(key) or ".." in key:
        raise StorageFailed(f"Refusing unsafe object key {key!r}")
    return key


class LocalDirectoryStore:
    """The embedded default: files under a directory, served by the app at /results/."""

    def __init__(self, root: str, public_base: str) -> None:
        self.root = Path(root).resolve()
        self.public_base = public_base.rstrip("/")

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        path = self.root / check_key(key)
        try:
            await asyncio.to_thread(_write_atomically, path, data)
        except OSError as exc:
            raise StorageFailed(f"could not write {key}: {exc}") from exc
        return f"{self.public_base}/{key}"

    async def delete(self, key: str) -> None:
        path = self.root / check_key(key)
        await asyncio.to_thread(path.unlink, True)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")  # writers may race
    partial.write_bytes(data)
    os.replace(partial, path)


class S3Store:
    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        public_url: str | None = None,
        region: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError)
        self.bucket = bucket
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            config=Config(
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                retries={"total_max_attempts": 2},
                s3={"addressing_style": "path"},
            ),
        )
        base = public_url or f"{(endpoint_url or 'https://s3.amazonaws.com').rstrip('/')}/{bucket}"
        self.public_base = base.rstrip("/")

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        check_key(key)
        try:
            extra = {}
            disposition = disposition_for(content_type, key.rsplit("/", 1)[-1])
            if disposition is not None:
                extra["ContentDisposition"] = disposition
            await asyncio.to_thread(
                self.client.put_object,
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                **extra,
            )
        except self._errors as exc:
            raise StorageFailed(f"S3 put of {key} failed: {exc}") from exc
        return f"{self.public_base}/{key}"

    async def delete(self, key: str) -> None:
        try:
            await asyncio.to_thread(
                self.client.delete_object, Bucket=self.bucket, Key=check_key(key)
            )
        except self._errors:
            pass  # an orphan object costs storage, not money

    async def ping(self) -> None:
        try:
            await asyncio.to_thread(self.client.head_bucket, Bucket=self.bucket)
        except self._errors as exc:
            raise StorageFailed(f"bucket {self.bucket} unreachable: {exc}") from exc
