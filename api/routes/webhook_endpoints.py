"""Outbound webhook endpoints (server key): register one (its signing secret is shown once),
list them, remove one, see an endpoint's delivery attempts, enable a disabled one again, send
it a test event, and resend an account's events from a seq. Delivery is
background/webhook_delivery.py."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from api.auth import Principal
from api.body import parse
from api.context import MAX_KEY_LENGTH, AppContext
from api.errors import ApiError
from api.request import MAX_PAGE, ctx_of, int_param
from api.responses import JSONResponse
from api.schemas import WebhookEndpointBody, WebhookResendBody
from background.webhook_sending import send_signed
from core.errors import NotFound
from core.events import iso
from core.model import normalise_account_id
from egress import UrlRefused
from storage.webhook_deliveries import Attempt, WebhookDeliveries
from storage.webhook_endpoint_record import Endpoint
from storage.webhook_endpoints import WebhookEndpoints
from storage.writes.idempotency import IdempotencyKey


async def create_endpoint(request: Request) -> Response:
    ctx, principal = await _server(request)
    body, canonical = await parse(request, WebhookEndpointBody)
    try:
        await ctx.egress.check(body.url, ctx.egress.webhooks)
    except UrlRefused as exc:
        raise ApiError(422, exc.code, str(exc)) from exc
    key = _idempotency_key(request, principal.scope, canonical)
    result = await WebhookEndpoints(ctx.db).create(
        body.url,
        list(dict.fromkeys(body.events)),
        datetime.now(UTC),
        key,
        lambda endpoint: endpoint.to_dict(with_secret=True),
    )
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return JSONResponse(result.body, status_code=result.status, headers=headers)


async def list_endpoints(request: Request) -> Response:
    ctx, _ = await _server(request)
    registered = await WebhookEndpoints(ctx.db).registered()
    return JSONResponse({"endpoints": [e.to_dict() for e in registered]})


async def delete_endpoint(request: Request) -> Response:
    ctx, _ = await _server(request)
    removed = await WebhookEndpoints(ctx.db).delete(request.path_params["endpoint_id"])
    if removed is None:
        raise _not_found(request)
    return JSONResponse({**removed.to_dict(), "deleted": True})


async def list_deliveries(request: Request) -> Response:
    ctx, _ = await _server(request)
    limit = int_param(request, "limit", 100, 1, MAX_PAGE)
    store = WebhookEndpoints(ctx.db)
    endpoint: Endpoint | None = await store.get(request.path_params["endpoint_id"])
    if endpoint is None:
        raise _not_found(request)
    return JSONResponse(
        {
            "endpoint": endpoint.to_dict(),
            "deliveries": await store.attempts(endpoint.endpoint_id, limit),
        }
    )


async def enable_endpoint(request: Request) -> Response:
    """A disabled endpoint enabled again, due now; deliveries resume from its cursors."""
    ctx, _ = await _server(request)
    return await enable(ctx, request)


async def enable(ctx: AppContext, request: Request) -> Response:
    """What `enable_endpoint` does once the caller may (a server key, or an operator's console
    session: api/console/actions.py)."""
    endpoint = await WebhookEndpoints(ctx.db).enable(
        request.path_params["endpoint_id"], datetime.now(UTC)
    )
    if endpoint is None:
        raise _not_found(request)
    return JSONResponse(endpoint.to_dict())


TEST_EVENT = "webhook.test"


async def send_test_event(request: Request) -> Response:
    """One signed `webhook.test` event to the endpoint now, as a delivery is sent (egress's
    address rules and deadline), disabled or not; recorded with its attempts, no cursor moved."""
    ctx, _ = await _server(request)
    return await send_test(ctx, request)


async def send_test(ctx: AppContext, request: Request) -> Response:
    """What `send_test_event` does once the caller may (a server key, or an operator's console
    session: api/console/actions.py)."""
    endpoint = await WebhookEndpoints(ctx.db).get(request.path_params["endpoint_id"])
    if endpoint is None:
        raise _not_found(request)
    at = datetime.now(UTC)
    event_id = f"evt_test_{uuid.uuid4().hex}"
    event = {
        "type": TEST_EVENT,
        "id": event_id,
        "endpoint_id": endpoint.endpoint_id,
        "created_at": iso(at),
    }
    body = json.dumps(event, separators=(",", ":")).encode()
    sent = await send_signed(ctx.egress, endpoint.url, endpoint.secret, body, TEST_EVENT, event_id)
    attempt = Attempt("", 0, TEST_EVENT, sent.status_code, sent.error, sent.duration_ms, at)
    if not await WebhookDeliveries(ctx.db).record_attempt(endpoint.endpoint_id, attempt):
        raise _not_found(request)  # deleted while the test was in flight
    return JSONResponse(
        {
            "ok": sent.ok,
            "status_code": sent.status_code,
            "error": sent.error,
            "duration_ms": sent.duration_ms,
            "event": event,
        }
    )


async def resend_events(request: Request) -> Response:
    """Move the endpoint's cursor for an account back, so its events from `from_seq` are
    delivered again (at least once: receivers dedupe by account and seq)."""
    ctx, _ = await _server(request)
    return await resend(ctx, request)


async def resend(ctx: AppContext, request: Request) -> Response:
    """What `resend_events` does once the caller may (a server key, or an operator's console
    session: api/console/actions.py)."""
    body, _ = await parse(request, WebhookResendBody)
    account_id = normalise_account_id(body.account_id)
    if body.from_seq < 1:
        raise ApiError(
            422, "invalid_from_seq", f"Expected from_seq of at least 1, got {body.from_seq}"
        )
    store = WebhookEndpoints(ctx.db)
    endpoint = await store.get(request.path_params["endpoint_id"])
    if endpoint is None:
        raise _not_found(request)
    rewound = await store.rewind(endpoint, account_id, body.from_seq)
    if rewound is None:
        if await store.get(endpoint.endpoint_id) is None:  # deleted meanwhile
            raise _not_found(request)
        raise NotFound(f"No account {account_id!r}")
    if not rewound.moved:
        raise ApiError(
            422,
            "from_seq_beyond_head",
            f"Expected from_seq of at most the account's head ({rewound.head}), "
            f"got {body.from_seq}",
            head=rewound.head,
        )
    return JSONResponse(
        {"account_id": account_id, "from_seq": body.from_seq, "events": rewound.events},
        status_code=202,
    )


async def _server(request: Request) -> tuple[AppContext, Principal]:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    principal.require_server()
    return ctx, principal


def _not_found(request: Request) -> NotFound:
    return NotFound(f"No webhook endpoint {request.path_params['endpoint_id'][:64]!r}")


def _idempotency_key(request: Request, scope: str, canonical: bytes) -> IdempotencyKey | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Expected an Idempotency-Key of 1-{MAX_KEY_LENGTH} printable characters",
        )
    fingerprint = hashlib.sha256(
        b"%s %s\n%s" % (request.method.encode(), request.url.path.encode(), canonical)
    ).hexdigest()
    return IdempotencyKey(scope, key, fingerprint)
