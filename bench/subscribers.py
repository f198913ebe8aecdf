"""A fleet of idle WebSocket subscribers in a process of its own (`python -m bench.subscribers`).

Protocol on stdin/stdout, one JSON object a line. First line in: the settings
  {"targets": [[ws_url, account_id], ...], "concurrency": 100, "client": "picows"}
then commands, each answered by one line:
  {"cmd": "connect", "count": N}  → open the next N targets: hello, subscribe, wait for
                                     `subscribed`   → {"event": "connected", "total", "failed",
                                     "seconds", "cpu_s" (this process's CPU while connecting), …}
  {"cmd": "report"}               → every balance.updated received, with its arrival time
                                     (time.time(), comparable with the writer's commit time)
  {"cmd": "exit"}                 → leave at once (the kernel closes the sockets)
The benchmarks speak it through bench/fleet_processes.py.

Each subscriber pings as the SDK does (`{"op":"ping"}` every heartbeat_s), so long runs with
thousands of connections do not trip the server's heartbeat timeout.

Two clients, same behaviour: "picows" (default; bench/fleet_clients.py, a Cython WebSocket
protocol calling back on each frame, no task per connection) and "websockets" (its asyncio
client, a reader task per connection). Opening 10,000 connections costs the picows client about
0.2 ms of CPU each against 0.45 ms, CPU a small machine would otherwise take from the servers
being measured.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
from collections import Counter
from typing import Any

from bench.measure import raise_nofile
from bench.servers import run

PING = json.dumps({"op": "ping"})
CLIENTS = ("picows", "websockets")
DEFAULT_CLIENT = "picows"


class Fleet:
    def __init__(
        self, targets: list[list[str]], concurrency: int, client: str = DEFAULT_CLIENT
    ) -> None:
        if client not in CLIENTS:
            raise ValueError(f"unknown client {client!r}: one of {', '.join(CLIENTS)}")
        self.targets = targets
        self.client = client
        self.next = 0
        self.concurrency = concurrency
        self.live: list[Any] = []
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.close_codes: Counter[str] = Counter()
        self.receipts: list[tuple[str, int, float]] = []
        self.heartbeat_s = 25.0
        self.tasks: set[asyncio.Task[None]] = set()

    async def connect(self, count: int) -> dict[str, Any]:
        batch = self.targets[self.next : self.next + count]
        self.next += len(batch)
        gate = asyncio.Semaphore(self.concurrency)
        opener = self._open_picows if self.client == "picows" else self._open
        t0, cpu0 = time.monotonic(), time.process_time()

        async def one(url: str, account_id: str) -> None:
            async with gate:
                try:
                    await opener(url, account_id)
                except Exception as exc:  # reported, the benchmark decides what it means
                    self.failed += 1
                    self.errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1

        await asyncio.gather(*(one(url, account) for url, account in batch))
        # the fleet's own connections out of the collector's way: a full collection over
        # thousands of them stops this process for ~0.4 s, and the latency it measures with it
        gc.collect()
        gc.freeze()
        return {
            "event": "connected",
            "total": len(self.live),
            "failed": self.failed,
            "seconds": round(time.monotonic() - t0, 3),
            "cpu_s": round(time.process_time() - cpu0, 3),
            "errors": dict(self.errors.most_common(3)),
        }

    async def _open_picows(self, url: str, account_id: str) -> None:
        from bench.fleet_clients import open_subscriber

        self.live.append(await open_subscriber(self, url, account_id))

    async def _open(self, url: str, account_id: str) -> None:
        """The websockets client: a task per connection reads its messages."""
        from websockets.asyncio.client import connect

        ws = await connect(
            url,
            compression=None,
            ping_interval=None,
            open_timeout=60,
            close_timeout=1,
            max_size=2**20,
        )
        try:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
            self.heartbeat_s = float(hello.get("heartbeat_s") or self.heartbeat_s)
            await ws.send(json.dumps({"op": "subscribe", "account_id": account_id}))
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if message.get("type") == "subscribed":
                    break
                if message.get("type") == "error":
                    raise RuntimeError(f"subscribe refused: {message}")
        except BaseException:
            await ws.close()
            raise
        self.live.append(ws)
        task = asyncio.create_task(self._read(ws))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _read(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        receipts = self.receipts
        try:
            async for raw in ws:
                now = time.time()
                if '"balance.updated"' in raw:
                    message = json.loads(raw)
                    receipts.append((message["account_id"], message["seq"], now))
        except ConnectionClosed:
            pass
        self.close_codes[str(ws.close_code)] += 1

    async def ping_forever(self) -> None:
        """Every live connection pings once per heartbeat, spread evenly over it."""
        while True:
            live = list(self.live)
            if not live:
                await asyncio.sleep(1.0)
                continue
            gap = self.heartbeat_s * 0.8 / len(live)
            if self.client == "picows":
                from bench.fleet_clients import ping

                for transport in live:
                    ping(transport)
                    await asyncio.sleep(gap)
                continue
            for ws in live:
                try:
                    await ws.send(PING)
                except Exception:
                    pass
                await asyncio.sleep(gap)


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**28)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    settings = json.loads(await reader.readline())
    fleet = Fleet(
        settings["targets"],
        int(settings.get("concurrency", 100)),
        settings.get("client", DEFAULT_CLIENT),
    )
    pinger = asyncio.create_task(fleet.ping_forever())

    def answer(payload: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)
        if command["cmd"] == "connect":
            answer(await fleet.connect(int(command["count"])))
        elif command["cmd"] == "report":
            answer(
                {
                    "event": "report",
                    "receipts": fleet.receipts,
                    "live": len(fleet.live),
                    "closed": dict(fleet.close_codes),
                }
            )
        elif command["cmd"] == "exit":
            break
    pinger.cancel()


def main() -> None:
    settings_hint = int(os.environ.get("BENCH_SUBSCRIBERS", "0"))
    raise_nofile(max(4096, settings_hint + 1024))
    try:
        run(serve, os.environ.get("BENCH_LOOP", "uvloop"))
    finally:
        sys.stdout.flush()
        os._exit(0)  # thousands of sockets: let the kernel close them, not a graceful handshake


if __name__ == "__main__":
    main()
