"""The price catalogue and `quote`. The catalogue is data (core/pricing.toml), validated on load."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from typing import Any

from core.errors import UnknownModel, UnknownOperation, UnsupportedOption
from core.model import check_amount

PARAM_NAMES = ("resolution", "duration")
MAX_DURATION_S = 3600
MAX_RESOLUTION_LENGTH = 16  # "1080P", "4K": a label, not a place to store text


class CatalogueError(ValueError):
    """The pricing file is not a valid catalogue; the message names the offending item."""


def parse_toml(text: str, what: str, error: type[Exception]) -> dict[str, Any]:
    """A data file's TOML, or `error` saying which file is not valid TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} is not valid TOML: {exc}") from exc


@dataclass(frozen=True)
class Price:
    credits: int
    resolution: str | None = None
    duration: int | None = None
    max_duration: int | None = None

    def matches(self, resolution: str | None, duration: int | None) -> bool:
        if self.resolution is not None and resolution != self.resolution:
            return False
        if self.duration is not None and duration != self.duration:
            return False
        if self.max_duration is not None and duration is not None:
            return duration <= self.max_duration
        return True

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Model:
    id: str
    operation: str
    provider: str
    prices: tuple[Price, ...]

    def price_for(self, params: dict[str, Any]) -> int:
        resolution, duration = _read_params(params)
        if len(self.prices) == 1 and not params:
            return self.prices[0].credits
        for price in self.prices:
            if price.matches(resolution, duration):
                return price.credits
        raise UnsupportedOption(
            f"{self.id} is not offered with {params or 'no params'}; offered: "
            + "; ".join(_describe(p) for p in self.prices),
            model=self.id,
            offered=[p.to_dict() for p in self.prices],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "operation": self.operation,
            "provider": self.provider,
            "prices": [p.to_dict() for p in self.prices],
        }


@dataclass(frozen=True)
class Operation:
    name: str
    base: int | None
    requires_model: bool


@dataclass(frozen=True)
class Catalogue:
    operations: dict[str, Operation]
    models: dict[str, Model] = field(default_factory=dict)

    @classmethod
    def from_toml(cls, text: str) -> Catalogue:
        return cls.from_dict(parse_toml(text, "pricing file", CatalogueError))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Catalogue:
        operations = {
            name: _parse_operation(name, spec) for name, spec in _table(data, "operations").items()
        }
        models: dict[str, Model] = {}
        for spec in data.get("models", []):
            model = _parse_model(spec, operations)
            if model.id in models:
                raise CatalogueError(f"model {model.id!r} is listed twice")
            models[model.id] = model
        return cls(operations, models)

    def quote(
        self, operation: str, model: str | None = None, params: dict[str, Any] | None = None
    ) -> int:
        """The price of one generation: the model's price for `params`, or the operation's base.
        `params` are checked with or without a model: they are stored with the hold and its
        journal entries, so an unchecked one would be free room for anything."""
        check_params(params)
        op = self.operations.get(operation) if isinstance(operation, str) else None
        if op is None:
            raise UnknownOperation(
                f"Unknown operation {operation!r}; expected one of "
                f"{', '.join(sorted(self.operations))}"
            )
        if model is None:
            if op.base is None:
                raise UnsupportedOption(
                    f"Operation {operation!r} needs a model; one of "
                    f"{', '.join(self.models_for(operation))}"
                )
            return op.base
        found = self.models.get(model)
        if found is None:
            raise UnknownModel(f"Unknown model {model!r}", model=model)
        if found.operation != operation:
            raise UnknownModel(
                f"Model {model!r} belongs to {found.operation!r}, not {operation!r}", model=model
            )
        return found.price_for(params or {})

    def models_for(self, operation: str) -> list[str]:
        return [m.id for m in self.models.values() if m.operation == operation]

    def provider_of(self, model: str | None) -> str | None:
        return None if model is None or model not in self.models else self.models[model].provider

    def to_dict(self) -> dict[str, Any]:
        return {
            "operations": [
                {
                    "operation": op.name,
                    "base": op.base,
                    "requires_model": op.requires_model,
                    "models": self.models_for(op.name),
                }
                for op in self.operations.values()
            ],
            "models": [m.to_dict() for m in self.models.values()],
        }


