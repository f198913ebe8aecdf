"""G5: ordered, gap-free push across instances, reconnects, crashes, lost messages and Redis outages.

Every test runs real uvicorn processes on PostgreSQL; cross-instance tests share Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets

from tests.e2e.stream_client import StreamClient
from tests.support import TEST_SECRET, LiveServer, PrivateRedis, make_server_key

Factory = Callable[..., LiveServer]


def new_account() -> str:
    return f"acct-{uuid.uuid4().hex[:12]}"


def user_token(account_id: str, ttl_s: int = 3600) -> str:
    from api.tokens import TokenSigner
    from core.ports import SystemClock

    token, _ = TokenSigner(TEST_SECRET, SystemClock()).issue(account_id, SystemClock().now(), ttl_s)
    return token


async def grant(
    http: httpx.AsyncClient, account_id: str, amount: int = 1, ref: str | None = None
) -> httpx.Response:
    return await http.post(
        f"/v1/accounts/{account_id}/grants",
        json={"amount": amount, "reason": "purchase", "ref": ref},
    )


def assert_gap_free(seqs: list[int], first: int, last: int) -> None:
    assert seqs == list(range(first, last + 1)), seqs


async def settle(http: httpx.AsyncClient, client: StreamClient, account: str, seq: int) -> None:
    """One more event (`seq`), waited for: a stream is ordered, so whatever was sent before it
    (a late duplicate too) has arrived by then."""
    assert (await grant(http, account)).status_code == 201
    await client.wait_for_seq(seq)


async def wait_for_metric(
    server: LiveServer, name: str, at_least: float, timeout: float = 10
) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        while True:
            text = (await http.get("/metrics")).text
            values = [
                float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)
            ]
            if sum(values) >= at_least:
                return
            assert time.monotonic() < deadline, f"{name} stayed below {at_least}: {values}"
            await asyncio.sleep(0.05)


async def test_two_instances_deliver_every_event_in_order(
    pg_url: str, redis_url: str, live_server_factory: Factory
) -> None:
    key = await make_server_key(pg_url)
    # a slow resync proves delivery through Redis, not through the journal poll
    env = {"CREDITSTREAM_REDIS_URL": redis_url, "CREDITSTREAM_RESYNC_INTERVAL_S": "30"}
    one, two = live_server_factory(pg_url, **env), live_server_factory(pg_url, **env)
    account = new_account()
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=two.url, headers=auth, timeout=10) as http:
        await http.put(f"/v1/accounts/{account}")
        client = StreamClient(one.url, key)
        await client.connect()
        subscribed = await client.subscribe(account, after_seq=1)
        assert subscribed["seq"] == 1
        for _ in range(100):
            assert (await grant(http, account)).status_code == 201
        await client.wait_for_seq(101, timeout=10)
        await settle(http, client, account, 102)
    assert_gap_free(client.seqs(account), 2, 102)
    latencies = [
        (at - _parse_at(m["at"])) * 1000
        for at, m in client.messages
        if m.get("type") == "balance.updated"
    ]
    p50 = statistics.median(latencies)
    p99 = sorted(latencies)[int(len(latencies) * 0.99) - 1]
    line = (
        f"cross-instance push latency over {len(latencies)} events: "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(latencies):.1f} ms"
    )
    print("\n" + line)
    if path := os.environ.get("CREDITSTREAM_RELIABILITY_REPORT"):
        with open(path, "a") as out:
            out.write(line + "\n")
    await client.close()


def _parse_at(at: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


async def test_resume_after_disconnect_over_websocket_and_sse(
    pg_url: str, live_server_factory: Factory
) -> None:
    key = await make_server_key(pg_url)
    server = live_server_factory(pg_url)
    account = new_account()
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as http:
        await http.put(f"/v1/accounts/{account}")
        client = StreamClient(server.url, key)
        await client.connect()
        await client.subscribe(account)
        last = client.of_type("snapshot")[0]["seq"]
        await client.close()
        for _ in range(50):
            await grant(http, account)
        await client.connect()
        await client.subscribe(account, after_seq=last)
        await client.wait_for_seq(last + 50)
        await settle(http, client, account, last + 51)
        assert_gap_free(client.seqs(account), last + 1, last + 51)
        await client.close()

        sse_events = await read_sse(http, account, last_event_id=last + 20, count=30)
        assert [e["seq"] for e in sse_events] == list(range(last + 21, last + 51))


async def read_sse(
    http: httpx.AsyncClient, account: str, last_event_id: int, count: int
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    headers = {"Last-Event-ID": str(last_event_id)}
    async with http.stream(
        "GET", f"/v1/stream/sse?account_id={account}", headers=headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        frame: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line == "":
                if frame.get("event") == "balance.updated":
                    event = json.loads(frame["data"])
                    assert frame["id"] == str(event["seq"])
                    events.append(event)
                    if len(events) == count:
                        return events
                frame = {}
            elif ":" in line and not line.startswith(":"):
                name, _, value = line.partition(":")
                frame[name] = value.strip()
    return events


async def test_event_survives_a_crash_between_commit_and_publish(
    pg_url: str, redis_url: str, live_server_factory: Factory
) -> None:
    key = await make_server_key(pg_url)
    one = live_server_factory(pg_url, CREDITSTREAM_REDIS_URL=redis_url)
    two = live_server_factory(
        pg_url, CREDITSTREAM_REDIS_URL=redis_url, CREDITSTREAM_FAULTS="crash_after_commit"
    )
    account = new_account()
    async with httpx.AsyncClient(
        base_url=two.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as http:
        await http.put(f"/v1/accounts/{account}")
        client = StreamClient(one.url, key)
        await client.connect()
        await client.subscribe(account, after_seq=1)
        with pytest.raises(httpx.HTTPError):
            await grant(http, account, 5, ref="fault:crash-after-commit")
    assert two.process is not None and two.process.wait(timeout=5) != 0
    started = time.monotonic()
    await client.wait_for_seq(2, timeout=2)
    assert time.monotonic() - started < 2
    assert client.events(account)[0]["balance"] == 33
    await client.close()


async def test_a_dropped_redis_message_is_detected_and_filled(
    pg_url: str, redis_url: str, live_server_factory: Factory
) -> None:
    key = await make_server_key(pg_url)
    env = {"CREDITSTREAM_REDIS_URL": redis_url, "CREDITSTREAM_RESYNC_INTERVAL_S": "30"}
    one = live_server_factory(pg_url, **env)
    two = live_server_factory(pg_url, CREDITSTREAM_FAULTS="drop_publish_once", **env)
    account = new_account()
    async with (
        httpx.AsyncClient(
            base_url=one.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as http_one,
        httpx.AsyncClient(
            base_url=two.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as http_two,
    ):
        await http_one.put(f"/v1/accounts/{account}")
        marker = new_account()
        await http_one.put(f"/v1/accounts/{marker}")
        client = StreamClient(one.url, key)
        await client.connect()
        await client.subscribe(account, after_seq=1)
        await client.subscribe(marker, after_seq=1)
        await grant(http_two, account)  # its publish is dropped
        # the next publish leaves instance two after it, in order on the same connection:
        # once the marker has arrived, the dropped event would have arrived before it
        await grant(http_two, marker)
        await client.wait_until(lambda: client.seqs(marker) == [2], timeout=5)
        assert client.seqs(account) == []
        await grant(http_two, account)  # seq 3 arrives: seq 2 is missing, and is filled
        await client.wait_for_seq(3)
    assert_gap_free(client.seqs(account), 2, 3)
    await client.close()


async def test_redis_outage_keeps_rest_and_local_push_then_catches_up(
    pg_url: str, private_redis: PrivateRedis, live_server_factory: Factory
) -> None:
    key = await make_server_key(pg_url)
    env = {"CREDITSTREAM_REDIS_URL": private_redis.url, "CREDITSTREAM_RESYNC_INTERVAL_S": "30"}
    one, two = live_server_factory(pg_url, **env), live_server_factory(pg_url, **env)
    account = new_account()
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=two.url, headers=auth, timeout=10) as http:
        await http.put(f"/v1/accounts/{account}")
        remote, local = StreamClient(one.url, key), StreamClient(two.url, key)
        for client in (remote, local):
            await client.connect()
            await client.subscribe(account, after_seq=1)
        await grant(http, account)
        await remote.wait_for_seq(2)

        private_redis.stop()
        for _ in range(10):
            assert (await grant(http, account)).status_code == 201
        await local.wait_for_seq(12, timeout=2)  # same-instance push does not need Redis
        assert (await http.get("/readyz")).status_code == 503
        assert 12 not in remote.seqs(account)

        private_redis.start()
        await remote.wait_for_seq(12, timeout=15)  # the listener reconnects and resyncs
        await grant(http, account)
        await remote.wait_for_seq(13, timeout=5)
        assert (await http.get("/readyz")).status_code == 200
    for client in (remote, local):
        assert_gap_free(client.seqs(account), 2, 13)
        await client.close()


async def test_a_client_that_never_reads_is_closed_with_1013_and_resumes(
    pg_url: str, live_server_factory: Factory
) -> None:
    key = await make_server_key(pg_url)
    server = live_server_factory(pg_url, CREDITSTREAM_STREAM_QUEUE="20")
    account = new_account()
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as http:
        await http.put(f"/v1/accounts/{account}")
    rss_before = _rss_kib(server)
    ws_url = server.url.replace("http", "ws") + f"/v1/stream?token={key}"
    stalled = await websockets.connect(ws_url, max_queue=1)  # stops reading when 1 is buffered
    await stalled.send(json.dumps({"op": "subscribe", "account_id": account, "after_seq": 1}))
    await commit_grants_in_one_transaction(pg_url, account, 300)
    # not reading until the server has noticed the burst and overflowed the queue of 20
    await wait_for_metric(server, "creditstream_slow_consumer_closes_total", 1)
    received: list[dict[str, Any]] = []
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            received.append(json.loads(await asyncio.wait_for(stalled.recv(), 10)))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    growth = _rss_kib(server) - rss_before
    assert growth < 64 * 1024, f"server grew by {growth} KiB"
    got = [m["seq"] for m in received if m.get("type") == "balance.updated"]
    assert got == list(range(2, 2 + len(got))) and len(got) < 300

    resumed = StreamClient(server.url, key)
    await resumed.connect()
    await resumed.subscribe(account, after_seq=got[-1] if got else 1)
    await resumed.wait_for_seq(301, timeout=10)
    assert got + resumed.seqs(account) == list(range(2, 302))
    await resumed.close()


async def commit_grants_in_one_transaction(database_url: str, account: str, count: int) -> None:
    """A burst of events that reaches the server through its journal check, all at once."""
    from asgi import load_catalogue
    from core.ports import SystemClock
    from core.service import CreditService
    from storage.sql import Database

    db = Database.from_url(database_url)
    service = CreditService(SystemClock(), load_catalogue(None))
    try:
        async with db.transaction() as uow:
            account_state, _ = await service.ensure_account(uow, account)
            for _ in range(count):
                account_state.add_grant(
                    f"grt_{uuid.uuid4().hex}", 1, "purchase", service.now(), ref="x" * 200
                )
            await uow.accounts.save(account_state)
    finally:
        await db.dispose()


def _rss_kib(server: LiveServer) -> int:
    assert server.process is not None
    with open(f"/proc/{server.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


# --- auth, protocol errors, shutdown ---------------------------------------------------------


@pytest.fixture
async def one_server(pg_url: str, live_server_factory: Factory) -> tuple[LiveServer, str]:
    key = await make_server_key(pg_url)
    return live_server_factory(pg_url, CREDITSTREAM_HEARTBEAT_S="1"), key


async def expect_close(
    url: str, token: str, messages: list[dict[str, Any]], timeout: float = 5
) -> int:
    client = StreamClient(url, token)
    await client.connect()
    for message in messages:
        await client.send(message)
    await asyncio.wait_for(client.closed.wait(), timeout)
    assert client.close_code is not None
    return client.close_code


async def test_bad_token_closes_with_4401(one_server: tuple[LiveServer, str]) -> None:
    server, _ = one_server
    ws_url = server.url.replace("http", "ws") + "/v1/stream?token=not-a-token"
    async with websockets.connect(ws_url) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_other_account_closes_with_4403(one_server: tuple[LiveServer, str]) -> None:
    server, _ = one_server
    code = await expect_close(
        server.url, user_token("alice"), [{"op": "subscribe", "account_id": "bob"}]
    )
    assert code == 4403


async def test_token_expiring_while_connected_closes_with_4401_unless_refreshed(
    one_server: tuple[LiveServer, str],
) -> None:
    server, _ = one_server
    keeps_alive = [{"op": "ping"}]
    short = user_token("carol", ttl_s=2)
    client = StreamClient(server.url, short)
    await client.connect()
    await client.subscribe()
    started = time.monotonic()
    while not client.closed.is_set() and time.monotonic() - started < 6:
        await client.send(keeps_alive[0])
        await asyncio.sleep(0.3)
    assert client.close_code == 4401

    refreshed = StreamClient(server.url, user_token("carol", ttl_s=2))
    await refreshed.connect()
    await refreshed.send({"op": "refresh", "token": user_token("carol", ttl_s=60)})
    for _ in range(12):
        await refreshed.send({"op": "ping"})
        await asyncio.sleep(0.3)
    assert not refreshed.closed.is_set()
    assert refreshed.of_type("refreshed")
    await refreshed.close()


async def test_silent_client_closes_with_4408(one_server: tuple[LiveServer, str]) -> None:
    server, key = one_server
    assert await expect_close(server.url, key, [], timeout=5) == 4408


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        {"op": "dance"},
        {"op": "subscribe", "account_id": "bad id!"},
        {"op": "subscribe", "account_id": "x", "after_seq": "1"},
    ],
)
async def test_bad_messages_close_with_1008(
    one_server: tuple[LiveServer, str], message: Any
) -> None:
    server, key = one_server
    client = StreamClient(server.url, key)
    await client.connect()
    assert client._ws is not None
    await client._ws.send(message if isinstance(message, str) else json.dumps(message))
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.close_code == 1008


async def test_foreign_origin_is_refused_at_the_handshake(
    one_server: tuple[LiveServer, str],
) -> None:
    server, key = one_server
    ws_url = server.url.replace("http", "ws") + f"/v1/stream?token={key}"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(ws_url, origin="http://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    async with httpx.AsyncClient(base_url=server.url) as http:
        sse = await http.get(
            f"/v1/stream/sse?token={key}&account_id=x", headers={"Origin": "http://evil.example"}
        )
    assert sse.status_code == 403


async def test_sigterm_closes_streams_with_1012(one_server: tuple[LiveServer, str]) -> None:
    server, key = one_server
    client = StreamClient(server.url, key)
    await client.connect()
    await client.subscribe("someone")
    await asyncio.to_thread(server.stop)
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.close_code == 1012
