"""The `/v1` route table (the seed-compatible one is api/routes/seeds/; asgi.py joins them)."""

from __future__ import annotations

from api import schemas
from api.console.pages import console_page
from api.docs_page import docs_page
from api.routes import accounts as accounts
from api.routes import batch as batch
from api.routes import holds as holds
from api.routes import jobs as jobs
from api.routes import misc as misc
from api.routes import refunds as refunds
from api.routes import stream_tickets as stream_tickets
from api.routes import webhook_endpoints as endpoints
from api.routes import webhooks
from api.routing import MUTATING, ApiRoute

A = "/v1/accounts/{account_id}"

V1_ROUTES: list[ApiRoute] = [
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
    ApiRoute(
        "POST",
        "/v1/webhooks/providers/{provider}",
        webhooks.provider_webhook,
        "Provider callback (X-Signature)",
        "signed",
        schemas.ProviderCallback,
        200,
        (400, 401, 404, 409, 413, 422),
    ),
    ApiRoute(
        "POST",
        "/v1/webhooks/payments/{provider}",
        webhooks.payment_webhook,
        "Payment confirmed (X-Signature): award once per event_id",
        "signed",
        schemas.PaymentEvent,
        200,
        (400, 401, 404, 413, 422),
    ),
    ApiRoute("GET", "/v1/pricing", misc.pricing, "The price catalogue", "none"),
    ApiRoute(
        "GET",
        "/v1/plans",
        misc.plans,
        "Plans (name, price, credits, how long their credits last) and each plan's feature limits",
        "none",
    ),
    ApiRoute(
        "POST",
        "/v1/quote",
        misc.quote,
        "Price of a generation, whether the account can "
        "afford it, and what its plan's feature limit leaves",
        "owner",
        schemas.QuoteBody,
        200,
        (400, 401, 403, 413, 422),
    ),
    ApiRoute(
        "POST",
        "/v1/tokens",
        misc.create_token,
        "Issue a user token for a browser",
        "server",
        schemas.TokenBody,
        200,
        (400, 401, 403, 413, 422),
    ),
    ApiRoute(
        "POST",
        "/v1/webhook-endpoints",
        endpoints.create_endpoint,
        "Register an "
        "outbound webhook endpoint for some event types; the answer holds its signing "
        "secret, shown only this once",
        "server",
        schemas.WebhookEndpointBody,
        201,
        (400, 401, 403, 409, 413, 422, 503),
    ),
    ApiRoute(
        "GET",
        "/v1/webhook-endpoints",
        endpoints.list_endpoints,
        "Outbound webhook endpoints, with their status (disabled: why)",
        "server",
        errors=(401, 403),
    ),
    ApiRoute(
        "DELETE",
        "/v1/webhook-endpoints/{endpoint_id}",
        endpoints.delete_endpoint,
        "Remove an outbound webhook endpoint: deliveries to it stop",
        "server",
        errors=(401, 403, 404),
    ),
    ApiRoute(
        "GET",
        "/v1/webhook-endpoints/{endpoint_id}/deliveries",
        endpoints.list_deliveries,
        "An endpoint's delivery attempts, newest first "
        "(event, status code, error, time, next retry)",
        "server",
        errors=(401, 403, 404, 422),
        query=("limit",),
    ),
    ApiRoute(
        "POST",
        "/v1/webhook-endpoints/{endpoint_id}/enable",
        endpoints.enable_endpoint,
        "Enable a disabled outbound webhook endpoint again: healthy, due now; what accumulated "
        "while it was disabled is delivered, in order per account (enabled already: no change)",
        "server",
        errors=(401, 403, 404),
    ),
    ApiRoute(
        "POST",
        "/v1/webhook-endpoints/{endpoint_id}/test",
        endpoints.send_test_event,
        "Send one signed webhook.test event to the endpoint now (disabled or not) and answer "
        "the attempt's outcome (ok, status_code, error, duration_ms); recorded with its "
        "deliveries, no cursor moved",
        "server",
        errors=(401, 403, 404),
    ),
    ApiRoute(
        "POST",
        "/v1/webhook-endpoints/{endpoint_id}/resend",
        endpoints.resend_events,
        "Deliver an account's events again from from_seq (the endpoint's cursor for it moves "
        "back, never forward); answers how many events that is. Errors: 404 unknown endpoint "
        "or account, 422 invalid_from_seq, from_seq_beyond_head, invalid_account_id",
        "server",
        schemas.WebhookResendBody,
        202,
        (400, 401, 403, 404, 413, 422),
    ),
    ApiRoute(
        "POST",
        "/v1/stream-tickets",
        stream_tickets.create_stream_ticket,
        "A one-use "
        "ticket for one WebSocket or SSE connection within 30 s, passed as ?ticket= (so "
        "the long-lived token stays out of URLs); a user token may omit account_id",
        "owner",
        schemas.StreamTicketBody,
        201,
        (400, 401, 403, 413, 422),
    ),
    ApiRoute(
        "GET",
        "/v1/stream",
        misc.stream_upgrade_required,
        "WebSocket stream "
        "(upgrade; served by realtime/, this endpoint answers a plain GET with 426); "
        "credentials in Authorization, ?ticket= (one use, from POST /v1/stream-tickets) "
        "or ?token=; a bad, used or expired one closes with 4401, another account with "
        "4403, too many streams with 1008",
        "owner",
        success=101,
        errors=(403, 426),
        query=("ticket", "token"),
    ),
    ApiRoute(
        "GET",
        "/v1/stream/sse",
        None,
        "Server-Sent Events stream, resumable with "
        "Last-Event-ID; credentials as for the WebSocket (a bad, used or expired ticket: "
        "401)",
        "owner",
        errors=(401, 403, 422, 429),
        query=("account_id", "after_seq", "ticket", "token"),
        routed=False,
    ),
    ApiRoute("GET", "/healthz", misc.healthz, "Liveness", "none"),
    ApiRoute(
        "GET", "/readyz", misc.readyz, "Readiness: database and broker", "none", errors=(503,)
    ),
    ApiRoute("GET", "/metrics", misc.prometheus_metrics, "Prometheus metrics", "none"),
    ApiRoute("GET", "/openapi.json", misc.openapi_document, "This OpenAPI document", "none"),
    ApiRoute(
        "GET",
        "/docs",
        docs_page,
        "This API reference as a page (Swagger UI, served by "
        "the app itself: no request leaves the origin)",
        "none",
    ),
    ApiRoute(
        "GET",
        "/console",
        console_page,
        "The operator console (a page; signed in by a one-time link from `creditstream "
        "console`), when CREDITSTREAM_CONSOLE=1; otherwise 404",
        "none",
        errors=(404,),
    ),
]
