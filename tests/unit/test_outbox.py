"""realtime.outbox: a connection's outgoing messages, in order, bounded, and no task while idle."""

from __future__ import annotations

import asyncio
import gc
import weakref

from realtime.outbox import Outbox


class Socket:
    """A WebSocket's send: records what it wrote, can be held back or broken."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.broken = False

    async def send(self, text: str) -> None:
        await self.gate.wait()
        if self.broken:
            raise ConnectionResetError("peer gone")
        self.sent.append(text)


def outbox(socket: Socket, maxsize: int = 10) -> tuple[Outbox, list[str]]:
    calls: list[str] = []
    box = Outbox(
        maxsize, socket.send, lambda: calls.append("overflow"), lambda: calls.append("broken")
    )
    return box, calls


def writer_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if "_write_pending" in repr(t.get_coro())]


async def test_messages_go_out_in_order_and_no_task_is_left_when_idle() -> None:
    socket = Socket()
    box, calls = outbox(socket)
    for i in range(5):
        assert box.offer(f"m{i}")
    assert len(writer_tasks()) == 1  # one writer for the burst, not one per message
    await asyncio.sleep(0.01)
    assert socket.sent == [f"m{i}" for i in range(5)]
    assert writer_tasks() == [] and box.qsize() == 0 and calls == []
    assert box.offer("later")
    await asyncio.sleep(0.01)
    assert socket.sent[-1] == "later"


async def test_offers_while_a_write_waits_keep_their_order_and_count_against_the_bound() -> None:
    socket = Socket()
    socket.gate.clear()
    box, calls = outbox(socket, maxsize=3)
    assert box.offer("a")
    await asyncio.sleep(0)  # the writer took "a" and waits on the socket
    assert box.offer("b") and box.offer("c")
    assert box.qsize() == 3
    assert not box.offer("d")  # over the bound: overflow, reported once
    assert not box.offer("e")
    assert calls == ["overflow"] and box.overflowed
    socket.gate.set()
    await asyncio.sleep(0.01)
    assert socket.sent == ["a", "b", "c"]


async def test_a_failed_write_reports_the_peer_gone_and_takes_no_more() -> None:
    socket = Socket()
    socket.broken = True
    box, calls = outbox(socket)
    box.offer("x")
    await asyncio.sleep(0.01)
    assert calls == ["broken"]
    assert not box.offer("y")
    assert writer_tasks() == []


async def test_close_drops_what_is_pending_and_stops_the_writer() -> None:
    socket = Socket()
    socket.gate.clear()
    box, _ = outbox(socket)
    box.offer("a")
    box.offer("b")
    await asyncio.sleep(0)
    await box.close()
    assert writer_tasks() == [] and box.qsize() == 0
    assert not box.offer("c")
    socket.gate.set()
    await asyncio.sleep(0.01)
    assert socket.sent == []


async def test_wait_for_room_returns_once_the_writer_drains() -> None:
    socket = Socket()
    socket.gate.clear()
    box, _ = outbox(socket, maxsize=2)
    box.offer("a")
    await asyncio.sleep(0)
    box.offer("b")
    waiting = asyncio.create_task(box.wait_for_room(1, timeout_s=5))
    await asyncio.sleep(0.02)
    assert not waiting.done()
    socket.gate.set()
    await asyncio.wait_for(waiting, 1)
    assert box.offer("c")


class Connection:
    """Holds its outbox, whose callbacks are its own bound methods (as StreamSession does)."""

    def __init__(self) -> None:
        self.outbox = Outbox(10, Socket().send, self.on_overflow, self.on_broken)

    def on_overflow(self) -> None:
        pass

    def on_broken(self) -> None:
        pass


async def test_a_closed_outbox_lets_go_of_its_connection() -> None:
    gc.collect()
    gc.disable()  # reference counting alone must free them: no cycle is left
    try:
        connection = Connection()
        connection.outbox.offer("last words")
        await connection.outbox.close()
        gone = weakref.ref(connection)
        del connection
        assert gone() is None
    finally:
        gc.enable()
