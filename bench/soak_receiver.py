"""The webhook receiver of `bench soak`: a small HTTP/1.1 server on a loopback port, in the
benchmark's own process, that notes when each event arrived (time.time(), on the same clock as
the server's `created_at`) under its `X-Creditstream-Event-Id` ("account:seq") and answers 200
after `delay_s`, as a receiver doing a little work would."""

from __future__ import annotations

import asyncio
import contextlib
import time

from bench.servers import free_port

MAX_HEAD = 64 * 1024
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class DeliveryReceiver:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.port = free_port()
        self.delay_s = delay_s
        self.arrivals: dict[tuple[str, int], float] = {}  # (account, seq) → first arrival
        self.requests = 0
        self.duplicates = 0
        self.last_arrival = 0.0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/soak-hook"

    async def start(self) -> DeliveryReceiver:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, limit=MAX_HEAD
        )
        return self

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.time()
                length, event_id = 0, ""
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"x-creditstream-event-id":
                        event_id = value.strip().decode()
                if length:
                    await reader.readexactly(length)
                self._note(event_id, arrived)
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(OK)
                await writer.drain()
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
            ValueError,
        ):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _note(self, event_id: str, arrived: float) -> None:
        self.requests += 1
        self.last_arrival = arrived
        account_id, _, seq = event_id.rpartition(":")
        if not account_id or not seq.isdigit():
            return
        key = (account_id, int(seq))
        if key in self.arrivals:
            self.duplicates += 1
        else:
            self.arrivals[key] = arrived
