"""Deleting an outbound webhook endpoint while instances record deliveries to it (PostgreSQL):
the delete waits for a recording transaction and a later one finds the endpoint gone, so
neither fails on the cursors' foreign key. Found by the Node client's tests
(tests/e2e/test_node_client.py), which delete an endpoint right after its first delivery.

    .venv/bin/pytest tests/integration/test_webhook_endpoint_delete_race.py -q
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from storage.migrate import upgrade_async
from storage.sql import Database
from storage.webhook_deliveries import Outcome, WebhookDeliveries
from storage.webhook_endpoints import WebhookEndpoints

pytestmark = pytest.mark.postgres
ROUNDS = 30
RECORDERS = 6


async def test_a_delete_racing_deliveries_never_fails(pg_url: str) -> None:
    await upgrade_async(pg_url)
    db = Database.from_url(pg_url, pool_size=RECORDERS + 2)
    store = WebhookEndpoints(db)
    deliveries = WebhookDeliveries(db)
    now = datetime.now(UTC)
    try:
        for _ in range(ROUNDS):
            made = await store.create(
                "http://127.0.0.1:9/hook",
                ["balance.updated"],
                now,
                None,
                lambda endpoint: endpoint.to_dict(),
            )
            endpoint_id = made.body["id"]
            results = await asyncio.gather(
                *[
                    deliveries.record(endpoint_id, {f"acct-{n}": 1}, [], Outcome(), now)
                    for n in range(RECORDERS)
                ],
                store.delete(endpoint_id),
                return_exceptions=True,
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            assert not failures, failures
            assert results[-1] is not None  # the delete found the endpoint
            assert await store.get(endpoint_id) is None
    finally:
        await db.dispose()
