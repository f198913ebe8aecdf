"""Hold routes: open, read, capture, release."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.body import parse
from api.request import ctx_of
from api.responses import JSONResponse
from api.schemas import CaptureBody, HoldBody, ReleaseBody
from core.errors import NotFound
from core.model import Hold
from core.refunds import CAPTURE, Spend
from storage.sql import SqlUnitOfWork
from storage.writes.batch import Touches
from storage.writes.operation import OperationUnitOfWork


async def create_hold(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    body, canonical = await parse(request, HoldBody)
    account_id = principal.own_account(body.account_id)

    async def action(uow: OperationUnitOfWork) -> tuple[int, dict[str, Any]]:
        hold, account = await ctx.service.hold(
            uow,
            account_id,
            body.credits(ctx.service.quote),
            body.ttl_seconds,
            body.ref,
            request.headers.get("idempotency-key"),
            metadata=body.metadata,
            price=body.price_request(),
        )
        return 201, {"hold": hold.to_dict(), "account": account.snapshot(ctx.service.now())}

    return await ctx.execute(request, principal, canonical, action, Touches(accounts=(account_id,)))


async def get_hold(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    hold_id = request.path_params["hold_id"]

    async def read(uow: SqlUnitOfWork) -> tuple[Hold | None, Spend | None]:
        hold = await uow.holds.get(hold_id)
        # a captured hold's capture is a spend: its refunds are listed with it
        capture = (
            await uow.spends.find(hold_id, CAPTURE)
            if hold is not None and hold.status == Hold.CAPTURED
            else None
        )
        return hold, capture

    hold, capture = await ctx.db.standby_read(read)
    if hold is None:
        raise NotFound(f"No hold {hold_id}", hold_id=hold_id)
    principal.require_access(hold.account_id)
    answer = hold.to_dict()
    if hold.status == Hold.CAPTURED:
        answer["refunds"] = [] if capture is None else capture.refund_views()
    return JSONResponse(answer)


async def _hold_owner(request: Request, hold_id: str) -> str:
    async with ctx_of(request).db.read(snapshot=False) as uow:
        hold = await uow.holds.get(hold_id)
    if hold is None:
        raise NotFound(f"No hold {hold_id}", hold_id=hold_id)
    return hold.account_id


async def capture_hold(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    principal.require_server()
    hold_id = request.path_params["hold_id"]
    body, canonical = await parse(request, CaptureBody)
    # a server key may capture any hold: no read ahead, an unknown one is the use case's 404

    async def action(uow: OperationUnitOfWork) -> tuple[int, dict[str, Any]]:
        hold, account = await ctx.service.capture(
            uow, hold_id, body.amount, request.headers.get("idempotency-key")
        )
        return 200, {"hold": hold.to_dict(), "account": account.snapshot(ctx.service.now())}

    return await ctx.execute(request, principal, canonical, action, Touches(holds=(hold_id,)))


async def release_hold(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    hold_id = request.path_params["hold_id"]
    body, canonical = await parse(request, ReleaseBody)
    principal.require_access(await _hold_owner(request, hold_id))

    async def action(uow: OperationUnitOfWork) -> tuple[int, dict[str, Any]]:
        hold, account = await ctx.service.release(
            uow, hold_id, body.reason, request.headers.get("idempotency-key")
        )
        return 200, {"hold": hold.to_dict(), "account": account.snapshot(ctx.service.now())}

    return await ctx.execute(request, principal, canonical, action, Touches(holds=(hold_id,)))
