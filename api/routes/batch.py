"""`POST /v1/batch`: up to 1,000 holds, captures, releases, charges, grants and refunds in one
request and one transaction, each with its own result, in order.

A part's refusal (402, 404, 409, 422, 429) is that part's result and leaves nothing behind; the
others still apply. A batch whose answer would pass MAX_BATCH_ANSWER_BYTES is refused whole
(413 batch_answer_too_large) and leaves nothing behind. The request as a whole is idempotent
like every POST: its Idempotency-Key replays the whole list of results.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Literal

import orjson
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
from core.errors import CreditError, InvalidAccountId
from core.model import normalise_account_id
from storage.writes.batch import Touches
from storage.writes.operation import OperationUnitOfWork
from storage.writes.transaction import IN_DOUBT

log = logging.getLogger("creditstream.api")
MAX_OPERATIONS = 1000
MAX_BATCH_BODY_BYTES = 1024 * 1024
# what one batch may answer (and store for its Idempotency-Key): every answer that echoes what
# its request sent fits, while 1,000 captures of one hold with 25 KB of metadata (a 71 KB
# request, a 26 MB answer) are refused before anything is written
MAX_BATCH_ANSWER_BYTES = 4 * 1024 * 1024
YIELD_EVERY = 50  # parts run between two turns of the event loop
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


Part = Annotated[
    BatchHold | BatchCapture | BatchRelease | BatchCharge | BatchGrant | BatchRefund,
    Field(discriminator="op"),
]


class BatchBody(Body):
    operations: list[Part] = Field(min_length=1, max_length=MAX_OPERATIONS)


async def run_batch(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    principal.require_server()
    body, canonical = await parse(request, BatchBody, MAX_BATCH_BODY_BYTES)
    touches = Touches(
        accounts=tuple(
            a
            for p in body.operations
            if isinstance(p, (BatchHold, BatchCharge, BatchGrant))
            for a in lockable(p.account_id)
        ),
        holds=tuple(
            p.hold_id for p in body.operations if isinstance(p, (BatchCapture, BatchRelease))
        ),
    )

    async def action(uow: OperationUnitOfWork) -> tuple[int, dict[str, Any]]:
        results = []
        start = uow.batch.savepoint()
        answered = 0
        for index, part in enumerate(body.operations):
            if index and index % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let health checks and other requests in meanwhile
            unit = uow.part()
            try:
                status, answer = await apply_part(ctx, unit, part)
            except IN_DOUBT:
                raise  # the transaction itself failed (a deadlock …): the writer runs it again
            except (CreditError, ApiError) as exc:
                status, answer, _ = to_status_and_body(exc)
            except Exception:
                # a bug in one part must not take the others down with it; nothing of it is kept
                log.exception("a batch part failed unexpectedly")
                status, answer = (
                    500,
                    error_body(
                        "internal_error",
                        "This operation failed unexpectedly; nothing of it was applied",
                    ),
                )
            else:
                uow.adopt(unit)
            result = {"status": status, "body": answer}
            answered += len(orjson.dumps(result)) + 1
            if answered > MAX_BATCH_ANSWER_BYTES:
                uow.batch.roll_back(start)  # refused whole: none of its parts is written
                raise answer_too_large(index)
            results.append(result)
        return 200, {"results": results}

    return await ctx.execute(request, principal, canonical, action, touches)


def answer_too_large(index: int) -> ApiError:
    return ApiError(
        413,
        "batch_answer_too_large",
        f"The answer to this batch would exceed {MAX_BATCH_ANSWER_BYTES} bytes "
        f"(passed at operation {index}); nothing was applied: send its operations "
        "in smaller batches",
        limit=MAX_BATCH_ANSWER_BYTES,
        operation=index,
    )


def lockable(account_id: str) -> tuple[str, ...]:
    """The account id as the part will lock it: normalised (a wallet in any case is one
    account), so every account is locked up front in one statement in id order, never late and
    out of order (two batches naming wallets in opposite orders would deadlock). An invalid id
    locks nothing: its part answers 422."""
    try:
        return (normalise_account_id(account_id),)
    except InvalidAccountId:
        return ()


async def apply_part(
    ctx: AppContext, uow: OperationUnitOfWork, part: Any
) -> tuple[int, dict[str, Any]]:
    """One part, as its own endpoint would have applied it."""
    service, now = ctx.service, ctx.service.now
    if isinstance(part, BatchHold):
        hold, account = await service.hold(
            uow,
            part.account_id,
            part.credits(service.quote),
            part.ttl_seconds,
            part.ref,
            metadata=part.metadata,
            price=part.price_request(),
        )
        return 201, {"hold": hold.to_dict(), "account": account.snapshot(now())}
    if isinstance(part, BatchCapture):
        hold, account = await service.capture(uow, part.hold_id, part.amount)
        return 200, {"hold": hold.to_dict(), "account": account.snapshot(now())}
    if isinstance(part, BatchRelease):
        hold, account = await service.release(uow, part.hold_id, part.reason)
        return 200, {"hold": hold.to_dict(), "account": account.snapshot(now())}
    if isinstance(part, BatchCharge):
        charge, account = await service.charge(
            uow,
            part.account_id,
            part.credits(service.quote),
            part.reason,
            part.ref,
            metadata=part.metadata,
            price=part.price_request(),
        )
        return 201, {"charge": charge, "account": account.snapshot(now())}
    if isinstance(part, BatchRefund):
        spend_id, kind = part.spend()
        refund, account = await service.refund(
            uow, spend_id, kind, part.amount, part.reason, metadata=part.metadata
        )
        return 201, {"refund": refund, "account": account.snapshot(now())}
    if part.amount is not None:
        grant, account = await service.grant(
            uow,
            part.account_id,
            part.amount,
            part.reason,
            part.expires_at,
            part.ref,
            metadata=part.metadata,
        )
    else:
        grant, account = await service.grant_plan(
            uow,
            part.account_id,
            part.plan if part.plan is not None else part.tier,
            part.ref,
            metadata=part.metadata,
        )
    return 201, {"grant": grant.to_dict(), "account": account.snapshot(now())}
