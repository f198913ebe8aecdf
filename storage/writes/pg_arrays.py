"""Set-based writes for PostgreSQL: one INSERT … SELECT FROM unnest(arrays) or one UPDATE … FROM
unnest(arrays) per table, on the batch's asyncpg connection.

Each column travels as one array, so a batch of hundreds of rows is one statement per table, and
asyncpg keeps the statement prepared on the connection. A column whose rows all hold the same
value (a batch's `created_at`, a status, the NULLs) travels as that one value instead: asyncpg
encodes every array element on its own (about 1 µs for a timestamp, 0.6 for a text), and
PostgreSQL unnests one array fewer. The SQL is derived from the SQLAlchemy tables, so the schema
stays defined in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import asyncpg
import orjson
import sqlalchemy as sa

from storage.column_types import UtcDateTime

# each column type's PostgreSQL name (the batch's typed NULLs use it too: pg_statements.py)
SQL_TYPES: tuple[tuple[type[Any], str], ...] = (
    (sa.JSON, "json"),
    (sa.Boolean, "boolean"),
    (sa.BigInteger, "bigint"),
    (sa.Integer, "bigint"),
    (UtcDateTime, "timestamptz"),
    (sa.String, "text"),
    (sa.Text, "text"),
)


def sql_type(column: sa.Column[Any]) -> str:
    for python_type, name in SQL_TYPES:
        if isinstance(column.type, python_type):
            return name
    raise TypeError(
        f"Expected a column type with a PostgreSQL name, got {column.type!r} "
        f"for {column.table.name}.{column.name}"
    )


def _sent_as(column: sa.Column[Any]) -> str:
    """The type a column's values travel as: JSON as text, cast in SQL (the same text
    SQLAlchemy's JSON type would send)."""
    return "text" if _is_json(column) else sql_type(column)


def _is_json(column: sa.Column[Any]) -> bool:
    return isinstance(column.type, sa.JSON)


def _value(column: sa.Column[Any], param: str, single: bool) -> str:
    """How the statement reads a column: `v.name` from the unnested arrays, or its one value."""
    source = f"{param}::{_sent_as(column)}" if single else f"v.{column.name}"
    return f"{source}::json" if _is_json(column) else source


def _unnested(columns: list[sa.Column[Any]], params: list[str], singles: tuple[bool, ...]) -> str:
    arrays = [
        (f"{p}::{_sent_as(c)}[]", c.name)
        for c, p, single in zip(columns, params, singles, strict=True)
        if not single
    ]
    return f"unnest({', '.join(a for a, _ in arrays)}) AS v({', '.join(n for _, n in arrays)})"


def _insert(
    table: sa.Table, names: tuple[str, ...], singles: tuple[bool, ...], first: int, gate: str
) -> str:
    columns = [table.c[n] for n in names]
    params = [f"${i}" for i in range(first, first + len(names))]
    selected = ", ".join(
        _value(c, p, single) for c, p, single in zip(columns, params, singles, strict=True)
    )
    return (
        f"INSERT INTO {table.name} ({', '.join(names)}) SELECT {selected} "
        f"FROM {_unnested(columns, params, singles)}{f' WHERE {gate}' if gate else ''}"
    )


def _update(
    table: sa.Table, names: tuple[str, ...], singles: tuple[bool, ...], first: int, gate: str
) -> str:
    """Rows matched on the table's primary key; every other column given is set."""
    keys = {c.name for c in table.primary_key.columns}
    columns = [table.c[n] for n in names]
    params = [f"${i}" for i in range(first, first + len(names))]
    read = {
        c.name: _value(c, p, single) for c, p, single in zip(columns, params, singles, strict=True)
    }
    assignments = ", ".join(f"{n} = {read[n]}" for n in names if n not in keys)
    match = " AND ".join(f"{table.name}.{k} = {read[k]}" for k in names if k in keys)
    return (
        f"UPDATE {table.name} SET {assignments} FROM {_unnested(columns, params, singles)} "
        f"WHERE {match}{f' AND {gate}' if gate else ''}"
    )


def _upsert(
    table: sa.Table, names: tuple[str, ...], singles: tuple[bool, ...], first: int, gate: str
) -> str:
    """An insert whose row replaces one already there with its primary key."""
    keys = [c.name for c in table.primary_key.columns]
    replaced = ", ".join(f"{n} = EXCLUDED.{n}" for n in names if n not in keys)
    return (
        f"{_insert(table, names, singles, first, gate)} "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {replaced}"
    )


