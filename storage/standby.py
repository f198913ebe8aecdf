"""Reads served by PostgreSQL standbys without a stale answer: G6 (read your writes) on every
instance, whichever instance wrote.

A read routed here first learns the primary's WAL position (`pg_current_wal_lsn()`): every
commit acknowledged before the read began lies at or before it, whoever made it. It then asks a
standby, on the connection that will serve the read, how far it has replayed
(`pg_last_wal_replay_lsn()`). A standby past the position serves the read — its snapshot is taken
after that replay, so it shows those commits. One behind is asked again for up to READ_WAIT_S,
then the primary serves the read. A standby that fails (down, refused, cut off) is left alone for
STANDBY_RETRY_S and its reads go to the primary: a standby never costs a request its answer.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

import metrics
from storage.database_url import (
    check_supported,
    masked,
    normalise_url,
    pooler_connect_args,
    split_pooler,
)
from storage.json_columns import json_loads

T = TypeVar("T")
log = logging.getLogger("creditstream.standby")

SETTING = "CREDITSTREAM_DATABASE_READ_URL"
# positions as bytes from 0/0: plain int8s asyncpg decodes without a pg_lsn codec
PRIMARY_POSITION = "SELECT (pg_current_wal_lsn() - '0/0')::int8"
REPLAYED = "SELECT (pg_last_wal_replay_lsn() - '0/0')::int8"  # NULL on a primary
READ_WAIT_S = 0.05  # how long a read waits for a lagging standby before the primary serves it
FIRST_RECHECK_S, LAST_RECHECK_S = 0.001, 0.01
STANDBY_RETRY_S = 2.0  # a failed standby serves no read for this long
CONNECT_TIMEOUT_S = 1.0  # a standby that does not answer must not hold a read for long
RECOVERY_CONFLICT = "40001"
UNAVAILABLE_CLASSES = (
    "08",
    "57",
)  # a connection gone or a server going away  # "canceling statement due to conflict with recovery"
# a list item starts with a scheme: the commas of a libpq multi-host list (h1:5432,h2:5432)
# are not followed by one
_ITEM_START = re.compile(r",\s*(?=[a-z][a-z0-9+.-]*://)", re.IGNORECASE)


class StandbySetupError(ValueError):
    """CREDITSTREAM_DATABASE_READ_URL names something that cannot serve reads."""


def split_read_urls(value: str | None) -> tuple[str, ...]:
    """The standby URLs of a comma-separated CREDITSTREAM_DATABASE_READ_URL (PostgreSQL only)."""
    urls = tuple(u.strip() for u in _ITEM_START.split(value or "") if u.strip())
    for url in urls:
        check_supported(url)
        split_pooler(normalise_url(url))  # an unknown pooler= stops the start, as for the primary
        if not normalise_url(url).startswith("postgresql"):
            raise StandbySetupError(
                f"{SETTING}={masked(url)}: standbys are PostgreSQL streaming replicas "
                f"(postgresql://user:password@host:5432/name)"
            )
    return urls


class PrimaryPosition:
    """The primary's WAL position, one round trip shared by every read that asked for it
    before that round trip began. A read never takes a position fetched before it arrived:
    that one could predate a commit acknowledged in between, on any instance."""

    def __init__(self, fetch: Callable[[], Awaitable[int]]) -> None:
        self._fetch = fetch
        self._next: asyncio.Future[int] | None = None  # the fetch not started yet
        self._serving: asyncio.Task[None] | None = None
        self.fetches = 0

    async def current(self) -> int:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            # a waiter that gives up must not leave an exception nobody retrieved
            self._next.add_done_callback(lambda f: f.cancelled() or f.exception())
        waiting = self._next
        if self._serving is None:
            self._serving = asyncio.create_task(self._serve())
        return await asyncio.shield(waiting)

    async def _serve(self) -> None:
        waiting: asyncio.Future[int] | None = None
        try:
            while self._next is not None:
                waiting, self._next = self._next, None
                self.fetches += 1
                metrics.STANDBY_POSITION_FETCHES.inc()
                try:
                    waiting.set_result(await self._fetch())
                except Exception as exc:  # each waiter raises it (the primary is down: a 503)
                    waiting.set_exception(exc)
        finally:
            self._serving = None
            for left in (waiting, self._next):  # cancelled at shutdown: no waiter hangs
                if left is not None and not left.done():
                    left.set_exception(RuntimeError("primary position fetch stopped"))
            self._next = None


@dataclass(eq=False)
class Standby:
    name: str  # the URL, password masked
    engine: AsyncEngine
    autocommit: AsyncEngine  # the same pool, no BEGIN/ROLLBACK around a single statement
    # behind a transaction pooler (`?pooler=pgbouncer`, as for the primary) the check and the
    # read share one transaction, so that they run on one server connection
    pooled: bool = False
    down_until: float = 0.0

    @classmethod
    def from_url(cls, url: str, pool_size: int) -> Standby:
        plain, pooler = split_pooler(normalise_url(url))
        engine = create_async_engine(
            plain,
            pool_size=pool_size,
            max_overflow=pool_size * 2,
            pool_timeout=CONNECT_TIMEOUT_S,
            connect_args={
                "timeout": CONNECT_TIMEOUT_S,
                "command_timeout": 15,
                **pooler_connect_args(pooler),
            },
            json_deserializer=json_loads,
        )
        autocommit = engine if pooler else engine.execution_options(isolation_level="AUTOCOMMIT")
        return cls(masked(url), engine, autocommit, pooled=pooler is not None)


class _Fallback(Exception):
    """This standby cannot serve this read; `reason` labels the primary's read in metrics."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Standbys:
    """The standbys, taken in turn, and the rule that lets one serve a read."""

    def __init__(self, standbys: list[Standby], primary_position: Callable[[], Awaitable[int]]):
        self.standbys = standbys
        self.position = PrimaryPosition(primary_position)
        self._turn = itertools.cycle(standbys)

    async def read(
        self,
        work: Callable[[AsyncConnection], Awaitable[T]],
        snapshot: bool,
        on_primary: Callable[[], Awaitable[T]],
    ) -> T:
        """`work` on a caught-up standby's connection (in a transaction when `snapshot`), else
        `on_primary()`. `work` only reads: running it again on the primary is harmless."""
        target = await self.position.current()

        async def attempt(standby: Standby) -> T:
            engine = standby.engine if snapshot else standby.autocommit
            async with engine.connect() as conn:
                if standby.pooled:
                    async with conn.begin():
                        await self._wait_for(lambda: conn.scalar(sa.text(REPLAYED)), target)
                        return await work(conn)
                # otherwise checked straight on asyncpg, before any BEGIN: a round trip less
                driver: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
                await self._wait_for(lambda: driver.fetchval(REPLAYED), target)
                async with conn.begin():
                    return await work(conn)

        return await self._route(attempt, on_primary)

    async def driver(
        self,
        work: Callable[[asyncpg.Connection], Awaitable[T]],
        on_primary: Callable[[], Awaitable[T]],
    ) -> T:
        """`work` on a caught-up standby's own asyncpg connection, else `on_primary()`."""
        target = await self.position.current()

        async def attempt(standby: Standby) -> T:
            async with standby.autocommit.connect() as conn:
                driver: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
                if standby.pooled:
                    async with driver.transaction():
                        await self._wait_for(lambda: driver.fetchval(REPLAYED), target)
                        return await work(driver)
                await self._wait_for(lambda: driver.fetchval(REPLAYED), target)
                return await work(driver)

        return await self._route(attempt, on_primary)

    async def _route(
        self, attempt: Callable[[Standby], Awaitable[T]], on_primary: Callable[[], Awaitable[T]]
    ) -> T:
        standby = self._pick()
        if standby is None:
            reason = "standby_down"
        else:
            try:
                result = await attempt(standby)
            except _Fallback as fallback:
                reason = fallback.reason
            except PoolTimeout:  # every connection to it busy: it is loaded, not gone
                reason = "standby_busy"
            except (DBAPIError, OperationalError, InterfaceError) as exc:
                reason = self._failed(standby, exc, _sqlstate(exc))
            except (
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                # the driver's own state broken by the standby going away mid-read ("cannot
                # switch to state …; another operation is in progress"), as storage/sql.py
                # treats it on the primary
                asyncpg.InternalClientError,
                OSError,
                TimeoutError,
            ) as exc:
                reason = self._failed(standby, exc, getattr(exc, "sqlstate", None))
            except Exception:  # the read's own answer, from the standby (a 404, say)
                metrics.STANDBY_READS.labels("standby", "caught_up").inc()
                raise
            else:
                metrics.STANDBY_READS.labels("standby", "caught_up").inc()
                return result
            if reason == "standby_down":
                # its pooled connections died with it: the next try after STANDBY_RETRY_S
                # opens new ones instead of failing on each stale one in turn
                await standby.engine.dispose()
        metrics.STANDBY_READS.labels("primary", reason).inc()
        return await on_primary()

    def _pick(self) -> Standby | None:
        now = time.monotonic()
        for _ in range(len(self.standbys)):
            standby = next(self._turn)
            if standby.down_until <= now:
                return standby
        return None

    @staticmethod
    def _failed(standby: Standby, exc: BaseException, sqlstate: str | None) -> str:
        if sqlstate == RECOVERY_CONFLICT:  # replay removed rows this read needed: try primary
            return "recovery_conflict"
        if sqlstate is not None and sqlstate[:2] not in UNAVAILABLE_CLASSES:
            raise exc  # the read itself is wrong: the primary would say the same
        standby.down_until = time.monotonic() + STANDBY_RETRY_S
        log.warning(
            "standby %s failed (%s); reads go to the primary for %.0f s",
            standby.name,
            str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
            STANDBY_RETRY_S,
        )
        return "standby_down"

    @staticmethod
    async def _wait_for(replayed_now: Callable[[], Awaitable[int | None]], target: int) -> None:
        """Return once the standby has replayed `target`; raise _Fallback when it is not a
        standby (promoted: it may not be the primary writes go to) or stays behind."""
        deadline = time.monotonic() + READ_WAIT_S
        pause = FIRST_RECHECK_S
        while True:
            replayed = await replayed_now()
            if replayed is None:
                raise _Fallback("not_a_standby")
            if replayed >= target:
                return
            if time.monotonic() + pause > deadline:
                raise _Fallback("lagging")
            await asyncio.sleep(pause)
            pause = min(pause * 2, LAST_RECHECK_S)

    async def dispose(self) -> None:
        for standby in self.standbys:
            await standby.engine.dispose()


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(
        getattr(orig, "__cause__", None), "sqlstate", None
    )
