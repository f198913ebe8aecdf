"""Who is signed in to the console: the session cookie (an HttpOnly, SameSite=Strict random id,
stored hashed with its expiry) and the CSRF token every state-changing request carries in a
header (an HMAC of the session id, so any instance checks it and only a page that read it from
`GET /console/api/session` — same origin — can send it)."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from api.errors import ApiError
from api.request import ctx_of
from storage.console_auth import ConsoleSession, find_session

SESSION_COOKIE = "creditstream_console"
CSRF_HEADER = "x-csrf-token"
CSRF_PURPOSE = "console-csrf"
SESSION_TTL_S = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD"})


def csrf_token(request: Request, session_id: str) -> str:
    return ctx_of(request).signer.mac(CSRF_PURPOSE, session_id)


async def signed_in(request: Request) -> ConsoleSession:
    """The request's console session; for a state-changing request, also its CSRF token.
    401 without a live session, 403 with a missing or wrong CSRF token."""
    ctx = ctx_of(request)
    session_id = request.cookies.get(SESSION_COOKIE, "")
    session = await find_session(ctx.db, session_id, ctx.service.now().timestamp())
    if session is None:
        raise ApiError(
            401, "console_sign_in_required", "Sign in with a link from `creditstream console`"
        )
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), csrf_token(request, session_id).encode()):
            raise ApiError(403, "csrf_token_invalid", f"Send the session's {CSRF_HEADER} header")
    return session


def set_session_cookie(request: Request, response: Response, session_id: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=SESSION_TTL_S,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
