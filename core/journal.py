"""An account's journal and stream: each change as one entry and one event, in `seq` order.

Every change goes through `AccountJournal._record`, which appends one journal entry and one stream
event with the next `seq`; the unit of work persists both in the same transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.account_state import AccountState
from core.events import BalanceUpdated, CreditsLow, JobUpdated, iso
from core.model import Entry


class AccountJournal(AccountState):
    def record_job(self, job: dict[str, Any], now: datetime) -> None:
        """A job's status change joins the account's stream, between its balance changes."""
        self.seq += 1
        self.new_events.append(JobUpdated(self.account_id, self.seq, job=job, at=iso(now)))

    def _record(
        self,
        type_: str,
        amount: int,
        delta: int,
        held_delta: int,
        reason: str,
        ref: str | None,
        op_id: str,
        details: dict[str, Any],
        now: datetime,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """One journal entry and its event. The entry's metadata holds the engine's `details`,
        and the caller's `metadata` under its own key, so neither can overwrite the other."""
        self.seq += 1
        user = dict(metadata or {})
        entry_meta = {**details, "metadata": user} if user else details
        self.new_entries.append(
            Entry(
                self.account_id,
                self.seq,
                type_,
                amount,
                delta,
                held_delta,
                reason,
                ref,
                op_id,
                entry_meta,
                now,
                self.idempotency_key,
            )
        )
        self.new_events.append(
            BalanceUpdated(
                self.account_id,
                self.seq,
                balance=self.balance,
                held=self.held,
                available=self.available,
                delta=delta,
                reason=type_,
                ref=ref,
                at=iso(now),
                metadata=user,
            )
        )
        self._check_low_credits(now)

    def _check_low_credits(self, now: datetime) -> None:
        # once per downward crossing: re-armed only when available climbs back to the threshold
        if self.low_threshold is None:
            return
        if self.available >= self.low_threshold:
            self.low_notified = False
        elif not self.low_notified:
            self.low_notified = True
            self.seq += 1
            self.new_events.append(
                CreditsLow(
                    self.account_id,
                    self.seq,
                    available=self.available,
                    threshold=self.low_threshold,
                    at=iso(now),
                )
            )
