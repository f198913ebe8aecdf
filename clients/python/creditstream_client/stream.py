"""The account's events over `GET /v1/stream` (README, "Live push"), resumed across reconnects.

After any drop (a server restart's 1012, a slow consumer's or a database failover's 1013, a
reset connection, an instance gone for a while) it reconnects with backoff and full jitter, each
wait capped at the policy's `max_delay_s` and no limit on the reconnects but `max_reconnects`
(a stream outlives any call's budget), and resubscribes with `after_seq` = the last seq it
yielded; the server then sends every later event from its journal, so nothing is skipped, and
anything at or below that seq is dropped here, so nothing is yielded twice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from creditstream_client.answers import USER_AGENT
from creditstream_client.errors import AuthenticationError, CreditstreamError, PermissionDenied
from creditstream_client.retry import RetryPolicy

CLOSE_BAD_TOKEN = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_BAD_MESSAGE = 1008
DEFAULT_HEARTBEAT_S = 25.0
HANDSHAKE_REFUSALS = 5  # HTTP refusals of the handshake in a row before giving up


def stream_url(base_url: str) -> str:
    scheme, _, rest = base_url.partition("://")
    return ("wss" if scheme == "https" else "ws") + "://" + rest.rstrip("/") + "/v1/stream"


def _final_close(code: int | None, reason: str) -> CreditstreamError | None:
    """A close that a reconnect cannot fix: raised instead of retried."""
    if code == CLOSE_BAD_TOKEN:
        return AuthenticationError(401, reason or "invalid_token", "the stream refused the key")
    if code == CLOSE_FORBIDDEN:
        return PermissionDenied(403, "forbidden", reason or "no access to this account")
    if code == CLOSE_BAD_MESSAGE and reason != "too_many_connections":
        return CreditstreamError(400, "bad_message", reason or "the stream refused a message")
    return None


class EventStream:
    def __init__(
        self,
        base_url: str,
        key: str,
        account_id: str,
        after_seq: int | None,
        retry: RetryPolicy,
        max_reconnects: int | None = None,
    ) -> None:
        self.url = stream_url(base_url)
        self.key = key
        self.account_id = account_id
        self.last_seq = after_seq  # None: start with a snapshot
        self.retry = retry
        self.max_reconnects = max_reconnects
        self.reconnects = 0

    async def events(self) -> AsyncGenerator[dict[str, Any], None]:
        failures = refusals = 0
        while True:
            try:
                async with connect(
                    self.url,
                    user_agent_header=USER_AGENT,
                    additional_headers={"Authorization": f"Bearer {self.key}"},
                    open_timeout=10,
                ) as ws:
                    refusals = 0
                    async for message in self._session(ws):
                        failures = 0  # a working session resets the backoff
                        yield message
            except ConnectionClosed as exc:
                received = exc.rcvd
                final = _final_close(
                    received.code if received else None, received.reason if received else ""
                )
                if final is not None:
                    raise final from exc
            except InvalidStatus as exc:
                # the server refuses a key or an account with close codes after the handshake
                # (4401, 4403); an HTTP refusal of the handshake itself is an instance shutting
                # down (or a proxy in the way), so it is retried, a few times in a row at most
                status = exc.response.status_code
                refusals += 1
                if status in (401, 403) and refusals > HANDSHAKE_REFUSALS:
                    cls = AuthenticationError if status == 401 else PermissionDenied
                    raise cls(status, "handshake_refused", "the stream refused the key") from exc
            except (TimeoutError, OSError, WebSocketException):
                pass  # refused, reset or timed out: reconnect below
            failures += 1
            self.reconnects += 1
            if self.max_reconnects is not None and self.reconnects > self.max_reconnects:
                raise CreditstreamError(
                    0, "connection_error", f"stream lost after {self.max_reconnects} reconnects"
                )
            await asyncio.sleep(self.retry.delay_s(min(failures, 16)))

    async def _session(self, ws: ClientConnection) -> AsyncIterator[dict[str, Any]]:
        heartbeat_s = DEFAULT_HEARTBEAT_S
        subscribe: dict[str, Any] = {"op": "subscribe", "account_id": self.account_id}
        if self.last_seq is not None:
            subscribe["after_seq"] = self.last_seq
        await ws.send(json.dumps(subscribe))
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), heartbeat_s)
            except TimeoutError:
                # the server closes a connection it has not heard from in 3 heartbeats
                await ws.send('{"op":"ping"}')
                continue
            message: dict[str, Any] = json.loads(raw)
            kind = message.get("type")
            if kind == "hello":
                heartbeat_s = float(message.get("heartbeat_s") or DEFAULT_HEARTBEAT_S) / 2
            elif kind == "snapshot":
                self.last_seq = int(message["seq"])
                yield message
            elif "seq" in message and kind not in ("subscribed",):
                seq = int(message["seq"])
                if self.last_seq is not None and seq <= self.last_seq:
                    continue  # seen before the reconnect
                self.last_seq = seq
                yield message
            elif kind == "error":
                raise CreditstreamError(
                    400, str(message.get("code")), str(message.get("message")), message
                )
