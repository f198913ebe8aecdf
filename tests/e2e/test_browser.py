"""The browser SDK and the demo page in a real Chromium against a live server (SPEC §4).

Chromium comes from Debian (`apt-get install -y chromium`), never from `playwright install`.
Without it, or without the `playwright` package, these tests skip; with
CREDITSTREAM_REQUIRE_SERVICES=1 (CI) they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest

from asgi import load_catalogue
from core.ports import SystemClock
from core.service import CreditService
from storage.keys import create_server_key
from storage.migrate import upgrade_async
from storage.sql import Database
from tests.support import REQUIRE_SERVICES, LiveServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

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
PUSH_MS = 1_000  # a committed change reaches the page within this, on any transport
SETTLE_MS = 20_000  # a reconnect waits out a randomised backoff first

T = TypeVar("T")


def _missing(what: str) -> None:
    message = f"browser tests need {what}"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion outside this thread, whose loop Playwright's sync API owns."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _server_key(database_url: str) -> str:
    await upgrade_async(database_url)
    db = Database.from_url(database_url)
    try:
        return await create_server_key(db, "browser-tests")
    finally:
        await db.dispose()


async def _grant_offline(database_url: str, account_id: str, amount: int) -> int:
    """A change committed while no server runs (as another instance would): the new balance."""
    db = Database.from_url(database_url)
    service = CreditService(SystemClock(), load_catalogue(None))
    try:
        async with db.transaction() as uow:
            _, account = await service.grant(uow, account_id, amount, "promo")
        return account.balance
    finally:
        await db.dispose()


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
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


@dataclass
class Served:
    server: LiveServer
    key: str
    database_url: str

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url, timeout=10, headers={"Authorization": f"Bearer {self.key}"}
        )


@pytest.fixture
def served(sqlite_url: str, live_server_factory: Any) -> Served:
    key = run_async(_server_key(sqlite_url))
    return Served(live_server_factory(sqlite_url, CREDITSTREAM_DEV="1"), key, sqlite_url)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    made = browser.new_context(viewport={"width": 900, "height": 700})
    yield made
    made.close()


# -- helpers ----------------------------------------------------------------------------------


def open_demo(
    context: BrowserContext,
    served: Served,
    query: str = "",
) -> tuple[Page, str, list[str]]:
    """The demo page once it shows a snapshot; its account id; uncaught page errors."""
    from playwright.sync_api import expect

    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(served.server.url + "/demo" + query)
    expect(page.locator("#balance")).to_have_text("28", timeout=SETTLE_MS)  # the trial grant
    return page, page.evaluate("window.demo.accountId"), errors


def hold_and_capture(http: httpx.Client, account_id: str, amount: int) -> int:
    """Spend through the REST API with a server key; the balance the API reports afterwards."""
    hold = http.post("/v1/holds", json={"account_id": account_id, "amount": amount})
    assert hold.status_code == 201, hold.text
    captured = http.post(f"/v1/holds/{hold.json()['hold']['hold_id']}/capture", json={})
    assert captured.status_code == 200, captured.text
    balance: int = captured.json()["account"]["balance"]
    return balance


def grant(http: httpx.Client, account_id: str, amount: int) -> int:
    response = http.post(
        f"/v1/accounts/{account_id}/grants", json={"amount": amount, "reason": "promo"}
    )
    assert response.status_code == 201, response.text
    balance: int = response.json()["account"]["balance"]
    return balance


def assert_delivered_exactly_once(page: Page, errors: list[str]) -> None:
    """Every event reached the callbacks once, in order, with no gap, and nothing threw."""
    seqs: list[int] = page.evaluate("window.demo.seqs")
    assert seqs, "no event reached the page"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert errors == []


# -- tests ------------------------------------------------------------------------------------


def test_a_rest_capture_shows_on_the_page_within_a_second(
    context: BrowserContext, served: Served
) -> None:
    from playwright.sync_api import expect

    page, account_id, errors = open_demo(context, served)
    expect(page.locator("#transport")).to_have_text("websocket")
    with served.http() as http:
        balance = hold_and_capture(http, account_id, 3)
        expect(page.locator("#balance")).to_have_text(str(balance), timeout=PUSH_MS)
    assert balance == 25
    expect(page.locator("#held")).to_have_text("0")
    expect(page.locator("#available")).to_have_text("25")
    assert_delivered_exactly_once(page, errors)


def test_after_a_server_restart_the_page_catches_up_and_stays_live(
    context: BrowserContext, served: Served
) -> None:
    from playwright.sync_api import expect

    page, account_id, errors = open_demo(context, served)
    expect(page.locator("#transport")).to_have_text("websocket")
    served.server.stop()  # SIGTERM: the server closes the socket with 1012
    expect(page.locator("#transport")).to_have_text("offline", timeout=SETTLE_MS)
    missed = run_async(_grant_offline(served.database_url, account_id, 7))
    assert missed == 35
    served.server.start()  # same port: the page's backoff finds it again

    expect(page.locator("#balance")).to_have_text("35", timeout=SETTLE_MS)
    # WebSockets worked before the outage, so the SDK must not have stepped down to a fallback
    expect(page.locator("#transport")).to_have_text("websocket", timeout=SETTLE_MS)
    with served.http() as http:
        balance = grant(http, account_id, 5)
        expect(page.locator("#balance")).to_have_text(str(balance), timeout=PUSH_MS)
    assert balance == 40
    assert_delivered_exactly_once(page, errors)


def test_with_websockets_blocked_the_page_updates_through_sse(
    context: BrowserContext, served: Served
) -> None:
    from playwright.sync_api import expect

    # the page sees every stream socket close before it opens, as behind a hostile proxy
    context.route_web_socket("**/v1/stream**", lambda ws: ws.close())
    page, account_id, errors = open_demo(context, served)
    expect(page.locator("#transport")).to_have_text("sse", timeout=SETTLE_MS)
    with served.http() as http:
        balance = hold_and_capture(http, account_id, 2)
        expect(page.locator("#balance")).to_have_text(str(balance), timeout=PUSH_MS)
    assert balance == 26
    assert_delivered_exactly_once(page, errors)


def test_without_websocket_and_eventsource_the_page_long_polls(
    context: BrowserContext, served: Served
) -> None:
    from playwright.sync_api import expect

    context.add_init_script("delete window.WebSocket; delete window.EventSource;")
    page, account_id, errors = open_demo(context, served)
    expect(page.locator("#transport")).to_have_text("polling", timeout=SETTLE_MS)
    with served.http() as http:
        balance = hold_and_capture(http, account_id, 4)
        expect(page.locator("#balance")).to_have_text(str(balance), timeout=PUSH_MS)
        balance = grant(http, account_id, 10)
        expect(page.locator("#balance")).to_have_text(str(balance), timeout=PUSH_MS)
    assert balance == 34
    assert_delivered_exactly_once(page, errors)


def test_the_job_list_follows_jobs_to_success_and_failure(
    context: BrowserContext, served: Served
) -> None:
    from playwright.sync_api import expect

    page, _, errors = open_demo(context, served)
    page.click("#start-job")
    done = page.locator("#jobs li[data-status=success]")
    expect(done).to_have_count(1, timeout=SETTLE_MS)
    expect(done.locator("a.result")).to_have_attribute("href", re.compile(r"\S+"))
    page.click("#start-failing-job")
    expect(page.locator("#jobs li[data-status=failed]")).to_have_count(1, timeout=SETTLE_MS)
    # pay on success: only the successful job was charged, and nothing stays held
    expect(page.locator("#balance")).to_have_text("27", timeout=PUSH_MS)
    expect(page.locator("#held")).to_have_text("0", timeout=PUSH_MS)
    assert_delivered_exactly_once(page, errors)


def stream_urls(context: BrowserContext) -> list[str]:
    """Every WebSocket and SSE URL the context's pages open, as they open them."""
    urls: list[str] = []
    context.on(
        "request",
        lambda request: urls.append(request.url) if "/v1/stream/sse" in request.url else None,
    )
    context.on("page", lambda page: page.on("websocket", lambda ws: urls.append(ws.url)))
    return urls


