"""A test WebSocket client that records every message with its arrival time and the close code."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection


class StreamClient:
    def __init__(self, base_url: str, token: str) -> None:
        self.ws_url = base_url.replace("http://", "ws://") + "/v1/stream"
        self.token = token
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, **options: Any) -> dict[str, Any]:
        self.closed.clear()
        self.close_code = None
        self._ws = await websockets.connect(f"{self.ws_url}?token={self.token}", **options)
        hello = json.loads(await self._ws.recv())
        self._reader = asyncio.create_task(self._read())
        return dict(hello)

    async def send(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send(json.dumps(message))

    async def subscribe(
        self, account_id: str | None = None, after_seq: int | None = None, timeout: float = 5
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"op": "subscribe"}
        if account_id is not None:
            message["account_id"] = account_id
        if after_seq is not None:
            message["after_seq"] = after_seq
        count = len(self.of_type("subscribed"))
        snapshots = len(self.of_type("snapshot"))
        await self.send(message)
        await self.wait_until(lambda: len(self.of_type("subscribed")) > count, timeout)
        if after_seq is None:  # the snapshot follows `subscribed`: wait for it too
            await self.wait_until(lambda: len(self.of_type("snapshot")) > snapshots, timeout)
        return self.of_type("subscribed")[-1]

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if m.get("type") == kind]

    def events(self, account_id: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for _, m in self.messages
            if "seq" in m
            and m.get("type") not in ("subscribed", "snapshot")
            and (account_id is None or m["account_id"] == account_id)
        ]

    def seqs(self, account_id: str | None = None) -> list[int]:
        return [e["seq"] for e in self.events(account_id)]

    async def wait_for_seq(self, seq: int, timeout: float = 5) -> None:
        await self.wait_until(lambda: seq in self.seqs(), timeout)

    async def wait_until(self, condition: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out; last messages: {self.messages[-3:]}, close code {self.close_code}"
                )
            await asyncio.sleep(0.01)

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                self.messages.append((time.time(), json.loads(raw)))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self._ws.close_code
            self.closed.set()
