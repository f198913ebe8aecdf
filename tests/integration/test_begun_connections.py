"""A write lane's connections kept with their next transaction begun (storage/writes/begun.py):
batches under load start on them, they hold no snapshot, they go back to the pool rolled back
once the lane is idle, and a failure never hands the pool a connection inside a transaction. A
batch of one statement (on remembered accounts) commits by itself and leaves its connection
with no transaction begun; one of several statements on such a connection begins first."""

from __future__ import annotations

import asyncio
import functools

import asyncpg
import pytest
import sqlalchemy as sa

from core.errors import RefundExceedsSpend
from core.events import Event
from core.service import CreditService
from storage.connection_errors import DatabaseUnavailable
from storage.sql import Database
from storage.tables import holds
from storage.writes.batch import Touches
from storage.writes.begun import BegunConnections
from storage.writes.writer import BatchWriter
from tests.support import MutableClock

pytestmark = pytest.mark.postgres


async def _nowhere(events: list[Event]) -> None:
    return None


@pytest.fixture
def service(clock: MutableClock) -> CreditService:
    from asgi import load_catalogue

    return CreditService(clock, load_catalogue(None))


async def _sessions(db: Database) -> list[dict[str, object]]:
    """This database's sessions but the pool's, as pg_stat_activity sees them (asked on a
    connection of its own: the pool's next one may be the very one the test looks at)."""
    outside = await asyncpg.connect(_dsn(db))
    try:
        rows = await outside.fetch(
            "SELECT pid, state, backend_xid::text AS xid, backend_xmin::text AS xmin "
            "FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
    finally:
        await outside.close()
    return [dict(row) for row in rows]


def _dsn(db: Database) -> str:
    return db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _session(db: Database, pid: int) -> dict[str, object]:
    return next(s for s in await _sessions(db) if s["pid"] == pid)


async def _probe_table(db: Database) -> None:
    async with db.transaction() as uow:
        await uow.conn.execute(sa.text("CREATE TABLE IF NOT EXISTS probe (n int)"))


async def _probe_rows(db: Database) -> int:
    async with db.read(snapshot=False) as uow:
        return int((await uow.conn.execute(sa.text("SELECT count(*) FROM probe"))).scalar_one())


def _checked_out(db: Database) -> int:
    return int(db.engine.pool.checkedout())  # type: ignore[attr-defined]


async def test_a_loaded_lane_starts_batches_on_begun_connections_and_gives_them_back_when_idle(
    pg_db: Database, clock: MutableClock, service: CreditService
) -> None:
    writer = BatchWriter(pg_db, clock.now, _nowhere, lanes=1)
    accounts = [f"acct-b{i}" for i in range(40)]
    await asyncio.gather(
        *(
            writer.run(functools.partial(service.grant, account_id=a, amount=1000, reason="p"))
            for a in accounts
        )
    )

    async def caller(account: str) -> None:
        for _ in range(15):
            await writer.run(
                functools.partial(service.hold, account_id=account, amount=1),
                Touches(accounts=(account,)),
            )

    try:
        await asyncio.gather(*(caller(a) for a in accounts))
        connections = writer.lanes[0].connections
        assert connections is not None
        assert connections.reused > 0, "expected batches under load to start on begun ones"
        for _ in range(200):  # the lane gives them back once it has nothing to do
            if connections.kept == 0 and _checked_out(pg_db) == 0:
                break
            await asyncio.sleep(0.01)
        assert connections.kept == 0
        assert _checked_out(pg_db) == 0
        assert [s for s in await _sessions(pg_db) if s["state"] != "idle"] == []
        async with pg_db.read(snapshot=False) as uow:
            opened = (
                await uow.conn.execute(sa.select(sa.func.count()).select_from(holds))
            ).scalar_one()
        assert opened == 40 * 15  # each hold exactly once
    finally:
        await writer.aclose()


async def test_a_lone_callers_next_request_reuses_it_and_an_idle_lane_gives_it_back(
    pg_db: Database, clock: MutableClock, service: CreditService
) -> None:
    writer = BatchWriter(pg_db, clock.now, _nowhere, lanes=1)
    connections = writer.lanes[0].connections
    assert connections is not None
    try:
        await writer.run(lambda uow: service.grant(uow, "acct-lone", 10, "p"))
        assert connections.kept == 1  # begun for the next batch
        await writer.run(lambda uow: service.hold(uow, "acct-lone", 1))
        assert connections.reused == 1
        assert [s["state"] for s in await _sessions(pg_db)] == ["idle in transaction"]
        for _ in range(100):  # idle past LINGER_S: given back, rolled back
            if connections.kept == 0 and _checked_out(pg_db) == 0:
                break
            await asyncio.sleep(0.02)
        assert connections.kept == 0 and _checked_out(pg_db) == 0
        assert [s["state"] for s in await _sessions(pg_db)] == ["idle"]
        await writer.run(lambda uow: service.hold(uow, "acct-lone", 1))  # a fresh one works
        assert connections.reused == 1
    finally:
        await writer.aclose()
    assert connections.kept == 0 and _checked_out(pg_db) == 0


async def test_a_kept_connection_holds_no_snapshot_and_is_given_back_rolled_back(
    pg_db: Database,
) -> None:
    connections = BegunConnections(pg_db)
    async with connections.transaction() as driver:
        await driver.fetchval("SELECT txid_current()")  # this transaction had an id
        pid = driver.get_server_pid()
    assert connections.kept == 1 and _checked_out(pg_db) == 1
    kept = await _session(pg_db, pid)
    assert kept["state"] == "idle in transaction"
    assert kept["xid"] is None and kept["xmin"] is None, "a begun transaction holds nothing back"

    async with connections.transaction() as again:
        assert again.get_server_pid() == pid
    assert connections.reused == 1

    await connections.release()
    assert connections.kept == 0 and _checked_out(pg_db) == 0
    assert (await _session(pg_db, pid))["state"] == "idle"


async def test_one_statement_commits_by_itself_and_several_on_its_connection_begin_first(
    pg_db: Database,
) -> None:
    await _probe_table(pg_db)
    connections = BegunConnections(pg_db)
    async with connections.transaction(one_statement=True) as driver:
        assert not driver.is_in_transaction()
        await driver.execute("INSERT INTO probe VALUES (1)")
        pid = driver.get_server_pid()
    assert await _probe_rows(pg_db) == 1
    assert connections.kept == 1
    assert (await _session(pg_db, pid))["state"] == "idle", "kept with nothing begun"

    with pytest.raises(sa.exc.DBAPIError):  # several statements: all or nothing
        async with connections.transaction() as driver:
            assert driver.get_server_pid() == pid and driver.is_in_transaction()
            await driver.execute("INSERT INTO probe VALUES (2)")
            await driver.execute("INSERT INTO probe VALUES ('not a number')")
    assert await _probe_rows(pg_db) == 1

    async with connections.transaction() as driver:
        await driver.execute("INSERT INTO probe VALUES (3)")
        pid = driver.get_server_pid()
    assert (await _session(pg_db, pid))["state"] == "idle in transaction"  # begun for the next
    async with connections.transaction(one_statement=True) as driver:
        assert driver.is_in_transaction()  # the begun one: it commits with the statement
        await driver.execute("INSERT INTO probe VALUES (4)")
    assert await _probe_rows(pg_db) == 3
    assert (await _session(pg_db, pid))["state"] == "idle"
    await connections.release()
    assert connections.kept == 0 and _checked_out(pg_db) == 0


async def test_a_batch_on_remembered_accounts_commits_as_its_one_statement(
    pg_db: Database, clock: MutableClock, service: CreditService
) -> None:
    writer = BatchWriter(pg_db, clock.now, _nowhere, lanes=1)
    connections, remembered = writer.lanes[0].connections, writer.remembered
    assert connections is not None and remembered is not None
    touches = Touches(accounts=("acct-one",))
    try:
        await writer.run(lambda uow: service.grant(uow, "acct-one", 10, "p"), touches)
        assert [s["state"] for s in await _sessions(pg_db)] == ["idle in transaction"]
        for amount in (3, 4):
            await writer.run(
                functools.partial(service.hold, account_id="acct-one", amount=amount), touches
            )
            assert [s["state"] for s in await _sessions(pg_db)] == ["idle"], "nothing begun"
        assert remembered.hits == 2 and connections.reused == 2
        # changed elsewhere: the write, gated on the account's version, commits nothing, and
        # the batch runs again, locked, in a transaction begun for it
        outside = await asyncpg.connect(_dsn(pg_db))
        try:
            await outside.execute("UPDATE accounts SET seq = seq WHERE id = 'acct-one'")
        finally:
            await outside.close()
        await writer.run(lambda uow: service.hold(uow, "acct-one", 2), touches)
        assert remembered.stale == 1
        async with pg_db.read(snapshot=False) as uow:
            held, opened = (
                await uow.conn.execute(
                    sa.text(
                        "SELECT (SELECT held FROM accounts WHERE id = 'acct-one'), "
                        "(SELECT count(*) FROM holds WHERE account_id = 'acct-one')"
                    )
                )
            ).one()
        assert (held, opened) == (9, 3)
    finally:
        await writer.aclose()


async def test_a_refund_on_remembered_accounts_reads_its_charge_then_writes_once(
    pg_db: Database, clock: MutableClock, service: CreditService
) -> None:
    """A refund reads its charge's lines before its write: on remembered accounts that read runs
    on its own, and the write still commits once, by itself."""
    writer = BatchWriter(pg_db, clock.now, _nowhere, lanes=1)
    remembered = writer.remembered
    assert remembered is not None
    touches = Touches(accounts=("acct-refund",))

    async def balance() -> int:
        async with pg_db.read(snapshot=False) as uow:
            return int(
                (
                    await uow.conn.execute(
                        sa.text("SELECT balance FROM accounts WHERE id = 'acct-refund'")
                    )
                ).scalar_one()
            )

    try:
        await writer.run(lambda uow: service.grant(uow, "acct-refund", 10, "p"), touches)
        charge, _ = await writer.run(
            lambda uow: service.charge(uow, "acct-refund", 6, "generation"), touches
        )
        before, hits = await balance(), remembered.hits
        await writer.run(lambda uow: service.refund(uow, charge["charge_id"], "charge", 4), touches)
        assert remembered.hits == hits + 1
        assert {s["state"] for s in await _sessions(pg_db)} == {"idle"}, "nothing begun"
        with pytest.raises(RefundExceedsSpend):  # 2 of the 6 are left to refund
            await writer.run(
                lambda uow: service.refund(uow, charge["charge_id"], "charge", 3), touches
            )
        assert await balance() == before + 4
    finally:
        await writer.aclose()


async def test_behind_a_transaction_pooler_a_batch_keeps_its_transaction(
    pg_url: str, pg_db: Database, clock: MutableClock, service: CreditService
) -> None:
    """Outside a transaction a pooler may give each protocol message another server connection
    (asyncpg prepares, then binds): there every batch keeps its BEGIN and COMMIT."""
    pooled = Database.from_url(f"{pg_url}?pooler=pgbouncer", pool_size=2)
    writer = BatchWriter(pooled, clock.now, _nowhere, lanes=1)
    touches = Touches(accounts=("acct-pooled",))
    try:
        await writer.run(lambda uow: service.grant(uow, "acct-pooled", 10, "p"), touches)
        await writer.run(lambda uow: service.hold(uow, "acct-pooled", 3), touches)
        assert writer.remembered is not None and writer.remembered.hits == 1
        assert [s["state"] for s in await _sessions(pg_db)] == ["idle in transaction"]
    finally:
        await writer.aclose()
        await pooled.dispose()


@pytest.mark.parametrize("failure", ["raised", "refused by the database"])
async def test_a_failed_transaction_is_rolled_back_and_its_connection_not_kept(
    pg_db: Database, failure: str
) -> None:
    await _probe_table(pg_db)
    connections = BegunConnections(pg_db)
    async with connections.transaction():
        pass  # one kept, begun: the failing transaction starts on it
    with pytest.raises((RuntimeError, sa.exc.DBAPIError)):
        async with connections.transaction() as driver:
            pid = driver.get_server_pid()
            await driver.execute("INSERT INTO probe VALUES (1)")
            if failure == "raised":
                raise RuntimeError("an operation's bug")
            await driver.execute("INSERT INTO probe VALUES ('not a number')")
    assert connections.kept == 0 and _checked_out(pg_db) == 0
    assert await _probe_rows(pg_db) == 0
    assert (await _session(pg_db, pid))["state"] == "idle"


async def test_a_kept_connection_killed_fails_one_transaction_and_the_next_works(
    pg_db: Database,
) -> None:
    await _probe_table(pg_db)
    connections = BegunConnections(pg_db)
    async with connections.transaction() as driver:
        pid = driver.get_server_pid()
    admin = await asyncpg.connect(_dsn(pg_db))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    with pytest.raises(DatabaseUnavailable):
        async with connections.transaction() as driver:
            await driver.execute("INSERT INTO probe VALUES (1)")
    assert connections.kept == 0 and _checked_out(pg_db) == 0
    async with connections.transaction() as driver:
        await driver.execute("INSERT INTO probe VALUES (2)")
    await connections.release()
    assert await _probe_rows(pg_db) == 1


async def test_disposing_the_database_gives_back_what_an_unclosed_writer_kept(
    pg_db: Database, clock: MutableClock, service: CreditService
) -> None:
    writer = BatchWriter(pg_db, clock.now, _nowhere, lanes=1)  # never closed, as a CLI's sweep
    await writer.run(lambda uow: service.grant(uow, "acct-left", 10, "p"))
    assert writer.lanes[0].connections is not None and writer.lanes[0].connections.kept == 1
    await pg_db.dispose()
    assert writer.lanes[0].connections.kept == 0
    assert await _sessions(pg_db) == []
