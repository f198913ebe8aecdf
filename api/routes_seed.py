"""Seed-compatible routes (SPEC §9): the HTTP paths and JSON shapes that seeds 000 and 001
document, so frontends written against them work unchanged, mapped onto the engine.

- seed 000: `POST /api/v1/video/generate` → `{id}`, `GET /api/v1/history/{id}`,
  `GET /api/v1/user/profile`: a real `video` job through the simulated provider, charged only on
  success (the same quote + hold + job + dispatch as `POST /v1/jobs`).
- seed 001: `POST /api/payments/award` (server key only), `GET /api/users/{walletAddress}/points`
  (creates the user with its trial on first sight and applies trial expiry first),
  `POST /api/generate` (video, 2) and `POST /api/generate/audio` (audio, 1), which answer once the
  job has finished (bounded wait), or `402` with the shortfall.

Security stays server-side: awarding needs a server key; spending and reading need a user token
of that account (or a server key). Errors keep the API's `{"error": {...}}` shape; the seed's own
fields are added beside it where the seed shows them.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.requests import Request
from starlette.responses import Response

from api.auth import Principal
from api.body import parse
from api.context import AppContext
from api.errors import ApiError, to_status_and_body
from api.responses import JSONResponse
from api.routes_accounts import ctx_of
from api.routes_jobs import callback_base, dispatch
from api.routing import MUTATING, ApiRoute
from core.account import Account
from core.errors import InsufficientCredits, NotFound
from core.events import iso
from core.jobs import PROCESSING, SUCCESS, Job
from core.model import MAX_AMOUNT, normalise_account_id
from core.service import PriceRequest
from providers.simulated import MAX_DELAY_MS
from providers.simulated import NAME as SIMULATED
from storage.batch import Touches
from storage.operation import OperationUnitOfWork
from storage.writer import KeyedResult

# How long POST /api/generate waits for its job before answering 202 "processing".
GENERATE_WAIT_S = 30.0
# Each wait for the account's stream is bounded too, so a lost push only delays the answer.
WAIT_STEP_S = 1.0

SimulateMode = Literal["success", "fail", "hang"]


# --- request bodies -----------------------------------------------------------------------------

class SeedVideoGenerateBody(BaseModel):
    """Seed 000's generation parameters. The seed leaves them to the product, so any further
    fields are accepted and the whole body becomes the job's `input`."""

    model_config = ConfigDict(extra="allow", strict=True)
    account_id: str | None = Field(default=None, min_length=1, max_length=128,
                                   description="With a server key: the account to charge")
    simulate: SimulateMode | None = Field(default=None,
                                          description="Simulated provider: outcome to produce")
    delay_ms: int | None = Field(default=None, ge=0, le=MAX_DELAY_MS,
                                 description="Simulated provider: delay before its callback")


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


# --- shared helpers ------------------------------------------------------------------------------

async def start_job(request: Request, ctx: AppContext, principal: Principal,
                    canonical: bytes, account_id: str, operation: str,
                    job_input: dict[str, Any]) -> KeyedResult:
    """Quote + hold + job in one transaction, dispatched to the simulated provider after the
    commit: what `POST /v1/jobs` does, under the same Idempotency-Key rules. Answers the
    v1 creation body `202 {job, account}` (or a stored refusal, when a key replays one)."""
    base_url = callback_base(ctx, request)
    key = request.headers.get("idempotency-key")

    async def action(uow: OperationUnitOfWork) -> tuple[int, dict[str, Any]]:
        job, account = await ctx.jobs.create(uow, account_id, PriceRequest(operation),
                                             SIMULATED, job_input, None, None, key)
        uow.after_commit.append(lambda: dispatch(ctx, job, base_url))
        return 202, {"job": job.to_dict(), "account": account.snapshot(ctx.service.now())}

    return await ctx.execute_once(request, principal, canonical, action,
                                  Touches(accounts=(account_id,)))


def replayed(result: KeyedResult) -> dict[str, str]:
    return {"Idempotent-Replayed": "true"} if result.replayed else {}


async def ensured_account(ctx: AppContext, account_id: str) -> Account:
    """The account, created with its trial on first sight (seed 001's `ensureUser`), with any
    grant expiry that is due applied and saved first (its `expireTrialsForWallet`)."""

    async def action(uow: OperationUnitOfWork) -> Account:
        account, _ = await ctx.service.ensure_account(uow, account_id)
        await uow.accounts.save(account)
        return account

    return await ctx.transact(action, Touches(accounts=(account_id,)))


async def read_job(ctx: AppContext, job_id: str) -> Job:
    async with ctx.db.read() as uow:
        job = await uow.jobs.get(job_id)
    if job is None:
        raise NotFound(f"No job {job_id}", job_id=job_id)
    return job


