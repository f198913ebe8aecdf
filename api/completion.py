"""Pay on success: a reported result is copied into the object store first, and only then is
the job's hold captured. Any failure on the way releases the hold in full."""

from __future__ import annotations

from typing import Any

from api.context import AppContext
from core.errors import InvalidState, NotFound
from core.jobs import FAILED, PROCESSING, SUCCESS, Job
from core.ports import StorageFailed
from providers.results import FetchFailed, extension_for, fetch
from storage.writes.batch import Touches
from storage.writes.operation import OperationUnitOfWork


async def complete_job(
    ctx: AppContext, job_id: str, status: str, result_url: str | None, error: str | None
) -> dict[str, Any]:
    async with ctx.db.read() as uow:
        job = await uow.jobs.get(job_id)
    if job is None:
        raise NotFound(f"No job {job_id}", job_id=job_id)
    stored: tuple[str, str] | None = None
    if status == SUCCESS and job.status == PROCESSING and not job.is_due(ctx.service.now()):
        if not result_url:
            status, error = FAILED, "the provider reported success without a result_url"
        else:
            try:
                stored = await store_result(ctx, job, result_url)
            except (FetchFailed, StorageFailed) as exc:
                status, error = FAILED, f"the result could not be stored: {exc}"

    async def action(uow: OperationUnitOfWork) -> dict[str, Any]:
        finished, account, changed = await ctx.jobs.finish(
            uow, job_id, status, stored[0] if stored else None, error
        )
        return {
            "job": finished.to_dict(),
            "changed": changed,
            "account": account.snapshot(ctx.service.now()),
        }

    try:
        outcome = await ctx.transact(action, Touches(jobs=(job_id,)))
    except InvalidState:
        await _discard(ctx, stored)
        raise
    final = outcome["job"]["status"]
    if final != SUCCESS:
        await _discard(ctx, stored)
    if final != status and outcome["changed"]:  # it timed out before this report arrived
        raise InvalidState(
            f"Job {job_id} timed out before the {status} report; nothing was charged",
            job_status=final,
        )
    return outcome


async def store_result(ctx: AppContext, job: Job, result_url: str) -> tuple[str, str]:
    """Copy the result into our store; returns its public URL and key. The local store's URL
    is relative (`/results/…`) unless CREDITSTREAM_PUBLIC_URL is set: never built from a
    request's Host header."""
    data, content_type = await fetch(result_url, ctx.egress)
    key = f"{job.job_id}/result{extension_for(content_type)}"
    url = await ctx.store.put(key, data, content_type)
    return url, key


async def _discard(ctx: AppContext, stored: tuple[str, str] | None) -> None:
    if stored is not None:
        await ctx.store.delete(stored[1])
