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
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import options, rawsql
from bench.database import (
    account_ids,
    audit_database,
    bench_database,
    create_server_key,
    seed_accounts,
)
from bench.measure import CpuMeter, contention_note, machine_info, service_versions, summarize
from bench.results import Goal, Progress, Result, Row
from bench.servers import BENCH_SECRET, VARIANTS, UvicornServer

DELIVERED_GOAL = 0.95  # of the offered rate, during the window
LAG_P99_GOAL_MS = 1000.0


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


class Receiver:
    """A webhook receiver: HTTP/1.1 with keep-alive, `delay_s` per request, 200 to all."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.arrivals: dict[tuple[str, int], float] = {}
        self.duplicates = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (
                        line.partition(":")
                        for line in head.decode("latin-1").split("\r\n")[1:]
                        if line
                    )
                }
                await reader.readexactly(int(headers.get("content-length", "0")))
                await asyncio.sleep(self.delay_s)
                account, _, seq = headers.get("x-creditstream-event-id", "").rpartition(":")
                key = (account, int(seq or 0))
                if key in self.arrivals:
                    self.duplicates += 1
                else:
                    self.arrivals[key] = time.time()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


async def drive(
    dsn: str, ids: list[str], rate: float, seconds: float, writers: int, seed: int
) -> dict[tuple[str, int], float]:
    """Commit holds at `rate` for `seconds`; when each committed (time.time())."""
    import asyncpg

    pool = await asyncpg.create_pool(dsn, min_size=writers, max_size=writers)
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    commits: dict[tuple[str, int], float] = {}
    total = max(1, int(rate * seconds))
    next_slot = 0
    start = loop.time()

    async def worker() -> None:
        nonlocal next_slot
        async with pool.acquire() as conn:
            while next_slot < total:
                slot, next_slot = next_slot, next_slot + 1
                delay = start + slot / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                account_id = rng.choice(ids)
                event = await rawsql.hold_in_one_statement(conn, account_id, 1, datetime.now(UTC))
                commits[(account_id, int(event["seq"]))] = time.time()

    try:
        await asyncio.gather(*(worker() for _ in range(writers)))
    finally:
        await pool.close()
    return commits


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
    result = Result("webhooks", title, params, machine=machine_info(pg_version, None))
    lag = measured["lag_ms"]
    result.rows += [
        Row(
            "delivered events/s in the window",
            measured["delivered_per_s"],
            measured["offered_per_s"],
            Goal("ratio", ">=", DELIVERED_GOAL),
        ),
        Row("lag p50, ms (arrival − commit)", lag["p50"], args.receiver_ms),
        Row(
            "lag p99, ms", lag["p99"], args.receiver_ms, Goal("value", "<=", LAG_P99_GOAL_MS, "ms")
        ),
        Row("lag max, ms", lag["max"], args.receiver_ms),
        Row(
            "events delivered in the end, %",
            measured["delivered_pct"],
            100.0,
            Goal("value", ">=", 100.0, "%"),
        ),
        Row(
            "creditstream_webhook_lag_seconds max while sampled, s",
            max(lag_seen, default=None),
            None,
        ),
        Row("instance CPU while measured, cores", measured["server_cores"], None),
        Row("instance CPU per delivery, ms", measured["cpu_ms_per_delivery"], None),
    ]
    result.notes.append(
        "ceiling of delivered/s = the rate the writer committed in the window "
        "(a deliverer that keeps up); of lag = the receiver's own delay"
    )
    if receiver.duplicates:
        result.notes.append(f"{receiver.duplicates} events arrived more than once")
    if audit["mismatches"]:
        result.notes.append(f"AUDIT FAILED after the run: {audit['first']}")
    if note := contention_note([measured["cpu_cores"].get("other")]):
        result.notes.append(note)
    result.details = {"measured": measured, "audit": audit, "lag_metric_samples": lag_seen}
    result.elapsed_s = time.monotonic() - started
    return result


def summarize_run(
    commits: dict[tuple[str, int], float],
    receiver: Receiver,
    window_start: float,
    window_end: float,
    cores: dict[str, float],
) -> dict[str, Any]:
    window = max(1e-9, window_end - window_start)
    delivered = [receiver.arrivals[k] for k in commits if k in receiver.arrivals]
    in_window = sum(1 for at in delivered if window_start <= at <= window_end)
    # every delivery the instance made while its CPU was measured, the warm-up's included
    all_in_window = sum(1 for at in receiver.arrivals.values() if window_start <= at <= window_end)
    server_cores = cores.get("server")
    lags = [
        (receiver.arrivals[k] - at) * 1000 for k, at in commits.items() if k in receiver.arrivals
    ]
    return {
        "offered_per_s": len(commits) / window,
        "delivered_per_s": in_window / window,
        "delivered_pct": 100.0 * len(delivered) / max(1, len(commits)),
        "lag_ms": summarize(lags),
        "server_cores": server_cores,
        "cpu_ms_per_delivery": None
        if not all_in_window or server_cores is None
        else server_cores * window * 1000 / all_in_window,
        "cpu_cores": cores,
        "committed": len(commits),
    }
