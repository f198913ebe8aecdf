"""Isolation matrix (G7): every route of `asgi.API_ROUTES` × every kind of caller — no
token, a garbage token, an expired token, another user's token, the account's own user token,
a server key — answers the status of ONE table, `MATRIX`, with a request that is otherwise
valid. A route without a row fails the test, so a new route cannot be forgotten. A refused
request changes nothing (the owner's stream position is unchanged). REST cells run in-process
on SQLite and PostgreSQL; the WebSocket and SSE rows run against a live uvicorn. Webhooks:
unsigned, wrong secret, stale or future timestamp, tampered body → 401 and nothing written; the
same signed delivery twice → one effect.

    .venv/bin/pytest tests/e2e/test_isolation_matrix.py -s -q
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import websockets

import api.routes.seeds.seed_001
from api.tokens import TokenSigner
from asgi import API_ROUTES
from core.signatures import TOLERANCE_S, sign
from tests.conftest import ApiClient
from tests.support import TEST_SECRET, LiveServer, MutableClock, make_server_key

OWNER = "matrix-owner"
OTHER = "matrix-other"
PRINCIPALS = ("none", "garbage", "expired", "other", "own", "server")
A = "/v1/accounts/{account_id}"


def owner_or_server(ok: int | str) -> tuple[Any, ...]:
    return (401, 401, 401, 403, ok, ok)


def server_only(ok: int) -> tuple[Any, ...]:
    return (401, 401, 401, 403, 403, ok)


def anyone(ok: int = 200) -> tuple[Any, ...]:
    return (ok,) * 6


TAGS = {"matrix": "isolation"}  # metadata rides along: it changes no one's access

# a bearer token is no webhook signature: every caller is refused (signatures: see below)
SIGNED_ONLY = (401,) * 6


@dataclass(frozen=True)
class Row:
    expected: tuple[Any, ...]  # one outcome per PRINCIPALS entry
    body: dict[str, Any] | None = None
    query: str = ""
    via: str = "http"  # "http" (in-process), "websocket" or "sse" (live server)


# (method, path) → the outcome for each caller, in PRINCIPALS order. Path parameters name the
# owner's account, a fresh hold or job of the owner, or the provider `bfl`; a body's `{charge_id}`
# a fresh charge of the owner.
MATRIX: dict[tuple[str, str], Row] = {
    ("PUT", A): Row(server_only(200)),
    ("GET", A): Row(owner_or_server(200)),
    ("GET", A + "/entries"): Row(owner_or_server(200)),
    ("GET", A + "/events"): Row(owner_or_server(200)),
    ("GET", A + "/usage"): Row(owner_or_server(200)),
    ("GET", A + "/jobs"): Row(owner_or_server(200)),
    ("POST", A + "/grants"): Row(
        server_only(201), {"amount": 1, "reason": "purchase", "metadata": TAGS}
    ),
    ("POST", A + "/charges"): Row(
        server_only(201), {"amount": 1, "reason": "matrix", "metadata": TAGS}
    ),
    ("POST", "/v1/holds"): Row(
        owner_or_server(201), {"account_id": OWNER, "amount": 1, "metadata": TAGS}
    ),
    ("POST", "/v1/batch"): Row(
        server_only(200), {"operations": [{"op": "charge", "account_id": OWNER, "amount": 1}]}
    ),
    ("GET", "/v1/holds/{hold_id}"): Row(owner_or_server(200)),
    ("POST", "/v1/holds/{hold_id}/capture"): Row(server_only(200), {"amount": 1}),
    ("POST", "/v1/holds/{hold_id}/release"): Row(owner_or_server(200), {"reason": "matrix"}),
    ("POST", "/v1/refunds"): Row(
        server_only(201), {"charge_id": "{charge_id}", "amount": 1, "metadata": TAGS}
    ),
    ("GET", "/v1/refunds/{refund_id}"): Row(server_only(200)),
    ("GET", "/v1/charges/{charge_id}"): Row(owner_or_server(200)),
    ("POST", "/v1/stream-tickets"): Row(owner_or_server(201), {"account_id": OWNER}),
    ("POST", "/v1/jobs"): Row(
        owner_or_server(202),
        {
            "account_id": OWNER,
            "operation": "audio",
            "input": {"simulate": "hang"},
            "metadata": TAGS,
        },
    ),
    ("GET", "/v1/jobs/{job_id}"): Row(owner_or_server(200)),
    ("POST", "/v1/jobs/{job_id}/result"): Row(
        server_only(200), {"status": "failed", "error": "matrix"}
    ),
    ("POST", "/v1/webhooks/providers/{provider}"): Row(
        SIGNED_ONLY, {"task_id": "matrix-task", "status": "SUCCESS"}
    ),
    ("POST", "/v1/webhooks/payments/{provider}"): Row(
        SIGNED_ONLY, {"event_id": "matrix-event", "account_id": OWNER, "points": 1}
    ),
    ("GET", "/v1/pricing"): Row(anyone()),
    ("GET", "/v1/plans"): Row(anyone()),
    ("POST", "/v1/quote"): Row(owner_or_server(200), {"account_id": OWNER, "operation": "audio"}),
    ("POST", "/v1/tokens"): Row(server_only(200), {"account_id": OWNER}),
    # a public address literal: registering it asks no DNS, and no test instance delivers
    ("POST", "/v1/webhook-endpoints"): Row(
        server_only(201), {"url": "https://93.184.215.14/matrix", "events": ["balance.updated"]}
    ),
    ("GET", "/v1/webhook-endpoints"): Row(server_only(200)),
    ("DELETE", "/v1/webhook-endpoints/{endpoint_id}"): Row(server_only(200)),
    ("GET", "/v1/webhook-endpoints/{endpoint_id}/deliveries"): Row(server_only(200)),
    ("POST", "/v1/webhook-endpoints/{endpoint_id}/enable"): Row(server_only(200)),
    # the test event goes to the public literal: refused or unanswered, it is still a 200
    ("POST", "/v1/webhook-endpoints/{endpoint_id}/test"): Row(server_only(200)),
    ("POST", "/v1/webhook-endpoints/{endpoint_id}/resend"): Row(
        server_only(202), {"account_id": OWNER, "from_seq": 1}
    ),
    ("GET", "/v1/stream"): Row(
        ("4401", "4401", "4401", "4403", "subscribed", "subscribed"), via="websocket"
    ),
    ("GET", "/v1/stream/sse"): Row(owner_or_server(200), query=f"account_id={OWNER}", via="sse"),
    ("GET", "/healthz"): Row(anyone()),
    ("GET", "/readyz"): Row(anyone()),
    ("GET", "/metrics"): Row(anyone()),
    ("GET", "/openapi.json"): Row(anyone()),
    ("GET", "/docs"): Row(anyone()),
    ("GET", "/console"): Row(anyone(404)),  # off unless CREDITSTREAM_CONSOLE=1
    # seed-compatible routes (api/routes/seeds/); `hang` keeps the generation processing
    ("POST", "/api/v1/video/generate"): Row(
        owner_or_server(202), {"account_id": OWNER, "simulate": "hang"}
    ),
    ("GET", "/api/v1/history/{id}"): Row(owner_or_server(200)),
    ("GET", "/api/v1/user/profile"): Row(owner_or_server(200), query=f"account_id={OWNER}"),
    ("POST", "/api/payments/award"): Row(server_only(200), {"walletAddress": OWNER, "points": 1}),
    ("GET", "/api/users/{walletAddress}/points"): Row(owner_or_server(200)),
    ("POST", "/api/generate"): Row(
        owner_or_server(202), {"walletAddress": OWNER, "script": "matrix", "simulate": "hang"}
    ),
    ("POST", "/api/generate/audio"): Row(
        owner_or_server(202), {"walletAddress": OWNER, "script": "matrix", "simulate": "hang"}
    ),
}


def test_every_route_has_a_row() -> None:
    routes = {(r.method, r.path) for r in API_ROUTES}
    assert routes - MATRIX.keys() == set(), "routes without a row in MATRIX"
    assert MATRIX.keys() - routes == set(), "rows of routes that no longer exist"
    assert all(len(row.expected) == len(PRINCIPALS) for row in MATRIX.values())


def report(line: str) -> None:
    print(f"\n{line}")
    path = os.environ.get("CREDITSTREAM_RELIABILITY_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")


@pytest.fixture
def short_seed_generate_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """`hang` never finishes: the seed routes' 30 s wait for it is cut short."""
    monkeypatch.setattr(api.routes.seeds.seed_001, "GENERATE_WAIT_S", 0.05)


