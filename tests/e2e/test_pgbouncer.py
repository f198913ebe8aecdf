"""Behind a pooler: creditstream through Debian's pgbouncer (1.18) in transaction pooling mode,
declared with `?pooler=pgbouncer` (statement caches off, every statement in a transaction). The
history workload (tests/history.py) runs through it on two instances with live WebSocket and
SSE subscribers; nothing is lost or doubled and the audit is clean. Beforehand one instance
under the same load connects directly, and PostgreSQL's backends are counted both ways: the
connections one instance costs, for the README's sizing of max_connections."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Callable, Iterator

import asyncpg
import httpx
import pytest

from tests.conftest import unavailable
from tests.e2e.balancer import TcpBalancer
from tests.e2e.resuming import ResumingSseSubscriber, ResumingSubscriber, settle_and_stop
from tests.history import HistoryClient, Tally, WriteLog, check_history, final_views, run_workers
from tests.pgbouncer import PgBouncer
from tests.support import PG_ADMIN_DSN, LiveServer, make_server_key

RUN_S = 12
POOL_SIZE = 10  # pgbouncer's server connections for the database


@pytest.fixture
def pgbouncer() -> Iterator[PgBouncer]:
    if shutil.which("pgbouncer") is None:
        unavailable("pgbouncer", FileNotFoundError("pgbouncer"))
    if os.geteuid() != 0:
        unavailable("root (to run pgbouncer as postgres)", PermissionError("not root"))
    host, port = PG_ADMIN_DSN.split("@", 1)[1].split("/", 1)[0].split(":")
    bouncer = PgBouncer(host, int(port), POOL_SIZE).start()
    yield bouncer
    bouncer.stop()


async def backends(database: str) -> int:
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        count: int = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
        )
    finally:
        await admin.close()
    return count


async def under_load(
    base_url: str,
    key: str,
    tallies: list[Tally],
    run_s: float,
    database: str,
    subscribe: bool,
    per_account: int = 4,
) -> tuple[WriteLog, int, dict[str, dict[str, object]], list[int], list[list[int]]]:
    """Run the history workload for `run_s`; the most backends seen on `database` meanwhile."""
    subscribers: list[ResumingSubscriber | ResumingSseSubscriber] = (
        [
            (ResumingSubscriber if i % 2 == 0 else ResumingSseSubscriber)(base_url, key, t.account)
            for i, t in enumerate(tallies)
        ]
        if subscribe
        else []
    )
    readers = [asyncio.create_task(s.run()) for s in subscribers]
    log, stop, most = WriteLog(), asyncio.Event(), 0
    async with httpx.AsyncClient(
        base_url=base_url, timeout=10, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        workers = await run_workers(HistoryClient(http, log), tallies, per_account, stop, seed=4)
        for _ in range(int(run_s / 0.25)):
            await asyncio.sleep(0.25)
            most = max(most, await backends(database))
        stop.set()
        await asyncio.gather(*workers)
        views = await final_views(http, tallies)
    heads = {a: int(str(v["seq"])) for a, v in views.items()}
    await settle_and_stop(subscribers, readers, heads)
    expected = [heads[s.account] for s in subscribers]
    return log, most, views, expected, [s.seqs for s in subscribers]


async def test_history_through_pgbouncer_in_transaction_mode(
    pg_url: str,
    pgbouncer: PgBouncer,
    redis_url: str,
    live_server_factory: Callable[..., LiveServer],
) -> None:
    database = pg_url.rsplit("/", 1)[1]
    env = {"CREDITSTREAM_REDIS_URL": redis_url, "CREDITSTREAM_SWEEP_INTERVAL_S": "0.5"}
    pool = int(os.environ.get("CREDITSTREAM_DB_POOL_SIZE", "10"))

    # one instance straight on PostgreSQL: what it costs in backends
    key = await make_server_key(pg_url)
    direct = await asyncio.to_thread(live_server_factory, pg_url, **env)
    direct_tallies = [Tally(f"direct-{uuid.uuid4().hex[:8]}-{i}") for i in range(4)]
    _, direct_most, direct_views, _, _ = await under_load(
        direct.url, key, direct_tallies, RUN_S / 2, database, subscribe=False, per_account=8
    )
    direct.stop()

    # two instances through pgbouncer, migrations included
    routed = pgbouncer.url(pg_url)
    key = await make_server_key(routed)
    servers = [await asyncio.to_thread(live_server_factory, routed, **env) for _ in range(2)]
    balancer = await TcpBalancer([s.port for s in servers]).start()
    tallies = [Tally(f"pgb-{uuid.uuid4().hex[:8]}-{i}") for i in range(4)]
    try:
        log, pooled_most, views, heads, seen = await under_load(
            balancer.url, key, tallies, RUN_S, database, subscribe=True
        )
    finally:
        await balancer.stop()

    verdict = await check_history(pg_url, tallies + direct_tallies, direct_views | views)
    for head, seqs in zip(heads, seen, strict=True):
        assert seqs == list(range(1, head + 1))
    # pgbouncer's pool and reserve bound PostgreSQL's side, whatever the number of instances
    assert pooled_most <= POOL_SIZE + pgbouncer.reserve
    report = (
        f"pgbouncer test (transaction mode, 1.18): {log.acknowledged} operations acknowledged "
        f"through it by 2 instances ({log.retries} retries), {verdict.keys} keys + "
        f"{verdict.refs} batch parts each applied once, audit clean, "
        f"{sum(len(s) for s in seen)} events streamed in order; PostgreSQL backends under "
        f"load: 1 instance direct with 32 clients {direct_most} (its pool: {pool} + overflow "
        f"{pool * 2}), "
        f"2 instances with 16 clients through pgbouncer {pooled_most} (default_pool_size "
        f"{POOL_SIZE})"
    )
    print("\n" + report)
    if path := os.environ.get("CREDITSTREAM_RELIABILITY_REPORT"):
        with open(path, "a", encoding="utf-8") as out:
            out.write(report + "\n")
