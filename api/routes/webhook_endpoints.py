"""Outbound webhook endpoints (server key): register one (its signing secret is shown once),
list them, remove one, and see an endpoint's delivery attempts. Delivery is background/webhook_delivery.py."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from api.auth import Principal
from api.body import parse
from api.context import MAX_KEY_LENGTH, AppContext
from api.errors import ApiError
from api.request import MAX_PAGE, ctx_of, int_param
from api.responses import JSONResponse
from api.schemas import WebhookEndpointBody
from core.errors import NotFound
from egress import UrlRefused
from storage.webhook_endpoints import Endpoint, WebhookEndpoints
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
