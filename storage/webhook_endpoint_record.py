"""An outbound webhook endpoint as stored: the `Endpoint` record, its two statuses, its row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.events import iso

ENABLED, DISABLED = "enabled", "disabled"


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    url: str
    events: tuple[str, ...]
    secret: str
    status: str
    disabled_reason: str | None
    created_at: datetime
    disabled_at: datetime | None
    failing_since: datetime | None
    failures: int
    next_attempt_at: datetime | None

    @property
    def enabled(self) -> bool:
        return self.status == ENABLED

    def to_dict(self, with_secret: bool = False) -> dict[str, Any]:
        """What the API shows; the secret only once, in the answer to the registration."""
        shown: dict[str, Any] = {
            "id": self.endpoint_id,
            "url": self.url,
            "events": list(self.events),
            "status": self.status,
            "disabled_reason": self.disabled_reason,
            "created_at": iso(self.created_at),
            "disabled_at": iso(self.disabled_at),
            "failing_since": iso(self.failing_since),
            "consecutive_failures": self.failures,
            "next_attempt_at": iso(self.next_attempt_at),
        }
        if with_secret:
            shown["secret"] = self.secret
        return shown


def endpoint_from_row(row: Any) -> Endpoint:
    return Endpoint(
        row.id,
        row.url,
        tuple(row.events),
        row.secret,
        row.status,
        row.disabled_reason,
        row.created_at,
        row.disabled_at,
        row.failing_since,
        int(row.failures),
        row.next_attempt_at,
    )
