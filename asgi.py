"""Composition root: settings from the environment, resources opened in the lifespan, routes.

Run with `uvicorn asgi:app` (or `creditstream serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection
from starlette.routing import Mount, Route, WebSocketRoute

from api import openapi
from api.auth import Authenticator
from api.context import AppContext
from api.errors import EXCEPTION_HANDLERS, ApiError
from api.observability import ObservabilityMiddleware, configure_logging, redact_tokens_in_logs
from api.results import ResultFiles
from api.routes import API_ROUTES, starlette_routes
from api.tokens import TokenSigner
from config import ConfigError, Settings
from core.events import Event
from core.job_service import JobService
from core.ports import Clock, SystemClock
from core.pricing import Catalogue
from core.service import CreditService
from providers.simulated import NAME as SIMULATED
from providers.simulated import SimulatedProvider
from realtime.broker import Broker, InProcessBroker, RedisBroker
from realtime.demo import demo_routes
from realtime import supervision
from realtime.hub import Hub
from realtime.sse import sse_endpoint
from realtime.streams import Realtime, StreamAuthError, StreamConfig, Viewer
from realtime.websocket import stream_endpoint
from storage.idempotency import IdempotencyStore
from storage.journal import SqlEventJournal
from storage.keys import create_server_key, stored_secret
from storage.migrate import upgrade_async
from storage.objects import LocalDirectoryStore, S3Store
from storage.sql import Database
from storage.writer import BatchWriter
from sweeper import Sweeper

VERSION = "0.1.0"
SHUTDOWN_PATIENCE_S = 5.0
log = logging.getLogger("creditstream")


def load_catalogue(path: str | None) -> Catalogue:
    """The price catalogue, validated now so a bad file stops the start, not a request."""
    text = (Path(path).read_text(encoding="utf-8") if path else
            resources.files("core").joinpath("pricing.toml").read_text(encoding="utf-8"))
    return Catalogue.from_toml(text)


def create_app(settings: Settings | None = None, clock: Clock | None = None,
               run_sweeper: bool = True, auto_migrate: bool = True) -> Starlette:
    settings = settings or Settings.from_env()
    settings.check_secrets()
    if settings.log_format == "json":
        configure_logging(settings.log_level)
    redact_tokens_in_logs()
    catalogue = load_catalogue(settings.pricing_file)
    clock = clock or SystemClock()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if auto_migrate and settings.auto_migrate:
            await upgrade_async(settings.database_url)
        db = Database.from_url(settings.database_url, settings.db_pool_size)
        secret = settings.user_token_secret or await stored_secret(db, "user_token_secret")
        signer = TokenSigner(secret, clock)
        service = CreditService(clock, catalogue, timedelta(seconds=settings.hold_ttl_s),
                                settings.low_credits_threshold)
        async def publish(events: list[Event]) -> None:
            await ctx.publish(events)  # after each batch's commit, before its callers hear

        writer = BatchWriter(db, service.now, publish, settings.write_connections,
                             settings.write_batch_max)
        ctx = AppContext(settings, db, service, signer, Authenticator(db, signer),
                         IdempotencyStore(db), writer)
        app.state.ctx = ctx
        http = httpx.AsyncClient(follow_redirects=True)
        await _start_jobs(settings, ctx, db, http)
        realtime = await _start_realtime(settings, ctx, db, clock)
        app.state.realtime = realtime
        _chain_sigterm(realtime.begin_shutdown)
        tasks: list[asyncio.Task[Any]] = []
        stopping = asyncio.Event()
        heartbeats = list(realtime.hub.heartbeats)
        if run_sweeper:
            sweeper = Sweeper(db, service, ctx.idempotency, jobs=ctx.jobs, writer=writer)
            tasks.append(sweeper.heartbeat.watch(asyncio.create_task(
                sweeper.run_forever(settings.sweep_interval_s, stopping))))
            heartbeats.append(sweeper.heartbeat)

        async def background_tasks() -> None:  # readiness: 503 while one is dead or stuck
            supervision.check(heartbeats)

        ctx.readiness_probes["background_tasks"] = background_tasks
        if settings.dev:
            key = await create_server_key(db, "dev")
            print(f"creditstream dev mode: server key for this run:\n{key}", flush=True)
        try:
            yield
        finally:
            for heartbeat in heartbeats:
                heartbeat.stopping = True
            stopping.set()
            _, late = await asyncio.wait(tasks, timeout=SHUTDOWN_PATIENCE_S) if tasks else ((), ())
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            realtime.begin_shutdown()
            for provider in ctx.providers.values():
                await provider.stop()
            await realtime.hub.stop()
            await writer.aclose()
            await http.aclose()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(db.dispose(), SHUTDOWN_PATIENCE_S)

    routes = starlette_routes() + [
        Route("/v1/stream/sse", sse_endpoint, methods=["GET"]),
        WebSocketRoute("/v1/stream", stream_endpoint),
        Mount("/results", ResultFiles(directory=settings.results_dir, check_dir=False),
              name="results"),
    ] + demo_routes(dev=settings.dev)
    middleware = [Middleware(ObservabilityMiddleware)]
    if settings.cors_origins:
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
            expose_headers=["Idempotent-Replayed", "Retry-After"]))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers=EXCEPTION_HANDLERS)
    app.state.openapi = openapi.build(API_ROUTES, VERSION)
    return app


async def _start_jobs(settings: Settings, ctx: AppContext, db: Database,
                      http: httpx.AsyncClient) -> None:
    ctx.jobs = JobService(ctx.service, timedelta(seconds=settings.hold_ttl_s))
    ctx.http = http
    ctx.store = (S3Store(settings.s3_bucket, settings.s3_endpoint_url, settings.s3_public_url)
                 if settings.s3_bucket else
                 LocalDirectoryStore(settings.results_dir, (settings.public_url or "") + "/results"))
    generated = await stored_secret(db, "webhook_secret")

    def secret_for(provider: str) -> str | None:
        return (settings.webhook_secrets.get(provider) or settings.webhook_secret
                or (generated if provider == SIMULATED else None))

    ctx.webhook_secrets = secret_for
    ctx.providers[SIMULATED] = SimulatedProvider(lambda: secret_for(SIMULATED) or generated, http)


async def _start_realtime(settings: Settings, ctx: AppContext, db: Database,
                          clock: Clock) -> Realtime:
    broker: Broker = (RedisBroker(settings.redis_url, "drop_publish_once" in settings.faults)
                      if settings.redis_url else InProcessBroker())
    hub = Hub(SqlEventJournal(db, clock), broker, settings.resync_interval_s)

    async def authenticate(conn: HTTPConnection) -> Viewer:
        try:
            return await ctx.auth.principal(conn, allow_query_token=True)
        except ApiError as exc:
            raise StreamAuthError(exc.code, exc.message) from exc

    async def verify_token(token: str) -> Viewer:
        try:
            return await ctx.auth.from_token(token)
        except ApiError as exc:
            raise StreamAuthError(exc.code, exc.message) from exc

    config = StreamConfig(authenticate, verify_token, frozenset(settings.cors_origins),
                          settings.heartbeat_s, settings.stream_queue_size,
                          max_connections_per_account=settings.max_streams_per_account,
                          clock=lambda: clock.now().timestamp())
    realtime = Realtime(hub, config)
    await hub.start()
    ctx.publishers.append(realtime.publish)
    ctx.wait_for_events = hub.wait_beyond
    if settings.redis_url:
        ctx.readiness_probes["redis"] = broker.ping
    return realtime


def _chain_sigterm(before: Callable[[], None]) -> None:
    """Close streams with 1012 as soon as SIGTERM arrives, then let the server shut down."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return

    def handler(signum: int, frame: Any) -> None:
        loop.call_soon_threadsafe(before)
        previous(signum, frame)

    loop = asyncio.get_running_loop()
    signal.signal(signal.SIGTERM, handler)


def __getattr__(name: str) -> Any:
    # `uvicorn asgi:app` builds the app on first access, not at import time
    if name == "app":
        try:
            application = create_app()
        except ConfigError as exc:  # one clear line, not a traceback from inside uvicorn
            print(f"creditstream: configuration error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        globals()["app"] = application
        return application
    raise AttributeError(name)
