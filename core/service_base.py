"""The credit service's settings, and the steps its use cases share: pricing, locking, loading."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from core.account import Account
from core.errors import InvalidInput, InvalidState, InvariantViolated, NotFound
from core.limits import FeatureLimit
from core.model import Hold, normalise_account_id
from core.plans import PlanCatalogue, packaged_plans
from core.ports import Clock, RefundUnitOfWork, UnitOfWork
from core.price_request import PriceRequest
from core.pricing import Catalogue, check_params
from core.refunds import CAPTURE, CHARGE, Spend


@dataclass
class ServiceBase:
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
