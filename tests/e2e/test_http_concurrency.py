"""G1 and G3 through a real uvicorn process, with real parallel HTTP clients."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support import LiveServer, make_server_key


@pytest.fixture(params=["postgres", "sqlite"])
def served_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    url: str = request.getfixturevalue("pg_url")
    return url


async def test_200_parallel_holds_against_50_available(
    served_url: str, live_server_factory: Callable[..., LiveServer]
) -> None:
    key = await make_server_key(served_url)
    server = live_server_factory(served_url, CREDITSTREAM_DB_POOL_SIZE="20")
    auth = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=server.url, headers=auth, timeout=60, limits=limits
    ) as http:
        # a paid grant lifts the trial's daily limit; then spend the trial so exactly 50 remain
        assert (
            await http.post("/v1/accounts/crowd/grants", json={"amount": 50, "reason": "purchase"})
        ).status_code == 201
        assert (
            await http.post("/v1/accounts/crowd/charges", json={"amount": 28})
        ).status_code == 201
        responses = await asyncio.gather(
            *(http.post("/v1/holds", json={"account_id": "crowd", "amount": 1}) for _ in range(200))
        )
        statuses = [r.status_code for r in responses]
        assert statuses.count(201) == 50, statuses
        assert statuses.count(402) == 150
        for response in responses:
            body: dict[str, Any] = response.json()
            if response.status_code == 201:
                assert body["account"]["available"] >= 0
            else:
                assert body["error"]["code"] == "insufficient_credits"
                assert body["error"]["shortfall"] == 1
        account = (await http.get("/v1/accounts/crowd")).json()
    assert (account["balance"], account["held"], account["available"]) == (50, 50, 0)


async def test_one_idempotency_key_sent_20_times_concurrently(
    served_url: str, live_server_factory: Callable[..., LiveServer]
) -> None:
    key = await make_server_key(served_url)
    server = live_server_factory(served_url)
    auth = {"Authorization": f"Bearer {key}", "Idempotency-Key": "order-7781"}
    async with httpx.AsyncClient(base_url=server.url, headers=auth, timeout=60) as http:
        body = {"amount": 7, "reason": "purchase", "ref": "order-7781"}
        responses = await asyncio.gather(
            *(http.post("/v1/accounts/buyer/grants", json=body) for _ in range(20))
        )
        assert {r.status_code for r in responses} == {201}
        assert len({r.text for r in responses}) == 1
        reused = await http.post("/v1/accounts/buyer/grants", json={**body, "amount": 8})
        assert reused.status_code == 422
        assert reused.json()["error"]["code"] == "idempotency_key_reused"
        entries = (await http.get("/v1/accounts/buyer/entries")).json()["entries"]
    grants = [e for e in entries if e["type"] == "grant" and e["reason"] == "purchase"]
    assert len(grants) == 1
    assert grants[0]["idempotency_key"] == "order-7781"
