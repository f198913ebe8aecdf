"""What a caller asks to be priced: an operation, and its model and params when it has them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PriceRequest:
    operation: str
    model: str | None = None
    params: dict[str, Any] | None = None

    def metadata(self) -> dict[str, Any]:
        return {"operation": self.operation, "model": self.model, "params": self.params or {}}
