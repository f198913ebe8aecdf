"""The JavaScript of seeds 000 and 001 (tests/e2e/seed_clients/), run unchanged by Node against a
live server: the page supplies only fetch's base URL and auth. Pay on success through the
simulated provider: a success charges once, a failure charges nothing, a 402 shows the seed's
message."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import REQUIRE_SERVICES, LiveServer, make_server_key

CLIENTS = Path(__file__).resolve().parent / "seed_clients"
DRIVER = CLIENTS / "driver.mjs"
WALLET = "0xAbCdEf0123456789abcdef0123456789ABCDEF01"
LOWER = WALLET.lower()
MIN_NODE = 18  # global fetch


def node_binary() -> str:
    """`node` (18+); skipped when missing, but a failure with CREDITSTREAM_REQUIRE_SERVICES=1."""
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "node is not installed: the seed clients are JavaScript (Node 18+ with fetch)"
    else:
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
        major = int(version.lstrip("v").split(".")[0] or 0) if version else 0
        if major < MIN_NODE:
            problem = f"node {version or '?'} is too old: the seed clients need global fetch"
    if problem is not None:
        if REQUIRE_SERVICES:
            pytest.fail(problem)
        pytest.skip(problem)
    assert node is not None
    return node


@dataclass
class Seeded:
    server: LiveServer
    http: httpx.AsyncClient  # with the server key
    key: str
    node: str

    async def token(self, account_id: str) -> str:
        response = await self.http.post("/v1/tokens", json={"account_id": account_id})
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token

    async def run(
        self, flow: str, args: dict[str, Any] | None = None, *, auth: str, token: str | None = None
    ) -> dict[str, Any]:
        """One flow of the driver; its JSON line (`result`, `seen`: the UI calls in order)."""
        env = {
            **os.environ,
            "CREDITSTREAM_URL": self.server.url,
            "CREDITSTREAM_AUTH": auth,
            "CREDITSTREAM_TOKEN": token or auth,
        }
        done = await asyncio.to_thread(
            subprocess.run,
            [self.node, str(DRIVER), flow, json.dumps(args or {})],
            capture_output=True,
            text=True,
            env=env,
            cwd=CLIENTS,
            timeout=120,
        )
        assert done.returncode == 0, f"{flow}: {done.stdout}\n{done.stderr}"
        lines = done.stdout.strip().splitlines()
        assert lines, f"{flow} printed nothing: {done.stderr}"
        output: dict[str, Any] = json.loads(lines[-1])
        return output

    async def account(self, account_id: str) -> dict[str, Any]:
        snapshot: dict[str, Any] = (await self.http.get(f"/v1/accounts/{account_id}")).json()
        return snapshot

    async def entries(self, account_id: str) -> list[dict[str, Any]]:
        response = await self.http.get(f"/v1/accounts/{account_id}/entries?limit=500")
        entries: list[dict[str, Any]] = response.json()["entries"]
        return entries


@pytest.fixture
async def seeded(
    sqlite_url: str, live_server_factory: Callable[..., LiveServer]
) -> AsyncIterator[Seeded]:
    node = node_binary()
    key = await make_server_key(sqlite_url)
    server = live_server_factory(sqlite_url)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as http:
        yield Seeded(server, http, key, node)


def kinds(entries: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in entries]


# --- seed 000 --------------------------------------------------------------------------------


async def test_seed000_success_is_charged_once(seeded: Seeded) -> None:
    token = await seeded.token("painter")
    out = await seeded.run(
        "start-generation",
        {"params": {"prompt": "a lighthouse at dusk", "delay_ms": 50}},
        auth=token,
    )
    assert [call["ui"] for call in out["seen"]] == ["updateBalanceDisplay", "displayVideo"]
    balance_shown, (video_url,) = out["seen"][0]["args"][0], out["seen"][1]["args"]
    assert balance_shown == 26  # 28 trial credits - one video (2), taken on success
    video = await seeded.http.get(video_url)
    assert video.status_code == 200 and video.content
    jobs = (await seeded.http.get("/v1/accounts/painter/jobs")).json()["jobs"]
    assert [(j["operation"], j["status"], j["cost"]) for j in jobs] == [("video", "success", 2)]
    # seed 000's other polling loop (checkStatus) on the same task: shows it, charges nothing more
    again = await seeded.run("check-status", {"taskId": jobs[0]["job_id"]}, auth=token)
    assert again["seen"] == [
        {"ui": "updateBalanceDisplay", "args": [26]},
        {"ui": "showSuccessNotification", "args": [video_url]},
    ]
    refreshed = await seeded.run("refresh-balance", auth=token)
    assert refreshed["seen"] == [{"ui": "updateBalanceDisplay", "args": [26]}]
    entries = await seeded.entries("painter")
    assert kinds(entries) == ["grant", "hold", "capture"]
    assert entries[-1]["amount"] == 2
    account = await seeded.account("painter")
    assert (account["balance"], account["held"], account["available"]) == (26, 0, 26)


async def test_seed000_failure_charges_nothing(seeded: Seeded) -> None:
    token = await seeded.token("unlucky")
    out = await seeded.run("start-generation", {"params": {"simulate": "fail"}}, auth=token)
    # "Do NOT refresh on failed status": the error is shown, the balance is not refreshed
    assert out["seen"] == [{"ui": "showError", "args": ["simulated provider failure"]}]
    job = (await seeded.http.get("/v1/accounts/unlucky/jobs")).json()["jobs"][0]
    checked = await seeded.run("check-status", {"taskId": job["job_id"]}, auth=token)
    assert checked["seen"] == [
        {"ui": "showErrorNotification", "args": ["simulated provider failure"]}
    ]
    assert kinds(await seeded.entries("unlucky")) == ["grant", "hold", "release"]
    account = await seeded.account("unlucky")
    assert (account["balance"], account["held"], account["available"]) == (28, 0, 28)


# --- seed 001 --------------------------------------------------------------------------------


async def test_seed001_award_generate_and_insufficient_credits(seeded: Seeded) -> None:
    token = await seeded.token(WALLET)
    points = await seeded.run("points", {"walletAddress": WALLET}, auth=token)
    assert points["result"] == 28 and points["seen"] == [
        {"ui": "updateCreditsDisplay", "args": [28]}
    ]
    # the seed's award body, sent from the product's backend with its server key
    awarded = await seeded.run("award", {"walletAddress": WALLET, "tier": 5}, auth=seeded.key)
    assert awarded["result"] == {
        "walletAddress": LOWER,
        "awardedPoints": 30,
        "newTotalPoints": 58,
        "contentType": None,
        "contentCredits": None,
    }
    # never on a browser's word: the user's own token may not award
    refused = await seeded.run("award", {"walletAddress": WALLET, "points": 150}, auth=token)
    assert refused["result"]["error"]["code"] == "forbidden"
    video = await seeded.run(
        "generate-video", {"walletAddress": WALLET, "script": "A tour"}, auth=token
    )
    assert video["result"]["status"] == "completed"
    assert video["result"]["creditsDeducted"] == 2 and video["result"]["remainingCredits"] == 56
    assert video["result"]["jobId"] == video["result"]["videoId"]
    assert video["seen"] == [{"ui": "updateCreditsDisplay", "args": [56]}]
    audio = await seeded.run(
        "generate-audio", {"walletAddress": WALLET, "script": "Hi"}, auth=token
    )
    assert audio["result"]["creditsDeducted"] == 1 and audio["result"]["remainingCredits"] == 55
    # spend down to 1 credit (the backend's one-step charge), then ask for a 2-credit video
    spent = await seeded.http.post(f"/v1/accounts/{LOWER}/charges", json={"amount": 54})
    assert spent.status_code == 201, spent.text
    before = await seeded.entries(LOWER)
    short = await seeded.run(
        "generate-video", {"walletAddress": WALLET, "script": "More"}, auth=token
    )
    assert short["result"] is None
    assert short["seen"] == [
        {"ui": "showMessage", "args": ["Insufficient credits. You need 1 more credits for this."]},
        {"ui": "promptToPurchase", "args": []},
    ]
    assert await seeded.entries(LOWER) == before  # nothing held, nothing charged
    account = await seeded.account(LOWER)
    assert (account["balance"], account["held"], account["plan"]) == (1, 0, "starter")
    captures = [e["amount"] for e in await seeded.entries(LOWER) if e["type"] == "capture"]
    assert captures == [2, 1]
