"""Failover and switchover under load: two app instances on a multi-host URL in front of a
Patroni cluster (etcd + two PostgreSQL 15 nodes, synchronous replication, the shipped
deploy/ha/patroni.yml), the history workload (tests/history.py) and live WebSocket and SSE
subscribers, while (a) the leader's Patroni and postmaster are SIGKILLed and (b) `patronictl
switchover` moves the primary back. Nothing acknowledged is lost or doubled, the audit is clean on
the new primary, every subscriber saw each account's journal in order with no gap or duplicate,
/readyz says 503 while there is no primary and 200 after, and neither instance restarted. The
write outage and the first write after it are measured for docs/RELIABILITY.md."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator

import asyncpg
import httpx
import pytest

from tests.conftest import unavailable
from tests.e2e.balancer import TcpBalancer
from tests.e2e.resuming import ResumingSseSubscriber, ResumingSubscriber, settle_and_stop
from tests.history import (
    HistoryClient,
    Tally,
    WriteLog,
    check_history,
    final_views,
    run_workers,
)
from tests.patroni_cluster import PatroniCluster, missing_tools
from tests.receiver import Receiver
from tests.support import LiveServer, make_server_key

EVENT_TYPES = ["balance.updated", "job.updated", "credits.low"]
ACCOUNTS = 4
WORKERS_PER_ACCOUNT = 3
SETTLE_S = 4.0  # load after each fault has been recovered from


@pytest.fixture
def patroni_cluster() -> Iterator[PatroniCluster]:
    missing = missing_tools()
    if missing:
        unavailable("Patroni and etcd", FileNotFoundError(", ".join(missing)))
    if os.geteuid() != 0:
        unavailable("root (to run PostgreSQL as postgres)", PermissionError("not root"))
    cluster = PatroniCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


class ReadinessProbe:
    """Polls each instance's /readyz, remembering every (time, port, status)."""

    def __init__(self, servers: list[LiveServer]) -> None:
        self.servers = servers
        self.seen: list[tuple[float, int, int | None]] = []
        self.stopping = False

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=2) as http:
            while not self.stopping:
                for server in self.servers:
                    try:
                        status: int | None = (await http.get(server.url + "/readyz")).status_code
                    except httpx.HTTPError:
                        status = None
                    self.seen.append((time.monotonic(), server.port, status))
                await asyncio.sleep(0.2)

    def statuses(self, port: int, after: float, before: float) -> set[int | None]:
        return {s for t, p, s in self.seen if p == port and after <= t <= before}


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)
    return time.monotonic()


