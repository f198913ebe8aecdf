"""Refunds after success through the HTTP API, on SQLite and PostgreSQL: a charge or a captured
hold gives credits back to the grants that funded it (the last taken first), an expired grant's
credits come back as a new grant lasting as long as it did, the refunds of one spend never
exceed it (also when they race, on one instance or two), and usage nets them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import ApiClient
from tests.support import MutableClock, audit_mismatches


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def post(
    api: ApiClient, path: str, body: dict[str, Any], status: int, **headers: str
) -> dict[str, Any]:
    response = await api.http.post(path, headers={**api.server(), **headers}, json=body)
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def grant(
    api: ApiClient, account: str, amount: int, reason: str = "purchase", **extra: Any
) -> dict[str, Any]:
    body = await post(
        api, f"/v1/accounts/{account}/grants", {"amount": amount, "reason": reason, **extra}, 201
    )
    return dict(body["grant"])


async def charge(api: ApiClient, account: str, amount: int, **extra: Any) -> dict[str, Any]:
    body = await post(api, f"/v1/accounts/{account}/charges", {"amount": amount, **extra}, 201)
    return dict(body["charge"])


async def refund(
    api: ApiClient, body: dict[str, Any], status: int = 201, **headers: str
) -> dict[str, Any]:
    return await post(api, "/v1/refunds", body, status, **headers)


async def grants_by_id(api: ApiClient, account: str) -> dict[str, int]:
    """Each grant's remaining credits, from the journal: grants, expiries, charges, refunds."""
    response = await api.http.get(f"/v1/accounts/{account}/entries?limit=500", headers=api.server())
    left: dict[str, int] = {}
    for entry in response.json()["entries"]:
        details = entry["metadata"]
        if entry["type"] == "grant":
            left[entry["op_id"]] = entry["amount"]
        elif entry["type"] == "expire":
            left[entry["op_id"]] -= entry["amount"]
        for part in details.get("funding", []):
            if entry["type"] == "refund":
                left[part["returned_to"]] = left.get(part["returned_to"], 0) + part["amount"]
            elif entry["type"] in ("charge", "capture"):
                left[part["grant_id"]] -= part["amount"]
    return left


async def account(api: ApiClient, account_id: str) -> dict[str, Any]:
    response = await api.http.get(f"/v1/accounts/{account_id}", headers=api.server())
    assert response.status_code == 200, response.text
    snapshot: dict[str, Any] = response.json()
    return snapshot


async def assert_audit_clean(database_url: str) -> None:
    assert await audit_mismatches(database_url) == []


async def test_a_charge_is_refunded_in_parts_the_last_credits_taken_first(
    api: ApiClient, database_url: str
) -> None:
    paid = await grant(api, "rf-charge", 100)
    trial_id = next(g for g in await grants_by_id(api, "rf-charge") if g != paid["grant_id"])
    spent = await charge(api, "rf-charge", 30, ref="render-7")  # 28 trial credits, 2 paid
    assert [(p["grant_id"], p["amount"]) for p in spent["funding"]] == [
        (trial_id, 28),
        (paid["grant_id"], 2),
    ]

    first = await refund(
        api,
        {
            "charge_id": spent["charge_id"],
            "amount": 5,
            "reason": "bad result",
            "metadata": {"ticket": "T-1"},
        },
    )
    back = first["refund"]
    assert back["amount"] == 5 and back["charge_id"] == spent["charge_id"]
    assert back["hold_id"] is None and back["reason"] == "bad result"
    assert (back["spent"], back["refunded"], back["refundable"]) == (30, 5, 25)
    assert [(p["grant_id"], p["amount"], p["returned_to"]) for p in back["funding"]] == [
        (paid["grant_id"], 2, paid["grant_id"]),
        (trial_id, 3, trial_id),
    ]
    assert back["metadata"] == {"ticket": "T-1"} and back["refund_id"].startswith("rfd_")
    assert first["account"]["balance"] == 128 - 30 + 5
    assert await grants_by_id(api, "rf-charge") == {trial_id: 3, paid["grant_id"]: 100}

    rest = (await refund(api, {"charge_id": spent["charge_id"]}))["refund"]
    assert (rest["amount"], rest["refunded"], rest["refundable"]) == (25, 30, 0)
    assert rest["reason"] == "refund"
    assert (await account(api, "rf-charge"))["balance"] == 128
    assert await grants_by_id(api, "rf-charge") == {trial_id: 28, paid["grant_id"]: 100}

    entries = (await api.http.get("/v1/accounts/rf-charge/entries", headers=api.server())).json()[
        "entries"
    ]
    line = entries[-2]
    assert (line["type"], line["amount"], line["delta"], line["op_id"], line["ref"]) == (
        "refund",
        5,
        5,
        spent["charge_id"],
        "render-7",
    )
    assert line["metadata"]["refund_id"] == back["refund_id"]
    assert line["metadata"]["metadata"] == {"ticket": "T-1"}
    events = (
        await api.http.get("/v1/accounts/rf-charge/events?limit=500", headers=api.server())
    ).json()["events"]
    last = events[-1]
    assert (last["type"], last["reason"], last["delta"], last["balance"]) == (
        "balance.updated",
        "refund",
        25,
        128,
    )
    await assert_audit_clean(database_url)


