"""`creditstream bench growth`: bytes on disk per operation, per table, and what pruning the stream
journal costs.

A realistic mix of keyed requests goes through the app in-process (the HTTP routes, the engine,
the group-commit writer) on a scratch PostgreSQL database. Sizes are `pg_total_relation_size`
(heap, TOAST and every index) taken after a `VACUUM` at two checkpoints, half-way and at the end;
the growth between them divided by the operations between them is the steady state — the dead
rows that updates leave in `accounts`, `holds` and `jobs` are reused once vacuumed, as autovacuum
does in production, and do not count.

Mix per 20 operations (each one request with an Idempotency-Key, on one of `--accounts` users):
8 jobs (an in-house worker reports 7 successes and 1 failure: hold → capture or release),
4 hold → capture, 2 hold → release, 3 charges, 1 grant, and the first operation of a new user
creates the account with its trial grant. Then every event is aged past the window and the
journal is pruned with the sweeper's own batched delete, timed per batch.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import timedelta
from typing import Any

from bench.database import bench_database
from bench.measure import machine_info, service_versions
from bench.results import Progress, Result, Row

TABLES = (
    "events",
    "entries",
    "holds",
    "jobs",
    "grants",
    "accounts",
    "idempotency_keys",
    "idempotency_answers",
)
MIX = ["job"] * 7 + ["job_failed"] + ["capture"] * 4 + ["release"] * 2 + ["charge"] * 3 + ["grant"]
RESULT_URL = "data:text/plain;base64,aGVsbG8="  # a tiny result: the object store is on disk


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--operations", type=int, default=20_000, help="operations in all (default 20,000)"
    )
    parser.add_argument(
        "--accounts", type=int, default=500, help="users the operations are spread over"
    )
    parser.add_argument(
        "--prune-batch", type=int, default=5000, help="rows per delete when pruning (default 5000)"
    )


async def run(args: argparse.Namespace, say: Progress) -> Result:
    started = time.monotonic()
    result = Result(
        "growth",
        f"growth: bytes on disk per operation, {args.operations:,} operations over "
        f"{args.accounts:,} users, PostgreSQL",
        {"operations": args.operations, "accounts": args.accounts, "batch": args.prune_batch},
    )
    async with bench_database(args.pg_admin, args.database_url) as dsn:
        pg_version, _ = await service_versions(dsn, None)
        result.machine = machine_info(pg_version, None)
        workload = _Workload(dsn, args.accounts)
        await workload.open()
        try:
            half = args.operations // 2
            await workload.run(half, say)
            first = await _sizes(dsn)
            await workload.run(args.operations - half, say)
            second = await _sizes(dsn)
        finally:
            await workload.close()
        done = args.operations - half
        total = sum(second[t][0] - first[t][0] for t in TABLES)
        for table in TABLES:
            grown, rows = second[table][0] - first[table][0], second[table][1] - first[table][1]
            result.rows.append(Row(f"{table}: bytes per operation", grown / done, None))
            result.rows.append(Row(f"{table}: rows per operation", rows / done, None))
        result.rows.append(Row("all tables: bytes per operation", total / done, None))
        users = first["accounts"][0] / max(1, len(workload.users))
        result.rows.append(Row("accounts: bytes per user", users, None))
        result.rows.append(Row("all tables: GB per million operations", total / done / 1000, None))
        result.rows.append(Row("requests per operation", workload.requests / args.operations, None))
        result.details["sizes"] = {"half": first, "end": second}
        result.details["requests"] = workload.requests
        prune = await _prune(dsn, args.prune_batch, say)
        result.rows += [
            Row("prune: rows deleted per second", prune["rows_per_s"], None),
            Row(f"prune: ms per {args.prune_batch:,}-row batch, p50", prune["p50_ms"], None),
            Row(f"prune: ms per {args.prune_batch:,}-row batch, max", prune["max_ms"], None),
        ]
        result.details["prune"] = prune
        result.notes.append(
            "sizes: pg_total_relation_size (heap, TOAST, indexes) after VACUUM, growth between "
            "the half-way and final checkpoints ÷ the operations between them"
        )
        result.notes.append(
            f"prune: every event aged 8 days, then the sweeper's delete (oldest first, "
            f"{args.prune_batch:,} rows per transaction) until none is left: "
            f"{prune['deleted']:,} rows in {prune['batches']} batches"
        )
    result.elapsed_s = time.monotonic() - started
    return result


class _Workload:
    """The app in-process behind an httpx client, and the mix sent through it."""

    def __init__(self, dsn: str, accounts: int) -> None:
        self.dsn, self.accounts = dsn, accounts
        self.requests = 0
        self.users: list[str] = []
        self._close: list[Any] = []

    async def open(self) -> None:
        import tempfile

        import httpx

        from asgi import create_app
        from config import Settings
        from storage.keys import create_server_key

        results = tempfile.mkdtemp(prefix="growth-results-")
        settings = Settings(
            database_url=self.dsn, user_token_secret="g" * 48, results_dir=results, dev=True
        )
        app = create_app(settings, run_sweeper=False, announce_start=False)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        self._close.append(lambda: lifespan.__aexit__(None, None, None))
        key = await create_server_key(app.state.ctx.db, "growth")
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://growth.bench",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        self._close.insert(0, self.http.aclose)

    async def close(self) -> None:
        for close in self._close:
            await close()

    async def run(self, operations: int, say: Progress) -> None:
        for done in range(operations):
            await self._one(MIX[done % len(MIX)], done)
            if done % 2000 == 1999:
                say(f"growth: {done + 1:,} of {operations:,} operations")

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.requests += 1
        answer = await self.http.post(
            path, json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
        )
        if answer.status_code >= 300:
            raise RuntimeError(f"POST {path} answered {answer.status_code}: {answer.text[:300]}")
        found: dict[str, Any] = answer.json()
        return found

    def _user(self, done: int) -> str:
        if len(self.users) < self.accounts:  # a new user: the account and its trial come first
            self.users.append(f"user-{uuid.uuid4().hex[:16]}")
            return self.users[-1]
        return self.users[done % self.accounts]

    async def _one(self, kind: str, done: int) -> None:
        user = self._user(done)
        ref = {"metadata": {"prompt_id": uuid.uuid4().hex[:12], "source": "web"}}
        if kind == "grant":
            await self._post(
                f"/v1/accounts/{user}/grants", {"amount": 500, "reason": "purchase", **ref}
            )
        elif kind == "charge":
            await self._post(
                f"/v1/accounts/{user}/charges", {"amount": 2, "reason": "usage", **ref}
            )
        elif kind in ("capture", "release"):
            await self._grant_enough(user)
            hold = (await self._post("/v1/holds", {"account_id": user, "amount": 3, **ref}))["hold"]
            await self._post(f"/v1/holds/{hold['hold_id']}/{kind}", {})
        else:
            await self._grant_enough(user)
            job = (
                await self._post(
                    "/v1/jobs",
                    {
                        "account_id": user,
                        "operation": "image",
                        "model": "FLUX.1 [dev]",
                        "provider": "inhouse",
                        "input": {"prompt": "a lighthouse at dawn"},
                        **ref,
                    },
                )
            )["job"]
            report: dict[str, Any] = (
                {"status": "failed", "error": "provider timeout"}
                if kind == "job_failed"
                else {"status": "success", "result_url": RESULT_URL}
            )
            await self._post(f"/v1/jobs/{job['job_id']}/result", report)

    async def _grant_enough(self, user: str) -> None:
        """Top the user up when low, as a purchase would (counted as an operation)."""
        answer = await self.http.get(f"/v1/accounts/{user}")
        if answer.status_code == 404 or answer.json()["available"] < 50:
            await self._post(f"/v1/accounts/{user}/grants", {"amount": 1000, "reason": "purchase"})


async def _sizes(dsn: str) -> dict[str, tuple[int, int]]:
    """Per table: bytes on disk (heap, TOAST, indexes) after a VACUUM, and live rows."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        sizes: dict[str, tuple[int, int]] = {}
        for table in TABLES:
            await conn.execute(f"VACUUM (ANALYZE) {table}")
            size = await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
            rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
            sizes[table] = (int(size), int(rows))
        return sizes
    finally:
        await conn.close()


