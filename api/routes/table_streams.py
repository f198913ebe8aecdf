"""The browser's routes of the `/v1` table (api/routes/table.py): a user token, a stream ticket,
and the WebSocket and SSE streams (served by realtime/, listed here for the document)."""

from __future__ import annotations

from api import schemas
from api.routes import misc as misc
from api.routes import stream_tickets as stream_tickets
from api.routing import ApiRoute

TOKEN_ROUTES: list[ApiRoute] = [
    ApiRoute(
        "POST",
        "/v1/tokens",
        misc.create_token,
        "Issue a user token for a browser",
        "server",
        schemas.TokenBody,
        200,
        (400, 401, 403, 413, 422),
    ),
]

STREAM_ROUTES: list[ApiRoute] = [
    ApiRoute(
        "POST",
        "/v1/stream-tickets",
        stream_tickets.create_stream_ticket,
        "A one-use "
        "ticket for one WebSocket or SSE connection within 30 s, passed as ?ticket= (so "
        "the long-lived token stays out of URLs); a user token may omit account_id",
        "owner",
        schemas.StreamTicketBody,
        201,
        (400, 401, 403, 413, 422),
    ),
    ApiRoute(
        "GET",
        "/v1/stream",
        misc.stream_upgrade_required,
        "WebSocket stream "
        "(upgrade; served by realtime/, this endpoint answers a plain GET with 426); "
        "credentials in Authorization, ?ticket= (one use, from POST /v1/stream-tickets) "
        "or ?token=; a bad, used or expired one closes with 4401, another account with "
        "4403, too many streams with 1008",
        "owner",
        success=101,
        errors=(403, 426),
        query=("ticket", "token"),
    ),
    ApiRoute(
        "GET",
        "/v1/stream/sse",
        None,
        "Server-Sent Events stream, resumable with "
        "Last-Event-ID; credentials as for the WebSocket (a bad, used or expired ticket: "
        "401)",
        "owner",
        errors=(401, 403, 422, 429),
        query=("account_id", "after_seq", "ticket", "token"),
        routed=False,
    ),
]
