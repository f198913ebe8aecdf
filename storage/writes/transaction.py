"""One group-commit batch as one transaction: what an operation is, how a batch went, and how it
runs — keys claimed, accounts locked, core's use cases applied in arrival order, rows written
set-based, one commit. storage/writes/writer.py feeds batches to it from its lanes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import metrics
from core.errors import ConcurrentUpdate, IdempotencyKeyReused, RequestInProgress
from core.events import Event
from core.model import Hold
from core.ports import TRANSACTION_TIME
from storage.dialects import storable_key
from storage.sql import Database
from storage.writes import idempotency
from storage.writes.batch import Batch, Touches
from storage.writes.batch_session import DATABASE_ERRORS, BatchSession, batch_session
from storage.writes.begun import BegunConnections
from storage.writes.committed_accounts import Committed, CommittedAccounts, StaleAccounts
from storage.writes.idempotency import (
    IdempotencyKey,
    KeyedResult,
    KeyId,
    StoredResponse,
    replay_of,
)
from storage.writes.operation import OperationUnitOfWork

Action = Callable[[OperationUnitOfWork], Awaitable[Any]]
Refusal = Callable[[Exception], tuple[int, Any] | None]
# errors that put the transaction itself in doubt: the whole batch goes again
YIELD_EVERY = 16  # operations applied between two turns of the event loop
IN_DOUBT: tuple[type[BaseException], ...] = (ConcurrentUpdate, *DATABASE_ERRORS)


@dataclass(eq=False)
class Operation:
    action: Action
    touches: Touches
    future: asyncio.Future[Any]
    key: IdempotencyKey | None = None
    refusal: Refusal | None = None  # how a refused keyed operation's answer is stored


@dataclass
class Outcome:
    """How one batch went: each operation's result or error, and who must wait for the next."""

    results: dict[Operation, Any] = field(default_factory=dict)
    errors: dict[Operation, BaseException] = field(default_factory=dict)
    # what the committed operations left for after the commit, in their order; their units of
    # work are not kept, so what each held goes with it instead of living as long as the batch
    events: list[Event] = field(default_factory=list)
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    deferred: list[Operation] = field(default_factory=list)
    new_holds: list[tuple[str, str]] = field(default_factory=list)  # (hold id, account id)


async def run_batch(
    db: Database,
    ops: list[Operation],
    now: datetime,
    applied: Callable[[frozenset[str]], None] = lambda locked: None,
    connections: BegunConnections | None = None,
    remembered: CommittedAccounts | None = None,
) -> Outcome:
    """One batch as one transaction: its keys claimed, its accounts locked in id order, each
    operation applied in arrival order on its own working copy, the answers of keyed ones
    recorded, the rows written set-based, one commit. `applied` is called once the operations
    are applied and what is left is the database's: the write and the commit, with the accounts
    the transaction locked (also those of the holds and jobs it named); `connections`, a
    lane's, where the transaction runs (storage/writes/begun.py). With `remembered`, a batch
    whose accounts and holds are all there applies on them without the locking read, its write
    checks the accounts, and one found stale runs again with the read
    (storage/writes/committed_accounts.py); every account a batch writes is remembered as
    committed, with the holds it read or wrote. Raises what puts the transaction
    itself in doubt; every other error is its operation's own, in the outcome."""
    metrics.WRITE_BATCH_SIZE.observe(len(ops))
    stamped = TRANSACTION_TIME.set(now)
    try:
        known = _remembered_for(ops, remembered)
        if known is not None:
            try:
                return await _run(db, ops, now, applied, connections, remembered, known)
            except StaleAccounts as stale:
                assert remembered is not None
                remembered.stale += 1
                metrics.WRITE_BATCHES_REMEMBERED.labels("stale").inc()
                remembered.changed_elsewhere(stale.account_ids)
        return await _run(db, ops, now, applied, connections, remembered, None)
    finally:
        TRANSACTION_TIME.reset(stamped)


@dataclass(frozen=True)
class Remembered:
    """What a batch applies on instead of its locking read: its accounts as committed, with
    their versions, and the holds it names as committed with them."""

    accounts: dict[str, Committed]
    holds: dict[str, Hold]


def _remembered_for(
    ops: list[Operation], remembered: CommittedAccounts | None
) -> Remembered | None:
    """What a batch names, all remembered: its accounts, and the holds it names with their
    accounts; else None. A job is read under its account's lock: such a batch takes the
    locking read."""
    if remembered is None:
        return None
    account_ids: set[str] = set()
    hold_ids: set[str] = set()
    for op in ops:
        touches = op.touches
        if touches.jobs or not (touches.accounts or touches.holds):
            return None
        if op.key is not None and remembered.knows_key(op.key.id):
            return None  # a repeat: its key is claimed, and the usual claim replays it
        account_ids.update(touches.accounts)
        hold_ids.update(touches.holds)
    for hold_id in hold_ids:
        owner = remembered.hold_owner(hold_id)
        if owner is None:
            return None
        account_ids.add(owner)
    accounts = remembered.all_of(sorted(account_ids))
    if accounts is None:
        return None
    holds = remembered.holds(hold_ids, accounts)
    return None if holds is None else Remembered(accounts, holds)


