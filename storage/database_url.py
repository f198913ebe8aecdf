"""What `CREDITSTREAM_DATABASE_URL` names, said so a person can act on it: the URL with its
password masked (a SQLite file by its absolute path), the schemes creditstream can use, and
one line for each way a first connection fails — the cause and what to do, never a traceback."""

from __future__ import annotations

import socket
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

SETTING = "CREDITSTREAM_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///data/creditstream.db"
# what each supported backend must be driven by (the plain names are read as these)
DRIVERS = {"postgresql": "asyncpg", "sqlite": "aiosqlite"}
PLAIN_SCHEMES = {
    "postgresql://": "postgresql+asyncpg://",
    "postgres://": "postgresql+asyncpg://",
    "sqlite://": "sqlite+aiosqlite://",
}
# transaction-mode poolers a URL may declare with `pooler=` (creditstream's parameter, not the
# driver's: it is taken off the URL before connecting)
POOLERS = ("pgbouncer",)
MIGRATE_HINT = "run `creditstream migrate` with the same CREDITSTREAM_DATABASE_URL"


class DatabaseSetupError(Exception):
    """The configured database cannot be used as it is; the message is one line that names
    the setting (password masked), the cause, and what to do."""


def normalise_url(url: str) -> str:
    """Accept the plain driver names operators tend to write and pick the async drivers."""
    for plain, async_ in PLAIN_SCHEMES.items():
        if url.startswith(plain):
            return async_ + url[len(plain) :]
    return url


def split_pooler(url: str) -> tuple[str, str | None]:
    """The URL without its `pooler=` parameter (creditstream's own, not the driver's), and the
    pooler it declares: `pgbouncer` (or any transaction-mode pooler) or None."""
    parsed = make_url(url)
    pooler = parsed.query.get("pooler")
    if pooler is None:
        return url, None
    if not isinstance(pooler, str) or pooler not in POOLERS:
        raise DatabaseSetupError(
            f"{SETTING}: pooler={pooler!r} is not known; write "
            f"pooler=pgbouncer for a pooler in transaction mode"
        )
    rest = parsed.difference_update_query(["pooler"])
    return rest.render_as_string(hide_password=False), pooler


def pooler_connect_args(pooler: str | None) -> dict[str, Any]:
    """A transaction-mode pooler keeps no prepared statement from one transaction to the next
    (pgbouncer 1.18 none at all): asyncpg's statement cache off, SQLAlchemy's too, and the
    statements SQLAlchemy still prepares named uniquely, so two clients sharing a server
    connection never collide on a name."""
    if pooler is None:
        return {}
    return {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": lambda: f"__cs_{uuid.uuid4().hex}__",
    }


def _parse(url: str) -> URL | None:
    try:
        return make_url(normalise_url(url))
    except (ArgumentError, ValueError):
        return None


def sqlite_path(url: str) -> Path | None:
    """The absolute path of a SQLite file database (relative paths are relative to the
    working directory), or None for any other database."""
    parsed = _parse(url)
    if parsed is None or parsed.get_backend_name() != "sqlite":
        return None
    if parsed.database in (None, "", ":memory:") or (parsed.database or "").startswith("file:"):
        return None
    return Path(parsed.database or "").resolve()


def masked(url: str) -> str:
    """The URL as it may be printed (as it was written): its password replaced by ***."""
    try:
        parsed: URL | None = make_url(url)
    except (ArgumentError, ValueError):
        parsed = None
    if parsed is None:
        return "<unparsable URL>" if "@" in url else url
    return parsed.render_as_string(hide_password=True)


def describe(url: str) -> str:
    """Where the database is, for messages and the start-up summary."""
    path = sqlite_path(url)
    if path is not None:
        default = (
            " (CREDITSTREAM_DATABASE_URL unset: the default path is relative to the "
            "working directory)"
            if url == DEFAULT_DATABASE_URL
            else ""
        )
        return f"SQLite file {path}{default}"
    return masked(url)


def _named(url: str) -> str:
    path = sqlite_path(url)
    if path is not None and url == DEFAULT_DATABASE_URL:
        return (
            f"the default database, SQLite file {path} ({SETTING} unset: relative to the "
            f"working directory)"
        )
    if path is not None:
        return f"{SETTING}={masked(url)} (SQLite file {path})"
    return f"{SETTING}={masked(url)}"


