"""What a benchmark measures besides its own figures: latency statistics, CPU and memory of the
processes involved, and the machine and services it ran on."""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks; `ordered` must be sorted."""
    if not ordered:
        return None
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarize(samples: Iterable[float], scale: float = 1.0) -> dict[str, Any]:
    ordered = sorted(s * scale for s in samples)
    if not ordered:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    return {
        "count": len(ordered),
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": ordered[-1],
        "mean": sum(ordered) / len(ordered),
    }


def cdf_points(samples: Sequence[float], points: int = 200) -> list[tuple[float, float]]:
    """A down-sampled CDF (value, fraction) small enough to keep in the JSON for the plots."""
    ordered = sorted(samples)
    if not ordered:
        return []
    n = len(ordered)
    idx = sorted({min(n - 1, int(i * (n - 1) / max(1, points - 1))) for i in range(points)})
    return [(ordered[i], (i + 1) / n) for i in idx]


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return None if var == 0 else sum((x - mx) * (y - my) for x, y in points) / var


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def process_cpu_s(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class CpuMeter:
    """CPU used during a phase, in cores (1.0 = one core busy the whole time): this process,
    named child processes, all PostgreSQL processes, and the machine as a whole."""

    def __init__(self, pids: dict[str, int] | None = None) -> None:
        self.pids = dict(pids or {})

    def __enter__(self) -> CpuMeter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _snapshot(self) -> dict[str, float]:
        busy, total = machine_jiffies()
        snap = {
            "_wall": time.monotonic(),
            "_busy": busy,
            "_total": total,
            "self": time.process_time(),
            "postgres": sum(process_cpu_s(p) for p in postgres_pids()),
        }
        for name, pid in self.pids.items():
            snap[name] = process_cpu_s(pid)
        return snap

    def start(self) -> None:
        self._start = self._snapshot()
        self.cores: dict[str, float] = {}

    def stop(self) -> dict[str, float]:
        end = self._snapshot()
        wall = end["_wall"] - self._start["_wall"]
        ncpu = len(os.sched_getaffinity(0))
        jiffies = end["_total"] - self._start["_total"]
        busy = (end["_busy"] - self._start["_busy"]) / jiffies * ncpu if jiffies else 0.0
        self.cores = {"machine": round(busy, 3)}
        for name in end:
            if not name.startswith("_"):
                self.cores[name] = round((end[name] - self._start[name]) / wall, 3) if wall else 0
        # whatever else ran on the machine meanwhile (other users' jobs skew a 2-core machine)
        self.cores["other"] = round(
            max(0.0, busy - sum(v for k, v in self.cores.items() if k != "machine")), 3
        )
        return self.cores


CONTENTION_CORES = 0.25


def contention_note(others: Iterable[float | None]) -> str | None:
    """A warning when other processes took CPU during the measured phases."""
    values = [v for v in others if v is not None]
    if not values or max(values) <= CONTENTION_CORES:
        return None
    return (
        f"the machine was shared: other processes used {min(values):.2f}–{max(values):.2f} "
        "cores during the measured phases (row 'other processes' CPU'); figures from "
        "phases with more of it are pessimistic, compare ratios with that in mind"
    )


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE (children inherit it); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:  # root may raise the hard limit up to fs.nr_open
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            wanted = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


def machine_info(pg_version: str | None = None, redis_version: str | None = None) -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_gib": round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "postgresql": pg_version,
        "redis": redis_version,
    }


async def service_versions(dsn: str, redis_url: str | None) -> tuple[str | None, str | None]:
    import asyncpg

    pg = redis_version = None
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        pg = str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
    if redis_url:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url)
        try:
            redis_version = str((await client.info("server"))["redis_version"])
        finally:
            await client.aclose()
    return pg, redis_version
