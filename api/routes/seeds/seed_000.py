"""Seed 000: `POST /api/v1/video/generate` → `{id}`, `GET /api/v1/history/{id}`,
`GET /api/v1/user/profile`: a real `video` job through the simulated provider, charged only on
success (the same quote + hold + job + dispatch as `POST /v1/jobs`)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from api.body import parse
from api.context import AppContext
from api.request import ctx_of
from api.responses import JSONResponse
from api.routes.seeds.common import SimulateMode, ensured_account, replayed, start_job
from core.errors import NotFound
from core.jobs import Job
from providers.simulated import MAX_DELAY_MS


class SeedVideoGenerateBody(BaseModel):
    """Seed 000's generation parameters. The seed leaves them to the product, so any further
    fields are accepted and the whole body becomes the job's `input`."""

    model_config = ConfigDict(extra="allow", strict=True)
    account_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="With a server key: the account to charge",
    )
    simulate: SimulateMode | None = Field(
        default=None, description="Simulated provider: outcome to produce"
    )
    delay_ms: int | None = Field(
        default=None,
        ge=0,
        le=MAX_DELAY_MS,
        description="Simulated provider: delay before its callback",
    )


async def read_job(ctx: AppContext, job_id: str) -> Job:
    job = await ctx.db.standby_read(lambda uow: uow.jobs.get(job_id))
    if job is None:
        raise NotFound(f"No job {job_id}", job_id=job_id)
    return job


async def video_generate(request: Request) -> Response:
    """`POST /api/v1/video/generate` → `{id}`: a video job, charged only on success."""
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    body, canonical = await parse(request, SeedVideoGenerateBody)
    account_id = principal.own_account(body.account_id)
    job_input = json.loads(canonical)  # the whole request body, as the seed sends it
    created = await start_job(request, ctx, principal, canonical, account_id, "video", job_input)
    if created.status != 202:
        return JSONResponse(created.body, status_code=created.status, headers=replayed(created))
    return JSONResponse(
        {"id": created.body["job"]["job_id"]}, status_code=202, headers=replayed(created)
    )


def history_body(job: Job) -> dict[str, Any]:
    return {
        "id": job.job_id,
        "status": job.status,
        "resultUrl": job.result_url,
        "errorMessage": job.error,
    }


async def history(request: Request) -> Response:
    """`GET /api/v1/history/{id}` → `{id, status: processing|success|failed, resultUrl,
    errorMessage}`."""
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    job = await read_job(ctx, request.path_params["id"])
    principal.require_access(job.account_id)
    return JSONResponse(history_body(job))


async def profile(request: Request) -> Response:
    """`GET /api/v1/user/profile` → `{balance, account_id, held, available, plan, trial, …}` for
    the user token's account (a server key names one with `?account_id=`)."""
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    account_id = principal.own_account(request.query_params.get("account_id"))
    account = await ensured_account(ctx, account_id)
    return JSONResponse(account.snapshot(ctx.service.now()))
