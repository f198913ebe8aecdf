"""Pricing, quotes, user tokens and health."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

import metrics
from api.body import parse
from api.request import ctx_of
from api.responses import JSONResponse
from api.schemas import QuoteBody, TokenBody
from api.tokens import DEFAULT_TTL_S
from core.events import iso
from core.model import normalise_account_id
from core.plans import TRIAL
from core.version import VERSION


async def pricing(request: Request) -> Response:
    return JSONResponse(ctx_of(request).service.catalogue.to_dict())


async def plans(request: Request) -> Response:
    return JSONResponse(ctx_of(request).service.plans.to_dict())


async def quote(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    body, _ = await parse(request, QuoteBody)
    price = body.request()
    cost = ctx.service.quote(price)
    if body.account_id is None and principal.is_server:
        return JSONResponse({"cost": cost})
    account_id = principal.own_account(body.account_id)
    account = await ctx.db.standby_read(lambda uow: uow.accounts.get(account_id))
    now = ctx.service.now()
    # an account never used yet would be opened with its trial grant by the first hold
    available = TRIAL.credits if account is None else account.available
    on_trial = account is None or account.trial_active(now)
    spent_today = 0 if account is None else account.spent_today(now)
    within_daily_limit = not on_trial or spent_today + cost <= TRIAL.daily_limit
    limit = ctx.service.feature_limit(price)
    feature = (
        None
        if limit is None
        else limit.status(
            None if account is None else account.plan,
            {} if account is None else account.feature_usage,
            now,
        )
    )
    within_feature_limit = feature is None or feature["remaining"] > 0
    answer: dict[str, Any] = {
        "cost": cost,
        "account_id": account_id,
        "available": available,
        "affordable": cost <= available and within_daily_limit and within_feature_limit,
        "shortfall": max(0, cost - available),
    }
    if on_trial:
        answer["daily_limit_remaining"] = max(0, TRIAL.daily_limit - spent_today)
    if feature is not None:
        answer["feature_limit"] = feature  # seed 004's canPerformAction, on the plan's limit
    return JSONResponse(answer)


async def create_token(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    principal.require_server()
    body, _ = await parse(request, TokenBody)
    account_id = normalise_account_id(body.account_id)
    token, expires_at = ctx.signer.issue(
        account_id, ctx.service.now(), body.ttl_seconds or DEFAULT_TTL_S
    )
    return JSONResponse({"token": token, "account_id": account_id, "expires_at": iso(expires_at)})


async def stream_upgrade_required(request: Request) -> Response:
    """`GET /v1/stream` without a WebSocket upgrade: say what the endpoint speaks (RFC 9110
    §15.5.22), rather than a 404 that suggests the route does not exist."""
    return JSONResponse(
        {
            "error": {
                "code": "upgrade_required",
                "message": "GET /v1/stream is a WebSocket "
                "endpoint: open it with a WebSocket client (Upgrade: websocket), or use "
                "GET /v1/stream/sse for Server-Sent Events",
            }
        },
        status_code=426,
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
    )


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "version": VERSION})


async def readyz(request: Request) -> Response:
    ctx = ctx_of(request)
    checks: dict[str, str] = {}
    try:
        await ctx.db.ping()
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; the reason is reported
        checks["database"] = f"unavailable: {type(exc).__name__}"
    for name, probe in ctx.readiness_probes.items():
        try:
            await probe()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


async def prometheus_metrics(request: Request) -> Response:
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def openapi_document(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)
