"""The accounts this process's batches last committed, with the row version each commit left.

A batch that touches only accounts found here skips its locking read: its operations apply on
the committed state, and its write locks the accounts (in id order, as the locking read would)
and checks that each row is still the version remembered before anything it wrote counts
(storage/writes/pg_arrays.py, `GUARD`). Every transaction that changes an account's live grants or
holds rewrites the account's row in the same commit (storage/writes/pg_statements.py, `_locked`),
so an unchanged row version vouches for the grants read with it. A row another writer changed
since (another instance, the sweeper's per-operation path, an operator's SQL) fails the check:
the batch rolls back and runs again through the locking read, and the entry is forgotten. The
map is bounded; the least recently used account goes first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from core.account import Account

# accounts remembered; an account with a few grants is ~2 KiB here, so ~8 MiB at most
MAX_ACCOUNTS = 4096

# a row's version: its xmin (the transaction that wrote it) and its event sequence; the second
# tells apart two versions whose xmin could coincide (a failover to a standby that never saw
# the remembered commit, whose later transaction ids then repeat)
Version = tuple[int, int]


class StaleAccounts(Exception):
    """A batch applied on remembered accounts found one of their rows changed since (or a key
    it claimed with its write taken meanwhile): it is rolled back, to run again with the
    locking read."""

    def __init__(self, account_ids: list[str]) -> None:
        super().__init__(f"the remembered state of {account_ids} is stale")
        self.account_ids = account_ids


class CommittedAccounts:
    def __init__(self, most: int = MAX_ACCOUNTS) -> None:
        self._most = most
        self._known: OrderedDict[str, tuple[Account, Version]] = OrderedDict()
        self.hits = 0  # batches that skipped their locking read, for tests and benchmarks
        self.stale = 0  # of those, the ones a changed row sent back to the locking read

    def __len__(self) -> int:
        return len(self._known)

    def all_of(self, account_ids: Iterable[str]) -> dict[str, tuple[Account, Version]] | None:
        """Every one of these accounts as last committed, or None if one is not known."""
        found: dict[str, tuple[Account, Version]] = {}
        known = self._known
        for account_id in account_ids:
            entry = known.get(account_id)
            if entry is None:
                return None
            found[account_id] = entry
        for account_id in found:
            known.move_to_end(account_id)
        return found

    def remember(self, account: Account, version: Version) -> None:
        known = self._known
        known[account.account_id] = (account, version)
        known.move_to_end(account.account_id)
        while len(known) > self._most:
            known.popitem(last=False)

    def forget(self, account_ids: Iterable[str]) -> None:
        for account_id in account_ids:
            self._known.pop(account_id, None)

    def clear(self) -> None:
        """After a failed batch whose cause is not known (a lost connection, a failover)."""
        self._known.clear()
