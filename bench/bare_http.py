"""The ceiling of `bench http`: a bare Starlette app whose `POST /v1/holds` runs the same SQL as
creditstream's (bench/rawsql.py) on an asyncpg pool, answering the same shape of JSON.

Served by uvicorn exactly as `asgi:app` is (`uvicorn bench.bare_http:app`). No validation model,
no idempotency, no publishing, no middleware: what is left is Starlette, uvicorn and the database.
Configured by BENCH_DATABASE_URL, BENCH_SERVER_KEY and BENCH_POOL_SIZE.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench import rawsql


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.expected_auth = f"Bearer {os.environ['BENCH_SERVER_KEY']}"
    app.state.pool = await asyncpg.create_pool(
        os.environ["BENCH_DATABASE_URL"], min_size=1,
        max_size=int(os.environ.get("BENCH_POOL_SIZE", "30")))
    try:
        yield
    finally:
        await app.state.pool.close()


async def create_hold(request: Request) -> Response:
    if request.headers.get("authorization") != request.app.state.expected_auth:
        return JSONResponse({"error": {"code": "unauthorized", "message": "bad key"}}, 401)
    body = json.loads(await request.body())
    account_id, amount = body["account_id"], body["amount"]
    if not isinstance(account_id, str) or not isinstance(amount, int) or amount < 1:
        return JSONResponse({"error": {"code": "validation_error", "message": "bad body"}}, 422)
    async with request.app.state.pool.acquire() as conn:
        done = await rawsql.hold(conn, account_id, amount, datetime.now(UTC))
    return JSONResponse({"hold": done["hold"], "account": done["account"]}, status_code=201)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/v1/holds", create_hold, methods=["POST"]),
                        Route("/healthz", healthz, methods=["GET"])], lifespan=lifespan)