async def await_job(ctx: AppContext, job_id: str, account_id: str,
                    timeout_s: float) -> tuple[Job, Account]:
    """The job once it has left `processing`, or as it is when `timeout_s` has passed. Woken by
    the account's stream (every job change appends an event) and re-read from the database."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with ctx.db.read() as uow:
            job = await uow.jobs.get(job_id)
            account = await uow.accounts.get(account_id)
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
        body = {**body, "message": error.get("message"), "creditsDeducted": 0,
                "remainingCredits": error.get("available"), "shortfall": error.get("shortfall")}
    return JSONResponse(body, status_code=result.status, headers=replayed(result))


# --- seed 000 ------------------------------------------------------------------------------------

async def video_generate(request: Request) -> Response:
    """`POST /api/v1/video/generate` → `{id}`: a video job, charged only on success."""
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    body, canonical = await parse(request, SeedVideoGenerateBody)
    account_id = principal.own_account(body.account_id)
    job_input = json.loads(canonical)  # the whole request body, as the seed sends it
    created = await start_job(request, ctx, principal, canonical, account_id, "video",
                              job_input)
    if created.status != 202:
        return JSONResponse(created.body, status_code=created.status, headers=replayed(created))
    return JSONResponse({"id": created.body["job"]["job_id"]}, status_code=202,
                        headers=replayed(created))


def history_body(job: Job) -> dict[str, Any]:
    return {"id": job.job_id, "status": job.status, "resultUrl": job.result_url,
            "errorMessage": job.error}


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


# --- seed 001 ------------------------------------------------------------------------------------

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
            grant, account = await ctx.service.grant(uow, wallet, body.points, "points",
                                                     key=key, details=audit)
        else:
            grant, account = await ctx.service.grant_plan(uow, wallet, body.tier, key=key,
                                                          details=audit)
        return 200, {"walletAddress": account.account_id, "awardedPoints": grant.amount,
                     "newTotalPoints": account.available, "contentType": None,
                     "contentCredits": None}

    return await ctx.execute(request, principal, canonical, action)


async def points(request: Request) -> Response:
    """`GET /api/users/{walletAddress}/points` → `{walletAddress, points, trial_expires_at}`."""
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    wallet = normalise_account_id(request.path_params["walletAddress"])
    principal.require_access(wallet)
    account = await ensured_account(ctx, wallet)
    return JSONResponse({"walletAddress": account.account_id, "points": account.available,
                         "trial_expires_at": iso(account.trial_expires_at)})


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
        created = await start_job(request, ctx, principal, canonical, wallet, operation,
                                  job_input)
    except InsufficientCredits as exc:
        status, error, _ = to_status_and_body(exc)
        created = KeyedResult(status, error)
    if created.status != 202:
        return with_seed_shortfall(created)
    job_id = created.body["job"]["job_id"]
    job, account = await await_job(ctx, job_id, wallet, GENERATE_WAIT_S)
    seed = {"jobId": job.job_id, "videoId": job.job_id, "resultUrl": job.result_url,
            "remainingCredits": account.available}
    if job.status == SUCCESS:
        return JSONResponse({**seed, "status": "completed", "creditsDeducted": job.cost,
                             "message": f"{noun} generated successfully"})
    if job.status == PROCESSING:
        return JSONResponse({**seed, "status": "processing", "creditsDeducted": 0,
                             "message": f"{noun} generation is still processing: poll "
                             f"GET /api/v1/history/{job.job_id}. Its {job.cost} credits are "
                             "held and charged only on success."}, status_code=202)
    failure = ApiError(502, "generation_failed", f"{noun} generation failed: {job.error}. "
                       "Nothing was charged.", job_id=job.job_id)
    status, error, _ = to_status_and_body(failure)
    return JSONResponse({**error, **seed, "status": "failed", "creditsDeducted": 0,
                         "message": failure.message}, status_code=status)


async def generate_video(request: Request) -> Response:
    """`POST /api/generate` `{walletAddress, script}`: a video (2 credits)."""
    return await generate(request, "video", "Video")


async def generate_audio(request: Request) -> Response:
    """`POST /api/generate/audio` `{walletAddress, script}`: an audio (1 credit)."""
    return await generate(request, "audio", "Audio")


# --- the route table -----------------------------------------------------------------------------

GENERATING = (*MUTATING, 202, 502)  # 202: still processing when the wait ran out
SEED_ROUTES: list[ApiRoute] = [
    ApiRoute("POST", "/api/v1/video/generate", video_generate, "Seed 000: start a video "
             "generation, charged only on success → {id}", "owner", SeedVideoGenerateBody,
             202, MUTATING),
    ApiRoute("GET", "/api/v1/history/{id}", history, "Seed 000: a generation's status → "
             "{id, status, resultUrl, errorMessage}", "owner", errors=(401, 403, 404)),
    ApiRoute("GET", "/api/v1/user/profile", profile, "Seed 000: the caller's balance "
             "(a server key names the account with ?account_id=)", "owner",
             errors=(401, 403, 422, 503), query=("account_id",)),
    ApiRoute("POST", "/api/payments/award", award, "Seed 001: award a tier or points "
             "→ {walletAddress, awardedPoints, newTotalPoints, contentType, "
             "contentCredits}", "server", SeedAwardBody, 200, MUTATING),
    ApiRoute("GET", "/api/users/{walletAddress}/points", points, "Seed 001: points "
             "after applying trial expiry (creates the user with its trial on first "
             "sight) → {walletAddress, points, trial_expires_at}", "owner",
             errors=(401, 403, 422, 503)),
    ApiRoute("POST", "/api/generate", generate_video, "Seed 001: generate a video "
             "(2 credits) and answer when it has finished (202 while still processing)",
             "owner", SeedGenerateBody, 200, GENERATING),
    ApiRoute("POST", "/api/generate/audio", generate_audio, "Seed 001: generate an audio "
             "(1 credit) and answer when it has finished (202 while still processing)",
             "owner", SeedGenerateBody, 200, GENERATING),
]