def test_the_sdk_opens_its_streams_with_one_use_tickets_not_the_token(
    context: BrowserContext, served: Served
) -> None:
    from playwright.sync_api import expect

    urls = stream_urls(context)
    page, account_id, errors = open_demo(context, served)
    expect(page.locator("#transport")).to_have_text("websocket")
    served.server.stop()  # the reconnect needs a new ticket: the first one is used
    expect(page.locator("#transport")).to_have_text("offline", timeout=SETTLE_MS)
    served.server.start()
    expect(page.locator("#transport")).to_have_text("websocket", timeout=SETTLE_MS)
    with served.http() as http:
        balance = hold_and_capture(http, account_id, 3)
        expect(page.locator("#balance")).to_have_text(str(balance), timeout=PUSH_MS)
    opened = [url for url in urls if "/v1/stream" in url]
    assert len(opened) >= 2, opened
    assert all("ticket=st_" in url and "token=" not in url for url in opened), opened
    tickets = [re.search(r"ticket=([^&]+)", url).group(1) for url in opened]  # type: ignore[union-attr]
    assert len(set(tickets)) == len(tickets), "a ticket is never reused"
    assert_delivered_exactly_once(page, errors)


def test_the_sdk_takes_tickets_over_sse_too(context: BrowserContext, served: Served) -> None:
    from playwright.sync_api import expect

    urls = stream_urls(context)
    context.route_web_socket("**/v1/stream**", lambda ws: ws.close())
    page, account_id, errors = open_demo(context, served)
    expect(page.locator("#transport")).to_have_text("sse", timeout=SETTLE_MS)
    with served.http() as http:
        balance = hold_and_capture(http, account_id, 2)
        expect(page.locator("#balance")).to_have_text(str(balance), timeout=PUSH_MS)
    sse = [url for url in urls if "/v1/stream/sse" in url]
    assert sse and all("ticket=st_" in url and "token=" not in url for url in sse), sse
    assert_delivered_exactly_once(page, errors)


def test_the_sdk_still_opens_streams_with_a_token_in_the_url(
    context: BrowserContext, served: Served
) -> None:
    from playwright.sync_api import expect

    urls = stream_urls(context)
    page, account_id, errors = open_demo(context, served, "?auth=token")
    expect(page.locator("#transport")).to_have_text("websocket")
    with served.http() as http:
        balance = grant(http, account_id, 4)
        expect(page.locator("#balance")).to_have_text(str(balance), timeout=PUSH_MS)
    opened = [url for url in urls if "/v1/stream" in url]
    assert opened and all("token=" in url and "ticket=" not in url for url in opened), opened
    assert_delivered_exactly_once(page, errors)
