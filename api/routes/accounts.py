"""Account routes: ensure, snapshot, journal, events, usage, jobs, grants and charges."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.body import parse
from api.context import AppContext
from api.errors import ApiError
from api.request import MAX_PAGE, float_param, int_param, path_account
from api.responses import JSONResponse
from api.schemas import ChargeBody, GrantBody
from core.account import Account
from storage import job_queries, journal_queries, usage_queries
from storage.sql import SqlUnitOfWork
from storage.writes.batch import Touches
from storage.writes.operation import OperationUnitOfWork

MAX_WAIT_S = 30
PERIODS = {"day": timedelta(days=1), "week": timedelta(days=7), "month": timedelta(days=30)}


async def ensure_account(request: Request) -> Response:
    ctx, _, account_id = await path_account(request, server_only=True)

    async def action(uow: OperationUnitOfWork) -> tuple[int, dict[str, Any]]:
        account, created = await ctx.service.ensure_account(uow, account_id)
        await uow.accounts.save(account)  # applies any trial expiry found on the way
        return (201 if created else 200), account.snapshot(ctx.service.now())

    status, body = await ctx.transact(action, Touches(accounts=(account_id,)))
    return JSONResponse(body, status_code=status)


async def get_account(request: Request) -> Response:
    ctx, _, account_id = await path_account(request)
    account = await ctx.db.standby_read(
        lambda uow: ctx.service.read_account(uow, account_id), snapshot=False
    )
    return JSONResponse(account.snapshot(ctx.service.now()))


async def list_entries(request: Request) -> Response:
    ctx, _, account_id = await path_account(request)
    after = int_param(request, "after", 0, 0, 2**62)
    limit = int_param(request, "limit", 100, 1, MAX_PAGE)

    async def read(uow: SqlUnitOfWork) -> list[dict[str, Any]]:
        await ctx.service.read_account(uow, account_id)
        return await journal_queries.entries_page(uow.conn, account_id, after, limit + 1)

    page = await ctx.db.standby_read(read)
    more = len(page) > limit
    page = page[:limit]
    return JSONResponse(
        {"entries": page, "has_more": more, "next_after": page[-1]["entry_id"] if page else after}
    )


async def list_events(request: Request) -> Response:
    ctx, principal, account_id = await path_account(request)
    after_seq = int_param(request, "after_seq", 0, 0, 2**62)
    limit = int_param(request, "limit", 100, 1, MAX_PAGE)
    wait = float_param(request, "wait", 0.0, 0.0, MAX_WAIT_S)
    streams = getattr(request.app.state, "realtime", None)
    if not wait or streams is None:
        return await _events_page(ctx, account_id, after_seq, limit, wait)
    # a long-poll holds a connection as a stream does: it counts in the same per-account limit
    if not streams.admit(principal):
        raise ApiError(
            429,
            "too_many_connections",
            "This account has "
            f"{streams.config.max_connections_per_account} streams (WebSocket, SSE "
            "and long-polls) open already",
            retry_after=1,
        )
    try:
        return await _events_page(ctx, account_id, after_seq, limit, wait)
    finally:
        streams.release(principal)


async def _events_page(
    ctx: AppContext, account_id: str, after_seq: int, limit: int, wait: float
) -> Response:

    async def read(uow: SqlUnitOfWork) -> tuple[Account, list[dict[str, Any]]]:
        account = await ctx.service.read_account(uow, account_id)
        return account, await journal_queries.events_after(uow.conn, account_id, after_seq, limit)

    account, events = await ctx.db.standby_read(read)
    if not events and wait and after_seq >= account.seq:
        await ctx.wait_for_events(account_id, after_seq, wait)
        account, events = await ctx.db.standby_read(read)
    if after_seq < account.seq and not _follows(after_seq, events):
        # the journal no longer holds what follows `after_seq` (past its retention window):
        # the page carries the whole state instead, as the stream's snapshot with `reset`
        snapshot = {
            "type": "snapshot",
            "account_id": account_id,
            "account": account.snapshot(ctx.service.now()),
            "seq": account.seq,
            "reset": True,
        }
        return JSONResponse(
            {
                "account_id": account_id,
                "events": [snapshot],
                "seq": account.seq,
                "next_after_seq": account.seq,
                "reset": True,
            }
        )
    return JSONResponse(
        {
            "account_id": account_id,
            "events": events,
            "seq": account.seq,
            "next_after_seq": events[-1]["seq"] if events else after_seq,
        }
    )


def _follows(after_seq: int, events: list[dict[str, Any]]) -> bool:
    """Whether the page continues the stream from `after_seq` without a gap."""
    return bool(events) and all(e["seq"] == after_seq + 1 + i for i, e in enumerate(events))


async def usage(request: Request) -> Response:
    ctx, _, account_id = await path_account(request)
    period = request.query_params.get("period", "month")
    if period not in PERIODS:
        raise ApiError(
            422, "validation_error", f"period: expected one of {', '.join(PERIODS)}, got {period!r}"
        )
    now = ctx.service.now()
    since = now - PERIODS[period]

    async def read(uow: SqlUnitOfWork) -> dict[str, Any]:
        await ctx.service.read_account(uow, account_id)
        return await usage_queries.usage(uow.conn, account_id, since, now)

    figures = await ctx.db.standby_read(read)
    return JSONResponse(
        {
            "account_id": account_id,
            "period": period,
            "since": since.isoformat().replace("+00:00", "Z"),
            **figures,
        }
    )


async def list_jobs(request: Request) -> Response:
    ctx, _, account_id = await path_account(request)
    status = request.query_params.get("status")
    if status not in (None, "processing", "success", "failed"):
        raise ApiError(
            422,
            "validation_error",
            f"status: expected processing, success or failed, got {status!r}",
        )
    limit = int_param(request, "limit", 50, 1, MAX_PAGE)

    async def read(uow: SqlUnitOfWork) -> list[dict[str, Any]]:
        await ctx.service.read_account(uow, account_id)
        return await job_queries.jobs_of(uow.conn, account_id, status, limit)

    jobs = await ctx.db.standby_read(read)
    return JSONResponse({"account_id": account_id, "jobs": jobs})


async def create_grant(request: Request) -> Response:
    ctx, principal, account_id = await path_account(request, server_only=True)
    body, canonical = await parse(request, GrantBody)

    async def action(uow: OperationUnitOfWork) -> tuple[int, dict[str, Any]]:
        key = request.headers.get("idempotency-key")
        if body.amount is not None:
            grant, account = await ctx.service.grant(
                uow,
                account_id,
                body.amount,
                body.reason,
                body.expires_at,
                body.ref,
                key,
                metadata=body.metadata,
            )
        else:
            grant, account = await ctx.service.grant_plan(
                uow,
                account_id,
                body.plan if body.plan is not None else body.tier,
                body.ref,
                key,
                metadata=body.metadata,
            )
        return 201, {"grant": grant.to_dict(), "account": account.snapshot(ctx.service.now())}

    return await ctx.execute(request, principal, canonical, action, Touches(accounts=(account_id,)))


async def create_charge(request: Request) -> Response:
    ctx, principal, account_id = await path_account(request, server_only=True)
    body, canonical = await parse(request, ChargeBody)

    async def action(uow: OperationUnitOfWork) -> tuple[int, dict[str, Any]]:
        charge, account = await ctx.service.charge(
            uow,
            account_id,
            body.credits(ctx.service.quote),
            body.reason,
            body.ref,
            request.headers.get("idempotency-key"),
            body.metadata,
            body.price_request(),
        )
        return 201, {"charge": charge, "account": account.snapshot(ctx.service.now())}

    return await ctx.execute(request, principal, canonical, action, Touches(accounts=(account_id,)))
