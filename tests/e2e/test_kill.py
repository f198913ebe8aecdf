"""Kill test: a mixed workload through two replicas while one is SIGKILLed and restarted three
times. Nothing is lost or duplicated: the audit passes, every key has one effect, every 2xx is in
the journal, no hold outlives its TTL, the client's tally equals the server's, and resuming
stream clients see every event once, in order. `--runslow` runs the long variant."""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from storage.audit import audit
from storage.sql import Database
from storage.tables import entries, holds
from tests.e2e.balancer import TcpBalancer
from tests.e2e.resuming import ResumingSubscriber, settle_and_stop
from tests.support import LiveServer, make_server_key

JOB_TTL_S = 4


@dataclass
class Tally:
    """What the client believes, from the answers it got."""

    account: str
    balance: int = 28
    open_holds: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, int] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)


@dataclass
class Stats:
    requests: int = 0
    retries: int = 0
    acknowledged: int = 0


class Client:
    def __init__(self, http: httpx.AsyncClient, stats: Stats) -> None:
        self.http, self.stats = http, stats

    async def post(
        self, tally: Tally, path: str, body: dict[str, Any], ok: tuple[int, ...] = (200, 201, 202)
    ) -> dict[str, Any]:
        """POST with one Idempotency-Key, retried with the same key until it is answered."""
        key = f"k-{uuid.uuid4().hex}"
        for _ in range(400):
            self.stats.requests += 1
            try:
                response = await self.http.post(path, json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code in ok:
                self.stats.acknowledged += 1
                tally.keys.append(key)
                result: dict[str, Any] = response.json()
                return result
            if response is not None and response.status_code not in (409, 502, 503):
                raise AssertionError(f"{path} {body}: {response.status_code} {response.text}")
            self.stats.retries += 1
            await asyncio.sleep(0.1)
        raise AssertionError(f"{path} was never answered")


async def worker(client: Client, tally: Tally, stop: asyncio.Event, rng: random.Random) -> None:
    a = tally.account
    await client.post(tally, f"/v1/accounts/{a}/grants", {"amount": 1000, "reason": "purchase"})
    tally.balance += 1000
    while not stop.is_set():
        roll = rng.random()
        if roll < 0.15:
            await client.post(
                tally, f"/v1/accounts/{a}/grants", {"amount": 7, "reason": "purchase"}
            )
            tally.balance += 7
        elif roll < 0.45:
            hold = (
                await client.post(
                    tally, "/v1/holds", {"account_id": a, "amount": 5, "ttl_seconds": 600}
                )
            )["hold"]
            tally.open_holds[hold["hold_id"]] = 5
        elif roll < 0.65 and tally.open_holds:
            hold_id = rng.choice(sorted(tally.open_holds))
            del tally.open_holds[hold_id]
            if rng.random() < 0.5:
                await client.post(tally, f"/v1/holds/{hold_id}/capture", {"amount": 3})
                tally.balance -= 3
            else:
                await client.post(tally, f"/v1/holds/{hold_id}/release", {})
        elif roll < 0.8:
            await client.post(tally, f"/v1/accounts/{a}/charges", {"amount": 2})
            tally.balance -= 2
        else:
            outcome = "fail" if rng.random() < 0.3 else "success"
            job = (
                await client.post(
                    tally,
                    "/v1/jobs",
                    {
                        "account_id": a,
                        "operation": "audio",
                        "ttl_seconds": JOB_TTL_S,
                        "input": {"simulate": outcome, "delay_ms": 50},
                    },
                )
            )["job"]
            tally.jobs[job["job_id"]] = job["cost"]
    for hold_id in list(tally.open_holds):
        await client.post(tally, f"/v1/holds/{hold_id}/release", {})
        del tally.open_holds[hold_id]


async def kill_and_restart(server: LiveServer, times: int, run_s: float) -> None:
    for _ in range(times):
        await asyncio.sleep(run_s / (times + 1))
        await asyncio.to_thread(server.stop, True)  # SIGKILL
        await asyncio.sleep(1)
        await asyncio.to_thread(server.start)


@pytest.mark.parametrize(
    "run_s", [pytest.param(60, id="60s"), pytest.param(300, id="300s", marks=pytest.mark.slow)]
)
async def test_sigkill_three_times_under_mixed_load(
    run_s: int, pg_url: str, redis_url: str, live_server_factory: Callable[..., LiveServer]
) -> None:
    key = await make_server_key(pg_url)
    env = {"CREDITSTREAM_REDIS_URL": redis_url, "CREDITSTREAM_SWEEP_INTERVAL_S": "0.5"}
    one, two = live_server_factory(pg_url, **env), live_server_factory(pg_url, **env)
    balancer = await TcpBalancer([one.port, two.port]).start()
    tallies = [Tally(f"kill-{uuid.uuid4().hex[:8]}-{i}") for i in range(6)]
    subscribers = [ResumingSubscriber(balancer.url, key, t.account) for t in tallies]
    readers = [asyncio.create_task(s.run()) for s in subscribers]
    stats, stop = Stats(), asyncio.Event()
    started = time.monotonic()
    async with httpx.AsyncClient(
        base_url=balancer.url, timeout=15, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        client = Client(http, stats)
        workers = [
            asyncio.create_task(worker(client, t, stop, random.Random(i)))
            for i, t in enumerate(tallies)
        ]
        killer = asyncio.create_task(kill_and_restart(one, 3, run_s))
        await asyncio.sleep(run_s)
        stop.set()
        await asyncio.gather(*workers, killer)
        await asyncio.sleep(JOB_TTL_S + 2)  # jobs whose provider died with its process time out
        for tally in tallies:
            for job_id, cost in tally.jobs.items():
                job = (await http.get(f"/v1/jobs/{job_id}")).json()
                assert job["status"] in ("success", "failed"), job
                if job["status"] == "success":
                    tally.balance -= cost
        server_view = {
            t.account: (await http.get(f"/v1/accounts/{t.account}")).json() for t in tallies
        }
    try:
        await settle_and_stop(
            subscribers, readers, {a: view["seq"] for a, view in server_view.items()}
        )
    finally:
        await balancer.stop()

    for tally in tallies:
        view = server_view[tally.account]
        assert (view["balance"], view["held"]) == (tally.balance, 0), tally.account
    for subscriber in subscribers:
        assert subscriber.seqs == list(range(1, server_view[subscriber.account]["seq"] + 1))
    db = Database.from_url(pg_url)
    try:
        async with db.read() as uow:
            checked, mismatches = await audit(uow.conn)
            effects: defaultdict[str, int] = defaultdict(int)
            for (key_used,) in await uow.conn.execute(
                sa.select(entries.c.idempotency_key).where(
                    entries.c.idempotency_key.is_not(None),
                    entries.c.type.in_(("grant", "hold", "capture", "release", "charge")),
                )
            ):
                effects[key_used] += 1
            overdue = (
                await uow.conn.execute(
                    sa.select(sa.func.count())
                    .select_from(holds)
                    .where(holds.c.status == "open", holds.c.expires_at < sa.func.now())
                )
            ).scalar_one()
    finally:
        await db.dispose()
    assert mismatches == []
    assert overdue == 0
    used = [k for t in tallies for k in t.keys]
    assert all(effects[k] == 1 for k in used), "a key without exactly one effect"
    assert set(effects) <= set(used)
    report = (
        f"kill test: {run_s} s, {stats.requests} requests, {stats.acknowledged} "
        f"acknowledged, {stats.retries} retries, 3 SIGKILLs, {len(used)} keys, "
        f"{sum(len(t.jobs) for t in tallies)} jobs, {checked} accounts audited, "
        f"{sum(len(s.seqs) for s in subscribers)} events streamed, "
        f"elapsed {time.monotonic() - started:.0f} s: 0 lost, 0 duplicated"
    )
    print("\n" + report)
    if path := os.environ.get("CREDITSTREAM_RELIABILITY_REPORT"):
        with open(path, "a") as out:
            out.write(report + "\n")
