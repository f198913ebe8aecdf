"""Which account a recent hold belongs to, so that a capture or a release that names only its
hold can name its account too.

A route that ends a hold knows its id, not its account. Named by its hold alone, such an
operation is locked with its account only once its batch runs, so the lane cannot keep it out
of a batch beside the one in flight that holds that account: the new batch then waits on the
database for the other's commit, and the two take turns. A hold never changes account, so what
a committed batch wrote is always right to remember; a hold not remembered (older, or opened by
another process) is named by its id alone, as before. Bounded: the oldest go first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace

from storage.writes.batch import Touches

# ~200 bytes each: ~6 MB when full; at 1,000 new holds a second it remembers the last half minute
REMEMBERED = 32_768


class HoldOwners:
    def __init__(self, most: int = REMEMBERED) -> None:
        self.most = most
        # in the order learnt, the first the oldest. An OrderedDict, not a dict: a dict's first
        # key, once many have been deleted from its front, is found by walking past each deleted
        # slot (until the dict is next resized), so dropping the oldest cost ~9 µs per hold when
        # full; OrderedDict.popitem(last=False) is O(1)
        self._owners: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._owners)

    def learn(self, owners: Iterable[tuple[str, str]]) -> None:
        """(hold id, account id) of holds a batch committed."""
        known = self._owners
        for hold_id, account_id in owners:
            known[hold_id] = account_id
        while len(known) > self.most:
            known.popitem(last=False)

    def complete(self, touches: Touches) -> Touches:
        """`touches` naming also the accounts of the holds it names, where they are known."""
        if not touches.holds:
            return touches
        known = self._owners
        named = touches.accounts
        owners = tuple(
            dict.fromkeys(
                owner
                for hold_id in touches.holds
                if (owner := known.get(hold_id)) is not None and owner not in named
            )
        )
        return replace(touches, accounts=named + owners) if owners else touches
