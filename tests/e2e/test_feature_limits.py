"""Feature limits per plan (seed 004's "Credit Limits by Feature") and the plans file, through
the HTTP API on SQLite and PostgreSQL: past a plan's runs per day, 429 feature_limit_exceeded;
the quote says what is left; parallel requests at the limit never overshoot it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asgi import create_app
from core.plans import PlansFileError
from tests.conftest import ApiClient
from tests.support import MutableClock

SCRIPT = {"price": {"operation": "script_generation"}, "reason": "script_generation"}


async def paid(api: ApiClient, account: str, body: dict[str, Any] | None = None) -> None:
    response = await api.http.post(
        f"/v1/accounts/{account}/grants",
        headers=api.server(),
        json=body or {"amount": 1000, "reason": "purchase"},
    )
    assert response.status_code == 201, response.text


async def charge(api: ApiClient, account: str) -> Any:
    return await api.http.post(f"/v1/accounts/{account}/charges", headers=api.server(), json=SCRIPT)


async def quote(api: ApiClient, account: str, operation: str = "script_generation") -> Any:
    response = await api.http.post(
        "/v1/quote", headers=api.user(account), json={"operation": operation}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_past_the_free_limit_429_with_limit_used_and_retry_after(
    api: ApiClient, clock: MutableClock
) -> None:
    await paid(api, "writer")  # paid, no plan: the "free" limits, without the trial's 4 a day
    for n in range(3):
        assert (await charge(api, "writer")).status_code == 201
        assert (await quote(api, "writer"))["feature_limit"]["remaining"] == 2 - n
    refused = await charge(api, "writer")
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    seconds_to_midnight = 12 * 3600  # the test clock stands at noon UTC
    assert (error["code"], error["limit"], error["used"], error["retry_after"]) == (
        "feature_limit_exceeded",
        3,
        3,
        seconds_to_midnight,
    )
    assert (error["plan"], error["period"]) == ("free", "day")
    assert refused.headers["Retry-After"] == str(seconds_to_midnight)
    check = await quote(api, "writer")
    assert check["affordable"] is False and check["feature_limit"] == {
        "operation": "script_generation",
        "plan": "free",
        "period": "day",
        "limit": 3,
        "used": 3,
        "remaining": 0,
        "resets_in": seconds_to_midnight,
    }
    # other operations, and amounts without a price, are not this limit's
    assert (
        await api.http.post("/v1/accounts/writer/charges", headers=api.server(), json={"amount": 1})
    ).status_code == 201
    clock.advance(hours=12)
    assert (await charge(api, "writer")).status_code == 201  # a new UTC day


async def test_a_plan_lifts_the_limit_and_a_released_run_is_given_back(api: ApiClient) -> None:
    await paid(api, "team", {"plan": "pro"})
    for _ in range(4):
        assert (await charge(api, "team")).status_code == 201
    assert (await quote(api, "team"))["feature_limit"] | {"resets_in": 0} == {
        "operation": "script_generation",
        "plan": "pro",
        "period": "day",
        "limit": 100,
        "used": 4,
        "remaining": 96,
        "resets_in": 0,
    }
    await paid(api, "solo")
    opened = await api.http.post(
        "/v1/holds",
        headers=api.server(),
        json={"account_id": "solo", "price": {"operation": "voice_creation"}},
    )
    assert opened.status_code == 201
    second = await api.http.post(
        "/v1/holds",
        headers=api.server(),
        json={"account_id": "solo", "price": {"operation": "voice_creation"}},
    )
    assert second.status_code == 429 and second.json()["error"]["limit"] == 1
    hold_id = opened.json()["hold"]["hold_id"]
    assert (
        await api.http.post(f"/v1/holds/{hold_id}/release", headers=api.server())
    ).status_code == 200
    again = await api.http.post(
        "/v1/jobs",
        headers=api.server(),
        json={"account_id": "solo", "operation": "voice_creation", "input": {"simulate": "hang"}},
    )
    assert again.status_code == 202, again.text


async def test_parallel_requests_at_the_limit_exactly_the_allowed_number_succeed(
    api_factory: Callable[..., Any], database_url: str
) -> None:
    api: ApiClient = await api_factory(database_url, write_connections=4)
    accounts = [f"racer-{i}" for i in range(3)]
    for account in accounts:
        await paid(api, account)
        assert (await charge(api, account)).status_code == 201  # one run counted already
    attempts = [charge(api, account) for account in accounts for _ in range(12)]
    answers = await asyncio.gather(*attempts)
    for account in accounts:
        mine = [a for a in answers if a.request.url.path == f"/v1/accounts/{account}/charges"]
        assert sorted(a.status_code for a in mine) == [201] * 2 + [429] * 10
        assert {a.json()["error"]["code"] for a in mine if a.status_code == 429} == {
            "feature_limit_exceeded"
        }
        used = (await quote(api, account))["feature_limit"]["used"]
        assert used == 3
        usage = (
            await api.http.get(f"/v1/accounts/{account}/usage?period=day", headers=api.server())
        ).json()
        assert usage["operations"]["script_generation"]["count"] == 3


async def test_plans_are_served_from_the_data_file(api: ApiClient) -> None:
    body = (await api.http.get("/v1/plans")).json()
    assert [(p["name"], p["price_usd"], p["credits"]) for p in body["plans"]] == [
        ("starter", 5, 30),
        ("growth", 10, 80),
        ("pro", 20, 150),
    ]
    limits = {limit["operation"]: limit for limit in body["limits"]}
    assert limits["script_generation"]["per_plan"]["free"] == 3
    assert limits["script_generation"]["per_plan"]["pro"] == 100
    assert (body["no_plan"], body["trial"]["credits"]) == ("free", 28)


async def test_a_plans_file_sets_credit_days_and_limits_per_month(
    api_factory: Callable[..., Any], database_url: str, tmp_path: Path, clock: MutableClock
) -> None:
    plans = tmp_path / "plans.toml"
    plans.write_text(
        "[plans.basic]\nprice_usd = 7\ncredits = 40\ncredit_days = 30\n"
        '[limits.audio]\nperiod = "month"\nfree = 0\nbasic = 1\n'
    )
    api: ApiClient = await api_factory(database_url, plans_file=str(plans))
    assert (await api.http.get("/v1/plans")).json()["plans"] == [
        {"name": "basic", "price_usd": 7, "credits": 40, "credit_days": 30}
    ]
    granted = await api.http.post(
        "/v1/accounts/monthly/grants", headers=api.server(), json={"tier": 7}
    )
    assert granted.status_code == 201, granted.text
    assert granted.json()["grant"]["expires_at"] == "2030-02-14T12:00:00Z"
    none = await api.http.post(
        "/v1/accounts/nobody/charges", headers=api.server(), json={"price": {"operation": "audio"}}
    )
    assert none.status_code == 429 and none.json()["error"]["limit"] == 0
    audio = {"price": {"operation": "audio"}}
    assert (
        await api.http.post("/v1/accounts/monthly/charges", headers=api.server(), json=audio)
    ).status_code == 201
    refused = await api.http.post("/v1/accounts/monthly/charges", headers=api.server(), json=audio)
    assert refused.status_code == 429
    assert refused.json()["error"]["retry_after"] == 17 * 24 * 3600 - 12 * 3600  # to Feb 1st


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[plans.a]\nprice_usd = 5\ncredits = 0\n", "credits"),
        (
            '[plans.a]\nprice_usd = 5\ncredits = 1\n[limits.nope]\nperiod = "day"\nfree = 1\n',
            "unknown operations",
        ),
        (
            '[plans.a]\nprice_usd = 5\ncredits = 1\n[limits.audio]\nperiod = "week"\nfree = 1\n',
            "period",
        ),
        (
            '[plans.a]\nprice_usd = 5\ncredits = 1\n[limits.audio]\nperiod = "day"\nb = 1\n',
            "unknown plan",
        ),
        ("[plans.free]\nprice_usd = 5\ncredits = 1\n", "without a plan"),
    ],
)
def test_a_bad_plans_file_stops_the_start(
    settings_for: Callable[..., Any], tmp_path: Path, text: str, says: str
) -> None:
    plans = tmp_path / "plans.toml"
    plans.write_text(text)
    with pytest.raises(PlansFileError, match=says):
        create_app(settings_for(f"sqlite+aiosqlite:///{tmp_path}/x.db", plans_file=str(plans)))
