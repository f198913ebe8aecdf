"""Set-based writes for PostgreSQL: one INSERT … SELECT FROM unnest(arrays) or one UPDATE … FROM
unnest(arrays) per table, on the batch's asyncpg connection.

Each column travels as one array, so a batch of hundreds of rows is one statement per table, and
asyncpg keeps the statement prepared on the connection. The SQL is derived from the SQLAlchemy
tables, so the schema stays defined in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import asyncpg
import orjson
import sqlalchemy as sa

from storage.tables import UtcDateTime

# JSON travels as text and is cast in SQL: the same text SQLAlchemy's JSON type would send
ARRAY_TYPES: tuple[tuple[type[Any], str], ...] = (
    (sa.JSON, "text[]"),
    (sa.Boolean, "boolean[]"),
    (sa.BigInteger, "bigint[]"),
    (sa.Integer, "bigint[]"),
    (UtcDateTime, "timestamptz[]"),
    (sa.String, "text[]"),
    (sa.Text, "text[]"),
)


def _array_type(column: sa.Column[Any]) -> str:
    for python_type, array in ARRAY_TYPES:
        if isinstance(column.type, python_type):
            return array
    raise TypeError(
        f"Expected a column type with an array form, got {column.type!r} "
        f"for {column.table.name}.{column.name}"
    )


def _is_json(column: sa.Column[Any]) -> bool:
    return isinstance(column.type, sa.JSON)


def _insert(table: sa.Table, names: tuple[str, ...], first: int) -> str:
    columns = [table.c[n] for n in names]
    selected = ", ".join(
        f"v.{n}::json" if _is_json(c) else f"v.{n}" for n, c in zip(names, columns, strict=True)
    )
    params = ", ".join(f"${i}::{_array_type(c)}" for i, c in enumerate(columns, first))
    return (
        f"INSERT INTO {table.name} ({', '.join(names)}) SELECT {selected} "
        f"FROM unnest({params}) AS v({', '.join(names)})"
    )


def _update(table: sa.Table, names: tuple[str, ...], first: int) -> str:
    """Rows matched on the table's primary key; every other column given is set."""
    keys = [c.name for c in table.primary_key.columns]
    columns = [table.c[n] for n in names]
    assignments = ", ".join(
        f"{n} = v.{n}::json" if _is_json(c) else f"{n} = v.{n}"
        for n, c in zip(names, columns, strict=True)
        if n not in keys
    )
    params = ", ".join(f"${i}::{_array_type(c)}" for i, c in enumerate(columns, first))
    match = " AND ".join(f"{table.name}.{k} = v.{k}" for k in keys)
    return (
        f"UPDATE {table.name} SET {assignments} FROM unnest({params}) "
        f"AS v({', '.join(names)}) WHERE {match}"
    )


Part = tuple[sa.Table, str, tuple[str, ...]]  # (table, "insert" | "update", columns)


@lru_cache(maxsize=256)
def combined_sql(parts: tuple[Part, ...]) -> str:
    """Every part as a data-modifying CTE of one statement: one round trip for all the writes.
    PostgreSQL runs each CTE once, on one snapshot; the parts touch different rows, and foreign
    keys are checked at the end of the statement, when the rows they point at are there."""
    ctes, first = [], 1
    for i, (table, kind, names) in enumerate(parts):
        build = _insert if kind == "insert" else _update
        ctes.append(f"w{i} AS ({build(table, names, first)})")
        first += len(names)
    return f"WITH {', '.join(ctes)} SELECT 1"


def arrays(
    table: sa.Table, names: tuple[str, ...], rows: Sequence[dict[str, Any]]
) -> list[list[Any]]:
    """The rows as one list per column, JSON columns serialised."""
    out = []
    for name in names:
        if _is_json(table.c[name]):
            out.append([orjson.dumps(row[name]).decode() for row in rows])
        else:
            out.append([row[name] for row in rows])
    return out


async def write(
    conn: asyncpg.Connection, parts: Sequence[tuple[sa.Table, str, Sequence[dict[str, Any]]]]
) -> None:
    """Insert or update (by `id`) each part's rows, all in one statement."""
    shaped: list[Part] = []
    args: list[list[Any]] = []
    for table, kind, rows in parts:
        if rows:
            names = tuple(rows[0])
            shaped.append((table, kind, names))
            args.extend(arrays(table, names, rows))
    if shaped:
        await conn.execute(combined_sql(tuple(shaped)), *args)