def check_params(params: object) -> None:
    """A price's params: only `resolution` (a short label) and `duration` (whole seconds), or
    UnsupportedOption, whatever the operation and model."""
    if params is None:
        return
    if not isinstance(params, dict):
        raise UnsupportedOption(f"Expected params as an object, got {type(params).__name__}")
    _read_params(params)


def _read_params(params: dict[str, Any]) -> tuple[str | None, int | None]:
    unknown = sorted(str(name)[:40] for name in set(params) - set(PARAM_NAMES))
    if unknown:
        raise UnsupportedOption(f"Unknown params {unknown[:5]}; expected only {list(PARAM_NAMES)}")
    resolution = params.get("resolution")
    if resolution is not None and not isinstance(resolution, str):
        raise UnsupportedOption(
            f"Expected resolution as a string like '768P', got {str(resolution)[:40]!r}"
        )
    if resolution is not None and not 1 <= len(resolution) <= MAX_RESOLUTION_LENGTH:
        raise UnsupportedOption(
            f"Expected resolution of 1-{MAX_RESOLUTION_LENGTH} characters "
            f"like '768P', got {len(resolution)}"
        )
    duration = params.get("duration")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, int):
            raise UnsupportedOption(
                f"Expected duration in whole seconds, got {str(duration)[:40]!r}"
            )
        if not 1 <= duration <= MAX_DURATION_S:
            raise UnsupportedOption(
                f"Expected duration between 1 and {MAX_DURATION_S} s, got {duration}"
            )
    return (resolution.upper() if resolution else None), duration


def _describe(price: Price) -> str:
    parts = [price.resolution or "", f"{price.duration}s" if price.duration else ""]
    if price.max_duration:
        parts.append(f"up to {price.max_duration}s")
    label = " ".join(p for p in parts if p) or "any"
    return f"{label} = {price.credits}"


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict) or not value:
        raise CatalogueError(f"pricing file needs a non-empty [{key}] table")
    return value


def _parse_operation(name: str, spec: Any) -> Operation:
    if not isinstance(spec, dict):
        raise CatalogueError(f"operation {name!r} must be a table")
    base = spec.get("base")
    requires_model = bool(spec.get("requires_model", False))
    if base is None and not requires_model:
        raise CatalogueError(f"operation {name!r} needs a base price or requires_model = true")
    if base is not None:
        _credits(base, f"operation {name!r}")
    return Operation(name, base, requires_model)


def _parse_model(spec: Any, operations: dict[str, Operation]) -> Model:
    if not isinstance(spec, dict) or not isinstance(spec.get("id"), str) or not spec["id"]:
        raise CatalogueError(f"every model needs an id, got {spec!r}")
    model_id = spec["id"]
    if spec.get("operation") not in operations:
        raise CatalogueError(
            f"model {model_id!r} names unknown operation {spec.get('operation')!r}"
        )
    raw_prices = spec.get("prices")
    if not isinstance(raw_prices, list) or not raw_prices:
        raise CatalogueError(f"model {model_id!r} needs at least one price")
    prices = tuple(_parse_price(model_id, p) for p in raw_prices)
    return Model(model_id, spec["operation"], str(spec.get("provider", "simulated")), prices)


def _parse_price(model_id: str, spec: Any) -> Price:
    where = f"model {model_id!r}"
    if not isinstance(spec, dict):
        raise CatalogueError(f"{where}: each price must be a table")
    unknown = set(spec) - {"credits", "resolution", "duration", "max_duration"}
    if unknown:
        raise CatalogueError(f"{where}: unknown price keys {sorted(unknown)}")
    resolution = spec.get("resolution")
    if resolution is not None and not isinstance(resolution, str):
        raise CatalogueError(f"{where}: resolution must be a string")
    for key in ("duration", "max_duration"):
        if key in spec:
            _credits(spec[key], f"{where} {key}")
    return Price(
        _credits(spec.get("credits"), where),
        resolution.upper() if resolution else None,
        spec.get("duration"),
        spec.get("max_duration"),
    )


def _credits(value: Any, where: str) -> int:
    try:
        return check_amount(value)
    except Exception as exc:
        raise CatalogueError(f"{where}: expected a positive integer, got {value!r}") from exc
