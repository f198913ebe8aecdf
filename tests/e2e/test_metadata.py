"""Metadata, as Stripe has it, through the HTTP API on SQLite and PostgreSQL: holds, charges, jobs
and grants keep the caller's key-value pairs, return them, and carry them in their journal
entries and events; usage groups what was spent by operation, by model and per day."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import ApiClient
from tests.support import MutableClock

SEED004 = {"service": "gemini", "tokensUsed": 512, "responseTime": 840}  # trackUsage's object


async def entries_of(api: ApiClient, account: str) -> list[dict[str, Any]]:
    response = await api.http.get(f"/v1/accounts/{account}/entries?limit=500", headers=api.server())
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


async def events_of(api: ApiClient, account: str) -> list[dict[str, Any]]:
    response = await api.http.get(f"/v1/accounts/{account}/events?limit=500", headers=api.server())
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


async def paid(api: ApiClient, account: str, amount: int = 1000) -> None:
    response = await api.http.post(
        f"/v1/accounts/{account}/grants",
        headers=api.server(),
        json={"amount": amount, "reason": "purchase"},
    )
    assert response.status_code == 201, response.text


async def test_a_charge_keeps_seed_004s_tracking_object(api: ApiClient) -> None:
    await paid(api, "tracker")
    response = await api.http.post(
        "/v1/accounts/tracker/charges",
        headers=api.server(),
        json={
            "price": {"operation": "script_generation"},
            "reason": "script_generation",
            "metadata": SEED004,
        },
    )
    assert response.status_code == 201, response.text
    charge = response.json()["charge"]
    assert charge["metadata"] == SEED004
    assert charge["price"] == {"operation": "script_generation", "model": None, "params": {}}
    entry = (await entries_of(api, "tracker"))[-1]
    assert entry["type"] == "charge" and entry["metadata"]["metadata"] == SEED004
    assert entry["metadata"]["operation"] == "script_generation"  # the engine's own, beside it
    event = (await events_of(api, "tracker"))[-1]
    assert event["type"] == "balance.updated" and event["metadata"] == SEED004


async def test_a_hold_carries_its_metadata_to_its_capture(api: ApiClient) -> None:
    await paid(api, "holder")
    tags = {"order": "ord_42", "retry": False, "note": None, "ratio": 0.5}
    opened = await api.http.post(
        "/v1/holds",
        headers=api.server(),
        json={
            "account_id": "holder",
            "price": {"operation": "image", "model": "FLUX.1 [dev]"},
            "metadata": tags,
        },
    )
    assert opened.status_code == 201, opened.text
    hold = opened.json()["hold"]
    assert hold["metadata"] == tags and hold["price"]["model"] == "FLUX.1 [dev]"
    read = (await api.http.get(f"/v1/holds/{hold['hold_id']}", headers=api.server())).json()
    assert read["metadata"] == tags and read["price"] == hold["price"]
    captured = await api.http.post(f"/v1/holds/{hold['hold_id']}/capture", headers=api.server())
    assert captured.status_code == 200 and captured.json()["hold"]["metadata"] == tags
    kinds = {e["type"]: e["metadata"] for e in await entries_of(api, "holder")}
    assert kinds["hold"]["metadata"] == tags and kinds["capture"]["metadata"] == tags
    assert kinds["capture"]["model"] == "FLUX.1 [dev]"
    balance_events = [e for e in await events_of(api, "holder") if e["type"] == "balance.updated"]
    assert [e["metadata"] for e in balance_events[-2:]] == [tags, tags]


async def test_a_job_and_its_events_carry_its_metadata(api: ApiClient) -> None:
    await paid(api, "maker")
    tags = {"prompt_id": "p_7", "campaign": "spring"}
    created = await api.http.post(
        "/v1/jobs",
        headers=api.server(),
        json={
            "account_id": "maker",
            "operation": "image",
            "model": "FLUX.1 [dev]",
            "input": {"simulate": "hang"},
            "metadata": tags,
        },
    )
    assert created.status_code == 202, created.text
    job = created.json()["job"]
    assert job["metadata"] == tags
    assert (await api.http.get(f"/v1/jobs/{job['job_id']}", headers=api.server())).json()[
        "metadata"
    ] == tags
    listed = (await api.http.get("/v1/accounts/maker/jobs", headers=api.server())).json()
    assert listed["jobs"][0]["metadata"] == tags
    job_events = [e for e in await events_of(api, "maker") if e["type"] == "job.updated"]
    assert job_events[-1]["job"]["metadata"] == tags
    hold = (await api.http.get(f"/v1/holds/{job['hold_id']}", headers=api.server())).json()
    assert hold["metadata"] == tags


async def test_a_grant_keeps_its_metadata_in_its_entry(api: ApiClient) -> None:
    tags = {"campaign": "launch", "agent": "support-7"}
    granted = await api.http.post(
        "/v1/accounts/gifted/grants",
        headers=api.server(),
        json={"amount": 50, "reason": "promo", "metadata": tags},
    )
    assert granted.status_code == 201, granted.text
    assert granted.json()["grant"]["metadata"] == tags
    plan = await api.http.post(
        "/v1/accounts/gifted/grants",
        headers=api.server(),
        json={"plan": "growth", "metadata": {"invoice": "in_1"}},
    )
    assert plan.json()["grant"]["metadata"] == {"invoice": "in_1"}
    grants = [e for e in await entries_of(api, "gifted") if e["type"] == "grant"]
    assert grants[1]["metadata"]["metadata"] == tags
    assert grants[2]["metadata"]["metadata"] == {"invoice": "in_1"}
    assert grants[2]["metadata"]["plan"] == "growth"  # the engine's details stay beside it
    assert grants[0]["metadata"].get("metadata") is None  # the trial grant has none


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        ({f"k{i}": "v" for i in range(51)}, "at most 50 keys"),
        ({"k" * 41: "v"}, "1-40 characters"),
        ({"": "v"}, "1-40 characters"),
        ({"note": "x" * 501}, "at most 500 characters"),
        ({"nested": {"a": 1}}, "a string, a number"),
        ({"list": [1, 2]}, "a string, a number"),
        ({"huge": 2**60}, "a string, a number"),
        ("not an object", "dict"),
    ],
)
async def test_metadata_over_the_limits_is_refused_and_nothing_is_written(
    api: ApiClient, metadata: Any, says: str
) -> None:
    await paid(api, "strict")
    before = await entries_of(api, "strict")
    bodies = [
        ("/v1/holds", {"account_id": "strict", "amount": 1, "metadata": metadata}),
        ("/v1/accounts/strict/charges", {"amount": 1, "metadata": metadata}),
        ("/v1/accounts/strict/grants", {"amount": 1, "metadata": metadata}),
        ("/v1/jobs", {"account_id": "strict", "operation": "audio", "metadata": metadata}),
    ]
    for path, body in bodies:
        response = await api.http.post(path, headers=api.server(), json=body)
        assert response.status_code == 422, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == "validation_error" and says in error["message"], error
    assert await entries_of(api, "strict") == before


async def test_fifty_keys_of_forty_characters_and_500_character_values_fit(api: ApiClient) -> None:
    await paid(api, "roomy")
    metadata = {f"{i:02d}" + "k" * 38: "v" * 500 for i in range(50)}
    response = await api.http.post(
        "/v1/accounts/roomy/charges", headers=api.server(), json={"amount": 1, "metadata": metadata}
    )
    assert response.status_code == 201, response.text
    assert response.json()["charge"]["metadata"] == metadata


async def test_usage_groups_by_operation_by_model_and_per_day(
    api: ApiClient, clock: MutableClock
) -> None:
    h = api.server()
    await paid(api, "studio", 5000)
    spend = [
        {"price": {"operation": "image", "model": "FLUX.1 [dev]"}},
        {"price": {"operation": "image", "model": "FLUX.1 [pro]"}},
        {"price": {"operation": "script_generation"}},
        {"amount": 7},
    ]
    for body in spend:
        assert (
            await api.http.post("/v1/accounts/studio/charges", headers=h, json=body)
        ).status_code == 201
    clock.advance(days=1, minutes=1)  # "day" is the last 24 hours: the first four fall out
    assert (
        await api.http.post(
            "/v1/accounts/studio/charges",
            headers=h,
            json={"price": {"operation": "image", "model": "FLUX.1 [dev]"}},
        )
    ).status_code == 201
    today = clock.now().date().isoformat()
    yesterday = (clock.now() - timedelta(days=1)).date().isoformat()

    week = (await api.http.get("/v1/accounts/studio/usage?period=week", headers=h)).json()
    assert week["credits_used"] == 90 + 130 + 1 + 7 + 90
    assert week["operations"] == {
        "image": {"count": 3, "credits": 310},
        "script_generation": {"count": 1, "credits": 1},
        "other": {"count": 1, "credits": 7},
    }
    assert week["models"] == {
        "FLUX.1 [dev]": {"count": 2, "credits": 180},
        "FLUX.1 [pro]": {"count": 1, "credits": 130},
    }
    days = {d["date"]: d for d in week["days"]}
    assert len(week["days"]) == 8 and week["days"][-1]["date"] == today  # every day, oldest first
    assert (days[yesterday]["count"], days[yesterday]["credits"]) == (4, 228)
    assert days[yesterday]["models"] == {
        "FLUX.1 [dev]": {"count": 1, "credits": 90},
        "FLUX.1 [pro]": {"count": 1, "credits": 130},
    }
    assert days[today]["operations"] == {"image": {"count": 1, "credits": 90}}
    assert sum(d["credits"] for d in week["days"]) == week["credits_used"]

    day = (await api.http.get("/v1/accounts/studio/usage?period=day", headers=h)).json()
    assert day["credits_used"] == 90 and day["models"] == {
        "FLUX.1 [dev]": {"count": 1, "credits": 90}
    }
    assert [d["date"] for d in day["days"]] == [yesterday, today]


async def opened(api: ApiClient, account: str) -> dict[str, Any]:
    """The account, opened with its trial: a user token's first request finds it there."""
    response = await api.http.put(f"/v1/accounts/{account}", headers=api.server())
    assert response.status_code in (200, 201), response.text
    snapshot: dict[str, Any] = response.json()
    return snapshot


