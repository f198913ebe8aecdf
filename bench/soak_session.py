"""One soak against one server (bench/soak.py): the server, the webhook receiver and the endpoint
registered at it, the load process and the RSS samples while it runs, then the sweeper's
lateness and, after a drain, the delivery lag.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.database import account_ids, create_server_key, seed_accounts
from bench.measure import CpuMeter
from bench.results import Progress
from bench.servers import BENCH_SECRET, UvicornServer, stop_servers, user_tokens
from bench.soak_figures import rss_figures
from bench.soak_lateness import EVENT_TYPES, drain, read_delivery_lag, read_sweeper_lateness
from bench.soak_load_process import LoadProcess, sample_rss
from bench.soak_receiver import DeliveryReceiver

JOB_PROVIDER = "soak-external"  # not built in: nobody calls back
ABORT_SHARE = 0.3


async def run_session(
    args: argparse.Namespace, dsn: str, logs: Path, say: Progress
) -> dict[str, Any]:
    ids = account_ids(f"bsoak{uuid.uuid4().hex[:6]}", max(args.accounts, args.stream_accounts))
    await seed_accounts(dsn, ids)
    stream_ids = ids[: args.stream_accounts]
    env = {
        "CREDITSTREAM_DATABASE_URL": dsn,
        "CREDITSTREAM_USER_TOKEN_SECRET": BENCH_SECRET,
        "CREDITSTREAM_RESULTS_DIR": str(logs / "results"),
        "CREDITSTREAM_HOLD_TTL_S": str(args.ttl),
        "CREDITSTREAM_WEBHOOK_ALLOW_PRIVATE": "1",
        "CREDITSTREAM_LOG_LEVEL": "WARNING",
    }
    if args.redis:
        env["CREDITSTREAM_REDIS_URL"] = args.redis_url
    server = UvicornServer("asgi:app", env, "asyncio", logs, "soak-server")
    receiver = await DeliveryReceiver(args.receiver_delay_ms / 1000).start()
    try:
        await server.start()
        key = await create_server_key(dsn)
        registered_at = time.time()  # what came before (seeding, an earlier run) is left out
        await _register(server.url, key, receiver.url)
        base = server.url.replace("http://", "ws://") + "/v1/stream"
        cfg = {
            "host": "127.0.0.1",
            "port": server.port,
            "authorization": f"Bearer {key}",
            "accounts": ids,
            "duration": args.duration,
            "churn_clients": args.churn_clients,
            "stream_targets": [
                [f"{base}?token={t}", a]
                for a, t in zip(stream_ids, user_tokens(stream_ids), strict=True)
            ],
            "abort_share": ABORT_SHARE,
            "hold_rate": args.hold_rate,
            "job_rate": args.job_rate,
            "job_provider": JOB_PROVIDER,
            "report_s": max(1.0, args.sample_s),
        }
        say(
            f"soak: {args.duration:g} s: {args.churn_clients} churning streams, "
            f"{args.hold_rate:g} holds/s and {args.job_rate:g} jobs/s expiring after "
            f"{args.ttl} s, deliveries to {receiver.url}"
        )
        load = await LoadProcess.start(cfg, logs)
        meter = CpuMeter({"server": server.pid})
        meter.start()
        samples = await sample_rss(server, load, args.sample_s, say)
        cpu = meter.stop()
        # the load process has exited by now: its own count of its CPU
        cpu["load"] = round(load.final.get("load_cpu_s", 0.0) / max(1e-9, samples[-1][0]), 3)
        cpu["other"] = round(max(0.0, cpu["other"] - cpu["load"]), 3)
        ended = datetime.now(UTC)
        sweeper = await read_sweeper_lateness(
            dsn, datetime.fromtimestamp(registered_at, UTC), ended
        )
        say(
            f"soak: load done; sweeper: holds {_brief(sweeper['holds'])}, "
            f"jobs {_brief(sweeper['jobs'])}"
        )
        drained_at = await drain(receiver, args.drain)
        deliveries = await read_delivery_lag(dsn, receiver, registered_at, drained_at)
        say(
            f"soak: deliveries {_brief(deliveries)}, {deliveries['undelivered']} of "
            f"{deliveries['events']} not delivered"
        )
        server_log = server.log_tail()
    finally:
        await stop_servers([server])
        await receiver.stop()
    return {
        "rss": rss_figures(samples),
        "rss_samples": samples,
        "load": load.final,
        "sweeper": sweeper,
        "deliveries": deliveries,
        "cpu_cores": cpu,
        "receiver": {"requests": receiver.requests, "duplicates": receiver.duplicates},
        "server_log_tail": server_log[-1500:],
    }


def _brief(figures: dict[str, Any]) -> str:
    parts = [f"{q} {figures[q]:.2f} s" for q in ("p50", "p99", "max") if figures[q] is not None]
    return ", ".join(parts) or "none"


async def _register(url: str, key: str, target: str) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        response = await http.post(
            "/v1/webhook-endpoints",
            headers={"Authorization": f"Bearer {key}"},
            json={"url": target, "events": EVENT_TYPES},
        )
        if response.status_code != 201:
            raise RuntimeError(
                f"registering the webhook endpoint: {response.status_code} {response.text}"
            )