async def _prune(dsn: str, batch: int, say: Progress) -> dict[str, Any]:
    """Age every event past the window, then delete them with the sweeper's own statement."""
    import asyncpg

    from storage.retention import delete_older_than
    from storage.sql import Database
    from storage.tables import events

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("UPDATE events SET created_at = created_at - interval '8 days'")
        await conn.execute("VACUUM (ANALYZE) events")
        now = await conn.fetchval("SELECT now()")
    finally:
        await conn.close()
    db = Database.from_url(dsn)
    timings: list[float] = []
    deleted = 0
    try:
        before = now - timedelta(days=7)
        while True:
            started = time.perf_counter()
            gone = await delete_older_than(db, events, events.c.created_at, before, batch)
            timings.append(time.perf_counter() - started)
            deleted += gone
            if gone < batch:
                break
    finally:
        await db.dispose()
    full = sorted(timings[:-1] or timings)  # the last, partial batch is not a batch's cost
    say(f"growth: pruned {deleted:,} events in {len(timings)} batches")
    return {
        "deleted": deleted,
        "batches": len(timings),
        "rows_per_s": deleted / sum(timings) if sum(timings) else 0.0,
        "p50_ms": full[len(full) // 2] * 1000,
        "max_ms": full[-1] * 1000,
    }
