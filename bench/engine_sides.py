"""The sides `bench engine` and `bench hot` measure: the engine as the API's routes use it, the
write path before group commit, the ceilings on raw asyncpg (one statement per hold, a batch of
holds per transaction) and the callers alone.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from bench import rawsql, rawsql_batch


class EngineSide:
    """CreditService through the group-commit writer, as the API's routes use them."""

    def __init__(self, dsn: str, lanes: int, ids: list[str]) -> None:
        from core.ports import SystemClock
        from core.pricing import Catalogue
        from core.service import CreditService
        from storage.sql import Database
        from storage.writes.batch import Touches
        from storage.writes.writer import DEPTH, BatchWriter

        text = resources.files("core").joinpath("pricing.toml").read_text(encoding="utf-8")
        self.service = CreditService(SystemClock(), Catalogue.from_toml(text))
        # each lane keeps up to DEPTH batches in flight, each on a connection of its own: fewer
        # pooled connections would open and close one per batch
        self.db = Database.from_url(dsn, pool_size=lanes * DEPTH)
        self.writer = BatchWriter(self.db, self.service.now, _nowhere, lanes=lanes)
        self.ids = ids
        # a caller's own work is a pick and a call, as the ceiling's: what it will touch is
        # made once per account, not per hold
        self.touches = {a: Touches(accounts=(a,)) for a in ids}
        self.touches_hold = Touches

    async def hold(self, rng: random.Random) -> str:
        account_id = rng.choice(self.ids)
        service = self.service
        hold, _ = await self.writer.run(
            lambda uow: service.hold(uow, account_id, 1), self.touches[account_id]
        )
        return hold.hold_id

    async def cycle(self, rng: random.Random) -> None:
        hold_id = await self.hold(rng)
        service = self.service
        await self.writer.run(
            lambda uow: service.capture(uow, hold_id), self.touches_hold(holds=(hold_id,))
        )

    async def close(self) -> None:
        await self.writer.aclose()
        await self.db.dispose()


class TransactionPerOperation(EngineSide):
    """The write path before group commit: one transaction and one connection per operation,
    still what `storage.sql.Database.transaction` gives; the lone caller's yardstick."""

    async def hold(self, rng: random.Random) -> str:
        async with self.db.transaction() as uow:
            hold, _ = await self.service.hold(uow, rng.choice(self.ids), 1)
        return hold.hold_id


async def _nowhere(events: list[Any]) -> None:
    """No subscribers here: the events stay in the journal."""


class CeilingSide:
    """Raw asyncpg: a hold as one statement; a cycle as the engine's statements by hand."""

    def __init__(self, dsn: str, pool_size: int, ids: list[str]) -> None:
        self.dsn, self.pool_size, self.ids = dsn, pool_size, ids

    async def open(self) -> CeilingSide:
        import asyncpg

        self.pool = await asyncpg.create_pool(
            self.dsn, min_size=self.pool_size, max_size=self.pool_size
        )
        return self

    async def hold(self, rng: random.Random) -> None:
        async with self.pool.acquire() as conn:
            await rawsql.hold_in_one_statement(conn, rng.choice(self.ids), 1, datetime.now(UTC))

    async def cycle(self, rng: random.Random) -> None:
        async with self.pool.acquire() as conn:
            done = await rawsql.hold(conn, rng.choice(self.ids), 1, datetime.now(UTC))
        async with self.pool.acquire() as conn:
            await rawsql.capture(conn, str(done["hold"]["hold_id"]), datetime.now(UTC))

    async def close(self) -> None:
        await self.pool.close()


class BatchedCeiling(CeilingSide):
    """Raw asyncpg, `batch` holds per transaction, set-based (bench/rawsql.py `hold_batch`)."""

    def __init__(self, dsn: str, pool_size: int, ids: list[str], batch: int) -> None:
        super().__init__(dsn, pool_size, ids)
        self.batch = batch

    async def hold(self, rng: random.Random) -> int:  # type: ignore[override]
        picked = [rng.choice(self.ids) for _ in range(self.batch)]
        async with self.pool.acquire() as conn:
            return await rawsql_batch.hold_batch(conn, picked, 1, datetime.now(UTC))


class CallersOnly:
    """The callers alone: each hold is a future that a batch resolves with its batch-mates, as
    the writer does, with nothing between. What it costs per hold is the harness's share of
    the engine's figures (the batched ceiling's one caller per 100 holds costs next to nothing)."""

    def __init__(self) -> None:
        self.waiting: list[asyncio.Future[None]] = []

    async def hold(self, rng: random.Random) -> None:
        rng.random()  # the account's pick
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        if len(self.waiting) == 1:
            asyncio.get_running_loop().call_soon(self._answer)
        await future

    def _answer(self) -> None:
        waiting, self.waiting = self.waiting, []
        for future in waiting:
            future.set_result(None)
