"""The ceiling of `bench push` and `bench connections`: a bare Redis-to-WebSocket relay.

Same stack as creditstream's stream (uvicorn, the `websockets` implementation, Starlette's
WebSocket, redis-py pub/sub on one connection per instance, one channel per account, same channel
names), and the same handshake (hello, subscribe → subscribed, ping → pong), but no
authentication, no journal, no snapshot, no per-connection queue or sender task, no gap-fill:
a message from Redis is written straight to the sockets of that account's subscribers.
Configured by BENCH_REDIS_URL; served as `uvicorn bench.bare_push:app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

PREFIX = "creditstream:account:"  # realtime/broker.py's channels, so the same writer serves both
HELLO = json.dumps({"type": "hello", "connection_id": "bare", "heartbeat_s": 25.0})
PONG = json.dumps({"type": "pong"})


class Relay:
    def __init__(self) -> None:
        self.subscribers: dict[str, set[WebSocket]] = {}
        self.lock = asyncio.Lock()

    async def start(self, url: str) -> None:
        self.client = aioredis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        await self.pubsub.subscribe(PREFIX + "_")
        self.reader = asyncio.create_task(self._read())

    async def stop(self) -> None:
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)
        await self.pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # unannotated before redis 8.2
        await self.client.aclose()

    async def _read(self) -> None:
        while True:
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"].decode()
            text = message["data"].decode()
            for ws in list(self.subscribers.get(channel[len(PREFIX) :], ())):
                try:
                    await ws.send_text(text)
                except Exception:
                    pass

    async def add(self, account_id: str, ws: WebSocket) -> None:
        subscribers = self.subscribers.setdefault(account_id, set())
        if not subscribers:
            async with self.lock:
                await self.pubsub.subscribe(PREFIX + account_id)
        subscribers.add(ws)

    async def remove(self, account_id: str, ws: WebSocket) -> None:
        subscribers = self.subscribers.get(account_id)
        if subscribers is None:
            return
        subscribers.discard(ws)
        if not subscribers:
            del self.subscribers[account_id]
            async with self.lock:
                with contextlib.suppress(Exception):
                    await self.pubsub.unsubscribe(PREFIX + account_id)


relay = Relay()


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await relay.start(os.environ["BENCH_REDIS_URL"])
    try:
        yield
    finally:
        await relay.stop()


async def stream(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text(HELLO)
    accounts: list[str] = []
    try:
        while True:
            message = json.loads(await ws.receive_text())
            op = message.get("op")
            if op == "ping":
                await ws.send_text(PONG)
            elif op == "subscribe":
                account_id = str(message["account_id"])
                await relay.add(account_id, ws)
                accounts.append(account_id)
                await ws.send_text(
                    json.dumps({"type": "subscribed", "account_id": account_id, "seq": 0})
                )
    except WebSocketDisconnect:
        pass
    finally:
        for account_id in accounts:
            await relay.remove(account_id, ws)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[WebSocketRoute("/v1/stream", stream), Route("/healthz", healthz, methods=["GET"])],
    lifespan=lifespan,
)
