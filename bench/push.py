"""`bench push`: commit-to-client latency across two instances sharing Redis, and server memory
per idle WebSocket, against a bare Redis-to-WebSocket relay (bench/bare_push.py).

Set-up per side and uvicorn variant: two instances (`uvicorn asgi:app`, PostgreSQL, Redis), N
subscribers (one account each, user tokens, the SDK's handshake and pings) spread evenly over
them from a separate process (bench/subscribers.py; a picows client, or `--client websockets`,
whose CPU per connection is in the details). Memory: VmRSS of each instance after a few
warm-up connections and again once all N are connected and idle, divided by the connections.

Latency: this process acts as a third instance. At the target rate it commits a hold (the rows
the engine writes, in one statement: bench/rawsql.py's `hold_in_one_statement`, so that the
writer leaves the CPUs to the servers under test while the journal and `accounts.seq` stay right
for the hub's gap checks), notes time.time() right after COMMIT returns, and publishes the event
through creditstream's own RedisBroker, as an instance does after its commit. The subscriber process
notes time.time() when each event arrives; latency = arrival − commit. The bare relay gets the
same writer and the same messages on the same channels.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import options, rawsql
from bench.database import account_ids, audit_database, bench_database, seed_accounts
from bench.http_holds import parse_variants
from bench.measure import (
    CpuMeter,
    cdf_points,
    contention_note,
    machine_info,
    raise_nofile,
    rss_kib,
    service_versions,
    summarize,
)
from bench.results import Goal, Progress, Result, Row
from bench.servers import (
    BENCH_SECRET,
    VARIANTS,
    UvicornServer,
    add_ws_argument,
    stop_servers,
    user_tokens,
    ws_label,
)
from bench.subscribers import DEFAULT_CLIENT, FleetGroup, add_client_argument

P99_GOAL_MS = 10.0
KIB_PER_CONNECTION_GOAL = 16.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--subscribers",
        type=int,
        default=1000,
        help="idle WebSocket subscribers over the two instances, one account "
        "each (default 1000; try 10000)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=500.0,
        help="events committed per second (default 500; try 2000)",
    )
    options.add_duration(parser, 4.0, "measured seconds of events")
    options.add_warmup(parser, 1.0, "seconds of events before the measured ones")
    options.add_variants(parser, "asyncio")
    options.add_gc_freeze(parser)
    parser.add_argument(
        "--writers",
        type=int,
        default=8,
        help="concurrent commits of the writer, and its pool size (default 8)",
    )
    options.add_db_pool(parser, 5, "each instance")
    options.add_connect_concurrency(parser)
    options.add_settle(
        parser, 1.0, "seconds to wait before each RSS reading and for the last events"
    )
    parser.add_argument(
        "--resync-interval",
        type=float,
        default=None,
        help="CREDITSTREAM_RESYNC_INTERVAL_S of the instances (default: the "
        "app's own, 0.5 s): how often each instance re-reads the journal "
        "heads of all its feeds",
    )
    parser.add_argument(
        "--logs",
        type=Path,
        default=None,
        help="keep the instances' and fleets' logs in this directory (default: "
        "a temporary one, removed at the end)",
    )
    add_ws_argument(parser)
    add_client_argument(parser)


class Writer:
    """Commits holds at a target rate and publishes each event as an instance would."""

    def __init__(self, dsn: str, redis_url: str, concurrency: int) -> None:
        self.dsn, self.redis_url, self.concurrency = dsn, redis_url, concurrency

    async def open(self) -> Writer:
        import asyncpg

        from realtime.brokers import broker_for

        self.pool = await asyncpg.create_pool(
            self.dsn, min_size=self.concurrency, max_size=self.concurrency
        )

        async def ignore_message(account_id: str, text: str) -> None:
            return None

        async def ignore_resync() -> None:
            return None

        self.broker = broker_for(self.redis_url)
        await self.broker.start(ignore_message, ignore_resync)
        return self

    async def close(self) -> None:
        await self.broker.stop()
        await self.pool.close()

    async def drive(
        self, ids: list[str], rate: float, seconds: float, seed: int = 0
    ) -> dict[str, Any]:
        """`self.concurrency` workers take the scheduled slots in turn. A worker that is behind
        commits at once, so when the target rate is out of reach the achieved rate shows it,
        and no backlog of tasks builds up in this loop to delay the broker's publisher task
        (which would count as push latency)."""
        loop = asyncio.get_running_loop()
        rng = random.Random(seed)
        commits: dict[tuple[str, int], float] = {}
        failures: list[str] = []
        total = max(1, int(rate * seconds))
        next_slot = 0
        start = loop.time()
        started_wall = time.time()

        async def worker() -> None:
            nonlocal next_slot
            async with self.pool.acquire() as conn:
                while next_slot < total:
                    slot, next_slot = next_slot, next_slot + 1
                    delay = start + slot / rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    account_id = rng.choice(ids)
                    try:
                        event = await rawsql.hold_in_one_statement(
                            conn, account_id, 1, datetime.now(UTC)
                        )
                    except Exception as exc:
                        failures.append(repr(exc)[:200])
                        continue
                    commits[(account_id, event["seq"])] = time.time()
                    self.broker.publish(account_id, json.dumps(event, separators=(",", ":")))

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        last = max(commits.values(), default=started_wall)
        return {
            "commits": commits,
            "started": started_wall,
            "failures": failures,
            "achieved_per_s": len(commits) / max(1e-9, last - started_wall),
        }


async def one_run(
    side: str,
    variant: str,
    args: argparse.Namespace,
    dsn: str,
    ids: list[str],
    tokens: list[str],
    writer: Writer,
    logs: Path,
    say: Progress,
) -> dict[str, Any]:
    if side == "creditstream":
        app = "bench.gc_frozen:app" if args.gc_freeze else "asgi:app"
        env = {
            "CREDITSTREAM_DATABASE_URL": dsn,
            "CREDITSTREAM_REDIS_URL": args.redis_url,
            "CREDITSTREAM_USER_TOKEN_SECRET": BENCH_SECRET,
            "CREDITSTREAM_RESULTS_DIR": str(logs / "results"),
            "CREDITSTREAM_DB_POOL_SIZE": str(args.db_pool),
        }
        if args.resync_interval is not None:
            env["CREDITSTREAM_RESYNC_INTERVAL_S"] = str(args.resync_interval)
    else:
        app, env = "bench.bare_push:app", {"BENCH_REDIS_URL": args.redis_url}
    servers = [
        UvicornServer(app, env, variant, logs, f"push-{side}-{variant}-{i}", ws=args.ws)
        for i in range(2)
    ]
    fleet: FleetGroup | None = None
    try:
        await asyncio.gather(*(s.start() for s in servers))
        targets = []
        for i, (account_id, token) in enumerate(zip(ids, tokens, strict=True)):
            base = servers[i % 2].url.replace("http://", "ws://") + "/v1/stream"
            url = f"{base}?token={token}" if side == "creditstream" else base
            targets.append([url, account_id])
        fleet = await FleetGroup(
            targets,
            logs,
            f"fleet-{side}-{variant}",
            concurrency=args.connect_concurrency,
            client=args.client,
        ).start()
        warm = max(2, min(100, len(ids) // 10))
        first = await fleet.connect(warm)
        await asyncio.sleep(args.settle)
        before = {s.pid: rss_kib(s.pid) for s in servers}
        connected = await fleet.connect(len(ids) - warm)
        if connected["failed"]:
            raise RuntimeError(
                f"{connected['failed']} subscribers failed to connect: {connected['errors']}"
            )
        await asyncio.sleep(args.settle * 1.5)
        after = {s.pid: rss_kib(s.pid) for s in servers}
        added = len(ids) - warm
        kib_per_connection = sum(after[p] - before[p] for p in after) / max(1, added)
        fleet_cpu_ms = 1000.0 * connected["cpu_s"] / max(1, added)
        say(
            f"push {variant} {side}: {connected['total']} subscribers in "
            f"{first['seconds'] + connected['seconds']:.1f} s, "
            f"{kib_per_connection:.1f} KiB per connection, fleet CPU "
            f"{fleet_cpu_ms:.2f} ms per connection ({args.client})"
        )

        meter = CpuMeter({"instance_1": servers[0].pid, "instance_2": servers[1].pid, **fleet.pids})
        meter.start()
        driven = await writer.drive(ids, args.rate, args.warmup + args.duration)
        cores = meter.stop()
        await asyncio.sleep(max(0.5, args.settle))  # let the last events arrive
        report = await fleet.report()
        counters = await push_counters(servers) if side == "creditstream" else {}
    finally:
        if fleet is not None:
            await fleet.close()
        await stop_servers(servers)

    measure_from = driven["started"] + args.warmup
    commits = {k: t for k, t in driven["commits"].items() if t >= measure_from}
    latencies = []
    for account_id, seq, arrived in report["receipts"]:
        committed = commits.get((account_id, seq))
        if committed is not None:
            latencies.append((arrived - committed) * 1000.0)
    delivered = 100.0 * len(latencies) / max(1, len(commits))
    server_cores = cores.get("instance_1", 0.0) + cores.get("instance_2", 0.0)
    measured = {
        "subscribers": connected["total"],
        "kib_per_connection": kib_per_connection,
        "rss_kib_before": before,
        "rss_kib_after": after,
        "connect_seconds": first["seconds"] + connected["seconds"],
        "fleet_cpu_ms_per_connection": fleet_cpu_ms,
        "events_measured": len(commits),
        "events_received": len(latencies),
        "delivered_pct": delivered,
        "achieved_per_s": driven["achieved_per_s"],
        "writer_failures": driven["failures"][:3],
        "latency_ms": summarize(latencies),
        "latency_cdf": cdf_points(latencies),
        "cpu_cores": cores,
        "server_cores": server_cores,
        "closed_during_run": report["closed"],
        "instance_counters": counters,
    }
    lat = measured["latency_ms"]
    say(
        f"push {variant} {side}: {len(latencies)}/{len(commits)} events, p50 "
        f"{lat['p50'] or 0:.2f} ms, p99 {lat['p99'] or 0:.2f} ms, max {lat['max'] or 0:.1f} ms, "
        f"{driven['achieved_per_s']:.0f} commits/s, cpu {cores}"
        + (f", counters {counters}" if counters else "")
    )
    return measured


PUSH_COUNTERS = ("creditstream_events_delivered_total", "creditstream_events_gap_filled_total")


async def push_counters(servers: list[UvicornServer]) -> dict[str, float]:
    """The instances' delivery counters summed (from /metrics): how many events reached their
    subscribers through the journal (gap fill, journal check) rather than through Redis."""
    import httpx

    totals = dict.fromkeys(PUSH_COUNTERS, 0.0)
    async with httpx.AsyncClient(timeout=10.0) as client:
        for server in servers:
            text = (await client.get(server.url + "/metrics")).text
            for line in text.splitlines():
                name, _, value = line.partition(" ")
                if name in totals:
                    totals[name] += float(value)
    return totals


async def run(args: argparse.Namespace, say: Progress) -> Result:
    variants = parse_variants(args.variants)
    nofile = raise_nofile(args.subscribers * 2 + 4096)  # the servers inherit it
    if args.subscribers // 2 + 256 > nofile:
        raise ValueError(
            f"{args.subscribers} subscribers need {args.subscribers // 2 + 256} "
            f"open files per instance; RLIMIT_NOFILE allows {nofile} here"
        )
    params = {
        "subscribers": args.subscribers,
        "instances": 2,
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "variants": variants,
        "gc_freeze": args.gc_freeze,
        "writers": args.writers,
        "db_pool": args.db_pool,
        "ws": args.ws,
        "resync_interval_s": args.resync_interval,
        "client": args.client,
        "rlimit_nofile": nofile,
    }
    title = (
        f"push: {args.subscribers:,} idle subscribers on 2 instances + Redis, "
        f"{args.rate:,.0f} events/s target"
        + (" (gc.freeze)" if args.gc_freeze else "")
        + ws_label(args.ws)
        + (f" (--client {args.client})" if args.client != DEFAULT_CLIENT else "")
        + (f" (resync every {args.resync_interval:g} s)" if args.resync_interval else "")
    )
    started = time.monotonic()
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="creditstream-bench-") as tmp:
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        async with bench_database(args.pg_admin, args.database_url) as dsn:
            pg_version, redis_version = await service_versions(dsn, args.redis_url)
            # a tag of this run in the account ids keeps its Redis channels its own
            ids = account_ids(f"bpush{uuid.uuid4().hex[:6]}", args.subscribers)
            await seed_accounts(dsn, ids)
            tokens = user_tokens(ids)
            writer = await Writer(dsn, args.redis_url, args.writers).open()
            try:
                for variant in variants:
                    runs[variant] = {}
                    for side in ("ceiling", "creditstream"):
                        runs[variant][side] = await one_run(
                            side, variant, args, dsn, ids, tokens, writer, logs, say
                        )
            finally:
                await writer.close()
            audit = await audit_database(dsn)
    result = Result("push", title, params, machine=machine_info(pg_version, redis_version))
    for variant in variants:
        label = "+".join(VARIANTS[variant])
        cs, ce = runs[variant]["creditstream"], runs[variant]["ceiling"]
        result.rows += [
            Row(
                f"commit→client p50, ms ({label})", cs["latency_ms"]["p50"], ce["latency_ms"]["p50"]
            ),
            Row(
                f"commit→client p99, ms ({label})",
                cs["latency_ms"]["p99"],
                ce["latency_ms"]["p99"],
                Goal("value", "<=", P99_GOAL_MS, "ms"),
            ),
            Row(
                f"commit→client max, ms ({label})", cs["latency_ms"]["max"], ce["latency_ms"]["max"]
            ),
            Row(
                f"events delivered, % ({label})",
                cs["delivered_pct"],
                ce["delivered_pct"],
                Goal("value", ">=", 100.0, "%"),
            ),
            Row(
                f"server RSS per idle connection, KiB ({label})",
                cs["kib_per_connection"],
                ce["kib_per_connection"],
                Goal("value", "<=", KIB_PER_CONNECTION_GOAL, "KiB"),
            ),
            Row(
                f"servers' CPU during events, cores ({label})",
                cs["server_cores"],
                ce["server_cores"],
            ),
            Row(
                f"other processes' CPU, cores ({label})",
                cs["cpu_cores"].get("other"),
                ce["cpu_cores"].get("other"),
            ),
            Row(f"events committed/s ({label})", cs["achieved_per_s"], ce["achieved_per_s"]),
            Row(
                f"time to subscribe all, s ({label})", cs["connect_seconds"], ce["connect_seconds"]
            ),
        ]
        for side, measured in runs[variant].items():
            if measured["writer_failures"]:
                result.notes.append(
                    f"{side} ({variant}) writer failures: {measured['writer_failures']}"
                )
            if measured["achieved_per_s"] < 0.95 * args.rate:
                result.notes.append(
                    f"{side} ({variant}): the writer reached only "
                    f"{measured['achieved_per_s']:.0f} of {args.rate:.0f} "
                    "commits/s"
                )
    result.notes.append(
        "latency = arrival at the subscriber process − the writer's COMMIT "
        "returning (both time.time() on this machine); the ceiling is a bare "
        "Redis→WebSocket relay on the same uvicorn, fed by the same writer"
    )
    if audit["mismatches"]:
        result.notes.append(f"AUDIT FAILED after the run: {audit['first']}")
    if note := contention_note(
        m["cpu_cores"].get("other") for sides in runs.values() for m in sides.values()
    ):
        result.notes.append(note)
    result.details = {"runs": runs, "audit": audit}
    result.elapsed_s = time.monotonic() - started
    return result
