"""`POST /v1/batch`: many operations in one request and one transaction, each with its own
result in order; a refused part leaves nothing behind and does not stop the others."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import httpx

from asgi import create_app
from config import Settings
from core.account import Account
from storage.keys import create_server_key
from storage.writes.batch import copy_account
from tests.conftest import ApiClient
from tests.support import PG_ADMIN_DSN, MutableClock


async def grant(api: ApiClient, account: str, amount: int) -> None:
    response = await api.http.post(
        f"/v1/accounts/{account}/grants",
        headers=api.server(),
        json={"amount": amount, "reason": "purchase"},
    )
    assert response.status_code == 201, response.text


async def snapshot(api: ApiClient, account: str) -> dict[str, Any]:
    response = await api.http.get(f"/v1/accounts/{account}", headers=api.server())
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_each_part_has_its_own_result_in_one_transaction(api: ApiClient) -> None:
    alice, bob = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    await grant(api, alice, 100)
    await grant(api, bob, 10)
    opened = await api.http.post(
        "/v1/holds", headers=api.server(), json={"account_id": alice, "amount": 30}
    )
    first_hold = opened.json()["hold"]["hold_id"]
    before = await snapshot(api, bob)
    commits = api.ctx.writer.commits
    response = await api.http.post(
        "/v1/batch",
        headers=api.server(),
        json={
            "operations": [
                {"op": "hold", "account_id": alice, "amount": 5, "ref": "job-1"},
                {"op": "capture", "hold_id": first_hold, "amount": 20},
                {"op": "charge", "account_id": bob, "amount": 1000, "reason": "render"},  # 402
                {"op": "grant", "account_id": bob, "amount": 7, "reason": "promo"},
                {"op": "release", "hold_id": "hold_unknown"},  # 404
                {"op": "charge", "account_id": bob, "amount": 3, "reason": "render"},
            ]
        },
    )
    assert response.status_code == 200, response.text
    assert api.ctx.writer.commits == commits + 1, "expected one transaction for the request"
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 200, 402, 201, 404, 201]
    assert results[2]["body"]["error"]["code"] == "insufficient_credits"
    assert results[4]["body"]["error"]["code"] == "not_found"
    assert results[1]["body"]["hold"]["status"] == "captured"
    after_bob = await snapshot(api, bob)
    assert after_bob["balance"] == before["balance"] + 7 - 3  # the refused charge left nothing
    assert after_bob["seq"] == before["seq"] + 2
    alice_now = await snapshot(api, alice)
    assert alice_now["balance"] == 128 - 20 and alice_now["held"] == 5


async def test_the_request_is_idempotent_as_a_whole(api: ApiClient) -> None:
    account = f"carol-{uuid.uuid4().hex[:6]}"
    await grant(api, account, 50)
    operations = {
        "operations": [
            {"op": "charge", "account_id": account, "amount": 2},
            {"op": "charge", "account_id": account, "amount": 500},
        ]
    }
    headers = {**api.server(), "Idempotency-Key": uuid.uuid4().hex}
    first = await api.http.post("/v1/batch", headers=headers, json=operations)
    again = await api.http.post("/v1/batch", headers=headers, json=operations)
    assert first.status_code == again.status_code == 200
    assert first.content == again.content
    assert again.headers.get("idempotent-replayed") == "true"
    assert (await snapshot(api, account))["balance"] == 78 - 2
    other = await api.http.post(
        "/v1/batch",
        headers=headers,
        json={"operations": [{"op": "charge", "account_id": account, "amount": 1}]},
    )
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"


async def test_bad_batches_are_refused_whole(api: ApiClient) -> None:
    account = f"dave-{uuid.uuid4().hex[:6]}"
    await grant(api, account, 50)
    before = await snapshot(api, account)
    too_many = {"operations": [{"op": "charge", "account_id": account, "amount": 1}] * 1001}
    cases = [
        ({"operations": []}, 422),
        (too_many, 422),
        ({"operations": [{"op": "explode", "account_id": account}]}, 422),
        ({"operations": [{"op": "charge", "account_id": account, "amount": 0}]}, 422),
        ({"operations": [{"op": "hold", "amount": 1}]}, 422),  # a batch hold names its account
        ({"operations": [{"op": "charge", "account_id": account, "amount": 1, "x": 1}]}, 422),
    ]
    for body, status in cases:
        response = await api.http.post("/v1/batch", headers=api.server(), json=body)
        assert response.status_code == status, (
            body if body is not too_many else "1001",
            response.text,
        )
        assert "error" in response.json()
    user = await api.http.post(
        "/v1/batch",
        headers=api.user(account),
        json={"operations": [{"op": "grant", "account_id": account, "amount": 1000}]},
    )
    assert user.status_code == 403
    assert await snapshot(api, account) == before


async def test_a_thousand_parts_fit(api: ApiClient) -> None:
    account = f"erin-{uuid.uuid4().hex[:6]}"
    await grant(api, account, 5000)
    response = await api.http.post(
        "/v1/batch",
        headers=api.server(),
        json={
            "operations": [{"op": "hold", "account_id": account, "amount": 1} for _ in range(1000)]
        },
    )
    assert response.status_code == 200, response.text[:500]
    assert [r["status"] for r in response.json()["results"]] == [201] * 1000
    assert (await snapshot(api, account))["held"] == 1000


async def _deadlocks(database: str) -> int:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        count: int = await conn.fetchval(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = $1", database
        )
    finally:
        await conn.close()
    return count


async def test_mixed_case_wallets_in_opposite_orders_on_two_instances_never_deadlock(
    pg_url: str, settings_for: Callable[..., Settings], clock: MutableClock
) -> None:
    """Each batch locks its accounts up front, in one statement in id order, whatever case
    its wallet ids are written in: two instances' batches naming the same wallets in opposite
    orders wait for each other, never deadlock (PostgreSQL counts every deadlock it breaks)."""
    wallets = ["0x" + f"{i:x}" * 40 for i in range(10, 16)]  # 0xaaaa…, 0xbbbb…, …
    written = ["0x" + w[2:22].upper() + w[22:] for w in wallets]  # 0xAAAA…aaaa, as checksummed
    apps = []
    async with AsyncExitStack() as stack:
        for _ in range(2):
            app = create_app(settings_for(pg_url), clock=clock)
            await stack.enter_async_context(app.router.lifespan_context(app))
            apps.append(app)
        key = await create_server_key(apps[0].state.ctx.db, "tests")
        auth = {"Authorization": f"Bearer {key}"}
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url="http://creditstream.test",
                    headers=auth,
                    timeout=60,
                )
            )
            for app in apps
        ]
        granted = await clients[0].post(
            "/v1/batch",
            json={
                "operations": [
                    {"op": "grant", "account_id": w, "amount": 100, "reason": "purchase"}
                    for w in wallets
                ]
            },
        )
        assert granted.status_code == 200, granted.text
        rounds = 8
        for _ in range(rounds):
            forward = [{"op": "charge", "account_id": w, "amount": 1} for w in written]
            answers = await asyncio.gather(
                clients[0].post("/v1/batch", json={"operations": forward}),
                clients[1].post("/v1/batch", json={"operations": forward[::-1]}),
            )
            for answer in answers:
                assert answer.status_code == 200, answer.text[:500]
                assert [r["status"] for r in answer.json()["results"]] == [201] * len(wallets)
        for wallet in wallets:
            account = (await clients[1].get(f"/v1/accounts/{wallet}")).json()
            assert account["balance"] == 128 - 2 * rounds, account
    # the pools are closed: their backends have reported what they counted
    assert await _deadlocks(pg_url.rsplit("/", 1)[1]) == 0


def test_a_working_copy_shares_the_grants_it_does_not_change(clock: MutableClock) -> None:
    """What made a 1,000-part batch on an account with 1,000 grants take seconds: every part
    copied every grant. A part's copy now shares them, and copies only the one it spends."""
    account = Account.open("many", clock.now())
    for i in range(100):
        account.add_grant(f"grt_{i:03d}", 5, "purchase", clock.now())
    copy = copy_account(account)
    assert all(mine is theirs for mine, theirs in zip(copy.grants, account.grants, strict=True))

    copy.charge("chg_1", 30, "render", clock.now())  # the trial's 28 (expiring first), then 2

    changed = [g for g in copy.grants if not any(g is o for o in account.grants)]
    assert sorted(g.grant_id for g in changed) == sorted(copy.touched_grants)
    assert len(changed) == 2  # of 101: the other 99 are still the original's own objects
    assert sum(g.remaining for g in account.grants) == 28 + 500  # the original is untouched
    assert sum(g.remaining for g in copy.grants) == 28 + 500 - 30


