"""api.ws_protocol: uvicorn's sans-I/O WebSocket protocol with less kept per connection, under
a real uvicorn server and a real client: messages both ways in order, the handshake let go once
answered, a full write buffer waited out, and its queue's and flag's semantics."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect

from api.ws_protocol import WebSocketProtocol, _Flag, _Inbox


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept", "headers": [(b"x-test", b"1")]})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message["text"]
        if text == "flood":  # far more than the transport buffers: writes wait for the reader
            for i in range(2000):
                await send({"type": "websocket.send", "text": f"{i:04d}" + "x" * 4096})
            await send({"type": "websocket.send", "text": "done"})
        else:
            await send({"type": "websocket.send", "text": "echo:" + text})


@contextlib.asynccontextmanager
async def served(
    http: Any = "auto",
    ws: Any = WebSocketProtocol,
) -> AsyncIterator[tuple[str, uvicorn.Server]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        echo_app,
        http=http,
        ws=ws,
        ws_per_message_deflate=False,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"ws://127.0.0.1:{port}/", server
    finally:
        server.should_exit = True
        await task
        sock.close()


async def test_messages_go_both_ways_in_order_and_the_handshake_is_let_go() -> None:
    async with served() as (url, server), connect(url) as ws:
        assert ws.response is not None and ws.response.headers["x-test"] == "1"
        for i in range(50):
            await ws.send(f"m{i}")
        assert [await ws.recv() for _ in range(50)] == [f"echo:m{i}" for i in range(50)]
        protocols = [p for p in server.server_state.connections if isinstance(p, WebSocketProtocol)]
        assert len(protocols) == 1
        assert protocols[0].request is None and protocols[0].response is None


async def test_messages_reuse_the_connections_lists_and_fragments_are_joined() -> None:
    """The frames, the parsed events and the bytes to write stay the same lists across
    messages (a new one per message would outlive it as a young object for the collector)."""
    async with served() as (url, server), connect(url) as ws:
        await ws.send("first")
        assert await ws.recv() == "echo:first"
        (protocol,) = [
            p for p in server.server_state.connections if isinstance(p, WebSocketProtocol)
        ]
        kept = (protocol.frames, protocol.conn.events, protocol.conn.writes)
        await ws.send(["frag", "men", "ted"])  # one message in three frames
        assert await ws.recv() == "echo:fragmented"
        await ws.send("last")
        assert await ws.recv() == "echo:last"
        assert (protocol.frames, protocol.conn.events, protocol.conn.writes) == ([], [], [])
        assert all(
            a is b
            for a, b in zip(
                kept, (protocol.frames, protocol.conn.events, protocol.conn.writes), strict=True
            )
        )


async def test_a_slow_reader_makes_the_writer_wait_and_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses = []
    pause_writing = WebSocketProtocol.pause_writing

    def counted(self: WebSocketProtocol) -> None:
        pauses.append(self)
        pause_writing(self)

    monkeypatch.setattr(WebSocketProtocol, "pause_writing", counted)
    async with served() as (url, _), connect(url, max_queue=1) as ws:
        await ws.send("flood")
        await asyncio.sleep(0.5)  # the server's writes fill the socket buffers meanwhile
        received = []
        while (text := await ws.recv()) != "done":
            received.append(text[:4])
        assert received == [f"{i:04d}" for i in range(2000)]
        assert pauses  # the transport's buffer did fill: writes waited on the flag


async def test_the_inbox_hands_items_over_in_order_and_survives_a_cancelled_get() -> None:
    inbox = _Inbox()
    getter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    inbox.put_nowait("a")
    inbox.put_nowait("b")
    assert inbox.qsize() == 2 and not inbox.empty()
    assert [await inbox.get(), await inbox.get()] == ["a", "b"]
    assert inbox.empty()
    waiting = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    inbox.put_nowait("c")
    assert await waiting == "c"


async def test_the_flag_blocks_writers_until_set() -> None:
    flag = _Flag()
    assert flag.is_set() and await flag.wait()
    flag.clear()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.gather(*waiters) == [True, True, True]


@contextlib.contextmanager
def collector_off() -> Any:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_a_closed_websocket_is_freed_by_reference_counting_alone() -> None:
    """Neither the HTTP protocol that answered the upgrade nor the WebSocket protocol stays in a
    reference cycle: a closed connection is freed at once, even with its objects frozen."""
    from api.serving import AutoProtocol

    made: weakref.WeakSet[Any] = weakref.WeakSet()

    class TrackedHttp(AutoProtocol):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.add(self)

    class TrackedWebSocket(WebSocketProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.add(self)

    with collector_off():
        async with served(http=TrackedHttp, ws=TrackedWebSocket) as (url, server):
            for _ in range(3):
                async with connect(url) as ws:
                    await ws.send("hi")
                    assert await ws.recv() == "echo:hi"
            deadline = asyncio.get_running_loop().time() + 5
            while server.server_state.connections or made:
                assert asyncio.get_running_loop().time() < deadline, sorted(
                    type(p).__name__ for p in made
                )
                await asyncio.sleep(0.05)
