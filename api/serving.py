"""uvicorn's HTTP protocols with a request-header deadline and a header size limit.

uvicorn closes a keep-alive connection idle between requests (`--timeout-keep-alive`), but a
connection that sends nothing, or a request line and then headers a byte at a time, is held
forever: a few hundred such clients hold as many file descriptors. These protocols give every
request `CREDITSTREAM_HEADER_TIMEOUT_S` (default 10 s, from the connection's opening or the
request's first byte) to deliver its complete headers, and at most
`CREDITSTREAM_MAX_HEADER_BYTES` (64 KiB) of them; past either the connection is answered
408 / 431 and closed. Bodies are bounded by the API itself (64 KiB), WebSockets by their
heartbeat.

`creditstream serve` uses them; with uvicorn directly: `--http api.serving:HttpToolsProtocol`
(or `api.serving:H11Protocol`, or `api.serving:AutoProtocol` for whichever is installed).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol as _H11Protocol

DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
_RESPONSES = {
    408: b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s",
    431: b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s",
}
_BODIES = {
    408: b'{"error": {"code": "request_timeout", "message": "The request headers did not '
    b'arrive in time"}}',
    431: b'{"error": {"code": "headers_too_large", "message": "The request headers are too '
    b'large"}}',
}


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        return default
    return value if value > 0 else default


def header_timeout_s() -> float:
    return _env_number("CREDITSTREAM_HEADER_TIMEOUT_S", DEFAULT_HEADER_TIMEOUT_S)


def max_header_bytes() -> int:
    return int(_env_number("CREDITSTREAM_MAX_HEADER_BYTES", DEFAULT_MAX_HEADER_BYTES))


class _HeaderDeadline(asyncio.Protocol):
    """Mixed into a uvicorn protocol (before it in the bases): `_awaiting_headers()` says
    whether a request's headers are still incomplete; the rest is shared."""

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_deadline()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        super().connection_lost(exc)

    def _init_deadline(self) -> None:
        self._header_timeout_s = header_timeout_s()
        self._max_header_bytes = max_header_bytes()
        # when the headers awaited are late (the loop's time; None while none are awaited), and
        # the connection's one timer, due at or before then. A request's headers only move the
        # deadline; the timer, set once, checks it when it fires and sets itself again for a
        # later one, so a keep-alive request costs no timer of its own (under uvloop, a timer
        # set and cancelled per request cost more than the rest of this protocol)
        self._due: float | None = None
        # when an idle keep-alive connection is closed, where the protocol folds uvicorn's
        # keep-alive timer into this one (HttpToolsProtocol); None while a request is under way
        self._idle_until: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0

    def _arm(self) -> None:
        if self._due is None:
            self._header_bytes = 0
            self._due = self.loop.time() + self._header_timeout_s
            self._wake_by(self._due)

    def _disarm(self) -> None:
        self._due = None  # the timer, when it fires, finds nothing due

    def _wake_by(self, when: float) -> None:
        """The timer fires at `when` at the latest (set anew only when it is due later)."""
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._expired)

    def _stop(self) -> None:
        self._due = self._idle_until = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _ours(self) -> bool:
        """False once the connection is closing or was handed over (a WebSocket upgrade)."""
        return not self.transport.is_closing() and self.transport.get_protocol() is self

    def _expired(self) -> None:
        self._timer = None
        now, due, idle = self.loop.time(), self._due, self._idle_until
        if due is not None and now >= due:
            self._due = None
            if self._ours() and self._awaiting_headers():
                self._refuse(408)
                return
        elif idle is not None and now >= idle:
            self._idle_until = None
            self._idle_too_long()
            return
        # a later request's headers, or an idle time that began later: wait for them
        later = [t for t in (self._due, self._idle_until) if t is not None]
        if later:
            self._wake_by(min(later))

    def _idle_too_long(self) -> None:
        """What the protocol does with a keep-alive connection idle past its timeout."""

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self._max_header_bytes and self._ours():
            self._refuse(431)

    def _refuse(self, status: int) -> None:
        self._stop()
        if not self._response_in_flight():
            body = _BODIES[status]
            self.transport.write(_RESPONSES[status] % (len(body), body))
        self.transport.close()

    def _awaiting_headers(self) -> bool:
        raise NotImplementedError

    def _response_in_flight(self) -> bool:
        cycle = getattr(self, "cycle", None)
        return cycle is not None and not cycle.response_complete


class H11Protocol(_HeaderDeadline, _H11Protocol):
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._ours():
            self._stop()
        elif self._awaiting_headers():  # a request has begun and its headers are incomplete
            self._arm()
            self._count(len(data))
        else:
            self._disarm()

    def _awaiting_headers(self) -> bool:
        return bool(self.conn.their_state is h11.IDLE)


try:
    import httptools  # noqa: F401 - only whether it is installed
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsProtocol
except ImportError:  # pragma: no cover - h11 only
    HttpToolsProtocol: Any = None
    AutoProtocol: Any = H11Protocol
else:

    class HttpToolsProtocol(_HeaderDeadline, _HttpToolsProtocol):  # type: ignore[no-redef]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._reading_headers = True

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if not self._ours():
                self._stop()  # closing, or handed over: its timer must not keep it
                if self.transport.get_protocol() is not self:
                    # handed over to a WebSocket: this protocol hears nothing more, and its
                    # parser (whose callbacks are its bound methods) held it in a reference
                    # cycle, which kept it and its transport after the stream closed until a
                    # full collection (forever once gc.freeze() had moved it)
                    self.parser = None  # type: ignore[assignment]
            elif self._reading_headers:
                self._count(len(data))

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._reading_headers = True
            self._arm()

        def on_headers_complete(self) -> None:
            self._reading_headers = False
            self._disarm()
            super().on_headers_complete()

        # uvicorn sets a keep-alive timer after each response and cancels it when the next
        # request's bytes arrive; here the connection's one timer also closes it once idle
        # past `timeout_keep_alive` (the same wait, for no timer per request)

        def on_response_complete(self) -> None:
            # uvicorn's, but for its keep-alive timer
            self.server_state.total_requests += 1
            if self.transport.is_closing():
                return
            self._unset_keepalive_if_required()
            self.flow.resume_reading()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
            else:
                self._idle_until = self.loop.time() + self.timeout_keep_alive
                self._wake_by(self._idle_until)

        def _unset_keepalive_if_required(self) -> None:
            self._idle_until = None  # bytes arrived (or the connection ended): not idle
            super()._unset_keepalive_if_required()

        def _idle_too_long(self) -> None:
            if self.transport.get_protocol() is self:
                self.timeout_keep_alive_handler()

        def _awaiting_headers(self) -> bool:
            return self._reading_headers

    AutoProtocol = HttpToolsProtocol
