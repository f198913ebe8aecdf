"""The load of `bench soak` seen from the benchmark: bench/soak_load.py in its own process, fed
its settings on stdin and followed through the running totals it prints, and the server's RSS
sampled until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.measure import rss_kib
from bench.results import Progress
from bench.servers import ROOT, UvicornServer


class LoadProcess:
    """bench/soak_load.py: fed its settings on stdin, read for running totals on stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.latest: dict[str, Any] = {}
        self.final: dict[str, Any] = {}
        self.reader = asyncio.create_task(self._read())

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(cls, cfg: dict[str, Any], logs: Path) -> LoadProcess:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        with open(logs / "soak-load.log", "ab") as errors:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.soak_load",
                cwd=ROOT,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=errors,
                limit=2**22,
            )
        assert process.stdin is not None
        process.stdin.write(json.dumps(cfg).encode() + b"\n")
        await process.stdin.drain()
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            totals = json.loads(line)
            self.latest = totals
            if totals.get("final"):
                self.final = totals

    @property
    def running(self) -> bool:
        return not self.reader.done()

    async def wait(self) -> None:
        await self.reader
        await self.process.wait()
        if not self.final:
            raise RuntimeError(
                f"the soak load exited with {self.process.returncode} and no "
                "totals (its stderr is soak-load.log)"
            )


async def sample_rss(
    server: UvicornServer, load: LoadProcess, every_s: float, say: Progress
) -> list[tuple[float, float, int]]:
    """(seconds, RSS MiB, streams closed so far) every `every_s` until the load ends."""
    samples: list[tuple[float, float, int]] = []
    t0 = time.monotonic()
    next_say = t0 + 30
    try:
        while load.running:
            now = time.monotonic()
            samples.append(
                (
                    round(now - t0, 2),
                    round(rss_kib(server.pid) / 1024, 2),
                    int(load.latest.get("streams_closed", 0)),
                )
            )
            if now >= next_say:
                next_say += 30
                say(
                    f"soak: {now - t0:.0f} s, RSS {samples[-1][1]:.0f} MiB, "
                    f"{samples[-1][2]} streams closed, "
                    f"{load.latest.get('holds_ok', 0)} holds, {load.latest.get('jobs_ok', 0)} jobs"
                )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(load.reader), every_s)
    finally:
        if load.running:
            load.process.kill()
    await load.wait()
    samples.append(
        (
            round(time.monotonic() - t0, 2),
            round(rss_kib(server.pid) / 1024, 2),
            int(load.final.get("streams_closed", 0)),
        )
    )
    return samples