# --- REST, in-process on both databases ----------------------------------------------------


def rest_principals(api: ApiClient, clock: MutableClock) -> dict[str, dict[str, str]]:
    expired, _ = api.ctx.signer.issue(OWNER, clock.now() - timedelta(hours=2), 60)
    return {
        "none": {},
        "garbage": {"Authorization": "Bearer garbage.token.value"},
        "expired": {"Authorization": f"Bearer {expired}"},
        "other": api.user(OTHER),
        "own": api.user(OWNER),
        "server": api.server(),
    }


async def fresh(api: ApiClient, kind: str) -> str:
    if kind == "endpoint":
        response = await api.http.post(
            "/v1/webhook-endpoints",
            headers=api.server(),
            json={"url": "https://93.184.215.14/matrix", "events": ["job.updated"]},
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])
    if kind == "hold":
        response = await api.http.post(
            "/v1/holds", headers=api.server(), json={"account_id": OWNER, "amount": 1}
        )
        assert response.status_code == 201, response.text
        return str(response.json()["hold"]["hold_id"])
    response = await api.http.post(
        "/v1/jobs",
        headers=api.server(),
        json={
            "account_id": OWNER,
            "operation": "audio",
            "provider": "bfl",
            "provider_task_id": f"task-{uuid.uuid4().hex}",
        },
    )
    assert response.status_code == 202, response.text
    return str(response.json()["job"]["job_id"])


