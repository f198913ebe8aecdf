"""Job routes: create (quote + hold + job), read, and results reported by in-house workers."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.body import parse
from api.completion import complete_job
from api.context import AppContext
from api.routes_accounts import ctx_of
from api.schemas import JobBody, JobResultBody
from core.errors import NotFound
from core.jobs import Job
from storage.sql import SqlUnitOfWork


def public_base(ctx: AppContext, request: Request) -> str:
    return ctx.settings.public_url or str(request.base_url)


async def create_job(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    body, canonical = await parse(request, JobBody)
    account_id = principal.own_account(body.account_id)
    base_url = public_base(ctx, request)

    async def action(uow: SqlUnitOfWork) -> tuple[int, dict[str, Any]]:
        assert ctx.jobs is not None
        job, account = await ctx.jobs.create(
            uow, account_id, body.request(), body.provider, body.input, body.ttl_seconds,
            body.provider_task_id, request.headers.get("idempotency-key"))
        uow.after_commit.append(lambda: dispatch(ctx, job, base_url))
        return 202, {"job": job.to_dict(), "account": account.snapshot(ctx.service.now())}

    return await ctx.execute(request, principal, canonical, action)


def dispatch(ctx: AppContext, job: Job, base_url: str) -> None:
    """Hand a committed job to its provider; external providers were called by the client."""
    provider = ctx.providers.get(job.provider)
    if provider is not None:
        provider.submit(job, base_url)


async def get_job(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    job_id = request.path_params["job_id"]
    async with ctx.db.read() as uow:
        job = await uow.jobs.get(job_id)
    if job is None:
        raise NotFound(f"No job {job_id}", job_id=job_id)
    principal.require_access(job.account_id)
    return JSONResponse(job.to_dict())


async def report_result(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    principal.require_server()
    body, _ = await parse(request, JobResultBody)
    outcome = await complete_job(ctx, request.path_params["job_id"], body.status,
                                 body.result_url, body.error, public_base(ctx, request))
    return JSONResponse(outcome)
