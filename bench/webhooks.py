"""`bench webhooks`: outbound webhook throughput and lag into one endpoint whose receiver takes
20 ms per request (as one a few network hops away would).

Set-up: one instance (`uvicorn asgi:app`, PostgreSQL) with one endpoint registered through the
API, pointing at a small HTTP/1.1 receiver in this process that sleeps `--receiver-ms` per
request and notes time.time() as each event arrives. A writer here commits holds at the
target rate over many accounts (bench/rawsql.py's one-statement hold: the rows the engine
writes, so the instance's CPU goes to delivering) and notes time.time() after each COMMIT.

Rows: delivered/s during the measured window against the rate offered (the ceiling: a
deliverer that keeps up delivers what is committed), lag = arrival − commit (its ceiling: the
receiver's own delay), events delivered in the end, and the instance's
`creditstream_webhook_lag_seconds` as sampled during the run.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench import options
from bench.database import (
    account_ids,
    audit_database,
    bench_database,
    create_server_key,
    seed_accounts,
)
from bench.measure import CpuMeter, machine_info, service_versions
from bench.results import Progress, Result
from bench.servers import BENCH_SECRET, VARIANTS, UvicornServer
from bench.webhooks_receiver import Receiver
from bench.webhooks_report import summarize_run, webhooks_result
from bench.webhooks_writer import drive


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rate", type=float, default=500.0, help="events committed per second (default 500)"
    )
    options.add_duration(parser, 10.0, "measured seconds of events")
    options.add_warmup(parser, 2.0, "seconds of events before the measured ones")
    options.add_accounts(parser, 200, "the events are spread over")
    parser.add_argument(
        "--receiver-ms",
        type=float,
        default=20.0,
        help="the receiver's time per request (default 20)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="CREDITSTREAM_WEBHOOK_CONCURRENCY of the instance (default: the app's own)",
    )
    parser.add_argument(
        "--writers", type=int, default=8, help="concurrent commits of the writer (default 8)"
    )
    options.add_db_pool(parser, 10, "the instance")
    parser.add_argument(
        "--drain",
        type=float,
        default=20.0,
        help="seconds to wait for the last events after the run (default 20)",
    )
    parser.add_argument(
        "--variant",
        choices=sorted(VARIANTS),
        default="asyncio",
        help="uvicorn variant of the instance (default asyncio)",
    )
    parser.add_argument(
        "--logs", type=Path, default=None, help="keep the instance's log in this directory"
    )


async def sample_lag(url: str, stop: asyncio.Event, seen: list[float]) -> None:
    """The instance's own lag metric, every half second."""
    import httpx

    async with httpx.AsyncClient(timeout=2.0) as http:
        while not stop.is_set():
            try:
                text = (await http.get(url + "/metrics")).text
                seen += [
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("creditstream_webhook_lag_seconds{")
                ]
            except (httpx.HTTPError, ValueError):
                pass
            await asyncio.sleep(0.5)


async def run(args: argparse.Namespace, say: Progress) -> Result:
    import httpx

    params = {
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "accounts": args.accounts,
        "receiver_ms": args.receiver_ms,
        "concurrency": args.concurrency,
        "writers": args.writers,
        "db_pool": args.db_pool,
        "variant": args.variant,
    }
    title = (
        f"webhooks: {args.rate:,.0f} events/s over {args.accounts} accounts into one "
        f"endpoint, receiver {args.receiver_ms:g} ms per request"
    )
    started = time.monotonic()
    receiver = await Receiver(args.receiver_ms / 1000).start()
    with tempfile.TemporaryDirectory(prefix="creditstream-bench-") as tmp:
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        async with bench_database(args.pg_admin, args.database_url) as dsn:
            pg_version, _ = await service_versions(dsn, None)
            ids = account_ids("bhook", args.accounts)
            await seed_accounts(dsn, ids)
            key = await create_server_key(dsn)
            env = {
                "CREDITSTREAM_DATABASE_URL": dsn,
                "CREDITSTREAM_USER_TOKEN_SECRET": BENCH_SECRET,
                "CREDITSTREAM_RESULTS_DIR": str(logs / "results"),
                "CREDITSTREAM_DB_POOL_SIZE": str(args.db_pool),
                "CREDITSTREAM_WEBHOOK_ALLOW_PRIVATE": "1",
                "CREDITSTREAM_LOG_LEVEL": "WARNING",
            }
            if args.concurrency:
                env["CREDITSTREAM_WEBHOOK_CONCURRENCY"] = str(args.concurrency)
            server = await UvicornServer("asgi:app", env, args.variant, logs, "webhooks").start()
            try:
                async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                    registered = await http.post(
                        "/v1/webhook-endpoints",
                        headers={"Authorization": f"Bearer {key}"},
                        json={
                            "url": f"http://127.0.0.1:{receiver.port}/hook",
                            "events": ["balance.updated"],
                        },
                    )
                    registered.raise_for_status()
                say(f"warm-up: {args.warmup:g} s at {args.rate:g} events/s")
                await drive(dsn, ids, args.rate, args.warmup, args.writers, seed=1)
                stop, lag_seen = asyncio.Event(), list[float]()
                sampler = asyncio.create_task(sample_lag(server.url, stop, lag_seen))
                say(f"measuring: {args.duration:g} s at {args.rate:g} events/s")
                with CpuMeter({"server": server.pid}) as cpu:
                    window_start = time.time()
                    commits = await drive(dsn, ids, args.rate, args.duration, args.writers, seed=2)
                    window_end = time.time()
                deadline = time.monotonic() + args.drain
                while time.monotonic() < deadline and not all(
                    k in receiver.arrivals for k in commits
                ):
                    await asyncio.sleep(0.1)
                stop.set()
                await sampler
            finally:
                server.stop()
                await receiver.stop()
            audit = await audit_database(dsn)
    measured = summarize_run(commits, receiver, window_start, window_end, cpu.cores)
    result = webhooks_result(
        args,
        title,
        params,
        machine_info(pg_version, None),
        measured,
        receiver.duplicates,
        lag_seen,
        audit,
    )
    result.elapsed_s = time.monotonic() - started
    return result
