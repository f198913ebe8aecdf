"""What every route reads from a request: the app's context, checked query parameters, and the
account named in the path with the caller's access to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import Request

from api.context import AppContext
from api.errors import ApiError
from core.model import normalise_account_id

MAX_PAGE = 500
Number = TypeVar("Number", int, float)


def ctx_of(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    return _number_param(request, name, default, low, high, int, "an integer")


def float_param(request: Request, name: str, default: float, low: float, high: float) -> float:
    return _number_param(request, name, default, low, high, float, "a number")


def _number_param(
    request: Request,
    name: str,
    default: Number,
    low: Number,
    high: Number,
    parse: Callable[[str], Number],
    kind: str,
) -> Number:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError as exc:
        raise ApiError(422, "validation_error", f"{name}: expected {kind}, got {raw!r}") from exc
    if not low <= value <= high:  # also refuses nan
        raise ApiError(422, "validation_error", f"{name}: expected {low}..{high}, got {raw}")
    return value


async def path_account(request: Request, server_only: bool = False) -> tuple[AppContext, Any, str]:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    if server_only:
        principal.require_server()
    account_id = normalise_account_id(request.path_params["account_id"])
    principal.require_access(account_id)
    return ctx, principal, account_id
