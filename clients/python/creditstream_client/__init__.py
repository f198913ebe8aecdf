"""creditstream's Python client: `Client` (sync) and `AsyncClient` (asyncio, with `stream`)."""

from creditstream_client.answers import VERSION as __version__
from creditstream_client.async_client import AsyncClient
from creditstream_client.client import Client
from creditstream_client.errors import (
    AuthenticationError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    CreditstreamError,
    DailyLimitExceeded,
    FeatureLimitExceeded,
    IdempotencyKeyReused,
    InsufficientCredits,
    InvalidState,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ProviderTaskConflict,
    RateLimited,
    RefundExceedsSpend,
    RequestInProgress,
    Unavailable,
    ValidationError,
)
from creditstream_client.retry import RetryPolicy
from creditstream_client.webhooks import verify_webhook

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "CreditstreamError",
    "DailyLimitExceeded",
    "FeatureLimitExceeded",
    "IdempotencyKeyReused",
    "InsufficientCredits",
    "InvalidState",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "ProviderTaskConflict",
    "RateLimited",
    "RefundExceedsSpend",
    "RequestInProgress",
    "RetryPolicy",
    "Unavailable",
    "ValidationError",
    "__version__",
    "verify_webhook",
]
