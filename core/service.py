"""Use cases: each loads what it needs inside the caller's unit of work, applies the domain rules,
and saves. Committing belongs to the caller, so an idempotency record or a second operation can
share the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from core.account import Account
from core.errors import InvalidInput, InvalidState, InvariantViolated, NotFound
from core.events import iso
from core.limits import FeatureLimit
from core.metadata import check_metadata
from core.model import Grant, Hold, check_amount, checked_ttl, new_id, normalise_account_id
from core.plans import PlanCatalogue, packaged_plans
from core.ports import Clock, RefundUnitOfWork, UnitOfWork
from core.pricing import Catalogue, check_params
from core.refunds import CAPTURE, CHARGE, Spend

MAX_HOLD_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class PriceRequest:
    operation: str
    model: str | None = None
    params: dict[str, Any] | None = None

    def metadata(self) -> dict[str, Any]:
        return {"operation": self.operation, "model": self.model, "params": self.params or {}}


@dataclass
class CreditService:
    clock: Clock
    catalogue: Catalogue
    hold_ttl: timedelta = timedelta(seconds=300)
    low_credits_threshold: int | None = None
    plans: PlanCatalogue = field(default_factory=packaged_plans)

    def now(self) -> datetime:
        return self.clock.now()

    def quote(self, price: PriceRequest) -> int:
        return self.catalogue.quote(price.operation, price.model, price.params)

    def _priced(self, price: PriceRequest | None) -> dict[str, Any] | None:
        """What a hold or charge stores of its price, its params checked even when the amount
        was given rather than quoted."""
        if price is None:
            return None
        check_params(price.params)
        return price.metadata()

    def feature_limit(self, price: PriceRequest | None) -> FeatureLimit | None:
        return None if price is None else self.plans.limits.get(price.operation)

    async def ensure_account(
        self, uow: UnitOfWork, account_id: str, key: str | None = None
    ) -> tuple[Account, bool]:
        """The account locked for this transaction, created with its trial on first use."""
        account_id = normalise_account_id(account_id)
        now = self.now()
        account = await self._lock(uow, account_id)
        created = False
        if account is None:  # first use; a concurrent first use may win the insert
            created = await uow.accounts.insert_new(Account.open(account_id, now))
            account = await self._lock(uow, account_id)
        if account is None:
            raise NotFound(f"Account {account_id} vanished during its creation")
        account.idempotency_key = key
        account.expire_due_grants(now)
        return account, created

    async def read_account(self, uow: UnitOfWork, account_id: str) -> Account:
        account_id = normalise_account_id(account_id)
        account = await uow.accounts.get(account_id)
        if account is None:
            raise NotFound(f"No account {account_id}", account_id=account_id)
        return account

    async def grant(
        self,
        uow: UnitOfWork,
        account_id: str,
        amount: int,
        reason: str,
        expires_at: datetime | None = None,
        ref: str | None = None,
        key: str | None = None,
        plan: str | None = None,
        details: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[Grant, Account]:
        check_amount(amount)
        user = check_metadata(metadata)
        account, _ = await self.ensure_account(uow, account_id, key)
        grant = account.add_grant(
            new_id("grt"), amount, reason, self.now(), expires_at, ref, plan, details, user
        )
        await uow.accounts.save(account)
        return grant, account

    async def grant_plan(
        self,
        uow: UnitOfWork,
        account_id: str,
        tier_or_plan: object,
        ref: str | None = None,
        key: str | None = None,
        details: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[Grant, Account]:
        plan = self.plans.plan_for(tier_or_plan)
        expires_at = (
            None if plan.credit_days is None else self.now() + timedelta(days=plan.credit_days)
        )
        return await self.grant(
            uow,
            account_id,
            plan.credits,
            f"plan:{plan.name}",
            expires_at,
            ref=ref,
            key=key,
            plan=plan.name,
            details={"price_usd": plan.price_usd, **(details or {})},
            metadata=metadata,
        )

    async def hold(
        self,
        uow: UnitOfWork,
        account_id: str,
        amount: int,
        ttl_seconds: int | None = None,
        ref: str | None = None,
        key: str | None = None,
        job_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        price: PriceRequest | None = None,
    ) -> tuple[Hold, Account]:
        """`price`, when the amount was quoted, names the operation (its feature limit counts
        this run); `metadata` is the caller's."""
        check_amount(amount)
        ttl = checked_ttl(ttl_seconds, self.hold_ttl, MAX_HOLD_TTL_S)
        user = check_metadata(metadata)
        account, _ = await self.ensure_account(uow, account_id, key)
        priced = self._priced(price)
        hold = account.open_hold(
            new_id("hold"),
            amount,
            ttl,
            self.now(),
            ref,
            job_id,
            user,
            priced,
            self.feature_limit(price),
        )
        await uow.holds.add(hold)
        await uow.accounts.save(account)
        return hold, account

    async def capture(
        self, uow: UnitOfWork, hold_id: str, amount: int | None = None, key: str | None = None
    ) -> tuple[Hold, Account]:
        hold, account = await self._locked_hold(uow, hold_id, key)
        status_before = hold.status
        account.capture(hold, amount, self.now())
        await self._save_hold(uow, hold, account, status_before)
        return hold, account

    async def release(
        self,
        uow: UnitOfWork,
        hold_id: str,
        reason: str = "released",
        key: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> tuple[Hold, Account]:
        """`details` joins the release entry's metadata (the console records its operator)."""
        hold, account = await self._locked_hold(uow, hold_id, key)
        status_before = hold.status
        account.release(hold, reason, self.now(), details)
        await self._save_hold(uow, hold, account, status_before)
        return hold, account

    async def charge(
        self,
        uow: UnitOfWork,
        account_id: str,
        amount: int,
        reason: str,
        ref: str | None = None,
        key: str | None = None,
        metadata: dict[str, Any] | None = None,
        price: PriceRequest | None = None,
    ) -> tuple[dict[str, Any], Account]:
        check_amount(amount)
        user = check_metadata(metadata)
        account, _ = await self.ensure_account(uow, account_id, key)
        charge_id = new_id("chg")
        now = self.now()
        priced = self._priced(price)
        funding = account.charge(
            charge_id, amount, reason, now, ref, user, priced, self.feature_limit(price)
        )
        await uow.accounts.save(account)
        charge = {
            "charge_id": charge_id,
            "account_id": account.account_id,
            "amount": amount,
            "reason": reason,
            "ref": ref,
            "funding": funding,
            "metadata": user,
            "price": priced,
            "created_at": now.isoformat().replace("+00:00", "Z"),
        }
        return charge, account

    async def refund(
        self,
        uow: RefundUnitOfWork,
        spend_id: str,
        kind: str,
        amount: int | None = None,
        reason: str = "refund",
        key: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], Account]:
        """Give back credits of a charge (`kind` "charge", by its charge_id) or of a captured
        hold ("capture", by its hold_id) to the grants that funded it (core.refunds)."""
        if amount is not None:
            check_amount(amount)
        user = check_metadata(metadata)
        found = await self._spend(uow, spend_id, kind)
        account, _ = await self.ensure_account(uow, found.account_id, key)
        spend = await self._spend(uow, spend_id, kind)  # re-read: refunds serialise on the lock
        refund_id, now = new_id("rfd"), self.now()
        funding = account.refund(spend, refund_id, amount, reason, now, user)
        await uow.accounts.save(account)
        taken = sum(part["amount"] for part in funding)
        refund = {
            "refund_id": refund_id,
            "account_id": account.account_id,
            "charge_id": spend_id if kind == CHARGE else None,
            "hold_id": spend_id if kind == CAPTURE else None,
            "amount": taken,
            "reason": reason,
            "funding": funding,
            "spent": spend.amount,
            "refunded": spend.refunded + taken,
            "refundable": spend.refundable - taken,
            "metadata": user,
            "created_at": iso(now),
        }
        return refund, account

    # -- sweeper ------------------------------------------------------------------------------

    async def expire_hold(self, uow: UnitOfWork, hold_id: str) -> bool:
        """Release one hold past its TTL. False when another sweeper or a capture got there first."""
        hold = await uow.holds.get(hold_id)
        if hold is None:
            return False
        account = await self._lock(uow, hold.account_id)
        hold = await uow.holds.get(hold_id)  # re-read under the account lock
        if account is None or hold is None or not account.expire_hold(hold, self.now()):
            return False
        await uow.holds.save(hold, expected_status=Hold.OPEN)
        await uow.accounts.save(account)
        return True

    async def expire_grants(self, uow: UnitOfWork, account_id: str) -> int:
        account = await self._lock(uow, account_id)
        if account is None:
            return 0
        expired = account.expire_due_grants(self.now())
        await uow.accounts.save(account)
        return expired

    # -- internals ----------------------------------------------------------------------------

    async def _lock(self, uow: UnitOfWork, account_id: str) -> Account | None:
        account = await uow.accounts.lock(account_id)
        if account is not None:
            account.low_threshold = self.low_credits_threshold
        return account

    async def _locked_hold(
        self, uow: UnitOfWork, hold_id: str, key: str | None
    ) -> tuple[Hold, Account]:
        found = await uow.holds.get(hold_id)
        if found is None:
            raise NotFound(f"No hold {hold_id}", hold_id=hold_id)
        account, _ = await self.ensure_account(uow, found.account_id, key)
        hold = await uow.holds.get(hold_id)  # re-read: it may have changed before the lock
        if hold is None:
            raise NotFound(f"No hold {hold_id}", hold_id=hold_id)
        return hold, account

    async def _spend(self, uow: RefundUnitOfWork, spend_id: str, kind: str) -> Spend:
        hold = None
        if kind == CAPTURE:
            hold = await uow.holds.get(spend_id)
            if hold is None:
                raise NotFound(f"No hold {spend_id}", hold_id=spend_id)
            if hold.status != Hold.CAPTURED:
                raise InvalidState(
                    f"Hold {spend_id} is {hold.status}; only a captured hold can "
                    "be refunded (a released one gave its credits back already)",
                    hold_status=hold.status,
                )
        elif kind != CHARGE:
            raise InvalidInput(f"Expected a refund of a {CHARGE} or a {CAPTURE}, got {kind!r}")
        spend = await uow.spends.find(spend_id, kind)
        if spend is not None:
            return spend if hold is None else replace(spend, counted_at=hold.created_at)
        if kind == CAPTURE:
            raise InvariantViolated(
                f"Hold {spend_id} is captured but its capture is not in the journal"
            )
        raise NotFound(f"No charge {spend_id}", charge_id=spend_id)

    async def _save_hold(
        self, uow: UnitOfWork, hold: Hold, account: Account, status_before: str
    ) -> None:
        if hold.status != status_before:
            await uow.holds.save(hold, expected_status=status_before)
        await uow.accounts.save(account)
