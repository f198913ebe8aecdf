"""The hold, charge and job routes of the `/v1` table (api/routes/table.py): holds and their
capture or release, batches, refunds and charges, and generation jobs."""

from __future__ import annotations

from api import schemas
from api.routes import batch as batch
from api.routes import holds as holds
from api.routes import jobs as jobs
from api.routes import refunds as refunds
from api.routing import MUTATING, ApiRoute

HOLD_ROUTES: list[ApiRoute] = [
    ApiRoute(
        "POST",
        "/v1/holds",
        holds.create_hold,
        "Open a hold (reservation)",
        "owner",
        schemas.HoldBody,
        201,
        MUTATING,
    ),
    ApiRoute(
        "POST",
        "/v1/batch",
        batch.run_batch,
        "Up to 1,000 holds, captures, releases, "
        "charges, grants and refunds in one transaction, each with its own result in order",
        "server",
        batch.BatchBody,
        200,
        MUTATING,
    ),
    ApiRoute(
        "GET",
        "/v1/holds/{hold_id}",
        holds.get_hold,
        "A hold; a captured one with its refunds",
        "owner",
        errors=(401, 403, 404),
    ),
    ApiRoute(
        "POST",
        "/v1/holds/{hold_id}/capture",
        holds.capture_hold,
        "Capture a hold, fully or partly",
        "server",
        schemas.CaptureBody,
        200,
        (*MUTATING, 404),
    ),
    ApiRoute(
        "POST",
        "/v1/holds/{hold_id}/release",
        holds.release_hold,
        "Release a hold",
        "owner",
        schemas.ReleaseBody,
        200,
        (*MUTATING, 404),
    ),
    ApiRoute(
        "POST",
        "/v1/refunds",
        refunds.create_refund,
        "Refund a charge or a captured hold, fully or partly, to the grants that funded it",
        "server",
        schemas.RefundBody,
        201,
        (*MUTATING, 404),
    ),
    ApiRoute(
        "GET",
        "/v1/refunds/{refund_id}",
        refunds.get_refund,
        "A refund, as POST /v1/refunds answered it",
        "server",
        errors=(401, 403, 404),
    ),
    ApiRoute(
        "GET",
        "/v1/charges/{charge_id}",
        refunds.get_charge,
        "A charge, with what has been refunded of it and its refunds",
        "owner",
        errors=(401, 403, 404),
    ),
]

JOB_ROUTES: list[ApiRoute] = [
    ApiRoute(
        "POST",
        "/v1/jobs",
        jobs.create_job,
        "Create a generation job: quote, hold, dispatch",
        "owner",
        schemas.JobBody,
        202,
        MUTATING,
    ),
    ApiRoute("GET", "/v1/jobs/{job_id}", jobs.get_job, "A job", "owner", errors=(401, 403, 404)),
    ApiRoute(
        "POST",
        "/v1/jobs/{job_id}/result",
        jobs.report_result,
        "An in-house worker reports a job's outcome",
        "server",
        schemas.JobResultBody,
        200,
        (400, 401, 403, 404, 409, 413, 422),
    ),
]
