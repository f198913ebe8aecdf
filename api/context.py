"""What every route needs, built once in the lifespan and found on `app.state.ctx`."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

import metrics
from api.auth import Authenticator, Principal
from api.errors import ApiError, to_status_and_body
from api.tokens import TokenSigner
from config import Settings
from core.errors import CreditError
from core.events import Event
from core.job_service import JobService
from core.ports import ObjectStore
from core.service import CreditService
from storage.batch import NOTHING, OperationUnitOfWork, Touches
from storage.idempotency import IdempotencyKey, IdempotencyStore
from storage.sql import Database
from storage.writer import BatchWriter

log = logging.getLogger("creditstream.api")

UnitOfWork = OperationUnitOfWork
Action = Callable[[UnitOfWork], Awaitable[tuple[int, dict[str, Any]]]]
Publisher = Callable[[list[Event]], Awaitable[None]]
T = TypeVar("T")
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
    writer: BatchWriter
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
                      action: Action, touches: Touches = NOTHING) -> Response:
        """Run a mutating action in the next write batch, exactly once per Idempotency-Key."""
        operation = operation_name(request)
        try:
            response = await self._execute(request, principal, canonical_body, action, touches)
        except (CreditError, ApiError) as exc:
            metrics.OPERATIONS.labels(operation, getattr(exc, "code", "error")).inc()
            raise
        outcome = "ok" if response.status_code < 400 else _error_code(response)
        metrics.OPERATIONS.labels(operation, outcome).inc()
        return response

    async def _execute(self, request: Request, principal: Principal, canonical_body: bytes,
                       action: Action, touches: Touches) -> Response:
        key = request.headers.get("idempotency-key")
        if key is None:
            status, body = await self.transact(action, touches)
            return JSONResponse(body, status_code=status)
        if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
            # control characters (NUL above all: PostgreSQL cannot store it) name no request
            raise ApiError(400, "invalid_idempotency_key", "Expected an Idempotency-Key of "
                           f"1-{MAX_KEY_LENGTH} printable characters")
        fingerprint = hashlib.sha256(
            b"%s %s\n%s" % (request.method.encode(), request.url.path.encode(), canonical_body)
        ).hexdigest()
        result = await self.writer.run_keyed(
            action, IdempotencyKey(principal.scope, key, fingerprint), stored_refusal, touches)
        headers = {"Idempotent-Replayed": "true"} if result.replayed else None
        return JSONResponse(result.body, status_code=result.status, headers=headers)

    async def transact(self, action: Callable[[UnitOfWork], Awaitable[T]],
                       touches: Touches = NOTHING) -> T:
        """Run `action` in the next write batch (one transaction with its batch-mates)."""
        return await self.writer.run(action, touches)

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


def stored_refusal(exc: Exception) -> tuple[int, Any] | None:
    """A refusal is a result too: the same key gets the same answer. Other errors are not kept,
    so a retry of the key runs again."""
    if not isinstance(exc, (CreditError, ApiError)):
        return None
    status, body, _ = to_status_and_body(exc)
    return status, body


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
