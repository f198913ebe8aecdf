"""Seed 001: `POST /api/payments/award` (server key only), `GET /api/users/{walletAddress}/points`
(creates the user with its trial on first sight and applies trial expiry first),
`POST /api/generate` (video, 2) and `POST /api/generate/audio` (audio, 1), which answer once the
job has finished (bounded wait), or `402` with the shortfall."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.requests import Request
from starlette.responses import Response

from api.body import parse
from api.context import AppContext
from api.errors import ApiError, to_status_and_body
from api.request import ctx_of
from api.responses import JSONResponse
from api.routes.seeds.common import SimulateMode, ensured_account, replayed, start_job
from core.account import Account
from core.errors import InsufficientCredits, NotFound
from core.events import iso
from core.jobs import PROCESSING, SUCCESS, Job
from core.model import MAX_AMOUNT, normalise_account_id
from providers.simulated import MAX_DELAY_MS
from storage.sql import SqlUnitOfWork
from storage.writes.idempotency import KeyedResult
from storage.writes.operation import OperationUnitOfWork

# How long POST /api/generate waits for its job before answering 202 "processing".
GENERATE_WAIT_S = 30.0
# Each wait for the account's stream is bounded too, so a lost push only delays the answer.
WAIT_STEP_S = 1.0


class SeedAwardBody(BaseModel):
    """Seed 001's award: `{walletAddress, tier}` or `{walletAddress, points}`."""

    model_config = ConfigDict(extra="forbid", strict=True)
    walletAddress: str = Field(min_length=1, max_length=128)  # noqa: N815 - the seed's name
    tier: int | str | None = Field(default=None, description="5, 10, 20 or a plan name")
    points: int | None = Field(default=None, ge=1, le=MAX_AMOUNT)

    @model_validator(mode="after")
    def _tier_or_points(self) -> SeedAwardBody:
        if (self.tier is None) == (self.points is None):
            raise ValueError("give exactly one of tier or points")
        return self


class SeedGenerateBody(BaseModel):
    """Seed 001's generation request `{walletAddress, script}`; `simulate` and `delay_ms` steer
    the built-in simulated provider (demo and tests)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    walletAddress: str = Field(min_length=1, max_length=128)  # noqa: N815 - the seed's name
    script: str = Field(min_length=1, max_length=32_000)
    simulate: SimulateMode | None = None
    delay_ms: int | None = Field(default=None, ge=0, le=MAX_DELAY_MS)


async def await_job(
    ctx: AppContext, job_id: str, account_id: str, timeout_s: float
) -> tuple[Job, Account]:
    """The job once it has left `processing`, or as it is when `timeout_s` has passed. Woken by
    the account's stream (every job change appends an event) and re-read from the database."""
    deadline = time.monotonic() + timeout_s

    async def read(uow: SqlUnitOfWork) -> tuple[Job | None, Account | None]:
        return await uow.jobs.get(job_id), await uow.accounts.get(account_id)

    while True:
        job, account = await ctx.db.standby_read(read)
        if job is None or account is None:
            raise NotFound(f"No job {job_id}", job_id=job_id)
        left = deadline - time.monotonic()
        if job.status != PROCESSING or left <= 0:
            return job, account
        await ctx.wait_for_events(account_id, account.seq, min(left, WAIT_STEP_S))


def with_seed_shortfall(result: KeyedResult) -> Response:
    """A refusal keeps the API's error object; a 402 adds the seed's own fields beside it."""
    body: dict[str, Any] = result.body
    if result.status == 402:
        error = body.get("error", {})
        body = {
            **body,
            "message": error.get("message"),
            "creditsDeducted": 0,
            "remainingCredits": error.get("available"),
            "shortfall": error.get("shortfall"),
        }
    return JSONResponse(body, status_code=result.status, headers=replayed(result))


async def award(request: Request) -> Response:
    """`POST /api/payments/award` (server key only) → `{walletAddress, awardedPoints,
    newTotalPoints, contentType, contentCredits}`."""
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    principal.require_server()
    body, canonical = await parse(request, SeedAwardBody)
    wallet = normalise_account_id(body.walletAddress)
    key = request.headers.get("idempotency-key")
    audit = {"source": "api/payments/award", "server_key": principal.subject}

    async def action(uow: OperationUnitOfWork) -> tuple[int, dict[str, Any]]:
        if body.points is not None:
            grant, account = await ctx.service.grant(
                uow, wallet, body.points, "points", key=key, details=audit
            )
        else:
            grant, account = await ctx.service.grant_plan(
                uow, wallet, body.tier, key=key, details=audit
            )
        return 200, {
            "walletAddress": account.account_id,
            "awardedPoints": grant.amount,
            "newTotalPoints": account.available,
            "contentType": None,
            "contentCredits": None,
        }

    return await ctx.execute(request, principal, canonical, action)


async def points(request: Request) -> Response:
    """`GET /api/users/{walletAddress}/points` → `{walletAddress, points, trial_expires_at}`."""
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    wallet = normalise_account_id(request.path_params["walletAddress"])
    principal.require_access(wallet)
    account = await ensured_account(ctx, wallet)
    return JSONResponse(
        {
            "walletAddress": account.account_id,
            "points": account.available,
            "trial_expires_at": iso(account.trial_expires_at),
        }
    )


async def generate(request: Request, operation: str, noun: str) -> Response:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    body, canonical = await parse(request, SeedGenerateBody)
    wallet = normalise_account_id(body.walletAddress)
    principal.require_access(wallet)
    job_input: dict[str, Any] = {"script": body.script, "walletAddress": wallet}
    if body.simulate is not None:
        job_input["simulate"] = body.simulate
    if body.delay_ms is not None:
        job_input["delay_ms"] = body.delay_ms
    try:
        created = await start_job(request, ctx, principal, canonical, wallet, operation, job_input)
    except InsufficientCredits as exc:
        status, error, _ = to_status_and_body(exc)
        created = KeyedResult(status, error)
    if created.status != 202:
        return with_seed_shortfall(created)
    job_id = created.body["job"]["job_id"]
    job, account = await await_job(ctx, job_id, wallet, GENERATE_WAIT_S)
    seed = {
        "jobId": job.job_id,
        "videoId": job.job_id,
        "resultUrl": job.result_url,
        "remainingCredits": account.available,
    }
    if job.status == SUCCESS:
        return JSONResponse(
            {
                **seed,
                "status": "completed",
                "creditsDeducted": job.cost,
                "message": f"{noun} generated successfully",
            }
        )
    if job.status == PROCESSING:
        return JSONResponse(
            {
                **seed,
                "status": "processing",
                "creditsDeducted": 0,
                "message": f"{noun} generation is still processing: poll "
                f"GET /api/v1/history/{job.job_id}. Its {job.cost} credits are "
                "held and charged only on success.",
            },
            status_code=202,
        )
    failure = ApiError(
        502,
        "generation_failed",
        f"{noun} generation failed: {job.error}. Nothing was charged.",
        job_id=job.job_id,
    )
    status, error, _ = to_status_and_body(failure)
    return JSONResponse(
        {**error, **seed, "status": "failed", "creditsDeducted": 0, "message": failure.message},
        status_code=status,
    )


async def generate_video(request: Request) -> Response:
    """`POST /api/generate` `{walletAddress, script}`: a video (2 credits)."""
    return await generate(request, "video", "Video")


async def generate_audio(request: Request) -> Response:
    """`POST /api/generate/audio` `{walletAddress, script}`: an audio (1 credit)."""
    return await generate(request, "audio", "Audio")
