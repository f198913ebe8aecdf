"""What the frames of a `GET /v1/stream` WebSocket say: a client's text message parsed into
an op (bounded, a JSON object), a `ProtocolViolation` carrying the close code it ends in, and the
close code and reason of an unexpected server error."""

from __future__ import annotations

import json
import logging
from typing import Any

from core.ports import ServiceUnavailable
from realtime.streams import CLOSE_BAD_MESSAGE, CLOSE_TOO_BIG

log = logging.getLogger("creditstream.websocket")
CLOSE_INTERNAL_ERROR = 1011  # an unexpected server error: the client may reconnect and resume
CLOSE_TRY_AGAIN_LATER = 1013  # the database is unavailable: reconnect (with backoff) and resume
MAX_MESSAGE_CHARS = 64 * 1024  # client messages are small ops; as REST bodies, 64 KiB at most


class ProtocolViolation(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def close_for_error(error: BaseException, doing: str) -> tuple[int, str]:
    """Log an unexpected error of a stream (the request id comes with every line) and choose
    its close code: 1013 when retrying shortly is the right advice, 1011 otherwise."""
    if isinstance(error, ServiceUnavailable):
        log.warning(
            "%s failed: %s; closing with %d",
            doing,
            error,
            CLOSE_TRY_AGAIN_LATER,
            extra={"close_code": CLOSE_TRY_AGAIN_LATER},
        )
        return CLOSE_TRY_AGAIN_LATER, "database unavailable: reconnect and resume shortly"
    log.error(
        "%s failed; closing with %d",
        doing,
        CLOSE_INTERNAL_ERROR,
        exc_info=error,
        extra={"close_code": CLOSE_INTERNAL_ERROR},
    )
    return CLOSE_INTERNAL_ERROR, "internal error: reconnect and resume"


def parse_message(text: str) -> dict[str, Any]:
    if len(text) > MAX_MESSAGE_CHARS:
        raise ProtocolViolation(
            CLOSE_TOO_BIG, f"messages are at most {MAX_MESSAGE_CHARS} characters"
        )
    try:
        message = json.loads(text)
    except (ValueError, RecursionError) as exc:  # deep nesting overflows the decoder's stack
        raise ProtocolViolation(CLOSE_BAD_MESSAGE, "message is not JSON") from exc
    if not isinstance(message, dict):
        raise ProtocolViolation(CLOSE_BAD_MESSAGE, "message must be a JSON object")
    return message
