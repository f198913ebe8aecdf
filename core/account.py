"""An account and its money rules: grants, holds, captures, releases, charges, expiry.

`Account` joins them, one concept per module: its fields (core.account_state), its journal
(core.journal), grants and their expiry (core.grants), what it may spend (core.spend_limits),
holds (core.holds), charges (core.charges) and refunds (core.refunds); here it opens and makes
its working copies.

Every change goes through `Account._record` (core.journal), which appends one journal entry and
one stream event with the next `seq`; the unit of work persists both in the same transaction.
"""

from __future__ import annotations

from datetime import datetime

from core.charges import ChargeRules
from core.holds import HoldRules
from core.model import new_id
from core.plans import TRIAL
from core.refunds import RefundRules


class Account(HoldRules, ChargeRules, RefundRules):
    @classmethod
    def open(cls, account_id: str, now: datetime) -> Account:
        """A new account with its trial grant, as seed 001's ensureUser creates it."""
        account = cls(
            account_id=account_id,
            balance=0,
            held=0,
            seq=0,
            created_at=now,
            trial_expires_at=now + TRIAL.duration,
        )
        account.add_grant(
            new_id("grt"), TRIAL.credits, "trial", now, expires_at=account.trial_expires_at
        )
        return account

    def working_copy(self) -> Account:
        """A copy an operation may change freely; this account stays as it was (only its
        grants' order, which means nothing, may be settled first so that every copy shares it)."""
        self._order_grants()
        clone = object.__new__(Account)  # the fields are its whole state; no __init__ checks
        clone.__dict__.update(self.__dict__)
        # spending goes in consumption order, so spent-out grants gather at the front: the
        # copy leaves those out (the loaded state holds live grants only, as the database does)
        spent = 0
        while spent < len(self.grants) and self.grants[spent].remaining == 0:
            spent += 1
        clone.grants = self.grants[spent:]
        clone.shared_grants, clone.own_grants = True, set()
        clone.new_entries, clone.new_events, clone.new_grants = [], [], []
        clone.touched_grants = {}
        return clone
