"""The synchronous client: one method per operation, retried with one effect."""

from __future__ import annotations

import time
from typing import Any, TypeVar, Unpack

import httpx

from creditstream_client import calls
from creditstream_client import types as t
from creditstream_client.answers import (
    connection_failed,
    decode,
    default_headers,
    gave_up,
    wait_after_answer,
)
from creditstream_client.calls import Call
from creditstream_client.errors import CreditstreamError
from creditstream_client.retry import (
    POOL_LIMITS,
    RETRYABLE_EXCEPTIONS,
    Attempts,
    RetryPolicy,
    repeatable,
)

T = TypeVar("T")


class Client:
    """`Client(base_url, key)`: `key` is a server key (`sk_…`) or a user token.

    A call is tried again on 503 (502, 504), 429 with a Retry-After, 409 `request_in_progress`,
    timeouts and dropped connections, with capped backoff and jitter, for up to
    `retry_budget_s` (30 s: long enough to ride out a database failover) or `max_attempts`
    (default: no limit but the budget); `retry=RetryPolicy(...)` sets every knob. A POST keeps
    its Idempotency-Key across attempts, so it has one effect; a POST without one is never
    repeated. Other errors raise at once as `CreditstreamError` subclasses.
    """

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout_s: float = 10.0,
        max_attempts: int | None = None,
        retry_budget_s: float | None = None,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy(
            max_attempts=max_attempts,
            total_s=RetryPolicy.total_s if retry_budget_s is None else retry_budget_s,
        )
        self.timeout_s = timeout_s
        self._http = http or httpx.Client(
            base_url=self.base_url, timeout=timeout_s, limits=POOL_LIMITS
        )
        self._headers = default_headers(key)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: Call[T]) -> T:
        attempts = Attempts(self.retry, repeatable(call.method, call.idempotency_key))
        while True:
            attempts.count += 1
            try:
                response = self._http.request(
                    call.method,
                    self.base_url + call.path,
                    json=call.json,
                    params=call.params or None,
                    headers={**self._headers, **call.headers()},
                    timeout=self.timeout_s + call.extra_timeout_s,
                )
            except RETRYABLE_EXCEPTIONS as exc:
                wait = attempts.next_wait()
                if wait is None:
                    raise connection_failed(exc, attempts) from exc
                time.sleep(wait)
                continue
            try:
                value: T = decode(response)
                return value
            except CreditstreamError as error:
                wait = wait_after_answer(attempts, error, response)
                if wait is None:
                    raise gave_up(error, attempts) from None
                time.sleep(wait)

    def ensure_account(self, account_id: str) -> t.Account:
        """PUT /v1/accounts/{id}: the account, created with its trial on first sight."""
        return self._send(calls.ensure_account(account_id))

    def get_account(self, account_id: str) -> t.Account:
        """GET /v1/accounts/{id}: the account snapshot (404 if never used)."""
        return self._send(calls.get_account(account_id))

    def list_entries(
        self, account_id: str, *, after: int | None = None, limit: int | None = None
    ) -> t.EntriesPage:
        """GET /v1/accounts/{id}/entries: journal lines, oldest first."""
        return self._send(calls.list_entries(account_id, after, limit))

    def list_events(
        self,
        account_id: str,
        *,
        after_seq: int | None = None,
        limit: int | None = None,
        wait: float | None = None,
    ) -> t.EventsPage:
        """GET /v1/accounts/{id}/events: stream events after a seq; `wait` long-polls (≤ 30 s)."""
        return self._send(calls.list_events(account_id, after_seq, limit, wait))

    def get_usage(self, account_id: str, period: str | None = None) -> t.Usage:
        """GET /v1/accounts/{id}/usage: credits used in a day, week or month."""
        return self._send(calls.get_usage(account_id, period))

    def list_jobs(
        self, account_id: str, *, status: str | None = None, limit: int | None = None
    ) -> t.JobsPage:
        """GET /v1/accounts/{id}/jobs: the account's jobs, newest first."""
        return self._send(calls.list_jobs(account_id, status, limit))

    def create_grant(
        self, account_id: str, amount: int | None = None, **options: Unpack[calls.GrantOptions]
    ) -> t.GrantResult:
        """POST /v1/accounts/{id}/grants: an amount, or `plan=` / `tier=` (server key)."""
        return self._send(calls.create_grant(account_id, amount, options))

    def create_charge(
        self, account_id: str, amount: int | None = None, **options: Unpack[calls.ChargeOptions]
    ) -> t.ChargeResult:
        """POST /v1/accounts/{id}/charges: a one-step debit of an amount or a `price=`."""
        return self._send(calls.create_charge(account_id, amount, options))

    def create_hold(
        self,
        account_id: str | None,
        amount: int | None = None,
        **options: Unpack[calls.HoldOptions],
    ) -> t.HoldResult:
        """POST /v1/holds: reserve an amount or a `price=` (account_id None: the user token's)."""
        return self._send(calls.create_hold(account_id, amount, options))

    def get_hold(self, hold_id: str) -> t.Hold:
        """GET /v1/holds/{id}."""
        return self._send(calls.get_hold(hold_id))

    def capture_hold(
        self, hold_id: str, amount: int | None = None, *, idempotency_key: str | None = None
    ) -> t.HoldResult:
        """POST /v1/holds/{id}/capture: all of the hold, or `amount` of it (server key)."""
        return self._send(calls.capture_hold(hold_id, amount, idempotency_key))

    def release_hold(
        self, hold_id: str, reason: str | None = None, *, idempotency_key: str | None = None
    ) -> t.HoldResult:
        """POST /v1/holds/{id}/release."""
        return self._send(calls.release_hold(hold_id, reason, idempotency_key))

    def create_refund(self, **options: Unpack[calls.RefundOptions]) -> t.RefundResult:
        """POST /v1/refunds: `charge_id=` or `hold_id=`, `amount=` (default: all left)."""
        return self._send(calls.create_refund(options))

    def create_job(self, operation: str, **options: Unpack[calls.JobOptions]) -> t.JobResult:
        """POST /v1/jobs: quote, hold and dispatch a generation."""
        return self._send(calls.create_job(operation, options))

    def get_job(self, job_id: str) -> t.Job:
        """GET /v1/jobs/{id}."""
        return self._send(calls.get_job(job_id))

    def report_job_result(
        self, job_id: str, status: str, *, result_url: str | None = None, error: str | None = None
    ) -> t.JobOutcome:
        """POST /v1/jobs/{id}/result: an in-house worker's outcome, success or failed."""
        return self._send(calls.report_job_result(job_id, status, result_url, error))

    def quote(self, operation: str, **options: Unpack[calls.QuoteOptions]) -> t.Quote:
        """POST /v1/quote: the price, and with an account whether it can afford it."""
        return self._send(calls.quote(operation, options))

    def get_pricing(self) -> dict[str, Any]:
        """GET /v1/pricing: the catalogue."""
        return self._send(calls.get_pricing())

    def get_plans(self) -> dict[str, Any]:
        """GET /v1/plans: plans and feature limits."""
        return self._send(calls.get_plans())

    def batch(
        self, operations: list[dict[str, Any]], *, idempotency_key: str | None = None
    ) -> t.BatchResult:
        """POST /v1/batch: up to 1,000 operations in one transaction, a result each (server key)."""
        return self._send(calls.batch(operations, idempotency_key))

    def create_token(self, account_id: str, ttl_seconds: int | None = None) -> t.Token:
        """POST /v1/tokens: a user token for a browser (server key)."""
        return self._send(calls.create_token(account_id, ttl_seconds))

    def create_webhook_endpoint(
        self, url: str, events: list[str], *, idempotency_key: str | None = None
    ) -> t.WebhookEndpoint:
        """POST /v1/webhook-endpoints: the answer holds the signing `secret`, shown once."""
        return self._send(calls.create_webhook_endpoint(url, events, idempotency_key))

    def list_webhook_endpoints(self) -> t.WebhookEndpointList:
        """GET /v1/webhook-endpoints."""
        return self._send(calls.list_webhook_endpoints())

    def delete_webhook_endpoint(self, endpoint_id: str) -> t.WebhookEndpoint:
        """DELETE /v1/webhook-endpoints/{id}."""
        return self._send(calls.delete_webhook_endpoint(endpoint_id))

    def list_webhook_deliveries(
        self, endpoint_id: str, limit: int | None = None
    ) -> t.WebhookDeliveries:
        """GET /v1/webhook-endpoints/{id}/deliveries: attempts, newest first."""
        return self._send(calls.list_webhook_deliveries(endpoint_id, limit))

    def enable_webhook_endpoint(self, endpoint_id: str) -> t.WebhookEndpoint:
        """POST /v1/webhook-endpoints/{id}/enable: a disabled endpoint enabled again (what
        accumulated meanwhile is delivered, in order); an enabled one as it is."""
        return self._send(calls.enable_webhook_endpoint(endpoint_id))

    def test_webhook_endpoint(self, endpoint_id: str) -> t.WebhookTestOutcome:
        """POST /v1/webhook-endpoints/{id}/test: one signed `webhook.test` event sent now,
        disabled or not; the answer is the attempt's outcome (ok, status_code, error)."""
        return self._send(calls.test_webhook_endpoint(endpoint_id))

    def resend_webhook_events(
        self, endpoint_id: str, account_id: str, from_seq: int
    ) -> t.WebhookResend:
        """POST /v1/webhook-endpoints/{id}/resend: the account's events from `from_seq`
        delivered again (at least once: dedupe by account and seq)."""
        return self._send(calls.resend_webhook_events(endpoint_id, account_id, from_seq))