async def concrete_path(api: ApiClient, template: str) -> str:
    values = {"account_id": OWNER, "walletAddress": OWNER, "provider": "bfl"}
    if "{hold_id}" in template:
        values["hold_id"] = await fresh(api, "hold")
    if "{job_id}" in template or "{id}" in template:
        values["job_id"] = values["id"] = await fresh(api, "job")
    if "{endpoint_id}" in template:
        values["endpoint_id"] = await fresh(api, "endpoint")
    if "{charge_id}" in template or "{refund_id}" in template:
        charged = await api.http.post(
            f"/v1/accounts/{OWNER}/charges", headers=api.server(), json={"amount": 1}
        )
        assert charged.status_code == 201, charged.text
        values["charge_id"] = charged.json()["charge"]["charge_id"]
    if "{refund_id}" in template:
        refunded = await api.http.post(
            "/v1/refunds", headers=api.server(), json={"charge_id": values["charge_id"]}
        )
        assert refunded.status_code == 201, refunded.text
        values["refund_id"] = refunded.json()["refund"]["refund_id"]
    return template.format(**values)


async def concrete_body(api: ApiClient, body: dict[str, Any] | None) -> dict[str, Any] | None:
    """The row's body, naming a fresh charge of the owner where it says `{charge_id}`."""
    if body is None or body.get("charge_id") != "{charge_id}":
        return body
    response = await api.http.post(
        f"/v1/accounts/{OWNER}/charges", headers=api.server(), json={"amount": 1}
    )
    assert response.status_code == 201, response.text
    return {**body, "charge_id": response.json()["charge"]["charge_id"]}


async def owner_seq(api: ApiClient) -> int:
    snapshot = (await api.http.get(f"/v1/accounts/{OWNER}", headers=api.server())).json()
    return int(snapshot["seq"])


