"""The demo page (`GET /demo`) and the static browser SDK (`/static/creditstream.js`).

A browser must never hold a server key, so in a real product the product's own backend ensures
the account, mints the user token (`POST /v1/tokens`) and grants credits. The `/demo/*` helpers
below stand in for that backend, and therefore exist in dev mode only (`CREDITSTREAM_DEV=1`):
they hand a token for any demo account to anyone who opens the page. They answer only the
page's own session (an HttpOnly, SameSite=Strict cookie set when `/demo` is served, which a
cross-site request never carries), only JSON (no `text/plain` form post), and only for
`demo-…` accounts.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from api.body import parse
from api.context import AppContext
from api.errors import ApiError
from api.routing import Endpoint
from api.schemas import Body
from core.events import iso
from core.model import MAX_AMOUNT, normalise_account_id
from storage.writes.batch import Touches
from storage.writes.operation import OperationUnitOfWork

TOKEN_TTL_S = 3600
SESSION_COOKIE = "creditstream_demo"
SESSION_PURPOSE = "demo-session"
SESSION_TTL_S = 24 * 3600
DEMO_PREFIX = "demo-"


class SessionBody(Body):
    account_id: str | None = None


class CreditsBody(Body):
    account_id: str
    amount: int = Field(default=10, ge=1, le=MAX_AMOUNT)


def _ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def demo_page(static_dir: Path) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        response = FileResponse(static_dir / "demo.html", headers={"Cache-Control": "no-store"})
        nonce = secrets.token_urlsafe(16)
        session = f"{nonce}.{_ctx(request).signer.mac(SESSION_PURPOSE, nonce)}"
        response.set_cookie(
            SESSION_COOKIE,
            session,
            max_age=SESSION_TTL_S,
            path="/demo",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    return endpoint


def _require_demo_session(request: Request) -> None:
    """The page's own session and a JSON body, or nothing is minted."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(
            415, "unsupported_media_type", "The demo helpers take Content-Type: application/json"
        )
    nonce, _, mac = request.cookies.get(SESSION_COOKIE, "").partition(".")
    expected = _ctx(request).signer.mac(SESSION_PURPOSE, nonce)
    if not nonce or not hmac.compare_digest(mac.encode(), expected.encode()):
        raise ApiError(
            403,
            "demo_session_required",
            "Open /demo first: the demo helpers answer only the demo page's own session",
        )


def _demo_account(raw: str) -> str:
    account_id = normalise_account_id(raw)
    if not account_id.startswith(DEMO_PREFIX):
        raise ApiError(403, "forbidden", f"The demo acts on {DEMO_PREFIX}… accounts only")
    return account_id


async def demo_session(request: Request) -> Response:
    """Ensure a demo account (a new `demo-…` one unless named) and issue a user token for it."""
    ctx = _ctx(request)
    _require_demo_session(request)
    body, _ = await parse(request, SessionBody)
    account_id = _demo_account(body.account_id or f"{DEMO_PREFIX}{secrets.token_hex(6)}")

    async def action(uow: OperationUnitOfWork) -> None:
        account, _ = await ctx.service.ensure_account(uow, account_id)
        await uow.accounts.save(account)  # the trial grant of a new account

    await ctx.transact(action, Touches(accounts=(account_id,)))
    token, expires_at = ctx.signer.issue(account_id, ctx.service.now(), TOKEN_TTL_S)
    return JSONResponse({"account_id": account_id, "token": token, "expires_at": iso(expires_at)})


async def demo_credits(request: Request) -> Response:
    """Grant promotional credits, as the product's backend would after a purchase."""
    ctx = _ctx(request)
    _require_demo_session(request)
    body, _ = await parse(request, CreditsBody)
    account_id = _demo_account(body.account_id)

    async def action(uow: OperationUnitOfWork) -> tuple[int, dict[str, Any]]:
        grant, account = await ctx.service.grant(uow, account_id, body.amount, "promo")
        return 201, {"grant_id": grant.grant_id, "account": account.snapshot(ctx.service.now())}

    status, payload = await ctx.transact(action, Touches(accounts=(account_id,)))
    return JSONResponse(payload, status_code=status)


def demo_routes(static_dir: Path, dev: bool = True) -> list[BaseRoute]:
    """The static SDK (from `static_dir`) always; the demo page and its helpers only in dev
    mode."""
    routes: list[BaseRoute] = []
    if dev:
        routes += [
            Route("/demo", demo_page(static_dir), methods=["GET"]),
            Route("/demo/session", demo_session, methods=["POST"]),
            Route("/demo/credits", demo_credits, methods=["POST"]),
        ]
    routes.append(Mount("/static", StaticFiles(directory=static_dir), name="static"))
    return routes
