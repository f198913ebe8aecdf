"""The bare relay of bench/bare_push.py on picows instead of an ASGI server: what the WebSocket
layer alone costs per idle connection (`bench connections --ceiling picows`).

Same handshake (hello on open, subscribe → subscribed, ping → pong), same Redis channels, one
redis-py pub/sub connection per instance; a message from Redis is written straight to the
sockets of that account's subscribers. picows calls back on each frame, with no task per
connection: a subscribe (which awaits Redis) and the unsubscribe at disconnect run as short
tasks. GET /healthz answers 200 for the harness. Configured by BENCH_REDIS_URL and, optionally,
BENCH_PICOWS_READ_BUFFER (bytes of each connection's initial read buffer; picows' default 16 KiB,
grown when a frame does not fit); run as `python -m bench.picows_relay --port P [--loop uvloop]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from collections.abc import Coroutine
from typing import Any

import redis.asyncio as aioredis
from picows import (
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from bench.servers import run

# bench/bare_push.py's, not imported from it: that would load Starlette into this process
PREFIX = "creditstream:account:"
HELLO = json.dumps({"type": "hello", "connection_id": "bare", "heartbeat_s": 25.0}).encode()
PONG = json.dumps({"type": "pong"}).encode()


class Relay:
    def __init__(self) -> None:
        self.subscribers: dict[str, set[WSTransport]] = {}
        self.lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self, url: str) -> None:
        self.client = aioredis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        await self.pubsub.subscribe(PREFIX + "_")
        self.reader = asyncio.create_task(self._read())

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _read(self) -> None:
        while True:
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None or message.get("type") != "message":
                continue
            account_id = message["channel"].decode()[len(PREFIX) :]
            for transport in list(self.subscribers.get(account_id, ())):
                transport.send(WSMsgType.TEXT, message["data"])

    async def add(self, account_id: str, transport: WSTransport) -> None:
        subscribers = self.subscribers.setdefault(account_id, set())
        if not subscribers:
            async with self.lock:
                await self.pubsub.subscribe(PREFIX + account_id)
        subscribers.add(transport)
        transport.send(
            WSMsgType.TEXT,
            json.dumps({"type": "subscribed", "account_id": account_id, "seq": 0}).encode(),
        )

    async def remove(self, account_id: str, transport: WSTransport) -> None:
        subscribers = self.subscribers.get(account_id)
        if subscribers is None:
            return
        subscribers.discard(transport)
        if not subscribers:
            del self.subscribers[account_id]
            async with self.lock:
                with contextlib.suppress(Exception):
                    await self.pubsub.unsubscribe(PREFIX + account_id)


relay = Relay()


class Stream(WSListener):
    __slots__ = ("accounts",)

    def __init__(self) -> None:
        self.accounts: list[str] = []

    def on_ws_connected(self, transport: WSTransport) -> None:
        transport.send(WSMsgType.TEXT, HELLO)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        message = json.loads(frame.get_payload_as_bytes())
        op = message.get("op")
        if op == "ping":
            transport.send(WSMsgType.TEXT, PONG)
        elif op == "subscribe":
            account_id = str(message["account_id"])
            self.accounts.append(account_id)
            relay.spawn(relay.add(account_id, transport))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        for account_id in self.accounts:
            relay.spawn(relay.remove(account_id, transport))


HEALTHY = WSUpgradeResponse.create_ok_response(
    b'{"status":"ok"}', {"Content-Type": "application/json"}
)


def route(request: WSUpgradeRequest) -> Stream | WSUpgradeResponseWithListener | None:
    if request.path == b"/v1/stream":
        return Stream()
    if request.path == b"/healthz":
        return WSUpgradeResponseWithListener(HEALTHY, None)
    return None


async def serve(host: str, port: int) -> None:
    await relay.start(os.environ["BENCH_REDIS_URL"])
    read_buffer = int(os.environ.get("BENCH_PICOWS_READ_BUFFER", 16 * 1024))
    server = await ws_create_server(
        route, host, port, max_frame_size=2**20, read_buffer_init_size=read_buffer
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.picows_relay")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        run(lambda: serve(args.host, args.port), args.loop)


if __name__ == "__main__":
    main()
