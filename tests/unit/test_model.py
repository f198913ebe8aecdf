"""Account, Grant and Hold rules of the plain-Python domain (SPEC §2, "Plans and trial")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.account import Account
from core.errors import (
    AmountTooLarge,
    DailyLimitExceeded,
    InsufficientCredits,
    InvalidAccountId,
    InvalidInput,
    InvalidState,
    InvariantViolated,
)
from core.events import BalanceUpdated
from core.model import MAX_AMOUNT, Hold, check_amount, grant_kind, normalise_account_id
from tests.support import MutableClock

DAY = timedelta(days=1)
TTL = timedelta(seconds=300)
LONG_TTL = timedelta(days=8)


@pytest.fixture
def clock() -> MutableClock:
    return MutableClock()


@pytest.fixture
def trial(clock: MutableClock) -> Account:
    """A freshly opened account: 28 trial credits, 4 a day."""
    return Account.open("user-1", clock.now())


@pytest.fixture
def bare(clock: MutableClock) -> Account:
    """An account with no grant and no trial, so tests choose every grant it has."""
    return Account(account_id="user-2", balance=0, held=0, seq=0, created_at=clock.now())


@pytest.fixture
def paid(clock: MutableClock) -> Account:
    """A trial account that bought credits, so the daily limit no longer applies."""
    account = Account.open("user-3", clock.now())
    account.add_grant("grt_paid", 100, "purchase", clock.now())
    return account


def state(account: Account) -> tuple[Any, ...]:
    return (
        account.balance,
        account.held,
        account.seq,
        account.trial_used,
        account.trial_day,
        account.paid,
        tuple((g.grant_id, g.remaining) for g in account.grants),
        len(account.new_entries),
        len(account.new_events),
    )


def spending(account: Account, action: Callable[[], object]) -> tuple[list[Any], list[Any]]:
    """Run `action` and return the entries and events it appended."""
    entries, events = len(account.new_entries), len(account.new_events)
    action()
    return account.new_entries[entries:], account.new_events[events:]


def amounts(funding: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(part["grant_id"], part["amount"]) for part in funding]


# -- opening an account --------------------------------------------------------------------------


def test_open_gives_28_trial_credits_expiring_in_7_days(clock: MutableClock) -> None:
    account = Account.open("user-1", clock.now())

    (grant,) = account.grants
    assert (account.balance, account.held, account.available) == (28, 0, 28)
    assert (grant.amount, grant.remaining, grant.kind) == (28, 28, "trial")
    assert grant.expires_at == clock.now() + timedelta(days=7)
    assert account.trial_expires_at == grant.expires_at


def test_open_records_the_trial_grant_as_seq_1(trial: Account) -> None:
    (entry,) = trial.new_entries
    (event,) = trial.new_events
    assert isinstance(event, BalanceUpdated)
    assert trial.seq == 1
    assert (entry.seq, entry.type, entry.amount, entry.delta, entry.held_delta) == (
        1,
        "grant",
        28,
        28,
        0,
    )
    assert (event.seq, event.balance, event.held, event.available, event.delta) == (
        1,
        28,
        0,
        28,
        28,
    )


def test_open_account_is_on_trial_and_unpaid(trial: Account, clock: MutableClock) -> None:
    assert trial.trial_active(clock.now())
    assert not trial.paid


# -- consumption order ---------------------------------------------------------------------------


def test_soonest_expiring_grant_is_consumed_first(bare: Account, clock: MutableClock) -> None:
    now = clock.now()
    bare.add_grant("late", 10, "purchase", now, expires_at=now + 30 * DAY)
    bare.add_grant("soon", 10, "purchase", now, expires_at=now + 10 * DAY)

    funding = bare.charge("chg", 15, "use", now)

    assert amounts(funding) == [("soon", 10), ("late", 5)]


def test_never_expiring_grant_is_consumed_last(bare: Account, clock: MutableClock) -> None:
    now = clock.now()
    bare.add_grant("forever", 10, "promo", now)
    bare.add_grant("dated", 10, "purchase", now, expires_at=now + 365 * DAY)

    funding = bare.charge("chg", 12, "use", now)

    assert amounts(funding) == [("dated", 10), ("forever", 2)]


@pytest.mark.parametrize("reason", ["trial", "promo", "referral", "bonus"])
def test_at_equal_expiry_trial_and_promo_go_before_paid(
    bare: Account, clock: MutableClock, reason: str
) -> None:
    now = clock.now()
    bare.add_grant("paid", 10, "purchase", now, expires_at=now + 5 * DAY)
    clock.advance(minutes=1)
    bare.add_grant("free", 10, reason, clock.now(), expires_at=now + 5 * DAY)

    funding = bare.charge("chg", 12, "use", clock.now())

    assert amounts(funding) == [("free", 10), ("paid", 2)]


def test_at_equal_expiry_and_kind_the_oldest_goes_first(bare: Account, clock: MutableClock) -> None:
    bare.add_grant("older", 10, "purchase", clock.now())
    clock.advance(hours=1)
    bare.add_grant("newer", 10, "plan:growth", clock.now())

    funding = bare.charge("chg", 12, "use", clock.now())

    assert amounts(funding) == [("older", 10), ("newer", 2)]


def test_expiry_outranks_kind(bare: Account, clock: MutableClock) -> None:
    now = clock.now()
    bare.add_grant("promo", 10, "promo", now, expires_at=now + 9 * DAY)
    bare.add_grant("paid", 10, "purchase", now, expires_at=now + 2 * DAY)

    funding = bare.charge("chg", 11, "use", now)

    assert amounts(funding) == [("paid", 10), ("promo", 1)]


def test_funding_names_the_kind_of_each_grant(bare: Account, clock: MutableClock) -> None:
    now = clock.now()
    bare.add_grant("t", 3, "trial", now, expires_at=now + DAY)
    bare.add_grant("p", 3, "purchase", now, expires_at=now + DAY)

    funding = bare.charge("chg", 6, "use", now)

    assert [(part["grant_id"], part["kind"]) for part in funding] == [("t", "trial"), ("p", "paid")]


def test_charge_records_its_funding_in_the_entry(bare: Account, clock: MutableClock) -> None:
    bare.add_grant("g", 10, "purchase", clock.now())

    funding = bare.charge(
        "chg",
        4,
        "use",
        clock.now(),
        metadata={"service": "gemini"},
        price={"operation": "chat_refinement"},
    )

    entry = bare.new_entries[-1]
    # the engine's details at the top, the caller's metadata under its own key
    assert entry.metadata == {
        "operation": "chat_refinement",
        "funding": funding,
        "metadata": {"service": "gemini"},
    }
    assert (entry.type, entry.op_id, entry.amount, entry.delta) == ("charge", "chg", 4, -4)


def test_capture_stores_its_funding_in_order(bare: Account, clock: MutableClock) -> None:
    now = clock.now()
    bare.add_grant("paid", 10, "purchase", now)
    bare.add_grant("promo", 10, "promo", now, expires_at=now + 3 * DAY)
    hold = bare.open_hold("hold", 14, TTL, now)

    bare.capture(hold, None, now)

    assert amounts(hold.funding) == [("promo", 10), ("paid", 4)]
    assert bare.new_entries[-1].metadata["funding"] == hold.funding


def test_opening_a_hold_consumes_no_grant(bare: Account, clock: MutableClock) -> None:
    bare.add_grant("g", 10, "purchase", clock.now())

    bare.open_hold("hold", 6, TTL, clock.now())

    assert [g.remaining for g in bare.grants] == [10]
    assert (bare.balance, bare.held, bare.available) == (10, 6, 4)


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("trial", "trial"),
        ("promo", "promo"),
        ("promotion:spring", "promo"),
        ("bonus", "promo"),
        ("referral:abc", "promo"),
        ("purchase", "paid"),
        ("plan:pro", "paid"),
        ("points", "paid"),
    ],
)
def test_grant_kind_follows_the_reason(reason: str, kind: str) -> None:
    assert grant_kind(reason) == kind


# -- capture and release -------------------------------------------------------------------------


def test_full_capture_takes_the_held_amount(paid: Account, clock: MutableClock) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())

    paid.capture(hold, None, clock.now())

    assert (paid.balance, paid.held) == (118, 0)
    assert (hold.status, hold.captured_amount, hold.closed_at) == (Hold.CAPTURED, 10, clock.now())


def test_partial_capture_frees_the_rest(paid: Account, clock: MutableClock) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())

    paid.capture(hold, 3, clock.now())

    entry = paid.new_entries[-1]
    assert (paid.balance, paid.held, paid.available) == (125, 0, 125)
    assert hold.captured_amount == 3
    assert (entry.amount, entry.delta, entry.held_delta) == (3, -3, -10)
    assert entry.metadata["released"] == 7


def test_release_frees_the_hold_in_full(paid: Account, clock: MutableClock) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())

    paid.release(hold, "provider_failed", clock.now())

    entry = paid.new_entries[-1]
    assert (paid.balance, paid.held) == (128, 0)
    assert (hold.status, hold.release_reason) == (Hold.RELEASED, "provider_failed")
    assert (entry.type, entry.delta, entry.held_delta) == ("release", 0, -10)


@pytest.mark.parametrize("amount", [None, 10])
def test_repeating_a_full_capture_is_a_no_op(
    paid: Account, clock: MutableClock, amount: int | None
) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())
    paid.capture(hold, amount, clock.now())
    before = state(paid)

    paid.capture(hold, amount, clock.now())

    assert state(paid) == before


def test_repeating_a_partial_capture_with_its_amount_is_a_no_op(
    paid: Account, clock: MutableClock
) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())
    paid.capture(hold, 4, clock.now())
    before = state(paid)

    paid.capture(hold, 4, clock.now())

    assert state(paid) == before
    assert hold.captured_amount == 4


def test_capture_with_another_amount_after_capture_is_invalid_state(
    paid: Account, clock: MutableClock
) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())
    paid.capture(hold, 4, clock.now())
    before = state(paid)

    with pytest.raises(InvalidState):
        paid.capture(hold, 5, clock.now())

    assert state(paid) == before


def test_repeating_a_release_is_a_no_op(paid: Account, clock: MutableClock) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())
    paid.release(hold, "cancelled", clock.now())
    before = state(paid)

    paid.release(hold, "cancelled", clock.now())

    assert state(paid) == before


def test_capture_after_release_is_invalid_state(paid: Account, clock: MutableClock) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())
    paid.release(hold, "cancelled", clock.now())
    before = state(paid)

    with pytest.raises(InvalidState) as caught:
        paid.capture(hold, None, clock.now())

    assert caught.value.details["hold_status"] == Hold.RELEASED
    assert state(paid) == before


def test_release_after_capture_is_invalid_state(paid: Account, clock: MutableClock) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())
    paid.capture(hold, None, clock.now())
    before = state(paid)

    with pytest.raises(InvalidState):
        paid.release(hold, "cancelled", clock.now())

    assert state(paid) == before


def test_capture_of_an_open_hold_past_its_ttl_is_invalid_state(
    paid: Account, clock: MutableClock
) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())
    clock.advance(seconds=300)
    before = state(paid)

    with pytest.raises(InvalidState) as caught:
        paid.capture(hold, None, clock.now())

    assert caught.value.details["hold_status"] == "expired"
    assert hold.status == Hold.OPEN
    assert state(paid) == before


def test_capture_just_before_the_ttl_succeeds(paid: Account, clock: MutableClock) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())
    clock.advance(seconds=299)

    paid.capture(hold, None, clock.now())

    assert hold.status == Hold.CAPTURED


def test_capture_of_an_expired_hold_is_invalid_state(paid: Account, clock: MutableClock) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())
    clock.advance(seconds=300)
    paid.expire_hold(hold, clock.now())
    before = state(paid)

    with pytest.raises(InvalidState):
        paid.capture(hold, None, clock.now())

    assert state(paid) == before


def test_release_of_an_expired_hold_is_a_no_op(paid: Account, clock: MutableClock) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())
    clock.advance(seconds=300)
    paid.expire_hold(hold, clock.now())
    before = state(paid)

    paid.release(hold, "cancelled", clock.now())

    assert state(paid) == before
    assert hold.status == Hold.EXPIRED


def test_capture_of_more_than_held_is_invalid_input(paid: Account, clock: MutableClock) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())
    before = state(paid)

    with pytest.raises(InvalidInput):
        paid.capture(hold, 11, clock.now())

    assert state(paid) == before
    assert hold.status == Hold.OPEN


@pytest.mark.parametrize("amount", [0, -1, True, 2.0, "3"])
def test_capture_of_a_bad_amount_is_invalid_input(
    paid: Account, clock: MutableClock, amount: object
) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())
    before = state(paid)

    with pytest.raises(InvalidInput):
        paid.capture(hold, amount, clock.now())  # type: ignore[arg-type]

    assert state(paid) == before


def test_a_hold_of_another_account_cannot_be_touched(
    paid: Account, bare: Account, clock: MutableClock
) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())
    bare.add_grant("g", 50, "purchase", clock.now())
    before = state(bare)

    for action in (
        lambda: bare.capture(hold, None, clock.now()),
        lambda: bare.release(hold, "x", clock.now()),
        lambda: bare.expire_hold(hold, clock.now() + DAY),
    ):
        with pytest.raises(InvalidState):
            action()

    assert state(bare) == before
    assert hold.status == Hold.OPEN


# -- hold expiry ---------------------------------------------------------------------------------


def test_expire_hold_before_its_ttl_does_nothing(paid: Account, clock: MutableClock) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())
    clock.advance(seconds=299)
    before = state(paid)

    assert paid.expire_hold(hold, clock.now()) is False
    assert state(paid) == before
    assert hold.status == Hold.OPEN


def test_expire_hold_at_its_ttl_releases_it_with_reason_timeout(
    paid: Account, clock: MutableClock
) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())
    clock.advance(seconds=300)

    assert paid.expire_hold(hold, clock.now()) is True

    entry = paid.new_entries[-1]
    assert (hold.status, hold.release_reason) == (Hold.EXPIRED, "timeout")
    assert (paid.balance, paid.held) == (128, 0)
    assert (entry.type, entry.reason, entry.held_delta) == ("release", "timeout", -10)


def test_expire_hold_twice_does_nothing_the_second_time(paid: Account, clock: MutableClock) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())
    clock.advance(seconds=300)
    paid.expire_hold(hold, clock.now())
    before = state(paid)

    assert paid.expire_hold(hold, clock.now()) is False
    assert state(paid) == before


def test_expire_hold_ignores_a_captured_hold(paid: Account, clock: MutableClock) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())
    paid.capture(hold, None, clock.now())
    clock.advance(days=1)
    before = state(paid)

    assert paid.expire_hold(hold, clock.now()) is False
    assert state(paid) == before


# -- grant expiry --------------------------------------------------------------------------------


def test_nothing_expires_before_expires_at(trial: Account, clock: MutableClock) -> None:
    clock.advance(days=7, seconds=-1)
    before = state(trial)

    assert trial.expire_due_grants(clock.now()) == 0
    assert state(trial) == before


def test_the_trial_expires_at_expires_at(trial: Account, clock: MutableClock) -> None:
    clock.advance(days=7)

    assert trial.expire_due_grants(clock.now()) == 28

    entry = trial.new_entries[-1]
    assert (trial.balance, trial.grants[0].remaining) == (0, 0)
    assert (entry.type, entry.amount, entry.delta, entry.held_delta) == ("expire", 28, -28, 0)


def test_only_the_unconsumed_remainder_expires(trial: Account, clock: MutableClock) -> None:
    trial.charge("chg", 4, "use", clock.now())
    clock.advance(days=7)

    assert trial.expire_due_grants(clock.now()) == 24
    assert trial.balance == 0


def test_expiring_twice_expires_nothing_more(trial: Account, clock: MutableClock) -> None:
    clock.advance(days=7)
    trial.expire_due_grants(clock.now())
    before = state(trial)

    assert trial.expire_due_grants(clock.now()) == 0
    assert state(trial) == before


def test_a_never_expiring_grant_never_expires(bare: Account, clock: MutableClock) -> None:
    bare.add_grant("g", 10, "purchase", clock.now())
    clock.advance(days=3650)

    assert bare.expire_due_grants(clock.now()) == 0
    assert bare.balance == 10


def test_expiry_spares_the_credits_backing_an_open_hold(
    trial: Account, clock: MutableClock
) -> None:
    hold = trial.open_hold("hold", 4, LONG_TTL, clock.now())
    clock.advance(days=7)

    assert trial.expire_due_grants(clock.now()) == 24
    assert (trial.balance, trial.held, trial.available) == (4, 4, 0)

    trial.capture(hold, None, clock.now())
    assert (trial.balance, trial.held) == (0, 0)
    assert amounts(hold.funding) == [(trial.grants[0].grant_id, 4)]


def test_spared_credits_expire_once_their_hold_is_released(
    trial: Account, clock: MutableClock
) -> None:
    hold = trial.open_hold("hold", 4, LONG_TTL, clock.now())
    clock.advance(days=7)
    trial.expire_due_grants(clock.now())

    trial.release(hold, "provider_failed", clock.now())

    assert [e.type for e in trial.new_entries[-2:]] == ["release", "expire"]
    assert trial.new_entries[-1].amount == 4
    assert (trial.balance, trial.held) == (0, 0)
    assert trial.expire_due_grants(clock.now()) == 0


def test_what_a_partial_capture_leaves_of_spared_credits_expires(
    trial: Account, clock: MutableClock
) -> None:
    hold = trial.open_hold("hold", 4, LONG_TTL, clock.now())
    clock.advance(days=7)
    trial.expire_due_grants(clock.now())

    trial.capture(hold, 1, clock.now())

    assert [(e.type, e.amount) for e in trial.new_entries[-2:]] == [("capture", 1), ("expire", 3)]
    assert trial.balance == 0


def test_credits_spared_for_an_open_hold_do_not_fund_other_spending(
    paid: Account, clock: MutableClock
) -> None:
    _, paid_grant = paid.grants
    hold = paid.open_hold("hold", 4, LONG_TTL, clock.now())
    clock.advance(days=7)
    paid.expire_due_grants(clock.now())

    funding = paid.charge("chg", 10, "use", clock.now())
    paid.release(hold, "provider_failed", clock.now())
    paid.expire_due_grants(clock.now())

    assert amounts(funding) == [(paid_grant.grant_id, 10)]
    assert paid.balance == 90


def test_a_new_grant_must_expire_in_the_future(bare: Account, clock: MutableClock) -> None:
    with pytest.raises(InvalidInput):
        bare.add_grant("g", 10, "promo", clock.now(), expires_at=clock.now())

    assert state(bare) == (0, 0, 0, 0, None, False, (), 0, 0)


# -- trial daily limit ---------------------------------------------------------------------------


def test_a_trial_account_may_spend_4_credits_a_day(trial: Account, clock: MutableClock) -> None:
    trial.charge("chg-1", 3, "use", clock.now())
    trial.charge("chg-2", 1, "use", clock.now())

    assert trial.spent_today(clock.now()) == 4
    assert trial.balance == 24


def test_the_fifth_credit_of_the_day_is_refused(trial: Account, clock: MutableClock) -> None:
    trial.charge("chg", 4, "use", clock.now())
    before = state(trial)

    with pytest.raises(DailyLimitExceeded) as caught:
        trial.charge("chg-2", 1, "use", clock.now())

    assert caught.value.details == {
        "limit": 4,
        "spent_today": 4,
        "requested": 1,
        "retry_after": 12 * 3600,
    }
    assert state(trial) == before


def test_holds_count_towards_the_daily_limit(trial: Account, clock: MutableClock) -> None:
    trial.open_hold("hold", 3, TTL, clock.now())
    before = state(trial)

    with pytest.raises(DailyLimitExceeded):
        trial.open_hold("hold-2", 2, TTL, clock.now())

    assert state(trial) == before


def test_a_single_request_over_the_limit_is_refused(trial: Account, clock: MutableClock) -> None:
    with pytest.raises(DailyLimitExceeded) as caught:
        trial.open_hold("hold", 5, TTL, clock.now())

    assert caught.value.details["spent_today"] == 0


@pytest.mark.parametrize(
    ("time_of_day", "retry_after"),
    [
        (timedelta(hours=0), 86400),
        (timedelta(hours=12), 43200),
        (timedelta(hours=23, minutes=59, seconds=30), 30),
        (timedelta(hours=23, minutes=59, seconds=59, microseconds=500000), 1),
    ],
)
def test_retry_after_is_the_time_to_the_next_utc_midnight(
    time_of_day: timedelta, retry_after: int
) -> None:
    now = datetime(2030, 1, 15, tzinfo=UTC) + time_of_day
    account = Account.open("user-1", now)
    account.charge("chg", 4, "use", now)

    with pytest.raises(DailyLimitExceeded) as caught:
        account.charge("chg-2", 1, "use", now)

    assert caught.value.details["retry_after"] == retry_after


def test_the_limit_resets_at_utc_midnight(trial: Account, clock: MutableClock) -> None:
    trial.charge("chg", 4, "use", clock.now())
    clock.advance(hours=12)

    trial.charge("chg-2", 4, "use", clock.now())

    assert trial.spent_today(clock.now()) == 4


def test_the_limit_still_applies_a_second_before_midnight(
    trial: Account, clock: MutableClock
) -> None:
    trial.charge("chg", 4, "use", clock.now())
    clock.advance(hours=12, seconds=-1)

    with pytest.raises(DailyLimitExceeded):
        trial.charge("chg-2", 1, "use", clock.now())


def test_a_released_hold_gives_back_todays_allowance(trial: Account, clock: MutableClock) -> None:
    hold = trial.open_hold("hold", 4, TTL, clock.now())
    trial.release(hold, "provider_failed", clock.now())

    trial.charge("chg", 4, "use", clock.now())

    assert trial.spent_today(clock.now()) == 4


def test_an_expired_hold_gives_back_todays_allowance(trial: Account, clock: MutableClock) -> None:
    hold = trial.open_hold("hold", 4, TTL, clock.now())
    clock.advance(seconds=300)
    trial.expire_hold(hold, clock.now())

    trial.charge("chg", 4, "use", clock.now())


def test_a_partial_capture_gives_back_the_freed_part(trial: Account, clock: MutableClock) -> None:
    hold = trial.open_hold("hold", 4, TTL, clock.now())
    trial.capture(hold, 1, clock.now())

    trial.charge("chg", 3, "use", clock.now())

    with pytest.raises(DailyLimitExceeded):
        trial.charge("chg-2", 1, "use", clock.now())


def test_a_hold_released_the_next_day_gives_back_nothing_today(
    trial: Account, clock: MutableClock
) -> None:
    hold = trial.open_hold("hold", 4, LONG_TTL, clock.now())
    clock.advance(hours=13)
    trial.charge("chg", 4, "use", clock.now())

    trial.release(hold, "provider_failed", clock.now())

    with pytest.raises(DailyLimitExceeded):
        trial.charge("chg-2", 1, "use", clock.now())


def test_a_paid_grant_lifts_the_limit(trial: Account, clock: MutableClock) -> None:
    trial.charge("chg", 4, "use", clock.now())
    trial.add_grant("grt", 30, "plan:starter", clock.now(), plan="starter")

    trial.charge("chg-2", 20, "use", clock.now())

    assert trial.paid and trial.plan == "starter"
    assert not trial.trial_active(clock.now())


@pytest.mark.parametrize("reason", ["promo", "bonus", "referral", "trial"])
def test_a_promotional_grant_does_not_lift_the_limit(
    trial: Account, clock: MutableClock, reason: str
) -> None:
    trial.add_grant("grt", 30, reason, clock.now())

    with pytest.raises(DailyLimitExceeded):
        trial.charge("chg", 5, "use", clock.now())

    assert not trial.paid


def test_the_limit_ends_with_the_trial(trial: Account, clock: MutableClock) -> None:
    trial.add_grant("grt", 30, "promo", clock.now())
    clock.advance(days=7)

    trial.charge("chg", 10, "use", clock.now())

    assert not trial.trial_active(clock.now())


# -- insufficient credits ------------------------------------------------------------------------


def test_insufficient_credits_reports_the_shortfall(paid: Account, clock: MutableClock) -> None:
    paid.open_hold("hold", 100, TTL, clock.now())
    before = state(paid)

    with pytest.raises(InsufficientCredits) as caught:
        paid.charge("chg", 33, "use", clock.now())

    assert caught.value.details == {"required": 33, "available": 28, "shortfall": 5}
    assert str(caught.value) == "Insufficient credits. You need 5 more credits for this."
    assert caught.value.message == str(caught.value)
    assert state(paid) == before


def test_a_hold_beyond_available_is_insufficient(bare: Account, clock: MutableClock) -> None:
    bare.add_grant("g", 10, "purchase", clock.now())
    before = state(bare)

    with pytest.raises(InsufficientCredits) as caught:
        bare.open_hold("hold", 11, TTL, clock.now())

    assert caught.value.details["shortfall"] == 1
    assert state(bare) == before


def test_spending_exactly_the_available_credits_is_allowed(
    bare: Account, clock: MutableClock
) -> None:
    bare.add_grant("g", 10, "purchase", clock.now())
    bare.open_hold("hold", 6, TTL, clock.now())

    bare.charge("chg", 4, "use", clock.now())

    assert (bare.balance, bare.held, bare.available) == (6, 6, 0)


# -- amounts and account ids ---------------------------------------------------------------------


@pytest.mark.parametrize("amount", [1, 28, MAX_AMOUNT])
def test_check_amount_accepts_positive_integers(amount: int) -> None:
    assert check_amount(amount) == amount


@pytest.mark.parametrize("amount", [0, -1, True, False, 1.0, 2.5, "5", None, [1]])
def test_check_amount_rejects_non_positive_and_non_integers(amount: object) -> None:
    with pytest.raises(InvalidInput):
        check_amount(amount)


@pytest.mark.parametrize("amount", [MAX_AMOUNT + 1, 2**63])
def test_check_amount_rejects_huge_amounts(amount: int) -> None:
    with pytest.raises(AmountTooLarge):
        check_amount(amount)


def test_check_amount_names_the_field_in_its_message() -> None:
    with pytest.raises(InvalidInput, match="credits"):
        check_amount(0, name="credits")


@pytest.mark.parametrize(
    "raw",
    [
        "a",
        "user-1",
        "User_42",
        "a.b:c@d-e_f",
        "auth0:abc",
        "x" * 128,
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:@-",
    ],
)
def test_account_ids_from_the_charset_are_kept_as_they_are(raw: str) -> None:
    assert normalise_account_id(raw) == raw


def test_wallet_addresses_are_lowercased() -> None:
    wallet = "0xAbCdEf0123456789ABCDEF0123456789abcdef01"

    assert normalise_account_id(wallet) == wallet.lower()


@pytest.mark.parametrize(
    "raw",
    [
        "0xABCDEF0123456789ABCDEF0123456789ABCDEF012",
        "0xABCDEF0123456789ABCDEF0123456789ABCDEF0",
        "0xGBCDEF0123456789ABCDEF0123456789ABCDEF01",
    ],
)
def test_near_wallet_ids_keep_their_case(raw: str) -> None:
    assert normalise_account_id(raw) == raw


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "x" * 129,
        "has space",
        "slash/",
        "back\\slash",
        "semi;colon",
        "pipe|",
        "ünïcode",
        "line\n",
        "\nline",
        "tab\t",
        "null\x00",
        None,
        42,
        b"bytes",
        ["user-1"],
        ".",
        "..",
    ],
)
def test_bad_account_ids_are_rejected(raw: object) -> None:
    with pytest.raises(InvalidAccountId):
        normalise_account_id(raw)


# -- journal and events --------------------------------------------------------------------------


def test_each_change_appends_one_entry_and_one_event(trial: Account, clock: MutableClock) -> None:
    now = clock.now()
    hold_a = trial.open_hold("hold-a", 2, TTL, now)
    hold_b = trial.open_hold("hold-b", 1, TTL, now)
    hold_c = trial.open_hold("hold-c", 1, TTL, now)
    changes = [
        ("grant", lambda: trial.add_grant("grt", 10, "promo", now, expires_at=now + DAY)),
        ("capture", lambda: trial.capture(hold_a, 1, now)),
        ("release", lambda: trial.release(hold_b, "cancelled", now)),
        ("release", lambda: trial.expire_hold(hold_c, now + TTL)),
        ("charge", lambda: trial.charge("chg", 2, "use", now + TTL)),
        ("expire", lambda: trial.expire_due_grants(now + 2 * DAY)),
    ]

    for expected_type, change in changes:
        seq_before = trial.seq
        entries, events = spending(trial, change)
        assert [e.type for e in entries] == [expected_type]
        assert [(e.seq, ev.seq) for e, ev in zip(entries, events, strict=True)] == [
            (seq_before + 1, seq_before + 1)
        ]


def test_each_event_carries_the_state_after_its_change(paid: Account, clock: MutableClock) -> None:
    hold = paid.open_hold("hold", 10, TTL, clock.now())

    _, (event,) = spending(paid, lambda: paid.capture(hold, 6, clock.now()))

    assert isinstance(event, BalanceUpdated)
    assert (
        event.account_id,
        event.seq,
        event.balance,
        event.held,
        event.available,
        event.delta,
        event.reason,
    ) == ("user-3", paid.seq, 122, 0, 122, -6, "capture")


def test_no_op_operations_append_nothing(paid: Account, clock: MutableClock) -> None:
    captured = paid.open_hold("captured", 5, TTL, clock.now())
    released = paid.open_hold("released", 5, TTL, clock.now())
    open_hold = paid.open_hold("open", 5, TTL, clock.now())
    paid.capture(captured, None, clock.now())
    paid.release(released, "x", clock.now())
    before = state(paid)

    paid.capture(captured, None, clock.now())
    paid.release(released, "x", clock.now())
    paid.expire_hold(open_hold, clock.now())
    paid.expire_due_grants(clock.now())

    assert state(paid) == before


def test_refused_operations_append_nothing(trial: Account, clock: MutableClock) -> None:
    before = state(trial)
    fractional: Any = 2.5
    refusals: list[tuple[type[Exception], Callable[[], object]]] = [
        (DailyLimitExceeded, lambda: trial.charge("c", 5, "use", clock.now())),
        (InvalidInput, lambda: trial.charge("c", 0, "use", clock.now())),
        (InvalidInput, lambda: trial.open_hold("h", -3, TTL, clock.now())),
        (InvalidInput, lambda: trial.add_grant("g", fractional, "promo", clock.now())),
    ]

    for error, action in refusals:
        with pytest.raises(error):
            action()

    assert state(trial) == before


def test_seq_stays_consecutive_over_many_changes(paid: Account, clock: MutableClock) -> None:
    for i in range(20):
        hold = paid.open_hold(f"hold-{i}", 3, TTL, clock.now())
        if i % 2:
            paid.capture(hold, 1, clock.now())
        else:
            paid.release(hold, "x", clock.now())

    assert [e.seq for e in paid.new_entries] == list(range(1, paid.seq + 1))
    assert [e.seq for e in paid.new_events] == list(range(1, paid.seq + 1))
    assert paid.seq == 2 + 40


def test_a_balance_its_grants_do_not_cover_is_a_bug_not_a_refusal(
    bare: Account, clock: MutableClock
) -> None:
    bare.add_grant("grt_1", 10, "purchase", clock.now())
    bare.balance += 5  # a corrupted row: the balance claims more than the grants hold
    with pytest.raises(InvariantViolated, match="do not cover 15 credits"):
        bare.charge("chg_1", 15, "usage", clock.now())
    assert not issubclass(InvariantViolated, InvalidState)


def test_a_hold_reserving_an_unknown_grant_is_a_bug(bare: Account, clock: MutableClock) -> None:
    bare.add_grant("grt_1", 10, "purchase", clock.now())
    hold = bare.open_hold("hold_1", 4, TTL, clock.now())
    hold.allocation[0]["grant_id"] = "grt_gone"
    with pytest.raises(InvariantViolated, match="grt_gone"):
        bare.release(hold, "released", clock.now())
