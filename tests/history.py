"""The history workload and its checks, shared by the tests that break the database under load
(failover, switchover, a pooler in between).

Workers on a few hot accounts run keyed holds, captures, releases, charges, grants, refunds and
batches; each request is retried with the same Idempotency-Key on 409/502/503, timeouts and
dropped connections until it gets a definite answer. Every answer the client accepted is kept
(its key, its refs, what it did to the balance), and `check_history` then proves on the database:
every acknowledged operation is in the journal exactly once, every key has one effect, no
account's balance or available credit ever went below zero, the audit is clean and the final
balances equal what the clients were told."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa

from storage.audit import audit
from storage.sql import Database
from storage.tables import entries

RETRY_STATUSES = (409, 502, 503)
KEYED_TYPES = ("grant", "hold", "capture", "release", "charge", "refund")
FIRST_GRANT = 100_000


@dataclass
class Tally:
    """What the clients of one account believe, from the answers they got."""

    account: str
    balance: int = 0  # after the trial grant, which the first view fills in
    open_holds: dict[str, int] = field(default_factory=dict)
    charges: dict[str, int] = field(default_factory=dict)  # refundable charges and amounts
    keys: list[str] = field(default_factory=list)  # single operations' keys
    refs: list[str] = field(default_factory=list)  # batch parts' refs


@dataclass
class WriteLog:
    """When writes were answered, to measure outages: (sent, answered, status or None)."""

    attempts: list[tuple[float, float, int | None]] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    acknowledged: int = 0

    def acknowledged_at(self) -> list[float]:
        return sorted(done for _, done, status in self.attempts if status and status < 300)

    def longest_gap(self, after: float, before: float) -> float:
        """The longest time without an acknowledged write that overlaps [after, before]."""
        times = self.acknowledged_at()
        gaps = [b - a for a, b in zip(times, times[1:], strict=False) if b >= after and a <= before]
        return max(gaps, default=0.0)

    def first_success_after(self, moment: float) -> float | None:
        """When the first write sent after `moment` was acknowledged."""
        done = [d for sent, d, s in self.attempts if sent >= moment and s and s < 300]
        return min(done, default=None)


class HistoryClient:
    def __init__(self, http: httpx.AsyncClient, log: WriteLog, patience_s: float = 90) -> None:
        self.http, self.log, self.patience_s = http, log, patience_s

    async def post(self, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        """POST with one Idempotency-Key, retried with that key until it is answered."""
        deadline = time.monotonic() + self.patience_s
        while True:
            self.log.requests += 1
            sent = time.monotonic()
            try:
                response: httpx.Response | None = await self.http.post(
                    path, json=body, headers={"Idempotency-Key": key}
                )
            except httpx.TransportError:
                response = None
            status = response.status_code if response is not None else None
            self.log.attempts.append((sent, time.monotonic(), status))
            if response is not None and 200 <= response.status_code < 300:
                self.log.acknowledged += 1
                result: dict[str, Any] = response.json()
                return result
            if response is not None and response.status_code not in RETRY_STATUSES:
                raise AssertionError(f"{path} {body}: {response.status_code} {response.text}")
            assert time.monotonic() < deadline, f"{path} was never answered ({status})"
            self.log.retries += 1
            await asyncio.sleep(0.1)


def new_key() -> str:
    return f"h-{uuid.uuid4().hex}"


async def keyed(client: HistoryClient, tally: Tally, path: str, body: dict[str, Any]) -> Any:
    key = new_key()
    answer = await client.post(path, body, key)
    tally.keys.append(key)
    return answer


async def worker(
    client: HistoryClient, tally: Tally, stop: asyncio.Event, rng: random.Random
) -> None:
    """One client of a hot account until `stop`; then it releases what it still holds."""
    a = tally.account
    while not stop.is_set():
        roll = rng.random()
        if roll < 0.12:
            await keyed(client, tally, f"/v1/accounts/{a}/grants", {"amount": 7, "reason": "bonus"})
            tally.balance += 7
        elif roll < 0.40:
            body = {"account_id": a, "amount": 5, "ttl_seconds": 600}
            hold = (await keyed(client, tally, "/v1/holds", body))["hold"]
            tally.open_holds[hold["hold_id"]] = 5
        elif roll < 0.58 and tally.open_holds:
            hold_id = rng.choice(sorted(tally.open_holds))
            del tally.open_holds[hold_id]  # before any await: no other worker picks it
            if rng.random() < 0.6:
                await keyed(client, tally, f"/v1/holds/{hold_id}/capture", {"amount": 3})
                tally.balance -= 3
            else:
                await keyed(client, tally, f"/v1/holds/{hold_id}/release", {})
        elif roll < 0.76:
            charge = (await keyed(client, tally, f"/v1/accounts/{a}/charges", {"amount": 2}))[
                "charge"
            ]
            tally.balance -= 2
            tally.charges[charge["charge_id"]] = 2
        elif roll < 0.86 and tally.charges:
            charge_id = rng.choice(sorted(tally.charges))
            amount = tally.charges.pop(charge_id)
            await keyed(client, tally, "/v1/refunds", {"charge_id": charge_id})
            tally.balance += amount
        else:
            await batch(client, tally)
    while tally.open_holds:  # the account's other workers drain the same holds
        hold_id, _ = tally.open_holds.popitem()
        await keyed(client, tally, f"/v1/holds/{hold_id}/release", {})


async def batch(client: HistoryClient, tally: Tally) -> None:
    """A grant and two charges in one transaction, each part carrying its own ref."""
    a = tally.account
    refs = [f"r-{uuid.uuid4().hex}" for _ in range(3)]
    parts = [
        {"op": "grant", "account_id": a, "amount": 4, "reason": "bonus", "ref": refs[0]},
        {"op": "charge", "account_id": a, "amount": 1, "ref": refs[1]},
        {"op": "charge", "account_id": a, "amount": 1, "ref": refs[2]},
    ]
    answer = await client.post("/v1/batch", {"operations": parts}, new_key())
    statuses = [result["status"] for result in answer["results"]]
    assert statuses == [201, 201, 201], answer
    tally.refs += refs
    tally.balance += 2


async def open_accounts(client: HistoryClient, tallies: list[Tally]) -> None:
    """Each account's first grant; the tally starts from the balance the answer shows."""
    for tally in tallies:
        answer = await keyed(
            client,
            tally,
            f"/v1/accounts/{tally.account}/grants",
            {"amount": FIRST_GRANT, "reason": "purchase"},
        )
        tally.balance = answer["account"]["balance"]


