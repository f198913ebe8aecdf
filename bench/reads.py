"""`creditstream bench reads`: what one read costs the primary's CPU when the instance reads
from the primary alone, and when it reads from a streaming standby (CREDITSTREAM_DATABASE_READ_URL)
— where the primary still answers each read's `pg_current_wal_lsn()` (shared by the reads that
arrive together, see storage/standby.py).

It starts a primary and its standby of its own (bench/replication.py: initdb as `postgres`, free
ports, removed afterwards), one instance per configuration, and clients reading account snapshots
and entries pages of seeded accounts. The primary's CPU is its postmaster's and backends' time
from /proc, ended backends included (the postmaster's reaped-children time), less its rate
with no reads (measured before each phase): what the reads cost, not what runs anyway."""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.database import account_ids, create_server_key, seed_accounts
from bench.measure import CLOCK_TICKS, machine_info, service_versions
from bench.options import add_accounts, add_duration, add_warmup
from bench.replication import ReplicatedPostgres
from bench.results import Goal, Progress, Result, Row
from bench.servers import BENCH_SECRET, UvicornServer, child_pids

CONFIGURATIONS = ("primary only", "with a standby")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_duration(parser, 10.0, "seconds of reads measured per configuration")
    add_warmup(parser, 2.0, "seconds of reads before each measurement")
    parser.add_argument(
        "--idle",
        type=float,
        default=3.0,
        help="seconds without reads measured before each phase, whose CPU rate is subtracted "
        "(default 3)",
    )
    add_accounts(parser, 500, "read")
    parser.add_argument(
        "--clients",
        default="1,32",
        help="concurrent HTTP clients reading, comma-separated: each measured (default 1,32)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="alternating rounds of both configurations (default 2)",
    )


def cluster_cpu_s(data_dir: Path) -> float:
    """CPU seconds of a cluster: its postmaster, live backends, and backends already reaped."""
    pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own_and_reaped = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    children = 0
    for child in child_pids(pid):
        try:
            stat = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended between the listing and the read: counted once reaped
        children += int(stat[11]) + int(stat[12])
    return (own_and_reaped + children) / CLOCK_TICKS


async def _reads(url: str, key: str, ids: list[str], clients: int, seconds: float) -> int:
    """Reads answered 200 within `seconds`, by `clients` each reading in turn."""
    done = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients)
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=auth, limits=limits, timeout=30) as http:

        async def client() -> None:
            nonlocal done
            pick = random.Random()
            while time.monotonic() < deadline:
                account = pick.choice(ids)
                path = f"/v1/accounts/{account}"
                if pick.random() < 0.5:
                    path += "/entries?limit=10"
                response = await http.get(path)
                if response.status_code != 200:
                    raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:200]}")
                done += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    return done


def _served(url: str) -> dict[str, int]:
    """The instance's standby-read counters, and its round trips for the primary's position."""
    text = httpx.get(url + "/metrics", timeout=5).text
    served: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "creditstream_standby_reads_total":
                served[f"{s.labels['served_by']}/{s.labels['reason']}"] = int(s.value)
            elif s.name == "creditstream_standby_position_fetches_total":
                served["position round trips"] = int(s.value)
    return served


async def _measure(
    cluster: ReplicatedPostgres, url: str, key: str, ids: list[str], clients: int, args: Any
) -> dict[str, float]:
    """One phase of reads, less what the clusters spend with no reads over the same time (the
    instances' own background work: journal checks, sweeps; checkpoints, WAL sending)."""
    idle = await _cpu_during(cluster, asyncio.sleep(args.idle))
    await _reads(url, key, ids, clients, args.warmup)
    busy = await _cpu_during(cluster, _reads(url, key, ids, clients, args.duration))
    scale = busy["seconds"] / idle["seconds"]
    return {
        "reads": busy["result"],
        "seconds": busy["seconds"],
        "primary_cpu_s": max(0.0, busy["primary"] - scale * idle["primary"]),
        "standby_cpu_s": max(0.0, busy["standby"] - scale * idle["standby"]),
        "primary_idle_cpu_s": scale * idle["primary"],
    }


async def _cpu_during(cluster: ReplicatedPostgres, work: Awaitable[Any]) -> dict[str, Any]:
    primary0, standby0 = cluster_cpu_s(cluster.primary_dir), cluster_cpu_s(cluster.standby_dir)
    started = time.monotonic()
    result = await work
    return {
        "result": result,
        "seconds": time.monotonic() - started,
        "primary": cluster_cpu_s(cluster.primary_dir) - primary0,
        "standby": cluster_cpu_s(cluster.standby_dir) - standby0,
    }


