"""What a running instance opens in its lifespan — the database, the write batcher, live push
(broker and hub), providers, outbound HTTP (egress/), the sweeper and outbound webhooks — each
inside one `AsyncExitStack`, so a failed start closes what it opened and shutdown closes all in
reverse.
asgi.py builds the app around it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import HTTPConnection

from api.auth import Authenticator, Principal
from api.context import AppContext
from api.errors import ApiError
from api.tokens import TokenSigner
from background import supervision
from background.sweeper import Sweeper
from background.webhook_delivery import Deliverer, Policy
from config import Settings
from core.events import Event
from core.job_service import JobService
from core.plans import PlanCatalogue
from core.ports import Clock, ObjectStore
from core.pricing import Catalogue
from core.service import CreditService
from egress import Egress, Resolve, Rules, system_resolve
from providers.simulated import NAME as SIMULATED
from providers.simulated import SimulatedProvider
from realtime.brokers import broker_for
from realtime.hub import Hub
from realtime.streams import Realtime, StreamAuthError, StreamConfig, Viewer
from storage.journal import SqlEventJournal
from storage.keys import stored_secret
from storage.objects import LocalDirectoryStore, S3Store
from storage.retention import EventRetention
from storage.sql import Database
from storage.webhook_deliveries import WebhookDeliveries
from storage.writes.idempotency import IdempotencyStore
from storage.writes.writer import BatchWriter

SHUTDOWN_PATIENCE_S = 5.0
CALLBACK_DEADLINE_S = 30.0
RESULT_REDIRECTS = 3
Probe = Callable[[], Awaitable[Any]]
SecretFor = Callable[[str], str | None]


async def open_context(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    catalogue: Catalogue,
    plans: PlanCatalogue,
    clock: Clock,
    run_sweeper: bool,
    resolve: Resolve = system_resolve,
) -> tuple[AppContext, Realtime]:
    """Everything the routes need, each resource opened inside `stack`: a failure at any step
    closes what the steps before it opened, and shutdown closes all in reverse order."""
    db = Database.from_url(
        settings.database_url, settings.db_pool_size, settings.database_read_urls
    )
    stack.push_async_callback(_dispose, db)
    signer = TokenSigner(
        settings.user_token_secret or await stored_secret(db, "user_token_secret"), clock
    )
    auth = Authenticator(db, signer, clock)
    service = CreditService(
        clock,
        catalogue,
        timedelta(seconds=settings.hold_ttl_s),
        settings.low_credits_threshold,
        plans,
    )
    jobs = JobService(service, timedelta(seconds=settings.hold_ttl_s))
    idempotency = IdempotencyStore(db)
    egress = egress_for(settings, resolve)
    stack.push_async_callback(egress.aclose)
    realtime, probes = await _open_realtime(stack, settings, auth, db, clock)

    async def publish(events: list[Event]) -> None:
        await ctx.publish(events)  # after each batch's commit, before its callers hear

    writer = BatchWriter(
        db, service.now, publish, settings.write_connections, settings.write_batch_max
    )
    stack.push_async_callback(writer.aclose)
    secret_for, providers = await _open_providers(stack, settings, db, egress)
    stack.callback(realtime.begin_shutdown)
    heartbeats = list(realtime.hub.heartbeats)
    publishers: list[Callable[[list[Event]], Awaitable[None]]] = [realtime.publish]
    if run_sweeper:  # the instance's background work: the sweeper and outbound webhooks
        sweeper = Sweeper(
            db,
            service,
            idempotency,
            jobs=jobs,
            writer=writer,
            events_retention=EventRetention(db, timedelta(days=settings.events_retention_days)),
        )
        _supervise(
            stack,
            sweeper.heartbeat,
            lambda stopping: sweeper.run_forever(settings.sweep_interval_s, stopping),
        )
        deliverer = Deliverer(
            WebhookDeliveries(db),
            egress,
            webhook_policy(settings),
            service.now,
            lambda: datetime.now(UTC),
        )
        _supervise(stack, deliverer.heartbeat, deliverer.run_forever)
        heartbeats += [sweeper.heartbeat, deliverer.heartbeat]
        publishers.append(deliverer.wake)
    stack.callback(_stopping, heartbeats)

    async def background_tasks() -> None:  # readiness: 503 while one is dead or stuck
        supervision.check(heartbeats)

    ctx = AppContext(
        settings,
        db,
        service,
        signer,
        auth,
        idempotency,
        writer,
        jobs,
        _object_store(settings),
        egress,
        realtime.hub.wait_beyond,
        providers,
        secret_for,
        publishers=publishers,
        readiness_probes={**probes, "background_tasks": background_tasks},
    )
    return ctx, realtime


def webhook_policy(settings: Settings) -> Policy:
    return Policy(
        settings.webhook_timeout_s,
        settings.webhook_poll_s,
        settings.webhook_retry_first_s,
        settings.webhook_retry_cap_s,
        settings.webhook_retry_window_s,
        settings.webhook_concurrency,
        settings.webhook_stuck_s,
    )


def egress_for(settings: Settings, resolve: Resolve = system_resolve) -> Egress:
    """Every outbound request's rules: webhook deliveries and provider result fetches reach
    public addresses only (unless allowed for a local set-up) and follow no unchecked
    redirect; the built-in provider's callbacks go to this server's own address."""
    return Egress(
        webhooks=Rules(
            "webhooks",
            settings.webhook_allow_private,
            "CREDITSTREAM_WEBHOOK_ALLOW_PRIVATE",
            settings.webhook_timeout_s,
        ),
        results=Rules(
            "results",
            settings.result_fetch_allow_private,
            "CREDITSTREAM_RESULT_FETCH_ALLOW_PRIVATE",
            settings.result_fetch_timeout_s,
            RESULT_REDIRECTS,
        ),
        callbacks=Rules("callbacks", True, "", CALLBACK_DEADLINE_S),
        resolve=resolve,
    )


def _object_store(settings: Settings) -> ObjectStore:
    if settings.s3_bucket:
        return S3Store(settings.s3_bucket, settings.s3_endpoint_url, settings.s3_public_url)
    return LocalDirectoryStore(settings.results_dir, (settings.public_url or "") + "/results")


async def _open_providers(
    stack: contextlib.AsyncExitStack, settings: Settings, db: Database, egress: Egress
) -> tuple[SecretFor, dict[str, Any]]:
    """Each generation provider, and the webhook secret each one signs its callbacks with."""
    generated = await stored_secret(db, "webhook_secret")

    def secret_for(provider: str) -> str | None:
        return (
            settings.webhook_secrets.get(provider)
            or settings.webhook_secret
            or (generated if provider == SIMULATED else None)
        )

    simulated = SimulatedProvider(lambda: secret_for(SIMULATED) or generated, egress)
    stack.push_async_callback(simulated.stop)
    return secret_for, {SIMULATED: simulated}


async def _open_realtime(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    auth: Authenticator,
    db: Database,
    clock: Clock,
) -> tuple[Realtime, dict[str, Probe]]:
    """Live push, started, and its readiness probes."""
    broker = broker_for(settings.redis_url, "drop_publish_once" in settings.faults)
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

    config = StreamConfig(
        authenticate,
        verify_token,
        frozenset(settings.cors_origins),
        settings.heartbeat_s,
        settings.stream_queue_size,
        max_connections_per_account=settings.max_streams_per_account,
        clock=lambda: clock.now().timestamp(),
        recheck=recheck,
    )
    stack.push_async_callback(hub.stop)  # also after a start that failed halfway
    await hub.start()
    return Realtime(hub, config), ({"redis": broker.ping} if settings.redis_url else {})


def _supervise(
    stack: contextlib.AsyncExitStack,
    heartbeat: supervision.Heartbeat,
    run: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
) -> None:
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
