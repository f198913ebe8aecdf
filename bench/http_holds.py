"""`bench http`: `POST /v1/holds` through uvicorn (`uvicorn asgi:app` on PostgreSQL) against a
bare Starlette endpoint running the same SQL (bench/bare_http.py) served by uvicorn the same way.

The load comes from another process (bench/loadgen.py) with many keep-alive connections. Each
uvicorn variant (asyncio + h11, uvloop + httptools) is measured on both sides.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH_SECRET,
    ROOT,
    VARIANTS,
    CpuMeter,
    Goal,
    Progress,
    Result,
    Row,
    UvicornServer,
    account_ids,
    audit_database,
    bench_database,
    contention_note,
    create_server_key,
    machine_info,
    profile_summary,
    seed_accounts,
    service_versions,
    stop_servers,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--accounts", type=int, default=1000,
                        help="accounts the holds are spread over (default 1000)")
    parser.add_argument("--connections", type=int, default=32,
                        help="concurrent keep-alive connections of the load generator "
                             "(default 32)")
    parser.add_argument("--duration", type=float, default=5.0,
                        help="measured seconds per server (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="unmeasured seconds of load first (default 1)")
    parser.add_argument("--variants", default="asyncio,uvloop",
                        help="uvicorn variants: asyncio (asyncio + h11), uvloop (uvloop + "
                             "httptools); comma-separated (default both)")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="load generator client (default raw: httptools on uvloop)")
    parser.add_argument("--db-pool", type=int, default=10,
                        help="CREDITSTREAM_DB_POOL_SIZE of the server (it may overflow to 3×); "
                             "the bare endpoint's asyncpg pool gets 3× too (default 10)")
    parser.add_argument("--profile-server", metavar="DIR", default=None,
                        help="run both servers under cProfile and write DIR/http-<side>-<variant>"
                             ".prof plus a .txt summary (the figures are then the profiled ones)")


def parse_variants(text: str) -> list[str]:
    variants = [v.strip() for v in text.split(",") if v.strip()]
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected {', '.join(VARIANTS)}")
    return variants


async def load(server: UvicornServer, key: str, ids: list[str],
               args: argparse.Namespace) -> dict[str, Any]:
    cfg = {"host": "127.0.0.1", "port": server.port, "path": "/v1/holds",
           "authorization": f"Bearer {key}", "accounts": ids, "connections": args.connections,
           "warmup": args.warmup, "duration": args.duration, "client": args.client}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.loadgen", cwd=ROOT, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, limit=2**26)
    assert proc.stdin is not None
    proc.stdin.write((json.dumps(cfg) + "\n").encode())
    await proc.stdin.drain()
    proc.stdin.close()
    meter = CpuMeter({"server": server.pid, "loadgen": proc.pid})
    await asyncio.sleep(args.warmup)
    meter.start()
    await asyncio.sleep(args.duration)
    cores = meter.stop()
    out, err = await proc.communicate()
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"load generator failed ({proc.returncode}): {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result["cpu_cores"] = cores
    return result


def per_request_ms(measured: dict[str, Any]) -> float | None:
    cores, rate = measured["cpu_cores"].get("server"), measured["req_per_s"]
    return None if cores is None or not rate else 1000.0 * cores / rate


async def run(args: argparse.Namespace, say: Progress) -> Result:
    variants = parse_variants(args.variants)
    params = {"accounts": args.accounts, "connections": args.connections,
              "duration_s": args.duration, "warmup_s": args.warmup, "variants": variants,
              "client": args.client, "db_pool": args.db_pool, "endpoint": "POST /v1/holds"}
    title = (f"http: POST /v1/holds, {args.connections} connections, {args.accounts:,} accounts "
             "— uvicorn, PostgreSQL")
    started = time.monotonic()
    runs: dict[str, dict[str, Any]] = {}
    if args.profile_server:
        Path(args.profile_server).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="creditstream-bench-") as tmp:
        logs = Path(tmp)
        async with bench_database(args.pg_admin, args.database_url) as dsn:
            pg_version, _ = await service_versions(dsn, None)
            ids = account_ids("bhttp", args.accounts)
            await seed_accounts(dsn, ids)
            key = await create_server_key(dsn)
            servers = {
                "ceiling": ("bench.bare_http:app", {
                    "BENCH_DATABASE_URL": dsn, "BENCH_SERVER_KEY": key,
                    "BENCH_POOL_SIZE": str(args.db_pool * 3)}),
                "creditstream": ("asgi:app", {
                    "CREDITSTREAM_DATABASE_URL": dsn,
                    "CREDITSTREAM_USER_TOKEN_SECRET": BENCH_SECRET,
                    "CREDITSTREAM_RESULTS_DIR": str(logs / "results"),
                    "CREDITSTREAM_DB_POOL_SIZE": str(args.db_pool)}),
            }
            for variant in variants:
                runs[variant] = {}
                for side, (app, env) in servers.items():
                    profile = (str(Path(args.profile_server) / f"http-{side}-{variant}.prof")
                               if args.profile_server else None)
                    server = UvicornServer(app, env, variant, logs, f"http-{side}-{variant}",
                                           profile_path=profile)
                    await server.start()
                    try:
                        measured = await load(server, key, ids, args)
                    finally:
                        await stop_servers([server])
                    if profile and Path(profile).exists():
                        Path(profile + ".txt").write_text(profile_summary(profile))
                        measured["profile"] = profile
                    if measured["ok"] == 0:
                        raise RuntimeError(f"{side} ({variant}) answered no request: "
                                           f"{measured['statuses']} {measured['errors']}; "
                                           f"server log: {server.log_tail()}")
                    runs[variant][side] = measured
                    say(f"http {variant} {side}: {measured['req_per_s']:,.0f} req/s, p50 "
                        f"{measured['latency_ms']['p50']:.1f} ms, p99 "
                        f"{measured['latency_ms']['p99']:.1f} ms, statuses "
                        f"{measured['statuses']}, cpu {measured['cpu_cores']}")
            audit = await audit_database(dsn)
    result = Result("http", title, params, machine=machine_info(pg_version))
    for variant in variants:
        cs, ce = runs[variant]["creditstream"], runs[variant]["ceiling"]
        label = "+".join(VARIANTS[variant])
        result.rows.append(Row(f"req/s ({label})", cs["req_per_s"], ce["req_per_s"],
                               Goal("ratio", ">=", 0.8)))
        for q in ("p50", "p99"):
            result.rows.append(Row(f"latency {q}, ms ({label})", cs["latency_ms"][q],
                                   ce["latency_ms"][q]))
        result.rows.append(Row(f"server CPU, cores ({label})", cs["cpu_cores"].get("server"),
                               ce["cpu_cores"].get("server")))
        result.rows.append(Row(f"server CPU per request, ms ({label})", per_request_ms(cs),
                               per_request_ms(ce)))
        result.rows.append(Row(f"PostgreSQL CPU, cores ({label})",
                               cs["cpu_cores"].get("postgres"), ce["cpu_cores"].get("postgres")))
        result.rows.append(Row(f"other processes' CPU, cores ({label})",
                               cs["cpu_cores"].get("other"), ce["cpu_cores"].get("other")))
        for side, measured in runs[variant].items():
            bad = {s: n for s, n in measured["statuses"].items() if not s.startswith("2")}
            if bad or measured["errors"]:
                result.notes.append(f"{side} ({variant}): non-2xx {bad}, errors "
                                    f"{measured['errors']}")
    result.notes.append("goal for req/s: ≥ 0.8× the bare endpoint (SPEC §6 names the ratio, "
                        "not a figure; 0.8 is the engine's goal)")
    if args.profile_server:
        result.notes.append(f"servers ran under cProfile (profiles in {args.profile_server}): "
                            "these figures are slower than unprofiled ones")
    result.notes.append(f"load generator: {args.client} client in its own process; CPU in "
                        f"cores (1.0 = one core busy), the machine has "
                        f"{result.machine['nproc']}")
    if audit["mismatches"]:
        result.notes.append(f"AUDIT FAILED after the run: {audit['first']}")
    if note := contention_note(m["cpu_cores"].get("other") for sides in runs.values()
                               for m in sides.values()):
        result.notes.append(note)
    result.details = {"runs": runs, "audit": audit}
    result.elapsed_s = time.monotonic() - started
    return result
