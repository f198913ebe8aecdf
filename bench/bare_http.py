"""The ceiling of `bench http`: a bare Starlette app whose `POST /v1/holds` parses the JSON body
and answers 201 with a small JSON document, touching no database.

Served by uvicorn exactly as `asgi:app` is (`uvicorn bench.bare_http:app`): what it measures is
Starlette, uvicorn and the load generator on this machine, the most any endpoint could do here.
"""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def create_hold(request: Request) -> Response:
    body = json.loads(await request.body())
    return JSONResponse(
        {
            "hold": {
                "account_id": body.get("account_id"),
                "amount": body.get("amount"),
                "status": "open",
            }
        },
        status_code=201,
    )


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/v1/holds", create_hold, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
)
