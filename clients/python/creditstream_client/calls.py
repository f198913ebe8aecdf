"""Each public operation as a `Call`: method, path, query and body, and the type of its answer.

The sync and async clients send the same calls; only the sending differs. Every POST carries an
Idempotency-Key: the caller's, or a fresh uuid4 made here, once per logical call, so all the
attempts of one call share it. The routes that keep no keys (a quote, a token, enabling, testing
or resending to a webhook endpoint) have the same effect however often they run, so their calls
are retried like the rest.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypedDict, TypeVar
from urllib.parse import quote as _quote

from creditstream_client import types as t

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One logical call. `T` is the type of its decoded answer."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    extra_timeout_s: float = 0.0  # a long-poll's wait, on top of the client's timeout

    def headers(self) -> dict[str, str]:
        return {} if self.idempotency_key is None else {"Idempotency-Key": self.idempotency_key}


def _seg(value: str) -> str:
    """A path segment: ids are `[A-Za-z0-9_.:@-]`, anything else is escaped, never a slash."""
    return _quote(value, safe="")


def _fields(**values: Any) -> dict[str, Any]:
    """The body: the fields given, without the ones left out (None)."""
    return {k: v for k, v in values.items() if v is not None}


def _post(path: str, body: dict[str, Any] | None, key: str | None) -> Call[Any]:
    return Call("POST", path, json=body, idempotency_key=key or str(uuid.uuid4()))


class Idempotent(TypedDict, total=False):
    idempotency_key: str  # default: a fresh uuid4 per call, reused by its retries


class GrantOptions(Idempotent, total=False):
    reason: str
    expires_at: str | datetime
    ref: str
    plan: str
    tier: int | str
    metadata: dict[str, Any]


class ChargeOptions(Idempotent, total=False):
    price: t.Price
    reason: str
    ref: str
    metadata: dict[str, Any]


class HoldOptions(Idempotent, total=False):
    price: t.Price
    ref: str
    ttl_seconds: int
    metadata: dict[str, Any]


class RefundOptions(Idempotent, total=False):
    charge_id: str
    hold_id: str
    amount: int
    reason: str
    metadata: dict[str, Any]


class JobOptions(Idempotent, total=False):
    account_id: str
    model: str
    params: dict[str, Any]
    input: dict[str, Any]
    provider: str
    provider_task_id: str
    ttl_seconds: int
    metadata: dict[str, Any]


class QuoteOptions(TypedDict, total=False):
    account_id: str
    model: str
    params: dict[str, Any]


def ensure_account(account_id: str) -> Call[t.Account]:
    return Call("PUT", f"/v1/accounts/{_seg(account_id)}")


def get_account(account_id: str) -> Call[t.Account]:
    return Call("GET", f"/v1/accounts/{_seg(account_id)}")


def list_entries(account_id: str, after: int | None, limit: int | None) -> Call[t.EntriesPage]:
    return Call(
        "GET", f"/v1/accounts/{_seg(account_id)}/entries", params=_fields(after=after, limit=limit)
    )


def list_events(
    account_id: str, after_seq: int | None, limit: int | None, wait: float | None
) -> Call[t.EventsPage]:
    return Call(
        "GET",
        f"/v1/accounts/{_seg(account_id)}/events",
        params=_fields(after_seq=after_seq, limit=limit, wait=wait),
        extra_timeout_s=wait or 0.0,
    )


def get_usage(account_id: str, period: str | None) -> Call[t.Usage]:
    return Call("GET", f"/v1/accounts/{_seg(account_id)}/usage", params=_fields(period=period))


def list_jobs(account_id: str, status: str | None, limit: int | None) -> Call[t.JobsPage]:
    return Call(
        "GET", f"/v1/accounts/{_seg(account_id)}/jobs", params=_fields(status=status, limit=limit)
    )


def create_grant(account_id: str, amount: int | None, options: GrantOptions) -> Call[t.GrantResult]:
    body = {k: v for k, v in options.items() if k != "idempotency_key"}
    expires_at = body.get("expires_at")
    if isinstance(expires_at, datetime):
        body["expires_at"] = expires_at.isoformat()
    return _post(
        f"/v1/accounts/{_seg(account_id)}/grants",
        _fields(amount=amount, **body),
        options.get("idempotency_key"),
    )


def create_charge(
    account_id: str, amount: int | None, options: ChargeOptions
) -> Call[t.ChargeResult]:
    body = {k: v for k, v in options.items() if k != "idempotency_key"}
    return _post(
        f"/v1/accounts/{_seg(account_id)}/charges",
        _fields(amount=amount, **body),
        options.get("idempotency_key"),
    )


def create_hold(
    account_id: str | None, amount: int | None, options: HoldOptions
) -> Call[t.HoldResult]:
    body = {k: v for k, v in options.items() if k != "idempotency_key"}
    return _post(
        "/v1/holds",
        _fields(account_id=account_id, amount=amount, **body),
        options.get("idempotency_key"),
    )


def get_hold(hold_id: str) -> Call[t.Hold]:
    return Call("GET", f"/v1/holds/{_seg(hold_id)}")


def capture_hold(hold_id: str, amount: int | None, key: str | None) -> Call[t.HoldResult]:
    return _post(f"/v1/holds/{_seg(hold_id)}/capture", _fields(amount=amount), key)


def release_hold(hold_id: str, reason: str | None, key: str | None) -> Call[t.HoldResult]:
    return _post(f"/v1/holds/{_seg(hold_id)}/release", _fields(reason=reason), key)


def create_refund(options: RefundOptions) -> Call[t.RefundResult]:
    body = {k: v for k, v in options.items() if k != "idempotency_key"}
    return _post("/v1/refunds", _fields(**body), options.get("idempotency_key"))


def create_job(operation: str, options: JobOptions) -> Call[t.JobResult]:
    body = {k: v for k, v in options.items() if k != "idempotency_key"}
    return _post("/v1/jobs", _fields(operation=operation, **body), options.get("idempotency_key"))


def get_job(job_id: str) -> Call[t.Job]:
    return Call("GET", f"/v1/jobs/{_seg(job_id)}")


def report_job_result(
    job_id: str, status: str, result_url: str | None, error: str | None
) -> Call[t.JobOutcome]:
    # a repeated report of the same outcome answers the job as it is (changed: false)
    return _post(
        f"/v1/jobs/{_seg(job_id)}/result",
        _fields(status=status, result_url=result_url, error=error),
        None,
    )


def quote(operation: str, options: QuoteOptions) -> Call[t.Quote]:
    return _post("/v1/quote", _fields(operation=operation, **options), None)


def get_pricing() -> Call[dict[str, Any]]:
    return Call("GET", "/v1/pricing")


def get_plans() -> Call[dict[str, Any]]:
    return Call("GET", "/v1/plans")


def batch(operations: list[dict[str, Any]], key: str | None) -> Call[t.BatchResult]:
    return _post("/v1/batch", {"operations": operations}, key)


def create_token(account_id: str, ttl_seconds: int | None) -> Call[t.Token]:
    return _post("/v1/tokens", _fields(account_id=account_id, ttl_seconds=ttl_seconds), None)


def create_webhook_endpoint(
    url: str, events: list[str], key: str | None
) -> Call[t.WebhookEndpoint]:
    return _post("/v1/webhook-endpoints", {"url": url, "events": events}, key)


def list_webhook_endpoints() -> Call[t.WebhookEndpointList]:
    return Call("GET", "/v1/webhook-endpoints")


def delete_webhook_endpoint(endpoint_id: str) -> Call[t.WebhookEndpoint]:
    return Call("DELETE", f"/v1/webhook-endpoints/{_seg(endpoint_id)}")


def list_webhook_deliveries(endpoint_id: str, limit: int | None) -> Call[t.WebhookDeliveries]:
    return Call(
        "GET", f"/v1/webhook-endpoints/{_seg(endpoint_id)}/deliveries", params=_fields(limit=limit)
    )


def enable_webhook_endpoint(endpoint_id: str) -> Call[t.WebhookEndpoint]:
    return _post(f"/v1/webhook-endpoints/{_seg(endpoint_id)}/enable", None, None)


def test_webhook_endpoint(endpoint_id: str) -> Call[t.WebhookTestOutcome]:
    return _post(f"/v1/webhook-endpoints/{_seg(endpoint_id)}/test", None, None)


def resend_webhook_events(
    endpoint_id: str, account_id: str, from_seq: int
) -> Call[t.WebhookResend]:
    return _post(
        f"/v1/webhook-endpoints/{_seg(endpoint_id)}/resend",
        {"account_id": account_id, "from_seq": from_seq},
        None,
    )
