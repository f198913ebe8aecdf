"""An account and its money rules: grants, holds, captures, releases, charges, expiry.

Every change goes through `Account._record`, which appends one journal entry and one stream
event with the next `seq`; the unit of work persists both in the same transaction.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from core.errors import (
    AmountTooLarge,
    DailyLimitExceeded,
    InsufficientCredits,
    InvalidInput,
    InvalidState,
    InvariantViolated,
)
from core.events import BalanceUpdated, CreditsLow, Event, JobUpdated, iso
from core.limits import FeatureLimit, counted, uncounted
from core.model import (
    MAX_BALANCE,
    Entry,
    Grant,
    Hold,
    check_amount,
    grant_kind,
    new_id,
    seconds_until_next_utc_day,
)
from core.plans import TRIAL
from core.refunds import RefundRules


@dataclass
class Account(RefundRules):
    account_id: str
    balance: int
    held: int
    seq: int
    created_at: datetime
    plan: str | None = None
    paid: bool = False
    trial_expires_at: datetime | None = None
    trial_day: str | None = None
    trial_used: int = 0
    # runs of limited operations counted in their current window (core.limits); replaced, never
    # changed in place, as a working copy of the account may share it
    feature_usage: dict[str, dict[str, Any]] = field(default_factory=dict)
    grants: list[Grant] = field(default_factory=list)
    # what this transaction changed, for the unit of work to persist
    loaded_seq: int = 0
    new_entries: list[Entry] = field(default_factory=list)
    new_events: list[Event] = field(default_factory=list)
    new_grants: list[Grant] = field(default_factory=list)
    touched_grants: dict[str, Grant] = field(default_factory=dict)
    idempotency_key: str | None = None
    low_notified: bool = False
    low_threshold: int | None = None  # set by the service from configuration
    # `grants` in consumption order (Grant.consumption_key, which never changes) once sorted:
    # spending and expiry then walk them from the front instead of sorting them each time
    grants_ordered: bool = False
    # a working copy shares its grants with the state it was copied from, and copies one only
    # when it changes it (`own_grants` are those it copied or created): a batch of a thousand
    # parts on an account of a thousand grants copies a list per part, not a thousand grants
    shared_grants: bool = False
    own_grants: set[str] = field(default_factory=set)

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

    @property
    def available(self) -> int:
        return self.balance - self.held

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

    @property
    def changed(self) -> bool:
        return bool(self.new_entries or self.new_events)

    def trial_active(self, now: datetime) -> bool:
        return not self.paid and self.trial_expires_at is not None and now < self.trial_expires_at

    def spent_today(self, now: datetime) -> int:
        return self.trial_used if self.trial_day == now.date().isoformat() else 0

    def snapshot(self, now: datetime) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "balance": self.balance,
            "held": self.held,
            "available": self.available,
            "plan": self.plan,
            "trial": {
                "active": self.trial_active(now),
                "expires_at": iso(self.trial_expires_at),
                "daily_limit": TRIAL.daily_limit,
                "spent_today": self.spent_today(now),
            },
            "seq": self.seq,
            "created_at": iso(self.created_at),
        }

    # -- grants -------------------------------------------------------------------------------

    def add_grant(
        self,
        grant_id: str,
        amount: int,
        reason: str,
        now: datetime,
        expires_at: datetime | None = None,
        ref: str | None = None,
        plan: str | None = None,
        details: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Grant:
        """`details` are the engine's own notes for the journal (a payment's event id);
        `metadata` is the caller's."""
        check_amount(amount)
        if expires_at is not None and expires_at <= now:
            raise InvalidInput(f"Expected expires_at in the future, got {iso(expires_at)}")
        if self.balance + amount > MAX_BALANCE:
            raise AmountTooLarge(
                f"A balance may hold at most {MAX_BALANCE} credits; this grant would exceed it"
            )
        grant = Grant(
            grant_id,
            self.account_id,
            amount,
            amount,
            reason,
            grant_kind(reason),
            expires_at,
            now,
            ref,
            metadata=dict(metadata or {}),
        )
        self._insert_grant(grant)
        self.new_grants.append(grant)
        self.balance += amount
        if grant.kind == "paid":
            self.paid = True
        if plan is not None:
            self.plan = plan
        meta = {"kind": grant.kind, "expires_at": iso(expires_at), **(details or {})}
        if plan is not None:
            meta["plan"] = plan
        self._record("grant", amount, amount, 0, reason, ref, grant_id, meta, now, metadata)
        return grant

    def expire_due_grants(self, now: datetime) -> int:
        """Expire the unconsumed, unreserved remainder of grants past `expires_at`.

        Credits reserved by open holds stay until the hold ends: a capture consumes them, and a
        release frees them, at which point they expire too.
        """
        expired_total = 0
        self._order_grants()
        due = []
        for index, grant in enumerate(self.grants):
            if grant.expires_at is None or grant.expires_at > now:
                break  # in consumption order: those that expire later, or never, follow
            if grant.is_due(now):
                due.append((index, grant))
        for index, shared in due:
            grant = self._changing(shared, index)
            expiring = grant.free
            grant.remaining -= expiring
            self.balance -= expiring
            expired_total += expiring
            self._record(
                "expire",
                expiring,
                -expiring,
                0,
                grant.reason,
                grant.ref,
                grant.grant_id,
                {"grant_id": grant.grant_id, "kind": grant.kind},
                now,
            )
        return expired_total

    # -- spending -----------------------------------------------------------------------------

    def open_hold(
        self,
        hold_id: str,
        amount: int,
        ttl: timedelta,
        now: datetime,
        ref: str | None = None,
        job_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        price: dict[str, Any] | None = None,
        limit: FeatureLimit | None = None,
    ) -> Hold:
        """`price` names the priced operation (and model, params), `limit` the feature limit
        its operation has; `metadata` is the caller's."""
        check_amount(amount)
        self._check_spendable(amount, now)
        usage = self._count_run(limit, now)
        hold = Hold(
            hold_id,
            self.account_id,
            amount,
            Hold.OPEN,
            now,
            now + ttl,
            ref,
            job_id=job_id,
            metadata=dict(metadata or {}),
            price=dict(price or {}),
        )
        hold.allocation = self._take(amount, reserve=True)
        self.held += amount
        self._count_trial_spend(amount, now)
        self.feature_usage = usage
        self._record(
            "hold", amount, 0, amount, "hold", ref, hold_id, dict(price or {}), now, metadata
        )
        return hold

    def capture(self, hold: Hold, amount: int | None, now: datetime) -> None:
        """Take `amount` (default: all) of an open hold and free the rest. Repeats are no-ops."""
        self._check_owns(hold)
        if amount is not None:
            check_amount(amount)
        if hold.status == Hold.CAPTURED and amount in (None, hold.captured_amount):
            return
        if hold.status != Hold.OPEN:
            raise InvalidState(
                f"Hold {hold.hold_id} is {hold.status}; only an open hold can be captured",
                hold_status=hold.status,
            )
        if hold.is_due(now):
            raise InvalidState(
                f"Hold {hold.hold_id} expired at {iso(hold.expires_at)}", hold_status="expired"
            )
        take = hold.amount if amount is None else amount
        if take > hold.amount:
            raise InvalidInput(f"Expected a capture of at most the held {hold.amount}, got {take}")
        funding = self._unreserve(hold, consume=take)
        self.held -= hold.amount
        self.balance -= take
        self._uncount_trial_spend(hold, hold.amount - take, now)
        hold.status, hold.captured_amount, hold.closed_at, hold.funding = (
            Hold.CAPTURED,
            take,
            now,
            funding,
        )
        meta = {
            **hold.price,
            "hold_id": hold.hold_id,
            "released": hold.amount - take,
            "funding": funding,
        }
        self._record(
            "capture",
            take,
            -take,
            -hold.amount,
            "capture",
            hold.ref,
            hold.hold_id,
            meta,
            now,
            hold.metadata,
        )
        self.expire_due_grants(now)  # the freed rest may belong to a grant already expired

    def release(
        self, hold: Hold, reason: str, now: datetime, details: dict[str, Any] | None = None
    ) -> None:
        """Free an open hold in full. Releasing a released or expired hold again is a no-op."""
        self._check_owns(hold)
        if hold.status in (Hold.RELEASED, Hold.EXPIRED):
            return
        if hold.status != Hold.OPEN:
            raise InvalidState(
                f"Hold {hold.hold_id} is {hold.status}; only an open hold can be released",
                hold_status=hold.status,
            )
        self._free(hold, Hold.RELEASED, reason, now, details)

    def expire_hold(self, hold: Hold, now: datetime) -> bool:
        """The sweeper's release of a hold past its TTL; False when there was nothing to do."""
        self._check_owns(hold)
        if not hold.is_due(now):
            return False
        self._free(hold, Hold.EXPIRED, "timeout", now)
        return True

    def charge(
        self,
        charge_id: str,
        amount: int,
        reason: str,
        now: datetime,
        ref: str | None = None,
        metadata: dict[str, Any] | None = None,
        price: dict[str, Any] | None = None,
        limit: FeatureLimit | None = None,
    ) -> list[dict[str, Any]]:
        """One-step debit: hold and capture in one transaction. Returns the grants that funded it."""
        check_amount(amount)
        self._check_spendable(amount, now)
        usage = self._count_run(limit, now)
        funding = self._take(amount, reserve=False)
        self.balance -= amount
        self._count_trial_spend(amount, now)
        self.feature_usage = usage
        self._record(
            "charge",
            amount,
            -amount,
            0,
            reason,
            ref,
            charge_id,
            {**(price or {}), "funding": funding},
            now,
            metadata,
        )
        return funding

    # -- internals ----------------------------------------------------------------------------

    def _check_owns(self, hold: Hold) -> None:
        if hold.account_id != self.account_id:
            raise InvalidState(f"Hold {hold.hold_id} belongs to another account")

    def _check_spendable(self, amount: int, now: datetime) -> None:
        # "you cannot afford this at all" says more than "not today", so it is checked first
        if amount > self.available:
            raise InsufficientCredits(required=amount, available=self.available)
        if self.trial_active(now):
            used = self.spent_today(now)
            if used + amount > TRIAL.daily_limit:
                raise DailyLimitExceeded(
                    TRIAL.daily_limit, used, amount, seconds_until_next_utc_day(now)
                )

    def _count_run(self, limit: FeatureLimit | None, now: datetime) -> dict[str, dict[str, Any]]:
        """The feature usage with one more run counted; FeatureLimitExceeded past the plan's."""
        if limit is None:
            return self.feature_usage
        return counted(limit, self.plan, self.feature_usage, now)

    def _count_trial_spend(self, amount: int, now: datetime) -> None:
        if not self.trial_active(now):
            return
        self.trial_used = self.spent_today(now) + amount
        self.trial_day = now.date().isoformat()

    def _uncount_trial_spend(self, hold: Hold, freed: int, now: datetime) -> None:
        # credits held and then given back today were never spent
        today = now.date().isoformat()
        if freed and self.trial_day == today and hold.created_at.date().isoformat() == today:
            self.trial_used = max(0, self.trial_used - freed)

    def _take(self, amount: int, reserve: bool) -> list[dict[str, Any]]:
        """Reserve (for a hold) or spend (a charge) unreserved credits, soonest-expiring first;
        returns the grants it came from."""
        parts = []
        for grant, take in self._allocate(amount):
            if reserve:
                grant.reserved += take
            else:
                grant.remaining -= take
            parts.append(_funding(grant, take))
        return parts

    def _allocate(self, amount: int) -> list[tuple[Grant, int]]:
        parts: list[tuple[Grant, int]] = []
        left = amount
        self._order_grants()
        for index, grant in enumerate(self.grants):
            take = min(grant.free, left)
            if take <= 0:
                continue
            parts.append((self._changing(grant, index), take))
            left -= take
            if left == 0:
                return parts
        raise InvariantViolated(
            f"Grants of {self.account_id} do not cover {amount} credits "
            f"(available {self.available}): the balance and its grants "
            "disagree"
        )

    def _unreserve(self, hold: Hold, consume: int) -> list[dict[str, Any]]:
        """Give back a hold's reservation, consuming the first `consume` credits of it."""
        funding = []
        for part in hold.allocation:
            found = next((g for g in self.grants if g.grant_id == part["grant_id"]), None)
            if found is None:
                raise InvariantViolated(
                    f"Hold {hold.hold_id} reserved grant "
                    f"{part['grant_id']}, which {self.account_id} lacks"
                )
            grant = self._changing(found)
            grant.reserved -= part["amount"]
            take = min(part["amount"], consume)
            consume -= take
            grant.remaining -= take
            if take:
                funding.append(_funding(grant, take))
        return funding

    def _order_grants(self) -> None:
        if not self.grants_ordered:
            self.grants.sort(key=Grant.consumption_key)
            self.grants_ordered = True

    def _insert_grant(self, grant: Grant) -> None:
        if self.grants_ordered:
            insort(self.grants, grant, key=Grant.consumption_key)
        else:
            self.grants.append(grant)
        self.own_grants.add(grant.grant_id)

    def _changing(self, grant: Grant, index: int | None = None) -> Grant:
        """`grant` ready to change, and marked so: a working copy's own copy of it when it was
        shared (`index`, its place in `grants`, when the caller knows it)."""
        if self.shared_grants and grant.grant_id not in self.own_grants:
            mine = object.__new__(Grant)  # dataclasses.replace, without its per-field walk
            mine.__dict__.update(grant.__dict__)
            self.grants[self._index_of(grant) if index is None else index] = mine
            self.own_grants.add(grant.grant_id)
            grant = mine
        self.touched_grants[grant.grant_id] = grant
        return grant

    def _index_of(self, grant: Grant) -> int:
        if self.grants_ordered:
            index = bisect_left(self.grants, grant.consumption_key(), key=Grant.consumption_key)
            if index < len(self.grants) and self.grants[index] is grant:
                return index
        return next(i for i, g in enumerate(self.grants) if g is grant)

    def _free(
        self,
        hold: Hold,
        status: str,
        reason: str,
        now: datetime,
        details: dict[str, Any] | None = None,
    ) -> None:
        self._unreserve(hold, consume=0)
        self.held -= hold.amount
        self._uncount_trial_spend(hold, hold.amount, now)
        operation = hold.price.get("operation")
        if isinstance(operation, str):  # a released run never ran: it is given back
            usage = uncounted(operation, hold.created_at, self.feature_usage, now)
            self.feature_usage = self.feature_usage if usage is None else usage
        hold.status, hold.release_reason, hold.closed_at = status, reason, now
        self._record(
            "release",
            hold.amount,
            0,
            -hold.amount,
            reason,
            hold.ref,
            hold.hold_id,
            {**(details or {}), "hold_id": hold.hold_id},
            now,
            hold.metadata,
        )
        self.expire_due_grants(now)

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


def _funding(grant: Grant, amount: int) -> dict[str, Any]:
    """One line of what funded a capture or charge (or what a hold reserved)."""
    return {"grant_id": grant.grant_id, "kind": grant.kind, "amount": amount}
