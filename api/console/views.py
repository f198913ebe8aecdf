"""What the console shows: the session, an account at a glance (snapshot, grants with their
expiry, open holds, jobs, refunds), its journal page by page, and the outbound webhook
endpoints with their deliveries. Reads only; every one needs a console session."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from api.console.session import SESSION_COOKIE, csrf_token, signed_in
from api.request import MAX_PAGE, ctx_of, int_param
from api.responses import JSONResponse
from core.events import iso
from core.model import normalise_account_id
from storage import job_queries, journal_queries
from storage.console_queries import entries_before, open_holds, recent_grants, refund_entries
from storage.webhook_endpoints import WebhookEndpoints

OVERVIEW_LIMIT = 50
DELIVERIES_PER_ENDPOINT = 20


async def session_info(request: Request) -> Response:
    """The operator and the CSRF token the page sends with every change (readable by this
    origin only: no CORS answers /console)."""
    session = await signed_in(request)
    return JSONResponse(
        {
            "operator": session.operator,
            "csrf_token": csrf_token(request, request.cookies.get(SESSION_COOKIE, "")),
            "expires_at": iso(datetime.fromtimestamp(session.expires_at, UTC)),
        }
    )


async def account_overview(request: Request) -> Response:
    await signed_in(request)
    ctx = ctx_of(request)
    account_id = normalise_account_id(request.path_params["account_id"])
    now = ctx.service.now()
    async with ctx.db.read() as uow:
        account = await ctx.service.read_account(uow, account_id)
        grants = await recent_grants(uow.conn, account_id, OVERVIEW_LIMIT)
        holds = await open_holds(uow.conn, account_id, OVERVIEW_LIMIT)
        jobs = await job_queries.jobs_of(uow.conn, account_id, None, OVERVIEW_LIMIT)
        refunds = await refund_entries(uow.conn, account_id, OVERVIEW_LIMIT)
    return JSONResponse(
        {
            "account": account.snapshot(now),
            "grants": grants,
            "holds": holds,
            "jobs": jobs,
            "refunds": refunds,
        }
    )


async def account_entries(request: Request) -> Response:
    """The journal a page at a time: `after=ID` oldest first from there (what is new since the
    page's newest line), else newest first, older than `before=ID` when given."""
    await signed_in(request)
    ctx = ctx_of(request)
    account_id = normalise_account_id(request.path_params["account_id"])
    limit = int_param(request, "limit", 50, 1, MAX_PAGE)
    newer = "after" in request.query_params
    after = int_param(request, "after", 0, 0, 2**62)
    before = int_param(request, "before", 0, 1, 2**62) if "before" in request.query_params else None
    async with ctx.db.read() as uow:
        await ctx.service.read_account(uow, account_id)
        if newer:
            page = await journal_queries.entries_page(uow.conn, account_id, after, limit + 1)
        else:
            page = await entries_before(uow.conn, account_id, before, limit + 1)
    return JSONResponse({"entries": page[:limit], "has_more": len(page) > limit})


async def webhook_endpoints(request: Request) -> Response:
    """Endpoints with their latest deliveries (enabling one, a test event and a resend are
    POSTs among the actions, api/console/actions.py)."""
    await signed_in(request)
    store = WebhookEndpoints(ctx_of(request).db)
    listed = []
    for endpoint in await store.registered():
        deliveries = await store.attempts(endpoint.endpoint_id, DELIVERIES_PER_ENDPOINT)
        listed.append({**endpoint.to_dict(), "deliveries": deliveries})
    return JSONResponse({"endpoints": listed})
