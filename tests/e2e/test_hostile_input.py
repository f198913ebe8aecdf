"""Hostile input at the edges (G8), each bounded by a documented limit with a clear error:

- ids with SQL or path characters, percent-encoded dots, unicode, 129 characters or NUL in
  every path parameter of every route → a 4xx JSON error, nothing written;
- bodies of 1 MiB (declared or chunked) → 413; JSON nested 10,000 deep → 4xx, never a
  RecursionError 500; invalid UTF-8 → 400; NUL or lone surrogates in strings → 422; on every
  route with a body (webhooks signed, so their bodies are really read), nothing written;
- a WebSocket with thousands of subscriptions → `too_many_subscriptions` past 1000; thousands
  of streams for one user → close 1008 `too_many_connections` / SSE 429 past 100; oversized,
  deeply nested or binary WebSocket messages → 1009 / 1008; meanwhile `/healthz` answers fast.

REST cases run in-process on SQLite and PostgreSQL; stream cases against a live uvicorn.

    .venv/bin/pytest tests/e2e/test_hostile_input.py -s -q
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa
import websockets

from api.body import MAX_BODY_BYTES, MAX_JSON_DEPTH
from api.tokens import TokenSigner
from asgi import API_ROUTES
from core.signatures import sign
from realtime.websocket_frames import MAX_MESSAGE_CHARS
from storage.tables import accounts, entries, events, grants, holds, jobs, processed_webhooks
from tests.conftest import ApiClient
from tests.support import TEST_SECRET, LiveServer, make_server_key

WEBHOOK_SECRET = "whsec-hostile-secret-for-every-provider"
HOSTILE_IDS = {
    "sql": "'; DROP TABLE accounts;--",
    "traversal": "../../etc/passwd",
    "encoded dots": "%2e%2e",
    "unicode": "ünïcødé-账户-💥",
    "129 chars": "a" * 129,
    "nul": "a\x00b",
}
# percent-encoded dots sent as they are: the server decodes them to `..`
RAW_PATH_IDS = {"raw %2e%2e": "%2e%2e", "raw %2e": "%2e"}
MAX_SUBSCRIPTIONS = 1000
MAX_STREAMS_PER_ACCOUNT = 100
HEALTHZ_BUDGET_S = 2.0  # "quickly": well under a client's timeout, on a busy 2-core machine
TALLY: dict[str, int] = {}


def report(name: str, cases: int) -> None:
    TALLY[name] = cases
    line = f"hostile input ({name}): {cases} cases, 0 server errors"
    print(f"\n{line}")
    path = os.environ.get("CREDITSTREAM_RELIABILITY_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")


async def row_counts(api: ApiClient) -> dict[str, int]:
    async with api.ctx.db.read() as uow:
        return {
            table.name: (
                await uow.conn.execute(sa.select(sa.func.count()).select_from(table))
            ).scalar_one()
            for table in (accounts, entries, events, grants, holds, jobs, processed_webhooks)
        }


@pytest.fixture
async def hostile_api(api_factory: Callable[..., Any], database_url: str) -> ApiClient:
    client: ApiClient = await api_factory(
        database_url, webhook_secret=WEBHOOK_SECRET, payment_secrets={"bfl": WEBHOOK_SECRET}
    )
    return client


def valid_body(route: Any) -> dict[str, Any] | None:
    """A body that would be accepted, so only the hostile part is refused."""
    from tests.e2e.test_isolation_matrix import MATRIX  # the one table of valid requests

    return MATRIX[(route.method, route.path)].body


def http_routes(with_path_parameters: bool = False, with_body: bool = False) -> list[Any]:
    return [
        r
        for r in API_ROUTES
        if r.path not in ("/v1/stream", "/v1/stream/sse")
        and (not with_path_parameters or "{" in r.path)
        and (not with_body or r.body is not None)
    ]


def check_refusal(
    response: httpx.Response, case: str, problems: list[str], allowed: tuple[int, ...] | None = None
) -> None:
    ok = (response.status_code in allowed) if allowed else 400 <= response.status_code < 500
    if not ok:
        problems.append(f"{case}: {response.status_code} {response.text[:200]}")
    elif not response.headers.get("content-type", "").startswith(
        "application/json"
    ) or not response.json().get("error", {}).get("message"):
        problems.append(f"{case}: not a JSON error: {response.text[:200]}")


# --- path parameters ---------------------------------------------------------------------------


async def test_hostile_ids_in_every_path_parameter(hostile_api: ApiClient) -> None:
    api = hostile_api
    await api.http.put("/v1/accounts/bystander", headers=api.server())
    before = await row_counts(api)
    problems: list[str] = []
    cases = 0
    routes = http_routes(with_path_parameters=True)
    assert len(routes) >= 15
    ids = {name: quote(value, safe="") for name, value in HOSTILE_IDS.items()} | RAW_PATH_IDS
    for route in routes:
        for name, encoded in ids.items():
            path = route.path
            for parameter in (
                "account_id",
                "hold_id",
                "job_id",
                "provider",
                "id",
                "walletAddress",
                "endpoint_id",
                "refund_id",
                "charge_id",
            ):
                path = path.replace("{" + parameter + "}", encoded)
            assert "{" not in path, f"a path parameter this test does not know: {route.path}"
            for principal, headers in (("server", api.server()), ("user", api.user("bystander"))):
                response = await api.http.request(
                    route.method, path, headers=headers, json=valid_body(route)
                )
                cases += 1
                check_refusal(response, f"{route.method} {path} ({name}, {principal})", problems)
    if await row_counts(api) != before:
        problems.append(f"something was written: {before} → {await row_counts(api)}")
    assert not problems, "\n".join(problems)
    report(f"ids in every path parameter, {api.ctx.settings.database_url.split(':')[0]}", cases)


# --- bodies ---------------------------------------------------------------------------------------


def nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def tainted(body: dict[str, Any], bad: str) -> bytes:
    """The valid body with `bad` in each of its strings (ids, refs, task and event ids…) and
    in one more field: what PostgreSQL cannot store must be refused before it is tried."""
    spoiled = {k: f"{v}{bad}" if isinstance(v, str) else v for k, v in body.items()}
    return json.dumps({**spoiled, "zz": f"a{bad}b"}).encode()  # escapes: \u0000, \udc00


async def chunked(payload: bytes, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(payload), size):
        yield payload[start : start + size]


BODIES: dict[str, tuple[Any, tuple[int, ...]]] = {
    # name: (raw body, or a factory of one from the route's valid body; accepted statuses)
    "1 MiB declared": (b'{"pad": "' + b"x" * (1024 * 1024) + b'"}', (413,)),
    "1 MiB chunked": ("chunked", (413,)),
    "nested 10,000 arrays": (nested(10_000, "array"), (400, 422)),
    "nested 10,000 objects": (nested(10_000, "object"), (400, 422)),
    f"nested {MAX_JSON_DEPTH + 1} objects": (nested(MAX_JSON_DEPTH + 1, "object"), (422,)),
    "invalid UTF-8": (lambda body: json.dumps(body).encode()[:-1] + b', "x": "\xff\xfe"}', (400,)),
    "overlong UTF-8": (b'{"account_id": "\xc0\xaf"}', (400,)),
    "NUL in every string": (lambda body: tainted(body, "\x00"), (422,)),
    "lone surrogate in every string": (lambda body: tainted(body, "\udc00"), (422,)),
    "NaN": (b'{"amount": NaN}', (400,)),
}


async def test_hostile_bodies_on_every_route(hostile_api: ApiClient) -> None:
    api = hostile_api
    await api.http.put("/v1/accounts/matrix-owner", headers=api.server())
    before = await row_counts(api)
    problems: list[str] = []
    cases = 0
    routes = http_routes(with_body=True)
    assert len(routes) >= 15
    for route in routes:
        path = route.path.format(
            account_id="matrix-owner",
            hold_id="hold_x",
            job_id="job_x",
            provider="bfl",
            id="job_x",
            walletAddress="matrix-owner",
            endpoint_id="we_x",
        )
        for name, (make, allowed) in BODIES.items():
            if make == "chunked":
                raw: Any = chunked(b'{"pad": "' + b"x" * (1024 * 1024) + b'"}')
            elif callable(make):
                raw = make(valid_body(route) or {})
            else:
                raw = make
            headers = {**api.server(), "Content-Type": "application/json"}
            if "/webhooks/" in route.path and isinstance(raw, bytes):
                headers["X-Signature"] = sign(WEBHOOK_SECRET, raw, int(time.time()))
            started = time.monotonic()
            response = await api.http.post(path, content=raw, headers=headers)
            cases += 1
            check_refusal(response, f"{route.method} {route.path} ({name})", problems, allowed)
            if time.monotonic() - started > 5:
                problems.append(f"{route.path} ({name}) took {time.monotonic() - started:.1f} s")
    if await row_counts(api) != before:
        problems.append(f"something was written: {before} → {await row_counts(api)}")
    assert not problems, "\n".join(problems)
    report(f"bodies on every route, {api.ctx.settings.database_url.split(':')[0]}", cases)


# --- streams, on a live server -----------------------------------------------------------------


@pytest.fixture
async def live(
    sqlite_url: str, live_server_factory: Callable[..., LiveServer]
) -> tuple[LiveServer, str]:
    key = await make_server_key(sqlite_url)
    server = await asyncio.to_thread(live_server_factory, sqlite_url)
    return server, key


async def healthz_latency(http: httpx.AsyncClient) -> float:
    started = time.monotonic()
    response = await http.get("/healthz")
    assert response.status_code == 200
    return time.monotonic() - started


async def watch_health(http: httpx.AsyncClient, stop: asyncio.Event, samples: list[float]) -> None:
    while not stop.is_set():
        samples.append(await healthz_latency(http))
        await asyncio.sleep(0.05)


def ws_url(server: LiveServer) -> str:
    return server.url.replace("http://", "ws://") + "/v1/stream"


async def test_thousands_of_subscriptions_on_one_connection(live: tuple[LiveServer, str]) -> None:
    server, key = live
    attempts = 1500
    samples: list[float] = []
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        watcher = asyncio.create_task(watch_health(http, stop, samples))
        async with websockets.connect(
            ws_url(server), max_size=None, additional_headers={"Authorization": f"Bearer {key}"}
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "hello"

            async def send_all() -> None:
                for n in range(attempts):
                    await ws.send(
                        json.dumps({"op": "subscribe", "account_id": f"many-{n}", "after_seq": 0})
                    )
                await ws.send(json.dumps({"op": "ping"}))

            sender = asyncio.create_task(send_all())
            replies: list[dict[str, Any]] = []
            while not replies or replies[-1].get("type") != "pong":
                replies.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
            await sender
            subscribed = [r for r in replies if r["type"] == "subscribed"]
            refused = [r for r in replies if r["type"] == "error"]
            assert len(subscribed) == MAX_SUBSCRIPTIONS
            assert len(refused) == attempts - MAX_SUBSCRIPTIONS
            assert {r["code"] for r in refused} == {"too_many_subscriptions"}
            assert "at most 1000" in refused[0]["message"]
            # the connection is still usable: unsubscribing frees a place
            await ws.send(json.dumps({"op": "unsubscribe", "account_id": "many-0"}))
            await ws.send(
                json.dumps({"op": "subscribe", "account_id": "late-comer", "after_seq": 0})
            )
            tail = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(2)]
            assert [m["type"] for m in tail] == ["unsubscribed", "subscribed"]
        stop.set()
        await watcher
        after = await healthz_latency(http)
    assert max(samples) < HEALTHZ_BUDGET_S and after < HEALTHZ_BUDGET_S, (max(samples), after)
    print(
        f"\n/healthz during {attempts} subscriptions: {len(samples)} answers, slowest "
        f"{max(samples) * 1000:.0f} ms; after: {after * 1000:.0f} ms"
    )
    report("subscriptions on one WebSocket", attempts + 2)


async def open_stream(server: LiveServer, token: str) -> tuple[Any, str]:
    """An open WebSocket after its hello, or (None, "code reason") when it was refused."""
    ws = await websockets.connect(
        ws_url(server), additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=20
    )
    try:
        message = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert message["type"] == "hello"
        return ws, "open"
    except websockets.ConnectionClosed as closed:
        assert closed.rcvd is not None
        return None, f"{closed.rcvd.code} {closed.rcvd.reason}"


async def test_thousands_of_streams_for_one_user(live: tuple[LiveServer, str]) -> None:
    server, key = live
    attempts = 1000
    token, _ = TokenSigner(TEST_SECRET).issue("crowd", datetime.now(UTC))
    samples: list[float] = []
    stop = asyncio.Event()
    opened: list[Any] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        assert (
            await http.put("/v1/accounts/crowd", headers={"Authorization": f"Bearer {key}"})
        ).status_code == 201
        watcher = asyncio.create_task(watch_health(http, stop, samples))
        try:
            outcomes: list[str] = []
            for start in range(0, attempts, 100):  # a hundred at a time, all at once
                batch = await asyncio.gather(
                    *(open_stream(server, token) for _ in range(start, min(start + 100, attempts)))
                )
                opened += [ws for ws, _ in batch if ws is not None]
                outcomes += [outcome for _, outcome in batch]
            assert outcomes.count("open") == MAX_STREAMS_PER_ACCOUNT
            refusals = {o for o in outcomes if o != "open"}
            assert refusals == {"1008 too_many_connections"}, refusals
            sse = await http.get("/v1/stream/sse", headers={"Authorization": f"Bearer {token}"})
            assert sse.status_code == 429
            assert sse.json()["error"]["code"] == "too_many_connections"
            # a server key is not limited per account, and the open streams still work
            other, outcome = await open_stream(server, key)
            assert outcome == "open"
            await other.close()
            await opened[0].send(json.dumps({"op": "ping"}))
            assert json.loads(await asyncio.wait_for(opened[0].recv(), 10))["type"] == "pong"
        finally:
            await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
        # the places are given back: a new stream is admitted again
        deadline = time.monotonic() + 10
        while True:
            again, outcome = await open_stream(server, token)
            if outcome == "open":
                await again.close()
                break
            assert time.monotonic() < deadline, "closed streams were not released"
            await asyncio.sleep(0.1)
        stop.set()
        await watcher
        after = await healthz_latency(http)
    assert max(samples) < HEALTHZ_BUDGET_S and after < HEALTHZ_BUDGET_S, (max(samples), after)
    print(
        f"\n/healthz during {attempts} stream attempts: {len(samples)} answers, slowest "
        f"{max(samples) * 1000:.0f} ms; after: {after * 1000:.0f} ms"
    )
    report("streams for one user", attempts + 3)


@pytest.mark.parametrize(
    "name, frame, code",
    [
        ("1 MiB message", "x" * (1024 * 1024), 1009),
        ("just over 64 KiB", json.dumps({"op": "ping", "pad": "x" * MAX_MESSAGE_CHARS}), 1009),
        ("nested 10,000 arrays", "[" * 10_000 + "]" * 10_000, 1008),
        ("nested 10,000 objects", '{"a":' * 10_000 + "1" + "}" * 10_000, 1008),
        ("binary frame", b"\xff\xfe\x00", 1008),
        ("not an object", "[1, 2]", 1008),
        ("unknown op", '{"op": "drop_tables"}', 1008),
        ("hostile account id", json.dumps({"op": "subscribe", "account_id": "'; DROP--"}), 1008),
    ],
)
async def test_hostile_websocket_messages(
    live: tuple[LiveServer, str], name: str, frame: str | bytes, code: int
) -> None:
    server, key = live
    async with websockets.connect(
        ws_url(server), max_size=None, additional_headers={"Authorization": f"Bearer {key}"}
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "hello"
        await ws.send(frame)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code, closed.value
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert await healthz_latency(http) < HEALTHZ_BUDGET_S


async def test_one_mib_body_through_uvicorn_is_413(live: tuple[LiveServer, str]) -> None:
    server, key = live
    async with httpx.AsyncClient(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        payload = b'{"account_id": "big", "amount": 1, "ref": "' + b"x" * (1024 * 1024) + b'"}'
        declared = await http.post("/v1/holds", content=payload)
        streamed = await http.post("/v1/holds", content=chunked(payload))
        assert (declared.status_code, streamed.status_code) == (413, 413)
        assert (
            declared.json()["error"]
            == streamed.json()["error"]
            == {
                "code": "payload_too_large",
                "limit": MAX_BODY_BYTES,
                "message": f"Request body exceeds the limit of {MAX_BODY_BYTES} bytes",
            }
        )
        assert (await http.get("/v1/accounts/big")).status_code == 404  # nothing written
