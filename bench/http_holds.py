"""`bench http`: `POST /v1/holds` with a fresh `Idempotency-Key` per request through uvicorn
(`uvicorn asgi:app` on PostgreSQL) against a bare Starlette JSON echo with no database
(bench/bare_http.py) served by uvicorn the same way, driven by the same load generator
(bench/loadgen.py, its own process, many keep-alive connections).

Phases: the echo; the echo with `--workers 2`; creditstream over many accounts; creditstream on
one hot account; creditstream with `--workers 2`. A second worker's gain (req/s with two ÷ req/s
with one) is compared with the echo's own gain from it, measured in the same run: two workers on
two shared cores (with PostgreSQL and the load generator on them too) may not double even the
echo. Each uvicorn variant (asyncio + h11, uvloop + httptools) asked for runs all.

The load of one phase is in bench/http_holds_load.py, the rows in bench/http_holds_report.py.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import options
from bench.database import (
    account_ids,
    audit_database,
    bench_database,
    create_server_key,
    seed_accounts,
)
from bench.http_holds_load import load
from bench.http_holds_report import add_rows
from bench.measure import contention_note, machine_info, service_versions
from bench.profiles import profile_summary
from bench.results import Progress, Result
from bench.servers import BENCH_SECRET, DEPLOYED_HTTP, VARIANTS, UvicornServer, stop_servers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_accounts(parser, 1000, "the holds are spread over")
    parser.add_argument(
        "--connections",
        type=int,
        default=64,
        help="concurrent keep-alive connections of the load generator (default 64)",
    )
    options.add_duration(parser, 5.0, "measured seconds per server")
    options.add_warmup(parser, 1.0, "unmeasured seconds of load first")
    options.add_variants(parser, "uvloop")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="worker processes of the last creditstream phase (default 2)",
    )
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator client (default raw: httptools on uvloop)",
    )
    parser.add_argument(
        "--write-connections",
        type=int,
        default=None,
        help="CREDITSTREAM_WRITE_CONNECTIONS of the server (default: its own)",
    )
    for side, default, who in (
        ("creditstream", "deployed", "creditstream's phases"),
        ("echo", "stock", "the echo's phases"),
    ):
        parser.add_argument(
            f"--{side}-http",
            choices=("deployed", "stock"),
            default=default,
            help=f"uvicorn's HTTP protocol in {who}: as `creditstream serve` runs it "
            f"(api/serving.py) or as uvicorn ships it (default {default})",
        )
    options.add_db_pool(parser, 10, "the server, for its reads")
    parser.add_argument(
        "--profile-server",
        metavar="DIR",
        default=None,
        help="run both servers under cProfile and write DIR/http-<side>-<variant>"
        ".prof plus a .txt summary (the figures are then the profiled ones)",
    )


def parse_variants(text: str) -> list[str]:
    variants = [v.strip() for v in text.split(",") if v.strip()]
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected {', '.join(VARIANTS)}")
    return variants


async def run(args: argparse.Namespace, say: Progress) -> Result:
    variants = parse_variants(args.variants)
    params = {
        "accounts": args.accounts,
        "connections": args.connections,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "variants": variants,
        "client": args.client,
        "db_pool": args.db_pool,
        "workers": args.workers,
        "write_connections": args.write_connections,
        "http_protocols": {"creditstream": args.creditstream_http, "echo": args.echo_http},
        "endpoint": "POST /v1/holds with a fresh Idempotency-Key",
    }
    title = (
        f"http: POST /v1/holds + Idempotency-Key, {args.connections} connections, "
        f"{args.accounts:,} accounts — uvicorn, PostgreSQL"
    )
    started = time.monotonic()
    runs: dict[str, dict[str, Any]] = {}
    if args.profile_server:
        Path(args.profile_server).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="creditstream-bench-") as tmp:
        logs = Path(tmp)
        async with bench_database(args.pg_admin, args.database_url) as dsn:
            pg_version, _ = await service_versions(dsn, None)
            ids = account_ids("bhttp", args.accounts)
            hot_ids = account_ids("bhot", 1)
            await seed_accounts(dsn, ids + hot_ids)
            key = await create_server_key(dsn)
            env = {
                "CREDITSTREAM_DATABASE_URL": dsn,
                "CREDITSTREAM_USER_TOKEN_SECRET": BENCH_SECRET,
                "CREDITSTREAM_RESULTS_DIR": str(logs / "results"),
                "CREDITSTREAM_DB_POOL_SIZE": str(args.db_pool),
            }
            if args.write_connections:
                env["CREDITSTREAM_WRITE_CONNECTIONS"] = str(args.write_connections)
            many = ["--workers", str(args.workers)]
            phases = {
                "echo": ("bench.bare_http:app", {}, ids, []),
                "echo_workers": ("bench.bare_http:app", {}, ids, many),
                "uniform": ("asgi:app", env, ids, []),
                "hot": ("asgi:app", env, hot_ids, []),
                "workers": ("asgi:app", env, ids, many),
            }
            for variant in variants:
                runs[variant] = {}
                for phase, (app, server_env, accounts, extra) in phases.items():
                    profile = (
                        str(Path(args.profile_server) / f"http-{phase}-{variant}.prof")
                        if args.profile_server and not extra
                        else None
                    )
                    protocol = (
                        args.echo_http if phase.startswith("echo") else args.creditstream_http
                    )
                    server = UvicornServer(
                        app,
                        server_env,
                        variant,
                        logs,
                        f"http-{phase}-{variant}",
                        extra_args=extra,
                        profile_path=profile,
                        http=DEPLOYED_HTTP[variant] if protocol == "deployed" else None,
                    )
                    await server.start()
                    try:
                        measured = await load(server, key, accounts, args)
                    finally:
                        await stop_servers([server])
                    if profile and Path(profile).exists():
                        Path(profile + ".txt").write_text(profile_summary(profile))
                        measured["profile"] = profile
                    if measured["ok"] == 0:
                        raise RuntimeError(
                            f"{phase} ({variant}) answered no request: "
                            f"{measured['statuses']} {measured['errors']}; "
                            f"server log: {server.log_tail()}"
                        )
                    runs[variant][phase] = measured
                    batches = measured.get("batches")
                    say(
                        f"http {variant} {phase}: {measured['req_per_s']:,.0f} req/s, p50 "
                        f"{measured['latency_ms']['p50']:.1f} ms, p99 "
                        f"{measured['latency_ms']['p99']:.1f} ms, statuses "
                        f"{measured['statuses']}, cpu {measured['cpu_cores']}"
                        + (f", {batches['mean']:.1f} operations per batch" if batches else "")
                    )
            audit = await audit_database(dsn)
    result = Result("http", title, params, machine=machine_info(pg_version))
    for variant in variants:
        add_rows(result, runs[variant], "+".join(VARIANTS[variant]), args.workers)
    result.notes.append(
        "ceiling: a bare Starlette JSON echo on the same uvicorn flags and load "
        f"(no database; HTTP protocol: the echo {args.echo_http}, creditstream "
        f"{args.creditstream_http}, deployed = api/serving.py's); goals: ≥ 0.25× the echo, hot ≥ 0.8× uniform, the gain of "
        f"{args.workers} workers over one (req/s ÷ req/s) ≥ 0.9× the echo's own gain"
    )
    if args.profile_server:
        result.notes.append(
            f"single-worker servers ran under cProfile (profiles in "
            f"{args.profile_server}): these figures are slower than unprofiled"
        )
    result.notes.append(
        f"load generator: {args.client} client in its own process; CPU in "
        f"cores (1.0 = one core busy), the machine has "
        f"{result.machine['nproc']}; with --workers the server CPU counts the "
        "supervisor only"
    )
    if audit["mismatches"]:
        result.notes.append(f"AUDIT FAILED after the run: {audit['first']}")
    if note := contention_note(
        m["cpu_cores"].get("other") for phases_run in runs.values() for m in phases_run.values()
    ):
        result.notes.append(note)
    result.details = {"runs": runs, "audit": audit}
    result.elapsed_s = time.monotonic() - started
    return result
