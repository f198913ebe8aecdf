"""Many concurrent lookups of one key each, answered by one call for all of them.

When thousands of clients subscribe at once (a deploy, a reconnect storm), each subscribe needs
its account's state. `Coalescer.get` queues the key; the first request of a round starts a
fetch on the next turn of the event loop, so every request made in the same turn joins it, and
requests made while a fetch runs join the next one. At most one fetch is in flight: under load the
batches grow by themselves, and an idle instance answers a lone request after one query.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class Coalescer(Generic[V]):
    def __init__(
        self, fetch: Callable[[list[str]], Awaitable[dict[str, V]]], max_batch: int = 1000
    ) -> None:
        self._fetch = fetch
        self._max_batch = max_batch
        self._pending: dict[str, list[asyncio.Future[V | None]]] = {}
        self._runner: asyncio.Task[None] | None = None

    async def get(self, key: str) -> V | None:
        """The value `fetch` gives for `key`, None when it gives none; its exception if it fails."""
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append(future)
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="coalescer")
        return await future

    async def _run(self) -> None:
        waiting: dict[str, list[asyncio.Future[V | None]]] = {}
        try:
            await asyncio.sleep(0)  # the requests of this turn of the loop join the first fetch
            while self._pending:
                keys = list(itertools.islice(self._pending, self._max_batch))
                waiting = {key: self._pending.pop(key) for key in keys}
                try:
                    found = await self._fetch(keys)
                except Exception as exc:
                    _settle(waiting, exc=exc)
                else:
                    _settle(waiting, found=found)
                waiting = {}
        except BaseException:  # cancelled (shutdown): nobody may wait forever
            _settle(waiting, cancel=True)
            _settle(self._pending, cancel=True)
            self._pending.clear()
            raise
        finally:
            self._runner = None


def _settle(
    waiting: dict[str, list[asyncio.Future[V | None]]],
    found: dict[str, V] | None = None,
    exc: Exception | None = None,
    cancel: bool = False,
) -> None:
    for key, futures in waiting.items():
        for future in futures:
            if future.done():  # its requester was cancelled
                continue
            if cancel:
                future.cancel()
            elif exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(None if found is None else found.get(key))
