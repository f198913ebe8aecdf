"""Command-line options that several benchmarks take, declared once so that their names,
types and help read the same everywhere; each benchmark passes its own default."""

from __future__ import annotations

import argparse

VARIANTS_HELP = (
    "uvicorn variants: asyncio (asyncio + h11, the stock install), uvloop (uvloop + "
    "httptools); comma-separated, both reported when both are given"
)


def add_duration(parser: argparse.ArgumentParser, default: float, what: str) -> None:
    parser.add_argument(
        "--duration", type=float, default=default, help=f"{what} (default {default:g})"
    )


def add_warmup(parser: argparse.ArgumentParser, default: float, what: str) -> None:
    parser.add_argument(
        "--warmup", type=float, default=default, help=f"{what} (default {default:g})"
    )


def add_settle(parser: argparse.ArgumentParser, default: float, what: str) -> None:
    parser.add_argument(
        "--settle", type=float, default=default, help=f"{what} (default {default:g})"
    )


def add_accounts(parser: argparse.ArgumentParser, default: int, what: str) -> None:
    parser.add_argument(
        "--accounts", type=int, default=default, help=f"accounts {what} (default {default})"
    )


def add_variants(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--variants", default=default, help=f"{VARIANTS_HELP} (default {default})")


def add_db_pool(parser: argparse.ArgumentParser, default: int, whose: str) -> None:
    parser.add_argument(
        "--db-pool",
        type=int,
        default=default,
        help=f"CREDITSTREAM_DB_POOL_SIZE of {whose} (default {default})",
    )


def add_gc_freeze(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="serve creditstream as bench.gc_frozen:app (asgi:app plus gc.freeze() after start-up)",
    )


def add_connect_concurrency(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--connect-concurrency",
        type=int,
        default=100,
        help="WebSocket handshakes in flight while connecting (default 100)",
    )