@pytest.mark.usefixtures("short_seed_generate_wait")
async def test_rest_isolation_matrix(api: ApiClient, clock: MutableClock) -> None:
    h = api.server()
    assert (
        await api.http.post(
            f"/v1/accounts/{OWNER}/grants",
            headers=h,
            json={"amount": 100_000, "reason": "purchase"},
        )
    ).status_code == 201  # no trial daily limit
    assert (await api.http.put(f"/v1/accounts/{OTHER}", headers=h)).status_code == 201
    callers = rest_principals(api, clock)
    wrong: list[str] = []
    cells = 0
    for route in API_ROUTES:
        row = MATRIX[(route.method, route.path)]
        if row.via != "http":
            continue
        for principal, expected in zip(PRINCIPALS, row.expected, strict=True):
            path = await concrete_path(api, route.path)
            url = path + (f"?{row.query}" if row.query else "")
            body = await concrete_body(api, row.body)
            before = await owner_seq(api)
            response = await api.http.request(
                route.method, url, headers=callers[principal], json=body
            )
            cells += 1
            refused = response.status_code >= 400
            problems = []
            if response.status_code != expected:
                problems.append(
                    f"status {response.status_code} != {expected}: {response.text[:200]}"
                )
            if refused and await owner_seq(api) != before:
                problems.append("a refused request changed the owner's account")
            if refused and not response.headers["content-type"].startswith("application/json"):
                problems.append(f"error is not JSON: {response.headers['content-type']}")
            if problems:
                wrong.append(f"{route.method} {route.path} as {principal}: {'; '.join(problems)}")
    report(
        f"isolation matrix (REST, {api.ctx.settings.database_url.split(':')[0]}): "
        f"{cells} cells, {len(wrong)} wrong"
    )
    assert not wrong, "\n".join(wrong)


# --- WebSocket and SSE, on a live server ------------------------------------------------------


async def ws_outcome(base_url: str, headers: dict[str, str]) -> str:
    """ "subscribed", or the close code the server answered with."""
    url = base_url.replace("http://", "ws://") + "/v1/stream"
    try:
        async with websockets.connect(url, additional_headers=headers, open_timeout=5) as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert hello["type"] == "hello"
            await ws.send(json.dumps({"op": "subscribe", "account_id": OWNER, "after_seq": 0}))
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if message.get("type") == "subscribed":
                    assert message["account_id"] == OWNER
                    return "subscribed"
    except websockets.ConnectionClosed as closed:
        return str(closed.rcvd.code if closed.rcvd else closed)


async def sse_outcome(base_url: str, headers: dict[str, str], query: str) -> int:
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=5) as http,
        http.stream("GET", f"/v1/stream/sse?{query}", headers=headers) as response,
    ):
        if response.status_code == 200:
            first = await anext(response.aiter_text())  # the stream really opened
            assert first.startswith("retry:")
        return response.status_code


async def test_stream_isolation_matrix(
    sqlite_url: str, live_server_factory: Callable[..., LiveServer]
) -> None:
    key = await make_server_key(sqlite_url)
    server = await asyncio.to_thread(live_server_factory, sqlite_url)
    signer = TokenSigner(TEST_SECRET)
    now = datetime.now(UTC)

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    callers = {
        "none": {},
        "garbage": bearer("garbage.token.value"),
        "expired": bearer(signer.issue(OWNER, now - timedelta(hours=2), 60)[0]),
        "other": bearer(signer.issue(OTHER, now)[0]),
        "own": bearer(signer.issue(OWNER, now)[0]),
        "server": bearer(key),
    }
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(key)) as http:
        assert (await http.put(f"/v1/accounts/{OWNER}")).status_code == 201
    wrong: list[str] = []
    cells = 0
    for route in API_ROUTES:
        row = MATRIX[(route.method, route.path)]
        if row.via == "http":
            continue
        for principal, expected in zip(PRINCIPALS, row.expected, strict=True):
            if row.via == "websocket":
                outcome: Any = await ws_outcome(server.url, callers[principal])
            else:
                outcome = await sse_outcome(server.url, callers[principal], row.query)
            cells += 1
            if outcome != expected:
                wrong.append(f"{route.path} as {principal}: {outcome} != {expected}")
    report(f"isolation matrix (WebSocket and SSE, live server): {cells} cells, {len(wrong)} wrong")
    assert not wrong, "\n".join(wrong)


# --- webhooks: signatures and replays -----------------------------------------------------------

PROVIDER_SECRET = "whsec-matrix-provider-secret-for-bfl"
PAYMENT_SECRET = "whsec-matrix-payment-secret-for-stripe"


def signed(
    body: dict[str, Any], secret: str, at: float | None = None, signed_body: bytes | None = None
) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    stamp = int(time.time() if at is None else at)
    return raw, {
        "Content-Type": "application/json",
        "X-Signature": sign(secret, signed_body or raw, stamp),
    }


