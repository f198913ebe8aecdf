"""`GET /v1/stream/sse`: the same events as Server-Sent Events, resumable with Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from core.errors import InvalidAccountId
from core.model import normalise_account_id
from realtime.feeds import QueueSink
from realtime.streams import Realtime, StreamAuthError, Viewer, json_error, may_read

RETRY_MS = 2000
MAX_SEQ = 2**62


def parse_seq(raw: str | None) -> int | None:
    """A stream position from a query or header, or None when absent or malformed: ASCII
    digits only ("²".isdigit() is true, int("²") fails) and in range (5,000 digits would
    exceed int()'s limit, and a bigint's)."""
    if raw is None or not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        return None
    value = int(raw)
    return value if value <= MAX_SEQ else None


async def sse_endpoint(request: Request) -> Response:
    realtime: Realtime = request.app.state.realtime
    if not realtime.origin_allowed(request):
        return JSONResponse(
            json_error("forbidden_origin", "This origin may not open streams"), status_code=403
        )
    try:
        viewer = await realtime.config.authenticate(request)
    except StreamAuthError as exc:
        return JSONResponse(json_error(exc.code, exc.message), status_code=401)
    raw_account = request.query_params.get("account_id")
    try:
        account_id = (
            viewer.subject
            if raw_account is None and not viewer.is_server
            else normalise_account_id(raw_account)
        )
    except InvalidAccountId as exc:
        return JSONResponse(json_error(exc.code, exc.message), status_code=422)
    if not may_read(viewer, account_id):
        return JSONResponse(
            json_error("forbidden", f"No access to account {account_id}"), status_code=403
        )
    resume = request.headers.get("last-event-id") or request.query_params.get("after_seq")
    after_seq = parse_seq(resume)
    if resume is not None and after_seq is None:
        return JSONResponse(
            json_error(
                "validation_error",
                f"after_seq / Last-Event-ID must be an integer from 0 to {MAX_SEQ}",
            ),
            status_code=422,
        )
    if not realtime.admit(viewer):
        return JSONResponse(
            json_error(
                "too_many_connections",
                "This account has "
                f"{realtime.config.max_connections_per_account} streams "
                "open already",
            ),
            status_code=429,
        )
    return _AdmittedStream(
        _events(realtime, viewer, account_id, after_seq),
        lambda: realtime.release(viewer),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class _AdmittedStream(StreamingResponse):
    """Gives the admission back however the response ends, even if its body never started."""

    def __init__(
        self, content: AsyncIterator[str], on_close: Callable[[], None], **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


async def _events(
    realtime: Realtime, viewer: Viewer, account_id: str, after_seq: int | None
) -> AsyncIterator[str]:
    ended = asyncio.Event()
    sink = QueueSink(realtime.config.queue_size, ended.set)
    subscription = await realtime.hub.subscribe(account_id, sink, after_seq)
    stop_waiters = [
        asyncio.create_task(ended.wait()),
        asyncio.create_task(realtime.shutting_down.wait()),
    ]
    getter: asyncio.Task[str] | None = None
    try:
        yield f"retry: {RETRY_MS}\n\n"
        while True:
            timeout = realtime.config.heartbeat_s
            if viewer.expires is not None:
                timeout = min(timeout, viewer.expires - realtime.config.clock())
                if timeout <= 0:
                    # not "error": EventSource uses that name for its own connection errors
                    yield _frame("token_expired", json.dumps({"type": "token_expired"}))
                    return
            getter = asyncio.create_task(sink.queue.get())
            done, _ = await asyncio.wait(
                {getter, *stop_waiters}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if getter not in done:
                getter.cancel()
                if done:  # overflow or shutdown: the client reconnects with Last-Event-ID
                    return
                yield ": keepalive\n\n"
                continue
            yield _message_frame(getter.result())
    finally:
        # a client gone mid-wait closes this generator there: its getter must not outlive it
        for task in (*stop_waiters, *([getter] if getter is not None else [])):
            task.cancel()
        await realtime.hub.unsubscribe(subscription)


def _message_frame(text: str) -> str:
    message = json.loads(text)
    kind = message.get("type", "message")
    if kind in ("subscribed",):
        return _frame(kind, text)
    return _frame(kind, text, message.get("seq"))


def _frame(event: str, data: str, seq: int | None = None) -> str:
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"
