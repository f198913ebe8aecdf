"""`bench webhooks`' receiver: the endpoint's server, in the benchmark's own process."""

from __future__ import annotations

import asyncio
import time


class Receiver:
    """A webhook receiver: HTTP/1.1 with keep-alive, `delay_s` per request, 200 to all."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.arrivals: dict[tuple[str, int], float] = {}
        self.duplicates = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (
                        line.partition(":")
                        for line in head.decode("latin-1").split("\r\n")[1:]
                        if line
                    )
                }
                await reader.readexactly(int(headers.get("content-length", "0")))
                await asyncio.sleep(self.delay_s)
                account, _, seq = headers.get("x-creditstream-event-id", "").rpartition(":")
                key = (account, int(seq or 0))
                if key in self.arrivals:
                    self.duplicates += 1
                else:
                    self.arrivals[key] = time.time()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
