"""Every seed flow on creditstream, step by step as docs/SEED-MAPPING.md describes it.

Seeds 002, 003 and 004 document client code, not HTTP paths: their flows are walked here on the
v1 API. Seeds 000 and 001 document HTTP routes: their shapes, auth, wallet lowercasing and trial
expiry are checked here in-process (the simulated provider cannot call back into an in-process
app, so the tests report the jobs' outcomes as an in-house worker would); the live runs of their
JavaScript are in test_seed_clients.py. Everything in-process runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from api.routes.seeds import seed_001 as routes_seed
from core.signatures import sign
from providers import media
from providers.results import data_url
from tests.conftest import ApiClient
from tests.support import MutableClock

BFL_SECRET = "whsec-seed-003-bfl-secret-for-the-webhook"
WALLET = "0xAbCdEf0123456789abcdef0123456789ABCDEF01"
LOWER = WALLET.lower()
OTHER_WALLET = "0x1111111111111111111111111111111111111111"
HAILUO_1080P_6S = {
    "operation": "video",
    "model": "MiniMax-Hailuo-02",
    "params": {"resolution": "1080P", "duration": 6},
}
FLUX_DEV = {"operation": "image", "model": "FLUX.1 [dev]"}


@pytest.fixture
async def swept_api(api_factory: Callable[..., Any], database_url: str) -> ApiClient:
    """The API with its sweeper running (timeouts) and a webhook secret for BFL (seed 003)."""
    client: ApiClient = await api_factory(
        database_url, run_sweeper=True, webhook_secrets={"bfl": BFL_SECRET}
    )
    return client


async def entries_of(api: ApiClient, account: str) -> list[dict[str, Any]]:
    response = await api.http.get(f"/v1/accounts/{account}/entries?limit=500", headers=api.server())
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


async def snapshot(api: ApiClient, account: str) -> dict[str, Any]:
    response = await api.http.get(f"/v1/accounts/{account}", headers=api.server())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def grant(api: ApiClient, account: str, amount: int, reason: str = "purchase") -> None:
    response = await api.http.post(
        f"/v1/accounts/{account}/grants",
        headers=api.server(),
        json={"amount": amount, "reason": reason},
    )
    assert response.status_code == 201, response.text


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


def bfl_callback(body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    return raw, {
        "X-Signature": sign(BFL_SECRET, raw, int(time.time())),
        "Content-Type": "application/json",
    }


# --- seed 002: validate → reserve → confirm / rollback -----------------------------------------


async def test_seed002_validate_reserve_confirm_rollback(api: ApiClient) -> None:
    h = api.server()
    await grant(api, "director", 2000)  # a paid grant: 2028 credits, no trial day limit
    me = api.user("director")
    # useCredits' creditBalance (GET /api/auth/me)
    assert (await api.http.get("/v1/accounts/director", headers=me)).json()["available"] == 2028
    # 1. validateVideoCredits('minimax', 'MiniMax-Hailuo-02', '1080P', 6)
    validation = await api.http.post("/v1/quote", headers=me, json=HAILUO_1080P_6S)
    assert validation.json() == {
        "cost": 1100,
        "account_id": "director",
        "available": 2028,
        "affordable": True,
        "shortfall": 0,
    }
    # 2. reserveCredits({amount: 1100, reason: 'video-generation', metadata: {model}})
    reserve = {
        "price": HAILUO_1080P_6S,
        "ref": "video-generation",
        "metadata": {"model": "MiniMax-Hailuo-02"},
    }
    key = {"Idempotency-Key": "reserve-1"}
    reservation = await api.http.post("/v1/holds", headers={**me, **key}, json=reserve)
    assert reservation.status_code == 201, reservation.text
    hold = reservation.json()["hold"]
    transaction_id = hold["hold_id"]
    assert hold["amount"] == 1100 and hold["status"] == "open"
    assert hold["price"] == {
        "operation": "video",
        "model": "MiniMax-Hailuo-02",
        "params": {"resolution": "1080P", "duration": 6},
    }
    assert hold["metadata"] == {"model": "MiniMax-Hailuo-02"}
    assert reservation.json()["account"]["available"] == 928  # the optimistic update
    retried = await api.http.post("/v1/holds", headers={**me, **key}, json=reserve)
    assert retried.headers["Idempotent-Replayed"] == "true"
    assert retried.json()["hold"]["hold_id"] == transaction_id
    # 4. confirmCreditTransaction({transactionId, success: true}): the backend captures
    assert (
        await api.http.post(f"/v1/holds/{transaction_id}/capture", headers=me)
    ).status_code == 403
    confirmed = await api.http.post(f"/v1/holds/{transaction_id}/capture", headers=h)
    assert confirmed.status_code == 200
    assert confirmed.json()["hold"]["captured_amount"] == 1100
    assert confirmed.json()["account"]["balance"] == 928
    again = await api.http.post(f"/v1/holds/{transaction_id}/capture", headers=h)
    assert again.status_code == 200 and again.json()["hold"]["status"] == "captured"
    # the next 1080P video: validation fails with the shortfall, the reservation with 402
    short = (await api.http.post("/v1/quote", headers=me, json=HAILUO_1080P_6S)).json()
    assert (short["affordable"], short["shortfall"]) == (False, 172)
    refused = await api.http.post("/v1/holds", headers=me, json=reserve)
    assert refused.status_code == 402
    assert refused.json()["error"]["message"] == (
        "Insufficient credits. You need 172 more credits for this."
    )
    # a cheaper one, whose generation fails: confirm({success: false}) rolls it back
    cheaper = {**HAILUO_1080P_6S, "params": {"resolution": "512P", "duration": 6}}
    second = await api.http.post("/v1/holds", headers=me, json={"price": cheaper})
    assert second.json()["hold"]["amount"] == 320
    assert second.json()["account"]["available"] == 608
    second_id = second.json()["hold"]["hold_id"]
    rolled_back = await api.http.post(
        f"/v1/holds/{second_id}/release", headers=me, json={"reason": "generation_failed"}
    )
    assert rolled_back.status_code == 200
    assert rolled_back.json()["hold"]["release_reason"] == "generation_failed"
    assert rolled_back.json()["account"]["available"] == 928
    late = await api.http.post(f"/v1/holds/{second_id}/capture", headers=h)
    assert late.status_code == 409 and late.json()["error"]["code"] == "invalid_state"
    # MiniMax-Hailuo-02 1080P 10s is not offered
    unsupported = await api.http.post(
        "/v1/quote",
        headers=me,
        json={**HAILUO_1080P_6S, "params": {"resolution": "1080P", "duration": 10}},
    )
    assert unsupported.status_code == 422
    assert unsupported.json()["error"]["code"] == "unsupported_option"
    # POST /api/credits/me (the client sets its balance) has no counterpart
    assert (
        await api.http.post("/v1/accounts/director/grants", headers=me, json={"amount": 5000})
    ).status_code == 403
    assert [e["type"] for e in await entries_of(api, "director")] == [
        "grant",
        "grant",
        "hold",
        "capture",
        "hold",
        "release",
    ]
    account = await snapshot(api, "director")
    assert (account["balance"], account["held"]) == (928, 0)


async def test_seed002_and_003_unconfirmed_reservation_times_out(
    swept_api: ApiClient, clock: MutableClock
) -> None:
    api = swept_api
    await grant(api, "wanderer", 500)
    me = api.user("wanderer")
    reservation = await api.http.post(
        "/v1/holds", headers=me, json={"price": FLUX_DEV, "ref": "task-lost"}
    )
    hold = reservation.json()["hold"]
    assert hold["expires_at"] == "2030-01-15T12:05:00Z"  # the default 300 s: "5 minutos"
    clock.advance(seconds=301)

    async def expired() -> dict[str, Any] | None:
        got: dict[str, Any] = (
            await api.http.get(f"/v1/holds/{hold['hold_id']}", headers=me)
        ).json()
        return got if got["status"] == "expired" else None

    timed_out = await eventually(expired)
    assert timed_out and timed_out["release_reason"] == "timeout"
    late = await api.http.post(f"/v1/holds/{hold['hold_id']}/capture", headers=api.server())
    assert late.status_code == 409
    account = await snapshot(api, "wanderer")
    assert (account["balance"], account["held"]) == (528, 0)


# --- seed 003: reserve → poll or webhook → confirm / refund / 5-minute timeout -----------------


async def test_seed003_reserve_then_poll_confirm_or_refund(api: ApiClient) -> None:
    h = api.server()
    await grant(api, "artist", 500)
    me = api.user("artist")

    async def reserve(task_ref: str) -> str:
        response = await api.http.post(
            "/v1/holds", headers=me, json={"price": FLUX_DEV, "ref": task_ref}
        )
        assert response.status_code == 201, response.text
        assert response.json()["hold"]["amount"] == 90
        hold_id: str = response.json()["hold"]["hold_id"]
        return hold_id

    # Cenário 1: polling sees "ready" → confirmSpendCredits; the webhook confirms again: once
    ok = await reserve("task456")
    assert (await api.http.post(f"/v1/holds/{ok}/capture", headers=h)).status_code == 200
    by_webhook = await api.http.post(f"/v1/holds/{ok}/capture", headers=h)
    assert by_webhook.status_code == 200 and by_webhook.json()["hold"]["captured_amount"] == 90
    # Cenário 2: the generation API answers 500 → refundCredits
    api_error = await reserve("no-task")
    refunded = await api.http.post(
        f"/v1/holds/{api_error}/release", headers=me, json={"reason": "provider_error"}
    )
    assert refunded.status_code == 200 and refunded.json()["account"]["held"] == 0
    # Cenário 3: polling sees "error" → refundCredits; a late "ready" cannot charge it now
    failed = await reserve("task789")
    assert (
        await api.http.post(
            f"/v1/holds/{failed}/release", headers=h, json={"reason": "generation_failed"}
        )
    ).status_code == 200
    assert (await api.http.post(f"/v1/holds/{failed}/capture", headers=h)).status_code == 409
    captures = [e for e in await entries_of(api, "artist") if e["type"] == "capture"]
    assert [(c["amount"], c["ref"]) for c in captures] == [(90, "task456")]
    releases = [e["reason"] for e in await entries_of(api, "artist") if e["type"] == "release"]
    assert releases == ["provider_error", "generation_failed"]
    account = await snapshot(api, "artist")
    assert (account["balance"], account["held"], account["available"]) == (438, 0, 438)


async def test_seed003_webhook_confirms_refunds_and_times_out(
    swept_api: ApiClient, clock: MutableClock
) -> None:
    api = swept_api
    h = api.server()
    await grant(api, "painter", 500)
    me = api.user("painter")

    async def reserve(task_id: str) -> dict[str, Any]:
        response = await api.http.post(
            "/v1/jobs",
            headers=h,
            json={
                "account_id": "painter",
                **FLUX_DEV,
                "provider": "bfl",
                "provider_task_id": task_id,
            },
        )
        assert response.status_code == 202, response.text
        job: dict[str, Any] = response.json()["job"]
        assert job["status"] == "processing" and job["cost"] == 90
        return job

    async def webhook(body: dict[str, Any]) -> Any:
        raw, headers = bfl_callback(body)
        return await api.http.post("/v1/webhooks/providers/bfl", content=raw, headers=headers)

    # SUCCESS via webhook: the image is stored, then the reservation is confirmed
    ok = await reserve("task456")
    polled = (await api.http.get(f"/v1/jobs/{ok['job_id']}", headers=me)).json()
    assert polled["status"] == "processing"
    done = await webhook(
        {
            "task_id": "task456",
            "status": "SUCCESS",
            "result": {"sample": data_url(media.png(3), "image/png")},
        }
    )
    assert done.status_code == 200 and done.json()["status"] == "processed"
    assert (
        await webhook(
            {
                "task_id": "task456",
                "status": "SUCCESS",
                "result": {"sample": data_url(media.png(3), "image/png")},
            }
        )
    ).json()["status"] == "duplicate"
    polled = (await api.http.get(f"/v1/jobs/{ok['job_id']}", headers=me)).json()
    assert polled["status"] == "success" and polled["result_url"].endswith("/result.png")
    # FAILED via webhook: refunded in full
    bad = await reserve("task789")
    assert (
        await webhook({"task_id": "task789", "status": "FAILED", "error": "Invalid prompt"})
    ).status_code == 200
    polled = (await api.http.get(f"/v1/jobs/{bad['job_id']}", headers=me)).json()
    assert (polled["status"], polled["error"]) == ("failed", "Invalid prompt")
    # no answer within 5 minutes: failed and refunded; a late success charges nothing
    lost = await reserve("task999")
    clock.advance(seconds=301)

    async def timed_out() -> dict[str, Any] | None:
        got: dict[str, Any] = (await api.http.get(f"/v1/jobs/{lost['job_id']}", headers=me)).json()
        return got if got["status"] == "failed" else None

    failed = await eventually(timed_out)
    assert failed and "timed out" in failed["error"]
    late = await webhook(
        {
            "task_id": "task999",
            "status": "SUCCESS",
            "result": {"sample": data_url(media.png(4), "image/png")},
        }
    )
    assert late.status_code == 409
    entries = await entries_of(api, "painter")
    assert [(e["type"], e["amount"]) for e in entries if e["type"] == "capture"] == [
        ("capture", 90)
    ]
    assert sorted(e["reason"] for e in entries if e["type"] == "release") == [
        "job_failed",
        "timeout",
    ]
    account = await snapshot(api, "painter")
    assert (account["balance"], account["held"]) == (438, 0)


# --- seed 004: canPerformAction → trackUsageAndDeductCredits → usage stats ---------------------

SEED004_COSTS = {
    "script_generation": 1,
    "voice_creation": 5,
    "video_processing": 2,
    "chat_refinement": 1,
}


async def test_seed004_check_deduct_and_usage_stats(api: ApiClient) -> None:
    h = api.server()
    await grant(api, "coach", 100)
    seq = (await snapshot(api, "coach"))["seq"]
    for operation, cost in SEED004_COSTS.items():
        # 3. CreditsService.canPerformAction(userId, operation, accountLevel)
        check = (
            await api.http.post(
                "/v1/quote", headers=h, json={"account_id": "coach", "operation": operation}
            )
        ).json()
        assert (check["cost"], check["affordable"]) == (cost, True)
        # 4. the feature's work succeeds; 5. trackUsageAndDeductCredits
        charged = await api.http.post(
            "/v1/accounts/coach/charges",
            headers={**h, "Idempotency-Key": f"req-{operation}"},
            json={
                "price": {"operation": operation},
                "reason": operation,
                "ref": f"req-{operation}",
            },
        )
        assert charged.status_code == 201, charged.text
        assert charged.json()["charge"]["amount"] == cost
        # triggerUsageUpdate: the balance change is on the account's stream at once
        events = (
            await api.http.get(
                f"/v1/accounts/coach/events?after_seq={seq}", headers=api.user("coach")
            )
        ).json()
        assert [(e["type"], e["delta"]) for e in events["events"]] == [("balance.updated", -cost)]
        seq = events["next_after_seq"]
    # a retried deduction (same Idempotency-Key) deducts once
    retry = await api.http.post(
        "/v1/accounts/coach/charges",
        headers={**h, "Idempotency-Key": "req-voice_creation"},
        json={
            "price": {"operation": "voice_creation"},
            "reason": "voice_creation",
            "ref": "req-voice_creation",
        },
    )
    assert retry.headers["Idempotent-Replayed"] == "true"
    # GET /api/usage/stats
    stats = (
        await api.http.get("/v1/accounts/coach/usage?period=day", headers=api.user("coach"))
    ).json()
    assert stats["credits_used"] == 9
    assert stats["operations"] == {
        op: {"count": 1, "credits": cost} for op, cost in SEED004_COSTS.items()
    }
    for period in ("week", "month"):
        assert (await api.http.get(f"/v1/accounts/coach/usage?period={period}", headers=h)).json()[
            "credits_used"
        ] == 9
    # deducting is the backend's: the user's own token may not charge
    assert (
        await api.http.post(
            "/v1/accounts/coach/charges", headers=api.user("coach"), json={"amount": 1}
        )
    ).status_code == 403
    assert (await snapshot(api, "coach"))["balance"] == 128 - 9


async def test_seed004_cannot_perform_without_credits(api: ApiClient) -> None:
    h = api.server()
    await grant(api, "broke", 1)  # paid: 29 credits
    assert (
        await api.http.post("/v1/accounts/broke/charges", headers=h, json={"amount": 26})
    ).status_code == 201
    check = (
        await api.http.post(
            "/v1/quote", headers=h, json={"account_id": "broke", "operation": "voice_creation"}
        )
    ).json()
    assert {k: v for k, v in check.items() if k != "feature_limit"} == {
        "cost": 5,
        "account_id": "broke",
        "available": 3,
        "affordable": False,
        "shortfall": 2,
    }
    assert check["feature_limit"]["remaining"] == 1  # the credits are short, not the limit
    # the route answers 402 and performs nothing; a deduction anyway is refused atomically
    before = await entries_of(api, "broke")
    refused = await api.http.post(
        "/v1/accounts/broke/charges",
        headers=h,
        json={"price": {"operation": "voice_creation"}, "reason": "voice_creation"},
    )
    assert refused.status_code == 402
    assert refused.json()["error"]["shortfall"] == 2
    assert await entries_of(api, "broke") == before
    stats = (await api.http.get("/v1/accounts/broke/usage?period=day", headers=h)).json()
    assert stats["operations"] == {"other": {"count": 1, "credits": 26}}


# --- seed 000 routes -------------------------------------------------------------------------


async def report(api: ApiClient, job_id: str, status: str) -> None:
    """The outcome, reported as an in-house worker does (the simulated provider's callback
    cannot reach an in-process app)."""
    body: dict[str, Any] = (
        {"status": "success", "result_url": data_url(media.video_placeholder(1), "image/svg+xml")}
        if status == "success"
        else {"status": "failed", "error": "policy violation"}
    )
    response = await api.http.post(f"/v1/jobs/{job_id}/result", headers=api.server(), json=body)
    assert response.status_code == 200, response.text


async def test_seed000_routes(api: ApiClient) -> None:
    me = api.user("viewer")
    assert (await api.http.post("/api/v1/video/generate", json={})).status_code == 401
    started = await api.http.post(
        "/api/v1/video/generate",
        headers=me,
        json={"prompt": "a cat", "simulate": "hang", "style": {"fps": 24}},
    )
    assert started.status_code == 202
    assert set(started.json()) == {"id"}
    task_id = started.json()["id"]
    async with api.ctx.db.read() as uow:  # the whole request body is the job's input
        job = await uow.jobs.get(task_id)
    assert job is not None and job.operation == "video" and job.provider == "simulated"
    assert job.input == {"prompt": "a cat", "simulate": "hang", "style": {"fps": 24}}
    history = await api.http.get(f"/api/v1/history/{task_id}", headers=me)
    assert history.json() == {
        "id": task_id,
        "status": "processing",
        "resultUrl": None,
        "errorMessage": None,
    }
    profile = (await api.http.get("/api/v1/user/profile", headers=me)).json()
    assert {k: profile[k] for k in ("account_id", "balance", "held", "available", "plan")} == {
        "account_id": "viewer",
        "balance": 28,
        "held": 2,
        "available": 26,
        "plan": None,
    }
    # charged only on success
    await report(api, task_id, "success")
    done = (await api.http.get(f"/api/v1/history/{task_id}", headers=me)).json()
    assert done["status"] == "success" and done["errorMessage"] is None
    assert done["resultUrl"].startswith("/results/")  # relative: never from the Host header
    profile = (await api.http.get("/api/v1/user/profile", headers=me)).json()
    assert (profile["balance"], profile["held"]) == (26, 0)
    failing = (
        await api.http.post("/api/v1/video/generate", headers=me, json={"simulate": "hang"})
    ).json()["id"]
    await report(api, failing, "failed")
    assert (await api.http.get(f"/api/v1/history/{failing}", headers=me)).json() == {
        "id": failing,
        "status": "failed",
        "resultUrl": None,
        "errorMessage": "policy violation",
    }
    assert (await api.http.get("/api/v1/user/profile", headers=me)).json()["balance"] == 26
    # isolation and errors
    other = api.user("someone-else")
    assert (await api.http.get(f"/api/v1/history/{task_id}", headers=other)).status_code == 403
    assert (await api.http.get(f"/api/v1/history/{task_id}")).status_code == 401
    assert (await api.http.get("/api/v1/history/job_missing", headers=me)).status_code == 404
    assert (await api.http.get("/api/v1/user/profile")).status_code == 401
    bad = await api.http.post("/api/v1/video/generate", headers=me, json={"delay_ms": "soon"})
    assert bad.status_code == 422
    assert (
        await api.http.post("/api/v1/video/generate", headers=me, json=[1, 2])
    ).status_code == 422
    assert (
        await api.http.post(
            "/api/v1/video/generate", headers=me, json={"account_id": "someone-else"}
        )
    ).status_code == 403


async def test_seed000_routes_with_a_server_key_and_idempotency(api: ApiClient) -> None:
    h = api.server()
    missing = await api.http.post("/api/v1/video/generate", headers=h, json={"prompt": "x"})
    assert missing.status_code == 422
    keyed = {**h, "Idempotency-Key": "gen-1"}
    body = {"account_id": WALLET, "prompt": "x", "simulate": "hang"}
    first = await api.http.post("/api/v1/video/generate", headers=keyed, json=body)
    second = await api.http.post("/api/v1/video/generate", headers=keyed, json=body)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json() and second.headers["Idempotent-Replayed"] == "true"
    assert [e["type"] for e in await entries_of(api, LOWER)] == ["grant", "hold"]
    assert (await api.http.get(f"/api/v1/history/{first.json()['id']}", headers=h)).json()[
        "status"
    ] == "processing"
    assert (await api.http.get("/api/v1/user/profile", headers=h)).status_code == 422
    profile = await api.http.get(f"/api/v1/user/profile?account_id={WALLET}", headers=h)
    assert profile.json()["account_id"] == LOWER and profile.json()["held"] == 2
    # a user token of the wallet, whatever its case, sees the same account
    assert (await api.http.get("/api/v1/user/profile", headers=api.user(WALLET))).json()[
        "account_id"
    ] == LOWER
    # a new account's first profile read creates it with its trial, as the points route does
    fresh = await api.http.get("/api/v1/user/profile", headers=api.user("newcomer"))
    assert fresh.status_code == 200 and fresh.json()["balance"] == 28


# --- seed 001 routes -------------------------------------------------------------------------


async def test_seed001_award(api: ApiClient) -> None:
    h = api.server()
    by_tier = await api.http.post(
        "/api/payments/award", headers=h, json={"walletAddress": WALLET, "tier": 5}
    )
    assert by_tier.status_code == 200
    assert by_tier.json() == {
        "walletAddress": LOWER,
        "awardedPoints": 30,
        "newTotalPoints": 58,
        "contentType": None,
        "contentCredits": None,
    }
    by_points = await api.http.post(
        "/api/payments/award", headers=h, json={"walletAddress": LOWER, "points": 150}
    )
    assert (by_points.json()["awardedPoints"], by_points.json()["newTotalPoints"]) == (150, 208)
    by_name = await api.http.post(
        "/api/payments/award", headers=h, json={"walletAddress": WALLET, "tier": "growth"}
    )
    assert by_name.json()["awardedPoints"] == 80
    keyed = {**h, "Idempotency-Key": "pay_123"}
    once = [
        await api.http.post(
            "/api/payments/award", headers=keyed, json={"walletAddress": WALLET, "points": 10}
        )
        for _ in range(2)
    ]
    assert once[0].json() == once[1].json() and once[0].json()["newTotalPoints"] == 298
    grants = [e for e in await entries_of(api, LOWER) if e["type"] == "grant"]
    assert [(g["amount"], g["reason"]) for g in grants] == [
        (28, "trial"),
        (30, "plan:starter"),
        (150, "points"),
        (80, "plan:growth"),
        (10, "points"),
    ]
    assert grants[1]["metadata"]["source"] == "api/payments/award"
    # awarding needs a server key: never a browser's word
    assert (
        await api.http.post("/api/payments/award", json={"walletAddress": WALLET, "points": 5})
    ).status_code == 401
    assert (
        await api.http.post(
            "/api/payments/award",
            headers=api.user(WALLET),
            json={"walletAddress": WALLET, "points": 5},
        )
    ).status_code == 403
    for body, code in [
        ({"walletAddress": WALLET, "tier": 5, "points": 5}, "validation_error"),
        ({"walletAddress": WALLET}, "validation_error"),
        ({"walletAddress": WALLET, "tier": 7}, "unknown_plan"),
        ({"walletAddress": WALLET, "points": 0}, "validation_error"),
        ({"walletAddress": WALLET, "points": "5"}, "validation_error"),
        ({"walletAddress": WALLET, "points": 5, "bonus": 1}, "validation_error"),
        ({"walletAddress": "not a wallet", "points": 5}, "invalid_account_id"),
    ]:
        refused = await api.http.post("/api/payments/award", headers=h, json=body)
        assert refused.status_code == 422, (body, refused.text)
        assert refused.json()["error"]["code"] == code, body
    assert (await snapshot(api, LOWER))["balance"] == 298


async def test_seed001_points_and_trial_expiry(api: ApiClient, clock: MutableClock) -> None:
    first = await api.http.get(f"/api/users/{WALLET}/points", headers=api.user(WALLET))
    assert first.status_code == 200
    assert first.json() == {
        "walletAddress": LOWER,
        "points": 28,
        "trial_expires_at": "2030-01-22T12:00:00Z",
    }
    assert (await api.http.get(f"/api/users/{WALLET}/points")).status_code == 401
    assert (
        await api.http.get(f"/api/users/{WALLET}/points", headers=api.user(OTHER_WALLET))
    ).status_code == 403
    assert (
        await api.http.get("/api/users/not%20a%20wallet/points", headers=api.server())
    ).status_code == 422
    await api.http.post(
        "/api/payments/award",
        headers=api.server(),
        json={"walletAddress": OTHER_WALLET, "points": 10},
    )
    clock.advance(days=8)
    # the points route applies the trial's expiry before answering (no sweeper runs here)
    expired = await api.http.get(f"/api/users/{LOWER}/points", headers=api.user(LOWER))
    assert expired.json()["points"] == 0
    entries = await entries_of(api, LOWER)
    assert [(e["type"], e["amount"]) for e in entries] == [("grant", 28), ("expire", 28)]
    # paid points outlive the trial
    paid = await api.http.get(f"/api/users/{OTHER_WALLET}/points", headers=api.server())
    assert paid.json()["points"] == 10


async def finish_next_job(api: ApiClient, account: str, status: str) -> None:
    async def processing() -> list[dict[str, Any]]:
        response = await api.http.get(
            f"/v1/accounts/{account}/jobs?status=processing", headers=api.server()
        )
        jobs: list[dict[str, Any]] = (
            response.json().get("jobs", []) if response.status_code == 200 else []
        )
        return jobs

    jobs = await eventually(processing)
    assert jobs, f"no job of {account} to finish"
    await report(api, jobs[0]["job_id"], status)


async def test_seed001_generate_waits_for_the_job(api: ApiClient) -> None:
    me = api.user(WALLET)
    body = {"walletAddress": WALLET, "script": "An educational tutorial", "simulate": "hang"}
    answer, _ = await asyncio.gather(
        api.http.post("/api/generate", headers=me, json=body),
        finish_next_job(api, LOWER, "success"),
    )
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert {k: result[k] for k in ("status", "creditsDeducted", "remainingCredits", "message")} == {
        "status": "completed",
        "creditsDeducted": 2,
        "remainingCredits": 26,
        "message": "Video generated successfully",
    }
    assert result["jobId"] == result["videoId"] and result["jobId"].startswith("job_")
    audio, _ = await asyncio.gather(
        api.http.post("/api/generate/audio", headers=me, json=body),
        finish_next_job(api, LOWER, "success"),
    )
    assert audio.json()["creditsDeducted"] == 1 and audio.json()["remainingCredits"] == 25
    failed, _ = await asyncio.gather(
        api.http.post("/api/generate/audio", headers=me, json=body),
        finish_next_job(api, LOWER, "failed"),
    )
    assert failed.status_code == 502
    assert failed.json()["error"]["code"] == "generation_failed"
    assert {k: failed.json()[k] for k in ("status", "creditsDeducted", "remainingCredits")} == {
        "status": "failed",
        "creditsDeducted": 0,
        "remainingCredits": 25,
    }
    account = await snapshot(api, LOWER)
    assert (account["balance"], account["held"]) == (25, 0)
    jobs = (await api.http.get(f"/v1/accounts/{LOWER}/jobs", headers=me)).json()["jobs"]
    assert sorted((j["operation"], j["status"]) for j in jobs) == [
        ("audio", "failed"),
        ("audio", "success"),
        ("video", "success"),
    ]


async def test_seed001_generate_still_processing_and_daily_limit(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes_seed, "GENERATE_WAIT_S", 0.2)
    me = api.user(WALLET)
    body = {"walletAddress": WALLET, "script": "Slow", "simulate": "hang"}
    for _ in range(2):
        pending = await api.http.post("/api/generate", headers=me, json=body)
        assert pending.status_code == 202
        assert pending.json()["status"] == "processing"
        assert pending.json()["creditsDeducted"] == 0  # held, charged only on success
    history = await api.http.get(f"/api/v1/history/{pending.json()['jobId']}", headers=me)
    assert history.json()["status"] == "processing"
    # a trial spends or holds at most 4 credits a day
    limited = await api.http.post("/api/generate", headers=me, json=body)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "daily_limit_exceeded"
    assert (await snapshot(api, LOWER))["held"] == 4


async def test_seed001_generate_insufficient_credits(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes_seed, "GENERATE_WAIT_S", 0.2)
    h = api.server()
    await api.http.post(
        "/api/payments/award", headers=h, json={"walletAddress": WALLET, "points": 1}
    )  # paid: no daily limit
    assert (
        await api.http.post(f"/v1/accounts/{LOWER}/charges", headers=h, json={"amount": 28})
    ).status_code == 201
    before = await entries_of(api, LOWER)
    me = api.user(WALLET)
    for headers in (me, {**me, "Idempotency-Key": "gen-402"}, {**me, "Idempotency-Key": "gen-402"}):
        refused = await api.http.post(
            "/api/generate", headers=headers, json={"walletAddress": WALLET, "script": "x"}
        )
        assert refused.status_code == 402
        body = refused.json()
        assert body["message"] == "Insufficient credits. You need 1 more credits for this."
        assert body["error"] == {
            "code": "insufficient_credits",
            "message": body["message"],
            "required": 2,
            "available": 1,
            "shortfall": 1,
        }
        assert (body["creditsDeducted"], body["remainingCredits"], body["shortfall"]) == (0, 1, 1)
    assert refused.headers["Idempotent-Replayed"] == "true"
    audio = await api.http.post(
        "/api/generate/audio",
        headers=me,
        json={"walletAddress": WALLET, "script": "x", "simulate": "hang"},
    )
    assert audio.status_code == 202  # 1 credit is affordable: held while it runs
    assert [e["type"] for e in await entries_of(api, LOWER)] == [e["type"] for e in before] + [
        "hold"
    ]


async def test_seed001_generate_auth_and_validation(api: ApiClient) -> None:
    body = {"walletAddress": WALLET, "script": "x", "simulate": "hang"}
    assert (await api.http.post("/api/generate", json=body)).status_code == 401
    assert (
        await api.http.post("/api/generate", headers=api.user(OTHER_WALLET), json=body)
    ).status_code == 403
    assert (
        await api.http.post("/api/generate/audio", headers=api.user("someone"), json=body)
    ).status_code == 403
    me = api.user(LOWER)
    for bad in (
        {"walletAddress": WALLET},
        {"script": "x"},
        {**body, "script": ""},
        {**body, "voice": "alloy"},
        {**body, "walletAddress": 12},
        {**body, "simulate": "explode"},
    ):
        response = await api.http.post("/api/generate", headers=me, json=bad)
        assert response.status_code == 422, (bad, response.text)
    # nothing was created by any refusal
    assert (await api.http.get(f"/v1/accounts/{LOWER}", headers=me)).status_code == 404


async def test_seed_routes_are_in_the_openapi_document(api: ApiClient) -> None:
    doc = (await api.http.get("/openapi.json")).json()
    expected = {
        ("post", "/api/v1/video/generate"),
        ("get", "/api/v1/history/{id}"),
        ("get", "/api/v1/user/profile"),
        ("post", "/api/payments/award"),
        ("get", "/api/users/{walletAddress}/points"),
        ("post", "/api/generate"),
        ("post", "/api/generate/audio"),
    }
    for method, path in expected:
        assert method in doc["paths"].get(path, {}), (method, path)
    award = doc["paths"]["/api/payments/award"]["post"]
    assert award["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/SeedAwardBody"
    )
    schema = doc["components"]["schemas"]["SeedAwardBody"]
    assert set(schema["properties"]) == {"walletAddress", "tier", "points"}
    assert schema["additionalProperties"] is False
    assert doc["components"]["schemas"]["SeedGenerateBody"]["required"] == [
        "walletAddress",
        "script",
    ]
