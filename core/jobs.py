"""Generation jobs: `processing → success | failed`, charged only once the result is stored."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.errors import InputTooLarge, InvalidState
from core.events import iso

PROCESSING, SUCCESS, FAILED = "processing", "success", "failed"
# what a job may carry for its provider (a prompt, options): seed 001's 32,000-character script
# fits; more would be free storage, as a failed job gives its credits back
MAX_INPUT_BYTES = 32 * 1024


def check_input(raw: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of a job's `input`, or InputTooLarge past MAX_INPUT_BYTES of compact JSON."""
    value = dict(raw or {})
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_INPUT_BYTES:
        raise InputTooLarge(
            f"Expected a job input of at most {MAX_INPUT_BYTES} bytes of JSON, got {size}",
            limit=MAX_INPUT_BYTES,
            size=size,
        )
    return value


@dataclass
class Job:
    job_id: str
    account_id: str
    operation: str
    model: str | None
    cost: int
    status: str
    provider: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    params: dict[str, Any] = field(default_factory=dict)
    input: dict[str, Any] = field(default_factory=dict)
    provider_task_id: str | None = None
    hold_id: str | None = None
    result_url: str | None = None
    error: str | None = None
    completed_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # the caller's

    def is_due(self, now: datetime) -> bool:
        return self.status == PROCESSING and self.expires_at <= now

    def check_can_finish(self, status: str) -> bool:
        """True when the job is processing; False for a repeat of the outcome it already has.

        A different outcome after the job finished (FAILED after SUCCESS, or a success that
        arrives after a timeout) is refused: nothing may change a finished job.
        """
        if self.status == PROCESSING:
            return True
        if self.status == status:
            return False
        raise InvalidState(
            f"Job {self.job_id} already {self.status}; a {status} report cannot change it",
            job_status=self.status,
        )

    def succeed(self, result_url: str, now: datetime) -> None:
        self.status, self.result_url, self.error = SUCCESS, result_url, None
        self.updated_at = self.completed_at = now

    def fail(self, error: str, now: datetime) -> None:
        self.status, self.error = FAILED, error[:1000]
        self.updated_at = self.completed_at = now

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "account_id": self.account_id,
            "status": self.status,
            "operation": self.operation,
            "model": self.model,
            "params": self.params,
            "cost": self.cost,
            "result_url": self.result_url,
            "error": self.error,
            "provider": self.provider,
            "provider_task_id": self.provider_task_id,
            "hold_id": self.hold_id,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "expires_at": iso(self.expires_at),
            "completed_at": iso(self.completed_at),
            "metadata": self.metadata,
        }
