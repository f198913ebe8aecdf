"""`POST /v1/stream-tickets`: a one-use credential for one WebSocket or SSE connection, so a
browser's long-lived user token never travels in a URL (`?ticket=` instead of `?token=`)."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from api.body import parse
from api.request import ctx_of
from api.responses import JSONResponse
from api.schemas import StreamTicketBody
from core.events import iso
from storage.stream_tickets import issue_ticket

# long enough for a page to open its stream on a slow network, short enough that a ticket seen
# in a log or a history has expired (and it opens one connection only anyway)
TICKET_TTL_S = 30


async def create_stream_ticket(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    body, _ = await parse(request, StreamTicketBody)
    account_id = principal.own_account(body.account_id)
    now = ctx.service.now()
    ticket, expires_at = await issue_ticket(
        ctx.db,
        account_id,
        None if principal.is_server else principal.expires,
        now.timestamp(),
        TICKET_TTL_S,
    )
    return JSONResponse(
        {
            "ticket": ticket,
            "account_id": account_id,
            "expires_at": iso(datetime.fromtimestamp(expires_at, UTC)),
        },
        status_code=201,
    )
