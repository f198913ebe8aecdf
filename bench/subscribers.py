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
from pathlib import Path
from typing import Any

from bench.measure import raise_nofile
from bench.servers import run

PING = json.dumps({"op": "ping"})
CLIENTS = ("picows", "websockets")
DEFAULT_CLIENT = "picows"


def add_client_argument(parser: Any) -> None:
    parser.add_argument(
        "--client",
        default=DEFAULT_CLIENT,
        choices=CLIENTS,
        help="WebSocket client of the subscriber fleet (default picows: a "
        "Cython protocol, no task per connection, so the fleet's own CPU "
        "takes little from the servers; websockets: its asyncio client)",
    )


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


class FleetProcess:
    """The benchmark's handle on one subscriber process."""

    def __init__(
        self,
        targets: list[list[str]],
        log_path: Path,
        loop: str = "uvloop",
        concurrency: int = 100,
        client: str = DEFAULT_CLIENT,
    ) -> None:
        self.targets, self.log_path, self.loop, self.concurrency = (
            targets,
            log_path,
            loop,
            concurrency,
        )
        self.client = client
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> FleetProcess:
        from bench.servers import ROOT

        env = {
            **os.environ,
            "BENCH_SUBSCRIBERS": str(len(self.targets)),
            "BENCH_LOOP": self.loop,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        with open(self.log_path, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.subscribers",
                cwd=ROOT,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                limit=2**28,
            )
        await self._send(
            {"targets": self.targets, "concurrency": self.concurrency, "client": self.client}
        )
        return self

    async def _send(self, payload: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(payload) + "\n").encode())
        await self.proc.stdin.drain()

    async def command(self, payload: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        await self._send(payload)
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"subscriber process died: {self.log_tail()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def connect(self, count: int) -> dict[str, Any]:
        return await self.command({"cmd": "connect", "count": count})

    async def report(self) -> dict[str, Any]:
        return await self.command({"cmd": "report"})

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    async def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            try:
                await self._send({"cmd": "exit"})
            except (ConnectionError, RuntimeError):
                pass
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        if self.proc.stdout is not None:
            await self.proc.stdout.read()


class FleetGroup:
    """Subscribers spread over as many processes as the open-files limit asks for: a process
    holds at most RLIMIT_NOFILE − 512 sockets, and the hard limit may not be raisable."""

    def __init__(
        self,
        targets: list[list[str]],
        log_dir: Path,
        name: str,
        concurrency: int = 100,
        per_process: int | None = None,
        client: str = DEFAULT_CLIENT,
    ) -> None:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        per = per_process or max(100, soft - 512)
        count = max(1, -(-len(targets) // per))
        # interleaved, so each process keeps the targets' alternation between instances
        self.fleets = [
            FleetProcess(
                targets[i::count],
                log_dir / f"{name}-{i}.log",
                concurrency=max(1, concurrency // count),
                client=client,
            )
            for i in range(count)
        ]

    @property
    def pids(self) -> dict[str, int]:
        if len(self.fleets) == 1:
            return {"subscribers": self.fleets[0].pid}
        return {f"subscribers_{i + 1}": f.pid for i, f in enumerate(self.fleets)}

    async def start(self) -> FleetGroup:
        await asyncio.gather(*(fleet.start() for fleet in self.fleets))
        return self

    async def connect(self, count: int) -> dict[str, Any]:
        n = len(self.fleets)
        shares = [count // n + (1 if i < count % n else 0) for i in range(n)]
        answers = await asyncio.gather(
            *(
                fleet.connect(share)
                for fleet, share in zip(self.fleets, shares, strict=True)
                if share
            )
        )
        errors: Counter[str] = Counter()
        for answer in answers:
            errors.update(answer.get("errors", {}))
        return {
            "event": "connected",
            "total": sum(a["total"] for a in answers),
            "failed": sum(a["failed"] for a in answers),
            "seconds": max((a["seconds"] for a in answers), default=0.0),
            "cpu_s": sum(a["cpu_s"] for a in answers),
            "errors": dict(errors.most_common(3)),
            "processes": n,
        }

    async def report(self) -> dict[str, Any]:
        answers = await asyncio.gather(*(fleet.report() for fleet in self.fleets))
        closed: Counter[str] = Counter()
        for answer in answers:
            closed.update(answer["closed"])
        return {
            "event": "report",
            "receipts": [r for a in answers for r in a["receipts"]],
            "live": sum(a["live"] for a in answers),
            "closed": dict(closed),
        }

    async def close(self) -> None:
        await asyncio.gather(*(fleet.close() for fleet in self.fleets))


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