async def test_a_thousand_charges_on_a_thousand_grants_leave_health_checks_answered(
    api_factory: Callable[..., Any], pg_url: str
) -> None:
    # PostgreSQL, as production runs: SQLite's writes in a worker thread compete for the GIL
    api: ApiClient = await api_factory(pg_url)
    account = f"many-{uuid.uuid4().hex[:6]}"
    for count in (1000, 40):
        granted = await api.http.post(
            "/v1/batch",
            headers=api.server(),
            json={
                "operations": [
                    {"op": "grant", "account_id": account, "amount": 5, "reason": "purchase"}
                    for _ in range(count)
                ]
            },
        )
        assert granted.status_code == 200, granted.text[:300]
    gaps: list[float] = []
    done = asyncio.Event()

    async def check_health() -> None:
        while not done.is_set():
            due = time.perf_counter()
            await asyncio.sleep(0.01)
            assert (await api.http.get("/healthz")).status_code == 200
            gaps.append(time.perf_counter() - due - 0.01)

    checking = asyncio.create_task(check_health())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    response = await api.http.post(
        "/v1/batch",
        headers=api.server(),
        json={
            "operations": [
                {"op": "charge", "account_id": account, "amount": 1} for _ in range(1000)
            ]
        },
    )
    elapsed = time.perf_counter() - started
    done.set()
    await checking
    assert response.status_code == 200, response.text[:300]
    assert [r["status"] for r in response.json()["results"]] == [201] * 1000
    assert (await snapshot(api, account))["balance"] == 28 + 5 * 1040 - 1000
    # the batch no longer holds the event loop from start to end (it took 4-13 s here, and a
    # health check waited all of it): relative bounds, as a busy machine slows both alike
    assert max(gaps) < 0.75 * elapsed, (max(gaps), elapsed)
    assert len(gaps) >= 3


