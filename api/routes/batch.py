"""`POST /v1/batch`: up to 1,000 holds, captures, releases, charges, grants and refunds in one
request and one transaction, each with its own result, in order.

A part's refusal (402, 404, 409, 422, 429) is that part's result and leaves nothing behind; the
others still apply. The request as a whole is idempotent like every POST: its Idempotency-Key
replays the whole list of results.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from api.body import parse
from api.context import AppContext
from api.errors import ApiError, error_body, to_status_and_body
from api.request import ctx_of
from api.schemas import (
    Body,
    CaptureBody,
    ChargeBody,
    GrantBody,
    HoldBody,
    RefundBody,
    ReleaseBody,
)
from core.errors import CreditError
from storage.writes.batch import Touches
from storage.writes.operation import OperationUnitOfWork

log = logging.getLogger("creditstream.api")
MAX_OPERATIONS = 1000
MAX_BATCH_BODY_BYTES = 1024 * 1024
AccountId = Annotated[str, Field(min_length=1, max_length=128)]
HoldId = Annotated[str, Field(min_length=1, max_length=64)]


class BatchHold(HoldBody):
    op: Literal["hold"]
    account_id: AccountId  # required here


class BatchCapture(CaptureBody):
    op: Literal["capture"]
    hold_id: HoldId


class BatchRelease(ReleaseBody):
    op: Literal["release"]
    hold_id: HoldId


class BatchCharge(ChargeBody):
    op: Literal["charge"]
    account_id: AccountId


class BatchGrant(GrantBody):
    op: Literal["grant"]
    account_id: AccountId


class BatchRefund(RefundBody):
    op: Literal["refund"]  # charge_id or hold_id, as POST /v1/refunds takes them


Part = Annotated[BatchHold | BatchCapture | BatchRelease | BatchCharge | BatchGrant
                 | BatchRefund, Field(discriminator="op")]


class BatchBody(Body):
    operations: list[Part] = Field(min_length=1, max_length=MAX_OPERATIONS)


async def run_batch(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    principal.require_server()
    body, canonical = await parse(request, BatchBody, MAX_BATCH_BODY_BYTES)
    touches = Touches(
        accounts=tuple(p.account_id for p in body.operations
                       if isinstance(p, (BatchHold, BatchCharge, BatchGrant))),
        holds=tuple(p.hold_id for p in body.operations
                    if isinstance(p, (BatchCapture, BatchRelease))))

    async def action(uow: OperationUnitOfWork) -> tuple[int, dict[str, Any]]:
        results = []
        for part in body.operations:
            unit = uow.part()
            try:
                status, answer = await apply_part(ctx, unit, part)
            except (CreditError, ApiError) as exc:
                status, answer, _ = to_status_and_body(exc)
            except Exception:
                # a bug in one part must not take the others down with it; nothing of it is kept
                log.exception("a batch part failed unexpectedly")
                status, answer = 500, error_body("internal_error", "This operation failed "
                                                 "unexpectedly; nothing of it was applied")
            else:
                uow.adopt(unit)
            results.append({"status": status, "body": answer})
        return 200, {"results": results}

    return await ctx.execute(request, principal, canonical, action, touches)


async def apply_part(ctx: AppContext, uow: OperationUnitOfWork,
                     part: Any) -> tuple[int, dict[str, Any]]:
    """One part, as its own endpoint would have applied it."""
    service, now = ctx.service, ctx.service.now
    if isinstance(part, BatchHold):
        hold, account = await service.hold(
            uow, part.account_id, part.credits(service.quote), part.ttl_seconds, part.ref,
            metadata=part.metadata, price=part.price_request())
        return 201, {"hold": hold.to_dict(), "account": account.snapshot(now())}
    if isinstance(part, BatchCapture):
        hold, account = await service.capture(uow, part.hold_id, part.amount)
        return 200, {"hold": hold.to_dict(), "account": account.snapshot(now())}
    if isinstance(part, BatchRelease):
        hold, account = await service.release(uow, part.hold_id, part.reason)
        return 200, {"hold": hold.to_dict(), "account": account.snapshot(now())}
    if isinstance(part, BatchCharge):
        charge, account = await service.charge(
            uow, part.account_id, part.credits(service.quote), part.reason, part.ref,
            metadata=part.metadata, price=part.price_request())
        return 201, {"charge": charge, "account": account.snapshot(now())}
    if isinstance(part, BatchRefund):
        spend_id, kind = part.spend()
        refund, account = await service.refund(uow, spend_id, kind, part.amount, part.reason,
                                               metadata=part.metadata)
        return 201, {"refund": refund, "account": account.snapshot(now())}
    if part.amount is not None:
        grant, account = await service.grant(
            uow, part.account_id, part.amount, part.reason, part.expires_at, part.ref,
            metadata=part.metadata)
    else:
        grant, account = await service.grant_plan(
            uow, part.account_id, part.plan if part.plan is not None else part.tier, part.ref,
            metadata=part.metadata)
    return 201, {"grant": grant.to_dict(), "account": account.snapshot(now())}
