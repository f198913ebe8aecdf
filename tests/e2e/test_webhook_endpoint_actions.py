"""An operator's actions on an outbound webhook endpoint, through the HTTP API, on SQLite and
PostgreSQL, into a real HTTP receiver: enable a disabled endpoint again (what accumulated while
it was disabled arrives, in order), send it a signed test event (recorded, no cursor moved),
resend an account's events from a seq (also while a delivery pass is in flight), and bad input
refused with nothing changed.

    .venv/bin/pytest tests/e2e/test_webhook_endpoint_actions.py -q
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import sqlalchemy as sa

from core.signatures import verify
from storage.tables import webhook_cursors
from tests.conftest import ApiClient
from tests.e2e.test_outbound_webhooks import (
    Start,
    by_account,
    eventually,
    expected,
    first_deliveries,
    journal,
    receiver,
    receiver_at,
    register,
    spend,
    start,
)
from tests.receiver import Receiver
from tests.support import MutableClock

__all__ = ["receiver", "start"]  # fixtures, shared with test_outbound_webhooks.py


def path_of(endpoint: dict[str, Any], action: str = "") -> str:
    return f"/v1/webhook-endpoints/{endpoint['id']}" + (f"/{action}" if action else "")


async def shown(api: ApiClient, endpoint: dict[str, Any]) -> dict[str, Any]:
    answer = (await api.http.get(path_of(endpoint, "deliveries"), headers=api.server())).json()
    shown_endpoint: dict[str, Any] = answer["endpoint"]
    return shown_endpoint


async def attempts(api: ApiClient, endpoint: dict[str, Any]) -> list[dict[str, Any]]:
    answer = await api.http.get(
        path_of(endpoint, "deliveries") + "?limit=500", headers=api.server()
    )
    found: list[dict[str, Any]] = answer.json()["deliveries"]
    return found


async def cursors(api: ApiClient, endpoint: dict[str, Any]) -> dict[str, int]:
    async with api.ctx.db.read(snapshot=False) as uow:
        rows = await uow.conn.execute(
            sa.select(webhook_cursors.c.account_id, webhook_cursors.c.seq).where(
                webhook_cursors.c.endpoint_id == endpoint["id"]
            )
        )
        return {row.account_id: int(row.seq) for row in rows}


async def resend(api: ApiClient, endpoint: dict[str, Any], body: Any) -> Any:
    return await api.http.post(path_of(endpoint, "resend"), headers=api.server(), json=body)


def stream(receiver: Receiver) -> list[dict[str, Any]]:
    """What arrived from the accounts' streams (not the test events)."""
    return [e for e in receiver.events() if e["type"] != "webhook.test"]


def suffix_from(events: list[dict[str, Any]], account: str, seqs: list[int]) -> list[int]:
    """The account's seqs delivered from the last time `seqs[0]` arrived on."""
    delivered = by_account(events).get(account, [])
    if seqs[0] not in delivered:
        return []
    last = len(delivered) - 1 - delivered[::-1].index(seqs[0])
    return delivered[last:]


# --- enable ----------------------------------------------------------------------------------


