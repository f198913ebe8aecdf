"""Refunds after success: credits of a charge or a captured hold go back to their grants; and
the reads of refunds and charges."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.body import parse
from api.context import AppContext
from api.request import ctx_of
from api.responses import JSONResponse
from api.schemas import RefundBody
from core.errors import NotFound
from core.refunds import CHARGE, Spend
from storage.journal_queries import refunded_spend
from storage.sql import SqlUnitOfWork
from storage.writes.batch import Touches
from storage.writes.operation import OperationUnitOfWork


async def create_refund(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    principal.require_server()
    body, canonical = await parse(request, RefundBody)
    spend_id, kind = body.spend()
    touches = await refund_touches(ctx, spend_id, kind)

    async def action(uow: OperationUnitOfWork) -> tuple[int, dict[str, Any]]:
        refund, account = await ctx.service.refund(
            uow,
            spend_id,
            kind,
            body.amount,
            body.reason,
            request.headers.get("idempotency-key"),
            body.metadata,
        )
        return 201, {"refund": refund, "account": account.snapshot(ctx.service.now())}

    return await ctx.execute(request, principal, canonical, action, touches)


async def refund_touches(ctx: AppContext, spend_id: str, kind: str) -> Touches:
    """What a refund's write batch locks up front: the hold, or the charge's account (and so
    its lane); an unknown charge is the use case's 404."""
    if kind != CHARGE:
        return Touches(holds=(spend_id,))
    async with ctx.db.read(snapshot=False) as reader:
        found = await reader.spends.find(spend_id, kind)
    return Touches(accounts=(found.account_id,) if found else ())


async def get_refund(request: Request) -> Response:
    """A refund, as `POST /v1/refunds` answered it (server key: refunds are support's)."""
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    principal.require_server()
    refund_id = request.path_params["refund_id"]

    async def read(uow: SqlUnitOfWork) -> Spend | None:
        found = await refunded_spend(uow.conn, refund_id)
        return None if found is None else await uow.spends.find(*found)

    spend = await ctx.db.standby_read(read)
    view = None if spend is None else spend.refund_view(refund_id)
    if view is None:
        raise NotFound(f"No refund {refund_id}", refund_id=refund_id)
    return JSONResponse(view)


async def get_charge(request: Request) -> Response:
    """A charge, with what has been refunded of it and its refunds."""
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    charge_id = request.path_params["charge_id"]
    spend = await ctx.db.standby_read(lambda uow: uow.spends.find(charge_id, CHARGE))
    if spend is None:
        raise NotFound(f"No charge {charge_id}", charge_id=charge_id)
    principal.require_access(spend.account_id)
    return JSONResponse(spend.charge_view())
