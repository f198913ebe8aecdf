"""What every route needs, built once in the lifespan and found on `app.state.ctx`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy.exc import IntegrityError
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

import metrics
from api.auth import Authenticator, Principal
from api.errors import ApiError, to_status_and_body
from api.tokens import TokenSigner
from config import Settings
from core.errors import ConcurrentUpdate, CreditError, RequestInProgress
from core.events import Event
from core.job_service import JobService
from core.ports import ObjectStore
from core.service import CreditService
from storage.idempotency import IdempotencyStore
from storage.sql import Database, SqlUnitOfWork

log = logging.getLogger("creditstream.api")

Action = Callable[[SqlUnitOfWork], Awaitable[tuple[int, dict[str, Any]]]]
Publisher = Callable[[list[Event]], Awaitable[None]]
TRANSACTION_ATTEMPTS = 3
MAX_KEY_LENGTH = 255
CRASH_REF = "fault:crash-after-commit"


@dataclass
class AppContext:
    settings: Settings
    db: Database
    service: CreditService
    signer: TokenSigner
    auth: Authenticator
    idempotency: IdempotencyStore
    publishers: list[Publisher] = field(default_factory=list)
    readiness_probes: dict[str, Callable[[], Awaitable[Any]]] = field(default_factory=dict)
    wait_for_events: Callable[[str, int, float], Awaitable[None]] | None = None
    jobs: JobService | None = None
    store: ObjectStore | None = None
    http: httpx.AsyncClient | None = None
    providers: dict[str, Any] = field(default_factory=dict)
    webhook_secrets: Callable[[str], str | None] = lambda provider: None

    def count_webhook_rejection(self, provider: str, reason: str) -> None:
        metrics.WEBHOOK_REJECTIONS.labels(provider, reason).inc()
        log.warning("webhook from %s rejected: %s", provider, reason)

    async def principal(self, conn: HTTPConnection, allow_query_token: bool = False) -> Principal:
        return await self.auth.principal(conn, allow_query_token)

    async def execute(self, request: Request, principal: Principal, canonical_body: bytes,
                      action: Action) -> Response:
        """Run a mutating action in one transaction, exactly once per Idempotency-Key."""
        operation = operation_name(request)
        try:
            response = await self._execute(request, principal, canonical_body, action)
        except (CreditError, ApiError) as exc:
            metrics.OPERATIONS.labels(operation, getattr(exc, "code", "error")).inc()
            raise
        outcome = "ok" if response.status_code < 400 else _error_code(response)
        metrics.OPERATIONS.labels(operation, outcome).inc()
        return response

    async def _execute(self, request: Request, principal: Principal, canonical_body: bytes,
                       action: Action) -> Response:
        key = request.headers.get("idempotency-key")
        if key is None:
            status, body = await self.transact(action)
            return JSONResponse(body, status_code=status)
        if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
            # control characters (NUL above all: PostgreSQL cannot store it) name no request
            raise ApiError(400, "invalid_idempotency_key", "Expected an Idempotency-Key of "
                           f"1-{MAX_KEY_LENGTH} printable characters")
        return await self._execute_once(request, principal, key, canonical_body, action)

    async def transact(self, action: Action,
                       before_commit: Action | None = None) -> tuple[int, dict[str, Any]]:
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            try:
                async with self.db.transaction() as uow:
                    status, body = await action(uow)
                    if before_commit is not None:
                        await before_commit(uow)
                await self.publish(uow.saved_events)
                for callback in uow.after_commit:
                    callback()
                return status, body
            except (ConcurrentUpdate, IntegrityError) as exc:
                if attempt == TRANSACTION_ATTEMPTS:
                    raise ConcurrentUpdate("The account changed concurrently; retry the "
                                           "request") from exc
        raise AssertionError("unreachable")

    async def publish(self, events: list[Event]) -> None:
        if not events:
            return
        if "crash_after_commit" in self.settings.faults and any(
                getattr(e, "ref", None) == CRASH_REF for e in events):
            os.kill(os.getpid(), signal.SIGKILL)  # fault injection: die between commit and publish
        for publisher in self.publishers:
            try:
                await publisher(events)
            except Exception:  # the journal repairs a lost push; a request must not fail for it
                log.exception("publishing %d events failed", len(events))

    async def _execute_once(self, request: Request, principal: Principal, key: str,
                            canonical_body: bytes, action: Action) -> Response:
        fingerprint = hashlib.sha256(
            b"%s %s\n%s" % (request.method.encode(), request.url.path.encode(), canonical_body)
        ).hexdigest()
        store, scope = self.idempotency, principal.scope
        claim = await store.claim(scope, key, fingerprint, self.service.now())
        waited = 0.0
        while claim.outcome == "busy" and waited < self.settings.idempotency_wait_s:
            await asyncio.sleep(0.05)
            waited += 0.05
            claim = await store.claim(scope, key, fingerprint, self.service.now())
        if claim.outcome == "mismatch":
            raise ApiError(422, "idempotency_key_reused", "This Idempotency-Key was used with "
                           "a different request; use a new key for a new request")
        if claim.outcome == "busy":
            raise ApiError(409, "request_in_progress", "A request with this Idempotency-Key "
                           "is still running; retry later")
        if claim.outcome == "replay":
            metrics.IDEMPOTENT_REPLAYS.inc()
            return JSONResponse(claim.body, status_code=claim.status or 200,
                                headers={"Idempotent-Replayed": "true"})
        assert claim.locked_at is not None
        locked_at = claim.locked_at
        outcome: list[Any] = []

        async def run(uow: SqlUnitOfWork) -> tuple[int, dict[str, Any]]:
            outcome[:] = await action(uow)
            return outcome[0], outcome[1]

        async def store_response(uow: SqlUnitOfWork) -> tuple[int, dict[str, Any]]:
            await store.complete_in(uow.conn, scope, key, locked_at, outcome[0], outcome[1])
            return outcome[0], outcome[1]

        try:
            status, body = await self.transact(run, before_commit=store_response)
        except (ConcurrentUpdate, RequestInProgress):
            await _quietly(store.abandon(scope, key, locked_at))  # transient: let a retry run
            raise
        except (CreditError, ApiError) as exc:
            # a refusal is a result too: the same key gets the same answer
            status, body, headers = to_status_and_body(exc)
            await store.complete(scope, key, locked_at, status, body)
            return JSONResponse(body, status_code=status, headers=headers)
        except BaseException:
            await _quietly(store.abandon(scope, key, locked_at))
            raise
        return JSONResponse(body, status_code=status)


def operation_name(request: Request) -> str:
    """`hold`, `capture`, `charge`, … from the route template, for the operations metric."""
    path = getattr(request.scope.get("route"), "path", request.url.path)
    words = [w for w in path.split("/") if w and not w.startswith("{")]
    return words[-1].removesuffix("s") if words else "unknown"


def _error_code(response: Response) -> str:
    try:
        return str(json.loads(bytes(response.body))["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return str(response.status_code)


async def _quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:
        log.warning("could not release an idempotency key after a failure", exc_info=True)