async def test_a_disabled_endpoint_enabled_again_gets_everything_in_order(start: Start) -> None:
    receiver = await receiver_at(started=False)  # its port refuses connections for now
    api = await start(webhook_retry_window_s=0.3)
    endpoint = await register(api, receiver.url())
    await asyncio.gather(spend(api, "enable-1", 2), spend(api, "enable-2", 2))

    async def disabled() -> bool:
        return bool((await shown(api, endpoint))["status"] == "disabled")

    await eventually(disabled, what="the endpoint disabled")
    await asyncio.gather(spend(api, "enable-1", 2), spend(api, "enable-2", 3))  # meanwhile
    await receiver.start()
    try:
        await asyncio.sleep(0.3)  # a disabled endpoint gets nothing, receiver up or not
        assert receiver.received == []
        enabled = await api.http.post(path_of(endpoint, "enable"), headers=api.server())
        assert enabled.status_code == 200, enabled.text
        answer = enabled.json()
        assert answer["status"] == "enabled" and answer["disabled_reason"] is None
        assert answer["consecutive_failures"] == 0 and answer["failing_since"] is None
        assert answer["disabled_at"] is None and answer["next_attempt_at"] is not None
        want = await expected(api, {"enable-1": 0, "enable-2": 0})
        await eventually(
            lambda: first_deliveries(receiver.events())[0] == want,
            what="everything that accumulated",
        )
        delivered, duplicates = first_deliveries(receiver.events())
        assert duplicates == 0 and by_account(receiver.events()) == want  # in order

        async def healthy() -> bool:  # a pass's success written: nothing scheduled
            return (await shown(api, endpoint))["next_attempt_at"] is None

        await eventually(healthy, what="the endpoint's health written")
        before = await shown(api, endpoint)
        again = await api.http.post(path_of(endpoint, "enable"), headers=api.server())
        assert again.status_code == 200 and again.json() == before  # enabled already: as it was
    finally:
        await receiver.stop()


# --- test event ------------------------------------------------------------------------------


async def test_a_test_event_arrives_signed_is_recorded_and_moves_no_cursor(
    start: Start, receiver: Receiver
) -> None:
    api = await start()
    endpoint = await register(api, receiver.url())
    await spend(api, "tested", 2)
    want = await expected(api, {"tested": 0})
    await eventually(lambda: by_account(receiver.events()) == want, what="the events")
    head = max(want["tested"])

    async def recorded() -> bool:  # the cursor is written just after the receiver answers
        return await cursors(api, endpoint) == {"tested": head}

    await eventually(recorded, what="the cursor written")
    moved = await cursors(api, endpoint)
    count = len(receiver.received)

    answer = await api.http.post(path_of(endpoint, "test"), headers=api.server())
    assert answer.status_code == 200, answer.text
    outcome = answer.json()
    assert outcome["ok"] is True and outcome["status_code"] == 200 and outcome["error"] is None
    assert isinstance(outcome["duration_ms"], int)
    assert len(receiver.received) == count + 1
    request = receiver.received[-1]
    verify(endpoint["secret"], request.body, request.headers["x-signature"], time.time())
    event = request.event
    assert event["type"] == "webhook.test" and event["id"].startswith("evt_test_")
    assert event["endpoint_id"] == endpoint["id"] and event["created_at"]
    assert request.headers["x-creditstream-event"] == "webhook.test"
    assert request.headers["x-creditstream-event-id"] == event["id"]
    latest = (await attempts(api, endpoint))[0]
    assert latest["event"] == "webhook.test" and latest["ok"] is True
    assert latest["account_id"] is None and latest["status_code"] == 200
    assert await cursors(api, endpoint) == moved
    await spend(api, "tested", 1)  # the stream goes on from where it was: nothing again
    want = await expected(api, {"tested": 0})
    await eventually(lambda: by_account(stream(receiver)) == want, what="the next events")
    assert first_deliveries(stream(receiver))[1] == 0


async def test_a_test_event_to_a_disabled_or_failing_endpoint_reports_the_failure(
    start: Start, receiver: Receiver
) -> None:
    receiver.status = 500
    api = await start(webhook_retry_window_s=0.3)
    endpoint = await register(api, receiver.url())
    await spend(api, "broken", 1)

    async def disabled() -> bool:
        return bool((await shown(api, endpoint))["status"] == "disabled")

    await eventually(disabled, what="the endpoint disabled")
    before = await shown(api, endpoint)
    answer = (await api.http.post(path_of(endpoint, "test"), headers=api.server())).json()
    assert answer["ok"] is False and answer["status_code"] == 500
    assert answer["error"] == "HTTP 500"
    receiver.status = 200  # fixed: a test on the disabled endpoint says so
    answer = (await api.http.post(path_of(endpoint, "test"), headers=api.server())).json()
    assert answer["ok"] is True and answer["status_code"] == 200
    assert await shown(api, endpoint) == before  # still disabled: a test changes no health
    recorded = [a for a in await attempts(api, endpoint) if a["event"] == "webhook.test"]
    assert [a["ok"] for a in recorded] == [True, False]  # newest first
    await receiver.stop()
    answer = (await api.http.post(path_of(endpoint, "test"), headers=api.server())).json()
    assert answer["ok"] is False and answer["status_code"] is None and answer["error"]


