"""A start said plainly: the listening socket bound before anything is written (an address in
use is one line with the way out), the database checked (migrated when auto-migrate is on) with
each failure one line naming CREDITSTREAM_DATABASE_URL, dev mode's single server key, Redis
pinged, and one summary of what this instance runs on — with a loud warning when Redis does
not answer. `creditstream serve` does all of it before uvicorn starts; `uvicorn asgi:app` gets
the same checks, key and summary from the app's lifespan."""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from config import Settings, masked_url
from storage.database_url import (
    DatabaseSetupError,
    check_supported,
    describe,
    explain,
    missing_sqlite_file,
)
from storage.keys import rotate_dev_key
from storage.migrate import upgrade_async
from storage.sql import Database
from storage.tables import api_keys

REDIS_TIMEOUT_S = 2.0
WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


class StartupError(Exception):
    """The start cannot go on; the message is one line saying why and what to do."""


@dataclass(frozen=True)
class Prepared:
    """What a start found: dev mode's server key (None outside dev mode) and, when Redis is
    configured but did not answer, why."""

    dev_key: str | None
    redis_problem: str | None


def bind_listener(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound now, before the database is touched: an address
    already in use stops the start with nothing written."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"{_host_port(host, port)} is already in use (another creditstream or another "
                f"server is listening there): stop it, or serve on another port — "
                f"`make run PORT={port + 1}` or `creditstream serve --port {port + 1}`"
            ) from None
        raise StartupError(
            f"cannot listen on {_host_port(host, port)}: {exc.strerror or exc}"
        ) from None
    sock.set_inheritable(True)  # uvicorn's worker processes serve on it
    return sock


async def check_database(settings: Settings, migrate: bool) -> None:
    """Bring the database to the newest schema (when `migrate`) and check it is there; a
    failure is one line naming CREDITSTREAM_DATABASE_URL with its password masked."""
    url = settings.database_url
    try:
        check_supported(url)
        if migrate:
            await upgrade_async(url)
        elif (missing := missing_sqlite_file(url)) is not None:
            raise missing
        db = Database.from_url(url, pool_size=1)
        try:
            async with db.read() as uow:
                await uow.conn.execute(sa.select(api_keys.c.id).limit(1))
        finally:
            await db.dispose()
    except Exception as exc:
        problem = explain(exc, url)
        if problem is None:
            raise
        raise problem from None


async def prepare(settings: Settings) -> Prepared:
    """Everything `creditstream serve` does once, in its own process, before any worker
    starts: the database, dev mode's key, the Redis check."""
    await check_database(settings, migrate=settings.auto_migrate)
    key = None
    if settings.dev:
        db = Database.from_url(settings.database_url, pool_size=1)
        try:
            key = await rotate_dev_key(db)
        finally:
            await db.dispose()
    return Prepared(key, await redis_problem(settings.redis_url))


async def redis_problem(url: str | None) -> str | None:
    """Why the configured Redis (or, for a cluster, each of its seeds) did not answer a PING
    within REDIS_TIMEOUT_S, or None when it did or none is configured."""
    if not url:
        return None
    import redis.asyncio as aioredis

    scheme, _, rest = url.partition("://")
    if scheme.lower().endswith("+cluster"):  # any seed that answers will do
        auth, _, hosts = rest.rpartition("@")
        plain = scheme.lower().removesuffix("+cluster")  # redis or rediss (TLS)
        seeds = [
            f"{plain}://{auth + '@' if auth else ''}{seed}"
            for seed in hosts.split("/", 1)[0].split(",")
            if seed
        ]
    else:
        seeds = [url]
    problem = "no seed node given"
    for seed in seeds:
        client = aioredis.Redis.from_url(
            seed, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S
        )
        try:
            await asyncio.wait_for(client.ping(), REDIS_TIMEOUT_S * 2)
            return None
        except (TimeoutError, OSError, aioredis.RedisError) as exc:
            problem = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        finally:
            await client.aclose()
    return problem


def redis_warning(settings: Settings, problem: str) -> str:
    return (
        f"creditstream: WARNING: CREDITSTREAM_REDIS_URL={masked_url(settings.redis_url)} "
        f"does not answer ({problem}). The server starts anyway, but until Redis answers, "
        f"pushes reach only the streams of this process and /readyz answers 503. Start "
        f"Redis, correct CREDITSTREAM_REDIS_URL, or unset it to use the in-process broker."
    )


def summary(
    settings: Settings,
    address: tuple[str, int] | None = None,
    workers: int = 1,
    dev_key: str | None = None,
) -> list[str]:
    """The start-up summary: address, database (password masked, a SQLite file by its absolute
    path), broker, mode, the demo page, and dev mode's key alone on the last line."""
    if address is None:
        served, demo = "the address uvicorn reports below", "/demo on that address"
    else:
        host, port = address
        shown = "127.0.0.1" if host in WILDCARD_HOSTS else host
        served = f"http://{_host_port(host, port)}" + (
            " (every interface)" if host in WILDCARD_HOSTS else ""
        )
        demo = f"http://{_host_port(shown, port)}/demo"
    broker = (
        f"Redis {masked_url(settings.redis_url)}"
        if settings.redis_url
        else "in-process (streams hear this process's writes only; set CREDITSTREAM_REDIS_URL "
        "for several instances)"
    )
    results = (
        f"S3 bucket {settings.s3_bucket}"
        if settings.s3_bucket
        else f"local directory {_absolute(settings.results_dir)}"
    )
    lines = [
        f"creditstream: serving {served}" + (f" with {workers} workers" if workers > 1 else ""),
        f"  database: {describe(settings.database_url)}",
        f"  broker:   {broker}",
        f"  results:  {results}",
        "  mode:     "
        + (
            "dev (CREDITSTREAM_DEV=1: demo page, weak secrets allowed)"
            if settings.dev
            else "production"
        ),
    ]
    if settings.database_read_urls:  # only when set: the summary stays as it was without
        standbys = ", ".join(describe(url) for url in settings.database_read_urls)
        lines.insert(2, f"  reads:    standbys {standbys}, the primary when one lags or fails")
    if settings.dev:
        lines.append(f"  demo:     {demo}")
    if dev_key is not None:
        lines += [
            "  server key (dev mode's one key, new at every start; the previous start's "
            "key no longer works):",
            dev_key,
        ]
    return lines


async def announce(db: Database, settings: Settings) -> None:
    """The summary and the Redis warning from the app's own lifespan (`uvicorn asgi:app`)."""
    key = await rotate_dev_key(db) if settings.dev else None
    print("\n".join(summary(settings, dev_key=key)), flush=True)
    problem = await redis_problem(settings.redis_url)
    if problem is not None:
        print(redis_warning(settings, problem), file=sys.stderr, flush=True)


def startup_problem(exc: BaseException, settings: Settings) -> str | None:
    """The one line for a start that failed on its database, or None for anything else."""
    if isinstance(exc, StartupError | DatabaseSetupError):
        return str(exc)
    problem = explain(exc, settings.database_url)
    return None if problem is None else str(problem)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _absolute(path: str) -> str:
    return str(Path(path).resolve())
