"""The load of `bench http`: bench/loadgen.py in its own process, sending `POST /v1/holds` with a
fresh `Idempotency-Key` to one server, with the CPU of the server, the load generator and
PostgreSQL measured over the measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
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
    result["batches"] = await batch_sizes(server.url)
    return result


async def batch_sizes(url: str) -> dict[str, float] | None:
    """The server's group-commit batches over its whole life (warm-up included), from its
    Prometheus metrics (with several workers, the one that answers); None for a server
    without them (the echo)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient(timeout=5.0) as client:
        answer = await client.get(url + "/metrics")
    if answer.status_code != 200:
        return None
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(answer.text)
        if family.name == "creditstream_write_batch_size"
        for sample in family.samples
    }
    count = values.get("creditstream_write_batch_size_count")
    if not count:
        return None
    return {"batches": count, "mean": values["creditstream_write_batch_size_sum"] / count}
