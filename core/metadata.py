"""Metadata, as Stripe has it: the caller's own key-value pairs on a hold, charge, job or grant,
stored and returned as given and carried in its journal entries and events."""

from __future__ import annotations

import math
from typing import Any

from core.errors import InvalidMetadata

MAX_KEYS = 50
MAX_KEY_LENGTH = 40
MAX_VALUE_LENGTH = 500
MAX_INTEGER = 2**53  # what every JSON reader keeps exactly

Metadata = dict[str, str | int | float | bool | None]


def check_metadata(raw: object) -> Metadata:
    """A validated copy of `raw`: at most 50 keys of 1-40 characters; values are strings of at
    most 500 characters, numbers, booleans or null (seed 004's `{service, tokensUsed,
    responseTime}` fits as it is)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidMetadata(f"Expected metadata as an object, got {type(raw).__name__}")
    if len(raw) > MAX_KEYS:
        raise InvalidMetadata(
            f"Expected metadata of at most {MAX_KEYS} keys, got {len(raw)}", limit=MAX_KEYS
        )
    checked: Metadata = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH:
            raise InvalidMetadata(
                f"Expected metadata keys of 1-{MAX_KEY_LENGTH} characters, got {str(key)[:60]!r}",
                key=str(key)[:60],
            )
        checked[key] = _checked_value(key, value)
    return checked


def _checked_value(key: str, value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if len(value) > MAX_VALUE_LENGTH:
            raise InvalidMetadata(
                f"Expected metadata.{key} of at most {MAX_VALUE_LENGTH} "
                f"characters, got {len(value)}",
                key=key,
            )
        return value
    if isinstance(value, int) and abs(value) <= MAX_INTEGER:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise InvalidMetadata(
        f"Expected metadata.{key} to be a string, a number (|n| <= 2^53), a "
        f"boolean or null, got {type(value).__name__}",
        key=key,
    )
