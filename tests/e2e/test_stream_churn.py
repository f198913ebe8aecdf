"""Streams that come and go leave nothing behind: a real server under rounds of WebSocket churn
(clients connecting, subscribing, staying a moment and closing, some dropping the TCP connection
abruptly, some of those mid-subscribe) keeps its memory flat from one round to the next, and
once the clients are gone no Redis channel stays subscribed and no subscription is counted."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
import websockets

from realtime.broker import CHANNEL_PREFIX
from tests.support import ROOT, LiveServer, PrivateRedis, make_server_key

CLIENTS = 150  # at once: the streams open when the old policy froze them leaked
ACCOUNTS = 200
WARM_UP = 400  # streams before the first measurement: caches, pools and the allocator settle
ROUND = 2500  # streams per measured round: ~60 KB each stayed behind when they leaked
ABORT_SHARE = 0.3  # of those, half abort right after sending the subscribe
SLACK_BYTES = 8 * 1024 * 1024


class ProductionServer(LiveServer):
    """uvicorn with the protocols `creditstream serve` and the Dockerfile deploy."""

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "asgi:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--ws",
                "api.ws_protocol:WebSocketProtocol",
                "--http",
                "api.serving:AutoProtocol",
                "--ws-per-message-deflate",
                "false",
                "--log-level",
                "warning",
                "--timeout-graceful-shutdown",
                "5",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def one_stream(ws_url: str, rng: random.Random) -> None:
    account = f"churn-{rng.randrange(ACCOUNTS):04d}"
    abort = rng.random() < ABORT_SHARE
    early = abort and rng.random() < 0.5
    ws = await websockets.connect(ws_url, open_timeout=20, close_timeout=2)
    try:
        await ws.recv()  # hello
        await ws.send(json.dumps({"op": "subscribe", "account_id": account}))
        if early:  # gone while the server is still subscribing it
            ws.transport.abort()
            return
        while json.loads(await ws.recv()).get("type") != "snapshot":
            pass
        await asyncio.sleep(rng.uniform(0.1, 0.5))
        if abort:
            ws.transport.abort()
    finally:
        await ws.close()


async def churn(ws_url: str, streams: int, seed: int) -> None:
    left = streams

    async def client(index: int) -> None:
        nonlocal left
        rng = random.Random(seed * 1000 + index)
        while left > 0:
            left -= 1
            try:
                await one_stream(ws_url, rng)
            except (OSError, websockets.WebSocketException, TimeoutError):
                pass  # an aborted stream's close; the server's side is what is measured

    await asyncio.gather(*(client(i) for i in range(CLIENTS)))


async def settled_rss(server: LiveServer, http: httpx.AsyncClient) -> int:
    """The server's RSS once every stream of the round is gone (connections back to zero)."""
    assert server.process is not None
    deadline = time.monotonic() + 30
    while metric(await metrics_text(http), "creditstream_stream_connections") > 0:
        assert time.monotonic() < deadline, "streams still open 30 s after their clients left"
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    return vm_rss(server.process.pid)


async def metrics_text(http: httpx.AsyncClient) -> str:
    return (await http.get("/metrics")).text


def metric(text: str, name: str) -> float:
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    )


async def account_channels(redis: aioredis.Redis) -> set[str]:
    channels = await redis.pubsub_channels(CHANNEL_PREFIX + "*")
    names = {c.decode() if isinstance(c, bytes) else c for c in channels}
    return names - {CHANNEL_PREFIX + "_"}  # minus the placeholder that keeps subscribed mode


async def test_memory_stays_flat_and_no_subscription_outlives_its_stream(
    pg_url: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    key = await make_server_key(pg_url)
    server = ProductionServer(
        {
            "CREDITSTREAM_DATABASE_URL": pg_url,
            "CREDITSTREAM_REDIS_URL": private_redis.url,
            "CREDITSTREAM_RESULTS_DIR": str(tmp_path),
        }
    ).start()
    redis = aioredis.Redis.from_url(private_redis.url)
    ws_url = server.url.replace("http://", "ws://") + f"/v1/stream?token={key}"
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            await churn(ws_url, WARM_UP, seed=0)
            await churn(ws_url, ROUND, seed=1)
            first = await settled_rss(server, http)
            await churn(ws_url, ROUND, seed=2)
            second = await settled_rss(server, http)
            grew = second - first
            assert grew <= first * 0.10 + SLACK_BYTES, (
                f"RSS {first / 2**20:.0f} MiB after the first round, {second / 2**20:.0f} MiB "
                f"after the second: {grew / ROUND:.0f} bytes per stream stayed behind"
            )

            deadline = time.monotonic() + 10
            while (left := await account_channels(redis)) or metric(
                await metrics_text(http), "creditstream_stream_subscriptions"
            ) > 0:
                assert time.monotonic() < deadline, (
                    f"{len(left)} channels still subscribed with no stream: {sorted(left)[:5]}"
                )
                await asyncio.sleep(0.2)
    finally:
        await redis.aclose()
        server.stop()
