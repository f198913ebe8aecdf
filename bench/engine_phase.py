"""One phase of `bench engine` and `bench hot`: an operation called in a loop by a number of
tasks, counted (and its latency and the CPU taken) inside the measured window only.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from bench.measure import CpuMeter, summarize

Op = Callable[[random.Random], Awaitable[Any]]  # may return how many operations it did


async def measure(op: Op, concurrency: int, warmup: float, duration: float) -> dict[str, Any]:
    """Run `op` in `concurrency` tasks; count what completes inside the measured window."""
    loop = asyncio.get_running_loop()
    measure_from = loop.time() + warmup
    stop_at = measure_from + duration
    latencies: list[float] = []
    per_second = [0] * max(1, int(duration + 0.999))
    errors: list[str] = []
    completed = [0]
    meter = CpuMeter()

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        while loop.time() < stop_at:
            t0 = loop.time()
            try:
                done = await op(rng)
            except Exception as exc:  # counted and reported, never hidden
                errors.append(repr(exc)[:200])
                await asyncio.sleep(0.001)
                continue
            t1 = loop.time()
            if measure_from <= t1 <= stop_at:
                count = done if isinstance(done, int) else 1
                latencies.append(t1 - t0)
                completed[0] += count
                per_second[min(int(t1 - measure_from), len(per_second) - 1)] += count

    async def metering() -> None:
        await asyncio.sleep(max(0.0, measure_from - loop.time()))
        meter.start()
        await asyncio.sleep(max(0.0, stop_at - loop.time()))
        meter.stop()

    await asyncio.gather(metering(), *(worker(seed) for seed in range(concurrency)))
    return {
        "ops_per_s": completed[0] / duration,
        "completed": completed[0],
        "latency_ms": summarize(latencies, 1000.0),
        "errors": len(errors),
        "first_errors": errors[:3],
        "cpu_cores": meter.cores,
        "per_second": per_second,
    }


def per_op_ms(phase: dict[str, Any], process: str) -> float | None:
    """CPU milliseconds one operation cost `process`: its cores ÷ operations per second."""
    cores, rate = phase["cpu_cores"].get(process), phase["ops_per_s"]
    return None if cores is None or not rate else 1000.0 * cores / rate
