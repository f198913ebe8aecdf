"""The operator console's security and actions, in-process on each database: off by default
(404), a one-time sign-in link (once, expires, stored hashed), the session cookie, CSRF refusal,
and every change recorded with the operator who made it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from cli import main
from storage.console_auth import issue_sign_in
from storage.tables import console_sessions, console_sign_ins, entries
from tests.conftest import ApiClient
from tests.support import MutableClock

LINK_TTL_S = 600


async def console_api(
    api_factory: Callable[..., Any], database_url: str, **settings: Any
) -> ApiClient:
    client: ApiClient = await api_factory(database_url, console=True, **settings)
    return client


async def sign_in_token(api: ApiClient, operator: str = "alice") -> str:
    now_s = api.ctx.service.now().timestamp()
    return await issue_sign_in(api.ctx.db, operator, now_s, LINK_TTL_S)


async def signed_in(api: ApiClient, operator: str = "alice") -> dict[str, str]:
    """Sign the client in through a link; the CSRF header its page would send."""
    token = await sign_in_token(api, operator)
    answer = await api.http.get(f"/console/sign-in?token={token}")
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console"
    session = await api.http.get("/console/api/session")
    assert session.status_code == 200, session.text
    assert session.json()["operator"] == operator
    return {"X-CSRF-Token": session.json()["csrf_token"]}


async def balance(api: ApiClient, account_id: str) -> int:
    answer = await api.http.get(f"/v1/accounts/{account_id}", headers=api.server())
    value: int = answer.json()["balance"]
    return value


async def operator_lines(api: ApiClient, account_id: str) -> list[tuple[str, str]]:
    """(type, operator) of the account's journal lines that name an operator."""
    async with api.ctx.db.read() as uow:
        rows = await uow.conn.execute(
            sa.select(entries.c.type, entries.c.metadata)
            .where(entries.c.account_id == account_id)
            .order_by(entries.c.seq)
        )
        found = []
        for row in rows:
            meta = row.metadata or {}
            operator = meta.get("operator") or (meta.get("metadata") or {}).get("operator")
            if operator:
                found.append((row.type, operator))
    return found


async def test_console_is_off_unless_enabled(api: ApiClient) -> None:
    for path in ("/console", "/console/api/session", "/console/sign-in?token=csi_x"):
        answer = await api.http.get(path)
        assert answer.status_code == 404, path
    answer = await api.http.post("/console/api/refunds", json={})
    assert answer.status_code == 404
    document = (await api.http.get("/openapi.json")).json()
    # the page is listed (it answers 404 while off); the console's own API is not
    assert [path for path in document["paths"] if path.startswith("/console")] == ["/console"]


async def test_sign_in_link_works_once_and_is_stored_hashed(
    api_factory: Callable[..., Any], database_url: str
) -> None:
    api = await console_api(api_factory, database_url)
    token = await sign_in_token(api)
    async with api.ctx.db.read() as uow:
        stored = (await uow.conn.execute(sa.select(console_sign_ins))).all()
    assert len(stored) == 1 and token not in repr(stored[0]) and stored[0].operator == "alice"

    first = await api.http.get(f"/console/sign-in?token={token}")
    assert first.status_code == 303
    cookie = first.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert "secure" not in cookie  # plain http here; https below
    session_id = api.http.cookies["creditstream_console"]
    async with api.ctx.db.read() as uow:
        sessions = (await uow.conn.execute(sa.select(console_sessions))).all()
    assert len(sessions) == 1 and session_id not in repr(sessions[0])

    again = await httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api.app), base_url="http://creditstream.test"
    ).get(f"/console/sign-in?token={token}")
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "sign_in_link_invalid"
    assert "set-cookie" not in again.headers
    for bad in ("", "csi_unknown", "x" * 5000, "csi_\x00"):
        answer = await api.http.get("/console/sign-in", params={"token": bad})
        assert answer.status_code == 401


async def test_sign_in_link_expires_after_ten_minutes(
    api_factory: Callable[..., Any], database_url: str, clock: MutableClock
) -> None:
    api = await console_api(api_factory, database_url)
    token = await sign_in_token(api)
    clock.advance(seconds=LINK_TTL_S + 1)
    answer = await api.http.get(f"/console/sign-in?token={token}")
    assert answer.status_code == 401


async def test_session_cookie_is_secure_over_https(
    api_factory: Callable[..., Any], database_url: str
) -> None:
    api = await console_api(api_factory, database_url)
    token = await sign_in_token(api)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api.app), base_url="https://creditstream.test"
    ) as https:
        answer = await https.get(f"/console/sign-in?token={token}")
    assert answer.status_code == 303
    assert "secure" in answer.headers["set-cookie"].lower()


