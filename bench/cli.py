"""`creditstream bench …`: registered by cli.py through `add_parser(subparsers)`.

Every subcommand prints a table (metric, creditstream, ceiling, ratio, goal, reached); `--json PATH`
keeps the figures, `--plot DIR` draws them, `--markdown PATH` appends the table for the docs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from bench.database import DEFAULT_PG_ADMIN
from bench.results import Progress, Result
from bench.servers import DEFAULT_REDIS

BENCHMARKS = (
    "engine",
    "hot",
    "http",
    "push",
    "connections",
    "webhooks",
)  # `bench all`; soak is apart


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    bench: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="benchmarks: creditstream against its ceiling, measured in the same run",
        description="Benchmarks that measure creditstream and its ceiling in the same run "
        "(SPEC §6; results in docs/PERFORMANCE.md).",
    )
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    helps = {
        "engine": "holds/s and hold+capture cycles/s through the engine over many accounts, "
        "against raw asyncpg writing the same rows (goal: ≥ 0.8× the batched ceiling at 64 "
        "callers)",
        "hot": "the same with every operation on one account (goal: ≥ 3× the one-statement hold "
        "at 64 callers)",
        "http": "POST /v1/holds through uvicorn against a bare Starlette endpoint running the "
        "same SQL: req/s, p50/p99",
        "push": "commit-to-client latency across two instances with Redis, and memory per idle "
        "WebSocket, against a bare Redis-to-WebSocket relay (goals: p99 ≤ 10 ms, "
        "≤ 16 KiB per connection)",
        "connections": "how many idle subscribers one instance holds within a memory budget, "
        "against the bare relay",
        "webhooks": "outbound webhooks into one endpoint whose receiver takes 20 ms: "
        "delivered/s against the rate committed, and the lag (goals: ≥ 0.95×, "
        "p99 ≤ 1 s)",
        "growth": "bytes on disk per operation for each table (rows and indexes) under a "
        "realistic mix of keyed requests, and the cost of pruning the stream journal",
        "soak": "an endurance run: stream churn, holds and jobs left to expire, outbound "
        "deliveries, together for --duration; server RSS slope, sweeper lateness and "
        "delivery lag against bounds (exits 1 when one is exceeded)",
        "reads": "the primary's CPU per read (account snapshots, entries pages) with and "
        "without a streaming standby serving them (CREDITSTREAM_DATABASE_READ_URL); starts "
        "its own primary and standby, so runs as root or postgres (goal ≤ 0.5×)",
        "listener": "CPU per message of one instance's Redis listener, with the reply parser "
        "as shipped (hiredis) against redis-py's Python parser",
        "all": "every benchmark above but soak, growth, reads and listener at its default size, one after "
        "the other",
    }
    for name, text in helps.items():
        parser = sub.add_parser(name, help=text, description=text)
        _add_common(parser)
        _add_specific(name, parser)
        parser.set_defaults(handler=_handler(name))
    bench.set_defaults(handler=lambda args, settings: _usage(bench))
    return bench


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _add_common(parser: argparse.ArgumentParser) -> None:
    out = parser.add_argument_group("output")
    out.add_argument("--json", metavar="PATH", help="write the results as JSON ('-' = stdout)")
    out.add_argument("--plot", metavar="DIR", help="write PNG charts into DIR")
    out.add_argument("--markdown", metavar="PATH", help="append the table(s) to PATH as Markdown")
    out.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    env = parser.add_argument_group("services")
    env.add_argument(
        "--pg-admin",
        default=DEFAULT_PG_ADMIN,
        help="PostgreSQL DSN used to create (and drop) a scratch database "
        "bench_<random> (default: $CREDITSTREAM_BENCH_PG or %(default)s)",
    )
    env.add_argument(
        "--database-url",
        default=None,
        help="use this (PostgreSQL) database instead of a scratch one; it is "
        "migrated and gets bench accounts",
    )
    env.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS,
        help="Redis for push and connections (default: $CREDITSTREAM_BENCH_REDIS or %(default)s)",
    )
    env.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop of the benchmark process itself (engine and hot run "
        "creditstream in it; default asyncio)",
    )


def _add_specific(name: str, parser: argparse.ArgumentParser) -> None:
    if name in ("engine", "hot"):
        from bench import engine

        engine.add_arguments(parser, hot=name == "hot")
    elif name == "http":
        from bench import http_holds

        http_holds.add_arguments(parser)
    elif name == "push":
        from bench import push

        push.add_arguments(parser)
    elif name == "connections":
        from bench import connections

        connections.add_arguments(parser)
    elif name == "webhooks":
        from bench import webhooks

        webhooks.add_arguments(parser)
    elif name == "growth":
        from bench import growth

        growth.add_arguments(parser)
    elif name == "soak":
        from bench import soak

        soak.add_arguments(parser)
    elif name == "reads":
        from bench import reads

        reads.add_arguments(parser)
    elif name == "listener":
        from bench import listener

        listener.add_arguments(parser)


async def _run_one(name: str, args: argparse.Namespace, say: Progress) -> Result:
    if name in ("engine", "hot"):
        from bench import engine

        return await engine.run(args, hot=name == "hot", say=say)
    if name == "http":
        from bench import http_holds

        return await http_holds.run(args, say)
    if name == "push":
        from bench import push

        return await push.run(args, say)
    if name == "webhooks":
        from bench import webhooks

        return await webhooks.run(args, say)
    if name == "soak":
        from bench import soak

        return await soak.run(args, say)
    if name == "reads":
        from bench import reads

        return await reads.run(args, say)
    if name == "growth":
        from bench import growth

        return await growth.run(args, say)
    if name == "listener":
        from bench import listener

        return await listener.run(args, say)
    from bench import connections

    return await connections.run(args, say)


def _defaults_for(name: str, common: argparse.Namespace) -> argparse.Namespace:
    """`bench all`: each benchmark's own defaults, with the shared options of the command line."""
    parser = argparse.ArgumentParser()
    _add_common(parser)
    _add_specific(name, parser)
    args = parser.parse_args([])
    for key in ("pg_admin", "database_url", "redis_url", "loop", "quiet"):
        setattr(args, key, getattr(common, key))
    return args


def _handler(name: str) -> Callable[[argparse.Namespace, Any], int]:
    def handle(args: argparse.Namespace, settings: Any) -> int:
        from bench.results import print_table, write_json, write_markdown
        from bench.servers import run

        say = Progress(args.quiet)
        names = list(BENCHMARKS) if name == "all" else [name]
        results: list[Result] = []

        async def main() -> None:
            for each in names:
                each_args = _defaults_for(each, args) if name == "all" else args
                results.append(await _run_one(each, each_args, say))

        try:
            run(main, args.loop)
        finally:
            for result in results:
                print_table(result)
            if args.json and results:
                write_json(args.json, results)
            if args.markdown and results:
                write_markdown(args.markdown, results)
            if args.plot and results:
                from bench.plot import plot

                for result in results:
                    for path in plot(result.to_dict(), args.plot):
                        say(f"wrote {path}")
        failed = [bound for result in results for bound in result.bounds_failed]
        for bound in failed:
            print(f"bound exceeded: {bound}", file=sys.stderr)
        return 1 if failed else 0

    return handle
