"""What the writer remembers of the accounts it committed stays bounded, a batch gets either every
account and hold it names or none of them, and a hold is vouched for only along an unbroken run
of commits that started from what was remembered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.account import Account
from core.model import Hold
from storage.writes.committed_accounts import (
    CHANGED_ELSEWHERE_S,
    RECURS_WITHIN_S,
    CommittedAccounts,
)

AT = datetime(2030, 1, 1, tzinfo=UTC)


def account(account_id: str) -> Account:
    return Account(account_id=account_id, balance=0, held=0, seq=0, created_at=AT)


def hold(hold_id: str, account_id: str) -> Hold:
    return Hold(
        hold_id=hold_id,
        account_id=account_id,
        amount=1,
        status=Hold.OPEN,
        created_at=AT,
        expires_at=AT + timedelta(minutes=5),
    )


def test_a_batch_gets_all_of_its_accounts_or_none() -> None:
    remembered = CommittedAccounts()
    remembered.remember(account("a"), (10, 1), None)
    remembered.remember(account("b"), (11, 4), None)
    found = remembered.all_of(["a", "b"])
    assert found is not None
    assert {k: c.version for k, c in found.items()} == {"a": (10, 1), "b": (11, 4)}
    assert remembered.all_of(["a", "c"]) is None


def test_the_least_recently_used_account_goes_first_past_the_bound() -> None:
    remembered = CommittedAccounts(most=3)
    for name in "abc":
        remembered.remember(account(name), (1, 1), None)
    assert remembered.all_of(["a"]) is not None  # a used: b is now the oldest
    remembered.remember(account("d"), (1, 1), None)
    assert len(remembered) == 3
    assert remembered.all_of(["b"]) is None
    assert remembered.all_of(["a", "c", "d"]) is not None


def test_holds_are_bounded_too() -> None:
    remembered = CommittedAccounts(most_holds=2)
    remembered.remember(account("a"), (1, 1), None)
    for hold_id in ("h1", "h2", "h3"):
        remembered.remember_hold(hold(hold_id, "a"))
    accounts = remembered.all_of(["a"])
    assert accounts is not None
    assert remembered.holds(["h1"], accounts) is None
    assert remembered.holds(["h2", "h3"], accounts) is not None


def test_a_commit_applied_on_the_remembered_account_carries_its_holds_on() -> None:
    remembered = CommittedAccounts()
    remembered.remember(account("a"), (1, 1), None)
    remembered.remember_hold(hold("h", "a"))
    applied_on = remembered.all_of(["a"])
    assert applied_on is not None
    remembered.remember(account("a"), (2, 2), applied_on["a"])
    now = remembered.all_of(["a"])
    assert now is not None and now["a"].version == (2, 2)
    assert remembered.holds(["h"], now) is not None


def test_a_commit_that_locked_the_account_leaves_the_holds_it_did_not_read_behind() -> None:
    remembered = CommittedAccounts()
    remembered.remember(account("a"), (1, 1), None)
    remembered.remember_hold(hold("h", "a"))
    remembered.remember(account("a"), (5, 3), None)  # locked and read: another may have ended h
    now = remembered.all_of(["a"])
    assert now is not None and remembered.holds(["h"], now) is None
    assert remembered.hold_owner("h") == "a"


def test_an_account_changed_elsewhere_is_left_out_for_a_while_and_ends_its_lineage() -> None:
    now = [100.0]
    remembered = CommittedAccounts(clock=lambda: now[0])
    remembered.remember(account("a"), (1, 1), None)
    remembered.remember_hold(hold("h", "a"))
    stale = remembered.all_of(["a"])
    assert stale is not None
    remembered.changed_elsewhere(["a", "unknown"])
    assert remembered.all_of(["a"]) is None and len(remembered) == 0
    remembered.remember(account("a"), (2, 2), stale["a"])  # once: remembered again at once
    assert remembered.all_of(["a"]) is not None
    now[0] += 10
    remembered.changed_elsewhere(["a"])
    remembered.remember(account("a"), (3, 3), stale["a"])  # again soon after: not for now
    assert remembered.all_of(["a"]) is None
    now[0] += CHANGED_ELSEWHERE_S * 1.5 + 1
    remembered.remember(account("a"), (3, 3), stale["a"])  # no longer the one remembered
    found = remembered.all_of(["a"])
    assert found is not None and found["a"].version == (3, 3)
    assert remembered.holds(["h"], found) is None
    remembered.clear()
    assert len(remembered) == 0 and remembered.hold_owner("h") is None


def test_an_account_found_changed_elsewhere_again_is_left_out_twice_as_long() -> None:
    now = [0.0]
    remembered = CommittedAccounts(clock=lambda: now[0])
    remembered.changed_elsewhere(["a"])
    remembered.changed_elsewhere(["a"])  # again: a minute at least
    now[0] += CHANGED_ELSEWHERE_S * 1.5 + 1
    remembered.remember(account("a"), (1, 1), None)
    remembered.changed_elsewhere(["a"])  # a third time: two minutes at least
    now[0] += CHANGED_ELSEWHERE_S * 1.5 + 1
    remembered.remember(account("a"), (2, 2), None)
    assert remembered.all_of(["a"]) is None
    now[0] += CHANGED_ELSEWHERE_S * 1.5
    remembered.remember(account("a"), (3, 3), None)
    assert remembered.all_of(["a"]) is not None
    now[0] += RECURS_WITHIN_S
    remembered.changed_elsewhere(["a"])  # long after: forgotten, no pause
    remembered.remember(account("a"), (4, 4), None)
    assert remembered.all_of(["a"]) is not None