async def test_refunds_never_exceed_the_spend(api: ApiClient, database_url: str) -> None:
    await grant(api, "rf-over", 100)
    spent = await charge(api, "rf-over", 30)
    body = {"charge_id": spent["charge_id"]}
    await refund(api, {**body, "amount": 10})
    await refund(api, {**body, "amount": 15})
    error = (await refund(api, {**body, "amount": 10}, 409))["error"]
    assert error["code"] == "refund_exceeds_spend"
    assert (error["spent"], error["refunded"], error["refundable"], error["requested"]) == (
        30,
        25,
        5,
        10,
    )
    assert (await refund(api, body))["refund"]["amount"] == 5
    error = (await refund(api, body, 409))["error"]
    assert (error["code"], error["refundable"]) == ("refund_exceeds_spend", 0)
    assert (await account(api, "rf-over"))["balance"] == 128
    await assert_audit_clean(database_url)


async def test_a_captured_hold_refunds_its_capture(api: ApiClient, database_url: str) -> None:
    paid = await grant(api, "rf-hold", 500)
    await grant(
        api, "rf-hold", 100, "promo", expires_at=iso(api.ctx.service.now() + timedelta(days=2))
    )
    opened = await post(api, "/v1/holds", {"account_id": "rf-hold", "amount": 150}, 201)
    hold_id = opened["hold"]["hold_id"]
    captured = await post(api, f"/v1/holds/{hold_id}/capture", {"amount": 140}, 200)
    funding = captured["hold"]["funding"]  # promo 100 (expires first), trial 28, paid 12
    assert [p["amount"] for p in funding] == [100, 28, 12]
    assert funding[-1]["grant_id"] == paid["grant_id"]

    part = (await refund(api, {"hold_id": hold_id, "amount": 20}))["refund"]
    assert (part["hold_id"], part["charge_id"], part["refundable"]) == (hold_id, None, 120)
    assert [(p["grant_id"], p["amount"]) for p in part["funding"]] == [
        (paid["grant_id"], 12),
        (funding[1]["grant_id"], 8),
    ]
    error = (await refund(api, {"hold_id": hold_id, "amount": 121}, 409))["error"]
    assert (error["code"], error["refundable"]) == ("refund_exceeds_spend", 120)
    rest = (await refund(api, {"hold_id": hold_id}))["refund"]
    assert rest["amount"] == 120 and rest["refundable"] == 0
    assert (await account(api, "rf-hold"))["balance"] == 628
    await assert_audit_clean(database_url)


async def test_a_capture_refunded_gives_back_the_allowance_of_the_day_its_hold_counted(
    api: ApiClient, clock: MutableClock, database_url: str
) -> None:
    # a trial account: at most 4 credits a UTC day; the hold opens at 23:00 and counts 4 today
    clock.advance(hours=11)
    opened = await post(
        api, "/v1/holds", {"account_id": "rf-day", "amount": 4, "ttl_seconds": 4 * 3600}, 201
    )
    hold_id = opened["hold"]["hold_id"]
    clock.advance(hours=2)  # 01:00 the next day: captured, and 4 more spent today
    await post(api, f"/v1/holds/{hold_id}/capture", {}, 200)
    await charge(api, "rf-day", 4)
    assert (await account(api, "rf-day"))["trial"]["spent_today"] == 4

    back = (await refund(api, {"hold_id": hold_id}))["refund"]

    # the 4 came back to yesterday's allowance, which is gone: today's 4 stay spent
    assert back["amount"] == 4
    after = await account(api, "rf-day")
    assert (after["balance"], after["trial"]["spent_today"]) == (28 - 4, 4)
    refused = await post(api, "/v1/accounts/rf-day/charges", {"amount": 1}, 429)
    assert refused["error"]["code"] == "daily_limit_exceeded"
    await assert_audit_clean(database_url)


