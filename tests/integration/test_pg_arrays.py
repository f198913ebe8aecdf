"""Set-based writes on PostgreSQL: whatever mix of shared and differing values a batch's columns
hold, every row reads back as it was given — a column whose rows share one value travels as that
value alone, the others as arrays."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from storage.column_types import UtcDateTime
from storage.writes import pg_arrays

metadata = sa.MetaData()
things = sa.Table(
    "things",
    metadata,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("owner", sa.String),
    sa.Column("amount", sa.BigInteger),
    sa.Column("paid", sa.Boolean),
    sa.Column("details", sa.JSON),
    sa.Column("at", UtcDateTime),
)
CREATE = (
    "CREATE TABLE things (id TEXT PRIMARY KEY, owner TEXT, amount BIGINT, paid BOOLEAN, "
    "details JSON, at TIMESTAMPTZ)"
)
NOW = datetime(2026, 12, 4, 5, 0, 0, 123456, tzinfo=UTC)
# small pools, so that a batch's column often holds one value for every row, and often not
POOLS: dict[str, list[Any]] = {
    "owner": ["acct-a", "acct-b", None, ""],
    "amount": [0, 1, 2**40, -5, None],
    "paid": [True, False, None],
    "details": [{}, {"a": 1}, [], None, {"b": [1, "x"]}],
    "at": [
        NOW,
        NOW + timedelta(microseconds=1),
        NOW.astimezone(timezone(timedelta(hours=1))),
        None,
    ],
}


def rows_of(rng: random.Random, start: int, count: int) -> list[dict[str, Any]]:
    shared = {name: rng.choice(pool) for name, pool in POOLS.items()}
    rows = []
    for i in range(count):
        row: dict[str, Any] = {"id": f"t{start + i}"}
        for name, pool in POOLS.items():
            row[name] = shared[name] if rng.random() < 0.6 else rng.choice(pool)
        rows.append(row)
    return rows


async def read_back(conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    import json

    found = {}
    for record in await conn.fetch("SELECT * FROM things"):
        row = dict(record)
        row["details"] = None if row["details"] is None else json.loads(row["details"])
        found[row["id"]] = row
    return found


@pytest.fixture
async def conn(pg_url: str) -> Any:
    connection = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    await connection.execute(CREATE)
    yield connection
    await connection.close()


async def test_rows_read_back_as_given_whatever_their_columns_share(conn: Any) -> None:
    rng = random.Random(19)
    expected: dict[str, dict[str, Any]] = {}
    for case in range(150):
        inserted = rows_of(rng, 1000 * case, rng.choice([1, 2, 3, 17]))
        changed = [
            {"id": row_id, **{n: rng.choice(POOLS[n]) for n in ("amount", "details", "at")}}
            for row_id in rng.sample(sorted(expected), min(len(expected), rng.choice([1, 2, 9])))
        ]
        parts = [(things, "insert", inserted)]
        if changed:
            parts.append((things, "update", changed))
        await pg_arrays.write(conn, parts)
        for row in inserted:
            expected[row["id"]] = dict(row)
        for row in changed:
            expected[row["id"]].update(row)
    assert await read_back(conn) == expected


async def test_a_shared_value_travels_once_and_the_first_column_keeps_the_row_count(
    conn: Any,
) -> None:
    rows = [{"id": f"t{i}", "owner": "same", "amount": 7, "at": NOW} for i in range(3)]
    singles, columns = pg_arrays.arrays(things, tuple(rows[0]), rows)
    assert singles == (False, True, True, True)
    assert columns == [["t0", "t1", "t2"], "same", 7, NOW]
    sql = pg_arrays.combined_sql(((things, "insert", tuple(rows[0]), singles),))
    assert "unnest($1::text[]) AS v(id)" in sql
    await pg_arrays.write(conn, [(things, "insert", rows)])
    assert await conn.fetchval("SELECT count(*) FROM things WHERE owner = 'same'") == 3


async def test_a_column_with_one_differing_value_stays_an_array(conn: Any) -> None:
    rows = [{"id": f"t{i}", "amount": 5, "paid": None} for i in range(4)]
    rows[3]["paid"] = False
    singles, columns = pg_arrays.arrays(things, tuple(rows[0]), rows)
    assert singles == (False, True, False)
    await pg_arrays.write(conn, [(things, "insert", rows)])
    assert [r["paid"] for r in await conn.fetch("SELECT paid FROM things ORDER BY id")] == [
        None,
        None,
        None,
        False,
    ]
