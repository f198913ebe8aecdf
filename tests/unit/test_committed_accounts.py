"""What the writer remembers of the accounts it committed stays bounded, and a batch gets either
every account it names or none of them."""

from __future__ import annotations

from datetime import UTC, datetime

from core.account import Account
from storage.writes.committed_accounts import CommittedAccounts


def account(account_id: str) -> Account:
    return Account(
        account_id=account_id, balance=0, held=0, seq=0, created_at=datetime(2030, 1, 1, tzinfo=UTC)
    )


def test_a_batch_gets_all_of_its_accounts_or_none() -> None:
    remembered = CommittedAccounts()
    remembered.remember(account("a"), (10, 1))
    remembered.remember(account("b"), (11, 4))
    found = remembered.all_of(["a", "b"])
    assert found is not None and {k: v for k, (_, v) in found.items()} == {
        "a": (10, 1),
        "b": (11, 4),
    }
    assert remembered.all_of(["a", "c"]) is None


def test_the_least_recently_used_account_goes_first_past_the_bound() -> None:
    remembered = CommittedAccounts(most=3)
    for name in "abc":
        remembered.remember(account(name), (1, 1))
    assert remembered.all_of(["a"]) is not None  # a used: b is now the oldest
    remembered.remember(account("d"), (1, 1))
    assert len(remembered) == 3
    assert remembered.all_of(["b"]) is None
    assert remembered.all_of(["a", "c", "d"]) is not None


def test_a_later_commit_replaces_the_version_and_forget_and_clear_drop() -> None:
    remembered = CommittedAccounts()
    remembered.remember(account("a"), (1, 1))
    remembered.remember(account("a"), (2, 2))
    found = remembered.all_of(["a"])
    assert found is not None and found["a"][1] == (2, 2)
    remembered.remember(account("b"), (3, 1))
    remembered.forget(["a", "unknown"])
    assert remembered.all_of(["a"]) is None and len(remembered) == 1
    remembered.clear()
    assert len(remembered) == 0
