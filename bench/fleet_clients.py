"""The subscriber fleet's picows client (bench/subscribers.py, `--client picows`).

One WSListener per connection and no task: picows parses the frames in its protocol (Cython)
and calls `on_ws_frame`, which walks the SDK's handshake as a small state machine (hello →
send subscribe → subscribed) and, once subscribed, notes each balance.updated with its arrival
time. The opening coroutine awaits one future, resolved on `subscribed` or failed on an error
message, a disconnect or a 30 s timeout at either step. Server pings are answered by picows
itself (enable_auto_pong); no compression is negotiated (picows has none); frames and messages
are capped at 1 MiB; a message split over several frames is reassembled before it is read.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any, Protocol

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSProtocolError,
    WSTransport,
    ws_connect,
)

MAX_MESSAGE = 2**20
STEP_TIMEOUT_S = 30.0
OPEN_TIMEOUT_S = 60.0
PING = json.dumps({"op": "ping"}).encode()
BALANCE_UPDATED = b'"balance.updated"'

AWAIT_HELLO, AWAIT_SUBSCRIBED, LIVE = 0, 1, 2


class FleetState(Protocol):
    """What the subscribers of one process share (bench.subscribers.Fleet): the heartbeat the
    server announced, every receipt, the close codes of connections that ended once live."""

    heartbeat_s: float
    receipts: list[tuple[str, int, float]]
    close_codes: Counter[str]


class Subscriber(WSListener):
    __slots__ = (
        "state",
        "account_id",
        "phase",
        "ready",
        "timer",
        "parts",
        "parts_size",
        "close_code",
    )

    def __init__(self, state: FleetState, account_id: str, ready: asyncio.Future[None]) -> None:
        self.state = state
        self.account_id = account_id
        self.phase = AWAIT_HELLO
        self.ready: asyncio.Future[None] | None = ready
        self.timer: asyncio.TimerHandle | None = None
        self.parts: list[bytes] | None = None  # a fragmented message being reassembled
        self.parts_size = 0
        self.close_code: str | None = None

    # -- the handshake's steps, each within STEP_TIMEOUT_S

    def _arm(self, step: str) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(
            STEP_TIMEOUT_S, self._fail, TimeoutError(f"no {step} within {STEP_TIMEOUT_S:g} s")
        )

    def _fail(self, exc: BaseException) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.ready is not None:
            if not self.ready.done():
                self.ready.set_exception(exc)
            self.ready = None

    def _subscribed(self) -> None:
        assert self.timer is not None and self.ready is not None
        self.timer.cancel()
        self.timer = None
        self.phase = LIVE
        if not self.ready.done():
            self.ready.set_result(None)
        self.ready = None

    # -- picows' callbacks

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._arm("hello")

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        try:
            self._frame(transport, frame, time.time())
        except Exception as exc:
            # picows answers it with a CLOSE (a WSProtocolError's code, else 1011) and
            # disconnects; an opening in progress fails with this exception, not a disconnect
            self.close_code = f"local {type(exc).__name__}"
            self._fail(exc)
            raise

    def _frame(self, transport: WSTransport, frame: WSFrame, now: float) -> None:
        msg_type = frame.msg_type
        if msg_type == WSMsgType.TEXT and frame.fin and self.parts is None:
            payload: bytes = frame.get_payload_as_bytes()
        elif msg_type == WSMsgType.TEXT or msg_type == WSMsgType.CONTINUATION:
            # picows hands over frames as they come: a message in several frames is joined
            # here. A TEXT while another message is open, or a CONTINUATION with none open,
            # breaks the protocol and ends the connection.
            if (msg_type == WSMsgType.TEXT) != (self.parts is None):
                raise WSProtocolError(
                    WSCloseCode.PROTOCOL_ERROR, f"unexpected {WSMsgType(msg_type).name} frame"
                )
            if self.parts is None:
                self.parts, self.parts_size = [], 0
            self.parts_size += frame.payload_size
            if self.parts_size > MAX_MESSAGE:
                raise WSProtocolError(
                    WSCloseCode.MESSAGE_TOO_BIG, f"message over {MAX_MESSAGE} bytes"
                )
            self.parts.append(frame.get_payload_as_bytes())
            if not frame.fin:
                return
            payload, self.parts = b"".join(self.parts), None
        elif msg_type == WSMsgType.CLOSE:
            code = frame.get_close_code()
            # a CLOSE without a code is reported as 1005, as the websockets client does
            self.close_code = str(code.value or 1005)
            transport.send_close(code)
            transport.disconnect()
            return
        else:  # BINARY (the stream sends none) or an unsolicited PONG: nothing to read
            return
        if self.phase == LIVE:
            if BALANCE_UPDATED in payload:
                message = json.loads(payload)
                self.state.receipts.append((message["account_id"], message["seq"], now))
            return
        message = json.loads(payload)
        if self.phase == AWAIT_HELLO:
            self.state.heartbeat_s = float(message.get("heartbeat_s") or self.state.heartbeat_s)
            transport.send(
                WSMsgType.TEXT,
                json.dumps({"op": "subscribe", "account_id": self.account_id}).encode(),
            )
            self.phase = AWAIT_SUBSCRIBED
            self._arm("subscribed")
        elif message.get("type") == "subscribed":
            self._subscribed()
        elif message.get("type") == "error":
            self._fail(RuntimeError(f"subscribe refused: {message}"))
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.phase == LIVE:
            # a connection dropped without a CLOSE frame: 1006, as the websockets client says
            self.state.close_codes[self.close_code or "1006"] += 1
        else:
            self._fail(ConnectionError(f"closed before subscribed ({self.close_code or 1006})"))


async def open_subscriber(state: FleetState, url: str, account_id: str) -> WSTransport:
    """Connect, wait for hello, subscribe, wait for subscribed; the live transport."""
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    transport: WSTransport
    try:
        transport, _ = await asyncio.wait_for(
            ws_connect(
                lambda: Subscriber(state, account_id, ready),
                url,
                websocket_handshake_timeout=OPEN_TIMEOUT_S,
                enable_auto_ping=False,
                enable_auto_pong=True,
                max_frame_size=MAX_MESSAGE,
                logger_name="fleet",
                # the loop's own create_connection: under uvloop it costs less per
                # connection than aiofastnet's (0.14 against 0.18 ms of CPU here)
                use_aiofastnet=False,
            ),
            OPEN_TIMEOUT_S,
        )
    except BaseException:
        if ready.done() and not ready.cancelled():
            ready.exception()  # retrieved: the connect's own exception is the one reported
        raise
    try:
        await ready
    except BaseException:
        transport.disconnect()
        raise
    return transport


def ping(transport: Any) -> None:
    """The SDK's application ping; nothing once the connection is gone."""
    if not transport.is_disconnected:
        transport.send(WSMsgType.TEXT, PING)
