"""asyncpg records to core's objects, by column position: a batch maps hundreds of rows, and
each went through a namespace of attributes first, built and dropped per row.

Positions come from the tables' column order, the order the batch's SELECTs list them in
(storage/writes/pg_statements.py), so a new column needs no second list here. A locking
statement's rows, accounts among the rows read with them, are sorted out here too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from operator import itemgetter
from typing import Any

import asyncpg
import sqlalchemy as sa

from core.account import Account
from core.model import Grant, Hold
from storage.tables import accounts, grants, holds


def _positions(table: sa.Table, names: tuple[str, ...], offset: int = 0) -> Any:
    """What picks these columns out of a record, in this order, in C."""
    column_names = [c.name for c in table.c]
    return itemgetter(*(offset + column_names.index(n) for n in names))


# Grant's fields in the order its constructor takes them
_GRANT = _positions(
    grants,
    ("id", "account_id", "amount", "remaining", "reason", "kind", "expires_at", "created_at")
    + ("ref", "reserved"),
)
_ACCOUNT_NAMES = tuple(c.name for c in accounts.c if c.name != "updated_at")
_ACCOUNT = _positions(accounts, _ACCOUNT_NAMES)
_HOLD_NAMES = tuple(c.name for c in holds.c)
# the hold half of the grants-and-holds read, the account half of the locked-accounts-and-grants
# read: their columns follow the grant's
_HOLD_AFTER_GRANT = _positions(holds, _HOLD_NAMES, len(grants.c))
_ACCOUNT_AFTER_GRANT = _positions(accounts, _ACCOUNT_NAMES, len(grants.c))
# the account third of the locked-accounts, grants-and-holds read: after a grant's and a hold's
_ACCOUNT_AFTER_GRANT_AND_HOLD = _positions(accounts, _ACCOUNT_NAMES, len(grants.c) + len(holds.c))


def grant(record: asyncpg.Record) -> Grant:
    """A grant from a record with the grants table's columns first, in table order."""
    return Grant(*_GRANT(record))


def account(record: asyncpg.Record) -> Account:
    """An account from a record with the accounts table's columns, in table order."""
    return _account(_ACCOUNT(record))


def account_after_grant(record: asyncpg.Record) -> Account:
    """An account from the account half of a locked-accounts-and-grants record."""
    return _account(_ACCOUNT_AFTER_GRANT(record))


def account_after_grant_and_hold(record: asyncpg.Record) -> Account:
    """An account from the account third of a locked-accounts, grants-and-holds record."""
    return _account(_ACCOUNT_AFTER_GRANT_AND_HOLD(record))


def _account(values: tuple[Any, ...]) -> Account:
    row = dict(zip(_ACCOUNT_NAMES, values, strict=True))
    usage = row.pop("feature_usage")
    return Account(
        account_id=row.pop("id"),
        loaded_seq=row["seq"],
        feature_usage=dict(usage) if isinstance(usage, dict) else {},
        **row,
    )


def hold_after_grant(record: asyncpg.Record) -> Hold:
    """A hold from the hold half of a grants-and-holds record."""
    row = dict(zip(_HOLD_NAMES, _HOLD_AFTER_GRANT(record), strict=True))
    return Hold(
        hold_id=row.pop("id"),
        funding=list(row.pop("funding") or []),
        allocation=list(row.pop("allocation") or []),
        metadata=dict(row.pop("metadata") or {}),
        price=dict(row.pop("price") or {}),
        **row,
    )


async def locked_and_read(
    records: Iterable[asyncpg.Record],
    account_of: Callable[[asyncpg.Record], Account],
    unchanged_at: int,
    read_again: Callable[[list[str]], Awaitable[list[asyncpg.Record]]],
) -> tuple[dict[str, Account], list[asyncpg.Record]]:
    """A locking statement's rows (pg_statements._locked) as the accounts it locked and the rows
    it read with them; those rows read again, under the lock, when any account's locked version
    is not its snapshot's (the lock waited for a commit that may have changed them)."""
    found: dict[str, Account] = {}
    read: list[asyncpg.Record] = []
    current = True
    for record in records:
        unchanged = record[unchanged_at]
        if unchanged is None:  # not an account's row
            read.append(record)
            continue
        account = account_of(record)
        found[account.account_id] = account
        current = current and unchanged
    if not current:
        read = await read_again(list(found))
    return found, read


def take_grants(found: dict[str, Account], records: Iterable[asyncpg.Record]) -> None:
    """Rows with a grant's columns first: each grant to its account."""
    for record in records:
        found_grant = grant(record)
        found[found_grant.account_id].grants.append(found_grant)
