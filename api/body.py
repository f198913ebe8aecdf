"""Request bodies: size limit, JSON decoding and schema validation, each with its own 4xx."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from api.errors import ApiError

MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32
_UNPAIRED_SURROGATE = re.compile("[\ud800-\udfff]")
_BOM = b"\xef\xbb\xbf"
_LONG_NUMBER = re.compile(rb"\d{19}")

Schema = TypeVar("Schema", bound=BaseModel)


async def read_raw(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    declared = request.headers.get("content-length")
    if (
        declared is not None
        and declared.isascii()
        and declared.isdigit()
        and (len(declared) > 9 or int(declared) > limit)
    ):
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def decode_json(raw: bytes) -> Any:
    if not raw.strip():
        return {}
    try:
        # orjson decodes what the standard parser takes, alike, several times faster; what it
        # refuses the standard parser decodes again, for its own error message. Not given to
        # it: a BOM (the standard parser refuses it) and numbers of 19 digits or more (orjson
        # makes a float of an integer beyond 64 bits, the standard parser an int)
        value = (
            orjson.loads(raw)
            if not raw.startswith(_BOM) and _LONG_NUMBER.search(raw) is None
            else _standard_json(raw)
        )
    except orjson.JSONDecodeError:
        value = _standard_json(raw)
    if _depth(value) > MAX_JSON_DEPTH:
        raise ApiError(422, "validation_error", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if _has_unstorable_text(value):
        # valid JSON, but PostgreSQL cannot store NUL in text or JSON, and UTF-8 cannot encode a
        # lone surrogate: refused here alike on every database, before anything is written
        raise ApiError(
            422,
            "validation_error",
            "Strings may not contain NUL (\\u0000) or unpaired surrogates (\\ud800-\\udfff)",
        )
    return value


def _standard_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_json", "Request body is not valid UTF-8") from exc
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"Request body is not valid JSON: {exc}") from exc


def validate(schema: type[Schema], value: Any) -> Schema:
    if not isinstance(value, dict):
        raise ApiError(
            422, "validation_error", f"Expected a JSON object, got {type(value).__name__}"
        )
    try:
        return schema.model_validate(value)
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"]) or "body", "message": err["msg"]}
            for err in exc.errors()
        ]
        first = problems[0]
        raise ApiError(
            422, "validation_error", f"{first['field']}: {first['message']}", errors=problems
        ) from exc


async def parse(
    request: Request, schema: type[Schema], limit: int = MAX_BODY_BYTES
) -> tuple[Schema, bytes]:
    """The validated body, and its canonical bytes for idempotency fingerprints."""
    value = decode_json(await read_raw(request, limit))
    parsed = validate(schema, value)
    return parsed, json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "payload_too_large", f"Request body exceeds the limit of {limit} bytes", limit=limit
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _has_unstorable_text(value: Any) -> bool:
    """NUL or a lone surrogate in any string or key (depth is already bounded)."""
    if isinstance(value, str):
        return "\x00" in value or _UNPAIRED_SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_unstorable_text(k) or _has_unstorable_text(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_unstorable_text(v) for v in value)
    return False


def _depth(value: Any, level: int = 1) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level
