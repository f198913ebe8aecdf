"""The API's one table of error statuses, through a tiny inline app."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.errors import EXCEPTION_HANDLERS
from core.errors import InvalidState, InvariantViolated


def app_raising(exc: Exception) -> Starlette:
    async def endpoint(request: Request) -> Response:
        raise exc

    return Starlette(routes=[Route("/", endpoint)], exception_handlers=EXCEPTION_HANDLERS)


async def get(app: Starlette) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/")


async def test_an_invariant_violated_is_a_logged_500(caplog: pytest.LogCaptureFixture) -> None:
    app = app_raising(InvariantViolated("Grants of a do not cover 5 credits"))
    with caplog.at_level(logging.ERROR, "creditstream.api"):
        response = await get(app)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "do not cover 5 credits" not in response.text  # internals stay in the log
    assert any("do not cover 5 credits" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_an_invalid_state_is_a_409() -> None:
    response = await get(app_raising(InvalidState("Hold h is captured")))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invalid_state"
