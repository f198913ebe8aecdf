"""Composition root: settings from the environment, routes, and the lifespan that opens what
wiring.py lists.

Run with `uvicorn asgi:app` (or `creditstream serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

import realtime
from api import openapi
from api.console.routes import console_routes
from api.demo import demo_routes
from api.docs_page import docs_routes
from api.errors import EXCEPTION_HANDLERS
from api.hot_path import HotRoutes
from api.observability import (
    ObservabilityMiddleware,
    configure_logging,
    observe_http,
    observe_websocket,
    redact_tokens_in_logs,
)
from api.results import ResultFiles
from api.routes.seeds import SEED_ROUTES
from api.routes.table import V1_ROUTES
from api.routing import starlette_routes
from api.startup import StartupError, announce, startup_problem
from config import ConfigError, Settings
from core.plans import PlanCatalogue, packaged_plans
from core.ports import Clock, SystemClock
from core.pricing import Catalogue
from core.version import VERSION
from egress import Resolve, system_resolve
from realtime.sse import sse_endpoint
from realtime.websocket import stream_app, stream_endpoint
from storage.migrate import upgrade_async
from wiring import open_context

STREAM_PATH = "/v1/stream"
log = logging.getLogger("creditstream")
STATIC_DIR = Path(realtime.__file__).resolve().parent / "static"  # the browser SDK, the demo page
API_ROUTES = V1_ROUTES + SEED_ROUTES  # the whole HTTP API, one table for routing and the document


# The young generation's threshold in a served process (the interpreter's default is 700). A
# write batch in flight keeps a few thousand young objects alive until it answers, so at 700 the
# collector ran ~290 young collections a second under a write load, each walking that batch, and
# with them a full collection every ~0.4 s: ~11 % of the server's CPU (docs/PERFORMANCE.md).
# Above what a batch keeps alive, a young collection runs only when garbage or long-lived objects
# really pile up: ~3 a second, ~2 ms each. What cyclic garbage can wait for its collection grows
# by this many objects, a few MB at most.
YOUNG_THRESHOLD = 10_000


def load_catalogue(path: str | None) -> Catalogue:
    """The price catalogue, validated now so a bad file stops the start, not a request."""
    text = (
        Path(path).read_text(encoding="utf-8")
        if path
        else resources.files("core").joinpath("pricing.toml").read_text(encoding="utf-8")
    )
    return Catalogue.from_toml(text)


def load_plans(path: str | None, catalogue: Catalogue) -> PlanCatalogue:
    """Plans and feature limits, validated now (also against the price catalogue's
    operations) so a bad file stops the start."""
    plans = (
        PlanCatalogue.from_toml(Path(path).read_text(encoding="utf-8"))
        if path
        else packaged_plans()
    )
    plans.check_operations(catalogue.operations)
    return plans


def create_app(
    settings: Settings | None = None,
    clock: Clock | None = None,
    run_sweeper: bool = True,
    auto_migrate: bool = True,
    announce_start: bool = True,
    resolve: Resolve = system_resolve,
    freeze_after_start: bool = False,
) -> Starlette:
    """`announce_start=False`: `creditstream serve` printed the summary and made dev mode's key
    itself, once, before its workers started. `resolve` answers the outbound-HTTP room's name
    look-ups (a test steers it). `freeze_after_start`: what start-up made (modules, routes, pools:
    ~140,000 objects) moves out of the cyclic collector's way once it is done (`gc.freeze()`);
    the served app does it, not the many apps a test process makes."""
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
        async with contextlib.AsyncExitStack() as stack:
            try:
                if auto_migrate and settings.auto_migrate:
                    await upgrade_async(settings.database_url)
                ctx, realtime = await open_context(
                    stack, settings, catalogue, plans, clock, run_sweeper, resolve
                )
            except Exception as exc:
                problem = startup_problem(exc, settings)
                if problem is None:
                    raise
                # uvicorn prints this line instead of the traceback (CreditstreamApp below)
                app.state.startup_problem = f"creditstream: {problem}"
                raise StartupError(problem) from None
            app.state.ctx, app.state.realtime = ctx, realtime
            _chain_sigterm(realtime.begin_shutdown)
            if announce_start:
                await announce(ctx.db, settings)
            if freeze_after_start:
                # every full collection walked all of it: ~100 ms each, a fifth of the CPU of
                # a write load; frozen, they walk only what is newer (reference counting still
                # frees a frozen object; the stream policy, realtime/gc_policy.py, thaws and
                # freezes again as streams turn over)
                gc.collect()
                gc.freeze()
                gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
            yield

    routes = (
        starlette_routes(API_ROUTES)
        + [
            Route("/v1/stream/sse", sse_endpoint, methods=["GET"]),
            WebSocketRoute(STREAM_PATH, stream_endpoint),
            Mount(
                "/results",
                ResultFiles(directory=settings.results_dir, check_dir=False),
                name="results",
            ),
        ]
        + docs_routes()
        + console_routes(settings.console)
        + demo_routes(STATIC_DIR, dev=settings.dev)
    )
    middleware = [Middleware(ObservabilityMiddleware)]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "PUT", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
                expose_headers=["Idempotent-Replayed", "Retry-After"],
            )
        )
    app = CreditstreamApp(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.hot = HotRoutes(
        app.router.routes, EXCEPTION_HANDLERS, skip_origin=bool(settings.cors_origins)
    )
    app.state.openapi = openapi.build(API_ROUTES, VERSION)
    return app


class CreditstreamApp(Starlette):
    """Starlette, with `/v1/stream` WebSockets handed straight to their endpoint. A stream stays
    open for hours: through the middleware stack and the router it would keep a dozen coroutine
    frames alive (~4 KiB a connection) and pass every message it sends through each layer. The
    request id and its `X-Request-ID` stay; CORS and the error pages concern HTTP only.

    The write routes every generation calls take one pass too (api/hot_path.py), with the
    request id, metrics and access line of every request."""

    hot: HotRoutes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await super().__call__(scope, receive, self._plain_startup_failure(send))
            return
        if scope["type"] == "websocket" and _route_path(scope) == STREAM_PATH:
            scope["app"] = self
            await observe_websocket(stream_app, scope, receive, send)
            return
        if scope["type"] == "http" and self.hot is not None and self.hot.match(scope):
            scope["app"] = self
            await observe_http(self.hot.serve, scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _plain_startup_failure(self, send: Send) -> Send:
        """A start that failed for a reason said in one line (a wrong database URL, say)
        reaches uvicorn as that line, not as Starlette's traceback."""

        async def plain(message: Any) -> None:
            problem = getattr(self.state, "startup_problem", None)
            if message["type"] == "lifespan.startup.failed" and problem:
                message = {**message, "message": problem}
            await send(message)

        return plain


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


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
    # `served_app`: the app as `creditstream serve` runs it, which announced the start itself
    if name in ("app", "served_app"):
        try:
            application = create_app(announce_start=name == "app", freeze_after_start=True)
        except ConfigError as exc:  # one clear line, not a traceback from inside uvicorn
            print(f"creditstream: configuration error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        globals()[name] = application
        return application
    raise AttributeError(name)
