"""The HTTP load generator of `bench http`, in a process of its own (`python -m bench.loadgen`).

Reads one JSON line of settings on stdin, keeps `connections` keep-alive connections busy with
`POST path` (a JSON body naming a random account) for `warmup + duration` seconds, and prints one
JSON line: requests completed inside the measured window, statuses, latencies.

The default client writes requests by hand and parses responses with httptools on uvloop: on a
2-core machine the generator shares the CPUs with the server under test, so it must cost as
little as possible (`"client": "httpx"` is the slower, simpler alternative).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from collections import Counter
from typing import Any

from bench.measure import cdf_points, raise_nofile, summarize
from bench.servers import run


class Window:
    def __init__(self, warmup: float, duration: float) -> None:
        now = time.perf_counter()
        self.start = now + warmup
        self.stop = self.start + duration
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()

    def record(self, t0: float, t1: float, status: int) -> None:
        if self.start <= t1 <= self.stop:
            self.latencies.append(t1 - t0)
            self.statuses[status] += 1


class RawConnection(asyncio.Protocol):
    """HTTP/1.1 keep-alive, one request at a time, responses parsed by httptools."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc!r}"))

    async def request(self, data: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


async def raw_client(cfg: dict[str, Any], window: Window) -> None:
    loop = asyncio.get_running_loop()
    host, port = cfg["host"], cfg["port"]
    head = (
        f"POST {cfg['path']} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: {cfg['authorization']}\r\nContent-Type: application/json\r\n"
    )
    accounts = cfg["accounts"]
    keyed = cfg.get("idempotency", False)

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        conn: RawConnection | None = None
        while time.perf_counter() < window.stop:
            if conn is None or conn.transport is None or conn.transport.is_closing():
                _, conn = await loop.create_connection(RawConnection, host, port)
            body = json.dumps({"account_id": rng.choice(accounts), "amount": 1}).encode()
            key = f"Idempotency-Key: {uuid.uuid4().hex}\r\n" if keyed else ""
            data = (head + key + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
            t0 = time.perf_counter()
            try:
                status = await conn.request(data)
            except (ConnectionError, OSError) as exc:
                window.errors[type(exc).__name__] += 1
                conn = None
                await asyncio.sleep(0.01)
                continue
            window.record(t0, time.perf_counter(), status)
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(worker(i) for i in range(cfg["connections"])))


async def httpx_client(cfg: dict[str, Any], window: Window) -> None:
    import httpx

    limits = httpx.Limits(
        max_connections=cfg["connections"], max_keepalive_connections=cfg["connections"]
    )
    base = f"http://{cfg['host']}:{cfg['port']}"
    async with httpx.AsyncClient(
        base_url=base, limits=limits, timeout=30, headers={"Authorization": cfg["authorization"]}
    ) as http:

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            while time.perf_counter() < window.stop:
                t0 = time.perf_counter()
                try:
                    response = await http.post(
                        cfg["path"], json={"account_id": rng.choice(cfg["accounts"]), "amount": 1}
                    )
                except httpx.HTTPError as exc:
                    window.errors[type(exc).__name__] += 1
                    continue
                window.record(t0, time.perf_counter(), response.status_code)

        await asyncio.gather(*(worker(i) for i in range(cfg["connections"])))


async def generate(cfg: dict[str, Any]) -> dict[str, Any]:
    window = Window(cfg["warmup"], cfg["duration"])
    cpu0 = time.process_time()
    client = httpx_client if cfg.get("client") == "httpx" else raw_client
    await client(cfg, window)
    ok = sum(n for status, n in window.statuses.items() if 200 <= status < 300)
    return {
        "requests": len(window.latencies),
        "ok": ok,
        "req_per_s": ok / cfg["duration"],
        "statuses": {str(k): v for k, v in window.statuses.items()},
        "errors": dict(window.errors),
        "latency_ms": summarize(window.latencies, 1000.0),
        "latency_cdf": cdf_points([x * 1000 for x in window.latencies], 100),
        "loadgen_cpu_s": time.process_time() - cpu0,
    }


def main() -> None:
    cfg = json.loads(sys.stdin.readline())
    raise_nofile(cfg["connections"] + 256)
    result = run(lambda: generate(cfg), "uvloop" if cfg.get("client") != "httpx" else "asyncio")
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
