"""Idempotency keys in SQL, safe across instances, in the same transaction as the effect.

A batch claims its keys first, with one INSERT … ON CONFLICT DO NOTHING in key order: a key that
another transaction is claiming right now makes this INSERT wait for that transaction to end, so
two instances never run the same key's effect. The response is written before the same commit, so
a crash leaves neither the effect nor the key, and a retry runs as if for the first time.

The response is a row of its own (`idempotency_answers`), inserted, not an update of the claim:
an update found no room on the claim's page (a batch's claims fill pages whole) and wrote a new
entry into each of the claims' indexes and a dead row for vacuum, per request. Retention deletes
a key's answer with it. A key claimed before that change keeps its answer in its claim's row,
read from there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa

import metrics
from core.errors import ConcurrentUpdate, IdempotencyKeyReused, RequestInProgress
from storage.retention import PRUNE_BATCH
from storage.sql import Database
from storage.tables import idempotency_answers as answers
from storage.tables import idempotency_keys as keys

IN_PROGRESS = "in_progress"
DONE = "done"
CLAIM_ATTEMPTS = 3
# keys per DELETE in a purge: two bind parameters each, within the 999 an older SQLite allows
PURGE_CHUNK = 400

KeyId = tuple[str, str]  # (scope, key)


@dataclass(frozen=True)
class IdempotencyKey:
    scope: str  # whose key it is: a server key's id or a user's account
    key: str
    fingerprint: str  # the request it was first used with

    @property
    def id(self) -> KeyId:
        return (self.scope, self.key)


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: str
    status: int | None  # None: claimed by an earlier version's request that is still running
    body: Any


def stored_response(
    fingerprint: str, answered: bool, status: int | None, body: str | None
) -> StoredResponse:
    """A claimed key as read back: its answer (its own row, or its claim's for a key claimed
    before answers had rows of their own) once answered, else still running."""
    if not answered:
        return StoredResponse(fingerprint, None, None)
    return StoredResponse(fingerprint, status, json.loads(body or "null"))


@dataclass(frozen=True)
class KeyedResult:
    """What a keyed operation answers: its own result, or the first request's, replayed."""

    status: int
    body: Any
    replayed: bool = False


class KeyTable(Protocol):
    async def claim(self, ordered: list[IdempotencyKey], now: datetime) -> list[KeyId]: ...

    async def stored(self, key_ids: list[KeyId]) -> dict[KeyId, StoredResponse]: ...


async def claim(
    table: KeyTable, wanted: Iterable[IdempotencyKey], now: datetime
) -> dict[KeyId, StoredResponse | None]:
    """Claim each key in this transaction: None for a key now ours, else what it answered."""
    by_id: dict[KeyId, IdempotencyKey] = {}
    for k in wanted:
        by_id.setdefault(k.id, k)  # a key twice in one batch: the first request owns it
    if not by_id:
        return {}
    ordered = [by_id[i] for i in sorted(by_id)]  # one lock order everywhere: no deadlocks
    claimed: dict[KeyId, StoredResponse | None] = {}
    for _ in range(CLAIM_ATTEMPTS):
        claimed.update((key_id, None) for key_id in await table.claim(ordered, now))
        taken = [i for i in by_id if i not in claimed]
        if taken:
            claimed.update(await table.stored(taken))
        # a key neither claimed nor found was forgotten (retention) between the two
        # statements: claimed again
        ordered = [by_id[i] for i in sorted(by_id) if i not in claimed]
        if not ordered:
            return claimed
    raise ConcurrentUpdate("idempotency keys came and went while being claimed")


def replay_of(stored: StoredResponse, key: IdempotencyKey) -> KeyedResult:
    """What a request answers when its key was claimed before: the first answer, replayed.
    Raises `IdempotencyKeyReused` for a key first used with another request, and
    `RequestInProgress` while the first request has not answered."""
    if stored.fingerprint != key.fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used with a different request; use "
            "a new key for a new request"
        )
    if stored.status is None:
        raise RequestInProgress("A request with this Idempotency-Key is still running; retry later")
    metrics.IDEMPOTENT_REPLAYS.inc()
    return KeyedResult(stored.status, stored.body, replayed=True)


class IdempotencyStore:
    """What outlives a request: forgetting keys past their retention."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def purge(self, older_than: datetime, limit: int = PRUNE_BATCH) -> int:
        """Forget up to `limit` keys created before `older_than`, oldest first, and their
        answers, in one short transaction (the sweeper repeats it: storage/retention.py). The
        keys are picked once and both tables deleted by them, so no answer outlives its key
        (one that did would only be replaced by the key's next answer: batch_pg.py)."""
        oldest = (
            sa.select(keys.c.scope, keys.c.key)
            .where(keys.c.created_at < older_than)
            .order_by(keys.c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)  # sweepers on several instances: disjoint sets
        )
        async with self.db.transaction() as uow:
            picked = [(r.scope, r.key) for r in await uow.conn.execute(oldest)]
            for start in range(0, len(picked), PURGE_CHUNK):
                chunk = picked[start : start + PURGE_CHUNK]
                await uow.conn.execute(
                    sa.delete(answers).where(sa.tuple_(answers.c.scope, answers.c.key).in_(chunk))
                )
                await uow.conn.execute(
                    sa.delete(keys).where(sa.tuple_(keys.c.scope, keys.c.key).in_(chunk))
                )
            return len(picked)
