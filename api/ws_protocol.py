"""uvicorn's sans-I/O WebSocket protocol, lighter for the connections that idle for hours.

A push server holds thousands of open streams that mostly wait; what each one keeps is what
the server's memory is made of. uvicorn's `websockets-sansio` protocol keeps, for the life of
every connection, the handshake's parsed request and its response (their header objects), an
`asyncio.Queue` for incoming messages (three 64-slot deques and an Event, ~3 KiB) and an
`asyncio.Event` for write flow control (another deque). This subclass lets the handshake go
once it is answered and keeps the other two as a list and a flag whose futures exist only
while somebody waits: ~5 KiB less per idle connection, the protocol's behaviour unchanged.

`creditstream serve`, the image and the tests use it; with uvicorn directly:
`--ws api.ws_protocol:WebSocketProtocol`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]  # the Queue methods uvicorn calls
        self.writable = _Flag()  # type: ignore[assignment]  # the Event methods uvicorn calls

    def start_keepalive(self) -> None:
        # called once, right after the handshake's answer is written: from here on uvicorn
        # reads neither the request nor the response again
        self.request = None  # type: ignore[assignment]
        self.response = None  # type: ignore[assignment]
        super().start_keepalive()


class _Inbox:
    """`put_nowait`, `get`, `empty` and `qsize` of an unbounded `asyncio.Queue` with one
    consumer (the app's `receive`), on a list and a future made only while it waits."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class _Flag:
    """`set`, `clear`, `is_set` and `wait` of an `asyncio.Event`, whose waiters' list exists
    only while the transport's write buffer is full."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = True  # uvicorn's flag starts set: writable
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        while not self._value:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            await waiter
        return True