async def test_a_test_event_keeps_to_the_address_rules(start: Start, receiver: Receiver) -> None:
    registrar = await start(deliver=False)
    endpoint = await register(registrar, receiver.url())
    strict = await start(deliver=False, webhook_allow_private=False)
    answer = (await strict.http.post(path_of(endpoint, "test"), headers=strict.server())).json()
    assert answer["ok"] is False and "non-public address" in answer["error"]
    assert receiver.received == []


# --- resend ----------------------------------------------------------------------------------


async def test_resend_from_a_seq_delivers_those_events_again(
    start: Start, receiver: Receiver
) -> None:
    api = await start()
    endpoint = await register(api, receiver.url(), ["balance.updated"])
    await spend(api, "again", 3)
    events = [e for e in await journal(api, "again") if e["type"] == "balance.updated"]
    seqs = [e["seq"] for e in events]
    await eventually(lambda: by_account(receiver.events()) == {"again": seqs}, what="the events")
    from_seq = seqs[2]
    answer = await resend(api, endpoint, {"account_id": "again", "from_seq": from_seq})
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"account_id": "again", "from_seq": from_seq, "events": len(seqs) - 2}
    await eventually(
        lambda: by_account(receiver.events()) == {"again": seqs + seqs[2:]},
        what="the events from from_seq again, in order",
    )
    head = max(e["seq"] for e in await journal(api, "again"))
    assert (await cursors(api, endpoint))["again"] == head


async def test_resend_of_an_account_with_no_new_events_is_noticed(
    start: Start, receiver: Receiver, clock: MutableClock
) -> None:
    """A pass looks only at accounts with events since its last look (and at every account
    every 30 s of the journal's clock, frozen here): a resend makes the next pass look at all."""
    api = await start()
    endpoint = await register(api, receiver.url())
    await spend(api, "quiet", 1)
    want = (await expected(api, {"quiet": 0}))["quiet"]
    await eventually(lambda: by_account(stream(receiver)) == {"quiet": want}, what="events")
    clock.advance(seconds=20)  # its events are older than what the next passes look at
    await asyncio.sleep(0.5)  # passes that find nothing new
    answer = await resend(api, endpoint, {"account_id": "quiet", "from_seq": want[0]})
    assert answer.status_code == 202, answer.text
    await eventually(
        lambda: by_account(stream(receiver)) == {"quiet": want + want}, what="the events again"
    )


async def test_resend_racing_a_delivery_pass_is_not_overwritten(
    start: Start, receiver: Receiver
) -> None:
    """The resend lands while a pass is in flight (the receiver holds each request 0.5 s):
    the pass ends by recording its cursor forward, which must not undo the resend."""
    receiver.delay_s = 0.5
    api = await start()
    endpoint = await register(api, receiver.url())
    await spend(api, "racing", 4)
    want = (await expected(api, {"racing": 0}))["racing"]
    await eventually(
        lambda: len(receiver.received) >= 2 and receiver.in_flight["/hook"] > 0,
        what="a pass in flight, past its first events",
    )
    from_seq = want[1]
    answer = await resend(api, endpoint, {"account_id": "racing", "from_seq": from_seq})
    assert answer.status_code == 202, answer.text
    assert answer.json()["events"] == len(want) - 1
    answered = len(receiver.received)
    assert answered < len(want)  # it raced the first delivery, past from_seq already
    assert from_seq in by_account(receiver.events())["racing"]

    def after_the_resend() -> list[dict[str, Any]]:
        return [r.event for r in receiver.received[answered:]]

    await eventually(
        lambda: suffix_from(after_the_resend(), "racing", want[1:]) == want[1:],
        timeout_s=60,
        what="every event from from_seq again, in order, after the resend",
    )


