"""Set-based writes for PostgreSQL: one INSERT … SELECT FROM unnest(arrays) or one UPDATE … FROM
unnest(arrays) per table, straight on the asyncpg connection under SQLAlchemy's transaction.

SQLAlchemy's executemany binds and converts every row through its compiled statement; for the
hundreds of rows a batch writes that is most of the batch's CPU. Here each column travels as one
array, and asyncpg keeps the statement prepared on the connection.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.tables import UtcDateTime

# JSON travels as text and is cast in SQL: the same text SQLAlchemy's JSON type would send
ARRAY_TYPES: tuple[tuple[type[Any], str], ...] = (
    (sa.JSON, "text[]"), (sa.Boolean, "boolean[]"), (sa.BigInteger, "bigint[]"),
    (sa.Integer, "bigint[]"), (UtcDateTime, "timestamptz[]"), (sa.String, "text[]"),
    (sa.Text, "text[]"),
)


def _array_type(column: sa.Column[Any]) -> str:
    for python_type, array in ARRAY_TYPES:
        if isinstance(column.type, python_type):
            return array
    raise TypeError(f"Expected a column type with an array form, got {column.type!r} "
                    f"for {column.table.name}.{column.name}")


def _value(column: sa.Column[Any], value: Any) -> Any:
    return json.dumps(value) if isinstance(column.type, sa.JSON) else value


@lru_cache(maxsize=None)
def _insert_sql(table: sa.Table, names: tuple[str, ...]) -> str:
    columns = [table.c[n] for n in names]
    selected = ", ".join(f"v.{n}::json" if isinstance(c.type, sa.JSON) else f"v.{n}"
                         for n, c in zip(names, columns))
    arrays = ", ".join(f"${i}::{_array_type(c)}" for i, c in enumerate(columns, 1))
    return (f"INSERT INTO {table.name} ({', '.join(names)}) SELECT {selected} "
            f"FROM unnest({arrays}) AS v({', '.join(names)})")


@lru_cache(maxsize=None)
def _update_sql(table: sa.Table, names: tuple[str, ...]) -> str:
    columns = [table.c[n] for n in names]
    assignments = ", ".join(
        f"{n} = v.{n}::json" if isinstance(c.type, sa.JSON) else f"{n} = v.{n}"
        for n, c in zip(names, columns) if n != "id")
    arrays = ", ".join(f"${i}::{_array_type(c)}" for i, c in enumerate(columns, 1))
    return (f"UPDATE {table.name} SET {assignments} FROM unnest({arrays}) "
            f"AS v({', '.join(names)}) WHERE {table.name}.id = v.id")


async def _run(conn: AsyncConnection, sql: str, table: sa.Table, names: tuple[str, ...],
               rows: Sequence[dict[str, Any]]) -> None:
    columns = [table.c[n] for n in names]
    arrays = [[_value(c, row[n]) for row in rows] for n, c in zip(names, columns)]
    await fetch(conn, sql, *arrays)


async def fetch(conn: AsyncConnection, sql: str, *args: Any) -> list[Any]:
    """A statement on the transaction's asyncpg connection, its errors as SQLAlchemy's."""
    raw = await conn.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection  # type: ignore[assignment]
    if not driver.is_in_transaction():
        # SQLAlchemy begins lazily, on its first statement: without it this one would
        # autocommit on its own, outside the transaction SQLAlchemy later commits
        await conn.execute(sa.text("SELECT 1"))
    try:
        return await driver.fetch(sql, *args)  # type: ignore[no-any-return]
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise sa_exc.IntegrityError(sql, None, exc) from exc
    except asyncpg.PostgresError as exc:  # e.g. a deadlock: the writer retries by its sqlstate
        raise sa_exc.DBAPIError(sql, None, exc) from exc
    except (asyncpg.InterfaceError, OSError) as exc:
        raise sa_exc.OperationalError(sql, None, exc) from exc


async def insert_rows(conn: AsyncConnection, table: sa.Table,
                      rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        names = tuple(rows[0])
        await _run(conn, _insert_sql(table, names), table, names, rows)


async def update_rows(conn: AsyncConnection, table: sa.Table,
                      rows: Sequence[dict[str, Any]]) -> None:
    """Rows keyed by the table's `id` column, every given column set."""
    if rows:
        names = tuple(rows[0])
        await _run(conn, _update_sql(table, names), table, names, rows)