async def _run(
    db: Database,
    ops: list[Operation],
    now: datetime,
    applied: Callable[[frozenset[str]], None],
    connections: BegunConnections | None,
    remembered: CommittedAccounts | None,
    known: Remembered | None,
) -> Outcome:
    outcome = Outcome()
    # on remembered accounts the write is the batch's only statement that writes (no claim, no
    # locking read, no unclaim): it commits by itself, one round trip (storage/writes/begun.py)
    async with batch_session(db, connections, one_statement=known is not None) as session:
        batch = Batch(session)
        runnable = await _claim(session, ops, now, outcome, in_write=known is not None)
        if known is None:
            await batch.load(op.touches for op in runnable)
        else:
            batch.adopt({a: c.account for a, c in known.accounts.items()}, known.holds)
            session.expect({a: c.version for a, c in known.accounts.items()})
        responses: dict[KeyId, tuple[int, Any]] = {}
        failed: list[KeyId] = []
        for position, op in enumerate(runnable, 1):
            await _apply(batch, op, outcome, responses, failed)
            if position % YIELD_EVERY == 0:
                # let the batch before this one go on meanwhile: its write's answer waits for
                # the event loop, and its commit with it
                await asyncio.sleep(0)
        applied(frozenset(batch.accounts))
        if responses:
            await session.record(responses)
        written = await session.flush(batch.writes, now)
        if failed and known is None:  # claimed with the write, only answered keys are
            await session.unclaim(failed)
    if remembered is not None:  # committed
        applied_on = known.accounts if known is not None else {}
        for account_id, version in written.items():
            remembered.remember(batch.accounts[account_id], version, applied_on.get(account_id))
        for hold in batch.holds.values():  # read or written with an account written
            if hold.account_id in written:
                remembered.remember_hold(hold)
        remembered.claimed(responses)
        if known is not None:
            remembered.hits += 1
            metrics.WRITE_BATCHES_REMEMBERED.labels("committed").inc()
    outcome.new_holds = [
        (h, hold.account_id) for h, (hold, new) in batch.writes.holds.items() if new
    ]
    return outcome


async def _claim(
    session: BatchSession, ops: list[Operation], now: datetime, outcome: Outcome, in_write: bool
) -> list[Operation]:
    """Claim the batch's keys; answer replays and mismatches; return what must run. A batch on
    remembered accounts (`in_write`) claims its keys with its write instead, as new: one taken
    meanwhile fails the write, and the batch runs again with this claim first."""
    keys = [op.key for op in ops if op.key]
    claims: dict[KeyId, StoredResponse | None]
    if in_write:
        session.claim_with_write(keys)
        claims = {key.id: None for key in keys}
    else:
        if keys and not any(op.touches.holds or op.touches.jobs for op in ops):
            session.lock_with_claim(
                sorted({a for op in ops for a in op.touches.accounts if storable_key(a)})
            )
        claims = await idempotency.claim(session, keys, now)
    runnable: list[Operation] = []
    owners: set[KeyId] = set()
    for op in ops:
        if op.key is None:
            runnable.append(op)
            continue
        if op.key.id in owners:  # the same key twice in one batch: the second replays next
            outcome.deferred.append(op)
            continue
        owners.add(op.key.id)
        stored = claims[op.key.id]
        if stored is None:
            runnable.append(op)
            continue
        try:
            outcome.results[op] = replay_of(stored, op.key)
        except (IdempotencyKeyReused, RequestInProgress) as refused:
            outcome.errors[op] = refused
    return runnable


async def _apply(
    batch: Batch,
    op: Operation,
    outcome: Outcome,
    responses: dict[KeyId, tuple[int, Any]],
    failed: list[KeyId],
) -> None:
    uow = OperationUnitOfWork(batch)
    try:
        value = await op.action(uow)
    except IN_DOUBT:
        raise  # the transaction itself is in doubt: the whole batch goes again
    except Exception as exc:
        stored = op.refusal(exc) if op.key and op.refusal else None
        if op.key and stored is not None:
            responses[op.key.id] = stored  # a refusal is a result: the key replays it
        elif op.key:
            failed.append(op.key.id)
        outcome.errors[op] = exc
        return
    uow.commit()
    outcome.events.extend(uow.saved_events)
    outcome.after_commit.extend(uow.after_commit)
    if op.key is None:
        outcome.results[op] = value
        return
    status, body = value
    responses[op.key.id] = (status, body)
    outcome.results[op] = KeyedResult(status, body)
