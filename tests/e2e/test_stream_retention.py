"""G5 past the retention window: once `creditstream sweep` has pruned the stream journal's events
older than CREDITSTREAM_EVENTS_RETENTION_DAYS, a subscriber resuming from before the window gets
the account's snapshot with `reset: true` — over WebSocket, SSE and the long-poll — and one
resuming from inside the window gets every event after its position, with no gap.

Events are aged by moving their `created_at` back eight days, as a week going by would."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.e2e.stream_client import StreamClient
from tests.support import LiveServer, make_server_key

ROOT = Path(__file__).resolve().parents[2]
OLD, RECENT = 6, 4  # events aged past the window, then events inside it
pytestmark = pytest.mark.usefixtures("pg_url")


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def sweep(database_url: str) -> dict[str, Any]:
    """`creditstream sweep` once, as an operator or cron would run it."""
    env = {**os.environ, "CREDITSTREAM_DATABASE_URL": database_url}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli", "sweep"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture
async def pruned(pg_url: str, live_server_factory: Any) -> tuple[LiveServer, str, str]:
    """A server and an account whose first OLD events are gone past the window, RECENT kept."""
    key = await make_server_key(pg_url)
    # its own sweeper prunes on its first pass, then every 60 passes: not during the test
    server: LiveServer = live_server_factory(pg_url, CREDITSTREAM_SWEEP_INTERVAL_S="30")
    account = f"acct-{uuid.uuid4().hex[:12]}"
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10) as http:
        assert (await http.put(f"/v1/accounts/{account}")).status_code == 201
        head = (await http.get(f"/v1/accounts/{account}")).json()["seq"]
        while head < OLD + RECENT:
            grant = {"amount": 1, "reason": "purchase"}
            assert (
                await http.post(f"/v1/accounts/{account}/grants", json=grant)
            ).status_code == 201
            head = (await http.get(f"/v1/accounts/{account}")).json()["seq"]
    assert head == OLD + RECENT
    conn = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        await conn.execute(
            "UPDATE events SET created_at = created_at - interval '8 days' "
            "WHERE account_id = $1 AND seq <= $2",
            account,
            OLD,
        )
        report = await sweep(pg_url)
        assert report["events_pruned"] >= OLD
        kept = await conn.fetch(
            "SELECT seq FROM events WHERE account_id = $1 ORDER BY seq", account
        )
    finally:
        await conn.close()
    assert [r["seq"] for r in kept] == list(range(OLD + 1, OLD + RECENT + 1))
    return server, key, account


async def test_websocket_resume_before_the_window_gets_a_reset_snapshot(
    pruned: tuple[LiveServer, str, str],
) -> None:
    server, key, account = pruned
    client = StreamClient(server.url, key)
    await client.connect()
    try:
        await client.subscribe(account, after_seq=2)
        await client.wait_until(lambda: bool(client.of_type("snapshot")), 5)
        snapshot = client.of_type("snapshot")[0]
        assert snapshot["reset"] is True
        assert snapshot["seq"] == OLD + RECENT
        assert snapshot["account"]["seq"] == OLD + RECENT
        assert client.events(account) == []  # nothing from after the gap sent before it
        # live events go on from the snapshot's seq
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}
        ) as http:
            grant = {"amount": 1, "reason": "purchase"}
            assert (
                await http.post(f"/v1/accounts/{account}/grants", json=grant)
            ).status_code == 201
        await client.wait_for_seq(OLD + RECENT + 1)
        assert client.seqs(account) == [OLD + RECENT + 1]
    finally:
        await client.close()


async def test_websocket_resume_inside_the_window_replays_without_a_gap(
    pruned: tuple[LiveServer, str, str],
) -> None:
    server, key, account = pruned
    client = StreamClient(server.url, key)
    await client.connect()
    try:
        await client.subscribe(account, after_seq=OLD)  # the last pruned seq: nothing missing
        await client.wait_for_seq(OLD + RECENT)
        assert client.seqs(account) == list(range(OLD + 1, OLD + RECENT + 1))
        assert client.of_type("snapshot") == []
    finally:
        await client.close()


async def sse_frames(
    server: LiveServer, key: str, account: str, last_event_id: int, count: int
) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}", "Last-Event-ID": str(last_event_id)}
    frames: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        async with http.stream(
            "GET", f"/v1/stream/sse?account_id={account}", headers=headers
        ) as response:
            assert response.status_code == 200
            frame: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line == "" and "data" in frame:
                    if frame.get("event") != "subscribed":
                        frames.append({"event": frame.get("event"), **json.loads(frame["data"])})
                    if len(frames) == count:
                        return frames
                    frame = {}
                elif ":" in line and not line.startswith(":"):
                    name, _, value = line.partition(":")
                    frame[name] = value.strip()
    return frames


async def test_sse_resume_before_the_window_gets_a_reset_snapshot(
    pruned: tuple[LiveServer, str, str],
) -> None:
    server, key, account = pruned
    frames = await asyncio.wait_for(sse_frames(server, key, account, 1, 1), 10)
    assert frames[0]["event"] == "snapshot"
    assert frames[0]["reset"] is True
    assert frames[0]["seq"] == OLD + RECENT


async def test_sse_resume_inside_the_window_replays_without_a_gap(
    pruned: tuple[LiveServer, str, str],
) -> None:
    server, key, account = pruned
    frames = await asyncio.wait_for(sse_frames(server, key, account, OLD + 1, RECENT - 1), 10)
    assert [f["seq"] for f in frames] == list(range(OLD + 2, OLD + RECENT + 1))
    assert all(f["event"] == "balance.updated" for f in frames)


async def test_long_poll_resume_before_the_window_gets_a_reset_snapshot(
    pruned: tuple[LiveServer, str, str],
) -> None:
    server, key, account = pruned
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10) as http:
        # with `wait`: answered at once, not held until something new happens
        page = (await http.get(f"/v1/accounts/{account}/events?after_seq=0&wait=20")).json()
        assert page["reset"] is True
        assert page["next_after_seq"] == page["seq"] == OLD + RECENT
        [snapshot] = page["events"]
        assert snapshot["type"] == "snapshot" and snapshot["reset"] is True
        assert snapshot["account"]["seq"] == OLD + RECENT
        # inside the window: the events themselves, in order, no gap
        page = (await http.get(f"/v1/accounts/{account}/events?after_seq={OLD}")).json()
        assert "reset" not in page
        assert [e["seq"] for e in page["events"]] == list(range(OLD + 1, OLD + RECENT + 1))
        # at the head: nothing to send, and no reset either
        page = (await http.get(f"/v1/accounts/{account}/events?after_seq={OLD + RECENT}")).json()
        assert page["events"] == [] and "reset" not in page
