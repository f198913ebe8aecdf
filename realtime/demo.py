"""The demo page (`GET /demo`) and the static browser SDK (`/static/creditstream.js`).

A browser must never hold a server key, so in a real product the product's own backend ensures
the account, mints the user token (`POST /v1/tokens`) and grants credits. The `/demo/*` helpers
below stand in for that backend, and therefore exist in dev mode only (`CREDITSTREAM_DEV=1`):
they hand a token for any account to anyone who asks.
"""

from __future__ import annotations

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
from api.schemas import Body
from core.events import iso
from core.model import MAX_AMOUNT, normalise_account_id
from storage.sql import SqlUnitOfWork

STATIC_DIR = Path(__file__).resolve().parent / "static"
TOKEN_TTL_S = 3600


class SessionBody(Body):
    account_id: str | None = None


class CreditsBody(Body):
    account_id: str
    amount: int = Field(default=10, ge=1, le=MAX_AMOUNT)


def _ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


async def demo_page(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "demo.html", headers={"Cache-Control": "no-store"})


async def demo_session(request: Request) -> Response:
    """Ensure a demo account (a new `demo-…` one unless named) and issue a user token for it."""
    ctx = _ctx(request)
    body, _ = await parse(request, SessionBody)
    account_id = normalise_account_id(body.account_id or f"demo-{secrets.token_hex(6)}")

    async def action(uow: SqlUnitOfWork) -> tuple[int, dict[str, Any]]:
        account, _ = await ctx.service.ensure_account(uow, account_id)
        await uow.accounts.save(account)  # the trial grant of a new account
        return 200, {}

    await ctx.transact(action)
    token, expires_at = ctx.signer.issue(account_id, ctx.service.now(), TOKEN_TTL_S)
    return JSONResponse({"account_id": account_id, "token": token,
                         "expires_at": iso(expires_at)})


async def demo_credits(request: Request) -> Response:
    """Grant promotional credits, as the product's backend would after a purchase."""
    ctx = _ctx(request)
    body, _ = await parse(request, CreditsBody)
    account_id = normalise_account_id(body.account_id)

    async def action(uow: SqlUnitOfWork) -> tuple[int, dict[str, Any]]:
        grant, account = await ctx.service.grant(uow, account_id, body.amount, "promo")
        return 201, {"grant_id": grant.grant_id, "account": account.snapshot(ctx.service.now())}

    status, payload = await ctx.transact(action)
    return JSONResponse(payload, status_code=status)


def demo_routes(dev: bool = True) -> list[BaseRoute]:
    """The static SDK always; the demo page and its helpers only in dev mode."""
    routes: list[BaseRoute] = []
    if dev:
        routes += [Route("/demo", demo_page, methods=["GET"]),
                   Route("/demo/session", demo_session, methods=["POST"]),
                   Route("/demo/credits", demo_credits, methods=["POST"])]
    routes.append(Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"))
    return routes
