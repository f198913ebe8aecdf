"""Security: each test here failed before its fix (docs/RELIABILITY.md, "Security").

1. payment webhooks are signed only with `CREDITSTREAM_PAYMENT_SECRET_<NAME>`;
2. only a server key names an external provider and its task id; a clash is a clear 409;
3. callbacks never follow the Host header, result URLs are relative;
4. `token=` never reaches a log line (the app's, uvicorn's, the shipped nginx's);
5. weak or placeholder secrets stop the start outside dev mode;
6. webhook rejection metrics are labelled by configured providers only;
7. odd input (non-ASCII digits, 5,000 digits, a non-ASCII header byte, no results yet) → 4xx;
8. silent and slow-header connections are cut off; long-polls count with the streams;
9. the Origin check compares the scheme; server keys can be revoked; results are inert; the
   dev-mode demo helpers answer only the demo page's own session, in JSON.

    .venv/bin/pytest tests/e2e/test_security.py -q
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from api.observability import REDACTED
from config import ConfigError, Settings
from core.signatures import sign
from providers import media
from providers.results import data_url
from storage.objects import disposition_for
from tests.conftest import ApiClient
from tests.support import ROOT, TEST_SECRET, LiveServer, free_port, make_server_key

BFL_SECRET = "whsec-security-bfl-generation-secret-0001"
GLOBAL_SECRET = "whsec-security-global-provider-secret-0002"
STRIPE_SECRET = "whsec-security-stripe-payment-secret-0003"


def report(line: str) -> None:
    """Print a figure and append it to $CREDITSTREAM_RELIABILITY_REPORT (docs/RELIABILITY.md)."""
    print(f"\n{line}")
    if path := os.environ.get("CREDITSTREAM_RELIABILITY_REPORT"):
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")


def signed(body: dict[str, Any], secret: str) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    return raw, {
        "Content-Type": "application/json",
        "X-Signature": sign(secret, raw, int(time.time())),
    }


class ServedByCli(LiveServer):
    """`creditstream serve`, as `make run` starts it."""

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "cli.py", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


class ServedByDockerfile(LiveServer):
    """The Dockerfile's CMD as shipped, on a free port of the loopback interface."""

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            dockerfile_cmd(self.port), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )


def dockerfile_cmd(port: int) -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^CMD\s+(\[.*?\])\s*$", text.replace("\\\n", " "), re.MULTILINE)
    assert match, "the Dockerfile has an exec-form CMD"
    cmd: list[str] = json.loads(match.group(1))
    assert cmd[0] == "uvicorn"
    cmd = [sys.executable, "-m", "uvicorn", *cmd[1:]]
    cmd[cmd.index("--host") + 1] = "127.0.0.1"
    cmd[cmd.index("--port") + 1] = str(port)
    return cmd


@pytest.fixture
def served(tmp_path: Path, sqlite_url: str) -> Iterator[Callable[..., tuple[LiveServer, str]]]:
    """Starts `creditstream serve` (or another LiveServer class) on a fresh SQLite database;
    returns the server and a server key."""
    servers: list[LiveServer] = []

    def start(kind: type[LiveServer] = ServedByCli, **env: str) -> tuple[LiveServer, str]:
        with ThreadPoolExecutor(1) as thread:  # callers may run inside an event loop
            key = thread.submit(asyncio.run, make_server_key(sqlite_url)).result()
        server = kind(
            {
                "CREDITSTREAM_DATABASE_URL": sqlite_url,
                "CREDITSTREAM_RESULTS_DIR": str(tmp_path / "results"),
                **env,
            }
        )
        server.log_path = tmp_path / f"server-{server.port}.log"
        servers.append(server)
        return server.start(), key

    yield start
    for server in servers:
        server.stop()


# --- 1. payment webhooks ------------------------------------------------------------------------


