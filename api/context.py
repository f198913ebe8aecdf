"""What every route needs, built once in the lifespan and found on `app.state.ctx`."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

import metrics
from api.auth import Authenticator, Principal
from api.errors import ApiError, to_status_and_body
from api.responses import JSONResponse
from api.tokens import TokenSigner
from config import Settings
from core.errors import CreditError
from core.events import Event
from core.job_service import JobService
from core.ports import ObjectStore
from core.service import CreditService
from egress import Egress
from storage.sql import Database
from storage.writes.batch import NOTHING, Touches
from storage.writes.idempotency import IdempotencyKey, IdempotencyStore, KeyedResult
from storage.writes.operation import OperationUnitOfWork
from storage.writes.writer import BatchWriter

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
    jobs: JobService
    store: ObjectStore
    egress: Egress
    wait_for_events: Callable[[str, int, float], Awaitable[None]]
    providers: dict[str, Any]
    webhook_secrets: Callable[[str], str | None]
    publishers: list[Publisher] = field(default_factory=list)
    readiness_probes: dict[str, Callable[[], Awaitable[Any]]] = field(default_factory=dict)

    def count_webhook_rejection(self, provider: str, reason: str) -> None:
        metrics.WEBHOOK_REJECTIONS.labels(provider, reason).inc()
        log.warning("webhook from %s rejected: %s", provider, reason)

    async def principal(self, conn: HTTPConnection, allow_query_token: bool = False) -> Principal:
        return await self.auth.principal(conn, allow_query_token)

    async def execute(
        self,
        request: Request,
        principal: Principal,
        canonical_body: bytes,
        action: Action,
        touches: Touches = NOTHING,
    ) -> Response:
        """Run a mutating action in the next write batch, exactly once per Idempotency-Key."""
        result = await self.execute_once(request, principal, canonical_body, action, touches)
        headers = {"Idempotent-Replayed": "true"} if result.replayed else None
        return JSONResponse(result.body, status_code=result.status, headers=headers)

    async def execute_once(
        self,
        request: Request,
        principal: Principal,
        canonical_body: bytes,
        action: Action,
        touches: Touches = NOTHING,
    ) -> KeyedResult:
        """`execute`'s result before it becomes a response: for routes that answer in their
        own shape."""
        operation = operation_name(request)
        try:
            result = await self._execute(request, principal, canonical_body, action, touches)
        except (CreditError, ApiError) as exc:
            metrics.OPERATIONS.labels(operation, getattr(exc, "code", "error")).inc()
            raise
        outcome = "ok" if result.status < 400 else _error_code(result)
        metrics.OPERATIONS.labels(operation, outcome).inc()
        return result

    async def _execute(
        self,
        request: Request,
        principal: Principal,
        canonical_body: bytes,
        action: Action,
        touches: Touches,
    ) -> KeyedResult:
        key = request.headers.get("idempotency-key")
        if key is None:
            status, body = await self.transact(action, touches)
            return KeyedResult(status, body)
        if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
            # control characters (NUL above all: PostgreSQL cannot store it) name no request
            raise ApiError(
                400,
                "invalid_idempotency_key",
                f"Expected an Idempotency-Key of 1-{MAX_KEY_LENGTH} printable characters",
            )
        fingerprint = hashlib.sha256(
            b"%s %s\n%s" % (request.method.encode(), _url_path(request).encode(), canonical_body)
        ).hexdigest()
        return await self.writer.run_keyed(
            action, IdempotencyKey(principal.scope, key, fingerprint), stored_refusal, touches
        )

    async def transact(
        self, action: Callable[[UnitOfWork], Awaitable[T]], touches: Touches = NOTHING
    ) -> T:
        """Run `action` in the next write batch (one transaction with its batch-mates)."""
        return await self.writer.run(action, touches)

    async def publish(self, events: list[Event]) -> None:
        if not events:
            return
        if "crash_after_commit" in self.settings.faults and any(
            getattr(e, "ref", None) == CRASH_REF for e in events
        ):
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
    route = request.scope.get("route")
    if route is None:
        return _operation_of(request.scope["path"])
    name = _OPERATIONS.get(route.path)
    if name is None:
        name = _OPERATIONS[route.path] = _operation_of(route.path)
    return name


_OPERATIONS: dict[str, str] = {}  # by route template: as many as there are routes


def _operation_of(path: str) -> str:
    words = [w for w in path.split("/") if w and not w.startswith("{")]
    return words[-1].removesuffix("s") if words else "unknown"


def _url_path(request: Request) -> str:
    """`request.url.path` without building the URL: the path as the scope has it, unless it has
    a character the URL escapes."""
    path: str = request.scope["path"]
    if "?" in path or "#" in path or "\\" in path or path.startswith("//"):
        return request.url.path
    return path


def _error_code(result: KeyedResult) -> str:
    try:
        return str(result.body["error"]["code"])
    except (KeyError, TypeError):
        return str(result.status)
