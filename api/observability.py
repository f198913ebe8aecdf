"""JSON logs with a request id, and per-request metrics, as one pure ASGI middleware."""

from __future__ import annotations

import contextvars
import itertools
import logging
import re
import time
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import metrics
from api.log_writer import LineHandler, LineWriter

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# `?token=` carries user tokens of browsers (EventSource and WebSocket cannot set headers)
_TOKEN_VALUE = re.compile(r"(?i)\b((?:access_)?token=)[^&\s\"'#]+")
REDACTED = "[redacted]"
access_log = logging.getLogger("creditstream.access")
# the loggers whose handlers write lines: ours (through the root) and uvicorn's own
LOGGERS_WITH_HANDLERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "creditstream")


def redact(text: str) -> str:
    """`token=<secret>` → `token=[redacted]` wherever it appears in a line."""
    return _TOKEN_VALUE.sub(rf"\1{REDACTED}", text) if "oken=" in text.lower() else text


class RedactTokens(logging.Filter):
    """Redacts `token=` values in a record's message and arguments (uvicorn's access and
    WebSocket lines carry the path with its query string as an argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True


def redact_tokens_in_logs() -> None:
    """Install the filter on every handler of the app's and uvicorn's loggers (and on the
    loggers themselves, for handlers added later). Idempotent."""
    for name in LOGGERS_WITH_HANDLERS:
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):
            if not any(isinstance(f, RedactTokens) for f in target.filters):
                target.addFilter(RedactTokens())


class JsonFormatter(logging.Formatter):
    RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        entry.update({k: v for k, v in vars(record).items() if k not in self.RESERVED})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(entry, default=str).decode())


# the one writer thread of this process's log lines (json format), made on first configuration
_writer: LineWriter | None = None
_handler: LineHandler | None = None


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr, written by a thread (api/log_writer.py) so that no request waits
    for a write."""
    global _writer, _handler
    if _writer is None:
        _writer = LineWriter()
    handler = _handler = LineHandler(_writer)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # replaced by creditstream.access
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per provider callback


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await observe_websocket(self.app, scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await observe_http(self.app, scope, receive, send)


async def observe_http(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """A request id (`X-Request-ID`, and on every line logged meanwhile), the request metrics
    and the access line around one HTTP request."""
    request_id = _request_id(scope)
    token = REQUEST_ID.set(request_id)
    started = time.perf_counter()
    status = 500
    id_header = (b"x-request-id", request_id.encode())

    async def send_with_id(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            message["headers"] = [*message.get("headers", ()), id_header]
        await send(message)

    try:
        await app(scope, receive, send_with_id)
    finally:
        elapsed = time.perf_counter() - started
        route = getattr(scope.get("route"), "path", "unmatched")
        method = scope["method"]
        _count(method, route, status, elapsed)
        if access_log.isEnabledFor(logging.INFO):
            _log_access(method, scope["path"], status, route, elapsed, request_id)
        REQUEST_ID.reset(token)


# the metric series of each (method, route, status) seen, so a request does not look its labels
# up again; bounded, as the method is whatever the client sent
_SERIES: dict[tuple[str, str, int], tuple[Any, Any]] = {}
MAX_CACHED_SERIES = 1024


def _count(method: str, route: str, status: int, elapsed: float) -> None:
    key = (method, route, status)
    series = _SERIES.get(key)
    if series is None:
        series = (
            metrics.HTTP_REQUESTS.labels(method, route, str(status)),
            metrics.HTTP_SECONDS.labels(method, route),
        )
        if len(_SERIES) < MAX_CACHED_SERIES:
            _SERIES[key] = series
    series[0].inc()
    series[1].observe(elapsed)


_parent_log = logging.getLogger("creditstream")
_second = -1
_second_text = ""


def _log_access(
    method: str, path: str, status: int, route: str, elapsed: float, request_id: str
) -> None:
    """The access line. As `configure_logging` set logging up, it is built here, as the JSON
    formatter would build it, and queued for the writer; with any other set-up (a handler added
    by a test, the text format) it goes through `logging` as any line."""
    duration_ms = round(elapsed * 1000, 2)
    handler = _handler
    root_handlers = logging.root.handlers
    if (
        handler is None
        or _writer is None
        or len(root_handlers) != 1
        or root_handlers[0] is not handler
        or access_log.handlers
        or _parent_log.handlers
        or not access_log.propagate
    ):
        access_log.info(
            "%s %s %s",
            method,
            path,
            status,
            extra={"status": status, "route": route, "duration_ms": duration_ms},
        )
        return
    global _second, _second_text
    now = time.time()
    second = int(now)
    if second != _second:
        _second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = second
    entry = {
        "time": f"{_second_text}.{int((now - second) * 1000):03d}Z",
        "level": "info",
        "logger": "creditstream.access",
        "message": f"{method} {path} {status}",
        "request_id": request_id,
        "status": status,
        "route": route,
        "duration_ms": duration_ms,
    }
    _writer.put(redact(orjson.dumps(entry).decode()))


async def observe_websocket(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """A stream connection gets a request id too: every line it logs carries it, and the
    handshake's answer returns it (`X-Request-ID`)."""
    request_id = _request_id(scope)
    token = REQUEST_ID.set(request_id)

    async def send_with_id(message: Message) -> None:
        if message["type"] == "websocket.accept":
            message["headers"] = [
                *message.get("headers", []),
                (b"x-request-id", request_id.encode()),
            ]
        await send(message)

    try:
        await app(scope, receive, send_with_id)
    finally:
        REQUEST_ID.reset(token)


# request ids: a random prefix per process and a counter, unique without a syscall per request
_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count(1)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            incoming: str = value.decode("latin-1")
            if _VALID_ID.fullmatch(incoming):
                return incoming
            break
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"
