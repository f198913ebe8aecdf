"""Use cases: each loads what it needs inside the caller's unit of work, applies the domain rules,
and saves. Committing belongs to the caller, so an idempotency record or a second operation can
share the same transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from core.account import Account
from core.events import iso
from core.expiry import ExpiryUseCases
from core.metadata import check_metadata
from core.model import Grant, Hold, check_amount, checked_ttl, new_id
from core.ports import RefundUnitOfWork, UnitOfWork
from core.price_request import PriceRequest
from core.refunds import CAPTURE, CHARGE

MAX_HOLD_TTL_S = 7 * 24 * 3600


class CreditService(ExpiryUseCases):
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
