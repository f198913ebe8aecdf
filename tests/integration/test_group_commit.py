"""Group commit changes the shape of the write path, not its results: any sequence of operations
run as one batch leaves exactly the rows, answers and events that running them one at a time in
the same order leaves (both databases, hypothesis). With two batches in flight, a batch passes
over what names an account of the one in flight, so operations on different accounts may apply
in another order than they arrived: the batches must then leave what running them one at a time
in the order they applied them leaves, and that order must keep each account's operations, and
every operation that did not say what it touches, where they arrived. Run one at a time on
PostgreSQL, most operations apply on the accounts and holds the writer remembers from the
operation before (storage/writes/committed_accounts.py), the one batch on what it locked and
read: the two must agree."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi import load_catalogue
from core import account as account_module
from core import job_service as job_service_module
from core import service as service_module
from core.errors import CreditError
from core.events import Event
from core.service import CreditService
from storage.migrate import upgrade
from storage.sql import Database
from storage.tables import (
    accounts,
    entries,
    events,
    grants,
    holds,
    idempotency_answers,
    idempotency_keys,
)
from storage.writes.batch import NOTHING, Touches
from storage.writes.idempotency import IdempotencyKey, KeyedResult
from storage.writes.writer import BatchWriter
from tests.support import MutableClock

ACCOUNTS = 3
amounts = st.integers(1, 400)
operation = st.one_of(
    st.tuples(st.just("grant"), st.integers(0, ACCOUNTS - 1), amounts),
    st.tuples(st.just("hold"), st.integers(0, ACCOUNTS - 1), amounts),
    st.tuples(st.just("charge"), st.integers(0, ACCOUNTS - 1), amounts),
    st.tuples(st.just("ensure"), st.integers(0, ACCOUNTS - 1), st.just(0)),
    st.tuples(st.just("capture"), st.integers(0, 20), st.none() | amounts),
    st.tuples(st.just("release"), st.integers(0, 20), st.just(0)),
    st.tuples(st.just("keyed_hold"), st.integers(0, ACCOUNTS - 1), amounts, st.integers(0, 3)),
    st.tuples(st.just("refund"), st.integers(0, 10), st.none() | amounts),
)


class Run:
    """One way of running a sequence: its own account names and id counter, so two runs on one
    database can be compared row for row once their tag is taken out."""

    def __init__(
        self, db: Database, tag: str, clock: MutableClock, depth: int = 1, names_holds: bool = False
    ) -> None:
        # `names_holds`: a capture or release names its hold (the run submits one operation at
        # a time, so the hold exists by then), and may apply on the hold as remembered
        self.tag, self.clock, self.names_holds = tag, clock, names_holds
        self.service = CreditService(clock, load_catalogue(None))
        self.published: list[Event] = []
        self.writer = BatchWriter(db, clock.now, self._publish, lanes=1, depth=depth)
        self.holds: list[str] = []
        self.spends: list[tuple[str, str]] = []  # (charge_id or hold_id, "charge" or "capture")
        self.counter = itertools.count()
        self.started: list[int] = []  # the operations' positions, as their batches ran them

    async def _publish(self, events: list[Event]) -> None:
        self.published.extend(events)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{self.tag}{next(self.counter):05d}"

    def account(self, index: int) -> str:
        return f"acct-{self.tag}-{index}"

    def ran_order(self) -> list[int]:
        """The positions of the operations that ran, in the order they last ran (a batch that
        failed runs its operations again one at a time). Replays and refused keys never run."""
        return list(dict.fromkeys(reversed(self.started)))[::-1]

    def _recorded(self, index: int, action: Callable[[Any], Any]) -> Callable[[Any], Any]:
        async def run(uow: Any) -> Any:
            self.started.append(index)
            return await action(uow)

        return run

    def submit(self, op: tuple[Any, ...], index: int) -> Coroutine[Any, Any, Any]:
        kind, target, amount = op[0], op[1], op[2]
        service, account = self.service, self.account(target)
        if kind in ("capture", "release"):
            hold_ref = target

            async def settle(uow: Any) -> Any:
                if hold_ref >= len(self.holds):
                    return "no hold yet"
                hold_id = self.holds[hold_ref]
                if kind == "capture":
                    captured = await service.capture(uow, hold_id, amount)
                    self.spends.append((hold_id, "capture"))
                    return captured
                return await service.release(uow, hold_id)

            said = NOTHING
            if self.names_holds and hold_ref < len(self.holds):
                said = Touches(holds=(self.holds[hold_ref],))
            return self.writer.run(self._recorded(index, settle), said)
        if kind == "refund":
            spend_ref = target

            async def refund(uow: Any) -> Any:
                if spend_ref >= len(self.spends):
                    return "no spend yet"
                spend_id, spent = self.spends[spend_ref]
                return await service.refund(uow, spend_id, spent, amount)

            return self.writer.run(self._recorded(index, refund))
        if kind == "keyed_hold":
            key = IdempotencyKey(self.tag, f"key-{op[3]}", f"hold {target} {amount}")

            async def keyed(uow: Any) -> tuple[int, Any]:
                hold, acct = await service.hold(uow, account, amount, key=key.key)
                self.holds.append(hold.hold_id)
                return 201, {"hold": hold.to_dict(), "account": acct.snapshot(self.clock.now())}

            return self.writer.run_keyed(
                self._recorded(index, keyed), key, refusal, Touches(accounts=(account,))
            )

        async def charge(uow: Any) -> Any:
            result = await service.charge(uow, account, amount, "charge")
            self.spends.append((result[0]["charge_id"], "charge"))
            return result

        use_cases: dict[str, Callable[[Any], Coroutine[Any, Any, Any]]] = {
            "grant": lambda uow: service.grant(uow, account, amount, "purchase"),
            "charge": charge,
            "ensure": lambda uow: ensure(service, uow, account),
        }
        if kind == "hold":

            async def hold(uow: Any) -> Any:
                result = await service.hold(uow, account, amount)
                self.holds.append(result[0].hold_id)
                return result

            return self.writer.run(self._recorded(index, hold), Touches(accounts=(account,)))
        return self.writer.run(self._recorded(index, use_cases[kind]), Touches(accounts=(account,)))


async def ensure(service: CreditService, uow: Any, account_id: str) -> Any:
    account, created = await service.ensure_account(uow, account_id)
    await uow.accounts.save(account)
    return account, created


def refusal(exc: Exception) -> tuple[int, Any] | None:
    return (409, {"error": exc.code}) if isinstance(exc, CreditError) else None


def answer(result: Any, now: Any) -> Any:
    """What a caller got, as plain data."""
    if isinstance(result, BaseException):
        return ["error", getattr(result, "code", type(result).__name__)]
    if isinstance(result, KeyedResult):
        return ["keyed", result.status, result.body, result.replayed]
    if isinstance(result, tuple):
        return [plain(part, now) for part in result]
    return result


def plain(part: Any, now: Any) -> Any:
    if isinstance(part, (bool, dict)):
        return part
    if hasattr(part, "to_dict"):
        return part.to_dict()
    if hasattr(part, "snapshot"):
        return part.snapshot(now)
    return part


async def table_rows(db: Database, tag: str) -> dict[str, Any]:
    owned = f"acct-{tag}-%"
    scope_column = {
        idempotency_keys: idempotency_keys.c.scope,
        idempotency_answers: idempotency_answers.c.scope,
    }
    dump: dict[str, Any] = {}
    async with db.read() as uow:
        for table in (
            accounts,
            grants,
            holds,
            entries,
            events,
            idempotency_keys,
            idempotency_answers,
        ):
            where: sa.ColumnElement[bool]
            if table is accounts:
                where = accounts.c.id.like(owned)
            elif table in scope_column:
                where = scope_column[table] == tag
            else:
                where = table.c.account_id.like(owned)
            columns = [c for c in table.c if c.name not in ("id",) or table is not entries]
            rows = await uow.conn.execute(sa.select(*columns).where(where))
            dump[table.name] = sorted(
                json.dumps(dict(r._mapping), default=str, sort_keys=True) for r in rows
            )
    return dump


def untagged(value: Any, tag: str) -> str:
    return json.dumps(value, default=str, sort_keys=True).replace(tag, "T")


async def compare(
    db: Database,
    ops: list[tuple[Any, ...]],
    example: int,
    monkeypatch: pytest.MonkeyPatch,
    depth: int = 1,
) -> None:
    """With one batch in flight (`depth` 1) the operations share one batch; with two, the lane
    splits them over batches that overlap, and what they leave must be what running them one at
    a time, in the order the batches ran them, leaves."""
    clock = MutableClock()
    one = Run(db, f"one{example}d{depth}x", clock, names_holds=True)
    many = Run(db, f"all{example}d{depth}x", clock, depth)
    answers: dict[str, list[Any]] = {}
    for module in (service_module, account_module, job_service_module):
        monkeypatch.setattr(module, "new_id", many.new_id)
    results = await asyncio.gather(
        *(many.submit(op, i) for i, op in enumerate(ops)), return_exceptions=True
    )
    answers[many.tag] = [answer(r, clock.now()) for r in results]
    await many.writer.aclose()
    ran = many.ran_order()
    if depth == 1:
        assert ran == sorted(ran), "one batch at a time applies in arrival order"
    assert_each_account_keeps_its_order(ops, ran)
    # what never ran (a replay, a key refused) answers from its key, wherever it goes
    order = ran + [i for i in range(len(ops)) if i not in set(ran)]
    for module in (service_module, account_module, job_service_module):
        monkeypatch.setattr(module, "new_id", one.new_id)
    alone: dict[int, Any] = {}
    for i in order:
        try:
            alone[i] = await one.submit(ops[i], i)
        except Exception as exc:
            alone[i] = exc
    answers[one.tag] = [answer(alone[i], clock.now()) for i in range(len(ops))]
    await one.writer.aclose()
    duplicates = sum(1 for op in ops if op[0] == "keyed_hold") - len(
        {op[3] for op in ops if op[0] == "keyed_hold"}
    )
    if depth == 1:
        assert many.writer.commits <= 1 + duplicates, "the operations did not share a batch"
    assert untagged(answers[many.tag], many.tag) == untagged(answers[one.tag], one.tag)
    assert untagged([e.to_dict() for e in many.published], many.tag) == untagged(
        [e.to_dict() for e in one.published], one.tag
    )
    assert untagged(await table_rows(db, many.tag), many.tag) == untagged(
        await table_rows(db, one.tag), one.tag
    )


def assert_each_account_keeps_its_order(ops: list[tuple[Any, ...]], ran: list[int]) -> None:
    """Two operations that ran keep their arrival order when they name the same account, or
    when either did not say what it touches (captures, releases and refunds here name none)."""
    position = {index: n for n, index in enumerate(ran)}
    unsaid = ("capture", "release", "refund")
    for i, j in itertools.combinations(sorted(ran), 2):
        first, then = ops[i], ops[j]
        if first[0] in unsaid or then[0] in unsaid or first[1] == then[1]:
            assert position[i] < position[j], f"{first} (#{i}) applied after {then} (#{j})"


@pytest.mark.parametrize("depth", [1, 2])
def test_a_batch_leaves_what_one_at_a_time_leaves(
    database_url: str, monkeypatch: pytest.MonkeyPatch, depth: int
) -> None:
    upgrade(database_url)
    loop = asyncio.new_event_loop()
    db = Database.from_url(database_url)
    examples = itertools.count()

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(operation, min_size=1, max_size=30))
    def check(ops: list[tuple[Any, ...]]) -> None:
        loop.run_until_complete(compare(db, ops, next(examples), monkeypatch, depth))

    try:
        check()
    finally:
        loop.run_until_complete(db.dispose())
        loop.close()
