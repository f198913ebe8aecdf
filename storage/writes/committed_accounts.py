"""The accounts this process's batches last committed, with the row version each commit left, and
the holds committed with them.

A batch that names only accounts found here, and holds found with them, skips its locking read:
its operations apply on the committed state, and its write locks the accounts (in id order, as
the locking read would) and writes nothing unless each row is still the version remembered
(storage/writes/pg_arrays.py, `Versions`). Every transaction that
changes an account's live grants or holds rewrites the account's row in the same commit
(storage/writes/pg_statements.py, `_locked`), so an unchanged row version vouches for the grants
and holds read with it. A row another writer changed since (another instance, an operator's SQL)
fails the check: nothing is written (the write, the batch's only statement, commits nothing or
is rolled back with its transaction), the batch runs again through the locking read, and the
account is forgotten (and, found so again soon after, not remembered for a while:
RECURS_WITHIN_S).

A hold stays vouched for across commits of its account only while each of them is known to
have started from the state remembered: a batch that applied on the remembered account (its
write checked the version) carries the account's holds on; a batch that locked and read the
account starts it afresh, with only the holds it read or wrote, since another instance may
have ended any other hold in between. Every map here is bounded; the least recently used goes first.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from core.account import Account
from core.model import Hold

# accounts remembered; an account with a few grants is ~2 KiB here, so ~8 MiB at most
MAX_ACCOUNTS = 4096
# holds remembered (~1 KiB each): those opened in the last few seconds at a few thousand a
# second, which are the ones captured or released soonest
MAX_HOLDS = 8192
# idempotency keys remembered as claimed here (a request's repeat comes within seconds, mostly)
MAX_KEYS = 8192

# an account found changed by another writer is forgotten; found so again within
# RECURS_WITHIN_S, it is not remembered for a while: one that several instances write would
# otherwise fail a batch's checked write time and again, where the locking read costs one
# round trip. The pause starts at CHANGED_ELSEWHERE_S and doubles each time it recurs (up to
# 2 ** MOST_DOUBLINGS times), spread by up to half again so accounts found together do not all
# come back at once. A write now and then from elsewhere (an operator, a per-operation path)
# costs one batch's second try, and no pause.
RECURS_WITHIN_S = 600.0
CHANGED_ELSEWHERE_S = 60.0
MOST_DOUBLINGS = 5

# a row's version: its xmin (the transaction that wrote it) and its event sequence; the second
# tells apart two versions whose xmin could coincide (a failover to a standby that never saw
# the remembered commit, whose later transaction ids then repeat)
Version = tuple[int, int]


class StaleAccounts(Exception):
    """A batch applied on remembered accounts found one of their rows changed since (or a key
    it claimed with its write taken meanwhile): its write wrote nothing, and it runs again with
    the locking read."""

    def __init__(self, account_ids: list[str]) -> None:
        super().__init__(f"the remembered state of {account_ids} is stale")
        self.account_ids = account_ids


@dataclass(frozen=True, slots=True)
class Committed:
    """An account as a batch committed it; `lineage` names the unbroken run of this process's
    commits it belongs to, and the holds remembered in it."""

    account: Account
    version: Version
    lineage: int


class CommittedAccounts:
    def __init__(
        self,
        most: int = MAX_ACCOUNTS,
        most_holds: int = MAX_HOLDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._most, self._most_holds, self._clock = most, most_holds, clock
        self._known: OrderedDict[str, Committed] = OrderedDict()
        self._holds: OrderedDict[str, tuple[Hold, int]] = OrderedDict()  # with its lineage
        self._lineages = itertools.count(1)
        # when (monotonic) an account was last found changed elsewhere, how many times in a row
        # since, and until when it is not remembered
        self._elsewhere: OrderedDict[str, tuple[float, int, float]] = OrderedDict()
        # idempotency keys this process's batches claimed: a request that repeats one would
        # only fail a write that claims it as new, so its batch takes the usual claim
        self._keys: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.hits = 0  # batches that skipped their locking read, for tests and benchmarks
        self.stale = 0  # of those, the ones a changed row sent back to the locking read

    def __len__(self) -> int:
        return len(self._known)

    def all_of(self, account_ids: Iterable[str]) -> dict[str, Committed] | None:
        """Every one of these accounts as last committed, or None if one is not known."""
        found: dict[str, Committed] = {}
        known = self._known
        for account_id in account_ids:
            entry = known.get(account_id)
            if entry is None:
                return None
            found[account_id] = entry
        for account_id in found:
            known.move_to_end(account_id)
        return found

    def hold_owner(self, hold_id: str) -> str | None:
        entry = self._holds.get(hold_id)
        return None if entry is None else entry[0].account_id

    def holds(
        self, hold_ids: Iterable[str], accounts: dict[str, Committed]
    ) -> dict[str, Hold] | None:
        """Every one of these holds as committed in the lineage of its account in `accounts`,
        or None if one is not known so."""
        found: dict[str, Hold] = {}
        for hold_id in hold_ids:
            entry = self._holds.get(hold_id)
            if entry is None:
                return None
            hold, lineage = entry
            account = accounts.get(hold.account_id)
            if account is None or account.lineage != lineage:
                return None
            found[hold_id] = hold
        return found

    def remember(self, account: Account, version: Version, applied_on: Committed | None) -> None:
        """The account as a batch committed it; `applied_on`, what the batch applied on when it
        skipped the locking read (its write found the row at that version), carries the
        lineage and its holds on."""
        account_id = account.account_id
        found = self._elsewhere.get(account_id)
        if found is not None and found[2] > self._clock():
            return
        known = self._known
        if applied_on is not None and known.get(account_id) is applied_on:
            lineage = applied_on.lineage
        else:
            lineage = next(self._lineages)
        known[account_id] = Committed(account, version, lineage)
        known.move_to_end(account_id)
        while len(known) > self._most:
            known.popitem(last=False)

    def remember_hold(self, hold: Hold) -> None:
        """A hold a batch read or wrote, committed with its account (remembered just before)."""
        account = self._known.get(hold.account_id)
        if account is None:
            return
        known = self._holds
        known[hold.hold_id] = (hold, account.lineage)
        known.move_to_end(hold.hold_id)
        while len(known) > self._most_holds:
            known.popitem(last=False)

    def claimed(self, key_ids: Iterable[tuple[str, str]]) -> None:
        keys = self._keys
        for key_id in key_ids:
            keys[key_id] = None
            keys.move_to_end(key_id)
        while len(keys) > MAX_KEYS:
            keys.popitem(last=False)

    def knows_key(self, key_id: tuple[str, str]) -> bool:
        return key_id in self._keys

    def changed_elsewhere(self, account_ids: Iterable[str]) -> None:
        """Forget these accounts, found changed by another writer; one found so before, not
        long ago, is not remembered for a while (RECURS_WITHIN_S). Their holds go with them: a
        lineage is never continued once its account is gone."""
        now = self._clock()
        elsewhere = self._elsewhere
        for account_id in account_ids:
            self._known.pop(account_id, None)
            before = elsewhere.get(account_id)
            times, until = 0, now
            if before is not None and now - before[0] < RECURS_WITHIN_S:
                times = min(before[1] + 1, MOST_DOUBLINGS + 1)
                until = now + CHANGED_ELSEWHERE_S * 2 ** (times - 1) * random.uniform(1.0, 1.5)
            elsewhere[account_id] = (now, times, until)
            elsewhere.move_to_end(account_id)
        while len(elsewhere) > self._most:
            elsewhere.popitem(last=False)

    def clear(self) -> None:
        """After a failed batch whose cause is not known (a lost connection, a failover)."""
        self._known.clear()
        self._holds.clear()
        self._elsewhere.clear()
        self._keys.clear()
