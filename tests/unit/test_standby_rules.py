"""The parts of standby reads that need no database: which URLs CREDITSTREAM_DATABASE_READ_URL
names, and the primary-position round trip shared only by the reads that asked before it began."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from config import ConfigError, Settings
from storage.standby import PrimaryPosition, Standby, Standbys, split_read_urls


def test_a_comma_separated_list_names_each_standby() -> None:
    urls = split_read_urls(
        "postgresql://u:p@standby-1:5432/cs, postgres://u:p@standby-2:5432/cs,"
        "postgresql+asyncpg://u@s3/cs"
    )
    assert urls == (
        "postgresql://u:p@standby-1:5432/cs",
        "postgres://u:p@standby-2:5432/cs",
        "postgresql+asyncpg://u@s3/cs",
    )
    assert split_read_urls("") == split_read_urls(None) == ()


def test_a_multi_host_url_stays_one_entry() -> None:
    one = "postgresql://u@/cs?host=s1:5432&host=s2:5432&target_session_attrs=standby"
    assert split_read_urls(f"{one},postgresql://u@s3/cs") == (one, "postgresql://u@s3/cs")


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("sqlite:///data/x.db", "standbys are PostgreSQL"),
        ("mysql://u@h/db", "mysql is not supported"),
        ("not a url", "is not a database URL"),
    ],
)
def test_what_cannot_be_a_standby_stops_the_start_naming_the_setting(value: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"CREDITSTREAM_DATABASE_READ_URL": value})
    assert "CREDITSTREAM_DATABASE_READ_URL" in str(refused.value)
    assert says in str(refused.value)


class ScriptedPrimary:
    """A primary position that moves by one per fetch; each fetch waits to be released."""

    def __init__(self) -> None:
        self.position = 0
        self.release = asyncio.Event()

    async def fetch(self) -> int:
        self.position += 1
        seen = self.position
        await self.release.wait()
        self.release.clear()
        return seen


async def test_reads_asking_together_share_one_round_trip() -> None:
    primary = ScriptedPrimary()
    position = PrimaryPosition(primary.fetch)
    reads = [asyncio.create_task(position.current()) for _ in range(50)]
    await asyncio.sleep(0)
    primary.release.set()
    assert await asyncio.gather(*reads) == [1] * 50
    assert position.fetches == 1


async def test_a_read_never_takes_a_position_fetched_before_it_arrived() -> None:
    primary = ScriptedPrimary()
    position = PrimaryPosition(primary.fetch)
    early = asyncio.create_task(position.current())
    await asyncio.sleep(0.01)  # its round trip is under way: a commit may be acknowledged now
    late = [asyncio.create_task(position.current()) for _ in range(10)]
    await asyncio.sleep(0.01)
    primary.release.set()
    assert await early == 1
    await asyncio.sleep(0.01)
    primary.release.set()
    assert await asyncio.gather(*late) == [2] * 10  # the next round trip, started after them
    assert position.fetches == 2


async def test_a_failed_round_trip_fails_its_reads_and_the_next_one_tries_again() -> None:
    calls = 0

    async def fetch() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("primary down")
        return 7

    position = PrimaryPosition(fetch)
    with pytest.raises(ConnectionError):
        await position.current()
    assert await position.current() == 7


async def test_waiters_of_a_fetch_cancelled_at_shutdown_do_not_hang() -> None:
    primary = ScriptedPrimary()
    position = PrimaryPosition(primary.fetch)
    read = asyncio.create_task(position.current())
    await asyncio.sleep(0.01)
    assert position._serving is not None
    position._serving.cancel()
    with pytest.raises(RuntimeError, match="stopped"):
        await asyncio.wait_for(read, 1)


async def test_a_standby_connection_left_broken_by_its_stop_sends_the_read_to_the_primary() -> None:
    # seen when a standby stopped mid-load: asyncpg's own state error, not a PostgreSQL one
    standby = Standby.from_url("postgresql://u@127.0.0.1:1/cs", pool_size=1)
    standbys = Standbys([standby], primary_position=lambda: asyncio.sleep(0, 0))

    async def attempt(_: Standby) -> str:
        raise asyncpg.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        )

    async def on_primary() -> str:
        return "from the primary"

    try:
        assert await standbys._route(attempt, on_primary) == "from the primary"
        assert standby.down_until > 0  # skipped for STANDBY_RETRY_S
    finally:
        await standbys.dispose()
