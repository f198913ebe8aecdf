"""uvicorn's sans-I/O WebSocket protocol, lighter for the connections that idle for hours.

A push server holds thousands of open streams that mostly wait; what each one keeps is what
the server's memory is made of. uvicorn's `websockets-sansio` protocol keeps, for the life of
every connection, the handshake's parsed request and its response (their header objects), an
`asyncio.Queue` for incoming messages (three 64-slot deques and an Event, ~3 KiB) and an
`asyncio.Event` for write flow control (another deque). This subclass lets the handshake go
once it is answered and keeps the other two as a list and a flag whose futures exist only
while somebody waits: ~5 KiB less per idle connection, the protocol's behaviour unchanged.

It also leaves less behind per message. Open streams sit frozen outside the collector
(realtime/gc_policy.py); whatever a message replaces is new and young, and lives until the
stream's next message, 20 s on, walked by every young collection meanwhile. uvicorn's receive
awaits the queue's `get` (two coroutines per waiting receive; here one), and uvicorn and the
`websockets` parser swap in a fresh list per message for the frames, the parsed events and the
bytes to write (here the same lists, emptied).

`creditstream serve`, the image and the tests use it; with uvicorn directly:
`--ws api.ws_protocol:WebSocketProtocol`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame
from websockets.protocol import Event
from websockets.server import ServerProtocol


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]  # the Queue methods uvicorn calls
        self.writable = _Flag()  # type: ignore[assignment]  # the Event methods uvicorn calls
        # the same parser with kept lists; built by uvicorn above with its own arguments
        self.conn.__class__ = _KeptListsServerProtocol

    def start_keepalive(self) -> None:
        # called once, right after the handshake's answer is written: from here on uvicorn
        # reads neither the request nor the response again
        self.request = None  # type: ignore[assignment]
        self.response = None  # type: ignore[assignment]
        super().start_keepalive()

    async def receive(self) -> Any:  # the same ASGI events as uvicorn's
        inbox: _Inbox = self.queue  # type: ignore[assignment]
        while inbox.empty():
            await inbox.waiter()
        message = inbox.pop()
        if self.read_paused and inbox.empty():
            self.read_paused = False
            self.transport.resume_reading()
        return message

    def handle_text(self, event: Frame) -> None:
        self.curr_msg_data_type = "text"
        self._first_frame(event)

    def handle_bytes(self, event: Frame) -> None:
        self.curr_msg_data_type = "bytes"
        self._first_frame(event)

    def _first_frame(self, event: Frame) -> None:
        self.frames.clear()  # uvicorn starts a new list: what it held is dropped the same
        self.frames.append(event.data)  # type: ignore[arg-type]
        if event.fin:
            self.send_receive_event_to_app()

    def send_receive_event_to_app(self) -> None:
        # uvicorn's, with the frames list emptied rather than replaced
        frames = self.frames
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        frames.clear()
        if self.close_sent:
            return  # past `websocket.close`: dropped, reads go on until the peer's close reply
        if self.curr_msg_data_type == "text":
            try:
                self.queue.put_nowait({"type": "websocket.receive", "text": data.decode()})
            except UnicodeDecodeError:
                self.logger.exception("Invalid UTF-8 sequence received from client.")
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
        else:
            self.queue.put_nowait({"type": "websocket.receive", "bytes": data})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()


class _KeptListsServerProtocol(ServerProtocol):
    """`events_received` and `data_to_send` hand out a copy, dropped as soon as the caller is
    done with it, and empty the kept list, where `websockets` swaps in a new one each time."""

    def events_received(self) -> list[Event]:
        events = self.events.copy()
        self.events.clear()
        return events

    def data_to_send(self) -> list[bytes]:
        writes = self.writes.copy()
        self.writes.clear()
        return writes


class _Inbox:
    """`put_nowait`, `get`, `empty` and `qsize` of an unbounded `asyncio.Queue` with one
    consumer (the app's `receive`), on a list and a future made only while it waits. A done
    future cannot be made to wait again, so each wait has its own; the waker lets it go."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def waiter(self) -> asyncio.Future[None]:
        """A future done at the next `put_nowait`: awaited by the one consumer."""
        self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter

    def pop(self) -> Any:
        return self._items.pop(0)

    async def get(self) -> Any:
        while not self._items:
            await self.waiter()
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