def check_supported(url: str) -> None:
    """Refuse, in one line, a URL creditstream cannot drive (before any driver is imported:
    `mysql://` would otherwise end in "No module named 'MySQLdb'")."""
    parsed = _parse(url)
    if parsed is None:
        raise DatabaseSetupError(
            f"{SETTING}={masked(url)} is not a database URL: use postgresql://user:password@"
            f"host:5432/name or sqlite:///path/to/creditstream.db"
        )
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend not in DRIVERS:
        raise DatabaseSetupError(
            f"{SETTING}={masked(url)}: {backend} is not supported; creditstream runs on "
            f"PostgreSQL (postgresql://user:password@host:5432/name) or SQLite "
            f"(sqlite:///path/to/creditstream.db)"
        )
    if driver != DRIVERS[backend]:
        raise DatabaseSetupError(
            f"{SETTING}={masked(url)}: the {driver} driver is not supported; write "
            f"{backend}:// (creditstream drives {backend} with {DRIVERS[backend]})"
        )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what it wraps (SQLAlchemy's `orig`) and what caused it, once each."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        todo += [
            orig if isinstance(orig, BaseException) else None,
            current.__cause__,
            current.__context__,
        ]


def _hosts(parsed: URL) -> str:
    """host:port, or every host of a multi-host URL (`?host=h1:5432&host=h2:5432`)."""
    several = parsed.query.get("host")
    if several:
        return ", ".join([several] if isinstance(several, str) else several)
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


def explain(exc: BaseException, url: str) -> DatabaseSetupError | None:
    """One line for a failure to reach or use the configured database, or None when the
    failure is something else (which then reports as it always did)."""
    if isinstance(exc, DatabaseSetupError):
        return exc
    parsed = _parse(url)
    host = _hosts(parsed) if parsed else "?"
    user = parsed.username if parsed else None
    name = parsed.database if parsed else None
    where = _named(url)
    for cause in _causes(exc):
        text = str(cause).splitlines()[0][:200] if str(cause) else type(cause).__name__
        if isinstance(cause, ConnectionRefusedError):
            return DatabaseSetupError(
                f"{where}: nothing accepts connections at {host} (connection refused): start "
                f"PostgreSQL there, or correct the host and port in {SETTING}"
            )
        if isinstance(cause, socket.gaierror):
            return DatabaseSetupError(
                f"{where}: the host {parsed.host if parsed else '?'!r} cannot be resolved "
                f"({cause.strerror}): correct the host name in {SETTING}"
            )
        if isinstance(cause, asyncpg.InvalidPasswordError):
            return DatabaseSetupError(
                f"{where}: PostgreSQL refused the password of user {user!r}: correct the user "
                f"and password in {SETTING}"
            )
        if isinstance(cause, asyncpg.InvalidAuthorizationSpecificationError):
            return DatabaseSetupError(
                f"{where}: PostgreSQL refused the login ({text}): correct the user in "
                f"{SETTING}, or create that role"
            )
        if isinstance(cause, asyncpg.InvalidCatalogNameError):
            return DatabaseSetupError(
                f"{where}: the database {name!r} does not exist on {host}: create it "
                f"(createdb {name}), then {MIGRATE_HINT}"
            )
        if isinstance(cause, asyncpg.UndefinedTableError) or (
            isinstance(cause, sqlite3.OperationalError) and "no such table" in text
        ):
            return DatabaseSetupError(
                f"{where}: the database has no creditstream tables yet ({text}): {MIGRATE_HINT}"
            )
        if isinstance(cause, sqlite3.OperationalError) and "unable to open" in text:
            return DatabaseSetupError(
                f"{where}: the SQLite file cannot be opened ({text}): check that its directory "
                f"exists and is writable, or correct the path in {SETTING}"
            )
        if isinstance(cause, TimeoutError):
            return DatabaseSetupError(
                f"{where}: no answer from {host} in time: check that PostgreSQL runs there "
                f"and that nothing blocks the port"
            )
        if isinstance(cause, OSError) and cause.errno is not None:
            return DatabaseSetupError(
                f"{where}: cannot connect to {host} ({cause.strerror or text}): check the "
                f"host and port in {SETTING}"
            )
    return None


def missing_sqlite_file(url: str) -> DatabaseSetupError | None:
    """A SQLite file that does not exist yet: a command that only reads or writes rows says so
    (with where it looked) instead of creating an empty file in the working directory."""
    path = sqlite_path(url)
    if path is None or path.exists():
        return None
    return DatabaseSetupError(
        f"{_named(url)}: no database there yet: run `creditstream migrate` in the directory "
        f"you serve from, or set {SETTING} to the database the server uses"
    )
