"""`creditstream grant`, `balance`, `audit` and `sweep`: credits granted, an account's snapshot,
the ledger's sums checked, and one sweep of what has expired, each on the configured database."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from commands.database import with_db
from config import Settings

if TYPE_CHECKING:  # the commands import the engine only when they run
    from core.service import CreditService
    from storage.sql import Database


def grant(args: argparse.Namespace, settings: Settings) -> int:
    async def run(db: Database) -> dict[str, Any]:
        from storage.writes.writer import BatchWriter

        service = _service(settings)
        expires = (
            None
            if args.expires_in_days is None
            else service.now() + timedelta(days=args.expires_in_days)
        )
        writer = BatchWriter(db, service.now, _unpublished)
        try:
            grant, account = await writer.run(
                lambda uow: service.grant(uow, args.account, args.amount, args.reason, expires)
            )
        finally:
            await writer.aclose()
        return {"grant": grant.to_dict(), "account": account.snapshot(service.now())}

    print(json.dumps(with_db(settings, run), indent=2))
    return 0


async def _unpublished(events: list[Any]) -> None:
    """The CLI holds no streams: subscribers catch up from the journal."""


def balance(args: argparse.Namespace, settings: Settings) -> int:
    async def run(db: Database) -> dict[str, Any]:
        service = _service(settings)
        async with db.read() as uow:
            account = await service.read_account(uow, args.account)
        return account.snapshot(service.now())

    print(json.dumps(with_db(settings, run), indent=2))
    return 0


def audit(args: argparse.Namespace, settings: Settings) -> int:
    from storage.audit import audit as audit_accounts

    async def run(db: Database) -> Any:
        async with db.read() as uow:
            return await audit_accounts(uow.conn)

    checked, mismatches = with_db(settings, run)
    for mismatch in mismatches:
        print(f"MISMATCH {mismatch.describe()}")
    print(f"audited {checked} accounts: {len(mismatches)} mismatches")
    return 1 if mismatches else 0


def sweep(args: argparse.Namespace, settings: Settings) -> int:
    from background.sweeper import Sweeper
    from storage.retention import EventRetention
    from storage.writes.idempotency import IdempotencyStore

    async def run(db: Database) -> Any:
        retention = EventRetention(db, timedelta(days=settings.events_retention_days))
        return await Sweeper(
            db, _service(settings), IdempotencyStore(db), events_retention=retention
        ).run_once()

    report = with_db(settings, run)
    print(json.dumps(report.__dict__))
    return 0


def _service(settings: Settings) -> CreditService:
    from asgi import load_catalogue, load_plans
    from core.ports import SystemClock
    from core.service import CreditService

    catalogue = load_catalogue(settings.pricing_file)
    return CreditService(
        SystemClock(),
        catalogue,
        timedelta(seconds=settings.hold_ttl_s),
        plans=load_plans(settings.plans_file, catalogue),
    )
