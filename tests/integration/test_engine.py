"""The engine on a real database (SQLite and PostgreSQL): accounts, holds, charges, sweeper."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from asgi import load_catalogue
from background.sweeper import Sweeper
from core.errors import InsufficientCredits, InvalidState
from core.model import Hold
from core.service import CreditService
from storage.audit import audit
from storage.sql import Database
from storage.tables import accounts, entries, holds
from storage.writes.idempotency import IdempotencyStore
from tests.support import MutableClock


@pytest.fixture
def service(clock: MutableClock) -> CreditService:
    return CreditService(clock, load_catalogue(None))


async def assert_audit_clean(db: Database) -> None:
    async with db.read() as uow:
        checked, mismatches = await audit(uow.conn)
    assert checked > 0
    assert [m.describe() for m in mismatches] == []


async def test_concurrent_first_uses_create_the_account_exactly_once(
    db: Database, service: CreditService
) -> None:
    async def first_use() -> bool:
        async with db.transaction() as uow:
            account, created = await service.ensure_account(uow, "newcomer")
            await uow.accounts.save(account)
            return created

    results = await asyncio.gather(*(first_use() for _ in range(20)))
    assert results.count(True) == 1
    async with db.read() as uow:
        account = await uow.accounts.get("newcomer")
        grants = (
            await uow.conn.execute(
                sa.select(entries).where(
                    entries.c.account_id == "newcomer", entries.c.type == "grant"
                )
            )
        ).all()
    assert account is not None and account.balance == 28
    assert len(grants) == 1
    await assert_audit_clean(db)


async def test_concurrent_holds_never_overdraw(db: Database, service: CreditService) -> None:
    async with db.transaction() as uow:
        await service.grant(uow, "racer", 50, "purchase")

    async def one_hold() -> str:
        try:
            async with db.transaction() as uow:
                await service.hold(uow, "racer", 7)
            return "ok"
        except InsufficientCredits:
            return "402"

    results = await asyncio.gather(*(one_hold() for _ in range(40)))
    assert results.count("ok") == (28 + 50) // 7
    async with db.read() as uow:
        account = await uow.accounts.get("racer")
    assert account is not None and account.available == (28 + 50) % 7
    await assert_audit_clean(db)


async def test_hold_capture_release_lifecycle(db: Database, service: CreditService) -> None:
    async with db.transaction() as uow:
        await service.grant(uow, "life", 100, "purchase")
        hold, _ = await service.hold(uow, "life", 30)
        other, _ = await service.hold(uow, "life", 20)
    async with db.transaction() as uow:
        captured, account = await service.capture(uow, hold.hold_id, 25)
    assert captured.status == "captured" and captured.captured_amount == 25
    assert (account.balance, account.held) == (128 - 25, 20)
    async with db.transaction() as uow:
        again, account = await service.capture(uow, hold.hold_id, 25)  # a repeat is a no-op
    assert again.captured_amount == 25 and account.balance == 103
    async with db.transaction() as uow:
        released, account = await service.release(uow, other.hold_id, "user cancelled")
    assert released.status == "released" and account.held == 0
    with pytest.raises(InvalidState):
        async with db.transaction() as uow:
            await service.capture(uow, other.hold_id)
    async with db.read() as uow:
        stored = await uow.holds.get(hold.hold_id)
    assert stored is not None and stored.funding and sum(f["amount"] for f in stored.funding) == 25
    await assert_audit_clean(db)


async def test_two_sweepers_release_each_expired_hold_exactly_once(
    db: Database, service: CreditService, clock: MutableClock
) -> None:
    async with db.transaction() as uow:
        await service.grant(uow, "sweepme", 1000, "purchase")
    for _ in range(100):
        async with db.transaction() as uow:
            await service.hold(uow, "sweepme", 3, ttl_seconds=60)
    clock.advance(seconds=61)
    published: list[int] = []

    async def publish(events: list) -> None:  # type: ignore[type-arg]
        published.extend(e.seq for e in events)

    sweepers = [Sweeper(db, service, IdempotencyStore(db), publish) for _ in range(2)]
    reports = await asyncio.gather(*(s.run_once() for s in sweepers))
    assert sum(r.holds_expired for r in reports) == 100
    async with db.read() as uow:
        releases = (
            await uow.conn.execute(
                sa.select(sa.func.count())
                .select_from(entries)
                .where(entries.c.account_id == "sweepme", entries.c.type == "release")
            )
        ).scalar_one()
        statuses = set((await uow.conn.execute(sa.select(holds.c.status))).scalars())
        account = await uow.accounts.get("sweepme")
    assert releases == 100
    assert statuses == {Hold.EXPIRED}
    assert account is not None and account.held == 0 and account.balance == 1028
    assert sorted(published) == sorted(set(published)) and len(published) == 100
    await assert_audit_clean(db)


async def test_trial_expires_after_seven_days_sparing_held_credits(
    db: Database, service: CreditService, clock: MutableClock
) -> None:
    async with db.transaction() as uow:
        await service.charge(uow, "trialist", 2, "chat")
    clock.advance(days=1)
    async with db.transaction() as uow:
        hold, _ = await service.hold(uow, "trialist", 3, ttl_seconds=7 * 24 * 3600)
    clock.advance(days=6, seconds=1)
    report = await Sweeper(db, service, IdempotencyStore(db)).run_once()
    assert report.grants_expired == 28 - 2 - 3
    async with db.read() as uow:
        account = await uow.accounts.get("trialist")
    assert account is not None and (account.balance, account.held) == (3, 3)
    async with db.transaction() as uow:
        _, account = await service.capture(uow, hold.hold_id)
    assert (account.balance, account.held) == (0, 0)
    await assert_audit_clean(db)


async def test_released_credits_of_an_expired_grant_expire_with_the_release(
    db: Database, service: CreditService, clock: MutableClock
) -> None:
    async with db.transaction() as uow:
        await service.ensure_account(uow, "late")
    clock.advance(hours=1)
    async with db.transaction() as uow:
        hold, _ = await service.hold(uow, "late", 4, ttl_seconds=7 * 24 * 3600)
    clock.advance(days=7, minutes=-30)
    sweeper = Sweeper(db, service, IdempotencyStore(db))
    assert (await sweeper.run_once()).grants_expired == 24
    async with db.transaction() as uow:
        await service.release(uow, hold.hold_id)
    assert (await sweeper.run_once()).grants_expired == 0
    async with db.read() as uow:
        account = await uow.accounts.get("late")
    assert account is not None and account.balance == 0
    await assert_audit_clean(db)


async def test_audit_finds_a_corrupted_row(db: Database, service: CreditService) -> None:
    async with db.transaction() as uow:
        await service.grant(uow, "victim", 10, "purchase")
    await assert_audit_clean(db)
    async with db.transaction() as uow:
        await uow.conn.execute(
            sa.update(accounts)
            .where(accounts.c.id == "victim")
            .values(balance=accounts.c.balance + 5)
        )
    async with db.read() as uow:
        _, mismatches = await audit(uow.conn)
    assert {m.field for m in mismatches} >= {"balance"}
    assert all(m.account_id == "victim" for m in mismatches)


async def test_database_refuses_an_overdraft_even_if_code_tried(
    db: Database, service: CreditService
) -> None:
    async with db.transaction() as uow:
        await service.ensure_account(uow, "guarded")
    with pytest.raises(sa.exc.IntegrityError):
        async with db.transaction() as uow:
            await uow.conn.execute(
                sa.update(accounts)
                .where(accounts.c.id == "guarded")
                .values(held=accounts.c.balance + 1)
            )


async def test_grants_spend_soonest_expiring_first(
    db: Database, service: CreditService, clock: MutableClock
) -> None:
    async with db.transaction() as uow:
        await service.grant(uow, "order", 10, "purchase")
        promo, _ = await service.grant(
            uow, "order", 5, "promo", expires_at=clock.now() + timedelta(days=2)
        )
        charge, _ = await service.charge(uow, "order", 8, "image")
    kinds = [(f["kind"], f["amount"]) for f in charge["funding"]]
    assert kinds == [("promo", 5), ("trial", 3)]
    await assert_audit_clean(db)


def test_cli_audit_exit_codes(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    env = {**os.environ, "CREDITSTREAM_DATABASE_URL": url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli", *args],
            env=env,
            text=True,
            capture_output=True,
            cwd=Path(__file__).parents[2],
            timeout=60,
        )

    assert cli("migrate").returncode == 0
    assert cli("grant", "cli-user", "12").returncode == 0
    healthy = cli("audit")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    key = cli("keys", "create", "--name", "ops").stdout.strip().splitlines()[-1]
    assert key.startswith("sk_") and len(key) > 30
    import sqlite3

    with sqlite3.connect(tmp_path / "cli.db") as conn:
        conn.execute("UPDATE accounts SET held = 1 WHERE id = 'cli-user'")
    broken = cli("audit")
    assert broken.returncode == 1
    assert "cli-user" in broken.stdout
