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
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import options
from bench.database import account_ids, bench_database, seed_accounts
from bench.http_holds import parse_variants
from bench.measure import machine_info, process_cpu_s, raise_nofile, rss_kib, service_versions
from bench.results import Goal, Progress, Result, Row
from bench.servers import (
    BENCH_SECRET,
    VARIANTS,
    GranianServer,
    PicowsRelayServer,
    UvicornServer,
    add_ws_argument,
    stop_servers,
    user_tokens,
    ws_label,
)
from bench.subscribers import DEFAULT_CLIENT, FleetGroup, add_client_argument


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


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return None if var == 0 else sum((x - mx) * (y - my) for x, y in points) / var


async def one_run(
    side: str,
    variant: str,
    args: argparse.Namespace,
    dsn: str,
    ids: list[str],
    tokens: list[str],
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
    else:
        app, env = "bench.bare_push:app", {"BENCH_REDIS_URL": args.redis_url}
    kind = (
        PicowsRelayServer
        if side == "ceiling" and args.ceiling == "picows"
        else GranianServer
        if args.server == "granian"
        else UvicornServer
    )
    server = kind(app, env, variant, logs, f"conn-{side}-{variant}", ws=args.ws)
    budget_kib = args.budget_mib * 1024
    fleet: FleetGroup | None = None
    steps: list[dict[str, Any]] = []
    try:
        await server.start()
        base = server.url.replace("http://", "ws://") + "/v1/stream"
        targets = [
            [f"{base}?token={t}" if side == "creditstream" else base, a]
            for a, t in zip(ids, tokens, strict=True)
        ]
        fleet = await FleetGroup(
            targets,
            logs,
            f"fleet-{side}-{variant}",
            concurrency=args.connect_concurrency,
            client=args.client,
        ).start()
        target = len(targets)
        warm = max(1, min(20, target // 20))
        await fleet.connect(warm)
        await asyncio.sleep(args.settle)
        steps.append({"connections": warm, "rss_kib": rss_kib(server.pid)})
        per_step = max(1, (target - warm + args.steps - 1) // args.steps)
        connected = warm
        failed = 0
        cpu_before = process_cpu_s(server.pid)
        connecting_s = 0.0
        fleet_cpu_s = 0.0
        while connected < target:
            answer = await fleet.connect(min(per_step, target - connected))
            connected, failed = answer["total"], answer["failed"]
            connecting_s += answer["seconds"]
            fleet_cpu_s += answer["cpu_s"]
            subscribe_cpu_s = process_cpu_s(server.pid) - cpu_before
            await asyncio.sleep(args.settle)
            steps.append(
                {
                    "connections": connected,
                    "rss_kib": rss_kib(server.pid),
                    "seconds": answer["seconds"],
                }
            )
            if failed or steps[-1]["rss_kib"] > budget_kib:
                break
        errors = answer.get("errors", {}) if connected > warm else {}
    finally:
        if fleet is not None:
            await fleet.close()
        await stop_servers([server])
    within = [s for s in steps if s["rss_kib"] <= budget_kib]
    held = max((s["connections"] for s in within), default=0)
    per_conn = slope([(s["connections"], s["rss_kib"]) for s in steps])
    baseline = steps[0]["rss_kib"] - (per_conn or 0) * steps[0]["connections"]
    projected = ((budget_kib - baseline) / per_conn) if per_conn and per_conn > 0 else None
    added = max(1, connected - warm)
    cpu_per_subscribe_ms = 1000.0 * subscribe_cpu_s / added
    say(
        f"connections {variant} {side}: {connected} connected ({failed} failed) at "
        f"{added / max(1e-9, connecting_s):.0f}/s, {cpu_per_subscribe_ms:.1f} ms server CPU each, "
        f"{1000.0 * fleet_cpu_s / added:.2f} ms fleet CPU each ({args.client})"
    )
    say(
        f"connections {variant} {side}: {connected} connected ({failed} failed), RSS "
        f"{steps[-1]['rss_kib'] / 1024:.0f} MiB, {per_conn or 0:.1f} KiB each, "
        f"{held} within {args.budget_mib:.0f} MiB, projected {projected or 0:,.0f}"
    )
    return {
        "steps": steps,
        "held_within_budget": held,
        "connected": connected,
        "failed": failed,
        "errors": errors,
        "kib_per_connection": per_conn,
        "baseline_rss_mib": baseline / 1024,
        "projected_within_budget": projected,
        "subscribes_per_s": added / max(1e-9, connecting_s),
        "server_cpu_per_subscribe_ms": cpu_per_subscribe_ms,
        "fleet_cpu_per_subscribe_ms": 1000.0 * fleet_cpu_s / added,
    }


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
    result = Result("connections", title, params, machine=machine_info(pg_version, redis_version))
    for variant in variants:
        label = (
            "+".join(VARIANTS[variant])
            if args.server == "uvicorn"
            else f"{args.server}+{VARIANTS[variant][0]}"
        )
        cs, ce = runs[variant]["creditstream"], runs[variant]["ceiling"]
        result.rows += [
            Row(
                f"subscribers held within {args.budget_mib:,.0f} MiB ({label})",
                cs["held_within_budget"],
                ce["held_within_budget"],
                Goal("value", ">=", args.target, "subscribers"),
            ),
            Row(
                f"projected subscribers within {args.budget_mib:,.0f} MiB ({label})",
                cs["projected_within_budget"],
                ce["projected_within_budget"],
            ),
            Row(
                f"RSS per idle connection, KiB ({label})",
                cs["kib_per_connection"],
                ce["kib_per_connection"],
            ),
            Row(
                f"RSS before connections, MiB ({label})",
                cs["baseline_rss_mib"],
                ce["baseline_rss_mib"],
            ),
            Row(
                f"subscribes/s while connecting ({label})",
                cs["subscribes_per_s"],
                ce["subscribes_per_s"],
            ),
            Row(
                f"server CPU per subscribe, ms ({label})",
                cs["server_cpu_per_subscribe_ms"],
                ce["server_cpu_per_subscribe_ms"],
            ),
        ]
        for side, measured in runs[variant].items():
            if measured["failed"]:
                result.notes.append(
                    f"{side} ({variant}): {measured['failed']} connections "
                    f"failed: {measured['errors']}"
                )
    if reachable < args.target:
        result.notes.append(
            f"RLIMIT_NOFILE is {nofile} here and cannot be raised, so one "
            f"instance can hold at most ~{reachable:,} sockets: the run stopped "
            f"at {reachable:,}; memory is not what limits it (see the "
            "projection)"
        )
    result.notes.append(
        "projected = (budget − RSS before connections) ÷ RSS per connection, "
        "the slope of a least-squares line through the steps"
    )
    result.details = {"runs": runs}
    result.elapsed_s = time.monotonic() - started
    return result
