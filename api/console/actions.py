"""What an operator does from the console: grant credits, refund a charge or a capture, release
a hold, get a stream ticket for the account on screen, and enable a webhook endpoint again, send
it a test event or resend an account's events from a seq. Each change is the same use case
on the same write path as its /v1 route, with the operator's name in its journal line."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from api.body import parse
from api.console.session import signed_in
from api.errors import ApiError
from api.request import ctx_of
from api.responses import JSONResponse
from api.routes import webhook_endpoints  # the /v1 handlers, behind the console session
from api.routes.refunds import refund_touches
from api.routes.stream_tickets import TICKET_TTL_S
from api.schemas import Body, RefundBody
from core.errors import NotFound
from core.events import iso
from core.model import MAX_AMOUNT, normalise_account_id
from storage.stream_tickets import issue_ticket
from storage.writes.batch import Touches
from storage.writes.operation import OperationUnitOfWork

HOLD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
REASON = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@ -]+$")


class ConsoleGrantBody(Body):
    amount: int = Field(ge=1, le=MAX_AMOUNT)
    reason: str = REASON
    # JSON has no datetime type: this one field parses an ISO 8601 string
    expires_at: datetime | None = Field(default=None, strict=False)


class ConsoleRefundBody(RefundBody):
    reason: str = REASON  # an operator says why; no default


class ConsoleReleaseBody(Body):
    reason: str = REASON


def _by(operator: str) -> dict[str, Any]:
    return {"operator": operator}


async def grant(request: Request) -> Response:
    session = await signed_in(request)
    ctx = ctx_of(request)
    account_id = normalise_account_id(request.path_params["account_id"])
    body, _ = await parse(request, ConsoleGrantBody)
    if body.expires_at is not None and body.expires_at.tzinfo is None:
        raise ApiError(422, "validation_error", "expires_at needs a timezone, e.g. …Z")

    async def action(uow: OperationUnitOfWork) -> tuple[int, dict[str, Any]]:
        await ctx.service.read_account(uow, account_id)  # the console grants to known accounts
        made, account = await ctx.service.grant(
            uow,
            account_id,
            body.amount,
            body.reason,
            body.expires_at,
            details=_by(session.operator),
        )
        return 201, {"grant": made.to_dict(), "account": account.snapshot(ctx.service.now())}

    status, payload = await ctx.transact(action, Touches(accounts=(account_id,)))
    return JSONResponse(payload, status_code=status)


async def refund(request: Request) -> Response:
    session = await signed_in(request)
    ctx = ctx_of(request)
    body, _ = await parse(request, ConsoleRefundBody)
    spend_id, kind = body.spend()
    touches = await refund_touches(ctx, spend_id, kind)

    async def action(uow: OperationUnitOfWork) -> tuple[int, dict[str, Any]]:
        made, account = await ctx.service.refund(
            uow,
            spend_id,
            kind,
            body.amount,
            body.reason,
            metadata={**(body.metadata or {}), **_by(session.operator)},
        )
        return 201, {"refund": made, "account": account.snapshot(ctx.service.now())}

    status, payload = await ctx.transact(action, touches)
    return JSONResponse(payload, status_code=status)


async def release(request: Request) -> Response:
    session = await signed_in(request)
    ctx = ctx_of(request)
    hold_id = request.path_params["hold_id"]
    if not HOLD_ID.fullmatch(hold_id):
        raise NotFound(f"No hold {hold_id[:64]!r}")
    body, _ = await parse(request, ConsoleReleaseBody)

    async def action(uow: OperationUnitOfWork) -> tuple[int, dict[str, Any]]:
        hold, account = await ctx.service.release(
            uow, hold_id, body.reason, details=_by(session.operator)
        )
        return 200, {"hold": hold.to_dict(), "account": account.snapshot(ctx.service.now())}

    status, payload = await ctx.transact(action, Touches(holds=(hold_id,)))
    return JSONResponse(payload, status_code=status)


async def stream_ticket(request: Request) -> Response:
    """A one-use ticket for the account on screen, stored as `POST /v1/stream-tickets` stores
    them; the stream it opens ends when the session does."""
    session = await signed_in(request)
    ctx = ctx_of(request)
    account_id = normalise_account_id(request.path_params["account_id"])
    ticket, expires_at = await issue_ticket(
        ctx.db, account_id, session.expires_at, ctx.service.now().timestamp(), TICKET_TTL_S
    )
    return JSONResponse(
        {
            "ticket": ticket,
            "account_id": account_id,
            "expires_at": iso(datetime.fromtimestamp(expires_at, UTC)),
        },
        status_code=201,
    )


async def enable_endpoint(request: Request) -> Response:
    await signed_in(request)
    return await webhook_endpoints.enable(ctx_of(request), request)


async def send_test_event(request: Request) -> Response:
    await signed_in(request)
    return await webhook_endpoints.send_test(ctx_of(request), request)


async def resend_events(request: Request) -> Response:
    await signed_in(request)
    return await webhook_endpoints.resend(ctx_of(request), request)
