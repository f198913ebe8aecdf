"""How configured URLs are shown and refused: passwords masked, SQLite files by their absolute
path, unsupported schemes and drivers refused by name before any driver is imported."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import masked_url
from storage.database_url import (
    DEFAULT_DATABASE_URL,
    DatabaseSetupError,
    check_supported,
    describe,
    masked,
    sqlite_path,
)


def test_database_passwords_are_masked_as_written() -> None:
    assert masked("postgresql://cs:hunter2@db:5432/cs") == "postgresql://cs:***@db:5432/cs"
    assert masked("postgresql+asyncpg://cs:p%40ss@db/cs") == "postgresql+asyncpg://cs:***@db/cs"
    assert masked("postgresql://cs@db/cs") == "postgresql://cs@db/cs"
    assert "hunter2" not in masked("not a url:hunter2@x")


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://user:hunter2@r:6380", "rediss://user:***@r:6380"),
        ("redis+cluster://u:hun@ter2@r1:6379,r2:6379", "redis+cluster://u:***@r1:6379,r2:6379"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_other_urls_are_masked(url: str, shown: str) -> None:
    assert masked_url(url) == shown


def test_sqlite_files_are_named_by_their_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    default = tmp_path / "data" / "creditstream.db"
    assert sqlite_path(DEFAULT_DATABASE_URL) == default
    assert describe(DEFAULT_DATABASE_URL).startswith(f"SQLite file {default} (")
    assert "relative to the working directory" in describe(DEFAULT_DATABASE_URL)
    assert describe(f"sqlite:///{tmp_path}/x.db") == f"SQLite file {tmp_path}/x.db"
    assert sqlite_path("sqlite+aiosqlite:///:memory:") is None
    assert sqlite_path("postgresql://a@b/c") is None


@pytest.mark.parametrize(
    "url, says",
    [
        ("mysql://u:hunter2@h/db", "mysql is not supported"),
        ("mssql+pyodbc://u:hunter2@h/db", "mssql is not supported"),
        ("postgresql+psycopg2://u:hunter2@h/db", "the psycopg2 driver is not supported"),
        ("sqlite+pysqlite:///x.db", "the pysqlite driver is not supported"),
        ("hunter2", "is not a database URL"),
    ],
)
def test_unsupported_urls_are_refused_by_name(url: str, says: str) -> None:
    with pytest.raises(DatabaseSetupError) as refused:
        check_supported(url)
    message = str(refused.value)
    assert message.startswith("CREDITSTREAM_DATABASE_URL=") and says in message, message
    assert "\n" not in message
    assert url == "hunter2" or "hunter2" not in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@h/db",
        "postgres://u@h/db",
        "postgresql+asyncpg://u@h/db",
        "sqlite:///x.db",
        "sqlite+aiosqlite:///x.db",
        DEFAULT_DATABASE_URL,
    ],
)
def test_supported_urls_pass(url: str) -> None:
    check_supported(url)