async def test_session_expires_and_sign_out_ends_it(
    api_factory: Callable[..., Any], database_url: str, clock: MutableClock
) -> None:
    api = await console_api(api_factory, database_url)
    assert (await api.http.get("/console/api/session")).status_code == 401
    # a server key is no console session
    with_key = await api.http.get("/console/api/accounts/anyone", headers=api.server())
    assert with_key.status_code == 401
    csrf = await signed_in(api)
    assert (await api.http.post("/console/sign-out", json={})).status_code == 403  # no CSRF
    out = await api.http.post("/console/sign-out", json={}, headers=csrf)
    assert out.status_code == 200
    assert (await api.http.get("/console/api/session")).status_code == 401

    await signed_in(api)
    clock.advance(hours=12, seconds=1)
    assert (await api.http.get("/console/api/session")).status_code == 401


async def test_changes_without_the_csrf_token_are_refused_and_change_nothing(
    api_factory: Callable[..., Any], database_url: str
) -> None:
    api = await console_api(api_factory, database_url)
    await api.http.put("/v1/accounts/csrf-victim", headers=api.server())
    csrf = await signed_in(api)
    grant = {"amount": 500, "reason": "support"}
    path = "/console/api/accounts/csrf-victim/grants"
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": csrf["X-CSRF-Token"][:-1]}):
        answer = await api.http.post(path, json=grant, headers=headers)
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "csrf_token_invalid"
    for post in ("/console/api/refunds", "/console/api/holds/hld_x/release"):
        assert (await api.http.post(post, json={"reason": "x"})).status_code == 403
    assert (await api.http.post(path.replace("grants", "stream-ticket"))).status_code == 403
    assert await balance(api, "csrf-victim") == 28

    # another session's token does not do either
    other = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api.app), base_url="http://creditstream.test"
    )
    other_api = ApiClient(api.app, other, api.key)
    other_csrf = await signed_in(other_api, "bob")
    answer = await api.http.post(path, json=grant, headers=other_csrf)
    assert answer.status_code == 403
    assert await balance(api, "csrf-victim") == 28

    without_session = await httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api.app), base_url="http://creditstream.test"
    ).post(path, json=grant, headers=csrf)
    assert without_session.status_code == 401
    assert (await api.http.post(path, json=grant, headers=csrf)).status_code == 201
    assert await balance(api, "csrf-victim") == 528


async def test_console_actions_are_recorded_with_the_operator(
    api_factory: Callable[..., Any], database_url: str
) -> None:
    api = await console_api(api_factory, database_url)
    server = api.server()
    account = "console-acts"
    await api.http.put(f"/v1/accounts/{account}", headers=server)
    csrf = await signed_in(api, "Ada Lovelace")

    granted = await api.http.post(
        f"/console/api/accounts/{account}/grants",
        json={"amount": 100, "reason": "goodwill", "expires_at": "2031-01-01T00:00:00Z"},
        headers=csrf,
    )
    assert granted.status_code == 201, granted.text
    assert granted.json()["account"]["balance"] == 128

    charge = await api.http.post(
        f"/v1/accounts/{account}/charges", json={"amount": 10, "reason": "use"}, headers=server
    )
    charge_id = charge.json()["charge"]["charge_id"]
    refunded = await api.http.post(
        "/console/api/refunds",
        json={"charge_id": charge_id, "amount": 4, "reason": "bad result"},
        headers=csrf,
    )
    assert refunded.status_code == 201, refunded.text
    assert refunded.json()["account"]["balance"] == 122

    hold = await api.http.post(
        "/v1/holds", json={"account_id": account, "amount": 7}, headers=server
    )
    hold_id = hold.json()["hold"]["hold_id"]
    released = await api.http.post(
        f"/console/api/holds/{hold_id}/release", json={"reason": "stuck job"}, headers=csrf
    )
    assert released.status_code == 200, released.text
    assert released.json()["hold"]["status"] == "released"

    assert await operator_lines(api, account) == [
        ("grant", "Ada Lovelace"),
        ("refund", "Ada Lovelace"),
        ("release", "Ada Lovelace"),
    ]
    view = (await api.http.get(f"/console/api/accounts/{account}")).json()
    assert view["account"]["balance"] == 122 and view["holds"] == []
    assert view["refunds"][0]["amount"] == 4
    assert any((g["expires_at"] or "").startswith("2031-01-01T00:00:00") for g in view["grants"]), (
        view["grants"]
    )
    journal = f"/console/api/accounts/{account}/entries"
    newest = (await api.http.get(journal + "?limit=2")).json()  # newest first
    assert [e["type"] for e in newest["entries"]] == ["release", "hold"]
    assert newest["has_more"] is True
    oldest_shown = newest["entries"][-1]["entry_id"]
    older = (await api.http.get(f"{journal}?before={oldest_shown}&limit=500")).json()
    assert older["has_more"] is False
    assert [e["type"] for e in older["entries"]][:3] == ["refund", "charge", "grant"]
    newer = (await api.http.get(f"{journal}?after={oldest_shown}")).json()  # oldest first
    assert [e["type"] for e in newer["entries"]] == ["release"]
    assert (await api.http.get(journal + "?before=0")).status_code == 422
    from tests.support import audit_mismatches

    assert await audit_mismatches(database_url) == []


