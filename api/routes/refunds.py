"""Refunds after success: credits of a charge or a captured hold go back to their grants."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.body import parse
from api.request import ctx_of
from api.schemas import RefundBody
from core.refunds import CHARGE
from storage.writes.batch import Touches
from storage.writes.operation import OperationUnitOfWork


async def create_refund(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    principal.require_server()
    body, canonical = await parse(request, RefundBody)
    spend_id, kind = body.spend()
    touches = Touches(holds=(spend_id,))
    if kind == CHARGE:
        # the charge's account, so its write batch locks it up front (and in its lane); an
        # unknown charge is the use case's 404
        async with ctx.db.read(snapshot=False) as reader:
            found = await reader.spends.find(spend_id, kind)
        touches = Touches(accounts=(found.account_id,) if found else ())

    async def action(uow: OperationUnitOfWork) -> tuple[int, dict[str, Any]]:
        refund, account = await ctx.service.refund(
            uow, spend_id, kind, body.amount, body.reason,
            request.headers.get("idempotency-key"), body.metadata)
        return 201, {"refund": refund, "account": account.snapshot(ctx.service.now())}

    return await ctx.execute(request, principal, canonical, action, touches)
