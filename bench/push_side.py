"""One side of `bench push` (creditstream or the ceiling, the bare relay) for one uvicorn
variant: two instances, the subscriber fleet spread evenly over them, server memory per idle
connection, then the writer's events and each one's commit-to-client latency."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from bench.fleet_processes import FleetGroup
from bench.measure import CpuMeter, cdf_points, rss_kib, summarize
from bench.push_writer import Writer
from bench.results import Progress
from bench.servers import UvicornServer, stop_servers, stream_app


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
    app, env = stream_app(side, args, dsn, logs)
    if side == "creditstream" and args.resync_interval is not None:
        env["CREDITSTREAM_RESYNC_INTERVAL_S"] = str(args.resync_interval)
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
        connecting = CpuMeter({"instance_1": servers[0].pid, "instance_2": servers[1].pid})
        connecting.start()
        connected = await fleet.connect(len(ids) - warm)
        connect_cores = connecting.stop()
        if connected["failed"]:
            raise RuntimeError(
                f"{connected['failed']} subscribers failed to connect: {connected['errors']}"
            )
        await asyncio.sleep(args.settle * 1.5)
        after = {s.pid: rss_kib(s.pid) for s in servers}
        added = len(ids) - warm
        kib_per_connection = sum(after[p] - before[p] for p in after) / max(1, added)
        fleet_cpu_ms = 1000.0 * connected["cpu_s"] / max(1, added)
        # the instances' CPU per connection opened, from their share of the phase's cores
        server_connect_ms = (
            1000.0
            * connected["seconds"]
            * (connect_cores["instance_1"] + connect_cores["instance_2"])
            / max(1, added)
        )
        say(
            f"push {variant} {side}: {connected['total']} subscribers in "
            f"{first['seconds'] + connected['seconds']:.1f} s, "
            f"{kib_per_connection:.1f} KiB per connection, fleet CPU "
            f"{fleet_cpu_ms:.2f} ms per connection ({args.client}), servers' CPU "
            f"{server_connect_ms:.2f} ms per connection, cpu while connecting {connect_cores}"
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
    timeline = []  # commit time, instance, latency: set beside the instances' stalls
    instance = {account_id: i % 2 for i, account_id in enumerate(ids)}
    for account_id, seq, arrived in report["receipts"]:
        committed = commits.get((account_id, seq))
        if committed is not None:
            latencies.append((arrived - committed) * 1000.0)
            timeline.append((committed, instance[account_id], latencies[-1]))
    if getattr(args, "watch_loop", False):
        (logs / f"latencies-{side}-{variant}.json").write_text(
            json.dumps({"ports": [s.port for s in servers], "events": sorted(timeline)})
        )
    delivered = 100.0 * len(latencies) / max(1, len(commits))
    server_cores = cores.get("instance_1", 0.0) + cores.get("instance_2", 0.0)
    measured = {
        "subscribers": connected["total"],
        "kib_per_connection": kib_per_connection,
        "rss_kib_before": before,
        "rss_kib_after": after,
        "connect_seconds": first["seconds"] + connected["seconds"],
        "fleet_cpu_ms_per_connection": fleet_cpu_ms,
        "server_cpu_ms_per_connection": server_connect_ms,
        "connect_cpu_cores": connect_cores,
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
