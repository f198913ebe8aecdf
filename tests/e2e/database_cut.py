"""A TCP proxy in front of PostgreSQL that can cut the database away for a while, for tests of
what clients see during a primary failover: while cut, every open connection is dropped and new
ones are refused (the server answers 503 `service_unavailable`); then it comes back on the same
port. It runs on its own event loop in a thread, so sync tests, async tests and other processes
(over `control_url`) can all use it.

    POST {control_url}/cut?seconds=8   → 204 at once; the database is back 8 s later
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.e2e.balancer import TcpBalancer
from tests.support import free_port

POSTGRES_PORT = 5432


class DatabaseCut:
    def __init__(self) -> None:
        self.port = free_port()
        self.cuts: list[tuple[float, float]] = []  # (monotonic start, seconds) of each cut
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._proxy: TcpBalancer | None = None
        self._control: ThreadingHTTPServer | None = None
        self._pending: asyncio.TimerHandle | None = None

    def start(self) -> DatabaseCut:
        self._thread.start()
        self._run(self._up())
        return self

    def database_url(self, pg_url: str) -> str:
        return pg_url.replace(f"127.0.0.1:{POSTGRES_PORT}", f"127.0.0.1:{self.port}")

    def cut_for(self, seconds: float) -> None:
        """Cut the database now (returns once it is cut); it comes back after `seconds`."""
        self._run(self._down_for(seconds))
        self.cuts.append((time.monotonic(), seconds))

    def is_down(self) -> bool:
        return self._proxy is None

    @property
    def control_url(self) -> str:
        """An HTTP endpoint another process (the Node tests) cuts the database with."""
        if self._control is None:
            cut = self

            class Control(BaseHTTPRequestHandler):
                def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                    query = parse_qs(urlparse(self.path).query)
                    cut.cut_for(float(query.get("seconds", ["8"])[0]))
                    self.send_response(204)
                    self.end_headers()

                def log_message(self, *args: object) -> None:
                    pass

            self._control = ThreadingHTTPServer(("127.0.0.1", 0), Control)
            threading.Thread(target=self._control.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._control.server_address[1]}"

    def stop(self) -> None:
        if self._control is not None:
            self._control.shutdown()
            self._control.server_close()
        if self._pending is not None:
            self._loop.call_soon_threadsafe(self._pending.cancel)
        self._run(self._down())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def _run(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=30)

    async def _up(self) -> None:
        if self._proxy is None:
            self._proxy = await TcpBalancer([POSTGRES_PORT], port=self.port).start()

    async def _down_for(self, seconds: float) -> None:
        await self._down()
        back = asyncio.get_running_loop().call_later(seconds, self._come_back)
        self._pending = back

    def _come_back(self) -> None:
        asyncio.ensure_future(self._up())

    async def _down(self) -> None:
        proxy, self._proxy = self._proxy, None
        if proxy is not None:
            await proxy.stop()