async def test_payment_webhooks_take_only_the_payment_providers_own_secret(
    api_factory: Callable[..., Any], database_url: str
) -> None:
    api: ApiClient = await api_factory(
        database_url,
        webhook_secret=GLOBAL_SECRET,
        webhook_secrets={"bfl": BFL_SECRET},
        payment_secrets={"stripe": STRIPE_SECRET},
    )
    await api.http.put("/v1/accounts/payee", headers=api.server())
    before = (await api.http.get("/v1/accounts/payee", headers=api.server())).json()
    attempts = [
        ("bfl", BFL_SECRET),  # the generation provider's own secret (the case)
        ("bfl", GLOBAL_SECRET),
        ("made-up-provider", GLOBAL_SECRET),
        ("stripe", BFL_SECRET),
        ("stripe", GLOBAL_SECRET),
    ]
    for number, (provider, secret) in enumerate(attempts):
        raw, headers = signed(
            {"event_id": f"evt-forged-{number}", "account_id": "payee", "points": 1_000_000}, secret
        )
        refused = await api.http.post(
            f"/v1/webhooks/payments/{provider}", content=raw, headers=headers
        )
        assert refused.status_code == 401, (provider, refused.text)
        assert refused.json()["error"]["code"] == "invalid_signature"
    after = (await api.http.get("/v1/accounts/payee", headers=api.server())).json()
    assert (after["balance"], after["seq"]) == (before["balance"], before["seq"])
    raw, headers = signed(
        {"event_id": "evt-real", "account_id": "payee", "points": 7}, STRIPE_SECRET
    )
    paid = await api.http.post("/v1/webhooks/payments/stripe", content=raw, headers=headers)
    assert paid.status_code == 200 and paid.json()["status"] == "awarded", paid.text
    assert paid.json()["account"]["balance"] == before["balance"] + 7
    # the payment secret signs payments only, never a generation provider's callback
    raw, headers = signed({"task_id": "nothing", "status": "SUCCESS"}, STRIPE_SECRET)
    assert (
        await api.http.post("/v1/webhooks/providers/bfl", content=raw, headers=headers)
    ).status_code == 401


def test_payment_secrets_come_from_their_own_variables() -> None:
    settings = Settings.from_env(
        {
            "CREDITSTREAM_WEBHOOK_SECRET": GLOBAL_SECRET,
            "CREDITSTREAM_WEBHOOK_SECRET_BFL": BFL_SECRET,
            "CREDITSTREAM_PAYMENT_SECRET_STRIPE": STRIPE_SECRET,
        }
    )
    assert settings.payment_secrets == {"stripe": STRIPE_SECRET}
    assert settings.webhook_secrets == {"bfl": BFL_SECRET}


# --- 2. provider task ids -----------------------------------------------------------------------


async def test_only_a_server_key_names_an_external_provider_or_task(
    api_factory: Callable[..., Any], database_url: str
) -> None:
    api: ApiClient = await api_factory(database_url, webhook_secrets={"bfl": BFL_SECRET})
    alice = api.user("alice")
    job = {"operation": "audio", "input": {"simulate": "hang"}}
    for extra in (
        {"provider": "bfl", "provider_task_id": "task-1001"},
        {"provider": "bfl"},
        {"provider": "simulated", "provider_task_id": "task-1001"},
    ):
        refused = await api.http.post("/v1/jobs", headers=alice, json={**job, **extra})
        assert refused.status_code == 403, (extra, refused.text)
        assert refused.json()["error"]["code"] == "external_provider_forbidden"
    assert (await api.http.post("/v1/jobs", headers=alice, json=job)).status_code == 202
    # bob's backend now creates the job for task-1001, and BFL's webhook completes bob's job
    await api.http.post(
        "/v1/accounts/bob/grants", headers=api.server(), json={"amount": 200, "reason": "purchase"}
    )
    created = await api.http.post(
        "/v1/jobs",
        headers=api.server(),
        json={
            "account_id": "bob",
            "operation": "audio",
            "provider": "bfl",
            "provider_task_id": "task-1001",
        },
    )
    assert created.status_code == 202, created.text
    raw, headers = signed({"task_id": "task-1001", "status": "FAILED", "error": "x"}, BFL_SECRET)
    done = await api.http.post("/v1/webhooks/providers/bfl", content=raw, headers=headers)
    assert done.status_code == 200 and done.json()["job"]["account_id"] == "bob"


