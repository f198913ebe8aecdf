"""The shipped deploy/nginx.conf (Debian's nginx; only upstreams, port and file paths substituted)
in front of two replicas on PostgreSQL + Redis, with a real Chromium page on nginx's own,
non-default port: the page's WebSocket must open (transport `websocket`, never `sse`) and stay
live across instances (issue 11, item 11: `Host $host` dropped the port, the Origin check failed
and the SDK silently fell back to SSE)."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.e2e.test_database_outage import append_to_report
from tests.support import REQUIRE_SERVICES, ROOT, LiveServer, free_port, make_server_key

if TYPE_CHECKING:
    from playwright.sync_api import Browser

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SETTLE_MS = 15_000
PUSH_MS = 1_000
PAGE_NAME = "page-behind-nginx.html"
PAGE = """<!doctype html><meta charset="utf-8"><title>creditstream behind nginx</title>
<script type="module">
  import { CreditStream } from "/static/creditstream.js";
  window.transports = [];
  window.balances = [];
  const token = decodeURIComponent(location.hash.slice("#token=".length));
  const stream = new CreditStream({ token });
  stream.onState((transport) => window.transports.push(transport));
  stream.onBalance((account) => window.balances.push(account.balance));
  window.stream = stream.connect();
</script>"""


def _missing(what: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"this test needs {what}")
    pytest.skip(f"this test needs {what}")


def render_shipped_config(prefix: Path, port: int, upstreams: list[int]) -> Path:
    """deploy/nginx.conf as shipped, with the compose service names, the listening port and
    every file path pointed at this test's own ports and directory; plus one static page, so the
    browser loads a real document from nginx's own origin (Chromium's local-network checks block
    a loopback WebSocket from a document that did not come from the network)."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    names = iter(upstreams)
    text, count = re.subn(
        r"server\s+app\d+:8000", lambda _: f"server 127.0.0.1:{next(names)}", text
    )
    assert count == len(upstreams), "the shipped config balances over app1 and app2"
    page = f"location = /{PAGE_NAME} {{ root {prefix / 'www'}; }}"
    text, count = re.subn(r"listen\s+8080\s*;", f"listen 127.0.0.1:{port};\n    {page}", text)
    assert count == 1, "the shipped config listens on 8080"
    # log files the config names (a format name after the path stays)
    text = re.sub(
        r"\b(access_log|error_log)\s+(?!off\b)[^\s;]+",
        lambda m: f"{m.group(1)} {prefix / (m.group(1) + '.log')}",
        text,
    )
    temp = "".join(
        f"  {kind}_temp_path {prefix / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    if "access_log" not in text:  # the compiled-in default is under /var/log
        temp += f"  access_log {prefix / 'access_log.log'};\n"
    text, count = re.subn(r"\bhttp\s*\{", lambda m: "http {\n" + temp, text, count=1)
    assert count == 1
    head = f"daemon off;\npid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'};\n"
    if os.geteuid() == 0:
        head += "user root;\n"  # workers may then read this test's private directory
    config = prefix / "nginx.conf"
    config.write_text(head + text)
    return config


@pytest.fixture
def nginx_binary() -> str:
    if not os.access(NGINX, os.X_OK):
        _missing(f"nginx at {NGINX} (apt-get install -y nginx)")
    return NGINX


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        _missing(f"Chromium at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _missing("the playwright package (pip install -e '.[test]')")
    playwright = sync_playwright().start()
    try:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
    except Error as exc:
        playwright.stop()
        _missing(f"a Chromium that starts: {exc}")
    yield launched
    launched.close()
    playwright.stop()


class Nginx:
    def __init__(self, binary: str, prefix: Path, upstreams: list[int]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = prefix
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi", "www"):
            (prefix / kind).mkdir(parents=True, exist_ok=True)
        (prefix / "www" / PAGE_NAME).write_text(PAGE)
        self.config = render_shipped_config(prefix, self.port, upstreams)
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        check = subprocess.run(
            [
                self.binary,
                "-t",
                "-c",
                str(self.config),
                "-p",
                str(self.prefix),
                "-e",
                str(self.prefix / "error.log"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert check.returncode == 0, check.stderr
        self.process = subprocess.Popen(
            [
                self.binary,
                "-c",
                str(self.config),
                "-p",
                str(self.prefix),
                "-e",
                str(self.prefix / "error.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.prefix / "error.log").read_text()
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"nginx did not answer: {(self.prefix / 'error.log').read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: fast shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def test_a_same_origin_page_on_a_non_default_port_gets_websockets_through_the_shipped_nginx(
    tmp_path: Path,
    nginx_binary: str,
    pg_url: str,
    redis_url: str,
    live_server_factory: Callable[..., LiveServer],
    browser: Browser,
) -> None:
    # (the browser fixture comes last: Playwright's sync API owns this thread's event loop)
    with ThreadPoolExecutor(1) as pool:
        key = pool.submit(asyncio.run, make_server_key(pg_url)).result()
    env = {
        "CREDITSTREAM_REDIS_URL": redis_url,
        "CREDITSTREAM_AUTO_MIGRATE": "0",
        "CREDITSTREAM_USER_TOKEN_SECRET": secrets.token_urlsafe(48),
    }
    replicas = [live_server_factory(pg_url, **env), live_server_factory(pg_url, **env)]
    proxy = Nginx(nginx_binary, tmp_path / "nginx", [r.port for r in replicas]).start()
    account = f"nginx-{uuid.uuid4().hex[:8]}"
    context = browser.new_context()
    try:
        with httpx.Client(
            base_url=proxy.url, timeout=10, headers={"Authorization": f"Bearer {key}"}
        ) as http:
            assert http.put(f"/v1/accounts/{account}").status_code == 201
            token = http.post("/v1/tokens", json={"account_id": account}).json()["token"]
            # the page, the SDK and the stream all come from nginx's origin; the token travels
            # in the fragment, which no request carries
            page_url = f"{proxy.url}/{PAGE_NAME}#token={token}"
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            started = time.monotonic()
            page.goto(page_url)
            page.wait_for_function(
                "window.transports && window.transports.includes('websocket')"
                " || window.transports.includes('sse')",
                timeout=SETTLE_MS,
            )
            opened_ms = (time.monotonic() - started) * 1000
            transports = page.evaluate("window.transports")
            assert transports == ["websocket"], f"the page fell back: {transports}"
            page.wait_for_function("window.balances.length > 0", timeout=SETTLE_MS)

            # writes land on both replicas (nginx round-robin); each reaches the page, whichever
            # replica holds its WebSocket
            balance = 0
            for _ in range(4):
                response = http.post(
                    f"/v1/accounts/{account}/grants", json={"amount": 5, "reason": "promo"}
                )
                assert response.status_code == 201, response.text
                balance = response.json()["account"]["balance"]
                page.wait_for_function(f"window.balances.at(-1) === {balance}", timeout=PUSH_MS)
            assert page.evaluate("window.transports") == ["websocket"]
            assert errors == []
            assert http.get("/readyz").status_code == 200
    finally:
        context.close()
        proxy.stop()
    line = (
        f"behind the shipped nginx (port {proxy.port}, two replicas on PostgreSQL + Redis): "
        f"a same-origin Chromium page reached transport websocket in {opened_ms:.0f} ms, "
        f"never sse; 4 grants through nginx each reached the page within {PUSH_MS} ms"
    )
    print("\n" + line)
    append_to_report(line)