async def test_webhook_signatures_and_replays(
    api_factory: Callable[..., Any], database_url: str
) -> None:
    api: ApiClient = await api_factory(
        database_url,
        webhook_secrets={"bfl": PROVIDER_SECRET},
        payment_secrets={"stripe": PAYMENT_SECRET},
    )
    h = api.server()
    await api.http.post(
        f"/v1/accounts/{OWNER}/grants", headers=h, json={"amount": 1000, "reason": "purchase"}
    )
    job = (
        await api.http.post(
            "/v1/jobs",
            headers=h,
            json={
                "account_id": OWNER,
                "operation": "audio",
                "provider": "bfl",
                "provider_task_id": "task-signed",
            },
        )
    ).json()["job"]
    done = {"task_id": "task-signed", "status": "FAILED", "error": "matrix"}
    paid = {"event_id": "evt-signed", "account_id": OWNER, "points": 7}
    now = time.time()
    refused: list[tuple[str, str, bytes, dict[str, str]]] = []
    for name, body, secret in (
        ("provider", done, PROVIDER_SECRET),
        ("payment", paid, PAYMENT_SECRET),
    ):
        raw = json.dumps(body).encode()
        refused += [
            (name, "unsigned", raw, {"Content-Type": "application/json"}),
            (name, "wrong secret", *signed(body, "whsec-not-the-secret")),
            # well past the tolerance both ways: the cells are built before they are sent,
            # and a busy machine may take seconds to get to the last of them
            (name, "stale timestamp", *signed(body, secret, at=now - TOLERANCE_S - 60)),
            (name, "future timestamp", *signed(body, secret, at=now + TOLERANCE_S + 60)),
            (name, "tampered body", *signed(body, secret, signed_body=b'{"other": 1}')),
            (
                name,
                "garbled header",
                raw,
                {"Content-Type": "application/json", "X-Signature": "v1=,t=yesterday"},
            ),
        ]
    paths = {"provider": "/v1/webhooks/providers/bfl", "payment": "/v1/webhooks/payments/stripe"}
    before = await owner_seq(api)
    wrong: list[str] = []
    for name, case, raw, headers in refused:
        response = await api.http.post(paths[name], content=raw, headers=headers)
        if response.status_code != 401 or response.json()["error"]["code"] != "invalid_signature":
            wrong.append(f"{name} webhook, {case}: {response.status_code} {response.text[:200]}")
    if await owner_seq(api) != before:
        wrong.append("a refused webhook changed the account")
    stored = (await api.http.get(f"/v1/jobs/{job['job_id']}", headers=h)).json()
    if stored["status"] != "processing":
        wrong.append(f"a refused provider webhook changed the job: {stored['status']}")

    # replays: the same signed delivery (same bytes, same signature) twice → one effect
    replays = 0
    for path, body, secret, first_status in (
        (paths["provider"], done, PROVIDER_SECRET, "processed"),
        (paths["payment"], paid, PAYMENT_SECRET, "awarded"),
    ):
        raw, headers = signed(body, secret)
        seq_before = await owner_seq(api)
        first = await api.http.post(path, content=raw, headers=headers)
        seq_after_first = await owner_seq(api)
        second = await api.http.post(path, content=raw, headers=headers)
        replays += 2
        if (first.status_code, first.json().get("status")) != (200, first_status):
            wrong.append(f"{path} first delivery: {first.status_code} {first.text[:200]}")
        if (second.status_code, second.json().get("status")) != (200, "duplicate"):
            wrong.append(f"{path} replay: {second.status_code} {second.text[:200]}")
        if seq_after_first == seq_before or await owner_seq(api) != seq_after_first:
            wrong.append(
                f"{path}: expected one effect, seq {seq_before} → {seq_after_first} "
                f"→ {await owner_seq(api)}"
            )
    entries = (await api.http.get(f"/v1/accounts/{OWNER}/entries?limit=500", headers=h)).json()[
        "entries"
    ]
    points = [e for e in entries if e["type"] == "grant" and e["amount"] == 7]
    releases = [e for e in entries if e["type"] == "release"]
    if len(points) != 1 or len(releases) != 1:
        wrong.append(
            f"replays had more than one effect: {len(points)} awards, {len(releases)} releases"
        )
    report(
        f"isolation matrix (webhooks, {database_url.split(':')[0]}): "
        f"{len(refused) + replays} cells, {len(wrong)} wrong"
    )
    assert not wrong, "\n".join(wrong)
