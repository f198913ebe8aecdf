"""What the stream endpoints share: who the viewer is, limits, and the live connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import HTTPConnection

from core.events import Event
from realtime import gc_policy
from realtime.hub import Hub

CLOSE_BAD_TOKEN = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_HEARTBEAT = 4408
CLOSE_BAD_MESSAGE = 1008
CLOSE_TOO_BIG = 1009
CLOSE_RESTARTING = 1012
CLOSE_SLOW_CONSUMER = 1013


class StreamAuthError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Viewer(Protocol):
    """The caller of a stream: a server key or a user token (see api/auth.Principal)."""

    @property
    def kind(self) -> str: ...

    @property
    def subject(self) -> str: ...

    @property
    def expires(self) -> int | None: ...

    @property
    def is_server(self) -> bool: ...


Authenticate = Callable[[HTTPConnection], Awaitable[Viewer]]
VerifyToken = Callable[[str], Awaitable[Viewer]]
# raises StreamAuthError when a viewer's credential no longer holds (a server key revoked)
Recheck = Callable[[Viewer], Awaitable[None]]


def may_read(viewer: Viewer, account_id: str) -> bool:
    return viewer.is_server or viewer.subject == account_id


class Closable(Protocol):
    def request_close(self, code: int, reason: str) -> None: ...


@dataclass
class StreamConfig:
    authenticate: Authenticate
    verify_token: VerifyToken
    allowed_origins: frozenset[str] = frozenset()
    heartbeat_s: float = 25.0
    queue_size: int = 1000
    max_subscriptions: int = 1000
    max_connections_per_account: int = 100  # per user token's account; server keys unlimited
    clock: Callable[[], float] = time.time
    recheck: Recheck | None = None  # before each subscribe of a server key's stream


@dataclass
class Realtime:
    hub: Hub
    config: StreamConfig
    connections: set[Closable] = field(default_factory=set)
    per_account: dict[str, int] = field(default_factory=dict)
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(self, events: list[Event]) -> None:
        await self.hub.publish_local([event.to_dict() for event in events])

    def begin_shutdown(self) -> None:
        """Close every stream with 1012 so clients reconnect (to another instance) and resume."""
        self.shutting_down.set()
        gc_policy.server_stopping()
        self.hub.release_waiters()
        for connection in list(self.connections):
            connection.request_close(CLOSE_RESTARTING, "server restarting")

    def admit(self, viewer: Viewer) -> bool:
        """Whether one more stream fits the viewer's per-account connection limit."""
        if viewer.is_server:
            return True
        count = self.per_account.get(viewer.subject, 0)
        if count >= self.config.max_connections_per_account:
            return False
        self.per_account[viewer.subject] = count + 1
        return True

    def release(self, viewer: Viewer) -> None:
        if viewer.is_server:
            return
        left = self.per_account.get(viewer.subject, 1) - 1
        if left > 0:
            self.per_account[viewer.subject] = left
        else:
            self.per_account.pop(viewer.subject, None)

    def origin_allowed(self, conn: HTTPConnection) -> bool:
        origin = conn.headers.get("origin")
        if origin is None:  # not a browser: nothing to check
            return True
        if origin in self.config.allowed_origins:
            return True
        # the server's own origin: scheme and host:port both (`evil://host` is not ours); a
        # WebSocket's ws/wss is its page's http/https (and X-Forwarded-Proto behind a proxy)
        scheme = {"ws": "http", "wss": "https"}.get(conn.url.scheme, conn.url.scheme)
        host = conn.headers.get("host", "")
        return bool(host) and origin.lower() == f"{scheme}://{host}".lower()


def json_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