async def test_a_provider_task_clash_is_a_clear_409(
    api_factory: Callable[..., Any], database_url: str
) -> None:
    api: ApiClient = await api_factory(database_url)
    h = api.server()
    await api.http.post(
        "/v1/accounts/carol/grants", headers=h, json={"amount": 200, "reason": "purchase"}
    )
    body = {
        "account_id": "carol",
        "operation": "audio",
        "provider": "bfl",
        "provider_task_id": "task-7",
    }
    first = await api.http.post("/v1/jobs", headers=h, json=body)
    assert first.status_code == 202
    again = await api.http.post("/v1/jobs", headers=h, json=body)
    assert again.status_code == 409
    error = again.json()["error"]
    assert error["code"] == "provider_task_conflict"
    assert (error["provider"], error["provider_task_id"]) == ("bfl", "task-7")
    assert error["job_id"] == first.json()["job"]["job_id"]
    # two at once: one job, and the other a clear 409 too (never concurrent_update)
    racing = await asyncio.gather(
        *(
            api.http.post("/v1/jobs", headers=h, json={**body, "provider_task_id": "task-8"})
            for _ in range(4)
        )
    )
    assert sorted(r.status_code for r in racing) == [202, 409, 409, 409]
    assert {r.json()["error"]["code"] for r in racing if r.status_code == 409} == {
        "provider_task_conflict"
    }
    account = (await api.http.get("/v1/accounts/carol", headers=h)).json()
    assert account["held"] == 2  # the two jobs' holds, nothing more


# --- 3. no SSRF through Host --------------------------------------------------------------------


async def test_callbacks_go_to_the_servers_own_address_never_the_host_header(
    served: Callable[..., tuple[LiveServer, str]],
) -> None:
    server, key = served()
    knocks: list[bytes] = []

    async def trap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        knocks.append(await reader.read(4096))
        writer.close()

    trap_server = await asyncio.start_server(trap, "127.0.0.1", 0)
    trap_port = trap_server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(
            base_url=server.url,
            timeout=10,
            headers={"Authorization": f"Bearer {key}", "Host": f"127.0.0.1:{trap_port}"},
        ) as http:
            created = await http.post(
                "/v1/jobs",
                json={"account_id": "ssrf", "operation": "audio", "input": {"delay_ms": 0}},
            )
            assert created.status_code == 202, created.text
            job_id = created.json()["job"]["job_id"]
            deadline = time.monotonic() + 10
            job: dict[str, Any] = {}
            while time.monotonic() < deadline:
                job = (await http.get(f"/v1/jobs/{job_id}")).json()
                if job["status"] != "processing":
                    break
                await asyncio.sleep(0.05)
            # the callback reached this server (its own listening address), not the Host's
            assert job["status"] == "success", job
            assert job["result_url"] == f"/results/{job_id}/result.wav"
            result = await http.get(job["result_url"])
            assert result.status_code == 200 and result.content.startswith(b"RIFF")
    finally:
        trap_server.close()
        await trap_server.wait_closed()
    assert knocks == []


# --- 4. tokens in logs --------------------------------------------------------------------------


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_tokens_are_redacted_in_every_log_line(
    served: Callable[..., tuple[LiveServer, str]], log_format: str
) -> None:
    server, key = served(CREDITSTREAM_LOG_FORMAT=log_format)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        minted = await http.post(
            "/v1/tokens", headers={"Authorization": f"Bearer {key}"}, json={"account_id": "logged"}
        )
        token = minted.json()["token"]
        await http.put("/v1/accounts/logged", headers={"Authorization": f"Bearer {key}"})
        async with http.stream("GET", f"/v1/stream/sse?token={token}&after_seq=0") as sse:
            assert sse.status_code == 200
            async for line in sse.aiter_lines():
                if line.startswith("event: subscribed"):
                    break
        await http.get(f"/v1/accounts/logged/events?token={token}&x=1")
        await http.get(f"/healthz?access_token={token}")
    ws_url = server.url.replace("http", "ws") + f"/v1/stream?token={token}"
    async with websockets.connect(ws_url) as ws:
        assert json.loads(await ws.recv())["type"] == "hello"
    await asyncio.sleep(0.3)  # the access log line of the close
    log = server.log_path.read_text()
    secret_part = token.split(".")[2]
    assert secret_part not in log and key not in log
    assert f"token={REDACTED}" in log
    if log_format == "text":  # uvicorn's own access log is on: its lines are redacted too
        assert re.search(
            r'"GET /v1/stream/sse\?token=\[redacted\]&after_seq=0 HTTP/1.1" 200', log
        ), log[-2000:]


