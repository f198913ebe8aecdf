"""The write routes' one-pass path (api/hot_path.py) answers exactly as the full Starlette stack:
the same status, body and headers, for successes, replays and each kind of refusal; with CORS
configured, a request with an Origin still gets its CORS headers."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import ApiClient


async def both_ways(api: ApiClient, method: str, path: str, **kwargs: Any) -> list[httpx.Response]:
    """The same request through the one-pass path, then through the full stack."""
    hot = api.app.hot
    assert hot is not None
    answers = []
    for route_table in (hot, None):
        api.app.hot = route_table
        try:
            answers.append(await api.http.request(method, path, **kwargs))
        finally:
            api.app.hot = hot
    return answers


def same(answers: list[httpx.Response]) -> httpx.Response:
    fast, full = answers
    assert fast.status_code == full.status_code
    assert fast.content == full.content
    headers = [{k: v for k, v in a.headers.items() if k != "x-request-id"} for a in answers]
    assert headers[0] == headers[1]
    assert all(a.headers["x-request-id"] for a in answers)
    return fast


def without_ids(body: Any) -> Any:
    """An answer with the ids and times that differ between two holds taken out."""
    if isinstance(body, dict):
        return {
            k: without_ids(v)
            for k, v in body.items()
            if k not in ("hold_id", "id", "created_at", "expires_at", "seq", "updated_at")
        }
    if isinstance(body, list):
        return [without_ids(v) for v in body]
    return body


async def test_refusals_are_answered_alike(api: ApiClient) -> None:
    server = api.server()
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/holds", {"json": {"account_id": "a", "amount": 1}}),  # no credentials
        ("POST", "/v1/holds", {"headers": server, "content": b"{not json"}),
        ("POST", "/v1/holds", {"headers": server, "content": b"\xef\xbb\xbf{}"}),
        ("POST", "/v1/holds", {"headers": server, "json": {"account_id": "a", "amount": "1"}}),
        ("POST", "/v1/holds", {"headers": server, "content": b'{"amount": 1e999999}'}),
        (
            "POST",
            "/v1/holds",
            {"headers": server, "content": b'{"account_id": "a", "amount": 99999999999999999999}'},
        ),
        (  # more than the new account's trial credits: 402
            "POST",
            "/v1/holds",
            {"headers": server, "json": {"account_id": "poor", "amount": 1_000_000}},
        ),
        ("POST", "/v1/holds/h_unknown/capture", {"headers": server, "json": {}}),
        ("POST", "/v1/holds/h_unknown/release", {"headers": server, "json": {}}),
        ("POST", "/v1/accounts/a/charges", {"headers": api.user("a"), "json": {"amount": 1}}),
        (
            "POST",
            "/v1/holds",
            {
                "headers": {**server, "Idempotency-Key": ""},
                "json": {"account_id": "a", "amount": 1},
            },
        ),
    ]
    for method, path, kwargs in cases:
        answer = same(await both_ways(api, method, path, **kwargs))
        assert 400 <= answer.status_code < 500, (path, kwargs, answer.text)
        assert "error" in answer.json()


async def test_holds_and_their_replays_are_answered_alike(api: ApiClient) -> None:
    account = f"hp-{uuid.uuid4().hex[:8]}"
    assert (await api.http.put(f"/v1/accounts/{account}", headers=api.server())).status_code == 201
    fast, full = await both_ways(
        api, "POST", "/v1/holds", headers=api.server(), json={"account_id": account, "amount": 1}
    )
    assert fast.status_code == full.status_code == 201
    assert without_ids(fast.json()["hold"]) == without_ids(full.json()["hold"])
    assert fast.headers["content-type"] == full.headers["content-type"] == "application/json"
    # a replay of the same key, once through each path: the first answer, as stored
    headers = {**api.server(), "Idempotency-Key": uuid.uuid4().hex}
    body = {"account_id": account, "amount": 1}
    first = await api.http.post("/v1/holds", headers=headers, json=body)
    replays = same(await both_ways(api, "POST", "/v1/holds", headers=headers, json=body))
    assert replays.headers["idempotent-replayed"] == "true"
    assert replays.json() == first.json()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_with_cors_a_request_with_an_origin_gets_its_cors_headers(
    api_factory: Any, database_url: str
) -> None:
    api: ApiClient = await api_factory(database_url, cors_origins=("https://app.example",))
    answer = await api.http.post(
        "/v1/holds",
        headers={**api.server(), "Origin": "https://app.example"},
        json={"account_id": "nobody", "amount": 1},
    )
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
    assert answer.headers["x-request-id"]
    plain = await api.http.post(
        "/v1/holds", headers=api.server(), json={"account_id": "nobody", "amount": 1}
    )
    assert plain.status_code == answer.status_code
    assert "access-control-allow-origin" not in plain.headers
