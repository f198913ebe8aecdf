"""What both seeds' routes share: a job started as `POST /v1/jobs` starts one, and the account
created with its trial on first sight."""

from __future__ import annotations

from typing import Any, Literal

from starlette.requests import Request

from api.auth import Principal
from api.context import AppContext
from api.dispatch import callback_base, dispatch
from core.account import Account
from core.price_request import PriceRequest
from providers.simulated import NAME as SIMULATED
from storage.writes.batch import Touches
from storage.writes.idempotency import KeyedResult
from storage.writes.operation import OperationUnitOfWork

SimulateMode = Literal["success", "fail", "hang"]


async def start_job(
    request: Request,
    ctx: AppContext,
    principal: Principal,
    canonical: bytes,
    account_id: str,
    operation: str,
    job_input: dict[str, Any],
) -> KeyedResult:
    """Quote + hold + job in one transaction, dispatched to the simulated provider after the
    commit: what `POST /v1/jobs` does, under the same Idempotency-Key rules. Answers the
    v1 creation body `202 {job, account}` (or a stored refusal, when a key replays one)."""
    base_url = callback_base(ctx, request)
    key = request.headers.get("idempotency-key")

    async def action(uow: OperationUnitOfWork) -> tuple[int, dict[str, Any]]:
        job, account = await ctx.jobs.create(
            uow, account_id, PriceRequest(operation), SIMULATED, job_input, None, None, key
        )
        uow.after_commit.append(lambda: dispatch(ctx, job, base_url))
        return 202, {"job": job.to_dict(), "account": account.snapshot(ctx.service.now())}

    return await ctx.execute_once(
        request, principal, canonical, action, Touches(accounts=(account_id,))
    )


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