async def snapshot_of(api: ApiClient, account: str) -> dict[str, Any]:
    response = await api.http.get(f"/v1/accounts/{account}", headers=api.server())
    assert response.status_code == 200, response.text
    snapshot: dict[str, Any] = response.json()
    return snapshot


@pytest.mark.parametrize(
    "params",
    [
        {"junk": "x" * 60_000},  # no model named: the operation's base price used to skip them
        {"resolution": "x" * 17},
        {"duration": "6"},
        "not an object",
    ],
)
async def test_price_params_are_checked_with_or_without_a_model(
    api: ApiClient, params: Any
) -> None:
    user = api.user("trialist")
    await opened(api, "trialist")
    before = (await entries_of(api, "trialist"), await snapshot_of(api, "trialist"))
    price = {"operation": "audio", "params": params}
    bodies = [
        ("/v1/holds", {"price": price}, user),
        ("/v1/quote", price, user),
        ("/v1/jobs", price, user),
        ("/v1/accounts/trialist/charges", {"price": price}, api.server()),
        (
            "/v1/batch",
            {"operations": [{"op": "hold", "account_id": "trialist", "price": price}]},
            api.server(),
        ),
    ]
    for path, body, auth in bodies:
        response = await api.http.post(path, headers=auth, json=body)
        if path == "/v1/batch" and response.status_code == 200:
            (part,) = response.json()["results"]
            status, error = part["status"], part["body"]["error"]
        else:
            status, error = response.status_code, response.json()["error"]
        assert status == 422, (path, response.text[:300])
        assert error["code"] in ("unsupported_option", "validation_error"), error
        assert len(response.content) < 2000  # the refusal does not echo what it refused
    assert (await entries_of(api, "trialist"), await snapshot_of(api, "trialist")) == before