# (table, "insert" | "update" | "upsert", columns, which columns travel as one value)
Part = tuple[sa.Table, str, tuple[str, ...], tuple[bool, ...]]
BUILDERS = {"insert": _insert, "update": _update, "upsert": _upsert}


@dataclass(frozen=True)
class Versions:
    """What a write reports of one table's rows: `returning`, a RETURNING list read from every
    row it inserts or updates there, and, when the write is to count only if some rows are
    still at the versions its caller read, `guard`, a locking SELECT of those rows (named by
    the statement's first parameter, a text[]) with the same columns, and `current`, whether
    the guard found each of them at its version (given as the second and third parameters).
    Both come back as rows of (written, the columns...): written is false for the guard's."""

    table: str
    returning: str
    guard: str
    current: str


@lru_cache(maxsize=256)
def combined_sql(
    parts: tuple[Part, ...], versions: Versions | None = None, guarded: bool = False
) -> str:
    """Every part as a data-modifying CTE of one statement: one round trip for all the writes.
    PostgreSQL runs each CTE once, on one snapshot; the parts touch different rows, and foreign
    keys are checked at the end of the statement, when the rows they point at are there. The
    statement answers with `versions`' rows: the guard's, then those written. `guarded`, every
    write is gated on the guard's rows being current: none runs before the guard has locked
    them (each one reads the gate, which reads the guard), and none writes a row unless all of
    them are current, so a stale state leaves nothing to clash with what was committed since."""
    ctes: list[str] = []
    answers: list[str] = []
    first, gate = 1, ""
    if guarded and versions is not None:
        ctes += [
            f"guard AS MATERIALIZED ({versions.guard})",
            f"current AS MATERIALIZED ({versions.current})",
        ]
        answers.append("SELECT false AS written, * FROM guard")
        first, gate = 4, "(SELECT ok FROM current)"
    for i, (table, kind, names, singles) in enumerate(parts):
        sql = BUILDERS[kind](table, names, singles, first, gate)
        if versions is not None and table.name == versions.table:
            sql = f"{sql} RETURNING {versions.returning}"
            answers.append(f"SELECT true AS written, * FROM w{i}")
        ctes.append(f"w{i} AS ({sql})")
        first += len(names)
    answer = " UNION ALL ".join(answers) if answers else "SELECT NULL::boolean WHERE false"
    return f"WITH {', '.join(ctes)} {answer}" if ctes else answer


def arrays(
    table: sa.Table, names: tuple[str, ...], rows: Sequence[dict[str, Any]]
) -> tuple[tuple[bool, ...], list[Any]]:
    """The rows as one list per column, JSON columns serialised; a column whose rows all hold
    the same value as that value alone (flagged), except the first, which keeps the row count."""
    out: list[Any] = []
    singles: list[bool] = []
    for position, name in enumerate(names):
        if _is_json(table.c[name]):
            values = [orjson.dumps(row[name]).decode() for row in rows]
        else:
            values = [row[name] for row in rows]
        # `count` compares by identity first, then ==; a column holds values of one type, so
        # equal means the same value to PostgreSQL (an aware datetime: the same instant)
        single = position > 0 and values.count(values[0]) == len(values)
        singles.append(single)
        out.append(values[0] if single else values)
    return tuple(singles), out


async def write(
    conn: asyncpg.Connection,
    parts: Sequence[tuple[sa.Table, str, Sequence[dict[str, Any]]]],
    versions: Versions | None = None,
    expected: Sequence[tuple[str, int, int]] = (),
) -> list[asyncpg.Record]:
    """Insert, update (by `id`) or upsert (by the primary key) each part's rows, all in one
    statement; with `versions`, answer the versions of its table's rows written, and with
    `expected` (a row's id and its two version numbers) lock those rows first, report them,
    and write nothing unless each is at its version. Without either, nothing is sent when
    there is nothing to write."""
    shaped: list[Part] = []
    args: list[Any] = [list(column) for column in zip(*expected, strict=True)] if expected else []
    for table, kind, rows in parts:
        if rows:
            names = tuple(rows[0])
            singles, columns = arrays(table, names, rows)
            shaped.append((table, kind, names, singles))
            args.extend(columns)
    if not (shaped or expected):
        return []
    sql = combined_sql(tuple(shaped), versions, bool(expected))
    if versions is None:
        await conn.execute(sql, *args)
        return []
    return list(await conn.fetch(sql, *args))
