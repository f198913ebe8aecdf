"""Signed webhooks from generation providers and payment providers. A bad signature or a stale
timestamp is refused before anything is read or written; redeliveries have one effect."""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.body import decode_json, read_raw, validate
from api.completion import complete_job
from api.context import AppContext
from api.errors import ApiError
from api.request import ctx_of
from api.responses import JSONResponse
from api.schemas import PaymentEvent, ProviderCallback
from core.errors import NotFound
from core.jobs import FAILED, SUCCESS
from core.signatures import BadSignature, verify
from providers.simulated import NAME as SIMULATED
from storage.writes.batch import Touches
from storage.writes.operation import OperationUnitOfWork

PROVIDER_NAME = re.compile(r"^[a-z0-9_-]{1,32}$")
STATUS_WORDS = {
    "success": SUCCESS,
    "succeeded": SUCCESS,
    "ready": SUCCESS,
    "completed": SUCCESS,
    "failed": FAILED,
    "failure": FAILED,
    "error": FAILED,
}


async def signed_body(request: Request, ctx: AppContext, kind: str) -> tuple[str, Any]:
    """The provider's name and the decoded body of a validly signed webhook.

    `kind` is "provider" (generation callbacks: `CREDITSTREAM_WEBHOOK_SECRET_<NAME>`, else the
    global secret) or "payment" (only `CREDITSTREAM_PAYMENT_SECRET_<NAME>`: a generation
    provider's secret or the global one never awards credits)."""
    provider = request.path_params["provider"]
    if not PROVIDER_NAME.fullmatch(provider):
        raise ApiError(404, "not_found", f"Unknown provider {provider[:40]!r}")
    raw = await read_raw(request)
    settings = ctx.settings
    if kind == "payment":
        secret = settings.payment_secrets.get(provider)
        configured = secret is not None
    else:
        secret = ctx.webhook_secrets(provider)
        configured = provider in settings.webhook_secrets or provider == SIMULATED
    # metric labels come from configuration, never from the caller: one `other` for the rest
    label = provider if configured else "other"
    if secret is None:
        ctx.count_webhook_rejection(label, "no_secret")
        raise ApiError(
            401, "invalid_signature", f"No {kind} webhook secret is configured for {provider}"
        )
    try:
        verify(secret, raw, request.headers.get("x-signature"), time.time())
    except BadSignature as exc:
        ctx.count_webhook_rejection(label, "bad_signature")
        raise ApiError(401, "invalid_signature", str(exc)) from exc
    return provider, decode_json(raw)


async def provider_webhook(request: Request) -> Response:
    ctx = ctx_of(request)
    provider, payload = await signed_body(request, ctx, "provider")
    callback = validate(ProviderCallback, payload)
    status = STATUS_WORDS.get(callback.status.lower())
    if status is None:
        raise ApiError(
            422, "validation_error", f"status: expected SUCCESS or FAILED, got {callback.status!r}"
        )
    result_url = callback.result_url
    if result_url is None and callback.result and isinstance(callback.result.get("sample"), str):
        result_url = callback.result["sample"]
    async with ctx.db.read() as uow:
        job = await uow.jobs.by_task(provider, callback.task_id)
    if job is None:
        raise NotFound(f"No {provider} job with task_id {callback.task_id}")
    outcome = await complete_job(ctx, job.job_id, status, result_url, callback.error)
    return JSONResponse(
        {"status": "processed" if outcome["changed"] else "duplicate", "job": outcome["job"]}
    )


async def payment_webhook(request: Request) -> Response:
    ctx = ctx_of(request)
    provider, payload = await signed_body(request, ctx, "payment")
    event = validate(PaymentEvent, payload)

    async def action(uow: OperationUnitOfWork) -> tuple[int, dict[str, Any]]:
        first = await uow.webhooks.processed(provider, event.event_id)
        if first is not None:  # a redelivery: answer as the first delivery was answered
            return 200, {**first, "status": "duplicate"}
        audit = {"payment_provider": provider, "event_id": event.event_id}
        if event.points is not None:
            grant, account = await ctx.service.grant(
                uow, event.account_id, event.points, "points", ref=event.event_id, details=audit
            )
        else:
            grant, account = await ctx.service.grant_plan(
                uow,
                event.account_id,
                event.plan if event.plan is not None else event.tier,
                ref=event.event_id,
                details=audit,
            )
        body = {
            "status": "awarded",
            "grant": grant.to_dict(),
            "account": account.snapshot(ctx.service.now()),
        }
        await uow.webhooks.record(provider, event.event_id, body)
        return 200, body

    status, body = await ctx.transact(action, Touches(accounts=(event.account_id,)))
    return JSONResponse(body, status_code=status)
