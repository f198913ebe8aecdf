"""One side of `bench connections` (creditstream or the ceiling) for one variant: an instance
takes the subscribers in steps, its VmRSS read after each, until the target or the budget; what
it held within the budget, RSS per connection (the slope through the steps) and the projection."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from bench.fleet_processes import FleetGroup
from bench.measure import process_cpu_s, rss_kib, slope
from bench.results import Progress
from bench.servers import (
    GranianServer,
    PicowsRelayServer,
    UvicornServer,
    stop_servers,
    stream_app,
)


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
    app, env = stream_app(side, args, dsn, logs)
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