async def test_a_batch_whose_answer_would_be_huge_is_refused_whole(api: ApiClient) -> None:
    account = f"echo-{uuid.uuid4().hex[:6]}"
    await grant(api, account, 100)
    metadata = {f"{i:02d}" + "k" * 38: "v" * 500 for i in range(50)}  # 25 KB, within limits
    opened = await api.http.post(
        "/v1/holds",
        headers=api.server(),
        json={"account_id": account, "amount": 10, "metadata": metadata},
    )
    hold_id = opened.json()["hold"]["hold_id"]
    before = await snapshot(api, account)
    operations = [{"op": "charge", "account_id": account, "amount": 1}] + [
        {"op": "capture", "hold_id": hold_id} for _ in range(999)
    ]
    headers = {**api.server(), "Idempotency-Key": uuid.uuid4().hex}

    response = await api.http.post("/v1/batch", headers=headers, json={"operations": operations})

    assert response.status_code == 413, response.text[:300]
    error = response.json()["error"]
    assert (error["code"], error["limit"]) == ("batch_answer_too_large", 4 * 1024 * 1024)
    assert len(response.content) < 1000
    assert await snapshot(api, account) == before  # neither the charge nor the capture stayed
    hold = (await api.http.get(f"/v1/holds/{hold_id}", headers=api.server())).json()
    assert hold["status"] == "open"
    again = await api.http.post("/v1/batch", headers=headers, json={"operations": operations})
    assert (again.status_code, again.content) == (413, response.content)
    fits = await api.http.post(
        "/v1/batch", headers=api.server(), json={"operations": operations[:50]}
    )
    assert fits.status_code == 200
    assert [r["status"] for r in fits.json()["results"]] == [201] + [200] * 49
    assert (await snapshot(api, account))["balance"] == before["balance"] - 1 - 10
