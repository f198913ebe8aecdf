"""`bench connections`: how many idle subscribers one instance holds within a memory budget.

One instance (`uvicorn asgi:app`, PostgreSQL, Redis) takes subscribers in steps from a separate
process (bench/subscribers.py: one account each, user tokens, the SDK's handshake and pings;
a picows client, or `--client websockets`); after each step its VmRSS is read. The run stops at
the target or when RSS passes the budget.
Reported: subscribers held with RSS within the budget, RSS per connection (slope of a
least-squares line through the steps), and the projection budget ÷ slope. The ceiling is the
bare relay (bench/bare_push.py) under the same server, measured the same way, or with
`--ceiling picows` the same relay on picows (bench/picows_relay.py: the WebSocket layer alone,
no ASGI). `--server granian` runs both ASGI apps under granian instead of uvicorn.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import options
from bench.connections_report import connections_result
from bench.connections_side import one_run
from bench.database import account_ids, bench_database, seed_accounts
from bench.fleet_processes import add_client_argument
from bench.http_holds import parse_variants
from bench.measure import machine_info, raise_nofile, service_versions
from bench.results import Progress, Result
from bench.servers import add_ws_argument, user_tokens, ws_label
from bench.subscribers import DEFAULT_CLIENT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target", type=int, default=2000, help="subscribers to reach (default 2000; try 20000)"
    )
    parser.add_argument(
        "--budget-mib",
        type=float,
        default=256.0,
        help="the instance's RSS budget in MiB (default 256; try 2048)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=5,
        help="connect the target in this many steps, reading RSS after each (default 5)",
    )
    options.add_settle(parser, 0.5, "seconds to wait after a step before reading RSS")
    options.add_variants(parser, "asyncio")
    options.add_gc_freeze(parser)
    options.add_db_pool(parser, 5, "the instance")
    options.add_connect_concurrency(parser)
    add_ws_argument(parser)
    parser.add_argument(
        "--server",
        default="uvicorn",
        choices=("uvicorn", "granian"),
        help="the ASGI server of both sides (default uvicorn; granian: its own "
        "HTTP and WebSocket layer, the variant's event loop, one worker)",
    )
    parser.add_argument(
        "--ceiling",
        default="bare",
        choices=("bare", "picows"),
        help="bare: bench/bare_push.py under --server (default); picows: the same "
        "relay on picows, no ASGI (bench/picows_relay.py)",
    )
    add_client_argument(parser)


FDS_BESIDES_CONNECTIONS = 256


async def run(args: argparse.Namespace, say: Progress) -> Result:
    variants = parse_variants(args.variants)
    nofile = raise_nofile(args.target * 2 + 4096)
    # one instance needs a descriptor per connection plus its pools, logs and listener; where
    # the hard limit cannot be raised (no CAP_SYS_RESOURCE) it caps what the run can show
    reachable = min(args.target, nofile - FDS_BESIDES_CONNECTIONS)
    params = {
        "target": args.target,
        "connected_at_most": reachable,
        "budget_mib": args.budget_mib,
        "steps": args.steps,
        "variants": variants,
        "gc_freeze": args.gc_freeze,
        "db_pool": args.db_pool,
        "ws": args.ws,
        "server": args.server,
        "ceiling": args.ceiling,
        "client": args.client,
        "rlimit_nofile": nofile,
    }
    title = (
        f"connections: idle subscribers on one instance within {args.budget_mib:,.0f} MiB "
        f"(target {args.target:,})"
        + (" (gc.freeze)" if args.gc_freeze else "")
        + ws_label(args.ws)
        + (f" (--server {args.server})" if args.server != "uvicorn" else "")
        + (f" (--ceiling {args.ceiling})" if args.ceiling != "bare" else "")
        + (f" (--client {args.client})" if args.client != DEFAULT_CLIENT else "")
    )
    started = time.monotonic()
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="creditstream-bench-") as tmp:
        logs = Path(tmp)
        async with bench_database(args.pg_admin, args.database_url) as dsn:
            pg_version, redis_version = await service_versions(dsn, args.redis_url)
            ids = account_ids(f"bconn{uuid.uuid4().hex[:6]}", reachable)
            await seed_accounts(dsn, ids)
            tokens = user_tokens(ids)
            for variant in variants:
                runs[variant] = {}
                for side in ("ceiling", "creditstream"):
                    runs[variant][side] = await one_run(
                        side, variant, args, dsn, ids, tokens, logs, say
                    )
    result = connections_result(
        args, title, params, machine_info(pg_version, redis_version), runs, nofile, reachable
    )
    result.elapsed_s = time.monotonic() - started
    return result
