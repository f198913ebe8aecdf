"""Job routes: create (quote + hold + job), read, and results reported by in-house workers."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.auth import Principal
from api.body import parse
from api.completion import complete_job
from api.dispatch import callback_base, dispatch
from api.errors import ApiError
from api.request import ctx_of
from api.responses import JSONResponse
from api.schemas import JobBody, JobResultBody
from core.errors import NotFound
from storage.writes.batch import Touches
from storage.writes.operation import OperationUnitOfWork


def check_provider_choice(principal: Principal, body: JobBody, built_in: Collection[str]) -> None:
    """A user token runs built-in providers only: naming an external provider's task would
    let a browser pre-claim the task id of another account's job (the provider's webhook
    would then complete the wrong job)."""
    if principal.is_server:
        return
    if body.provider not in built_in or body.provider_task_id is not None:
        raise ApiError(
            403,
            "external_provider_forbidden",
            "Only a server key may name an external provider or a provider_task_id; "
            "a user token may create jobs of the built-in providers "
            f"({', '.join(sorted(built_in))})",
        )


async def create_job(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    body, canonical = await parse(request, JobBody)
    account_id = principal.own_account(body.account_id)
    check_provider_choice(principal, body, ctx.providers)
    base_url = callback_base(ctx, request)

    async def action(uow: OperationUnitOfWork) -> tuple[int, dict[str, Any]]:
        if body.provider_task_id is not None:
            await refuse_task_clash(uow, body.provider, body.provider_task_id)
        job, account = await ctx.jobs.create(
            uow,
            account_id,
            body.request(),
            body.provider,
            body.input,
            body.ttl_seconds,
            body.provider_task_id,
            request.headers.get("idempotency-key"),
            body.metadata,
        )
        uow.after_commit.append(lambda: dispatch(ctx, job, base_url))
        return 202, {"job": job.to_dict(), "account": account.snapshot(ctx.service.now())}

    return await ctx.execute(request, principal, canonical, action, Touches(accounts=(account_id,)))


async def refuse_task_clash(uow: OperationUnitOfWork, provider: str, task_id: str) -> None:
    """One job per (provider, provider_task_id): a second is a clear 409 naming the clash
    (also when two race: the loser's retry finds the winner's committed job here)."""
    clash = await uow.jobs.by_task(provider, task_id)
    if clash is not None:
        raise ApiError(
            409,
            "provider_task_conflict",
            f"A job for {provider} task {task_id!r} exists already ({clash.job_id}); "
            "a provider task completes one job",
            provider=provider,
            provider_task_id=task_id,
            job_id=clash.job_id,
        )


async def get_job(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    job_id = request.path_params["job_id"]
    job = await ctx.db.standby_read(lambda uow: uow.jobs.get(job_id))
    if job is None:
        raise NotFound(f"No job {job_id}", job_id=job_id)
    principal.require_access(job.account_id)
    return JSONResponse(job.to_dict())


async def report_result(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await ctx.principal(request)
    principal.require_server()
    body, _ = await parse(request, JobResultBody)
    outcome = await complete_job(
        ctx, request.path_params["job_id"], body.status, body.result_url, body.error
    )
    return JSONResponse(outcome)
