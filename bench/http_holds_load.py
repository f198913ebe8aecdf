"""The load of `bench http`: bench/loadgen.py in its own process, sending `POST /v1/holds` with a
fresh `Idempotency-Key` to one server, with the CPU of the server, the load generator and
PostgreSQL measured over the measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.request
from typing import Any

from bench.measure import CpuMeter
from bench.servers import ROOT, UvicornServer


async def load(
    server: UvicornServer, key: str, ids: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    cfg = {
        "host": "127.0.0.1",
        "port": server.port,
        "path": "/v1/holds",
        "authorization": f"Bearer {key}",
        "accounts": ids,
        "connections": args.connections,
        "warmup": args.warmup,
        "duration": args.duration,
        "client": args.client,
        "idempotency": True,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.loadgen",
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=2**26,
    )
    assert proc.stdin is not None
    proc.stdin.write((json.dumps(cfg) + "\n").encode())
    await proc.stdin.drain()
    proc.stdin.close()
    meter = CpuMeter({"server": server.pid, "loadgen": proc.pid})
    await asyncio.sleep(args.warmup)
    meter.start()
    await asyncio.sleep(args.duration)
    cores = meter.stop()
    out, err = await proc.communicate()
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"load generator failed ({proc.returncode}): {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result["cpu_cores"] = cores
    result["batches"] = await asyncio.to_thread(batch_sizes, server.port)
    return result


def batch_sizes(port: int) -> dict[str, float] | None:
    """The server's group-commit batches over its whole life (warm-up included), from its
    Prometheus metrics (with several workers, the one that answers); None for a server
    without them (the echo)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    values: dict[str, float] = {}
    for line in text.splitlines():
        for name in ("sum", "count"):
            if line.startswith(f"creditstream_write_batch_size_{name} "):
                values[name] = float(line.split()[1])
    if not values.get("count"):
        return None
    return {"batches": values["count"], "mean": values["sum"] / values["count"]}