async def test_a_charge_refunded_the_same_day_gives_back_todays_allowance(
    api: ApiClient, clock: MutableClock
) -> None:
    spent = await charge(api, "rf-today", 3)
    assert (await account(api, "rf-today"))["trial"]["spent_today"] == 3
    await refund(api, {"charge_id": spent["charge_id"], "amount": 2})
    assert (await account(api, "rf-today"))["trial"]["spent_today"] == 1
    clock.advance(days=1)
    await charge(api, "rf-today", 1)
    second = await charge(api, "rf-today", 1)
    clock.advance(days=1)  # refunded a day later: that day's allowance is not touched
    await charge(api, "rf-today", 2)
    await refund(api, {"charge_id": second["charge_id"]})
    assert (await account(api, "rf-today"))["trial"]["spent_today"] == 2


async def test_only_a_captured_hold_or_a_known_charge_is_refunded(
    api: ApiClient, database_url: str
) -> None:
    await grant(api, "rf-state", 100)
    opened = (await post(api, "/v1/holds", {"account_id": "rf-state", "amount": 5}, 201))["hold"]
    error = (await refund(api, {"hold_id": opened["hold_id"]}, 409))["error"]
    assert (error["code"], error["hold_status"]) == ("invalid_state", "open")
    await post(api, f"/v1/holds/{opened['hold_id']}/release", {}, 200)
    error = (await refund(api, {"hold_id": opened["hold_id"]}, 409))["error"]
    assert (error["code"], error["hold_status"]) == ("invalid_state", "released")
    assert (await refund(api, {"hold_id": "hold_unknown"}, 404))["error"]["code"] == "not_found"
    assert (await refund(api, {"charge_id": "chg_unknown"}, 404))["error"]["code"] == "not_found"
    # a hold id is not a charge id
    assert (await refund(api, {"charge_id": opened["hold_id"]}, 404))["error"][
        "code"
    ] == "not_found"
    spent = await charge(api, "rf-state", 3)
    for bad in (
        {},
        {"charge_id": spent["charge_id"], "hold_id": opened["hold_id"]},
        {"charge_id": spent["charge_id"], "amount": 0},
        {"charge_id": spent["charge_id"], "amount": "1"},
        {"charge_id": "chg\u0000x"},
    ):
        assert (await refund(api, bad, 422))["error"]["code"] == "validation_error"
    user = await api.http.post(
        "/v1/refunds", headers=api.user("rf-state"), json={"charge_id": spent["charge_id"]}
    )
    assert user.status_code == 403
    assert (await account(api, "rf-state"))["balance"] == 128 - 3
    await assert_audit_clean(database_url)


async def test_an_expired_grants_credits_come_back_as_a_new_grant_lasting_as_long(
    api: ApiClient, clock: MutableClock, database_url: str
) -> None:
    await grant(api, "rf-expired", 100)
    promo = await grant(
        api, "rf-expired", 50, "promo", expires_at=iso(clock.now() + timedelta(days=2))
    )
    spent = await charge(api, "rf-expired", 60)  # promo 50 (soonest expiry), trial 10
    assert [p["amount"] for p in spent["funding"]] == [50, 10]
    trial_id = spent["funding"][1]["grant_id"]
    clock.advance(days=3)  # the promo grant has expired; the trial grant (7 days) has not

    back = (await refund(api, {"charge_id": spent["charge_id"]}))["refund"]
    to_trial, to_promo = back["funding"]
    assert (to_trial["grant_id"], to_trial["returned_to"], to_trial["amount"]) == (
        trial_id,
        trial_id,
        10,
    )
    assert to_promo["grant_id"] == promo["grant_id"] and to_promo["amount"] == 50
    assert to_promo["returned_to"] != promo["grant_id"]
    assert to_promo["expires_at"] == iso(clock.now() + timedelta(days=2))
    assert (await account(api, "rf-expired"))["balance"] == 128 + 50 - 60 + 60
    credits = await grants_by_id(api, "rf-expired")
    assert credits[to_promo["returned_to"]] == 50 and credits[promo["grant_id"]] == 0

    clock.advance(days=2, seconds=1)  # the new grant lasts as long as the promo did
    ensured = await api.http.put("/v1/accounts/rf-expired", headers=api.server())
    assert ensured.json()["balance"] == 128  # the new grant has expired, the trial has not
    await assert_audit_clean(database_url)


