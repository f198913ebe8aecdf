"""The account routes of the `/v1` table (api/routes/table.py): an account, its journal, events,
usage and jobs, and the grants and charges made to it."""

from __future__ import annotations

from api import schemas
from api.routes import accounts as accounts
from api.routing import MUTATING, ApiRoute

A = "/v1/accounts/{account_id}"

ACCOUNT_ROUTES: list[ApiRoute] = [
    ApiRoute(
        "PUT",
        A,
        accounts.ensure_account,
        "Ensure an account (201 new with trial, 200 existing)",
        "server",
        success=201,
        errors=(200, 401, 403, 409, 422, 503),
    ),
    ApiRoute(
        "GET", A, accounts.get_account, "Account snapshot", "owner", errors=(401, 403, 404, 422)
    ),
    ApiRoute(
        "GET",
        A + "/entries",
        accounts.list_entries,
        "Journal lines, oldest first",
        "owner",
        errors=(401, 403, 404, 422),
        query=("after", "limit"),
    ),
    ApiRoute(
        "GET",
        A + "/events",
        accounts.list_events,
        "Stream events after a seq; `wait` long-polls, counted with the account's streams",
        "owner",
        errors=(401, 403, 404, 422, 429),
        query=("after_seq", "limit", "wait"),
    ),
    ApiRoute(
        "GET",
        A + "/usage",
        accounts.usage,
        "Credits used in a period, by operation, by model and per UTC day, and jobs by status",
        "owner",
        errors=(401, 403, 404, 422),
        query=("period",),
    ),
    ApiRoute(
        "GET",
        A + "/jobs",
        accounts.list_jobs,
        "The account's jobs, newest first",
        "owner",
        errors=(401, 403, 404, 422),
        query=("status", "limit"),
    ),
    ApiRoute(
        "POST",
        A + "/grants",
        accounts.create_grant,
        "Grant credits (amount, plan or tier)",
        "server",
        schemas.GrantBody,
        201,
        MUTATING,
    ),
    ApiRoute(
        "POST",
        A + "/charges",
        accounts.create_charge,
        "One-step charge",
        "server",
        schemas.ChargeBody,
        201,
        MUTATING,
    ),
]
