"""Outbound webhooks through the HTTP API, on SQLite and PostgreSQL, into a real HTTP receiver
on a loopback port (allowed by `webhook_allow_private`, as CREDITSTREAM_WEBHOOK_ALLOW_PRIVATE=1
does): registration, signed deliveries in order per account, a receiver that is down and comes
back, an instance stopped mid-stream and another started on the same database, two instances
sharing the work, the retry window that disables an endpoint, and the address rules.

    .venv/bin/pytest tests/e2e/test_outbound_webhooks.py -q
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from asgi import create_app
from config import Settings
from core.signatures import verify
from egress import is_public
from storage.keys import create_server_key
from tests.conftest import ApiClient
from tests.receiver import Receiver
from tests.support import MutableClock

FAST = {
    "webhook_allow_private": True,
    "webhook_poll_s": 0.05,
    "webhook_timeout_s": 2.0,
    "webhook_retry_first_s": 0.05,
    "webhook_retry_cap_s": 0.3,
}
ALL_TYPES = ["balance.updated", "job.updated", "credits.low"]


class Instance(ApiClient):
    async def aclose(self) -> None:
        await self.http.aclose()
        await self.lifespan.__aexit__(None, None, None)

    lifespan: Any = None


Start = Callable[..., Awaitable[Instance]]


@pytest.fixture
async def start(
    settings_for: Callable[..., Settings], clock: MutableClock, database_url: str
) -> AsyncIterator[Start]:
    """Start an instance on this test's database (delivering unless told not to)."""
    running: list[Instance] = []

    async def make(deliver: bool = True, **overrides: Any) -> Instance:
        app = create_app(
            settings_for(database_url, **{**FAST, **overrides}), clock=clock, run_sweeper=deliver
        )
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        key = await create_server_key(app.state.ctx.db, "tests")
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://creditstream.test"
        )
        instance = Instance(app, http, key)
        instance.lifespan = lifespan
        running.append(instance)
        return instance

    yield make
    for instance in reversed(running):
        if instance.lifespan is not None:
            await instance.aclose()


async def receiver_at(started: bool = True) -> Receiver:
    receiver = Receiver()
    return await receiver.start() if started else receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await receiver_at()
    yield r
    await r.stop()


async def register(
    api: ApiClient, url: str, events: list[str] | None = None, **headers: str
) -> dict[str, Any]:
    response = await api.http.post(
        "/v1/webhook-endpoints",
        headers={**api.server(), **headers},
        json={"url": url, "events": events or ALL_TYPES},
    )
    assert response.status_code == 201, response.text
    endpoint: dict[str, Any] = response.json()
    return endpoint


async def spend(api: ApiClient, account: str, rounds: int) -> None:
    """Grants and charges: `balance.updated` events, and `credits.low` on the way down."""
    h = api.server()
    for i in range(rounds):
        response = await api.http.post(
            f"/v1/accounts/{account}/grants", headers=h, json={"amount": 10, "reason": "purchase"}
        )
        assert response.status_code == 201, response.text
        response = await api.http.post(
            f"/v1/accounts/{account}/charges",
            headers=h,
            json={"amount": 10 if i % 2 else 5, "reason": "use"},
        )
        assert response.status_code == 201, response.text


async def run_low(api: ApiClient, account: str) -> None:
    """Spend down to 1 credit: one `credits.low`."""
    available = (await api.http.get(f"/v1/accounts/{account}", headers=api.server())).json()[
        "available"
    ]
    response = await api.http.post(
        f"/v1/accounts/{account}/charges",
        headers=api.server(),
        json={"amount": available - 1, "reason": "use"},
    )
    assert response.status_code == 201, response.text


async def journal(api: ApiClient, account: str, after_seq: int = 0) -> list[dict[str, Any]]:
    response = await api.http.get(
        f"/v1/accounts/{account}/events?after_seq={after_seq}&limit=500", headers=api.server()
    )
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


async def head(api: ApiClient, account: str) -> int:
    response = await api.http.get(f"/v1/accounts/{account}", headers=api.server())
    return int(response.json()["seq"]) if response.status_code == 200 else 0


