"""Where the CPU goes while a benchmark runs: the PostgreSQL backends serving its database against
the benchmark's own Python process, in cores, sampled from /proc (Linux).

    python -m bench.cpu_share --pid PID --database-like 'bench_%' --seconds 60

Each second it lists the backends of the matching databases (pg_stat_activity) and adds up the
CPU time each used since the previous sample; the same for PID and its children. It prints one
line per sample and, at the end, the mean of the busy samples (those where the Python side used
more than a tenth of a core), so the figure is the load phase's, not the set-up's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
BUSY_CORES = 0.1


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []
    pids = [int(p) for p in found]
    return pids + [grand for child in pids for grand in children(child)]


async def sample(admin_dsn: str, pid: int, like: str, seconds: float) -> list[tuple[float, float]]:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    seen: dict[int, float] = {}
    shares: list[tuple[float, float]] = []
    try:
        loop = asyncio.get_running_loop()
        started = last = loop.time()
        while loop.time() - started < seconds and Path(f"/proc/{pid}").exists():
            await asyncio.sleep(1.0)
            now = loop.time()
            rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname LIKE $1", like)
            pg = python = 0.0
            for backend in [r["pid"] for r in rows]:
                used = cpu_seconds(backend)
                pg += used - seen.get(backend, used)  # a new backend counts from its next sample
                seen[backend] = used
            for process in [pid, *children(pid)]:
                used = cpu_seconds(process)
                python += used - seen.get(-process, used)
                seen[-process] = used
            elapsed, last = now - last, now
            shares.append((pg / elapsed, python / elapsed))
            print(f"postgres {pg / elapsed:5.2f} cores   python {python / elapsed:5.2f} cores")
    finally:
        await conn.close()
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, required=True, help="the benchmark's process")
    parser.add_argument("--database-like", default="bench_%", help="LIKE pattern of datname")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    shares = asyncio.run(sample(args.pg_admin, args.pid, args.database_like, args.seconds))
    busy = [s for s in shares if s[1] > BUSY_CORES]
    if busy:
        pg = sum(s[0] for s in busy) / len(busy)
        python = sum(s[1] for s in busy) / len(busy)
        print(f"busy samples {len(busy)}: postgres {pg:.2f} cores, python {python:.2f} cores")


if __name__ == "__main__":
    main()
