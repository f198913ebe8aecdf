"""Composition root: settings from the environment, resources opened in the lifespan, routes.

Run with `uvicorn asgi:app` (or `creditstream serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

import realtime
from api import openapi
from api.auth import Authenticator, Principal
from api.context import AppContext
from api.demo import demo_routes
from api.errors import EXCEPTION_HANDLERS, ApiError
from api.observability import (
    ObservabilityMiddleware,
    configure_logging,
    observe_websocket,
    redact_tokens_in_logs,
)
from api.results import ResultFiles
from api.routes import V1_ROUTES
from api.routes_seed import SEED_ROUTES
from api.routing import starlette_routes
from api.tokens import TokenSigner
from config import ConfigError, Settings
from core.events import Event
from core.job_service import JobService
from core.plans import PlanCatalogue
from core.ports import Clock, ObjectStore, SystemClock
from core.pricing import Catalogue
from core.service import CreditService
from outbound import Deliverer, Policy
from providers.simulated import NAME as SIMULATED
from providers.simulated import SimulatedProvider
from realtime import supervision
from realtime.broker import Broker, InProcessBroker, RedisBroker
from realtime.hub import Hub
from realtime.sse import sse_endpoint
from realtime.streams import Realtime, StreamAuthError, StreamConfig, Viewer
from realtime.websocket import stream_app, stream_endpoint
from storage.idempotency import IdempotencyStore
from storage.journal import SqlEventJournal
from storage.keys import create_server_key, stored_secret
from storage.migrate import upgrade_async
from storage.objects import LocalDirectoryStore, S3Store
from storage.sql import Database
from storage.webhook_endpoints import WebhookEndpoints
from storage.writer import BatchWriter
from sweeper import Sweeper

VERSION = "0.1.0"
STREAM_PATH = "/v1/stream"
SHUTDOWN_PATIENCE_S = 5.0
log = logging.getLogger("creditstream")
STATIC_DIR = Path(realtime.__file__).resolve().parent / "static"  # the browser SDK, the demo page
Probe = Callable[[], Awaitable[Any]]
SecretFor = Callable[[str], str | None]
API_ROUTES = V1_ROUTES + SEED_ROUTES  # the whole HTTP API, one table for routing and the document


def load_catalogue(path: str | None) -> Catalogue:
    """The price catalogue, validated now so a bad file stops the start, not a request."""
    text = (Path(path).read_text(encoding="utf-8") if path else
            resources.files("core").joinpath("pricing.toml").read_text(encoding="utf-8"))
    return Catalogue.from_toml(text)


def load_plans(path: str | None, catalogue: Catalogue) -> PlanCatalogue:
    """Plans and feature limits, validated now (also against the price catalogue's
    operations) so a bad file stops the start."""
    text = (Path(path).read_text(encoding="utf-8") if path else
            resources.files("core").joinpath("plans.toml").read_text(encoding="utf-8"))
    plans = PlanCatalogue.from_toml(text)
    plans.check_operations(catalogue.operations)
    return plans


def create_app(settings: Settings | None = None, clock: Clock | None = None,
               run_sweeper: bool = True, auto_migrate: bool = True) -> Starlette:
    settings = settings or Settings.from_env()
    settings.check_secrets()
    if settings.log_format == "json":
        configure_logging(settings.log_level)
    redact_tokens_in_logs()
    catalogue = load_catalogue(settings.pricing_file)
    plans = load_plans(settings.plans_file, catalogue)
    clock = clock or SystemClock()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if auto_migrate and settings.auto_migrate:
            await upgrade_async(settings.database_url)
        async with contextlib.AsyncExitStack() as stack:
            ctx, realtime = await open_context(stack, settings, catalogue, clock, run_sweeper,
                                               plans)
            app.state.ctx, app.state.realtime = ctx, realtime
            _chain_sigterm(realtime.begin_shutdown)
            if settings.dev:
                key = await create_server_key(ctx.db, "dev")
                print(f"creditstream dev mode: server key for this run:\n{key}", flush=True)
            yield

    routes = starlette_routes(API_ROUTES) + [
        Route("/v1/stream/sse", sse_endpoint, methods=["GET"]),
        WebSocketRoute(STREAM_PATH, stream_endpoint),
        Mount("/results", ResultFiles(directory=settings.results_dir, check_dir=False),
              name="results"),
    ] + demo_routes(STATIC_DIR, dev=settings.dev)
    middleware = [Middleware(ObservabilityMiddleware)]
    if settings.cors_origins:
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
            expose_headers=["Idempotent-Replayed", "Retry-After"]))
    app = CreditstreamApp(routes=routes, middleware=middleware, lifespan=lifespan,
                          exception_handlers=EXCEPTION_HANDLERS)
    app.state.openapi = openapi.build(API_ROUTES, VERSION)
    return app


class CreditstreamApp(Starlette):
    """Starlette, with `/v1/stream` WebSockets handed straight to their endpoint. A stream stays
    open for hours: through the middleware stack and the router it would keep a dozen coroutine
    frames alive (~4 KiB a connection) and pass every message it sends through each layer. The
    request id and its `X-Request-ID` stay; CORS and the error pages concern HTTP only."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and _route_path(scope) == STREAM_PATH:
            scope["app"] = self
            await observe_websocket(stream_app, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


async def open_context(stack: contextlib.AsyncExitStack, settings: Settings,
                       catalogue: Catalogue, clock: Clock, run_sweeper: bool,
                       plans: PlanCatalogue | None = None) -> tuple[AppContext, Realtime]:
    """Everything the routes need, each resource opened inside `stack`: a failure at any step
    closes what the steps before it opened, and shutdown closes all in reverse order."""
    db = Database.from_url(settings.database_url, settings.db_pool_size)
    stack.push_async_callback(_dispose, db)
    signer = TokenSigner(
        settings.user_token_secret or await stored_secret(db, "user_token_secret"), clock)
    auth = Authenticator(db, signer)
    service = CreditService(clock, catalogue, timedelta(seconds=settings.hold_ttl_s),
                            settings.low_credits_threshold,
                            plans or load_plans(settings.plans_file, catalogue))
    jobs = JobService(service, timedelta(seconds=settings.hold_ttl_s))
    idempotency = IdempotencyStore(db)
    http = await stack.enter_async_context(httpx.AsyncClient(follow_redirects=True))
    realtime, probes = await _open_realtime(stack, settings, auth, db, clock)

    async def publish(events: list[Event]) -> None:
        await ctx.publish(events)  # after each batch's commit, before its callers hear

    writer = BatchWriter(db, service.now, publish, settings.write_connections,
                         settings.write_batch_max)
    stack.push_async_callback(writer.aclose)
    secret_for, providers = await _open_providers(stack, settings, db, http)
    stack.callback(realtime.begin_shutdown)
    heartbeats = list(realtime.hub.heartbeats)
    publishers: list[Callable[[list[Event]], Awaitable[None]]] = [realtime.publish]
    if run_sweeper:  # the instance's background work: the sweeper and outbound webhooks
        sweeper = Sweeper(db, service, idempotency, jobs=jobs, writer=writer)
        _supervise(stack, sweeper.heartbeat,
                   lambda stopping: sweeper.run_forever(settings.sweep_interval_s, stopping))
        deliverer = Deliverer(WebhookEndpoints(db), http, webhook_policy(settings),
                              service.now, lambda: datetime.now(UTC))
        _supervise(stack, deliverer.heartbeat, deliverer.run_forever)
        heartbeats += [sweeper.heartbeat, deliverer.heartbeat]
        publishers.append(deliverer.wake)
    stack.callback(_stopping, heartbeats)

    async def background_tasks() -> None:  # readiness: 503 while one is dead or stuck
        supervision.check(heartbeats)

    ctx = AppContext(settings, db, service, signer, auth, idempotency, writer, jobs,
                     _object_store(settings), http, realtime.hub.wait_beyond, providers,
                     secret_for, publishers=publishers,
                     readiness_probes={**probes, "background_tasks": background_tasks})
    return ctx, realtime


def webhook_policy(settings: Settings) -> Policy:
    return Policy(settings.webhook_allow_private, settings.webhook_timeout_s,
                  settings.webhook_poll_s, settings.webhook_retry_first_s,
                  settings.webhook_retry_cap_s, settings.webhook_retry_window_s)


def _object_store(settings: Settings) -> ObjectStore:
    if settings.s3_bucket:
        return S3Store(settings.s3_bucket, settings.s3_endpoint_url, settings.s3_public_url)
    return LocalDirectoryStore(settings.results_dir, (settings.public_url or "") + "/results")


async def _open_providers(stack: contextlib.AsyncExitStack, settings: Settings, db: Database,
                          http: httpx.AsyncClient) -> tuple[SecretFor, dict[str, Any]]:
    """Each generation provider, and the webhook secret each one signs its callbacks with."""
    generated = await stored_secret(db, "webhook_secret")

    def secret_for(provider: str) -> str | None:
        return (settings.webhook_secrets.get(provider) or settings.webhook_secret
                or (generated if provider == SIMULATED else None))

    simulated = SimulatedProvider(lambda: secret_for(SIMULATED) or generated, http)
    stack.push_async_callback(simulated.stop)
    return secret_for, {SIMULATED: simulated}


async def _open_realtime(stack: contextlib.AsyncExitStack, settings: Settings,
                         auth: Authenticator, db: Database,
                         clock: Clock) -> tuple[Realtime, dict[str, Probe]]:
    """Live push, started, and its readiness probes."""
    broker: Broker = (RedisBroker(settings.redis_url, "drop_publish_once" in settings.faults)
                      if settings.redis_url else InProcessBroker())
    hub = Hub(SqlEventJournal(db, clock), broker, settings.resync_interval_s)

    async def authenticate(conn: HTTPConnection) -> Viewer:
        try:
            return await auth.principal(conn, allow_query_token=True)
        except ApiError as exc:
            raise StreamAuthError(exc.code, exc.message) from exc

    async def verify_token(token: str) -> Viewer:
        try:
            return await auth.from_token(token)
        except ApiError as exc:
            raise StreamAuthError(exc.code, exc.message) from exc

    async def recheck(viewer: Viewer) -> None:
        if isinstance(viewer, Principal):
            try:
                await auth.recheck(viewer)
            except ApiError as exc:
                raise StreamAuthError(exc.code, exc.message) from exc

    config = StreamConfig(authenticate, verify_token, frozenset(settings.cors_origins),
                          settings.heartbeat_s, settings.stream_queue_size,
                          max_connections_per_account=settings.max_streams_per_account,
                          clock=lambda: clock.now().timestamp(), recheck=recheck)
    stack.push_async_callback(hub.stop)  # also after a start that failed halfway
    await hub.start()
    return Realtime(hub, config), ({"redis": broker.ping} if settings.redis_url else {})


def _supervise(stack: contextlib.AsyncExitStack, heartbeat: supervision.Heartbeat,
               run: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run a background task until shutdown, which lets a pass in progress finish first."""
    stopping = asyncio.Event()
    task = heartbeat.watch(asyncio.create_task(run(stopping)))

    async def stop() -> None:
        stopping.set()
        _, late = await asyncio.wait([task], timeout=SHUTDOWN_PATIENCE_S)
        for pending in late:
            pending.cancel()
        await asyncio.gather(task, return_exceptions=True)

    stack.push_async_callback(stop)


def _stopping(heartbeats: list[supervision.Heartbeat]) -> None:
    # at shutdown an ended task is not a dead one
    for heartbeat in heartbeats:
        heartbeat.stopping = True


async def _dispose(db: Database) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(db.dispose(), SHUTDOWN_PATIENCE_S)


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
