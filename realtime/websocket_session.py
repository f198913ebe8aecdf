"""One WebSocket stream's session: its subscriptions, the client's ops, heartbeats and token
expiry, and how it closes.

One task per idle connection: the handler's own task reads client messages; one timer per
session watches its heartbeat and token deadlines (not a task, nor a timer, per receive). Every
outgoing message (replies and events) goes through the connection's bounded `Outbox`, in order;
it writes from a task that lives only while something is pending. A close request (slow
consumer, shutdown) or a failed write interrupts the reader by cancelling the handler's task,
which then closes the connection.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

import metrics
from core.errors import InvalidAccountId
from core.model import normalise_account_id
from realtime.feeds import Subscription, dump
from realtime.outbox import Outbox
from realtime.streams import (
    CLOSE_BAD_MESSAGE,
    CLOSE_BAD_TOKEN,
    CLOSE_FORBIDDEN,
    CLOSE_HEARTBEAT,
    CLOSE_SLOW_CONSUMER,
    Realtime,
    StreamAuthError,
    Viewer,
    may_read,
)
from realtime.websocket_frames import ProtocolViolation, close_for_error, parse_message

CLOSE_TIMEOUT_S = 2.0
MISSED_HEARTBEATS = 3  # over a minute at 25 s: hidden browser tabs tick once a minute


class StreamSession:
    def __init__(self, websocket: WebSocket, realtime: Realtime, viewer: Viewer) -> None:
        self.websocket = websocket
        self.realtime = realtime
        self.viewer = viewer
        self.config = realtime.config
        self.connection_id = uuid.uuid4().hex
        self.sink = Outbox(
            self.config.queue_size, websocket.send_text, self._on_overflow, self._interrupt
        )
        self.subscriptions: dict[str, Subscription] = {}
        self.close_request: tuple[int, str] | None = None
        self._last_heard = time.monotonic()
        self._reader: asyncio.Task[Any] | None = None  # the handler's task, while it reads
        self._interrupted = False
        self._deadline: asyncio.TimerHandle | None = None  # silence or token expiry
        # the server's own ASGI receive, awaited without Starlette's `WebSocket.receive` around
        # it: a waiting receive is one coroutine fewer, left behind by every message the stream
        # gets and walked by young collections until the next (realtime/gc_policy.py freezes the
        # ones made when it opened); `_receive_forever` keeps Starlette's state checks
        self._asgi_receive = websocket._receive

    def request_close(self, code: int, reason: str) -> None:
        if self.close_request is None:
            self.close_request = (code, reason)
        self._interrupt()

    def _interrupt(self, *_: object) -> None:
        """Stop reading: cancel the handler's task, once; `run` takes the cancellation back."""
        if self._reader is not None and not self._interrupted:
            self._interrupted = True
            self._reader.cancel()

    def _on_overflow(self) -> None:
        metrics.SLOW_CONSUMERS.inc()
        self.request_close(CLOSE_SLOW_CONSUMER, "slow consumer: resume from your last seq")

    async def run(self) -> None:
        self.sink.offer(
            dump(
                {
                    "type": "hello",
                    "connection_id": self.connection_id,
                    "heartbeat_s": self.config.heartbeat_s,
                }
            )
        )
        error: Exception | None = None
        self._reader = asyncio.current_task()
        if self.close_request is not None:  # asked for before the session ran
            self._interrupt()
        try:
            await self._receive_forever()
        except asyncio.CancelledError:
            assert self._reader is not None
            if not self._interrupted or self._reader.uncancel() > 0:
                raise  # the server's, not (only) ours
        except Exception as exc:
            error = exc
        finally:
            self._reader = None  # nothing interrupts the cleanup below
            await self.sink.close()
        if isinstance(error, ProtocolViolation):
            self.request_close(error.code, error.reason)
        elif error is not None and not isinstance(error, WebSocketDisconnect):
            # a failure of ours while handling a client message (the database down during a
            # subscribe): logged with the request id, and the client told to come back
            self.request_close(
                *close_for_error(error, f"handling a message of stream {self.connection_id}")
            )
        # a write fails only when the peer is gone: nothing to close, nothing to report
        if self.close_request is not None:
            await self._close(*self.close_request)

    async def cleanup(self) -> None:
        for subscription in self.subscriptions.values():
            await self.realtime.hub.unsubscribe(subscription)
        self.subscriptions.clear()

    # -- receiving ----------------------------------------------------------------------------

    async def _receive_forever(self) -> None:
        self._arm_deadline()
        try:
            while True:
                message = await self._asgi_receive()
                kind = message["type"]
                if kind == "websocket.disconnect":
                    self.websocket.client_state = WebSocketState.DISCONNECTED
                    return
                if kind != "websocket.receive":
                    raise RuntimeError(f"Expected ASGI message 'websocket.receive', got {kind!r}")
                self._last_heard = time.monotonic()
                text = message.get("text")
                if text is None:
                    raise ProtocolViolation(CLOSE_BAD_MESSAGE, "expected JSON text messages")
                await self._handle(parse_message(text))
        finally:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

    def _arm_deadline(self) -> None:
        """One timer per session for its silence and token deadlines, moved only when it fires
        (or the token changes). A timer per receive lived until the next message, the next
        ping 20 s on, as young objects (a handle, its context, a bound method, the timeout)
        that every young collection walked: thousands between two of them at 10,000 streams."""
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = asyncio.get_running_loop().call_later(self._time_left(), self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline = None
        expiry = self._seconds_to_expiry()
        if expiry is not None and expiry <= 0:
            self.request_close(CLOSE_BAD_TOKEN, "token expired")
        elif time.monotonic() - self._last_heard >= self.config.heartbeat_s * MISSED_HEARTBEATS:
            self.request_close(CLOSE_HEARTBEAT, "heartbeat missed")
        else:  # heard from since it was armed: wait for what is left
            self._arm_deadline()

    def _time_left(self) -> float:
        heartbeat_deadline = (
            self._last_heard + self.config.heartbeat_s * MISSED_HEARTBEATS - time.monotonic()
        )
        expiry = self._seconds_to_expiry()
        return max(0.01, heartbeat_deadline if expiry is None else min(heartbeat_deadline, expiry))

    def _seconds_to_expiry(self) -> float | None:
        expires = self.viewer.expires
        return None if expires is None else expires - self.config.clock()

    async def _handle(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "ping":
            self.sink.offer(dump({"type": "pong"}))
        elif op == "subscribe":
            await self._subscribe(message)
        elif op == "unsubscribe":
            await self._unsubscribe(message)
        elif op == "refresh":
            await self._refresh(message)
        else:
            raise ProtocolViolation(CLOSE_BAD_MESSAGE, f"unknown op {op!r}")

    async def _subscribe(self, message: dict[str, Any]) -> None:
        account_id = self._account_of(message)
        after_seq = message.get("after_seq")
        if after_seq is not None and (
            isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 0
        ):
            raise ProtocolViolation(CLOSE_BAD_MESSAGE, "after_seq must be a non-negative integer")
        if not may_read(self.viewer, account_id):
            raise ProtocolViolation(CLOSE_FORBIDDEN, f"no access to account {account_id}")
        if self.viewer.is_server and self.config.recheck is not None:
            try:  # a revoked key subscribes no more (its lookup is cached for seconds)
                await self.config.recheck(self.viewer)
            except StreamAuthError as exc:
                raise ProtocolViolation(CLOSE_BAD_TOKEN, exc.code) from exc
        previous = self.subscriptions.pop(account_id, None)
        if previous is not None:
            await self.realtime.hub.unsubscribe(previous)
        elif len(self.subscriptions) >= self.config.max_subscriptions:
            self.sink.offer(
                dump(
                    {
                        "type": "error",
                        "code": "too_many_subscriptions",
                        "message": f"at most {self.config.max_subscriptions} "
                        "subscriptions per connection",
                        "account_id": account_id,
                    }
                )
            )
            return
        self.subscriptions[account_id] = await self.realtime.hub.subscribe(
            account_id, self.sink, after_seq
        )

    async def _unsubscribe(self, message: dict[str, Any]) -> None:
        account_id = self._account_of(message)
        subscription = self.subscriptions.pop(account_id, None)
        if subscription is not None:
            await self.realtime.hub.unsubscribe(subscription)
        self.sink.offer(dump({"type": "unsubscribed", "account_id": account_id}))

    async def _refresh(self, message: dict[str, Any]) -> None:
        token = message.get("token")
        if not isinstance(token, str) or not token:
            raise ProtocolViolation(CLOSE_BAD_MESSAGE, "refresh needs a token")
        try:
            fresh = await self.config.verify_token(token)
        except StreamAuthError as exc:
            raise ProtocolViolation(CLOSE_BAD_TOKEN, exc.code) from exc
        if (fresh.kind, fresh.subject) != (self.viewer.kind, self.viewer.subject):
            raise ProtocolViolation(CLOSE_FORBIDDEN, "a refresh token must name the same account")
        self.viewer = fresh
        self._arm_deadline()  # the new token's expiry
        self.sink.offer(dump({"type": "refreshed", "expires_at": fresh.expires}))

    def _account_of(self, message: dict[str, Any]) -> str:
        raw = message.get("account_id")
        if raw is None and not self.viewer.is_server:
            return self.viewer.subject
        try:
            return normalise_account_id(raw)
        except InvalidAccountId as exc:
            raise ProtocolViolation(CLOSE_BAD_MESSAGE, "a valid account_id is needed") from exc

    # -- sending ------------------------------------------------------------------------------

    async def _close(self, code: int, reason: str) -> None:
        if self.websocket.client_state != WebSocketState.CONNECTED:
            return
        try:
            await asyncio.wait_for(
                self.websocket.close(code=code, reason=reason[:120]), CLOSE_TIMEOUT_S
            )
        except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
            pass  # the peer is gone or stuck; leaving the handler drops the connection
