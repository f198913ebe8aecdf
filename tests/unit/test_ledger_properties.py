"""Random sequences of grants, holds, captures, releases, charges and expiries on one Account.

Whatever the sequence, the ledger stays conserved (balance == journal == grants, held == open
holds), never overdraws, keeps a gap-free seq, and a refused operation changes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
)

from core.account import Account
from core.errors import DailyLimitExceeded, InsufficientCredits, InvalidInput, InvalidState
from core.events import BalanceUpdated
from core.model import Hold, new_id
from tests.support import MutableClock

T = TypeVar("T")
REFUSALS = (InsufficientCredits, DailyLimitExceeded, InvalidState, InvalidInput)

DAY_MINUTES = 24 * 60
amounts = st.one_of(st.integers(1, 4), st.integers(1, 200))


def durations(*typical: int, longest: int) -> st.SearchStrategy[int]:
    """Minutes: mostly the given landmarks, sometimes any value up to `longest`."""
    return st.one_of(st.sampled_from(typical), st.integers(1, longest))


expiries = st.none() | durations(5, 60, DAY_MINUTES, 3 * DAY_MINUTES, longest=10 * DAY_MINUTES)
ttls = durations(5, 60, 8 * DAY_MINUTES, longest=10 * DAY_MINUTES)
steps = durations(1, 5, 60, 12 * 60, DAY_MINUTES, 7 * DAY_MINUTES, longest=8 * DAY_MINUTES)


class LedgerMachine(RuleBasedStateMachine):
    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.clock = MutableClock()
        self.account = Account.open("user-1", self.clock.now())
        self.opened: list[Hold] = []

    def fingerprint(self) -> tuple[Any, ...]:
        account = self.account
        return (
            account.balance,
            account.held,
            account.seq,
            account.paid,
            account.plan,
            account.trial_used,
            account.trial_day,
            tuple((g.grant_id, g.remaining) for g in account.grants),
            tuple((h.status, h.captured_amount) for h in self.opened),
            len(account.new_entries),
            len(account.new_events),
        )

    def attempt(self, action: Callable[[], T]) -> T | None:
        """Run `action`; a domain refusal is an allowed outcome only if it changed nothing."""
        before = self.fingerprint()
        try:
            return action()
        except REFUSALS:
            assert self.fingerprint() == before
            return None

    # -- rules ----------------------------------------------------------------------------------

    @rule(
        amount=amounts, reason=st.sampled_from(["trial", "promo", "purchase"]), expires_in=expiries
    )
    def grant(self, amount: int, reason: str, expires_in: int | None) -> None:
        now = self.clock.now()
        expires_at = None if expires_in is None else now + timedelta(minutes=expires_in)
        self.attempt(lambda: self.account.add_grant(new_id("grt"), amount, reason, now, expires_at))

    @rule(target=holds, amount=amounts, ttl=ttls)
    def open_hold(self, amount: int, ttl: int) -> Any:
        hold = self.attempt(
            lambda: self.account.open_hold(
                new_id("hold"), amount, timedelta(minutes=ttl), self.clock.now()
            )
        )
        if hold is None:
            return multiple()
        self.opened.append(hold)
        return hold

    @rule(hold=holds, amount=st.none() | amounts)
    def capture(self, hold: Hold, amount: int | None) -> None:
        was_open = hold.status == Hold.OPEN
        self.attempt(lambda: self.account.capture(hold, amount, self.clock.now()))
        if was_open and hold.status == Hold.CAPTURED:
            assert hold.captured_amount == (hold.amount if amount is None else amount)
            assert sum(part["amount"] for part in hold.funding) == hold.captured_amount

    @rule(hold=holds)
    def release(self, hold: Hold) -> None:
        self.attempt(lambda: self.account.release(hold, "released", self.clock.now()))
        assert hold.status != Hold.OPEN

    @rule(amount=amounts)
    def charge(self, amount: int) -> None:
        funding = self.attempt(
            lambda: self.account.charge(new_id("chg"), amount, "use", self.clock.now())
        )
        if funding is not None:
            assert sum(part["amount"] for part in funding) == amount

    @rule()
    def expire_due_grants(self) -> None:
        self.attempt(lambda: self.account.expire_due_grants(self.clock.now()))
        now = self.clock.now()
        assert sum(g.remaining for g in self.account.grants if g.is_due(now)) <= self.account.held

    @precondition(lambda self: any(h.status == Hold.OPEN for h in self.opened))
    @rule()
    def expire_due_holds(self) -> None:
        now = self.clock.now()
        for hold in self.opened:
            was_due = hold.is_due(now)
            assert self.attempt(functools.partial(self.account.expire_hold, hold, now)) is was_due
            assert not hold.is_due(now)

    @rule(by=steps)
    def advance_clock(self, by: int) -> None:
        self.clock.advance(minutes=by)

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def balance_is_the_journal_and_the_grants(self) -> None:
        journal = sum(entry.delta for entry in self.account.new_entries)
        grants = sum(grant.remaining for grant in self.account.grants)
        assert self.account.balance == journal == grants

    @invariant()
    def held_is_the_open_holds(self) -> None:
        open_holds = sum(h.amount for h in self.opened if h.status == Hold.OPEN)
        journal = sum(entry.held_delta for entry in self.account.new_entries)
        assert self.account.held == open_holds == journal

    @invariant()
    def available_never_negative(self) -> None:
        assert 0 <= self.account.held <= self.account.balance
        assert self.account.available >= 0

    @invariant()
    def grants_stay_within_their_amount(self) -> None:
        assert all(0 <= g.remaining <= g.amount for g in self.account.grants)

    @invariant()
    def seq_counts_entries_and_events_consecutively(self) -> None:
        expected = list(range(1, self.account.seq + 1))
        assert [entry.seq for entry in self.account.new_entries] == expected
        assert [event.seq for event in self.account.new_events] == expected

    @invariant()
    def last_event_shows_the_current_state(self) -> None:
        last = self.account.new_events[-1]
        assert isinstance(last, BalanceUpdated)
        assert (last.balance, last.held, last.available) == (
            self.account.balance,
            self.account.held,
            self.account.available,
        )


LedgerMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedger = LedgerMachine.TestCase