async def run_workers(
    client: HistoryClient, tallies: list[Tally], per_account: int, stop: asyncio.Event, seed: int
) -> list[asyncio.Task[None]]:
    await open_accounts(client, tallies)
    return [
        asyncio.create_task(worker(client, tally, stop, random.Random(seed * 1000 + i)))
        for i, tally in enumerate(t for t in tallies for _ in range(per_account))
    ]


@dataclass
class HistoryVerdict:
    audited: int
    keys: int
    refs: int
    entries: int


async def check_history(
    database_url: str, tallies: list[Tally], views: dict[str, dict[str, Any]]
) -> HistoryVerdict:
    """Everything the clients were told holds on the database (see the module's docstring)."""
    for tally in tallies:
        view = views[tally.account]
        assert (view["balance"], view["held"]) == (tally.balance, 0), (tally.account, view)
    accounts = [t.account for t in tallies]
    db = Database.from_url(database_url)
    try:
        async with db.read() as uow:
            audited, mismatches = await audit(uow.conn)
            rows = (
                await uow.conn.execute(
                    sa.select(
                        entries.c.account_id,
                        entries.c.seq,
                        entries.c.type,
                        entries.c.delta,
                        entries.c.held_delta,
                        entries.c.ref,
                        entries.c.idempotency_key,
                    )
                    .where(entries.c.account_id.in_(accounts))
                    .order_by(entries.c.account_id, entries.c.seq)
                )
            ).all()
    finally:
        await db.dispose()
    assert [m.describe() for m in mismatches] == []
    balance: defaultdict[str, int] = defaultdict(int)
    held: defaultdict[str, int] = defaultdict(int)
    effects: defaultdict[str, int] = defaultdict(int)
    refs: defaultdict[str, int] = defaultdict(int)
    for row in rows:
        balance[row.account_id] += row.delta
        held[row.account_id] += row.held_delta
        assert balance[row.account_id] >= 0, f"{row.account_id} negative at seq {row.seq}"
        assert balance[row.account_id] - held[row.account_id] >= 0, (row.account_id, row.seq)
        if row.idempotency_key is not None and row.type in KEYED_TYPES:
            effects[row.idempotency_key] += 1
        if row.ref is not None:
            refs[row.ref] += 1
    keys = [k for t in tallies for k in t.keys]
    assert len(set(keys)) == len(keys)
    lost_or_doubled = [k for k in keys if effects[k] != 1]
    assert lost_or_doubled == [], f"{len(lost_or_doubled)} keys without exactly one effect"
    assert set(effects) <= set(keys), "an effect no client was answered for"
    batch_refs = [r for t in tallies for r in t.refs]
    assert [r for r in batch_refs if refs[r] != 1] == [], "a batch part not applied exactly once"
    return HistoryVerdict(audited, len(keys), len(batch_refs), len(rows))


async def final_views(http: httpx.AsyncClient, tallies: list[Tally]) -> dict[str, dict[str, Any]]:
    views: dict[str, dict[str, Any]] = {}
    for tally in tallies:
        response = await http.get(f"/v1/accounts/{tally.account}")
        assert response.status_code == 200, response.text
        views[tally.account] = response.json()
    return views
