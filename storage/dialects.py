"""What differs between PostgreSQL, SQLite and asyncpg, smoothed over for every adapter."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

UNPAIRED_SURROGATE = re.compile("[\ud800-\udfff]")


def dialect_insert(conn: AsyncConnection, table: sa.Table) -> Any:
    """An INSERT that supports ON CONFLICT on both PostgreSQL and SQLite."""
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    return module.insert(table)


class RecordColumns:
    """Attribute access on an asyncpg record, as the row mappers expect of SQLAlchemy rows."""

    __slots__ = ("_record", "_prefix")

    def __init__(self, record: Any, prefix: str = "") -> None:
        self._record, self._prefix = record, prefix

    def __getattr__(self, name: str) -> Any:
        return self._record[self._prefix + name]


def storable_key(value: str) -> bool:
    """Whether a looked-up id could have been stored at all. PostgreSQL text cannot hold NUL
    (it refuses the whole query) and UTF-8 cannot encode a lone surrogate: such an id, e.g. a
    hostile `%00` in a URL, names nothing, on SQLite and PostgreSQL alike."""
    return "\x00" not in value and UNPAIRED_SURROGATE.search(value) is None