async def test_failover_and_switchover_under_history_load(
    patroni_cluster: PatroniCluster,
    redis_url: str,
    live_server_factory: Callable[..., LiveServer],
) -> None:
    cluster = patroni_cluster
    first_leader = cluster.leader()
    assert first_leader is not None
    name = f"cs_failover_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(cluster.admin_dsn(first_leader), timeout=5)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = cluster.url(name)
    key = await make_server_key(url)  # migrates through the multi-host URL
    env = {
        "CREDITSTREAM_REDIS_URL": redis_url,
        "CREDITSTREAM_SWEEP_INTERVAL_S": "0.5",
        "CREDITSTREAM_WEBHOOK_ALLOW_PRIVATE": "1",  # the receiver is on loopback
    }
    servers = [await asyncio.to_thread(live_server_factory, url, **env) for _ in range(2)]
    pids = [s.process.pid for s in servers if s.process is not None]
    balancer = await TcpBalancer([s.port for s in servers]).start()
    tallies = [Tally(f"ha-{uuid.uuid4().hex[:8]}-{i}") for i in range(ACCOUNTS)]
    subscribers: list[ResumingSubscriber | ResumingSseSubscriber] = [
        (ResumingSubscriber if i % 2 == 0 else ResumingSseSubscriber)(balancer.url, key, t.account)
        for i, t in enumerate(tallies)
    ]
    readers = [asyncio.create_task(s.run()) for s in subscribers]
    probe = ReadinessProbe(servers)
    probing = asyncio.create_task(probe.run())
    log, stop = WriteLog(), asyncio.Event()
    receiver = await Receiver().start()  # the outbound deliverer's destination
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(
            base_url=balancer.url, timeout=10, headers={"Authorization": f"Bearer {key}"}
        ) as http:
            hook = {"url": receiver.url(), "events": EVENT_TYPES}
            assert (await http.post("/v1/webhook-endpoints", json=hook)).status_code == 201
            client = HistoryClient(http, log)
            workers = await run_workers(client, tallies, WORKERS_PER_ACCOUNT, stop, seed=20)
            await asyncio.sleep(SETTLE_S)

            # (a) the leader dies: its Patroni and postmaster are SIGKILLed
            killed = cluster.leader()
            assert killed is not None
            survivor = next(n for n in cluster.nodes if n is not killed)
            survivor_log_from = len(cluster.log_tail(survivor, chars=None))
            kill_at = time.monotonic()
            await asyncio.to_thread(cluster.kill_node, killed)
            promoted_at = await wait_for(
                lambda: cluster.leader() not in (None, killed), 60, "a new leader"
            )
            promotion_log = cluster.log_tail(survivor, chars=None)[survivor_log_from:]
            kill_first_write = await first_write_after(log, promoted_at)
            await asyncio.sleep(SETTLE_S)
            kill_outage = log.longest_gap(kill_at, promoted_at)

            # the dead node comes back as the synchronous standby …
            await asyncio.to_thread(cluster.restart_node, killed)
            await asyncio.to_thread(cluster.wait_sync_standby, 90)
            await asyncio.sleep(SETTLE_S / 2)

            # (b) … and a planned switchover hands it the primary back
            before = cluster.leader()
            switch_at = time.monotonic()
            await asyncio.to_thread(cluster.switchover)
            switched_at = await wait_for(
                lambda: cluster.leader() not in (None, before), 60, "the switchover"
            )
            switch_first_write = await first_write_after(log, switched_at)
            await asyncio.sleep(SETTLE_S)
            switch_outage = log.longest_gap(switch_at, switched_at)

            stop.set()
            await asyncio.gather(*workers)
            views = await final_views(http, tallies)
            expired = await sweeper_expires_a_hold(http)
        heads = {a: int(v["seq"]) for a, v in views.items()}
        await settle_and_stop(subscribers, readers, heads)
        delivered = await webhooks_delivered(receiver, heads)
    finally:
        stop.set()
        probe.stopping = True
        await probing
        await balancer.stop()
        await receiver.stop()

    verdict = await check_history(url, tallies, views)  # on the new primary
    for subscriber in subscribers:
        expected = list(range(1, views[subscriber.account]["seq"] + 1))
        assert subscriber.seqs == expected, (type(subscriber).__name__, subscriber.account)
    for server, pid in zip(servers, pids, strict=True):
        assert server.process is not None and server.process.poll() is None
        assert server.process.pid == pid  # the same process throughout: no restart
        assert 503 in probe.statuses(server.port, kill_at, promoted_at + 1), (
            "no 503 without primary"
        )
        assert probe.statuses(server.port, time.monotonic() - 3, time.monotonic()) == {200}
    assert expired
    for account, head in heads.items():  # at least once, in order: resends only repeat
        assert delivered[account] == list(range(1, head + 1)), account

    ttl, promotion_s = cluster.ttl, promoted_at - kill_at
    timeline = (
        f"new leader {promotion_s:.1f} s after the kill, first write "
        f"{kill_first_write - promoted_at:.2f} s after the promotion; the survivor's Patroni "
        f"log meanwhile:\n{promotion_log[-4000:]}"
    )
    # The goal is an outage ≤ ttl + 3 s. Patroni's share (the leader key expiring, the standby
    # promoted) is ttl + up to one loop_wait and moves with etcd and Patroni's own loop on a busy
    # machine; what creditstream adds to it is asserted tightly, Patroni's share loosely.
    assert kill_first_write - promoted_at <= 2, timeline
    assert kill_outage <= promotion_s + 2, f"write outage {kill_outage:.1f} s; {timeline}"
    assert promotion_s <= ttl + cluster.loop_wait + 8, timeline
    assert switch_outage <= ttl + 3 + 2, f"switchover outage {switch_outage:.1f} s"
    report = (
        f"failover test: Patroni ttl {ttl} s, 2 nodes, synchronous; SIGKILL of the leader → "
        f"new leader after {promoted_at - kill_at:.1f} s, write outage (longest time without an "
        f"acknowledged write) {kill_outage:.1f} s, first write acknowledged "
        f"{kill_first_write - promoted_at:.2f} s after the promotion; switchover → new leader "
        f"after {switched_at - switch_at:.1f} s, write outage {switch_outage:.1f} s, first write "
        f"{switch_first_write - switched_at:.2f} s after it; {log.requests} requests, "
        f"{log.acknowledged} "
        f"acknowledged, {log.retries} retries, {verdict.keys} keys + {verdict.refs} batch parts "
        f"each applied once, {verdict.audited} accounts audited clean, "
        f"{sum(len(s.seqs) for s in subscribers)} events streamed (WebSocket and SSE) in order, "
        f"every event delivered to an outbound webhook endpoint, "
        f"/readyz 503 without a primary and 200 after, no restart; elapsed "
        f"{time.monotonic() - started:.0f} s"
    )
    print("\n" + report)
    if path := os.environ.get("CREDITSTREAM_RELIABILITY_REPORT"):
        with open(path, "a", encoding="utf-8") as out:
            out.write(report + "\n")


async def webhooks_delivered(receiver: Receiver, heads: dict[str, int]) -> dict[str, list[int]]:
    """Each account's seqs as the webhook receiver first saw them, once the deliverer (which
    lived through both faults) has caught up with every head or 30 s have passed."""
    firsts: dict[str, list[int]] = {}
    deadline = time.monotonic() + 30
    while True:
        firsts = {account: [] for account in heads}
        for event in receiver.events():
            seqs = firsts.get(event.get("account_id", ""))
            if seqs is not None and event["seq"] not in seqs:
                seqs.append(event["seq"])
        if all(len(firsts[a]) >= head for a, head in heads.items()):
            return firsts
        if time.monotonic() > deadline:
            return firsts
        await asyncio.sleep(0.3)


async def first_write_after(log: WriteLog, moment: float) -> float:
    """When the first write sent after `moment` was acknowledged."""
    await wait_for(lambda: log.first_success_after(moment) is not None, 30, "a write")
    done = log.first_success_after(moment)
    assert done is not None
    return done


async def sweeper_expires_a_hold(http: httpx.AsyncClient) -> bool:
    """After both faults the sweeper still runs: a one-second hold expires by itself."""
    account = f"ha-sweep-{uuid.uuid4().hex[:8]}"
    answer = await http.post(
        "/v1/holds",
        json={"account_id": account, "amount": 1, "ttl_seconds": 1},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert answer.status_code == 201, answer.text
    hold_id = answer.json()["hold"]["hold_id"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        hold = (await http.get(f"/v1/holds/{hold_id}")).json()
        if hold.get("hold", hold).get("status") == "expired":
            return True
        await asyncio.sleep(0.3)
    return False
