"""Typed results: TypedDicts mirroring the API's JSON answers (README, "HTTP API")."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict


class Price(TypedDict, total=False):
    operation: str
    model: str
    params: dict[str, Any]


class Trial(TypedDict):
    active: bool
    expires_at: str | None
    daily_limit: int
    spent_today: int


class Account(TypedDict):
    account_id: str
    balance: int
    held: int
    available: int
    plan: str | None
    trial: Trial
    seq: int
    created_at: str


class Grant(TypedDict):
    grant_id: str
    account_id: str
    amount: int
    remaining: int
    reserved: int
    reason: str
    kind: str
    ref: str | None
    metadata: dict[str, Any] | None
    expires_at: str | None
    created_at: str


class Hold(TypedDict):
    hold_id: str
    account_id: str
    amount: int
    status: str  # open, captured, released, expired
    ref: str | None
    captured_amount: int | None
    release_reason: str | None
    funding: list[dict[str, Any]] | None
    allocation: list[dict[str, Any]] | None
    metadata: dict[str, Any] | None
    price: dict[str, Any] | None
    job_id: str | None
    created_at: str
    expires_at: str
    closed_at: str | None


class Charge(TypedDict):
    charge_id: str
    account_id: str
    amount: int
    reason: str
    ref: str | None
    funding: list[dict[str, Any]]
    metadata: dict[str, Any] | None
    price: dict[str, Any] | None
    created_at: str


class Refund(TypedDict):
    refund_id: str
    account_id: str
    charge_id: str | None
    hold_id: str | None
    amount: int
    reason: str
    funding: list[dict[str, Any]]
    spent: int
    refunded: int
    refundable: int
    metadata: dict[str, Any] | None
    created_at: str


class Job(TypedDict):
    job_id: str
    account_id: str
    status: Literal["processing", "success", "failed"]
    operation: str
    model: str | None
    params: dict[str, Any] | None
    cost: int
    result_url: str | None
    error: str | None
    provider: str
    provider_task_id: str | None
    hold_id: str | None
    created_at: str
    updated_at: str | None
    expires_at: str | None
    completed_at: str | None
    metadata: dict[str, Any] | None


class GrantResult(TypedDict):
    grant: Grant
    account: Account


class ChargeResult(TypedDict):
    charge: Charge
    account: Account


class HoldResult(TypedDict):
    hold: Hold
    account: Account


class RefundResult(TypedDict):
    refund: Refund
    account: Account


class JobResult(TypedDict):
    job: Job
    account: Account


class EntriesPage(TypedDict):
    entries: list[dict[str, Any]]
    has_more: bool
    next_after: int


class EventsPage(TypedDict):
    account_id: str
    events: list[dict[str, Any]]
    seq: int
    next_after_seq: int
    # after_seq was past the journal's retention: `events` holds the account's snapshot instead
    reset: NotRequired[bool]


class Usage(TypedDict):
    account_id: str
    period: str
    since: str
    credits_used: int
    credits_refunded: int
    operations: dict[str, dict[str, int]]
    models: dict[str, dict[str, int]]
    days: list[dict[str, Any]]
    jobs: dict[str, int]


class JobsPage(TypedDict):
    account_id: str
    jobs: list[Job]


class Quote(TypedDict):
    cost: int
    account_id: NotRequired[str]
    available: NotRequired[int]
    affordable: NotRequired[bool]
    shortfall: NotRequired[int]
    daily_limit_remaining: NotRequired[int]
    feature_limit: NotRequired[dict[str, Any]]


class Token(TypedDict):
    token: str
    account_id: str
    expires_at: str


class BatchPartResult(TypedDict):
    status: int
    body: dict[str, Any]


class BatchResult(TypedDict):
    results: list[BatchPartResult]


class WebhookEndpoint(TypedDict):
    id: str
    url: str
    events: list[str]
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None
    created_at: str
    disabled_at: str | None
    failing_since: str | None
    consecutive_failures: int
    next_attempt_at: str | None
    secret: NotRequired[str]  # only in the answer to the registration
    deleted: NotRequired[bool]


class WebhookEndpointList(TypedDict):
    endpoints: list[WebhookEndpoint]


class WebhookDeliveries(TypedDict):
    endpoint: WebhookEndpoint
    deliveries: list[dict[str, Any]]


class WebhookTestOutcome(TypedDict):
    ok: bool  # the receiver answered 2xx
    status_code: int | None  # None: no answer (refused, unreachable, past the deadline)
    error: str | None
    duration_ms: int
    event: dict[str, Any]  # the webhook.test event sent: type, id, endpoint_id, created_at


class WebhookResend(TypedDict):
    account_id: str
    from_seq: int
    events: int  # how many of the account's events (from from_seq) are delivered again


class JobOutcome(TypedDict):
    job: Job
    changed: bool  # false when the job had this outcome already (a repeated report)
    account: Account
