"""G2 on a real database: random sequences of every operation keep the journal and balances equal.

Each hypothesis example works on a fresh account of one shared database per test, so the
database stays warm; `creditstream audit`'s query checks the invariants after every step.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from asgi import load_catalogue
from background.sweeper import Sweeper
from core.errors import CreditError
from core.service import CreditService
from storage.audit import audit
from storage.migrate import upgrade
from storage.sql import Database
from storage.writes.idempotency import IdempotencyStore
from tests.support import MutableClock

REASONS = st.sampled_from(["purchase", "promo", "trial", "points"])


class LedgerMachine(RuleBasedStateMachine):
    loop: asyncio.AbstractEventLoop
    db: Database

    def __init__(self) -> None:
        super().__init__()
        self.clock = MutableClock()
        self.service = CreditService(self.clock, load_catalogue(None))
        self.sweeper = Sweeper(self.db, self.service, IdempotencyStore(self.db))
        self.account = f"acct-{uuid.uuid4().hex[:10]}"
        self.holds: list[str] = []
        self.refusals = 0

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    async def _attempt(self, use_case: Any) -> Any:
        try:
            async with self.db.transaction() as uow:
                return await use_case(uow)
        except CreditError:
            self.refusals += 1  # a refusal is allowed; the invariants prove it changed nothing
            return None

    @rule(
        amount=st.integers(1, 500), reason=REASONS, expires_in_h=st.none() | st.integers(1, 24 * 10)
    )
    def grant(self, amount: int, reason: str, expires_in_h: int | None) -> None:
        expires = None if expires_in_h is None else self.clock.now() + timedelta(hours=expires_in_h)
        self.run(
            self._attempt(
                lambda uow: self.service.grant(uow, self.account, amount, reason, expires)
            )
        )

    @rule(amount=st.integers(1, 60), ttl=st.integers(1, 3600 * 48))
    def hold(self, amount: int, ttl: int) -> None:
        result = self.run(
            self._attempt(lambda uow: self.service.hold(uow, self.account, amount, ttl_seconds=ttl))
        )
        if result is not None:
            self.holds.append(result[0].hold_id)

    @rule(data=st.data(), partial=st.booleans())
    def capture(self, data: st.DataObject, partial: bool) -> None:
        if not self.holds:
            return
        hold_id = data.draw(st.sampled_from(self.holds))
        amount = data.draw(st.integers(1, 60)) if partial else None
        self.run(self._attempt(lambda uow: self.service.capture(uow, hold_id, amount)))

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        if self.holds:
            hold_id = data.draw(st.sampled_from(self.holds))
            self.run(self._attempt(lambda uow: self.service.release(uow, hold_id)))

    @rule(amount=st.integers(1, 80))
    def charge(self, amount: int) -> None:
        self.run(self._attempt(lambda uow: self.service.charge(uow, self.account, amount, "gen")))

    @rule(hours=st.sampled_from([0.5, 3, 25, 24 * 7 + 1]))
    def advance_clock(self, hours: float) -> None:
        self.clock.advance(hours=hours)

    @rule()
    def sweep(self) -> None:
        self.run(self.sweeper.run_once())

    @invariant()
    def journal_matches_balances(self) -> None:
        async def check() -> None:
            async with self.db.read() as uow:
                _, mismatches = await audit(uow.conn)
                account = await uow.accounts.get(self.account)
            assert [m.describe() for m in mismatches] == []
            if account is not None:
                assert 0 <= account.held <= account.balance

        self.run(check())


@pytest.mark.parametrize("examples", [25])
def test_ledger_invariants_hold_under_random_operations(database_url: str, examples: int) -> None:
    upgrade(database_url)
    loop = asyncio.new_event_loop()
    db = Database.from_url(database_url)
    LedgerMachine.loop, LedgerMachine.db = loop, db
    try:
        run_state_machine_as_test(
            LedgerMachine,
            settings=settings(
                max_examples=examples,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        loop.run_until_complete(db.dispose())
        loop.close()
