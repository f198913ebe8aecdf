"""An instance that loses an endpoint's lease stops delivering to it at once, its attempt in
flight included (PostgreSQL, a real receiver on a loopback port): the lease lapses while an
attempt waits on a slow receiver (as when the instance was paused longer than the lease),
another instance takes it and delivers the account's events, and the first one records
nothing of the cancelled attempt and moves no cursor. The first event reaches the receiver
twice (at least once: the first copy was sent, never answered) and every event is
acknowledged, and recorded, once, in order.

    .venv/bin/pytest tests/integration/test_webhook_lease_loss.py -q
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from asgi import create_app
from background.webhook_delivery import Deliverer
from background.webhook_worker import RENEW_EVERY_S, EndpointWorker
from config import Settings
from storage.keys import create_server_key
from storage.sql import Database
from storage.tables import events, webhook_cursors, webhook_deliveries, webhook_endpoints
from storage.webhook_deliveries import WebhookDeliveries
from tests.receiver import Receiver
from tests.support import TEST_SECRET
from wiring import egress_for, webhook_policy

pytestmark = pytest.mark.postgres
SLOW_S = 8.0  # the receiver's delay for the first attempt: longer than a renewal takes to notice
ACCOUNT = "lease-loss"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver(delay_s=SLOW_S).start()
    yield r
    await r.stop()


def now() -> datetime:
    return datetime.now(UTC)


async def test_a_lost_lease_cancels_the_attempt_in_flight(
    pg_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    settings = Settings(
        database_url=pg_url,
        user_token_secret=TEST_SECRET,
        results_dir=str(tmp_path / "results"),
        webhook_allow_private=True,
        webhook_poll_s=0.05,
        webhook_timeout_s=SLOW_S * 2,  # the deadline is not what ends the first attempt
    )
    # an instance without background work writes the events; the deliverers are run here
    app = create_app(settings, run_sweeper=False)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    db = Database.from_url(pg_url, pool_size=6)
    egresses = [egress_for(settings), egress_for(settings)]
    first, second = (
        Deliverer(WebhookDeliveries(db), egress, webhook_policy(settings), now, now)
        for egress in egresses
    )
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    running: list[asyncio.Task[None]] = []
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://creditstream.test"
        ) as http:
            key = await create_server_key(app.state.ctx.db, "tests")
            headers = {"Authorization": f"Bearer {key}"}
            made = await http.post(
                "/v1/webhook-endpoints",
                headers=headers,
                json={"url": receiver.url(), "events": ["balance.updated"]},
            )
            assert made.status_code == 201, made.text
            endpoint_id = made.json()["id"]
            granted = await http.post(
                f"/v1/accounts/{ACCOUNT}/grants",
                headers=headers,
                json={"amount": 10, "reason": "purchase"},
            )
            assert granted.status_code == 201, granted.text

        running.append(asyncio.create_task(first.run_forever(stop_first)))
        await asyncio.wait_for(receiver.arrived.wait(), 10)  # the first copy is in flight
        assert endpoint_id in first.workers
        worker = first.workers[endpoint_id]
        assert isinstance(worker, EndpointWorker)
        assert await _lease_owner(db, endpoint_id) == first.owner

        # the lease lapses (the instance stalled past it); the next copy is answered at once
        receiver.delay_s = 0.0
        lapsed_at = time.monotonic()
        await _expire_lease(db, endpoint_id)

        # the first instance notices at its next renewal: the attempt in flight is cancelled
        # and the worker ends, well before the receiver would have answered it
        await asyncio.wait_for(asyncio.shield(worker.task), RENEW_EVERY_S * 3 + 2)
        cancelled_after = time.monotonic() - lapsed_at
        assert worker.lease_lost
        assert cancelled_after < SLOW_S / 3
        assert first.oldest_step() is None or endpoint_id not in first.workers
        assert await _cursor(db, endpoint_id) is None  # the unanswered copy moved nothing
        assert await _attempts(db, endpoint_id) == []  # and is not recorded as delivered

        # the second instance takes the lease and delivers the account's events, once each
        running.append(asyncio.create_task(second.run_forever(stop_second)))
        journaled = await _seqs(db)
        await _until(lambda: _cursor(db, endpoint_id), lambda seq: seq == journaled[-1], 10)
        expected = [f"{ACCOUNT}:{seq}" for seq in journaled]
        assert [r.headers["x-creditstream-event-id"] for r in receiver.received] == expected
        assert all(r.at > lapsed_at for r in receiver.received)  # none answered before
        recorded = await _attempts(db, endpoint_id)
        assert [(r["seq"], r["status_code"], r["error"]) for r in recorded] == [
            (seq, 200, None) for seq in journaled
        ]
        # the first instance never took the lease back, nor released the second one's
        assert await _lease_owner(db, endpoint_id) in (second.owner, None)
        assert endpoint_id not in first.workers
        # the cancelled copy is still waiting in the receiver: let it end before the teardown
        await _until(_nothing, lambda _: receiver.in_flight["/hook"] == 0, SLOW_S + 5)
    finally:
        stop_first.set()
        stop_second.set()
        await asyncio.gather(*running, return_exceptions=True)
        for egress in egresses:
            await egress.aclose()
        await db.dispose()
        await lifespan.__aexit__(None, None, None)


async def _expire_lease(db: Database, endpoint_id: str) -> None:
    async with db.transaction() as uow:
        await uow.conn.execute(
            sa.update(webhook_endpoints)
            .where(webhook_endpoints.c.id == endpoint_id)
            .values(lease_until=now())
        )


async def _lease_owner(db: Database, endpoint_id: str) -> str | None:
    async with db.transaction() as uow:
        owner: str | None = (
            await uow.conn.execute(
                sa.select(webhook_endpoints.c.lease_owner).where(
                    webhook_endpoints.c.id == endpoint_id
                )
            )
        ).scalar_one()
        return owner


async def _seqs(db: Database) -> list[int]:
    async with db.transaction() as uow:
        rows = await uow.conn.execute(
            sa.select(events.c.seq)
            .where(events.c.account_id == ACCOUNT, events.c.type == "balance.updated")
            .order_by(events.c.seq)
        )
        return [int(seq) for seq in rows.scalars()]


async def _nothing() -> None:
    return None


async def _cursor(db: Database, endpoint_id: str) -> int | None:
    async with db.transaction() as uow:
        seq: int | None = (
            await uow.conn.execute(
                sa.select(webhook_cursors.c.seq).where(
                    webhook_cursors.c.endpoint_id == endpoint_id,
                    webhook_cursors.c.account_id == ACCOUNT,
                )
            )
        ).scalar_one_or_none()
        return seq


async def _attempts(db: Database, endpoint_id: str) -> list[dict[str, Any]]:
    async with db.transaction() as uow:
        rows = await uow.conn.execute(
            sa.select(webhook_deliveries).where(webhook_deliveries.c.endpoint_id == endpoint_id)
        )
        return [dict(row._mapping) for row in rows]


async def _until(read: Any, done: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done(await read()):
        assert time.monotonic() < deadline, "not done in time"
        await asyncio.sleep(0.05)
