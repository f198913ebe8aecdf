"""The webhook routes of the `/v1` table (api/routes/table.py): the signed callbacks that come
in from providers and payments, and the outbound webhook endpoints."""

from __future__ import annotations

from api import schemas
from api.routes import webhook_endpoints as endpoints
from api.routes import webhooks
from api.routing import ApiRoute

PROVIDER_WEBHOOK_ROUTES: list[ApiRoute] = [
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
]

WEBHOOK_ENDPOINT_ROUTES: list[ApiRoute] = [
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
]
