"""Which requests the one-pass path takes (api/hot_path.py): the write routes by POST, with the
route and path parameters the router would have put into the scope; everything else is left to
the full stack."""

from __future__ import annotations

from typing import Any

import pytest

from api.errors import EXCEPTION_HANDLERS
from api.hot_path import HotRoutes
from api.routes.seeds import SEED_ROUTES
from api.routes.table import V1_ROUTES
from api.routing import starlette_routes

ROUTES = starlette_routes(V1_ROUTES + SEED_ROUTES)


def scope(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "headers": headers or [],
    }


@pytest.mark.parametrize(
    ("path", "template", "params"),
    [
        ("/v1/holds", "/v1/holds", {}),
        ("/v1/holds/h_1/capture", "/v1/holds/{hold_id}/capture", {"hold_id": "h_1"}),
        ("/v1/holds/h_1/release", "/v1/holds/{hold_id}/release", {"hold_id": "h_1"}),
        (
            "/v1/accounts/user-7/charges",
            "/v1/accounts/{account_id}/charges",
            {"account_id": "user-7"},
        ),
    ],
)
def test_the_write_routes_are_taken_with_what_the_router_would_set(
    path: str, template: str, params: dict[str, str]
) -> None:
    hot = HotRoutes(ROUTES, EXCEPTION_HANDLERS, skip_origin=False)
    s = scope("POST", path)
    assert hot.match(s)
    assert s["route"].path == template
    assert s["path_params"] == params
    assert s["endpoint"] is s["route"].endpoint


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/holds/h_1"),
        ("GET", "/v1/holds"),
        ("PUT", "/v1/holds"),
        ("POST", "/v1/holds/"),  # the router's redirect, not ours
        ("POST", "/v1/holds/a/b/capture"),
        ("POST", "/v1/holds//capture"),
        ("POST", "/v1/accounts/x/grants"),
        ("POST", "/v1/batch"),
        ("GET", "/v1/accounts/x/charges"),
    ],
)
def test_other_requests_go_through_the_full_stack(method: str, path: str) -> None:
    hot = HotRoutes(ROUTES, EXCEPTION_HANDLERS, skip_origin=False)
    s = scope(method, path)
    assert not hot.match(s)
    assert "route" not in s


def test_a_root_path_goes_through_the_full_stack() -> None:
    hot = HotRoutes(ROUTES, EXCEPTION_HANDLERS, skip_origin=False)
    s = scope("POST", "/api/v1/holds")
    s["root_path"] = "/api"
    assert not hot.match(s)


def test_with_cors_configured_a_request_with_an_origin_is_left_to_the_cors_middleware() -> None:
    hot = HotRoutes(ROUTES, EXCEPTION_HANDLERS, skip_origin=True)
    assert not hot.match(scope("POST", "/v1/holds", [(b"origin", b"https://app.example")]))
    assert hot.match(scope("POST", "/v1/holds", [(b"content-type", b"application/json")]))
    without_cors = HotRoutes(ROUTES, EXCEPTION_HANDLERS, skip_origin=False)
    assert without_cors.match(scope("POST", "/v1/holds", [(b"origin", b"https://app.example")]))