async def test_known_params_without_a_model_still_price_at_the_operations_base(
    api: ApiClient,
) -> None:
    user = api.user("plain")
    response = await api.http.post(
        "/v1/holds", headers=user, json={"price": {"operation": "audio", "params": {"duration": 5}}}
    )
    assert response.status_code == 201, response.text
    assert response.json()["hold"]["amount"] == 1


async def test_a_job_input_over_32_kib_is_refused_and_nothing_is_written(api: ApiClient) -> None:
    user = api.user("prompter")
    await opened(api, "prompter")
    before = (await entries_of(api, "prompter"), await snapshot_of(api, "prompter"))
    big = {"prompt": "x" * (32 * 1024)}
    for path, body in [
        ("/v1/jobs", {"operation": "audio", "input": big}),
        ("/api/v1/video/generate", big),
    ]:  # seed 000: its body is the input
        response = await api.http.post(path, headers=user, json=body)
        assert response.status_code == 422, (path, response.text[:300])
        error = response.json()["error"]
        assert (error["code"], error["limit"]) == ("input_too_large", 32 * 1024), error
    assert (await entries_of(api, "prompter"), await snapshot_of(api, "prompter")) == before
    jobs = await api.http.get("/v1/accounts/prompter/jobs", headers=user)
    assert jobs.json()["jobs"] == []
    fits = await api.http.post(
        "/v1/jobs",
        headers=api.server(),
        json={
            "account_id": "prompter",
            "operation": "audio",
            "provider": "bfl",
            "input": {"script": "x" * 32_000, "walletAddress": "0x" + "a" * 40},
        },
    )
    assert fits.status_code == 202, fits.text[:300]
