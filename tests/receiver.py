"""A webhook receiver for tests: a small HTTP/1.1 server on a loopback port that records every
request, answers the status the test sets, and can be stopped and started on the same port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.support import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    status: int = 200
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    in_flight: Counter[str] = field(default_factory=Counter)
    max_in_flight: Counter[str] = field(default_factory=Counter)  # per path
    max_in_flight_per_account: dict[str, Counter[str]] = field(default_factory=dict)
    drip_s: float = 0.0  # > 0: answer 200 headers, then one body byte every drip_s
    host: str = "127.0.0.1"
    answer_headers: dict[str, str] = field(default_factory=dict)  # e.g. a redirect's Location
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set as each request arrives
    _server: asyncio.Server | None = None
    _connections: set[asyncio.StreamWriter] = field(default_factory=set)

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, reuse_address=True
        )
        return self

    async def stop(self) -> None:
        """Stop listening and drop open connections: the port refuses until `start`."""
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._connections):
            writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)
        self._server = None

    def events(self, path: str = "/hook") -> list[dict[str, Any]]:
        return [r.event for r in self.received if r.path == path]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        _, path, _ = lines[0].split(" ", 2)
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        account = _account_of(body)
        self.arrived.set()
        self.in_flight[path] += 1
        self.in_flight[f"{path} {account}"] += 1
        self.max_in_flight[path] = max(self.max_in_flight[path], self.in_flight[path])
        per_account = self.max_in_flight_per_account.setdefault(path, Counter())
        per_account[account] = max(per_account[account], self.in_flight[f"{path} {account}"])
        try:
            if self.drip_s:
                await self._drip(path, headers, body, writer)
                return False
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            status = self.status
            if 200 <= status < 300:  # only what was acknowledged counts as received
                self.received.append(Received(path, headers, body, time.monotonic()))
        finally:
            self.in_flight[path] -= 1
            self.in_flight[f"{path} {account}"] -= 1
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.answer_headers.items())
        writer.write(f"HTTP/1.1 {status} X\r\n{extra}Content-Length: 0\r\n\r\n".encode())
        await writer.drain()
        return True

    async def _drip(
        self, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> None:
        """200 and its headers at once, then the body one byte at a time, until the client
        hangs up: every read succeeds well within a per-read timeout, the answer never ends."""
        self.received.append(Received(path, headers, body, time.monotonic()))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        await writer.drain()
        while True:
            await asyncio.sleep(self.drip_s)
            writer.write(b".")
            await writer.drain()


def _account_of(body: bytes) -> str:
    try:
        return str(json.loads(body).get("account_id", ""))
    except (ValueError, AttributeError):
        return ""