async def test_console_refuses_bad_input_with_4xx_and_changes_nothing(
    api_factory: Callable[..., Any], database_url: str
) -> None:
    api = await console_api(api_factory, database_url)
    await api.http.put("/v1/accounts/console-bad", headers=api.server())
    csrf = await signed_in(api)
    grants = "/console/api/accounts/console-bad/grants"
    for body in (
        {"amount": 0, "reason": "x"},
        {"amount": -5, "reason": "x"},
        {"amount": 10**19, "reason": "x"},
        {"amount": "10", "reason": "x"},
        {"amount": 10},  # an operator says why
        {"amount": 10, "reason": "x", "expires_at": "2031-01-01T00:00:00"},
    ):
        answer = await api.http.post(grants, json=body, headers=csrf)
        assert answer.status_code == 422, (body, answer.text)
    assert (await api.http.post(grants, content=b"{", headers=csrf)).status_code == 400
    unknown = "/console/api/accounts/never-seen/grants"
    assert (
        await api.http.post(unknown, json={"amount": 5, "reason": "x"}, headers=csrf)
    ).status_code == 404
    refund = {"charge_id": "chg_unknown", "reason": "x"}
    answer = await api.http.post("/console/api/refunds", json=refund, headers=csrf)
    assert answer.status_code == 404
    answer = await api.http.post("/console/api/refunds", json={"charge_id": "c"}, headers=csrf)
    assert answer.status_code == 422
    release = "/console/api/holds/" + "%00" * 3 + "/release"
    assert (await api.http.post(release, json={"reason": "x"}, headers=csrf)).status_code == 404
    assert (await api.http.get("/console/api/accounts/bad%20id")).status_code == 422
    assert (await api.http.get("/console/api/accounts/never-seen")).status_code == 404
    assert await balance(api, "console-bad") == 28


async def test_console_stream_ticket_is_a_stream_ticket(
    api_factory: Callable[..., Any], database_url: str
) -> None:
    api = await console_api(api_factory, database_url)
    await api.http.put("/v1/accounts/console-live", headers=api.server())
    csrf = await signed_in(api)
    answer = await api.http.post("/console/api/accounts/console-live/stream-ticket", headers=csrf)
    assert answer.status_code == 201, answer.text
    ticket = answer.json()["ticket"]
    assert ticket.startswith("st_") and answer.json()["account_id"] == "console-live"


def test_cli_prints_a_one_time_link(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from storage.migrate import upgrade_async

    asyncio.run(upgrade_async(sqlite_url))
    monkeypatch.setenv("CREDITSTREAM_DATABASE_URL", sqlite_url)
    code = main(["console", "--name", "carol", "--base-url", "https://ops.example.com/"])
    assert code == 0
    link = capsys.readouterr().out.strip().splitlines()[-1]
    assert link.startswith("https://ops.example.com/console/sign-in?token=csi_")
    assert main(["console", "--name", ""]) == 2


async def test_console_enables_tests_and_resends_webhook_endpoints_as_the_api_does(
    api_factory: Callable[..., Any], database_url: str
) -> None:
    api = await console_api(api_factory, database_url, webhook_allow_private=True)
    await api.http.put("/v1/accounts/console-hooks", headers=api.server())
    made = await api.http.post(
        "/v1/webhook-endpoints",
        headers=api.server(),
        json={"url": "http://127.0.0.1:9/nobody-listens", "events": ["balance.updated"]},
    )
    assert made.status_code == 201, made.text
    base = f"/console/api/webhook-endpoints/{made.json()['id']}"
    csrf = await signed_in(api)

    refused = await api.http.post(f"{base}/test")  # no CSRF header
    assert refused.status_code == 403, refused.text

    enabled = await api.http.post(f"{base}/enable", headers=csrf)
    assert (enabled.status_code, enabled.json()["status"]) == (200, "enabled"), enabled.text
    tested = await api.http.post(f"{base}/test", headers=csrf)
    assert tested.status_code == 200, tested.text
    assert tested.json()["ok"] is False and tested.json()["error"]  # nothing listens there
    resent = await api.http.post(
        f"{base}/resend", headers=csrf, json={"account_id": "console-hooks", "from_seq": 1}
    )
    assert resent.status_code == 202, resent.text
    assert resent.json()["from_seq"] == 1
    beyond = await api.http.post(
        f"{base}/resend", headers=csrf, json={"account_id": "console-hooks", "from_seq": 99}
    )
    assert beyond.status_code == 422, beyond.text

    listed = await api.http.get("/console/api/webhook-endpoints")
    deliveries = listed.json()["endpoints"][0]["deliveries"]
    assert [d["event"] for d in deliveries] == ["webhook.test"]  # the test event, recorded
