"""Domain errors. The API maps each to one status code in one place (api/errors.py)."""

from __future__ import annotations

from typing import Any


class InvariantViolated(Exception):
    """A rule the engine relies on does not hold (grants that do not cover the balance, a hold
    reserving an unknown grant): a bug, never the caller's doing. Not a CreditError, so it is
    neither answered as a refusal nor stored as one; the API logs it and answers 500."""


class CreditError(Exception):
    """Base of every error the engine raises on purpose."""

    code = "credit_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(CreditError):
    code = "not_found"


class InvalidInput(CreditError):
    code = "invalid_input"


class InvalidAccountId(InvalidInput):
    code = "invalid_account_id"


class AmountTooLarge(InvalidInput):
    code = "amount_too_large"


class UnknownOperation(InvalidInput):
    code = "unknown_operation"


class UnknownModel(InvalidInput):
    code = "unknown_model"


class UnsupportedOption(InvalidInput):
    code = "unsupported_option"


class UnknownPlan(InvalidInput):
    code = "unknown_plan"


class InsufficientCredits(CreditError):
    code = "insufficient_credits"

    def __init__(self, required: int, available: int) -> None:
        shortfall = required - available
        super().__init__(
            f"Insufficient credits. You need {shortfall} more credits for this.",
            required=required,
            available=available,
            shortfall=shortfall,
        )


class DailyLimitExceeded(CreditError):
    code = "daily_limit_exceeded"

    def __init__(self, limit: int, spent_today: int, requested: int, retry_after: int) -> None:
        super().__init__(
            f"Trial accounts may spend or hold at most {limit} credits per UTC day; "
            f"{spent_today} used today, {requested} requested.",
            limit=limit,
            spent_today=spent_today,
            requested=requested,
            retry_after=retry_after,
        )


class FeatureLimitExceeded(CreditError):
    code = "feature_limit_exceeded"

    def __init__(
        self, operation: str, plan: str, limit: int, used: int, period: str, retry_after: int
    ) -> None:
        super().__init__(
            f"The {plan} plan allows {limit} {operation} per {period}; {used} used. "
            f"Try again in {retry_after} s or upgrade the plan.",
            operation=operation,
            plan=plan,
            period=period,
            limit=limit,
            used=used,
            retry_after=retry_after,
        )


class InvalidMetadata(InvalidInput):
    code = "invalid_metadata"


class InputTooLarge(InvalidInput):
    code = "input_too_large"


class InvalidState(CreditError):
    code = "invalid_state"


class RefundExceedsSpend(InvalidState):
    code = "refund_exceeds_spend"

    def __init__(self, spend_id: str, spent: int, refunded: int, requested: int) -> None:
        left = spent - refunded
        super().__init__(
            f"{spend_id} spent {spent} credits and {refunded} were refunded already: at most "
            f"{left} more can be refunded, {requested} were asked for.",
            spent=spent,
            refunded=refunded,
            refundable=left,
            requested=requested,
        )


class ConcurrentUpdate(CreditError):
    """A row changed under a lock that should have prevented it; the transaction is retried."""

    code = "concurrent_update"


class RequestInProgress(CreditError):
    """Another request with the same idempotency key is running, or took the key over."""

    code = "request_in_progress"


class IdempotencyKeyReused(InvalidInput):
    """The key was first used with a different request."""

    code = "idempotency_key_reused"
