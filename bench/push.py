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
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import options
from bench.database import account_ids, audit_database, bench_database, seed_accounts
from bench.fleet_processes import add_client_argument
from bench.http_holds import parse_variants
from bench.measure import machine_info, raise_nofile, service_versions
from bench.push_report import push_result
from bench.push_side import one_run
from bench.push_writer import Writer
from bench.results import Progress, Result
from bench.servers import add_ws_argument, user_tokens, ws_label
from bench.subscribers import DEFAULT_CLIENT


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
        "--watch-loop",
        action="store_true",
        help="serve creditstream as bench.loop_watch:app: every older-generation collection "
        "and every stall of the event loop of 5 ms or more in the instances' logs, with the "
        "stacks sampled inside it; each event's commit time, instance and latency in --logs "
        "as latencies-SIDE-VARIANT.json",
    )
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
        "watch_loop": args.watch_loop,
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
    result = push_result(args, title, params, machine_info(pg_version, redis_version), runs, audit)
    result.elapsed_s = time.monotonic() - started
    return result
