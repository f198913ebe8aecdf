"""The Python client rides out a database outage as long as a primary failover: the server's
database is cut away for 8 s (every connection dropped, new ones refused: the server answers
503 `service_unavailable`), and a write made during it, with the client's defaults, answers
once the database is back, applied exactly once; so does a call to a route that keeps no keys.
A call whose retry budget is shorter than the outage fails with the last answer's typed error,
saying so. The Node client's counterpart is in
clients/node/test/outage.test.mjs (run by tests/e2e/test_node_client.py).

    .venv/bin/pytest tests/e2e/test_client_retry_budget.py -q
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import creditstream_client as cs
import httpx
import pytest

from tests.e2e.database_cut import DatabaseCut
from tests.support import LiveServer, make_server_key

pytestmark = pytest.mark.postgres

OUTAGE_S = 8.0


@dataclass
class CutServer:
    url: str
    key: str
    cut: DatabaseCut


@pytest.fixture
def cut_server(pg_url: str, live_server_factory: Callable[..., LiveServer]) -> Iterator[CutServer]:
    key = asyncio.run(make_server_key(pg_url))
    cut = DatabaseCut().start()
    try:
        server = live_server_factory(cut.database_url(pg_url))
        yield CutServer(server.url, key, cut)
    finally:
        cut.stop()


def account_id() -> str:
    return f"cut-{uuid.uuid4().hex[:10]}"


def recording_client(sent: list[httpx.Request]) -> httpx.Client:
    return httpx.Client(event_hooks={"request": [sent.append]})


def test_a_write_during_an_outage_answers_once_the_database_is_back_applied_once(
    cut_server: CutServer,
) -> None:
    ann = account_id()
    sent: list[httpx.Request] = []
    with cs.Client(cut_server.url, cut_server.key, http=recording_client(sent)) as client:
        client.ensure_account(ann)
        cut_server.cut.cut_for(OUTAGE_S)
        started = time.monotonic()
        charge = client.create_charge(ann, 2, ref="during-the-outage")["charge"]
        took = time.monotonic() - started
        assert cut_server.cut.is_down() is False
        assert OUTAGE_S - 1 < took < OUTAGE_S + 10, took  # waited it out, answered soon after
        posts = [r for r in sent if r.method == "POST"]
        assert len(posts) > 2  # 503s first, then the answer
        assert len({r.headers["idempotency-key"] for r in posts}) == 1
        entries = client.list_entries(ann)["entries"]
        account = client.get_account(ann)
    charges = [e for e in entries if e["type"] == "charge"]
    assert [c["op_id"] for c in charges] == [charge["charge_id"]]  # exactly one effect
    assert charges[0]["idempotency_key"] == posts[0].headers["idempotency-key"]
    assert account["balance"] == 28 - 2
    print(f"\n8 s database outage: the charge answered after {took:.1f} s, {len(posts)} attempts")


def test_a_budget_shorter_than_the_outage_fails_naming_the_last_answer(
    cut_server: CutServer,
) -> None:
    bo = account_id()
    with cs.Client(cut_server.url, cut_server.key, retry_budget_s=2.0) as client:
        client.ensure_account(bo)
        cut_server.cut.cut_for(OUTAGE_S)
        started = time.monotonic()
        with pytest.raises(cs.Unavailable) as raised:
            client.create_charge(bo, 1, idempotency_key=f"short-{bo}")
        took = time.monotonic() - started
    assert took < 5.0, took  # the budget, plus the last attempt
    assert raised.value.status == 503 and raised.value.code == "service_unavailable"
    assert raised.value.attempts > 1
    assert "last answer 503" in str(raised.value) and "retry budget 2 s" in str(raised.value)
    # once the database is back, the same key applies it (the 503s changed nothing)
    while cut_server.cut.is_down():
        time.sleep(0.2)
    with cs.Client(cut_server.url, cut_server.key) as client:
        client.create_charge(bo, 1, idempotency_key=f"short-{bo}")
        kinds = [e["type"] for e in client.list_entries(bo)["entries"]]
    assert kinds == ["grant", "charge"]


async def test_the_async_client_and_a_read_ride_out_the_outage_too(
    cut_server: CutServer,
) -> None:
    cy = account_id()
    async with cs.AsyncClient(cut_server.url, cut_server.key) as client:
        await client.ensure_account(cy)
        await asyncio.to_thread(cut_server.cut.cut_for, OUTAGE_S)
        hold, read = await asyncio.gather(
            client.create_hold(cy, 3, ref="async-during-the-outage"), client.get_account(cy)
        )
        assert read["account_id"] == cy
        entries = (await client.list_entries(cy))["entries"]
    assert [e["type"] for e in entries] == ["grant", "hold"]
    assert entries[1]["op_id"] == hold["hold"]["hold_id"]


def test_a_post_to_a_route_without_keys_rides_out_the_outage_and_attempts_still_bound_a_call(
    cut_server: CutServer,
) -> None:
    sent: list[httpx.Request] = []
    with cs.Client(cut_server.url, cut_server.key, http=recording_client(sent)) as client:
        dee = account_id()
        client.ensure_account(dee)
        cut_server.cut.cut_for(OUTAGE_S)
        # enabling an endpoint keeps no key on the server, and is the same however often it
        # runs: retried through the outage with one key, until the real answer
        with pytest.raises(cs.NotFound) as not_found:
            client.enable_webhook_endpoint("whe_unknown")
        assert not_found.value.attempts > 2
        posts = [r for r in sent if r.method == "POST"]
        assert len(posts) == not_found.value.attempts
        assert len({r.headers["idempotency-key"] for r in posts}) == 1
    cut_server.cut.cut_for(OUTAGE_S)
    with cs.Client(cut_server.url, cut_server.key, max_attempts=2) as client:
        with pytest.raises(cs.Unavailable) as raised:
            client.get_account(dee)
        assert raised.value.attempts == 2 and "gave up after 2 attempt(s)" in str(raised.value)


async def test_the_stream_resumes_after_its_server_is_gone_for_12_s(
    pg_url: str, live_server_factory: Callable[..., LiveServer]
) -> None:
    key = await make_server_key(pg_url)
    server = await asyncio.to_thread(live_server_factory, pg_url)
    eve = account_id()
    received: list[int] = []
    async with cs.AsyncClient(server.url, key) as client:
        await client.ensure_account(eve)
        stream = client.stream(eve, after_seq=0)

        async def consume() -> None:
            async for event in stream:
                received.append(int(event["seq"]))

        consumer = asyncio.create_task(consume())
        try:
            await client.create_grant(eve, 1, reason="bonus")
            head = (await client.get_account(eve))["seq"]
            await until(lambda: len(received) >= head)
            await asyncio.to_thread(server.stop)  # refused connections, reconnect after reconnect
            await asyncio.sleep(12)
            await asyncio.to_thread(server.start)
            back = time.monotonic()
            await client.create_grant(eve, 2, reason="bonus")
            final = (await client.get_account(eve))["seq"]
            await until(lambda: bool(received) and received[-1] >= final)
            caught_up_s = time.monotonic() - back
        finally:
            consumer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await consumer
    assert received == list(range(1, final + 1))  # every event once, in order
    assert caught_up_s < 10, caught_up_s  # the waits are capped: it reconnects soon after
    print(f"\nstream: caught up {caught_up_s:.1f} s after its server was back from 12 s away")


async def until(done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not done():
        assert time.monotonic() < deadline, "the stream did not deliver in 60 s"
        await asyncio.sleep(0.05)