async def test_usage_nets_refunds(api: ApiClient, database_url: str) -> None:
    await grant(api, "rf-usage", 1000)
    flux = {"operation": "image", "model": "FLUX.1 [dev]"}
    spent = (await post(api, "/v1/accounts/rf-usage/charges", {"price": flux}, 201))["charge"]
    await charge(api, "rf-usage", 5)
    await refund(api, {"charge_id": spent["charge_id"], "amount": 40})
    usage = (
        await api.http.get("/v1/accounts/rf-usage/usage?period=day", headers=api.server())
    ).json()
    assert usage["credits_used"] == 90 + 5 - 40 and usage["credits_refunded"] == 40
    assert usage["operations"]["image"] == {"count": 1, "credits": 50}
    assert usage["operations"]["other"] == {"count": 1, "credits": 5}
    assert usage["models"]["FLUX.1 [dev]"] == {"count": 1, "credits": 50}
    assert usage["days"][-1]["credits"] == 55 and usage["days"][-1]["count"] == 2


async def test_a_refund_is_idempotent(api: ApiClient, database_url: str) -> None:
    await grant(api, "rf-key", 100)
    spent = await charge(api, "rf-key", 20)
    body = {"charge_id": spent["charge_id"], "amount": 7}
    first = await api.http.post(
        "/v1/refunds", headers={**api.server(), "Idempotency-Key": "r1"}, json=body
    )
    again = await api.http.post(
        "/v1/refunds", headers={**api.server(), "Idempotency-Key": "r1"}, json=body
    )
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true" and again.content == first.content
    other = await api.http.post(
        "/v1/refunds", headers={**api.server(), "Idempotency-Key": "r1"}, json={**body, "amount": 8}
    )
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert (await account(api, "rf-key"))["balance"] == 128 - 20 + 7
    concurrent = await asyncio.gather(
        *(
            api.http.post(
                "/v1/refunds", headers={**api.server(), "Idempotency-Key": "r2"}, json=body
            )
            for _ in range(8)
        )
    )
    assert {r.content for r in concurrent} == {concurrent[0].content}
    assert (await account(api, "rf-key"))["balance"] == 128 - 20 + 14


async def race(
    clients: list[ApiClient], charge_id: str, amounts: list[int | None]
) -> list[httpx.Response]:
    return await asyncio.gather(
        *(
            clients[i % len(clients)].http.post(
                "/v1/refunds",
                headers=clients[0].server(),
                json={"charge_id": charge_id} | ({} if a is None else {"amount": a}),
            )
            for i, a in enumerate(amounts)
        )
    )


def assert_within_spend(responses: list[httpx.Response], spent: int) -> int:
    assert {r.status_code for r in responses} <= {201, 409}, [r.text for r in responses]
    refused = [r.json()["error"]["code"] for r in responses if r.status_code == 409]
    assert set(refused) <= {"refund_exceeds_spend"}
    total = sum(int(r.json()["refund"]["amount"]) for r in responses if r.status_code == 201)
    assert total <= spent
    return total


async def test_racing_refunds_never_return_more_than_the_charge(
    api: ApiClient, database_url: str
) -> None:
    await grant(api, "rf-race", 1000)
    spent = await charge(api, "rf-race", 10)
    total = assert_within_spend(await race([api], spent["charge_id"], [3] * 12), 10)
    assert total == 9  # three of them fit, the fourth would pass the spend
    whole = await charge(api, "rf-race", 25)
    responses = await race([api], whole["charge_id"], [None] * 10)
    assert assert_within_spend(responses, 25) == 25
    assert sum(r.status_code == 201 for r in responses) == 1
    assert (await account(api, "rf-race"))["balance"] == 1028 - 10 + 9
    await assert_audit_clean(database_url)


@pytest.mark.postgres
async def test_racing_refunds_on_two_instances_never_return_more_than_the_charge(
    api_factory: Callable[..., Any], pg_url: str
) -> None:
    instances: list[ApiClient] = [await api_factory(pg_url), await api_factory(pg_url)]
    first = instances[0]
    await grant(first, "rf-two", 1000)
    spent = await charge(first, "rf-two", 40)
    responses = await race(instances, spent["charge_id"], [3, 5, 7, 2, 4, 6] * 4)
    total = assert_within_spend(responses, 40)
    assert total >= 40 - 7  # refused only when what was asked no longer fit
    snapshot = await account(instances[1], "rf-two")
    assert snapshot["balance"] == 1028 - 40 + total
    await assert_audit_clean(pg_url)
