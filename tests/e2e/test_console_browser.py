"""The operator console in Debian's Chromium against a live server: sign in through the link
`creditstream console` prints, find an account, grant credits, release a hold, and see a refund made in one tab
reach another tab's live view without a reload."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.e2e.test_browser import SETTLE_MS, browser, context, run_async  # noqa: F401
from tests.e2e.test_browser import _server_key as server_key

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

ROOT = Path(__file__).resolve().parents[2]
LIVE_MS = 10_000  # generous: the machine is shared; the stream pushes within a second


def printed_link(database_url: str, base_url: str, name: str) -> str:
    """The last line `creditstream console` prints."""
    done = subprocess.run(
        [sys.executable, "-m", "cli", "console", "--name", name, "--base-url", base_url],
        cwd=ROOT,
        env={**os.environ, "CREDITSTREAM_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def watch(page: Page) -> list[str]:
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on(
        "response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    return problems


def find(page: Page, account_id: str, balance: int) -> None:
    from playwright.sync_api import expect

    page.fill("#account-input", account_id)
    page.click("#find-form button[type=submit]")
    expect(page.locator("#balance")).to_have_text(str(balance), timeout=SETTLE_MS)
    expect(page.locator("#live")).to_have_text("websocket", timeout=SETTLE_MS)


def test_sign_in_grant_and_a_refund_reaches_another_tab_live(
    context: BrowserContext,  # noqa: F811 - the fixture imported above
    sqlite_url: str,
    live_server_factory: Any,
) -> None:
    from playwright.sync_api import expect

    key = run_async(server_key(sqlite_url))
    server = live_server_factory(sqlite_url, CREDITSTREAM_CONSOLE="1")
    account = "console-browser"
    with httpx.Client(
        base_url=server.url, timeout=10, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        assert http.put(f"/v1/accounts/{account}").status_code == 201
        charge = http.post(
            f"/v1/accounts/{account}/charges", json={"amount": 3, "reason": "generation"}
        )
        assert charge.status_code == 201, charge.text
        hold = http.post("/v1/holds", json={"account_id": account, "amount": 1, "ref": "stuck"})
        assert hold.status_code == 201, hold.text
    charge_id = charge.json()["charge"]["charge_id"]
    hold_id = hold.json()["hold"]["hold_id"]

    link = printed_link(sqlite_url, server.url, "Grace Hopper")
    assert link.startswith(server.url + "/console/sign-in?token=csi_")
    first = context.new_page()
    first_problems = watch(first)
    first.goto(link)
    assert first.url == server.url + "/console"
    expect(first.locator("#who")).to_contain_text("Grace Hopper", timeout=SETTLE_MS)
    find(first, account, 25)

    first.fill("#grant-amount", "40")
    first.fill("#grant-reason", "goodwill")
    first.click("#grant-form button[type=submit]")
    expect(first.locator("#message")).to_contain_text("Granted 40 credits", timeout=LIVE_MS)
    expect(first.locator("#balance")).to_have_text("65", timeout=LIVE_MS)
    grant_line = first.locator("#entries tbody tr", has_text="goodwill")
    expect(grant_line).to_contain_text("Grace Hopper", timeout=LIVE_MS)

    expect(first.locator("#held")).to_have_text("1")
    first.fill("#release-reason", "stuck job")
    first.click(f"#holds button[data-hold-id='{hold_id}']")
    expect(first.locator("#message")).to_contain_text(f"Released {hold_id}", timeout=LIVE_MS)
    expect(first.locator("#held")).to_have_text("0", timeout=LIVE_MS)
    expect(first.locator("#holds tbody tr")).to_have_count(0)
    release_line = first.locator("#entries tbody tr", has_text="stuck job")
    expect(release_line).to_contain_text("Grace Hopper", timeout=LIVE_MS)

    # a second tab (same session) follows the account; the first refunds
    second = context.new_page()
    second_problems = watch(second)
    second.goto(server.url + "/console")
    find(second, account, 65)
    first.select_option("#refund-kind", "charge_id")
    first.fill("#refund-id", charge_id)
    first.fill("#refund-amount", "2")
    first.fill("#refund-reason", "failed render")
    first.click("#refund-form button[type=submit]")
    expect(first.locator("#message")).to_contain_text("Refunded 2 credits", timeout=LIVE_MS)

    expect(second.locator("#balance")).to_have_text("67", timeout=LIVE_MS)
    refund_row = second.locator("#refunds tbody tr", has_text="failed render")
    expect(refund_row).to_contain_text("Grace Hopper", timeout=LIVE_MS)
    expect(second.locator("#entries tbody tr", has_text="failed render")).to_have_count(1)
    assert second.evaluate("performance.getEntriesByType('navigation').length") == 1  # no reload
    assert first_problems == [] and second_problems == [], (first_problems, second_problems)

    # the link was used: a fresh browser gets no session from it
    with httpx.Client(timeout=10) as plain:
        again = plain.get(link, follow_redirects=False)
    assert again.status_code == 401 and "set-cookie" not in again.headers


def test_console_page_is_off_by_default_and_strict_when_on(
    sqlite_url: str, live_server_factory: Any
) -> None:
    off = live_server_factory(sqlite_url)
    assert httpx.get(off.url + "/console", timeout=10).status_code == 404
    on = live_server_factory(sqlite_url, CREDITSTREAM_CONSOLE="1")
    page = httpx.get(on.url + "/console", timeout=10)
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert "<script>" not in page.text  # no inline script: the CSP would block it
    for asset in ("/console/console.js", "/console/console.css"):
        assert httpx.get(on.url + asset, timeout=10).status_code == 200
