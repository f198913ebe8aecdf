"""The console's page and its sign-in and sign-out. The page is three static files (api/static/:
HTML, an ES module, CSS; no build step) served under a same-origin-only CSP."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from api.console.session import (
    SESSION_COOKIE,
    SESSION_TTL_S,
    clear_session_cookie,
    set_session_cookie,
    signed_in,
)
from api.request import ctx_of
from api.responses import JSONResponse
from core.errors import NotFound
from storage.console_auth import end_session, open_session, redeem_sign_in

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # the sign-in link's token never leaves in a Referer
    "Cache-Control": "no-store",
}
ASSETS = {
    "console.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}


def static_file(name: str) -> Response:
    return Response(
        (STATIC_DIR / name).read_bytes(), media_type=ASSETS[name], headers=dict(HEADERS)
    )


async def console_page(request: Request) -> Response:
    """`GET /console`: listed in the /v1 table (so the OpenAPI document names it), and so
    routed whether the console is on or not: off, it answers 404 as every /console path does."""
    if not ctx_of(request).settings.console:
        raise NotFound("No route GET /console: the operator console is off")
    return static_file("console.html")


async def console_script(request: Request) -> Response:
    return static_file("console.js")


async def console_style(request: Request) -> Response:
    return static_file("console.css")


async def sign_in(request: Request) -> Response:
    """Visiting the printed link: the token is taken (once, on any instance) and a session
    begins. A used, expired or unknown token gets the page, which offers no way in but a new
    link."""
    ctx = ctx_of(request)
    now_s = ctx.service.now().timestamp()
    operator = await redeem_sign_in(ctx.db, request.query_params.get("token", ""), now_s)
    if operator is None:
        refused = JSONResponse(
            {
                "error": {
                    "code": "sign_in_link_invalid",
                    "message": "This sign-in link is used, expired or unknown: run "
                    "`creditstream console` for a new one",
                }
            },
            status_code=401,
            headers=dict(HEADERS),
        )
        return refused
    session_id = await open_session(ctx.db, operator, now_s, SESSION_TTL_S)
    response = RedirectResponse("/console", status_code=303, headers=dict(HEADERS))
    set_session_cookie(request, response, session_id)
    return response


async def sign_out(request: Request) -> Response:
    await signed_in(request)  # CSRF-checked: a cross-site page cannot sign an operator out
    await end_session(ctx_of(request).db, request.cookies.get(SESSION_COOKIE, ""))
    response = JSONResponse({"signed_out": True}, headers=dict(HEADERS))
    clear_session_cookie(request, response)
    return response
