"""Reads from a streaming standby keep G6 (read your writes, on any instance): two instances
share a primary and read from its standby (CREDITSTREAM_DATABASE_READ_URL); what one writes the
other reads at once — from the standby when it has replayed the write, from the primary when its
replay is paused or it is down, never stale and never a 5xx."""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.replication import ReplicatedPostgres
from storage.standby import PRIMARY_POSITION, STANDBY_RETRY_S
from tests.conftest import unavailable
from tests.pgbouncer import PgBouncer
from tests.support import LiveServer, make_server_key

Factory = Callable[..., LiveServer]
LANES = 8  # accounts written and read concurrently, each by one client


@pytest.fixture(scope="module")
def replicated() -> Iterator[ReplicatedPostgres]:
    cluster = ReplicatedPostgres()
    try:
        cluster.start()
    except (OSError, RuntimeError) as exc:
        cluster.stop()
        unavailable("a PostgreSQL 15 primary and standby (initdb, pg_basebackup)", exc)
    yield cluster
    cluster.stop()


class Pair:
    """Two instances on one primary, reading from its standby, and a server key."""

    def __init__(self, servers: list[LiveServer], key: str) -> None:
        self.servers, self.key = servers, key
        self.stale: list[str] = []
        self.errors: list[str] = []
        self.done = 0  # pairs written and read

    def client(self, server: LiveServer) -> httpx.AsyncClient:
        auth = {"Authorization": f"Bearer {self.key}"}
        # idle connections closed before the server's 5 s idle close: at the same timeout a
        # request can be sent on a connection in the instant the server closes it (no answer)
        limits = httpx.Limits(keepalive_expiry=2.0)
        return httpx.AsyncClient(base_url=server.url, headers=auth, timeout=15, limits=limits)

    def routed(self) -> collections.Counter[str]:
        """Standby-routed reads over both instances, by `served_by/reason`."""
        counts: collections.Counter[str] = collections.Counter()
        for server in self.servers:
            text = httpx.get(server.url + "/metrics", timeout=5).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "creditstream_standby_reads_total":
                        labels = sample.labels
                        counts[f"{labels['served_by']}/{labels['reason']}"] += int(sample.value)
        return counts

    async def run(self, pairs: int, lanes: int = LANES) -> None:
        """`pairs` writes, each followed by a read of what it wrote on the other instance."""
        clients = [self.client(server) for server in self.servers]
        try:
            await asyncio.gather(
                *(self._lane(clients, pairs // lanes + (i < pairs % lanes)) for i in range(lanes))
            )
        finally:
            for client in clients:
                await client.aclose()

    async def _lane(self, clients: list[httpx.AsyncClient], pairs: int) -> None:
        account = f"sb-{uuid.uuid4().hex[:10]}"
        await self._ok(await clients[0].post(f"/v1/accounts/{account}/grants", json=GRANT))
        checks = itertools.cycle((self._balance, self._event, self._hold))
        for n in range(pairs):
            writer, reader = clients[n % 2], clients[1 - n % 2]
            await next(checks)(writer, reader, account)
            self.done += 1

    async def _ok(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 300:
            self.errors.append(f"{response.request.url.path}: {response.status_code}")
            return {}
        body: dict[str, Any] = response.json()
        return body

    async def _balance(self, writer: httpx.AsyncClient, reader: Any, account: str) -> None:
        wrote = await self._ok(
            await writer.post(f"/v1/accounts/{account}/grants", json={"amount": 1})
        )
        read = await self._ok(await reader.get(f"/v1/accounts/{account}"))
        if wrote and read and read.get("seq", -1) < wrote["account"]["seq"]:
            self.stale.append(f"snapshot seq {read['seq']} after a write at {wrote['account']}")

    async def _event(self, writer: httpx.AsyncClient, reader: Any, account: str) -> None:
        wrote = await self._ok(
            await writer.post(f"/v1/accounts/{account}/grants", json={"amount": 1})
        )
        if not wrote:
            return
        seq = wrote["account"]["seq"]
        read = await self._ok(
            await reader.get(f"/v1/accounts/{account}/events", params={"after_seq": seq - 1})
        )
        if read and [e["seq"] for e in read["events"]][:1] != [seq]:
            self.stale.append(f"events after {seq - 1}: {read['events'][:1]}")

    async def _hold(self, writer: httpx.AsyncClient, reader: Any, account: str) -> None:
        wrote = await self._ok(
            await writer.post("/v1/holds", json={"account_id": account, "amount": 1})
        )
        if not wrote:
            return
        hold_id = wrote["hold"]["hold_id"]
        response = await reader.get(f"/v1/holds/{hold_id}")
        if response.status_code == 404:
            self.stale.append(f"hold {hold_id} not found after its creation")
        elif (await self._ok(response)).get("status") not in (None, "open"):
            self.stale.append(f"hold {hold_id}: {response.text[:200]}")


GRANT = {"amount": 100_000, "reason": "purchase"}


@pytest.fixture
async def pair(replicated: ReplicatedPostgres, live_server_factory: Factory) -> Pair:
    name = await replicated.create_database()
    primary = replicated.url(replicated.primary_port, name)
    standby = replicated.url(replicated.standby_port, name)
    key = await make_server_key(primary)
    env = {"CREDITSTREAM_DATABASE_READ_URL": standby}
    return Pair([live_server_factory(primary, **env) for _ in range(2)], key)


def delta(after: collections.Counter[str], before: collections.Counter[str]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


async def test_a_thousand_writes_each_read_on_the_other_instance_through_the_standby(
    pair: Pair,
) -> None:
    await pair.run(1000)
    routed = pair.routed()
    print(f"\n1,000 write→read pairs across two instances: {len(pair.stale)} stale, {routed}")
    assert pair.errors == []
    assert pair.stale == []
    served = routed["standby/caught_up"]
    # every read went through the standby rule; on a quiet machine nearly all are its
    assert served + sum(v for k, v in routed.items() if k.startswith("primary/")) >= 1000
    assert served >= 500, routed


async def test_paused_replay_sends_reads_to_the_primary_and_resumed_brings_them_back(
    pair: Pair, replicated: ReplicatedPostgres
) -> None:
    standby = await replicated.standby()
    try:
        await standby.execute("SELECT pg_wal_replay_pause()")
        while await standby.fetchval("SELECT pg_get_wal_replay_pause_state()") != "paused":
            await asyncio.sleep(0.01)
        before = pair.routed()
        await pair.run(48)
        paused = delta(pair.routed(), before)
        assert pair.errors == [] and pair.stale == []
        assert paused.get("standby/caught_up", 0) == 0, paused
        assert paused.get("primary/lagging", 0) >= 48, paused

        await standby.execute("SELECT pg_wal_replay_resume()")
        primary = await replicated.primary()
        try:
            await replicated.wait_replayed(await primary.fetchval(PRIMARY_POSITION))
        finally:
            await primary.close()
        before = pair.routed()
        await pair.run(48)
        resumed = delta(pair.routed(), before)
    finally:
        await standby.execute("SELECT pg_wal_replay_resume()")
        await standby.close()
    print(f"\nreplay paused: {paused}; resumed: {resumed}")
    assert pair.errors == [] and pair.stale == []
    assert resumed.get("standby/caught_up", 0) >= 24, resumed


async def test_a_stopped_standby_sends_reads_to_the_primary_with_no_error(
    pair: Pair, replicated: ReplicatedPostgres
) -> None:
    before = pair.routed()
    reads = asyncio.create_task(pair.run(400, lanes=4))
    try:
        while pair.done < 40 and not reads.done():  # mid-load: reads on the standby as it goes
            await asyncio.sleep(0.01)
        await asyncio.to_thread(replicated.stop_standby)
        await reads
        await pair.run(40)  # and with it down
    finally:
        reads.cancel()
        await asyncio.to_thread(replicated.start_standby)
    down = delta(pair.routed(), before)
    assert pair.errors == [] and pair.stale == [], (pair.errors[:5], pair.stale[:5])
    assert down.get("primary/standby_down", 0) > 0, down

    # back up, it first replays what it missed (reads meanwhile go to the primary as lagging)
    primary = await replicated.primary()
    try:
        await replicated.wait_replayed(await primary.fetchval(PRIMARY_POSITION))
    finally:
        await primary.close()
    await asyncio.sleep(STANDBY_RETRY_S + 0.5)  # the instances try the standby again
    before = pair.routed()
    await pair.run(24)
    back = delta(pair.routed(), before)
    print(f"\nstandby stopped mid-load: {down}; started again: {back}")
    assert pair.errors == [] and pair.stale == []
    assert back.get("standby/caught_up", 0) > 0, back


READS = (
    "/v1/accounts/{a}",
    "/v1/accounts/{a}/entries?limit=50",
    "/v1/accounts/{a}/events?after_seq=0",
    "/v1/accounts/{a}/events?after_seq={seq}&wait=0.2",  # a long-poll that times out
    "/v1/accounts/{a}/usage?period=day",
    "/v1/accounts/{a}/jobs",
    "/v1/holds/{hold}",
    "/v1/charges/{charge}",
    "/v1/refunds/{refund}",
    "/v1/jobs/{job}",
    "/api/v1/history/{job}",
)


@pytest.mark.parametrize("through", ["direct", "pgbouncer"])
async def test_every_read_route_answers_from_the_standby_as_from_the_primary(
    replicated: ReplicatedPostgres, api_factory: Callable[..., Any], through: str
) -> None:
    name = await replicated.create_database()
    primary = replicated.url(replicated.primary_port, name)
    standby = replicated.url(replicated.standby_port, name)
    if through == "pgbouncer":  # a transaction-mode pooler in front of the standby
        if shutil.which("pgbouncer") is None or os.geteuid() != 0:
            unavailable("pgbouncer, run as root", FileNotFoundError("pgbouncer"))
        bouncer = PgBouncer("127.0.0.1", replicated.standby_port).start()
        standby = bouncer.url(standby)
    try:
        await _every_read_route(api_factory, primary, standby)
    finally:
        if through == "pgbouncer":
            bouncer.stop()


async def _every_read_route(api_factory: Callable[..., Any], primary: str, standby: str) -> None:
    with_standby = await api_factory(primary, database_read_urls=(standby,))
    alone = await api_factory(primary)
    server, a = with_standby.server(), f"sb-{uuid.uuid4().hex[:8]}"

    async def post(path: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
        response = await with_standby.http.post(path, headers={**server, **headers}, json=body)
        assert response.status_code < 300, response.text
        answer: dict[str, Any] = response.json()
        return answer

    await post(f"/v1/accounts/{a}/grants", {"amount": 500, "reason": "purchase"})
    hold = (await post("/v1/holds", {"account_id": a, "amount": 20}))["hold"]["hold_id"]
    await post(f"/v1/holds/{hold}/capture", {"amount": 15})
    charge = (await post(f"/v1/accounts/{a}/charges", {"amount": 30}))["charge"]["charge_id"]
    refund = (await post("/v1/refunds", {"charge_id": charge, "amount": 5}))["refund"]
    user = with_standby.user(a)
    job = (
        await with_standby.http.post(
            "/api/v1/video/generate", headers=user, json={"prompt": "a cat", "simulate": "hang"}
        )
    ).json()["id"]
    seq = (await with_standby.http.get(f"/v1/accounts/{a}", headers=server)).json()["seq"]
    ids = {"a": a, "hold": hold, "charge": charge, "refund": refund["refund_id"], "job": job}
    ids["seq"] = seq

    served_before = _served_in_process()
    for template in READS:
        path = template.format(**ids)
        headers = user if path.startswith("/api/") else server
        read = await with_standby.http.get(path, headers=headers)
        expected = await alone.http.get(path, headers=headers)
        assert (read.status_code, read.json()) == (expected.status_code, expected.json()), path
        assert read.status_code == 200, (path, read.text)
    quote = {"account_id": a, "operation": "image", "model": "FLUX.1 [dev]"}
    assert (await with_standby.http.post("/v1/quote", headers=server, json=quote)).json() == (
        await alone.http.post("/v1/quote", headers=server, json=quote)
    ).json()
    served = _served_in_process() - served_before
    # each route's reads went through a standby (one route reads twice: the long-poll)
    assert served >= len(READS) + 1, served


def _served_in_process() -> float:
    import metrics

    return sum(
        sample.value
        for family in metrics.STANDBY_READS.collect()
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels["served_by"] == "standby"
    )


async def test_streams_snapshot_and_fill_gaps_from_the_standby_in_order(
    replicated: ReplicatedPostgres, redis_url: str, live_server_factory: Factory
) -> None:
    """A subscriber on one instance, writes on another that drops one publish: the subscribe
    snapshot and the gap fill are read from the standby, and the stream stays gap-free."""
    from tests.e2e.stream_client import StreamClient

    name = await replicated.create_database()
    primary = replicated.url(replicated.primary_port, name)
    key = await make_server_key(primary)
    env = {
        "CREDITSTREAM_REDIS_URL": redis_url,
        "CREDITSTREAM_RESYNC_INTERVAL_S": "30",  # the gap is filled on arrival, not by resync
        "CREDITSTREAM_DATABASE_READ_URL": replicated.url(replicated.standby_port, name),
    }
    reader = live_server_factory(primary, **env)
    writer = live_server_factory(primary, CREDITSTREAM_FAULTS="drop_publish_once", **env)
    pair = Pair([reader], key)
    account, marker = f"sb-{uuid.uuid4().hex[:8]}", f"sb-{uuid.uuid4().hex[:8]}"
    async with pair.client(reader) as first, pair.client(writer) as http:
        for each in (account, marker):  # on the reader: the writer's first publish is dropped
            assert (await first.put(f"/v1/accounts/{each}")).status_code == 201
        before = pair.routed()
        client = StreamClient(reader.url, key)
        await client.connect()
        snapshot = await client.subscribe(account)
        await client.subscribe(marker, after_seq=1)
        assert snapshot["seq"] == 1
        grant = {"amount": 1, "reason": "purchase"}
        await http.post(f"/v1/accounts/{account}/grants", json=grant)  # its publish is dropped
        await http.post(f"/v1/accounts/{marker}/grants", json=grant)
        await client.wait_until(lambda: client.seqs(marker) == [2], timeout=10)
        assert client.seqs(account) == []
        for _ in range(20):  # seq 3 arrives: seq 2 is filled from the journal, then the rest
            await http.post(f"/v1/accounts/{account}/grants", json=grant)
        await client.wait_for_seq(22, timeout=10)
        await client.close()
    assert client.seqs(account) == list(range(2, 23))
    routed = delta(pair.routed(), before)
    # the snapshots (2) and the gap fill (1) went through the standby rule, served by it
    assert routed.get("standby/caught_up", 0) >= 3, routed