async def test_resend_to_an_account_created_after_the_endpoint(
    start: Start, receiver: Receiver
) -> None:
    api = await start()
    endpoint = await register(api, receiver.url())
    await spend(api, "newcomer", 1)
    want = (await expected(api, {"newcomer": 0}))["newcomer"]
    await eventually(lambda: by_account(receiver.events()) == {"newcomer": want}, what="events")
    answer = await resend(api, endpoint, {"account_id": "newcomer", "from_seq": 1})
    assert answer.status_code == 202, answer.text
    await eventually(
        lambda: by_account(receiver.events()) == {"newcomer": want + want}, what="again"
    )


async def test_bad_input_is_refused_and_changes_nothing(start: Start, receiver: Receiver) -> None:
    api = await start()
    endpoint = await register(api, receiver.url())
    await spend(api, "steady", 1)
    want = await expected(api, {"steady": 0})
    await eventually(lambda: by_account(receiver.events()) == want, what="the events")
    head = max(want["steady"])

    async def recorded() -> bool:  # the cursor is written just after the receiver answers
        return await cursors(api, endpoint) == {"steady": head}

    await eventually(recorded, what="the cursor written")
    before_cursors, before_endpoint = await cursors(api, endpoint), await shown(api, endpoint)
    count = len(receiver.received)

    for unknown in ("we_" + "0" * 32, "x" * 300, "we_%00", "..%2f"):
        for action in ("enable", "test", "resend"):
            refused = await api.http.post(
                f"/v1/webhook-endpoints/{unknown}/{action}",
                headers=api.server(),
                json={"account_id": "steady", "from_seq": 1},
            )
            assert refused.status_code == 404, (unknown, action, refused.text)
            assert refused.json()["error"]["code"] == "not_found"
    cases: list[tuple[Any, int, str]] = [
        ({"account_id": "steady", "from_seq": 0}, 422, "invalid_from_seq"),
        ({"account_id": "steady", "from_seq": -5}, 422, "invalid_from_seq"),
        ({"account_id": "steady", "from_seq": head + 1}, 422, "from_seq_beyond_head"),
        ({"account_id": "steady", "from_seq": 10**30}, 422, "from_seq_beyond_head"),
        ({"account_id": "nobody", "from_seq": 1}, 404, "not_found"),
        ({"account_id": "bad id!", "from_seq": 1}, 422, "invalid_account_id"),
        ({"account_id": "steady", "from_seq": "1"}, 422, "validation_error"),
        ({"account_id": "steady", "from_seq": True}, 422, "validation_error"),
        ({"account_id": "steady"}, 422, "validation_error"),
        ({"from_seq": 1}, 422, "validation_error"),
        ({"account_id": "steady", "from_seq": 1, "extra": 1}, 422, "validation_error"),
        ([1, 2], 422, "validation_error"),
    ]
    for body, status, code in cases:
        refused = await resend(api, endpoint, body)
        assert refused.status_code == status, (body, refused.text)
        assert refused.json()["error"]["code"] == code, (body, refused.text)
    not_json = await api.http.post(
        path_of(endpoint, "resend"), headers=api.server(), content=b"{not json"
    )
    assert not_json.status_code == 400, not_json.text
    for action in ("enable", "test", "resend"):
        anonymous = await api.http.post(
            path_of(endpoint, action), json={"account_id": "steady", "from_seq": 1}
        )
        assert anonymous.status_code == 401, anonymous.text
        user = await api.http.post(
            path_of(endpoint, action),
            headers=api.user("steady"),
            json={"account_id": "steady", "from_seq": 1},
        )
        assert user.status_code == 403, user.text
    await asyncio.sleep(0.3)  # a moved cursor would be redelivered by now
    assert await cursors(api, endpoint) == before_cursors
    assert await shown(api, endpoint) == before_endpoint
    assert len(receiver.received) == count
