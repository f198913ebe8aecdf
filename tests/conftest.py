"""Fixtures are factories that clean up what they made. Each test gets its own database."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from api.context import AppContext
from asgi import create_app
from config import Settings
from storage.keys import create_server_key
from storage.migrate import upgrade_async
from storage.sql import Database
from tests.support import (
    PG_ADMIN_DSN,
    REDIS_URL,
    REQUIRE_SERVICES,
    TEST_SECRET,
    LiveServer,
    MutableClock,
    PrivateRedis,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run the long variants")


def pytest_configure(config: pytest.Config) -> None:
    # the reliability tests append their figures here; the summary below prints them
    if not os.environ.get("CREDITSTREAM_RELIABILITY_REPORT"):
        report = Path(tempfile.gettempdir()) / f"creditstream-reliability-{os.getpid()}.txt"
        report.unlink(missing_ok=True)
        os.environ["CREDITSTREAM_RELIABILITY_REPORT"] = str(report)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    report = Path(os.environ.get("CREDITSTREAM_RELIABILITY_REPORT", ""))
    if report.is_file() and report.stat().st_size:
        terminalreporter.section("reliability figures (docs/RELIABILITY.md)")
        for line in report.read_text().splitlines():
            terminalreporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test's report ends with each running server's log: the servers' own account of
    a closed connection or a 5xx, which is gone once the fixtures clean up."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for server in LiveServer.running:
            report.sections.append((f"server :{server.port} log (end)", server.log_tail()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="long variant: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def unavailable(what: str, exc: BaseException) -> None:
    """With CREDITSTREAM_REQUIRE_SERVICES=1 (CI) a missing service fails the test."""
    message = f"{what} is not reachable: {exc!r}"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


async def _pg_admin(statement: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    name = f"cs_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable("PostgreSQL", exc)
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    yield f"{base}/{name}"
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/creditstream.db"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The engine suite runs on both databases."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/creditstream.db"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await upgrade_async(database_url)
    database = Database.from_url(database_url, pool_size=20)
    yield database
    await database.dispose()


@pytest.fixture
async def pg_db(pg_url: str) -> AsyncIterator[Database]:
    """A migrated PostgreSQL database, for what only PostgreSQL does."""
    await upgrade_async(pg_url)
    database = Database.from_url(pg_url, pool_size=5)
    yield database
    await database.dispose()


@pytest.fixture
def clock() -> MutableClock:
    return MutableClock()


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[..., Settings]:
    def make(database_url: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "user_token_secret": TEST_SECRET,
            "results_dir": str(tmp_path / "results"),
            "sweep_interval_s": 0.05,
        }
        values.update(overrides)
        return Settings(**values)

    return make


class ApiClient:
    """An app running in-process with its lifespan, and an httpx client bound to it."""

    def __init__(self, app: Any, http: httpx.AsyncClient, key: str) -> None:
        self.app, self.http, self.key = app, http, key

    @property
    def ctx(self) -> AppContext:
        ctx: AppContext = self.app.state.ctx
        return ctx

    def server(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def user(self, account_id: str, ttl_s: int = 3600) -> dict[str, str]:
        token, _ = self.ctx.signer.issue(account_id, self.ctx.service.now(), ttl_s)
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def api_factory(
    settings_for: Callable[..., Settings], clock: MutableClock
) -> AsyncIterator[Callable[..., Any]]:
    stack: list[Any] = []

    async def make(database_url: str, run_sweeper: bool = False, **overrides: Any) -> ApiClient:
        app = create_app(
            settings_for(database_url, **overrides), clock=clock, run_sweeper=run_sweeper
        )
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        stack.append(lifespan)
        key = await create_server_key(app.state.ctx.db, "tests")
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://creditstream.test"
        )
        stack.append(http)
        return ApiClient(app, http, key)

    yield make
    for item in reversed(stack):
        if isinstance(item, httpx.AsyncClient):
            await item.aclose()
        else:
            await item.__aexit__(None, None, None)


@pytest.fixture
async def api(api_factory: Callable[..., Any], database_url: str) -> ApiClient:
    """The API on each database (parametrised through `database_url`)."""
    client: ApiClient = await api_factory(database_url)
    return client


@pytest.fixture
def live_server_factory(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def make(database_url: str, **env: str) -> LiveServer:
        server = LiveServer(
            {
                "CREDITSTREAM_DATABASE_URL": database_url,
                "CREDITSTREAM_RESULTS_DIR": str(tmp_path),
                **env,
            }
        )
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def redis_url() -> str:
    """The shared Redis server (fails in CI when it is down)."""
    import redis

    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2) as client:
            client.ping()
    except redis.RedisError as exc:
        unavailable("Redis", exc)
    return REDIS_URL


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own, which the test may stop and start."""
    import shutil

    if shutil.which("redis-server") is None:
        unavailable("redis-server", FileNotFoundError("redis-server"))
    server = PrivateRedis().start()
    yield server
    server.stop()