def test_shipped_nginx_logs_no_query_string(tmp_path: Path) -> None:
    """deploy/nginx.conf as shipped (upstream, port and paths substituted) in front of a tiny
    HTTP server: a request with `?token=` leaves no token in nginx's access log."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        pytest.skip("needs nginx")
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(16)
    port = free_port()
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    text = re.sub(r"server\s+app\d+:8000", f"server 127.0.0.1:{upstream.getsockname()[1]}", text)
    text = re.sub(r"listen\s+8080\s*;", f"listen 127.0.0.1:{port};", text)
    text = re.sub(
        r"\b(access_log|error_log)\s+(?!off\b)[^\s;]+",
        lambda m: f"{m.group(1)} {tmp_path / (m.group(1) + '.log')}",
        text,
    )
    temps = "".join(
        f"  {kind}_temp_path {tmp_path / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = re.sub(r"\bhttp\s*\{", lambda m: "http {\n" + temps, text, count=1)
    head = f"daemon off;\npid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\n" + (
        "user root;\n" if os.geteuid() == 0 else ""
    )
    (tmp_path / "nginx.conf").write_text(head + text)
    proxy = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2VjcmV0LXNpZ25hdHVyZQ"
    try:
        answered = False
        deadline = time.monotonic() + 10
        while not answered and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as client:
                    client.sendall(
                        f"GET /v1/stream/sse?account_id=a&token={token} HTTP/1.1\r\n"
                        f"Host: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
                    )
                    conn, _ = upstream.accept()
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                    conn.close()
                    client.recv(1024)
                    answered = True
            except OSError:
                time.sleep(0.1)
        assert answered, "nginx did not answer"
        access = tmp_path / "access_log.log"
        deadline = time.monotonic() + 5
        while (not access.exists() or not access.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        line = access.read_text()
        assert "/v1/stream/sse" in line and "token" not in line and token not in line, line
    finally:
        proxy.terminate()
        proxy.wait(10)
        upstream.close()


# --- 5. weak secrets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variable, value",
    [
        ("CREDITSTREAM_USER_TOKEN_SECRET", "a"),
        ("CREDITSTREAM_USER_TOKEN_SECRET", "change-me-to-a-long-random-secret-of-48-bytes-or-more"),
        ("CREDITSTREAM_WEBHOOK_SECRET", "change-me-webhook-secret"),
        ("CREDITSTREAM_WEBHOOK_SECRET_BFL", "short-bfl-secret"),
        ("CREDITSTREAM_PAYMENT_SECRET_STRIPE", "x" * 64),
    ],
)
def test_weak_or_placeholder_secrets_stop_the_start(variable: str, value: str) -> None:
    env = {"CREDITSTREAM_USER_TOKEN_SECRET": TEST_SECRET, variable: value}
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env).check_secrets()
    Settings.from_env({**env, "CREDITSTREAM_DEV": "1"}).check_secrets()  # dev mode allows them


def test_a_weak_secret_stops_a_real_start_with_a_clear_error(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CREDITSTREAM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/db.sqlite",
        "CREDITSTREAM_USER_TOKEN_SECRET": "change-me-webhook-secret",
    }
    env.pop("CREDITSTREAM_DEV", None)
    started = subprocess.run(
        [sys.executable, "-m", "uvicorn", "asgi:app", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert "CREDITSTREAM_USER_TOKEN_SECRET" in started.stderr
    assert "Traceback" not in started.stderr, started.stderr


def test_compose_takes_secrets_from_the_environment() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    secrets_set = re.findall(r"^\s*(CREDITSTREAM_\w*SECRET\w*):\s*(.+)$", compose, re.MULTILINE)
    assert secrets_set, "compose configures the app's secrets"
    for name, value in secrets_set:
        assert re.fullmatch(rf"\$\{{{name}:[?-].*\}}", value.strip()), (name, value)
    assert "${CREDITSTREAM_USER_TOKEN_SECRET:?" in compose  # required, not defaulted
    assert "change-me" not in compose


# --- 6. metrics labels --------------------------------------------------------------------------


async def test_webhook_rejection_metrics_label_only_configured_providers(
    api_factory: Callable[..., Any], sqlite_url: str
) -> None:
    api: ApiClient = await api_factory(
        sqlite_url,
        webhook_secret=GLOBAL_SECRET,
        webhook_secrets={"bfl": BFL_SECRET},
        payment_secrets={"stripe": STRIPE_SECRET},
    )
    for number in range(200):
        kind = "payments" if number % 2 else "providers"
        await api.http.post(
            f"/v1/webhooks/{kind}/random-{secrets.token_hex(6)}",
            content=b"{}",
            headers={"X-Signature": "t=1,v1=00"},
        )
    for kind, provider in (("providers", "bfl"), ("payments", "stripe")):
        await api.http.post(
            f"/v1/webhooks/{kind}/{provider}", content=b"{}", headers={"X-Signature": "t=1,v1=00"}
        )
    text = (await api.http.get("/metrics")).text
    labels = set(re.findall(r'creditstream_webhook_rejections_total\{provider="([^"]*)"', text))
    assert labels == {"other", "bfl", "stripe"}, labels
    report(
        f"security (metrics): 202 rejected webhooks, 200 of them to random provider names: "
        f"{len(labels)} provider labels ({', '.join(sorted(labels))})"
    )


# --- 7. odd input -------------------------------------------------------------------------------

# header bytes as a client may send them: "²" as its Latin-1 byte (Starlette decodes headers as
# Latin-1, so it arrives as "²", a str.isdigit() digit) and in UTF-8
ODD_SIGNATURES = [
    b"t=\xb2,v1=00",
    "t=²,v1=00".encode(),
    b"t=" + b"1" * 5000 + b",v1=00",
    b"t=1,v1=\xb2",
    "t=١٢٣,v1=00".encode(),
]


@pytest.fixture
async def odd_api(api_factory: Callable[..., Any], sqlite_url: str) -> ApiClient:
    api: ApiClient = await api_factory(
        sqlite_url, webhook_secrets={"bfl": BFL_SECRET}, payment_secrets={"stripe": STRIPE_SECRET}
    )
    await api.http.put("/v1/accounts/odd", headers=api.server())
    return api


async def test_odd_input_is_a_4xx_never_a_500(odd_api: ApiClient) -> None:
    api = odd_api
    h = api.server()
    answers: dict[str, httpx.Response] = {}
    for number, header in enumerate(ODD_SIGNATURES):
        for path in ("/v1/webhooks/providers/bfl", "/v1/webhooks/payments/stripe"):
            answers[f"{path} {number}"] = await api.http.post(
                path,
                content=b'{"event_id": "e", "account_id": "odd", "points": 1}',
                headers=[(b"X-Signature", header), (b"Content-Type", b"application/json")],
            )
    for name, after_seq in (
        ("superscript", "²"),
        ("5000 digits", "9" * 5000),
        ("past bigint", str(2**63)),
    ):
        answers[f"sse after_seq {name}"] = await api.http.get(
            f"/v1/stream/sse?account_id=odd&after_seq={after_seq}", headers=h
        )
    answers["sse Last-Event-ID \\xb2"] = await api.http.get(
        "/v1/stream/sse?account_id=odd",
        headers=[(b"authorization", f"Bearer {api.key}".encode()), (b"last-event-id", b"\xb2")],
    )
    answers["grant tier ²"] = await api.http.post(
        "/v1/accounts/odd/grants", headers=h, json={"tier": "²"}
    )
    answers["grant tier 5000 digits"] = await api.http.post(
        "/v1/accounts/odd/grants", headers=h, json={"tier": "1" * 5000}
    )
    answers["seed award tier ²"] = await api.http.post(
        "/api/payments/award", headers=h, json={"walletAddress": "odd", "tier": "²"}
    )
    raw, headers = signed({"event_id": "e-tier", "account_id": "odd", "tier": "²"}, STRIPE_SECRET)
    answers["payment tier ²"] = await api.http.post(
        "/v1/webhooks/payments/stripe", content=raw, headers=headers
    )
    answers["results before any exist"] = await api.http.get("/results/job_x/result.png")
    wrong = [
        f"{name}: {r.status_code} {r.text[:120]}"
        for name, r in answers.items()
        if not 400 <= r.status_code < 500
        or r.headers.get("content-type") != "application/json"
        or "error" not in r.json()
    ]
    assert not wrong, "\n".join(wrong)
    assert answers["results before any exist"].status_code == 404
    report(f"security (odd input): {len(answers)} cases, 0 server errors")
    seq = (await api.http.get("/v1/accounts/odd", headers=h)).json()["seq"]
    assert seq == 1  # the trial grant only: nothing else was written


# --- 8. resource limits -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [ServedByCli, ServedByDockerfile], ids=["serve", "dockerfile"])
def test_silent_and_slow_header_connections_are_cut_off(
    served: Callable[..., tuple[LiveServer, str]], kind: type[LiveServer]
) -> None:
    server, _ = served(kind, CREDITSTREAM_HEADER_TIMEOUT_S="1")
    clients = {
        "silent": [],
        "partial request line": [b"GET /heal"],
        "headers a byte at a time": [b"GET /healthz HTTP/1.1\r\n"]
        + [bytes([c]) for c in b"Host: 127.0.0.1\r\nX-Slow: yes\r\n"],
    }
    took: dict[str, float] = {}
    answers: dict[str, bytes] = {}
    for name, pieces in clients.items():
        with socket.create_connection(("127.0.0.1", server.port), timeout=8) as sock:
            started = time.monotonic()
            received = b""
            try:
                for piece in pieces:
                    sock.sendall(piece)
                    time.sleep(0.1)
                while chunk := sock.recv(4096):  # until the server closes the connection
                    received += chunk
            except (BrokenPipeError, ConnectionResetError):
                pass  # cut off while still sending: what this test wants
            took[name] = time.monotonic() - started
            answers[name] = received
    assert all(elapsed < 5 for elapsed in took.values()), took
    report(
        f"security (header deadline 1 s, {(kind.__doc__ or '').split(',')[0].strip()}): "
        + ", ".join(f"{name} cut off after {elapsed:.2f} s" for name, elapsed in took.items())
    )
    assert answers["silent"].startswith(b"HTTP/1.1 408"), answers
    assert answers["partial request line"].startswith(b"HTTP/1.1 408"), answers
    # a whole request, and a WebSocket open past the header deadline, are unaffected
    assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
    with socket.create_connection(("127.0.0.1", server.port), timeout=8) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 431")


def test_a_keep_alive_requests_headers_get_their_own_deadline(
    served: Callable[..., tuple[LiveServer, str]],
) -> None:
    """The deadline runs from each request's first byte: a second request on a kept-alive
    connection, begun 0.7 s after the connection opened and sent a byte at a time, is cut off
    about a second after it began — neither at the first request's deadline nor never."""
    server, _ = served(CREDITSTREAM_HEADER_TIMEOUT_S="1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=8) as sock:
        opened = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(4096)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        length = int(
            next(
                line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
            ).split(b":")[1]
        )
        while len(body) < length:
            body += sock.recv(4096)
        time.sleep(max(0.0, 0.7 - (time.monotonic() - opened)))
        began = time.monotonic()
        received = b""
        try:
            for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: yes, very\r\n":
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
                if time.monotonic() - began > 4:
                    break
            while chunk := sock.recv(4096):
                received += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass  # cut off while still sending (its 408 may be lost with the reset)
        cut_after = time.monotonic() - began
    assert not received or received.startswith(b"HTTP/1.1 408"), received
    assert 0.8 < cut_after < 2.5, cut_after


async def test_websockets_outlive_the_header_deadline(
    served: Callable[..., tuple[LiveServer, str]],
) -> None:
    server, key = served(CREDITSTREAM_HEADER_TIMEOUT_S="1")
    async with websockets.connect(
        server.url.replace("http", "ws") + "/v1/stream",
        additional_headers={"Authorization": f"Bearer {key}"},
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "hello"
        await asyncio.sleep(2)
        await ws.send(json.dumps({"op": "ping"}))
        assert json.loads(await ws.recv())["type"] == "pong"


async def test_long_polls_count_in_the_per_account_stream_limit(
    api_factory: Callable[..., Any], sqlite_url: str
) -> None:
    api: ApiClient = await api_factory(sqlite_url, max_streams_per_account=3)
    await api.http.put("/v1/accounts/poller", headers=api.server())
    me = api.user("poller")
    url = "/v1/accounts/poller/events?after_seq=1&wait=3"
    polls = [asyncio.create_task(api.http.get(url, headers=me)) for _ in range(3)]
    await asyncio.sleep(0.5)
    extra = await api.http.get(url, headers=me)
    assert extra.status_code == 429 and extra.json()["error"]["code"] == "too_many_connections"
    sse = await api.http.get("/v1/stream/sse", headers=me)  # the streams share the limit
    assert sse.status_code == 429
    assert (
        await api.http.get("/v1/accounts/poller/events?after_seq=0", headers=me)
    ).status_code == 200  # no wait: not a stream
    assert (
        await api.http.get(url.replace("wait=3", "wait=0.1"), headers=api.server())
    ).status_code == 200  # server keys are not limited per account
    assert [r.status_code for r in await asyncio.gather(*polls)] == [200] * 3
    assert (
        await api.http.get("/v1/accounts/poller/events?after_seq=1&wait=0.1", headers=me)
    ).status_code == 200  # admitted again


# --- 9. origin scheme, key revocation, inert results, the demo's session ------------------------


async def test_origin_check_compares_the_scheme(
    served: Callable[..., tuple[LiveServer, str]],
) -> None:
    server, key = served()
    host = server.url.removeprefix("http://")
    ws_url = f"ws://{host}/v1/stream"
    for origin in (f"evil://{host}", f"https://{host}", f"http://{host}.evil.example"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(
                ws_url,
                origin=origin,  # type: ignore[arg-type]
                additional_headers={"Authorization": f"Bearer {key}"},
            )
        assert refused.value.response.status_code == 403, origin
    async with websockets.connect(
        ws_url,
        origin=f"http://{host}",  # type: ignore[arg-type]
        additional_headers={"Authorization": f"Bearer {key}"},
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "hello"
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        sse = await http.get("/v1/stream/sse?account_id=x", headers={"Origin": f"evil://{host}"})
        assert sse.status_code == 403
        own = await http.get("/v1/stream/sse?account_id=x", headers={"Origin": f"http://{host}"})
        assert own.status_code == 401  # past the origin check: no token


async def test_revoked_server_key_is_refused_on_every_instance_within_seconds(
    api_factory: Callable[..., Any], sqlite_url: str
) -> None:
    first: ApiClient = await api_factory(sqlite_url)
    second: ApiClient = await api_factory(sqlite_url)
    for instance in (first, second):  # both instances know (and cache) the key
        assert (
            await instance.http.put("/v1/accounts/keyed", headers=first.server())
        ).status_code in (200, 201)
    env = {**os.environ, "CREDITSTREAM_DATABASE_URL": sqlite_url}
    listed = subprocess.run(
        [sys.executable, "cli.py", "keys", "list"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    ids = re.findall(r"^(key_\w+)\s+tests\s", listed.stdout, re.MULTILINE)
    assert len(ids) == 2  # one per instance of this test
    ambiguous = subprocess.run(
        [sys.executable, "cli.py", "keys", "revoke", "key_"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ambiguous.returncode == 1 and "2 server keys match" in ambiguous.stderr
    revoked = subprocess.run(
        [sys.executable, "cli.py", "keys", "revoke", first.key],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert revoked.returncode == 0, revoked.stderr
    started = time.monotonic()
    refused: dict[int, float] = {}
    while len(refused) < 2 and time.monotonic() - started < 10:
        for number, instance in enumerate((first, second)):
            if number not in refused:
                answer = await instance.http.get("/v1/accounts/keyed", headers=first.server())
                if answer.status_code == 401:
                    assert answer.json()["error"]["code"] == "invalid_key"
                    refused[number] = time.monotonic() - started
        await asyncio.sleep(0.1)
    assert len(refused) == 2 and max(refused.values()) < 4, refused
    report(
        "security (key revocation): refused on both instances "
        f"{max(refused.values()):.2f} s after `creditstream keys revoke`"
    )
    assert (
        await second.http.get("/v1/accounts/keyed", headers=second.server())
    ).status_code == 200  # the other key still works
    listed = subprocess.run(
        [sys.executable, "cli.py", "keys", "list"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    active = re.findall(r"^(key_\w+)\s+tests\s.*active$", listed.stdout, re.MULTILINE)
    assert len(active) == 1 and "revoked" in listed.stdout
    by_prefix = subprocess.run(
        [sys.executable, "cli.py", "keys", "revoke", active[0][:14]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert by_prefix.returncode == 0, by_prefix.stderr
    await asyncio.sleep(2.5)
    assert (await second.http.get("/v1/accounts/keyed", headers=second.server())).status_code == 401


async def test_a_revoked_server_keys_stream_subscribes_no_more_within_seconds(
    served: Callable[..., tuple[LiveServer, str]], sqlite_url: str
) -> None:
    server, key = served()
    ws_url = server.url.replace("http", "ws") + "/v1/stream"
    auth = {"Authorization": f"Bearer {key}"}
    async with websockets.connect(ws_url, additional_headers=auth) as ws:
        assert json.loads(await ws.recv())["type"] == "hello"
        await ws.send(json.dumps({"op": "subscribe", "account_id": "kept", "after_seq": 0}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        env = {**os.environ, "CREDITSTREAM_DATABASE_URL": sqlite_url}
        revoked = subprocess.run(
            [sys.executable, "cli.py", "keys", "revoke", key],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert revoked.returncode == 0, revoked.stderr
        started = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            for number in range(100):  # a subscribe every 0.1 s until one is refused
                await ws.send(
                    json.dumps({"op": "subscribe", "account_id": f"new{number}", "after_seq": 0})
                )
                assert json.loads(await ws.recv())["type"] == "subscribed"
                await asyncio.sleep(0.1)
        refused_after = time.monotonic() - started
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "invalid_key")
    assert refused_after < 4, refused_after
    with pytest.raises(websockets.ConnectionClosed) as new:  # and a new stream is refused
        async with websockets.connect(ws_url, additional_headers=auth) as ws:
            await ws.recv()
            await ws.recv()
    assert new.value.rcvd is not None and new.value.rcvd.code == 4401


async def test_results_are_served_inert(api_factory: Callable[..., Any], sqlite_url: str) -> None:
    api: ApiClient = await api_factory(sqlite_url)
    h = api.server()
    await api.http.post(
        "/v1/accounts/artist/grants", headers=h, json={"amount": 100, "reason": "purchase"}
    )
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.domain)</script></svg>'
    served_results = {}
    for name, data, content_type in (
        ("svg", svg, "image/svg+xml"),
        ("png", media.png(3), "image/png"),
    ):
        job = (
            await api.http.post(
                "/v1/jobs",
                headers=h,
                json={"account_id": "artist", "operation": "audio", "provider": "worker"},
            )
        ).json()["job"]
        done = await api.http.post(
            f"/v1/jobs/{job['job_id']}/result",
            headers=h,
            json={"status": "success", "result_url": data_url(data, content_type)},
        )
        assert done.status_code == 200, done.text
        served_results[name] = await api.http.get(done.json()["job"]["result_url"])
    for response in served_results.values():
        assert response.status_code == 200
        assert response.headers["x-content-type-options"] == "nosniff"
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "sandbox" in csp and "script-src" not in csp
    assert served_results["svg"].headers["content-disposition"].startswith("attachment")
    assert "content-disposition" not in served_results["png"].headers
    for active in (
        "text/html",
        "image/svg+xml",
        "application/xml",
        "text/javascript",
        "application/octet-stream",
    ):
        assert (disposition_for(active, "r.x") or "").startswith("attachment"), active


async def test_demo_helpers_need_the_demo_session_and_json(
    api_factory: Callable[..., Any], sqlite_url: str
) -> None:
    api: ApiClient = await api_factory(sqlite_url, dev=True)
    http = api.http
    # a cross-site POST carries no session (SameSite=Strict), text/plain needs no preflight
    for path, body in (("/demo/session", {}), ("/demo/credits", {"account_id": "demo-x"})):
        forged = await http.post(
            path, content=json.dumps(body), headers={"Content-Type": "text/plain"}
        )
        assert forged.status_code in (403, 415), forged.text
        no_session = await http.post(path, json=body)
        assert no_session.status_code == 403
        assert no_session.json()["error"]["code"] == "demo_session_required"
    page = await http.get("/demo")
    cookie = page.headers["set-cookie"].lower()
    assert "samesite=strict" in cookie and "httponly" in cookie and "path=/demo" in cookie
    plain = await http.post("/demo/session", content=b"{}", headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415
    session = await http.post("/demo/session", json={})
    assert session.status_code == 200 and session.json()["account_id"].startswith("demo-")
    account = session.json()["account_id"]
    assert (await http.post("/demo/credits", json={"account_id": account})).status_code == 201
    for foreign in ("alice", "0x" + "ab" * 20):  # not a demo account
        assert (await http.post("/demo/session", json={"account_id": foreign})).status_code == 403
        assert (await http.post("/demo/credits", json={"account_id": foreign})).status_code == 403
    http.cookies.clear()
    http.cookies.set("creditstream_demo", "forged.0000", domain="creditstream.test", path="/demo")
    assert (await http.post("/demo/session", json={})).status_code == 403