async def eventually(
    check: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check() if asyncio.iscoroutinefunction(check) else check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def by_account(events: list[dict[str, Any]]) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = {}
    for event in events:
        seqs.setdefault(event["account_id"], []).append(int(event["seq"]))
    return seqs


def first_deliveries(events: list[dict[str, Any]]) -> tuple[dict[str, list[int]], int]:
    """Per account, the seqs in the order first delivered, and how many were duplicates.
    At least once, in order: a redelivery repeats what came before, never overtakes."""
    seen: set[tuple[str, int]] = set()
    order: list[dict[str, Any]] = []
    for event in events:
        key = (event["account_id"], int(event["seq"]))
        if key not in seen:
            seen.add(key)
            order.append(event)
    return by_account(order), len(events) - len(order)


async def expected(api: ApiClient, accounts: dict[str, int]) -> dict[str, list[int]]:
    """Per account, every seq after its head at registration, from the journal."""
    return {
        account: [e["seq"] for e in await journal(api, account, after)]
        for account, after in accounts.items()
    }


# --- registration ------------------------------------------------------------------------


async def test_registration_shows_the_secret_once_and_lists_and_removes(
    start: Start, receiver: Receiver
) -> None:
    api = await start(deliver=False)
    endpoint = await register(
        api,
        receiver.url(),
        ["balance.updated", "balance.updated"],
        **{"Idempotency-Key": "register-1"},
    )
    assert endpoint["secret"].startswith("whsec_") and len(endpoint["secret"]) > 32
    assert endpoint["events"] == ["balance.updated"] and endpoint["status"] == "enabled"
    replay = await register(
        api,
        receiver.url(),
        ["balance.updated", "balance.updated"],
        **{"Idempotency-Key": "register-1"},
    )
    assert replay == endpoint  # a retried registration is the same endpoint, not a second
    reused = await api.http.post(
        "/v1/webhook-endpoints",
        headers={**api.server(), "Idempotency-Key": "register-1"},
        json={"url": receiver.url("/other"), "events": ALL_TYPES},
    )
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "idempotency_key_reused"
    listed = (await api.http.get("/v1/webhook-endpoints", headers=api.server())).json()
    assert [e["id"] for e in listed["endpoints"]] == [endpoint["id"]]
    assert "secret" not in listed["endpoints"][0]
    for body in (
        {"url": receiver.url(), "events": []},
        {"url": receiver.url(), "events": ["hold.created"]},
        {"url": "ftp://example.com/x", "events": ALL_TYPES},
        {"url": "http://user:pw@127.0.0.1/x", "events": ALL_TYPES},
    ):
        refused = await api.http.post("/v1/webhook-endpoints", headers=api.server(), json=body)
        assert refused.status_code == 422, (body, refused.text)
    path = f"/v1/webhook-endpoints/{endpoint['id']}"
    assert (await api.http.get(path + "/deliveries", headers=api.server())).status_code == 200
    assert (await api.http.delete(path, headers=api.server())).json()["deleted"] is True
    assert (await api.http.delete(path, headers=api.server())).status_code == 404
    assert (await api.http.get(path + "/deliveries", headers=api.server())).status_code == 404


async def test_private_addresses_are_refused_without_the_setting(
    start: Start, receiver: Receiver
) -> None:
    api = await start(deliver=False, webhook_allow_private=False)
    for url in (
        receiver.url(),
        "http://localhost:9/x",
        "http://[::1]/x",
        "http://10.1.2.3/x",
        "http://192.168.0.10/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/x",
        "http://0.0.0.0/x",
    ):
        refused = await api.http.post(
            "/v1/webhook-endpoints", headers=api.server(), json={"url": url, "events": ALL_TYPES}
        )
        assert refused.status_code == 422, (url, refused.text)
        assert refused.json()["error"]["code"] in {"url_not_allowed", "url_unresolvable"}, url
    public = await api.http.post(
        "/v1/webhook-endpoints",
        headers=api.server(),
        json={"url": "https://93.184.215.14/hooks", "events": ALL_TYPES},
    )  # a literal: no DNS asked
    assert public.status_code == 201, public.text


def test_public_means_global_unicast() -> None:
    import ipaddress

    assert is_public(ipaddress.ip_address("93.184.215.14"))
    for private in (
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:10.0.0.1",
        "224.0.0.1",
    ):
        assert not is_public(ipaddress.ip_address(private)), private


async def test_an_address_that_turned_private_is_refused_at_delivery(
    start: Start, receiver: Receiver
) -> None:
    """Checked again before each attempt: a name registered while allowed (or that resolved
    elsewhere then) gets nothing once it resolves to a private address."""
    registrar = await start(deliver=False)
    endpoint = await register(registrar, receiver.url())
    await start(webhook_allow_private=False)
    await spend(registrar, "rebound", 1)

    async def refused() -> bool:
        attempts = (
            await registrar.http.get(
                f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=registrar.server()
            )
        ).json()["deliveries"]
        return bool(attempts) and "non-public address" in attempts[-1]["error"]

    await eventually(refused, what="a refused attempt")
    assert receiver.received == []


# --- delivery ------------------------------------------------------------------------------


async def test_events_arrive_signed_and_in_order_per_account(
    start: Start, receiver: Receiver
) -> None:
    api = await start()
    await spend(api, "before", 1)  # events before the registration are not sent
    heads = {"before": await head(api, "before"), "alice": 0, "bob": 0}
    endpoint = await register(api, receiver.url())
    only_low = await register(api, receiver.url("/low"), ["credits.low"])
    await asyncio.gather(spend(api, "alice", 4), spend(api, "bob", 4), spend(api, "before", 2))
    await run_low(api, "alice")
    want = await expected(api, heads)
    await eventually(lambda: by_account(receiver.events()) == want, what="every event")
    for request in receiver.received:
        verify(
            endpoint["secret"] if request.path == "/hook" else only_low["secret"],
            request.body,
            request.headers["x-signature"],
            time.time(),
        )
        event = request.event
        assert request.headers["x-creditstream-event"] == event["type"]
        assert request.headers["x-creditstream-event-id"] == f"{event['account_id']}:{event['seq']}"
    lows = [e for a in heads for e in await journal(api, a, heads[a]) if e["type"] == "credits.low"]
    assert lows
    await eventually(
        lambda: by_account(receiver.events("/low")) == by_account(lows),
        what="the credits.low events, and only them",
    )
    attempts = (
        await api.http.get(
            f"/v1/webhook-endpoints/{endpoint['id']}/deliveries?limit=500", headers=api.server()
        )
    ).json()
    assert attempts["endpoint"]["status"] == "enabled"
    assert {a["status_code"] for a in attempts["deliveries"]} == {200}
    assert len(attempts["deliveries"]) == sum(len(s) for s in want.values())


async def test_receiver_down_then_up_loses_nothing(start: Start) -> None:
    receiver = await receiver_at(started=False)  # its port refuses connections for now
    api = await start()
    endpoint = await register(api, receiver.url())
    await asyncio.gather(spend(api, "down-1", 3), spend(api, "down-2", 3))
    path = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries"

    async def retried() -> bool:  # each pass that fails counts once, whatever was in flight
        answer = (await api.http.get(path, headers=api.server())).json()
        return bool(answer["endpoint"]["consecutive_failures"] >= 4)

    await eventually(retried, what="several failed attempts")
    answer = (await api.http.get(path, headers=api.server())).json()
    failed = list(reversed(answer["deliveries"]))
    assert all(a["error"] and a["status_code"] is None and a["next_retry_at"] for a in failed)
    assert answer["endpoint"]["failing_since"] is not None
    firsts = {(a, (await journal(api, a))[0]["seq"]) for a in ("down-1", "down-2")}
    # each account's first event, retried (the two accounts go out concurrently)
    assert {(a["account_id"], a["seq"]) for a in failed} <= firsts
    # backing off: each failure schedules its retry further out (what it schedules, not the
    # gaps seen between attempts, which a busy machine stretches at random)
    delays = [_t(a["next_retry_at"]) - _t(a["attempted_at"]) for a in failed]
    assert delays[-1] > delays[0]
    await receiver.start()
    try:
        want = await expected(api, {"down-1": 0, "down-2": 0})
        await eventually(
            lambda: first_deliveries(receiver.events())[0] == want,
            what="everything after the receiver came back",
        )
        delivered, duplicates = first_deliveries(receiver.events())
        assert duplicates == 0 and by_account(receiver.events()) == want
        report(
            f"outbound webhooks, receiver down then up ({database(api)}): {len(failed)} "
            f"failed attempts, backing off from {delays[0]:.2f} s to {delays[-1]:.2f} s; "
            f"then {sum(len(s) for s in want.values())} events delivered: 0 lost, "
            f"{duplicates} duplicates, in order per account"
        )

        async def healthy() -> bool:  # written with the pass's cursors, just after its end
            answer = (await api.http.get(path, headers=api.server())).json()
            return bool(answer["endpoint"]["consecutive_failures"] == 0)

        await eventually(healthy, what="the endpoint healthy again")
        answer = (await api.http.get(path, headers=api.server())).json()
        assert answer["endpoint"]["status"] == "enabled"
    finally:
        await receiver.stop()


async def test_a_restart_mid_stream_resumes_from_the_cursor(
    start: Start, receiver: Receiver
) -> None:
    receiver.delay_s = 0.05  # the three accounts go out concurrently: slow enough to stop midway
    first = await start()
    await register(first, receiver.url())
    await asyncio.gather(*(spend(first, f"restart-{i}", 5) for i in range(3)))
    want = await expected(first, {f"restart-{i}": 0 for i in range(3)})
    total = sum(len(s) for s in want.values())
    await eventually(lambda: len(receiver.received) >= total // 3, what="a third delivered")
    await first.aclose()  # stopped mid-stream
    before = len(receiver.received)
    assert before < total
    second = await start()
    await spend(second, "restart-0", 1)  # and the stream goes on
    want = await expected(second, {f"restart-{i}": 0 for i in range(3)})
    await eventually(
        lambda: first_deliveries(receiver.events())[0] == want,
        what="the rest from the new instance",
    )
    delivered, duplicates = first_deliveries(receiver.events())
    assert delivered == want
    report(
        f"outbound webhooks, restart mid-stream ({database(second)}): "
        f"{sum(len(s) for s in want.values())} events on 3 accounts, {before} delivered "
        f"before the stop, the rest by a new instance: 0 lost, {duplicates} duplicates, "
        "in order per account"
    )


async def test_two_instances_never_deliver_to_an_endpoint_at_once(
    start: Start, receiver: Receiver
) -> None:
    receiver.delay_s = 0.005
    one, two = await start(), await start()
    await register(one, receiver.url("/a"))
    await register(two, receiver.url("/b"))
    accounts = [f"pair-{i}" for i in range(4)]
    await asyncio.gather(*(spend(one if i % 2 else two, a, 4) for i, a in enumerate(accounts)))
    want = await expected(one, {a: 0 for a in accounts})

    def complete(path: str) -> Callable[[], bool]:
        return lambda: first_deliveries(receiver.events(path))[0] == want

    for path in ("/a", "/b"):
        await eventually(complete(path), what=f"every event at {path}")
        assert first_deliveries(receiver.events(path))[1] == 0  # nothing delivered twice
        # the lease: one instance at a time, so an account's events one at a time
        assert max(receiver.max_in_flight_per_account[path].values()) == 1


async def test_an_endpoint_failing_past_the_window_is_disabled(
    start: Start, receiver: Receiver
) -> None:
    receiver.status = 500
    api = await start(webhook_retry_window_s=0.5)
    endpoint = await register(api, receiver.url())
    await spend(api, "window", 1)
    path = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries"

    async def disabled() -> bool:
        answer = (await api.http.get(path, headers=api.server())).json()
        return bool(answer["endpoint"]["status"] == "disabled")

    await eventually(disabled, what="the endpoint disabled")
    answer = (await api.http.get(path, headers=api.server())).json()
    assert "HTTP 500" in answer["endpoint"]["disabled_reason"]
    assert answer["endpoint"]["disabled_at"] is not None
    assert {a["status_code"] for a in answer["deliveries"]} == {500}
    count = len(answer["deliveries"])
    receiver.status = 200
    await spend(api, "window", 1)
    await asyncio.sleep(0.5)  # a disabled endpoint gets nothing more
    assert len((await api.http.get(path, headers=api.server())).json()["deliveries"]) == count
    listed = (await api.http.get("/v1/webhook-endpoints", headers=api.server())).json()
    assert listed["endpoints"][0]["status"] == "disabled"


def database(api: ApiClient) -> str:
    return api.ctx.settings.database_url.split("+", 1)[0].split(":", 1)[0]


def report(line: str) -> None:
    print(f"\n{line}")
    path = os.environ.get("CREDITSTREAM_RELIABILITY_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")


def _t(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# --- slow receivers, stuck deliveries, deletion -------------------------------------------


async def test_slow_receivers_do_not_hold_back_a_healthy_endpoint(
    start: Start, receiver: Receiver
) -> None:
    """A receiver that answers 200 and then drips its body (1 byte / 2 s) and one that takes
    4.9 s per event: the healthy endpoint keeps getting every event within a few seconds,
    and the dripping attempt is cut at its deadline."""
    drip = await Receiver(drip_s=2.0).start()
    sluggish = await Receiver(delay_s=4.9).start()
    try:
        api = await start(webhook_timeout_s=6.0)
        await register(api, receiver.url())
        dripping = await register(api, drip.url())
        await register(api, sluggish.url())
        delays: list[float] = []
        for i in range(8):
            account = f"steady-{i % 3}"
            response = await api.http.post(
                f"/v1/accounts/{account}/grants",
                headers=api.server(),
                json={"amount": 10, "reason": "purchase"},
            )
            assert response.status_code == 201, response.text
            committed, seq = time.monotonic(), int(response.json()["account"]["seq"])

            def arrived(account: str = account, seq: int = seq) -> bool:
                return seq in by_account(receiver.events()).get(account, [])

            await eventually(arrived, timeout_s=30, what=f"{account}:{seq} at the healthy one")
            delays.append(time.monotonic() - committed)
            await asyncio.sleep(0.5)
        report(
            f"outbound webhooks, a dripping and a 4.9 s receiver beside a healthy one "
            f"({database(api)}): the healthy one's events arrived after at most "
            f"{max(delays):.2f} s (median {sorted(delays)[len(delays) // 2]:.2f} s)"
        )
        assert max(delays) < 3.0, delays
        path = f"/v1/webhook-endpoints/{dripping['id']}/deliveries"

        async def cut() -> bool:
            attempts = (await api.http.get(path, headers=api.server())).json()["deliveries"]
            return any(a["error"] and "deadline" in a["error"] for a in attempts)

        await eventually(cut, timeout_s=30, what="the dripping attempt cut at its deadline")
        attempts = (await api.http.get(path, headers=api.server())).json()["deliveries"]
        durations = [a["duration_ms"] for a in attempts if a["error"]]
        assert all(5_500 <= d < 12_000 for d in durations), durations
        assert sluggish.received, "the 4.9 s receiver is slow, not failing"
    finally:
        await drip.stop()
        await sluggish.stop()


async def test_a_stuck_deliverer_makes_readiness_fail(start: Start) -> None:
    """An attempt unfinished past CREDITSTREAM_WEBHOOK_STUCK_S (here 1 s, under a 30 s
    deadline): /readyz answers 503 naming the deliverer, and the metric shows its age."""
    drip = await Receiver(drip_s=0.5).start()
    try:
        api = await start(webhook_timeout_s=30.0, webhook_stuck_s=1.0)
        ready = await api.http.get("/readyz")
        assert ready.status_code == 200, ready.text
        await register(api, drip.url())
        await spend(api, "stuck", 1)

        async def unready() -> bool:
            answer = await api.http.get("/readyz")
            return (
                answer.status_code == 503
                and "unavailable" in answer.json()["checks"]["background_tasks"]
            )

        await eventually(unready, timeout_s=20, what="readiness 503")
        text = (await api.http.get("/metrics")).text
        line = next(
            x
            for x in text.splitlines()
            if x.startswith("creditstream_webhook_oldest_step_seconds ")
        )
        assert float(line.split()[1]) > 1.0
    finally:
        await drip.stop()


async def test_deleting_right_after_a_delivery_always_succeeds(
    start: Start, receiver: Receiver
) -> None:
    """The cursor is written a few ms after the receiver answers; a DELETE in that moment
    answers 200 every time, and the deleted endpoints get nothing more."""
    api = await start()
    for i in range(32):
        receiver.arrived.clear()
        endpoint = await register(api, receiver.url(f"/round-{i}"))
        response = await api.http.post(
            f"/v1/accounts/gone-{i % 4}/grants",
            headers=api.server(),
            json={"amount": 10, "reason": "purchase"},
        )
        assert response.status_code == 201, response.text
        await asyncio.wait_for(receiver.arrived.wait(), 20)
        await asyncio.sleep((i % 8) * 0.001)  # across the moment the cursor is written
        deleted = await api.http.delete(
            f"/v1/webhook-endpoints/{endpoint['id']}", headers=api.server()
        )
        assert deleted.status_code == 200, (i, deleted.text)
    await asyncio.sleep(2.0)  # attempts in flight at the deletions end (a second at most)
    seen = len(receiver.received)
    await spend(api, "gone-0", 1)
    await asyncio.sleep(1.0)
    assert len(receiver.received) == seen
    listed = (await api.http.get("/v1/webhook-endpoints", headers=api.server())).json()
    assert listed["endpoints"] == []