def _totals(phases: list[dict[str, float]]) -> dict[str, float]:
    reads = sum(p["reads"] for p in phases)
    primary, standby = (
        sum(p["primary_cpu_s"] for p in phases),
        sum(p["standby_cpu_s"] for p in phases),
    )
    return {
        "reads": reads,
        "reads_per_s": reads / sum(p["seconds"] for p in phases),
        "primary_cpu_s": primary,
        "standby_cpu_s": standby,
        "primary_idle_cpu_s": sum(p["primary_idle_cpu_s"] for p in phases),
        "primary_cpu_us_per_read": 1e6 * primary / max(reads, 1),
        "standby_cpu_us_per_read": 1e6 * standby / max(reads, 1),
    }


async def run(args: argparse.Namespace, say: Progress) -> Result:
    started = time.monotonic()
    cluster = ReplicatedPostgres()
    concurrencies = [int(c) for c in str(args.clients).split(",")]
    say("starting a PostgreSQL primary and its streaming standby")
    try:
        await asyncio.to_thread(cluster.start)
        name = await cluster.create_database()
        primary_url = cluster.url(cluster.primary_port, name)
        standby_url = cluster.url(cluster.standby_port, name)
        from storage.migrate import upgrade_async

        await upgrade_async(primary_url)
        ids = account_ids("brd", args.accounts)
        await seed_accounts(primary_url, ids)
        key = await create_server_key(primary_url)
        pg_version, _ = await service_versions(cluster.dsn(cluster.primary_port), None)
        phases: dict[str, list[dict[str, float]]] = {}
        with tempfile.TemporaryDirectory(prefix="creditstream-bench-") as tmp:
            servers: dict[str, UvicornServer] = {}
            try:
                for label in CONFIGURATIONS:  # both run throughout: same background work
                    env = {
                        "CREDITSTREAM_DATABASE_URL": primary_url,
                        "CREDITSTREAM_USER_TOKEN_SECRET": BENCH_SECRET,
                        "CREDITSTREAM_RESULTS_DIR": str(Path(tmp) / "results"),
                    }
                    if label == "with a standby":
                        env["CREDITSTREAM_DATABASE_READ_URL"] = standby_url
                    servers[label] = await UvicornServer(
                        "asgi:app", env, "asyncio", Path(tmp), name=label.replace(" ", "-")
                    ).start()
                # alternating rounds, so that drift on a shared machine falls on both sides
                for round_ in range(args.rounds):
                    for clients in concurrencies:
                        for label, server in servers.items():
                            say(f"round {round_ + 1}, {clients} clients, {label}")
                            phase = await _measure(cluster, server.url, key, ids, clients, args)
                            phases.setdefault(f"{clients}/{label}", []).append(phase)
                served = _served(servers["with a standby"].url)
            finally:
                for server in servers.values():
                    server.stop()
    finally:
        await asyncio.to_thread(cluster.stop)
    result = Result(
        "reads",
        f"reads: GET an account snapshot or entries page, {args.accounts:,} accounts — the "
        f"primary's CPU per read with and without a standby",
        {
            "clients": args.clients,
            "accounts": args.accounts,
            "duration_s": args.duration,
            "rounds": args.rounds,
        },
        machine=machine_info(pg_version),
    )
    result.caption = "ratio = with a standby ÷ primary only"
    runs = {key: _totals(each) for key, each in phases.items()}
    for clients in concurrencies:
        alone, standby = runs[f"{clients}/primary only"], runs[f"{clients}/with a standby"]
        result.rows += [
            Row(
                f"primary CPU per read, {clients} clients",
                standby["primary_cpu_us_per_read"],
                alone["primary_cpu_us_per_read"],
                Goal("ratio", "<=", 0.5),
                "µs",
            ),
            Row(f"reads/s, {clients} clients", standby["reads_per_s"], alone["reads_per_s"]),
            Row(
                f"standby CPU per read, {clients} clients",
                standby["standby_cpu_us_per_read"],
                alone["primary_cpu_us_per_read"],
                unit="µs",
            ),
        ]
    routed = sum(v for k, v in served.items() if "/" in k)
    result.rows += [
        Row(
            "reads served by the standby",
            100 * served.get("standby/caught_up", 0) / max(routed, 1),
            None,
            unit="%",
        ),
        Row(
            "standby reads per primary position round trip",
            routed / max(served.get("position round trips", 0), 1),
            None,
        ),
    ]
    result.details = {"runs": runs, "phases": phases, "served": served}
    result.elapsed_s = time.monotonic() - started
    return result
