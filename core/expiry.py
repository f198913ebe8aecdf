"""The sweeper's use cases: a hold past its TTL released, grants past their expiry expired."""

from __future__ import annotations

from core.model import Hold
from core.ports import UnitOfWork
from core.service_base import ServiceBase


class ExpiryUseCases(ServiceBase):
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
