"""api.serving's HTTP protocol writes what a request's cycle writes in one turn of the event
loop as one write: a response's head and body go in one send() (uvicorn writes them apart), a
streamed response's head goes before its body is ready, an interim `100 Continue` goes before
the body it asks for, pipelined requests are answered in order, and a WebSocket upgrade is
untouched. A real uvicorn server, a real socket; the transport's writes are counted."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect

from api.serving import HttpToolsProtocol
from api.ws_protocol import WebSocketProtocol

pytestmark = pytest.mark.skipif(HttpToolsProtocol is None, reason="httptools is not installed")

writes: list[bytes] = []


class _RecordingTransport:
    """The OS transport, with each write recorded on its way."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class RecordingProtocol(HttpToolsProtocol):  # type: ignore[misc]
    def connection_made(self, transport: Any) -> None:
        super().connection_made(_RecordingTransport(transport))


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": "echo:" + message["text"]})
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    head = {"type": "http.response.start", "status": 200}
    if path == "/stream":
        await send({**head, "headers": [(b"content-type", b"text/plain")]})
        await app.release.wait()  # type: ignore[attr-defined]
        await send({"type": "http.response.body", "body": b"late", "more_body": False})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = b'{"path": "%s", "got": %d}' % (path.encode(), len(body))
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
    await send({**head, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


@contextlib.asynccontextmanager
async def served() -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    config = uvicorn.Config(
        app, http=RecordingProtocol, ws=WebSocketProtocol, log_level="warning", lifespan="off"
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


async def _read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    return await asyncio.wait_for(reader.readuntil(marker), 5)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    writes.clear()
    app.release = asyncio.Event()  # type: ignore[attr-defined]


async def test_a_response_goes_in_one_write() -> None:
    async with served() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for path in (b"/a", b"/b"):  # two requests on one keep-alive connection
            writer.write(b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc" % path)
            await _read_until(reader, b"}")
        writer.close()
    assert len(writes) == 2, writes
    for path, write in zip((b"/a", b"/b"), writes, strict=True):
        assert write.startswith(b"HTTP/1.1 200 OK\r\n")
        assert write.endswith(b'{"path": "%s", "got": 3}' % path), "head and body together"


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with served() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(b"GET /%d HTTP/1.1\r\nhost: x\r\n\r\n" % i for i in range(3)))
        answers = [await _read_until(reader, b"}") for _ in range(3)]
        writer.close()
    assert [a.rsplit(b"\r\n\r\n", 1)[1] for a in answers] == [
        b'{"path": "/%d", "got": 0}' % i for i in range(3)
    ]


async def test_a_streamed_head_goes_before_its_body_is_ready() -> None:
    async with served() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await _read_until(reader, b"\r\n\r\n")  # the body waits for the release
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        app.release.set()  # type: ignore[attr-defined]
        assert (await _read_until(reader, b"late")).endswith(b"late")
        writer.close()


async def test_an_interim_continue_goes_before_the_body_it_asks_for() -> None:
    async with served() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /c HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
        )
        assert await _read_until(reader, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hi")
        assert (await _read_until(reader, b"}")).endswith(b'{"path": "/c", "got": 2}')
        writer.close()


async def test_a_websocket_upgrade_is_untouched() -> None:
    async with served() as port:
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send("hi")
            assert await ws.recv() == "echo:hi"
