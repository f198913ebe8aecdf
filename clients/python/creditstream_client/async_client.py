"""The asyncio client: the same operations as `Client`, awaited, plus the event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
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
from creditstream_client.stream import EventStream

T = TypeVar("T")


class AsyncClient:
    """`AsyncClient(base_url, key)`: as `Client`, with `await`, and `stream(account_id)`."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout_s: float = 10.0,
        max_attempts: int | None = None,
        retry_budget_s: float | None = None,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy(
            max_attempts=max_attempts,
            total_s=RetryPolicy.total_s if retry_budget_s is None else retry_budget_s,
        )
        self.timeout_s = timeout_s
        self._key = key
        self._http = http or httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout_s, limits=POOL_LIMITS
        )
        self._headers = default_headers(key)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def stream(
        self, account_id: str, *, after_seq: int | None = None, max_reconnects: int | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The account's events over the WebSocket, in seq order, each once: reconnects with
        backoff and resubscribes from the last seq seen. Without `after_seq` the first item is
        a `snapshot` of the account; with it, the events after that seq come first."""
        return EventStream(
            self.base_url, self._key, account_id, after_seq, self.retry, max_reconnects
        ).events()

    async def _send(self, call: Call[T]) -> T:
        attempts = Attempts(self.retry, repeatable(call.method, call.idempotency_key))
        while True:
            attempts.count += 1
            try:
                response = await self._http.request(
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
                await asyncio.sleep(wait)
                continue
            try:
                value: T = decode(response)
                return value
            except CreditstreamError as error:
                wait = wait_after_answer(attempts, error, response)
                if wait is None:
                    raise gave_up(error, attempts) from None
                await asyncio.sleep(wait)

    async def ensure_account(self, account_id: str) -> t.Account:
        """PUT /v1/accounts/{id}: the account, created with its trial on first sight."""
        return await self._send(calls.ensure_account(account_id))

    async def get_account(self, account_id: str) -> t.Account:
        """GET /v1/accounts/{id}: the account snapshot (404 if never used)."""
        return await self._send(calls.get_account(account_id))

    async def list_entries(
        self, account_id: str, *, after: int | None = None, limit: int | None = None
    ) -> t.EntriesPage:
        """GET /v1/accounts/{id}/entries: journal lines, oldest first."""
        return await self._send(calls.list_entries(account_id, after, limit))

    async def list_events(
        self,
        account_id: str,
        *,
        after_seq: int | None = None,
        limit: int | None = None,
        wait: float | None = None,
    ) -> t.EventsPage:
        """GET /v1/accounts/{id}/events: stream events after a seq; `wait` long-polls (≤ 30 s)."""
        return await self._send(calls.list_events(account_id, after_seq, limit, wait))

    async def get_usage(self, account_id: str, period: str | None = None) -> t.Usage:
        """GET /v1/accounts/{id}/usage: credits used in a day, week or month."""
        return await self._send(calls.get_usage(account_id, period))

    async def list_jobs(
        self, account_id: str, *, status: str | None = None, limit: int | None = None
    ) -> t.JobsPage:
        """GET /v1/accounts/{id}/jobs: the account's jobs, newest first."""
        return await self._send(calls.list_jobs(account_id, status, limit))

    async def create_grant(
        self, account_id: str, amount: int | None = None, **options: Unpack[calls.GrantOptions]
    ) -> t.GrantResult:
        """POST /v1/accounts/{id}/grants: an amount, or `plan=` / `tier=` (server key)."""
        return await self._send(calls.create_grant(account_id, amount, options))

    async def create_charge(
        self, account_id: str, amount: int | None = None, **options: Unpack[calls.ChargeOptions]
    ) -> t.ChargeResult:
        """POST /v1/accounts/{id}/charges: a one-step debit of an amount or a `price=`."""
        return await self._send(calls.create_charge(account_id, amount, options))

    async def create_hold(
        self,
        account_id: str | None,
        amount: int | None = None,
        **options: Unpack[calls.HoldOptions],
    ) -> t.HoldResult:
        """POST /v1/holds: reserve an amount or a `price=` (account_id None: the user token's)."""
        return await self._send(calls.create_hold(account_id, amount, options))

    async def get_hold(self, hold_id: str) -> t.Hold:
        """GET /v1/holds/{id}."""
        return await self._send(calls.get_hold(hold_id))

    async def capture_hold(
        self, hold_id: str, amount: int | None = None, *, idempotency_key: str | None = None
    ) -> t.HoldResult:
        """POST /v1/holds/{id}/capture: all of the hold, or `amount` of it (server key)."""
        return await self._send(calls.capture_hold(hold_id, amount, idempotency_key))

    async def release_hold(
        self, hold_id: str, reason: str | None = None, *, idempotency_key: str | None = None
    ) -> t.HoldResult:
        """POST /v1/holds/{id}/release."""
        return await self._send(calls.release_hold(hold_id, reason, idempotency_key))

    async def create_refund(self, **options: Unpack[calls.RefundOptions]) -> t.RefundResult:
        """POST /v1/refunds: `charge_id=` or `hold_id=`, `amount=` (default: all left)."""
        return await self._send(calls.create_refund(options))

    async def create_job(self, operation: str, **options: Unpack[calls.JobOptions]) -> t.JobResult:
        """POST /v1/jobs: quote, hold and dispatch a generation."""
        return await self._send(calls.create_job(operation, options))

    async def get_job(self, job_id: str) -> t.Job:
        """GET /v1/jobs/{id}."""
        return await self._send(calls.get_job(job_id))

    async def report_job_result(
        self, job_id: str, status: str, *, result_url: str | None = None, error: str | None = None
    ) -> t.JobOutcome:
        """POST /v1/jobs/{id}/result: an in-house worker's outcome, success or failed."""
        return await self._send(calls.report_job_result(job_id, status, result_url, error))

    async def quote(self, operation: str, **options: Unpack[calls.QuoteOptions]) -> t.Quote:
        """POST /v1/quote: the price, and with an account whether it can afford it."""
        return await self._send(calls.quote(operation, options))

    async def get_pricing(self) -> dict[str, Any]:
        """GET /v1/pricing: the catalogue."""
        return await self._send(calls.get_pricing())

    async def get_plans(self) -> dict[str, Any]:
        """GET /v1/plans: plans and feature limits."""
        return await self._send(calls.get_plans())

    async def batch(
        self, operations: list[dict[str, Any]], *, idempotency_key: str | None = None
    ) -> t.BatchResult:
        """POST /v1/batch: up to 1,000 operations in one transaction, a result each (server key)."""
        return await self._send(calls.batch(operations, idempotency_key))

    async def create_token(self, account_id: str, ttl_seconds: int | None = None) -> t.Token:
        """POST /v1/tokens: a user token for a browser (server key)."""
        return await self._send(calls.create_token(account_id, ttl_seconds))

    async def create_webhook_endpoint(
        self, url: str, events: list[str], *, idempotency_key: str | None = None
    ) -> t.WebhookEndpoint:
        """POST /v1/webhook-endpoints: the answer holds the signing `secret`, shown once."""
        return await self._send(calls.create_webhook_endpoint(url, events, idempotency_key))

    async def list_webhook_endpoints(self) -> t.WebhookEndpointList:
        """GET /v1/webhook-endpoints."""
        return await self._send(calls.list_webhook_endpoints())

    async def delete_webhook_endpoint(self, endpoint_id: str) -> t.WebhookEndpoint:
        """DELETE /v1/webhook-endpoints/{id}."""
        return await self._send(calls.delete_webhook_endpoint(endpoint_id))

    async def list_webhook_deliveries(
        self, endpoint_id: str, limit: int | None = None
    ) -> t.WebhookDeliveries:
        """GET /v1/webhook-endpoints/{id}/deliveries: attempts, newest first."""
        return await self._send(calls.list_webhook_deliveries(endpoint_id, limit))

    async def enable_webhook_endpoint(self, endpoint_id: str) -> t.WebhookEndpoint:
        """POST /v1/webhook-endpoints/{id}/enable: a disabled endpoint enabled again (what
        accumulated meanwhile is delivered, in order); an enabled one as it is."""
        return await self._send(calls.enable_webhook_endpoint(endpoint_id))

    async def test_webhook_endpoint(self, endpoint_id: str) -> t.WebhookTestOutcome:
        """POST /v1/webhook-endpoints/{id}/test: one signed `webhook.test` event sent now,
        disabled or not; the answer is the attempt's outcome (ok, status_code, error)."""
        return await self._send(calls.test_webhook_endpoint(endpoint_id))

    async def resend_webhook_events(
        self, endpoint_id: str, account_id: str, from_seq: int
    ) -> t.WebhookResend:
        """POST /v1/webhook-endpoints/{id}/resend: the account's events from `from_seq`
        delivered again (at least once: dedupe by account and seq)."""
        return await self._send(calls.resend_webhook_events(endpoint_id, account_id, from_seq))
