"""The benchmark's side of the subscriber fleet (bench/subscribers.py runs in processes of its
own): `FleetProcess` drives one process over its stdin/stdout protocol, `FleetGroup` spreads the
subscribers over as many processes as the open-files limit asks for, and `--client` picks the
fleet's WebSocket client."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.subscribers import CLIENTS, DEFAULT_CLIENT


def add_client_argument(parser: Any) -> None:
    parser.add_argument(
        "--client",
        default=DEFAULT_CLIENT,
        choices=CLIENTS,
        help="WebSocket client of the subscriber fleet (default picows: a "
        "Cython protocol, no task per connection, so the fleet's own CPU "
        "takes little from the servers; websockets: its asyncio client)",
    )


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
