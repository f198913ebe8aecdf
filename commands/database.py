"""What the commands that read or write run on: the configured database, opened for one command
and disposed of after it, with its failures explained in one line."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from config import Settings

if TYPE_CHECKING:  # the commands import the engine only when they run
    from storage.sql import Database

T = TypeVar("T")


def with_db(settings: Settings, use: Callable[[Database], Awaitable[T]]) -> T:
    """Run `use` on the configured database; a database that cannot be reached, or has no
    schema yet, is one line naming CREDITSTREAM_DATABASE_URL and what to do (a SQLite file that
    does not exist is reported, not created)."""
    from storage.database_url import explain, missing_sqlite_file
    from storage.sql import Database

    url = settings.database_url
    if (missing := missing_sqlite_file(url)) is not None:
        raise missing

    async def run() -> T:
        db = Database.from_url(url)
        try:
            return await use(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(run())
    except Exception as exc:
        problem = explain(exc, url)
        if problem is None:
            raise
        raise problem from None
