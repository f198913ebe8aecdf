"""A 1,000-charge `POST /v1/batch` on one account with ~1,040 live grants, and how long
`/healthz` waits meanwhile (the app in-process on a fresh PostgreSQL database, so a request
that hogs the event loop shows up as the health check's delay).

    flock /tmp/bench.lock .venv/bin/python -m bench.batch_grants [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import asyncpg
import httpx

from asgi import create_app
from config import Settings
from storage.keys import create_server_key
from tests.support import PG_ADMIN_DSN, TEST_SECRET, MutableClock

GRANTS = 1040
CHARGES = 1000


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _probe_health(http: httpx.AsyncClient, stop: asyncio.Event) -> float:
    """The longest a health check waited, counted from when it was due (a loop busy with
    something else delays the start of a check as much as its answer)."""
    worst = 0.0
    while not stop.is_set():
        due = time.perf_counter()
        await asyncio.sleep(0.01)
        assert (await http.get("/healthz")).status_code == 200
        worst = max(worst, time.perf_counter() - due - 0.01)
    return worst


async def _round(http: httpx.AsyncClient, auth: dict[str, str]) -> tuple[float, float, int]:
    account = f"bench-{uuid.uuid4().hex[:8]}"
    for start in range(0, GRANTS, 1000):
        grants = [
            {"op": "grant", "account_id": account, "amount": 5, "reason": "purchase"}
            for _ in range(min(1000, GRANTS - start))
        ]
        response = await http.post("/v1/batch", headers=auth, json={"operations": grants})
        assert response.status_code == 200, response.text
    charges = [{"op": "charge", "account_id": account, "amount": 1} for _ in range(CHARGES)]
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe_health(http, stop))
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    response = await http.post("/v1/batch", headers=auth, json={"operations": charges})
    elapsed = time.perf_counter() - started
    stop.set()
    worst_health = await probe
    assert response.status_code == 200, response.text
    statuses = [r["status"] for r in response.json()["results"]]
    assert statuses == [201] * CHARGES, set(statuses)
    return elapsed, worst_health, len(response.content)


async def main(rounds: int) -> None:
    name = f"cs_bench_{uuid.uuid4().hex[:10]}"
    await _admin(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        with TemporaryDirectory() as tmp:
            settings = Settings(
                database_url=f"{base}/{name}",
                user_token_secret=TEST_SECRET,
                results_dir=str(Path(tmp) / "results"),
            )
            app = create_app(settings, clock=MutableClock(), run_sweeper=False)
            async with app.router.lifespan_context(app):
                key = await create_server_key(app.state.ctx.db, "bench")
                auth = {"Authorization": f"Bearer {key}"}
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://bench", timeout=120
                ) as http:
                    for i in range(rounds):
                        elapsed, health, size = await _round(http, auth)
                        print(
                            f"round {i + 1}: {CHARGES} charges on {GRANTS} grants in "
                            f"{elapsed:.2f} s; worst /healthz {health:.2f} s; "
                            f"answer {size / 1024:.0f} KiB"
                        )
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cli(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    asyncio.run(main(args.rounds))


if __name__ == "__main__":
    cli()
