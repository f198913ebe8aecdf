"""Stream tickets (`POST /v1/stream-tickets`): one WebSocket or SSE connection each, within
30 s, on any instance, for the account its maker may read only."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import ApiClient
from tests.support import LiveServer, MutableClock, make_server_key

Factory = Callable[..., LiveServer]


def new_account() -> str:
    return f"acct-{uuid.uuid4().hex[:12]}"


async def ticket_for(
    http: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any] | None = None
) -> str:
    answer = await http.post("/v1/stream-tickets", headers=headers, json=body or {})
    assert answer.status_code == 201, answer.text
    assert answer.json()["ticket"].startswith("st_")
    ticket: str = answer.json()["ticket"]
    return ticket


# --- who may make one, and its expiry (in-process, both databases) ----------------------------


async def test_a_user_token_tickets_its_own_account_only(api: ApiClient) -> None:
    made = await api.http.post("/v1/stream-tickets", headers=api.user("alice"), json={})
    assert made.status_code == 201, made.text
    assert made.json()["account_id"] == "alice"
    assert made.json()["expires_at"].endswith("Z")
    named = await api.http.post(
        "/v1/stream-tickets", headers=api.user("alice"), json={"account_id": "alice"}
    )
    assert named.status_code == 201
    other = await api.http.post(
        "/v1/stream-tickets", headers=api.user("alice"), json={"account_id": "bob"}
    )
    assert other.status_code == 403 and other.json()["error"]["code"] == "forbidden"
    server = await api.http.post(
        "/v1/stream-tickets", headers=api.server(), json={"account_id": "bob"}
    )
    assert server.status_code == 201 and server.json()["account_id"] == "bob"
    unnamed = await api.http.post("/v1/stream-tickets", headers=api.server(), json={})
    assert unnamed.status_code == 422
    assert (await api.http.post("/v1/stream-tickets", json={})).status_code == 401
    odd = await api.http.post(
        "/v1/stream-tickets", headers=api.user("alice"), json={"account_id": "alice", "ttl": 5}
    )
    assert odd.status_code == 422


async def test_an_expired_or_unknown_ticket_is_refused(api: ApiClient, clock: MutableClock) -> None:
    ticket = await ticket_for(api.http, api.user("carol"))
    clock.advance(seconds=31)
    late = await api.http.get(f"/v1/stream/sse?ticket={ticket}")
    assert late.status_code == 401 and late.json()["error"]["code"] == "invalid_ticket"
    for bogus in ("st_nope", "x" * 5000, ""):
        answer = await api.http.get("/v1/stream/sse", params={"ticket": bogus})
        assert answer.status_code == 401, bogus


# --- on live servers: once, on any instance, WebSocket and SSE --------------------------------


@pytest.fixture
async def two_servers(
    pg_url: str,
    live_server_factory: Factory,
) -> tuple[LiveServer, LiveServer, str]:
    key = await make_server_key(pg_url)
    return live_server_factory(pg_url), live_server_factory(pg_url), key


async def open_stream(server: LiveServer, ticket: str) -> tuple[dict[str, Any], int | None]:
    """Open a WebSocket with the ticket and subscribe without naming the account: the
    `subscribed` answer, or None and the close code."""
    url = server.url.replace("http://", "ws://") + f"/v1/stream?ticket={ticket}"
    async with websockets.connect(url) as ws:
        try:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert hello["type"] == "hello"
            await ws.send(json.dumps({"op": "subscribe"}))
            subscribed = json.loads(await asyncio.wait_for(ws.recv(), 10))
            return subscribed, None
        except websockets.ConnectionClosed as closed:
            return {}, closed.rcvd.code if closed.rcvd is not None else None


async def test_a_ticket_opens_one_websocket_on_any_instance(
    two_servers: tuple[LiveServer, LiveServer, str],
) -> None:
    first, second, key = two_servers
    account = new_account()
    server_key = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        ticket = await ticket_for(http, server_key, {"account_id": account})
    # made on the first instance, redeemed on the second
    subscribed, code = await open_stream(second, ticket)
    assert code is None and subscribed == {
        **subscribed,
        "type": "subscribed",
        "account_id": account,
    }
    for server in (first, second):  # used: refused everywhere
        _, code = await open_stream(server, ticket)
        assert code == 4401


async def test_two_connections_racing_for_one_ticket_get_one_stream(
    two_servers: tuple[LiveServer, LiveServer, str],
) -> None:
    first, second, key = two_servers
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        ticket = await ticket_for(
            http, {"Authorization": f"Bearer {key}"}, {"account_id": new_account()}
        )
    results = await asyncio.gather(
        open_stream(first, ticket),
        open_stream(second, ticket),
        open_stream(first, ticket),
        open_stream(second, ticket),
    )
    assert sorted(str(code) for _, code in results) == ["4401", "4401", "4401", "None"]


async def test_a_ticket_opens_one_sse_stream(
    two_servers: tuple[LiveServer, LiveServer, str],
) -> None:
    from tests.e2e.test_stream import user_token

    first, second, _ = two_servers
    account = new_account()
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        ticket = await ticket_for(http, {"Authorization": f"Bearer {user_token(account)}"})
    async with httpx.AsyncClient(base_url=second.url, timeout=10) as http:
        async with http.stream("GET", f"/v1/stream/sse?ticket={ticket}") as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data:") and '"subscribed"' in line:
                    assert json.loads(line[5:])["account_id"] == account
                    break
        again = await http.get(f"/v1/stream/sse?ticket={ticket}")
        assert again.status_code == 401 and again.json()["error"]["code"] == "invalid_ticket"


async def test_a_ticket_reads_its_own_account_only(api: ApiClient) -> None:
    # even a server key's ticket is bound to the account it names
    for maker in (api.user("dora"), api.server()):
        ticket = await ticket_for(api.http, maker, {"account_id": "dora"})
        other = await api.http.get("/v1/stream/sse", params={"ticket": ticket, "account_id": "eve"})
        assert other.status_code == 403 and other.json()["error"]["code"] == "forbidden"
        # the refused attempt used it up: a ticket is one connection attempt
        again = await api.http.get("/v1/stream/sse", params={"ticket": ticket})
        assert again.status_code == 401
