"""api.serving's httptools protocol keeps one timer per connection for both of its waits: a
request's headers (`CREDITSTREAM_HEADER_TIMEOUT_S`) and, folded in from uvicorn, an idle
keep-alive connection's close (`timeout_keep_alive`). Under a real uvicorn server and a real
socket: an idle connection closes once its keep-alive wait is over, one in use stays open past
it, pipelined requests are answered in order, and slow headers still get their 408."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from api.serving import HttpToolsProtocol

pytestmark = pytest.mark.skipif(HttpToolsProtocol is None, reason="httptools is not installed")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await receive()
    body = b'{"path": "%s"}' % scope["path"].encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def served(keep_alive_s: float) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        http=HttpToolsProtocol,
        log_level="warning",
        lifespan="off",
        timeout_keep_alive=keep_alive_s,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task
        sock.close()


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: bytes) -> bytes:
    writer.write(b"GET %s HTTP/1.1\r\nhost: x\r\n\r\n" % path)
    return await asyncio.wait_for(reader.readuntil(b"}"), 5)


async def _closed_after(reader: asyncio.StreamReader, started: float) -> float:
    assert await asyncio.wait_for(reader.read(), 10) == b"", "closed without a word"
    return time.monotonic() - started


async def test_an_idle_keep_alive_connection_closes_once_its_wait_is_over() -> None:
    async with served(keep_alive_s=1) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await _ask(reader, writer, b"/a")
        idle = await _closed_after(reader, time.monotonic())
        writer.close()
    assert 0.8 < idle < 2.5, idle


async def test_a_connection_in_use_outlives_the_keep_alive_wait() -> None:
    async with served(keep_alive_s=1) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(6):  # 2.4 s of requests 0.4 s apart: never 1 s idle
            assert (await _ask(reader, writer, b"/%d" % i)).endswith(b'{"path": "/%d"}' % i)
            await asyncio.sleep(0.4)
        idle = await _closed_after(reader, time.monotonic() - 0.4)
        writer.close()
    assert 0.8 < idle < 2.5, idle


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with served(keep_alive_s=5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(b"GET /%d HTTP/1.1\r\nhost: x\r\n\r\n" % i for i in range(4)))
        answers = [await asyncio.wait_for(reader.readuntil(b"}"), 5) for _ in range(4)]
        writer.close()
    assert [a.rsplit(b"\r\n\r\n", 1)[1] for a in answers] == [
        b'{"path": "/%d"}' % i for i in range(4)
    ]


async def test_slow_headers_after_a_request_still_get_their_408(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The keep-alive wait (5 s) and the header deadline (1 s) share the timer: a request begun
    on a kept-alive connection and never finished is answered 408 after 1 s, not closed
    quietly at 5."""
    monkeypatch.setenv("CREDITSTREAM_HEADER_TIMEOUT_S", "1")
    async with served(keep_alive_s=5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await _ask(reader, writer, b"/a")
        began = time.monotonic()
        writer.write(b"GET /b HTTP/1.1\r\nhost: x\r\n")  # headers never finished
        answer = await asyncio.wait_for(reader.read(), 10)
        took = time.monotonic() - began
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert 0.8 < took < 2.5, took
