"""Request bodies. Strict: a string or a float where an integer belongs is an error, as is an
unknown field, so a typo never silently changes what a request does."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from api.tokens import MAX_TTL_S as MAX_TOKEN_TTL_S
from core.errors import InvalidInput
from core.job_service import MAX_JOB_TTL_S
from core.jobs import MAX_INPUT_BYTES
from core.metadata import MAX_KEY_LENGTH, MAX_KEYS, MAX_VALUE_LENGTH, check_metadata
from core.model import MAX_AMOUNT
from core.price_request import PriceRequest
from core.pricing import PARAM_NAMES
from core.refunds import CAPTURE, CHARGE
from core.service import MAX_HOLD_TTL_S

Ref = Field(default=None, min_length=1, max_length=256)


def _metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    try:
        return None if value is None else dict(check_metadata(value))
    except InvalidInput as exc:
        raise ValueError(exc.message) from exc


# Stripe's rules: the caller's own key-value pairs, kept and returned as given
Metadata = Annotated[
    dict[str, Any] | None,
    AfterValidator(_metadata),
    Field(
        description="Your own key-value pairs, stored and returned as given: at most "
        f"{MAX_KEYS} keys of 1-{MAX_KEY_LENGTH} characters; values are strings of at most "
        f"{MAX_VALUE_LENGTH} characters, numbers, booleans or null",
        json_schema_extra={
            "maxProperties": MAX_KEYS,
            "propertyNames": {"minLength": 1, "maxLength": MAX_KEY_LENGTH},
            "additionalProperties": {
                "anyOf": [
                    {"type": "string", "maxLength": MAX_VALUE_LENGTH},
                    {"type": "number"},
                    {"type": "boolean"},
                    {"type": "null"},
                ]
            },
        },
    ),
]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PriceBody(Body):
    operation: str = Field(min_length=1, max_length=64)
    model: str | None = Field(default=None, min_length=1, max_length=128)
    params: dict[str, Any] | None = Field(
        default=None,
        description=(
            f"Only {' and '.join(PARAM_NAMES)}, with a model or without: anything else is "
            "422 unsupported_option"
        ),
    )

    def request(self) -> PriceRequest:
        return PriceRequest(self.operation, self.model, self.params)


class AmountOrPrice(Body):
    amount: int | None = Field(default=None, ge=1, le=MAX_AMOUNT)
    price: PriceBody | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> AmountOrPrice:
        if (self.amount is None) == (self.price is None):
            raise ValueError("give exactly one of amount or price")
        return self

    def credits(self, quote: Callable[[PriceRequest], int]) -> int:
        """The amount given, or the quote of the price given."""
        if self.price is not None:
            return quote(self.price.request())
        if self.amount is None:
            raise InvalidInput("Expected an amount or a price, got neither")
        return self.amount

    def price_request(self) -> PriceRequest | None:
        return None if self.price is None else self.price.request()


class GrantBody(Body):
    amount: int | None = Field(default=None, ge=1, le=MAX_AMOUNT)
    reason: str = Field(
        default="grant", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@ -]+$"
    )
    # JSON has no datetime type: this one field parses an ISO 8601 string
    expires_at: datetime | None = Field(default=None, strict=False)
    ref: str | None = Ref
    plan: str | None = Field(default=None, min_length=1, max_length=32)
    tier: int | str | None = None
    metadata: Metadata = None

    @model_validator(mode="after")
    def _one_kind(self) -> GrantBody:
        given = [name for name in ("amount", "plan", "tier") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of amount, plan or tier")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError("expires_at needs a timezone, e.g. 2030-01-01T00:00:00Z")
        return self


class ChargeBody(AmountOrPrice):
    reason: str = Field(
        default="charge", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@ -]+$"
    )
    ref: str | None = Ref
    metadata: Metadata = None


class HoldBody(AmountOrPrice):
    account_id: str | None = Field(default=None, min_length=1, max_length=128)
    ref: str | None = Ref
    ttl_seconds: int | None = Field(default=None, ge=1, le=MAX_HOLD_TTL_S)
    metadata: Metadata = None


class CaptureBody(Body):
    amount: int | None = Field(default=None, ge=1, le=MAX_AMOUNT)


class ReleaseBody(Body):
    reason: str = Field(
        default="released", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@ -]+$"
    )


class RefundBody(Body):
    charge_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    hold_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="A captured hold: its capture is refunded",
    )
    amount: int | None = Field(
        default=None, ge=1, le=MAX_AMOUNT, description="Default: all that is left to refund"
    )
    reason: str = Field(
        default="refund", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@ -]+$"
    )
    metadata: Metadata = None

    @model_validator(mode="after")
    def _one_spend(self) -> RefundBody:
        if (self.charge_id is None) == (self.hold_id is None):
            raise ValueError("give exactly one of charge_id or hold_id")
        return self

    def spend(self) -> tuple[str, str]:
        """The spend's id and kind: a charge, or a hold's capture."""
        if self.charge_id is not None:
            return self.charge_id, CHARGE
        if self.hold_id is None:
            raise InvalidInput("Expected a charge_id or a hold_id, got neither")
        return self.hold_id, CAPTURE


class QuoteBody(PriceBody):
    account_id: str | None = Field(default=None, min_length=1, max_length=128)


class TokenBody(Body):
    account_id: str = Field(min_length=1, max_length=128)
    ttl_seconds: int | None = Field(default=None, ge=1, le=MAX_TOKEN_TTL_S)


class StreamTicketBody(Body):
    # a user token may omit it (its own account); a server key names the account
    account_id: str | None = Field(default=None, min_length=1, max_length=128)


class JobBody(PriceBody):
    account_id: str | None = Field(default=None, min_length=1, max_length=128)
    input: dict[str, Any] | None = Field(
        default=None,
        description=(
            f"What the provider needs (a prompt, options): at most {MAX_INPUT_BYTES} bytes of "
            "JSON, more is 422 input_too_large"
        ),
    )
    provider: str = Field(default="simulated", pattern=r"^[a-z0-9_-]{1,32}$")
    provider_task_id: str | None = Field(default=None, min_length=1, max_length=255)
    ttl_seconds: int | None = Field(default=None, ge=1, le=MAX_JOB_TTL_S)
    metadata: Metadata = None


class JobResultBody(Body):
    status: Literal["success", "failed"]
    result_url: str | None = Field(default=None, min_length=1, max_length=60_000)
    error: str | None = Field(default=None, max_length=1000)


class ProviderCallback(BaseModel):
    """A provider's webhook. Providers add fields of their own, so unknown ones are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)
    task_id: str = Field(min_length=1, max_length=255)
    status: str = Field(min_length=1, max_length=32)
    result_url: str | None = Field(default=None, min_length=1, max_length=60_000)
    error: str | None = Field(default=None, max_length=1000)
    result: dict[str, Any] | None = None  # BFL puts the URL in result.sample


class PaymentEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    event_id: str = Field(min_length=1, max_length=255)
    account_id: str = Field(min_length=1, max_length=128)
    tier: int | str | None = None
    plan: str | None = Field(default=None, min_length=1, max_length=32)
    points: int | None = Field(default=None, ge=1, le=MAX_AMOUNT)

    @model_validator(mode="after")
    def _one_award(self) -> PaymentEvent:
        if sum(v is not None for v in (self.tier, self.plan, self.points)) != 1:
            raise ValueError("give exactly one of tier, plan or points")
        return self


class WebhookEndpointBody(Body):
    url: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^https?://",
        description="Where deliveries are POSTed: http(s), a public address "
        "unless the operator allows private ones",
    )
    events: list[Literal["balance.updated", "job.updated", "credits.low"]] = Field(
        min_length=1, max_length=3, description="The event types to deliver"
    )


class WebhookResendBody(Body):
    account_id: str = Field(min_length=1, max_length=128, description="Whose events to resend")
    from_seq: int = Field(
        description="The first seq to deliver again (1 to the account's head); the endpoint's "
        "cursor for the account moves back to from_seq - 1, never forward"
    )
