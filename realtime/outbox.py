"""A WebSocket connection's outgoing messages: bounded, in order, and free while idle.

`offer` appends to a list; the first offer into an empty outbox starts a short-lived task that
writes everything pending to the socket and ends when nothing is left. An idle connection —
most of them, most of the time — so holds no task, no queue and no waiting future: at 10,000
subscribers the difference to an `asyncio.Queue` drained by a task of its own is ~4 KiB each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class Outbox:
    def __init__(
        self,
        maxsize: int,
        send: Callable[[str], Awaitable[None]],
        on_overflow: Callable[[], None],
        on_broken: Callable[[], None],
    ) -> None:
        self.maxsize = maxsize
        self.overflowed = False
        self._send = send
        self._on_overflow = on_overflow
        self._on_broken = on_broken  # a write failed: the peer is gone
        self._pending: list[str] = []
        self._in_flight = 0  # taken by the writer, not written yet
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    def qsize(self) -> int:
        return len(self._pending) + self._in_flight

    def offer(self, text: str) -> bool:
        if self.overflowed or self._closed:
            return False
        if self.qsize() >= self.maxsize:
            self.overflowed = True
            self._on_overflow()
            return False
        self._pending.append(text)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_pending())
        return True

    async def wait_for_room(self, count: int, timeout_s: float) -> None:
        """Let a long replay proceed at the client's pace instead of overflowing at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        room = min(count, self.maxsize)
        while self.maxsize - self.qsize() < room:
            if loop.time() > deadline or self.overflowed or self._closed:
                return
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        """Stop writing; what is still pending is dropped (the client resumes by seq)."""
        self._closed = True
        self._pending = []
        # the callbacks are the connection's bound methods, and the connection holds this
        # outbox: let go of them so reference counting frees both once the stream is gone
        self._on_overflow = self._on_broken = _ignore
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def _write_pending(self) -> None:
        try:
            while self._pending and not self._closed:
                # the pending list stays the same object: a fresh one per write would outlive it
                # as a young object, walked by every young collection until the next write
                batch = self._pending.copy()
                self._pending.clear()
                self._in_flight = len(batch)
                for text in batch:
                    await self._send(text)
                    self._in_flight -= 1
        except asyncio.CancelledError:
            raise
        except Exception:
            self._closed = True
            self._on_broken()
        finally:
            self._in_flight = 0
            if self._writer is asyncio.current_task():
                self._writer = None


def _ignore() -> None:
    pass
