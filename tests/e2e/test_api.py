"""The v1 REST API in-process (SQLite and PostgreSQL): shapes, auth (G7), bad input (G8)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ApiClient
from tests.support import MutableClock


async def journal_state(api: ApiClient, account_id: str) -> tuple[int, int]:
    """(number of entries, seq) — what bad input must leave unchanged."""
    entries = (
        await api.http.get(f"/v1/accounts/{account_id}/entries?limit=500", headers=api.server())
    ).json()["entries"]
    seq = (await api.http.get(f"/v1/accounts/{account_id}", headers=api.server())).json()["seq"]
    return len(entries), seq


async def test_account_lifecycle_and_shapes(api: ApiClient) -> None:
    h = api.server()
    assert (await api.http.get("/v1/accounts/newbie", headers=h)).status_code == 404
    created = await api.http.put("/v1/accounts/newbie", headers=h)
    assert created.status_code == 201
    snap = created.json()
    assert snap["balance"] == 28 and snap["available"] == 28 and snap["held"] == 0
    assert snap["trial"]["active"] is True and snap["trial"]["daily_limit"] == 4
    assert snap["seq"] == 1
    assert (await api.http.put("/v1/accounts/newbie", headers=h)).status_code == 200
    hold = await api.http.post(
        "/v1/holds", headers=h, json={"account_id": "newbie", "amount": 3, "ref": "job-1"}
    )
    assert hold.status_code == 201
    hold_id = hold.json()["hold"]["hold_id"]
    assert hold.json()["account"]["available"] == 25
    got = (await api.http.get(f"/v1/holds/{hold_id}", headers=h)).json()
    assert got["status"] == "open" and got["amount"] == 3
    captured = await api.http.post(f"/v1/holds/{hold_id}/capture", headers=h, json={"amount": 2})
    assert captured.status_code == 200
    assert captured.json()["hold"]["captured_amount"] == 2
    assert captured.json()["account"]["balance"] == 26
    conflict = await api.http.post(f"/v1/holds/{hold_id}/release", headers=h)
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "invalid_state"
    events = (await api.http.get("/v1/accounts/newbie/events?after_seq=1", headers=h)).json()
    assert [e["seq"] for e in events["events"]] == [2, 3]
    assert events["events"][-1]["type"] == "balance.updated"
    assert events["events"][-1]["delta"] == -2
    usage = (await api.http.get("/v1/accounts/newbie/usage?period=day", headers=h)).json()
    assert usage["credits_used"] == 2
    assert usage["jobs"] == {"processing": 0, "success": 0, "failed": 0}


async def test_grants_by_plan_tier_and_amount(api: ApiClient) -> None:
    h = api.server()
    by_tier = await api.http.post(
        "/v1/accounts/0xABCDEF0123456789abcdef0123456789ABCDEF01/grants",
        headers=h,
        json={"tier": 10},
    )
    assert by_tier.status_code == 201
    body = by_tier.json()
    assert body["account"]["account_id"] == "0xabcdef0123456789abcdef0123456789abcdef01"
    assert body["grant"]["amount"] == 80 and body["account"]["plan"] == "growth"
    by_plan = await api.http.post("/v1/accounts/p/grants", headers=h, json={"plan": "pro"})
    assert by_plan.json()["grant"]["amount"] == 150
    expiring = await api.http.post(
        "/v1/accounts/p/grants",
        headers=h,
        json={"amount": 5, "reason": "promo", "expires_at": "2031-01-01T00:00:00Z"},
    )
    assert expiring.status_code == 201 and expiring.json()["grant"]["kind"] == "promo"
    bad_tier = await api.http.post("/v1/accounts/p/grants", headers=h, json={"tier": 7})
    assert bad_tier.status_code == 422 and bad_tier.json()["error"]["code"] == "unknown_plan"


async def test_charge_by_price_records_operation(api: ApiClient) -> None:
    h = api.server()
    await api.http.post("/v1/accounts/buyer/grants", headers=h, json={"amount": 2000})
    charge = await api.http.post(
        "/v1/accounts/buyer/charges",
        headers=h,
        json={
            "price": {
                "operation": "video",
                "model": "MiniMax-Hailuo-02",
                "params": {"resolution": "768P", "duration": 6},
            },
            "reason": "video",
        },
    )
    assert charge.status_code == 201
    assert charge.json()["charge"]["amount"] == 680
    usage = (await api.http.get("/v1/accounts/buyer/usage", headers=h)).json()
    assert usage["operations"]["video"] == {"count": 1, "credits": 680}
    unsupported = await api.http.post(
        "/v1/accounts/buyer/charges",
        headers=h,
        json={
            "price": {
                "operation": "video",
                "model": "MiniMax-Hailuo-02",
                "params": {"resolution": "1080P", "duration": 10},
            }
        },
    )
    assert unsupported.status_code == 422
    assert unsupported.json()["error"]["code"] == "unsupported_option"


async def test_insufficient_credits_shape(api: ApiClient) -> None:
    h = api.server()
    await api.http.post("/v1/accounts/poor/grants", headers=h, json={"amount": 1})
    refused = await api.http.post("/v1/holds", headers=h, json={"account_id": "poor", "amount": 40})
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert error == {
        "code": "insufficient_credits",
        "required": 40,
        "available": 29,
        "shortfall": 11,
        "message": "Insufficient credits. You need 11 more credits for this.",
    }


async def test_trial_daily_limit_then_next_day(api: ApiClient, clock: MutableClock) -> None:
    h = api.server()
    assert (
        await api.http.post("/v1/holds", headers=h, json={"account_id": "t", "amount": 4})
    ).status_code == 201
    limited = await api.http.post("/v1/accounts/t/charges", headers=h, json={"amount": 1})
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "daily_limit_exceeded"
    assert int(limited.headers["Retry-After"]) == limited.json()["error"]["retry_after"] > 0
    clock.advance(days=1)
    assert (
        await api.http.post("/v1/accounts/t/charges", headers=h, json={"amount": 1})
    ).status_code == 201


async def test_quote(api: ApiClient) -> None:
    h = api.server()
    alone = await api.http.post(
        "/v1/quote", headers=h, json={"operation": "image", "model": "FLUX.1 [dev]"}
    )
    assert alone.json() == {"cost": 90}
    await api.http.put("/v1/accounts/q", headers=h)
    quoted = (
        await api.http.post(
            "/v1/quote", headers=api.user("q"), json={"operation": "image", "model": "FLUX.1 [dev]"}
        )
    ).json()
    assert quoted == {
        "cost": 90,
        "account_id": "q",
        "available": 28,
        "affordable": False,
        "shortfall": 62,
        "daily_limit_remaining": 4,
    }
    over_daily = (
        await api.http.post(
            "/v1/quote", headers=api.user("q"), json={"operation": "voice_creation"}
        )
    ).json()
    assert over_daily["cost"] == 5 and over_daily["shortfall"] == 0
    assert over_daily["affordable"] is False  # the trial's 4 a day, not the balance, forbids it


async def test_pricing_and_openapi_cover_every_route(api: ApiClient) -> None:
    pricing = (await api.http.get("/v1/pricing")).json()
    assert {m["id"] for m in pricing["models"]} >= {
        "MiniMax-Hailuo-02",
        "Gen-4 Aleph",
        "FLUX.1 Kontext [pro]",
        "Music 1.5",
    }
    doc = (await api.http.get("/openapi.json")).json()
    from starlette.routing import Route, WebSocketRoute

    for route in api.app.routes:
        # the demo (dev mode only), the reference page's own script and the console's API
        # (on with CREDITSTREAM_CONSOLE=1) are not the product's API
        if isinstance(route, (Route, WebSocketRoute)) and not route.path.startswith(
            ("/demo", "/docs/", "/console/")
        ):
            assert route.path in doc["paths"], route.path


# --- G7: isolation -------------------------------------------------------------------------


async def test_user_token_is_confined_to_its_account(api: ApiClient) -> None:
    h = api.server()
    for account in ("mine", "theirs"):
        await api.http.put(f"/v1/accounts/{account}", headers=h)
    theirs_hold = (
        await api.http.post("/v1/holds", headers=h, json={"account_id": "theirs", "amount": 1})
    ).json()
    me = api.user("mine")
    assert (await api.http.get("/v1/accounts/mine", headers=me)).status_code == 200
    forbidden = [
        await api.http.get("/v1/accounts/theirs", headers=me),
        await api.http.get("/v1/accounts/theirs/entries", headers=me),
        await api.http.get("/v1/accounts/theirs/events", headers=me),
        await api.http.post("/v1/holds", headers=me, json={"account_id": "theirs", "amount": 1}),
        await api.http.post("/v1/accounts/theirs/grants", headers=me, json={"amount": 5}),
        await api.http.post("/v1/accounts/mine/grants", headers=me, json={"amount": 5}),
        await api.http.get(f"/v1/holds/{theirs_hold['hold']['hold_id']}", headers=me),
        await api.http.post(f"/v1/holds/{theirs_hold['hold']['hold_id']}/release", headers=me),
        await api.http.post("/v1/tokens", headers=me, json={"account_id": "theirs"}),
    ]
    assert [r.status_code for r in forbidden] == [403] * len(forbidden)
    assert all(r.json()["error"]["code"] == "forbidden" for r in forbidden)
    own = await api.http.post("/v1/holds", headers=me, json={"amount": 1})
    assert own.status_code == 201 and own.json()["hold"]["account_id"] == "mine"
    theirs = (await api.http.get("/v1/accounts/theirs", headers=h)).json()
    assert (theirs["balance"], theirs["held"]) == (28, 1)


@pytest.mark.parametrize(
    "header, code",
    [
        (None, "unauthorized"),
        ("Bearer", "unauthorized"),
        ("Bearer garbage.token.value", "invalid_token"),
        ("Bearer sk_not_a_real_key", "invalid_key"),
        ("Basic dXNlcjpwYXNz", "unauthorized"),
    ],
)
async def test_missing_or_garbled_credentials_are_401(
    api: ApiClient, header: str | None, code: str
) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = await api.http.get("/v1/accounts/anyone", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code


async def test_expired_token_is_401(api: ApiClient, clock: MutableClock) -> None:
    token, _ = api.ctx.signer.issue("late", clock.now(), 60)
    clock.advance(seconds=61)
    response = await api.http.get("/v1/accounts/late", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_expired"


async def test_token_endpoint_issues_working_tokens(api: ApiClient) -> None:
    issued = await api.http.post(
        "/v1/tokens", headers=api.server(), json={"account_id": "browser-user", "ttl_seconds": 600}
    )
    assert issued.status_code == 200
    token = issued.json()["token"]
    assert issued.json()["expires_at"].endswith("Z")
    await api.http.put("/v1/accounts/browser-user", headers=api.server())
    mine = await api.http.get(
        "/v1/accounts/browser-user", headers={"Authorization": f"Bearer {token}"}
    )
    assert mine.status_code == 200


# --- G8: bad input -------------------------------------------------------------------------

BAD_HOLDS: list[tuple[str, Any, int]] = [
    ("malformed json", b'{"account_id": "victim", "amount": ', 400),
    ("invalid utf-8", b'{"account_id": "victim", "amount": 1, "ref": "\xff\xfe"}', 400),
    ("json array", b'[{"account_id": "victim", "amount": 1}]', 422),
    ("string amount", {"account_id": "victim", "amount": "5"}, 422),
    ("float amount", {"account_id": "victim", "amount": 1.5}, 422),
    ("bool amount", {"account_id": "victim", "amount": True}, 422),
    ("zero amount", {"account_id": "victim", "amount": 0}, 422),
    ("negative amount", {"account_id": "victim", "amount": -1}, 422),
    ("huge amount", {"account_id": "victim", "amount": 2**63}, 422),
    (
        "unknown model",
        {"account_id": "victim", "price": {"operation": "image", "model": "Dall-E 9"}},
        422,
    ),
    (
        "model of another operation",
        {"account_id": "victim", "price": {"operation": "image", "model": "Music 1.5"}},
        422,
    ),
    ("invalid account id", {"account_id": "bad id/../x", "amount": 1}, 422),
    (
        "amount and price",
        {"account_id": "victim", "amount": 1, "price": {"operation": "audio"}},
        422,
    ),
    ("unknown field", {"account_id": "victim", "amount": 1, "amonut": 2}, 422),
    ("NaN", b'{"account_id": "victim", "amount": NaN}', 400),
    ("65 KiB body", {"account_id": "victim", "amount": 1, "ref": "x" * (65 * 1024)}, 413),
]


@pytest.mark.parametrize("case, body, status", BAD_HOLDS, ids=[c[0] for c in BAD_HOLDS])
async def test_bad_input_is_a_4xx_and_writes_nothing(
    api: ApiClient, case: str, body: Any, status: int
) -> None:
    h = api.server()
    await api.http.put("/v1/accounts/victim", headers=h)
    before = await journal_state(api, "victim")
    if isinstance(body, bytes):
        response = await api.http.post("/v1/holds", headers=h, content=body)
    else:
        response = await api.http.post("/v1/holds", headers=h, json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"]
    assert await journal_state(api, "victim") == before


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/accounts/victim/grants", {"amount": 0}),
        ("/v1/accounts/victim/grants", {"amount": 10**13}),
        ("/v1/accounts/victim/grants", {"amount": 5, "expires_at": "yesterday"}),
        ("/v1/accounts/victim/grants", {"amount": 5, "expires_at": "2001-01-01T00:00:00Z"}),
        ("/v1/accounts/victim/grants", {"amount": 5, "plan": "pro"}),
        ("/v1/accounts/victim/charges", {"amount": -3}),
        ("/v1/accounts/victim/charges", {}),
        ("/v1/accounts/victim/charges", {"price": {"operation": "teleport"}}),
        ("/v1/holds/hold_missing/capture", {"amount": 1}),
        ("/v1/quote", {"operation": "video", "model": "Gen-4 Aleph", "params": {"duration": 5}}),
        ("/v1/tokens", {"account_id": ""}),
    ],
)
async def test_bad_input_on_other_routes(api: ApiClient, path: str, body: Any) -> None:
    h = api.server()
    await api.http.put("/v1/accounts/victim", headers=h)
    before = await journal_state(api, "victim")
    response = await api.http.post(path, headers=h, json=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["message"]
    assert await journal_state(api, "victim") == before


async def test_unknown_route_and_method_are_json(api: ApiClient) -> None:
    missing = await api.http.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = await api.http.delete("/v1/pricing")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


async def test_bad_query_parameters(api: ApiClient) -> None:
    h = api.server()
    await api.http.put("/v1/accounts/victim", headers=h)
    for query in (
        "entries?limit=abc",
        "entries?limit=0",
        "events?after_seq=-1",
        "usage?period=year",
        "jobs?status=weird",
    ):
        response = await api.http.get(f"/v1/accounts/victim/{query}", headers=h)
        assert response.status_code == 422, query
