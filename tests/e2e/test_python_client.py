"""The Python client (clients/python, `creditstream_client`) against a live uvicorn server on
PostgreSQL: every operation, sync and async; typed errors; a retry after a dropped connection
or a 503 having exactly one effect; the webhook verifier on a real delivery; the event stream
resuming across a server restart without gaps or duplicates.

    .venv/bin/pip install ./clients/python && .venv/bin/pytest tests/e2e/test_python_client.py -q

(`make test` installs the client; it is a package of its own, imported here as users import it.)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import creditstream_client as cs
import httpx
import pytest

from tests.e2e.dropping_proxy import DroppingProxy
from tests.receiver import Receiver
from tests.support import LiveServer, make_server_key

pytestmark = pytest.mark.postgres


@dataclass
class Live:
    server: LiveServer
    key: str

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
def live(pg_url: str, live_server_factory: Callable[..., LiveServer]) -> Live:
    key = asyncio.run(make_server_key(pg_url))
    server = live_server_factory(
        pg_url, CREDITSTREAM_WEBHOOK_ALLOW_PRIVATE="1", CREDITSTREAM_WEBHOOK_POLL_S="0.05"
    )
    return Live(server, key)


@pytest.fixture
def proxy(live: Live) -> Iterator[DroppingProxy]:
    dropping = DroppingProxy(live.server.port).start()
    yield dropping
    dropping.stop()


def account_id() -> str:
    return f"acct-{uuid.uuid4().hex[:10]}"


def kinds(entries: list[dict[str, Any]]) -> list[str]:
    return [entry["type"] for entry in entries]


def test_every_operation_with_the_sync_client(live: Live) -> None:
    alice = account_id()
    with cs.Client(live.url, live.key) as client:
        created = client.ensure_account(alice)
        assert created["account_id"] == alice and created["balance"] == 28
        assert client.ensure_account(alice)["balance"] == 28  # 200, the same account
        assert client.get_account(alice)["available"] == 28

        granted = client.create_grant(
            alice, 100, reason="purchase", ref="order-1", metadata={"order": "1"}
        )
        assert granted["grant"]["amount"] == 100 and granted["account"]["balance"] == 128
        plan = client.create_grant(alice, plan="starter")
        assert plan["account"]["plan"] == "starter"

        charged = client.create_charge(
            alice,
            price={"operation": "script_generation"},
            reason="script_generation",
            metadata={"tokens": 12},
        )
        assert charged["charge"]["amount"] == 1 and charged["charge"]["metadata"] == {"tokens": 12}

        hold = client.create_hold(alice, 10, ref="render-1", ttl_seconds=600)["hold"]
        assert hold["status"] == "open" and client.get_hold(hold["hold_id"])["amount"] == 10
        captured = client.capture_hold(hold["hold_id"], 6)
        assert captured["hold"]["status"] == "captured"
        assert captured["hold"]["captured_amount"] == 6
        other = client.create_hold(alice, 5)["hold"]
        assert client.release_hold(other["hold_id"], "changed_mind")["hold"]["status"] == "released"

        refund = client.create_refund(charge_id=charged["charge"]["charge_id"])["refund"]
        assert refund["amount"] == 1 and refund["refundable"] == 0
        assert client.create_refund(hold_id=hold["hold_id"], amount=2)["refund"]["amount"] == 2

        quote = client.quote("image", account_id=alice, model="FLUX.1 [dev]")
        assert quote["cost"] == 90 and quote["affordable"] is True
        assert client.quote("script_generation")["cost"] == 1  # a server key without an account
        assert "script_generation" in [o["operation"] for o in client.get_pricing()["operations"]]
        assert client.get_plans()

        job = client.create_job(
            "audio",
            account_id=alice,
            provider="simulated",
            input={"simulate": "hang"},
            metadata={"k": "v"},
        )["job"]
        assert job["status"] == "processing" and client.get_job(job["job_id"])["cost"] == 1
        outcome = client.report_job_result(job["job_id"], "failed", error="worker gave up")
        assert outcome["job"]["status"] == "failed"
        assert [j["job_id"] for j in client.list_jobs(alice)["jobs"]] == [job["job_id"]]
        assert client.list_jobs(alice, status="failed", limit=5)["jobs"][0]["error"]

        results = client.batch(
            [
                {"op": "grant", "account_id": alice, "amount": 3, "reason": "bonus"},
                {"op": "hold", "account_id": alice, "amount": 1},
                {"op": "charge", "account_id": alice, "amount": 10**9},
            ]
        )["results"]
        assert [r["status"] for r in results] == [201, 201, 402]

        token = client.create_token(alice, ttl_seconds=60)
        assert token["account_id"] == alice
        with cs.Client(live.url, token["token"]) as user:
            assert user.get_account(alice)["account_id"] == alice

        entries = client.list_entries(alice, limit=500)
        assert not entries["has_more"]
        assert kinds(entries["entries"])[:3] == ["grant", "grant", "grant"]
        page = client.list_entries(alice, after=entries["entries"][0]["entry_id"], limit=1)
        assert page["has_more"] and len(page["entries"]) == 1
        events = client.list_events(alice, after_seq=0, limit=500)
        assert events["events"][0]["seq"] == 1 and events["next_after_seq"] == events["seq"]
        waited = client.list_events(alice, after_seq=events["seq"], wait=0.2)
        assert waited["events"] == []
        usage = client.get_usage(alice, "day")
        assert usage["period"] == "day" and usage["jobs"]["failed"] == 1

        endpoint = client.create_webhook_endpoint("http://127.0.0.1:9/hook", ["balance.updated"])
        assert endpoint["secret"].startswith("whsec_")
        listed = client.list_webhook_endpoints()["endpoints"]
        assert [e["id"] for e in listed] == [endpoint["id"]] and "secret" not in listed[0]
        deliveries = client.list_webhook_deliveries(endpoint["id"], limit=10)
        assert deliveries["endpoint"]["id"] == endpoint["id"]
        assert client.enable_webhook_endpoint(endpoint["id"])["status"] == "enabled"
        tested = client.test_webhook_endpoint(endpoint["id"])  # port 9: refused
        assert tested["ok"] is False and tested["event"]["type"] == "webhook.test"
        resent = client.resend_webhook_events(endpoint["id"], alice, 1)
        assert resent["account_id"] == alice and resent["from_seq"] == 1
        with pytest.raises(cs.ValidationError) as refused:
            client.resend_webhook_events(endpoint["id"], alice, 0)
        assert refused.value.code == "invalid_from_seq"
        assert client.delete_webhook_endpoint(endpoint["id"])["deleted"] is True
        assert client.list_webhook_endpoints()["endpoints"] == []


async def test_the_async_client_and_its_idempotency_keys(live: Live) -> None:
    bob = account_id()
    async with cs.AsyncClient(live.url, live.key) as client:
        await client.ensure_account(bob)
        first = await client.create_hold(bob, 2, idempotency_key="render-7")
        again = await client.create_hold(bob, 2, idempotency_key="render-7")
        assert again["hold"]["hold_id"] == first["hold"]["hold_id"]  # replayed, one hold
        await client.capture_hold(first["hold"]["hold_id"])
        # without a key of the caller's, each call is its own operation
        one = await client.create_charge(bob, 1)
        two = await client.create_charge(bob, 1)
        assert one["charge"]["charge_id"] != two["charge"]["charge_id"]
        assert (await client.get_account(bob))["balance"] == 24
        assert kinds((await client.list_entries(bob))["entries"]) == [
            "grant",
            "hold",
            "capture",
            "charge",
            "charge",
        ]


def test_typed_errors(live: Live) -> None:
    carol = account_id()
    with cs.Client(live.url, live.key) as client:
        client.ensure_account(carol)
        with pytest.raises(cs.InsufficientCredits) as short:
            client.create_hold(carol, 100)
        assert (short.value.status, short.value.code) == (402, "insufficient_credits")
        assert (short.value.required, short.value.available, short.value.shortfall) == (100, 28, 72)
        assert "72 more credits" in short.value.message
        assert isinstance(short.value, cs.CreditstreamError)

        with pytest.raises(cs.NotFound):
            client.get_hold("hold_unknown")
        with pytest.raises(cs.NotFound):
            client.get_account(account_id())
        with pytest.raises(cs.ValidationError) as invalid:
            client.create_grant(carol, 0)
        assert invalid.value.status == 422 and invalid.value.errors

        client.create_charge(carol, 1, idempotency_key="k-1")
        with pytest.raises(cs.IdempotencyKeyReused):
            client.create_charge(carol, 2, idempotency_key="k-1")

        charge = client.create_charge(carol, 2)["charge"]
        with pytest.raises(cs.RefundExceedsSpend) as too_much:
            client.create_refund(charge_id=charge["charge_id"], amount=3)
        assert too_much.value.refundable == 2

        hold = client.create_hold(carol, 1)["hold"]
        client.release_hold(hold["hold_id"])
        with pytest.raises(cs.InvalidState):
            client.capture_hold(hold["hold_id"])

        # the free plan's 3 script_generation per day (a paid grant lifts the trial's limit)
        dave = account_id()
        client.create_grant(dave, 50, reason="purchase")
        for _ in range(3):
            client.create_charge(dave, price={"operation": "script_generation"})
        with pytest.raises(cs.FeatureLimitExceeded) as limited:
            client.create_charge(dave, price={"operation": "script_generation"})
        assert limited.value.status == 429 and limited.value.retry_after
        assert isinstance(limited.value, cs.RateLimited)

        token = client.create_token(carol)["token"]
        with cs.Client(live.url, token) as user:
            with pytest.raises(cs.PermissionDenied):
                user.create_charge(carol, 1)  # server key only
            with pytest.raises(cs.PermissionDenied):
                user.get_account(dave)
    with cs.Client(live.url, "sk_not_a_key") as stranger, pytest.raises(cs.AuthenticationError):
        stranger.get_account(carol)


def test_other_4xx_are_not_retried(live: Live) -> None:
    sent: list[httpx.Request] = []
    http = httpx.Client(event_hooks={"request": [sent.append]})
    with cs.Client(live.url, live.key, http=http, max_attempts=5) as client:
        with pytest.raises(cs.InsufficientCredits):
            client.create_hold(account_id(), 1000)
    assert len(sent) == 1


def test_a_dropped_answer_is_retried_with_the_same_key_and_applies_once(
    live: Live, proxy: DroppingProxy
) -> None:
    erin = account_id()
    sent: list[httpx.Request] = []
    http = httpx.Client(event_hooks={"request": [sent.append]})
    with cs.Client(proxy.url, live.key, http=http) as client:
        client.ensure_account(erin)
        proxy.drop_responses = 1
        hold = client.create_hold(erin, 2, ref="dropped-once")["hold"]
        proxy.drop_responses = 1
        charge = client.create_charge(erin, 1)["charge"]
        assert proxy.dropped == 2
        posts = [r for r in sent if r.method == "POST"]
        assert len(posts) == 4  # two calls, each tried twice
        assert posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]
        assert posts[2].headers["idempotency-key"] == posts[3].headers["idempotency-key"]
        assert posts[0].headers["idempotency-key"] != posts[2].headers["idempotency-key"]
        entries = client.list_entries(erin)["entries"]
    assert kinds(entries) == ["grant", "hold", "charge"]
    assert entries[1]["op_id"] == hold["hold_id"]
    assert entries[1]["idempotency_key"] == posts[0].headers["idempotency-key"]
    assert entries[2]["op_id"] == charge["charge_id"]


def test_a_timed_out_call_is_retried_with_the_same_key_and_applies_once(
    live: Live, proxy: DroppingProxy
) -> None:
    jay = account_id()
    with cs.Client(proxy.url, live.key, timeout_s=1.0) as client:
        client.ensure_account(jay)
        proxy.stall_responses, proxy.stall_s = 1, 30.0  # the answer comes long after the timeout
        started = time.monotonic()
        hold = client.create_hold(jay, 2)["hold"]
        assert proxy.stalled == 1 and time.monotonic() - started < 25.0  # not the stalled one
        entries = client.list_entries(jay)["entries"]
    assert kinds(entries) == ["grant", "hold"] and entries[1]["op_id"] == hold["hold_id"]


async def test_a_503_is_retried_and_a_dropped_answer_too_with_the_async_client(
    live: Live, proxy: DroppingProxy
) -> None:
    fay = account_id()
    async with cs.AsyncClient(proxy.url, live.key) as client:
        await client.ensure_account(fay)
        proxy.refuse_with_503 = 2
        charged = await client.create_charge(fay, 1)
        assert proxy.refused == 2
        proxy.drop_responses = 1
        await client.create_hold(fay, 2)
        assert proxy.dropped == 1
        entries = (await client.list_entries(fay))["entries"]
        assert kinds(entries) == ["grant", "charge", "hold"]
        assert charged["account"]["balance"] == 27
        # attempts run out: the last answer's typed error
        proxy.refuse_with_503 = 10
        short = cs.AsyncClient(proxy.url, live.key, max_attempts=2)
        with pytest.raises(cs.Unavailable):
            await short.get_account(fay)
        await short.aclose()
        proxy.refuse_with_503 = 0


async def test_the_verifier_on_a_real_delivery(live: Live) -> None:
    receiver = await Receiver().start()
    gus = account_id()
    try:
        async with cs.AsyncClient(live.url, live.key) as client:
            endpoint = await client.create_webhook_endpoint(receiver.url(), ["balance.updated"])
            await client.ensure_account(gus)
            deadline = time.monotonic() + 60
            while not receiver.received and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert receiver.received, "no delivery within 60 s"
            delivery = receiver.received[0]
            secret, body = endpoint["secret"], delivery.body
            header = delivery.headers["x-signature"]
            assert cs.verify_webhook(secret, body, header)
            assert not cs.verify_webhook(secret, body.replace(b'"balance"', b'"balanc3"'), header)
            assert not cs.verify_webhook(secret, body + b" ", header)
            assert not cs.verify_webhook("whsec_other", body, header)
            signed_at = int(header.split("t=", 1)[1].split(",", 1)[0])
            assert cs.verify_webhook(secret, body, header, now=signed_at + 299)
            assert not cs.verify_webhook(secret, body, header, now=signed_at + 301)  # stale
            assert not cs.verify_webhook(secret, body, header, tolerance_s=10, now=signed_at + 11)
            assert not cs.verify_webhook(secret, body, None)
            assert not cs.verify_webhook(secret, body, "v1=" + header.split("v1=", 1)[1])
            # the attempt is recorded once the receiver's answer is in: poll for it
            while time.monotonic() < deadline:
                attempts = (await client.list_webhook_deliveries(endpoint["id"]))["deliveries"]
                if attempts:
                    break
                await asyncio.sleep(0.05)
            assert attempts and attempts[-1]["ok"] is True
    finally:
        await receiver.stop()


async def test_the_stream_resumes_after_the_server_restarts(live: Live) -> None:
    hal = account_id()
    received: list[dict[str, Any]] = []

    async def until(done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 60
        while not done():
            assert time.monotonic() < deadline, f"{what}: got {[e.get('seq') for e in received]}"
            await asyncio.sleep(0.05)

    async with cs.AsyncClient(live.url, live.key) as client:
        await client.ensure_account(hal)
        stream = client.stream(hal, after_seq=0)

        async def consume() -> None:
            async for event in stream:
                received.append(event)

        consumer = asyncio.create_task(consume())
        try:
            for _ in range(3):
                await client.create_grant(hal, 1, reason="bonus")
            head = (await client.get_account(hal))["seq"]
            await until(lambda: len(received) >= head, "before the restart")

            # the server goes away (its WebSockets close) and comes back on the same port
            await asyncio.to_thread(live.server.stop)
            await asyncio.to_thread(live.server.start)
            for _ in range(3):
                await client.create_grant(hal, 2, reason="bonus")
            final = (await client.get_account(hal))["seq"]
            await until(
                lambda: bool(received) and received[-1]["seq"] >= final, "after the restart"
            )
            await client.create_grant(hal, 3, reason="bonus")  # and live events flow again
            await until(lambda: received[-1]["seq"] >= final + 1, "live after the restart")
        finally:
            consumer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await consumer
    seqs = [event["seq"] for event in received]
    assert seqs == list(range(1, final + 2))  # every event, once, in order
    assert [e["delta"] for e in received if e["type"] == "balance.updated"][-4:] == [2, 2, 2, 3]


async def test_the_stream_starts_with_a_snapshot_without_after_seq(live: Live) -> None:
    ivy = account_id()
    async with cs.AsyncClient(live.url, live.key) as client:
        await client.ensure_account(ivy)
        stream = client.stream(ivy)
        first = await asyncio.wait_for(anext(stream), 30)
        assert first["type"] == "snapshot" and first["account"]["balance"] == 28
        await client.create_charge(ivy, 1)
        event = await asyncio.wait_for(anext(stream), 30)
        assert event["type"] == "balance.updated" and event["seq"] == first["seq"] + 1
        await stream.aclose()


def test_what_is_retried_and_how_long_it_waits() -> None:
    from creditstream_client.retry import Attempts, repeatable, retryable_answer

    for status, code in [(503, "service_unavailable"), (409, "request_in_progress"), (502, "")]:
        assert retryable_answer(status, code), (status, code)
    assert retryable_answer(429, "rate_limited")  # only with a Retry-After that fits the budget
    for status, code in [
        (409, "invalid_state"),
        (402, "insufficient_credits"),
        (422, "validation_error"),
        (404, "not_found"),
        (500, "internal_error"),
    ]:
        assert not retryable_answer(status, code), (status, code)
    assert repeatable("GET", None) and repeatable("PUT", None) and repeatable("POST", "k")
    assert not repeatable("POST", None)
    policy = cs.RetryPolicy(max_attempts=5, base_delay_s=0.25, max_delay_s=2.0)
    waits = [policy.delay_s(attempt) for attempt in (1, 2, 3, 4, 10, 99) for _ in range(200)]
    assert all(0 <= w <= 2.0 for w in waits) and len(set(waits)) > 100  # jittered, capped
    assert max(policy.delay_s(1) for _ in range(200)) <= 0.25
    assert policy.delay_s(1, retry_after_s=1.5) >= 1.5  # at least the server's Retry-After
    defaults = cs.RetryPolicy()
    assert (defaults.max_attempts, defaults.max_delay_s, defaults.total_s) == (None, 2.0, 30.0)
    attempts = Attempts(cs.RetryPolicy(total_s=10.0), repeatable=True)
    attempts.count = 1
    assert attempts.next_wait(retry_after_s=60) is None  # longer than the budget: give up now
    assert (attempts.next_wait(retry_after_s=3) or 0) >= 3
    assert Attempts(cs.RetryPolicy(), repeatable=False).next_wait() is None
    with pytest.raises(ValueError):
        cs.RetryPolicy(max_attempts=0)


def test_the_client_drops_an_idle_connection_before_the_server_does() -> None:
    from creditstream_client.retry import POOL_LIMITS

    from commands.server import KEEP_ALIVE_S

    expiry = POOL_LIMITS.keepalive_expiry
    assert expiry is not None and expiry < KEEP_ALIVE_S
