"""Helpers shared by the test tiers: a settable clock, free ports, a live uvicorn process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import httpx

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("CREDITSTREAM_REQUIRE_SERVICES") == "1"
PG_ADMIN_DSN = os.environ.get("CREDITSTREAM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CREDITSTREAM_TEST_REDIS", "redis://127.0.0.1:6379/0")
TEST_SECRET = "test-user-token-secret-that-is-long-enough-for-hs256"


@dataclass
class MutableClock:
    """A clock tests move by hand, so "7 days later" takes no time."""

    current: datetime = field(default_factory=lambda: datetime(2030, 1, 15, 12, 0, tzinfo=UTC))

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """`uvicorn asgi:app` in its own process, as production runs it."""

    # the servers running now: a failed test's report carries the end of each one's log
    running: ClassVar[list[LiveServer]] = []

    def __init__(self, env: dict[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "CREDITSTREAM_USER_TOKEN_SECRET": TEST_SECRET, **env}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = (
            Path(env.get("CREDITSTREAM_RESULTS_DIR", "/tmp")) / f"server-{self.port}.log"
        )

    def start(self, timeout: float = 30.0) -> LiveServer:
        with open(self.log_path, "ab") as log:
            self.process = self._spawn(log)
        LiveServer.running.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}: {self.log_tail(2000)}"
                )
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log_tail(2000)}")

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "asgi:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--ws",
                "api.ws_protocol:WebSocketProtocol",
                "--ws-per-message-deflate",
                "false",
                "--log-level",
                "warning",
                "--timeout-graceful-shutdown",
                "5",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def log_tail(self, chars: int = 4000) -> str:
        """The log's end without its access lines: one per request, they would push the errors
        and warnings out of what is shown."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(line for line in lines if "creditstream.access" not in line)[-chars:]

    def stop(self, kill: bool = False) -> None:
        if self in LiveServer.running:
            LiveServer.running.remove(self)
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class PrivateRedis:
    """A redis-server of the test's own, so a test may stop and restart it."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


async def make_server_key(database_url: str) -> str:
    """Migrate the database (as a server's start would) and create a server key on it."""
    from storage.keys import create_server_key
    from storage.migrate import upgrade_async
    from storage.sql import Database

    await upgrade_async(database_url)
    db = Database.from_url(database_url)
    try:
        return await create_server_key(db, "tests")
    finally:
        await db.dispose()


async def audit_mismatches(database_url: str) -> list[str]:
    """What `creditstream audit` would report for the database, one line per mismatch."""
    from storage.audit import audit
    from storage.sql import Database

    db = Database.from_url(database_url)
    try:
        async with db.read() as uow:
            _, mismatches = await audit(uow.conn)
    finally:
        await db.dispose()
    return [m.describe() for m in mismatches]
