"""The shipped price catalogue against SPEC §2 "Pricing", and the catalogue's own validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import core
from core.errors import InvalidInput, UnknownModel, UnknownOperation, UnsupportedOption
from core.pricing import Catalogue, CatalogueError

SHIPPED = (Path(core.__file__).parent / "pricing.toml").read_text()


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.from_toml(SHIPPED)


MODEL_PRICES = [
    ("video", "MiniMax-Hailuo-02", {"resolution": "512P", "duration": 6}, 320),
    ("video", "MiniMax-Hailuo-02", {"resolution": "512P", "duration": 10}, 420),
    ("video", "MiniMax-Hailuo-02", {"resolution": "768P", "duration": 6}, 680),
    ("video", "MiniMax-Hailuo-02", {"resolution": "768P", "duration": 10}, 1240),
    ("video", "MiniMax-Hailuo-02", {"resolution": "1080P", "duration": 6}, 1100),
    ("video", "T2V-01-Director", None, 980),
    ("video", "I2V-01-Director", None, 980),
    ("video", "S2V-01", None, 1420),
    ("video", "Gen-4 Turbo", {"duration": 5}, 620),
    ("video", "Gen-4 Turbo", {"duration": 10}, 1120),
    ("video", "Gen-3a Turbo", {"duration": 5}, 620),
    ("video", "Gen-3a Turbo", {"duration": 10}, 1120),
    ("video", "Gen-4 Aleph", {"duration": 10}, 3120),
    ("image", "FLUX.1 Kontext [pro]", None, 110),
    ("image", "FLUX.1 Kontext [max]", None, 190),
    ("image", "FLUX 1.1 [pro] Ultra", None, 150),
    ("image", "FLUX.1 [dev]", None, 90),
    ("image", "FLUX.1 [pro]", None, 130),
    ("music", "Music 1.5", None, 90),
    ("music", "Music 1.5", {"duration": 30}, 90),
    ("music", "Music 1.5", {"duration": 90}, 90),
]


@pytest.mark.parametrize(
    ("operation", "model", "params", "credits"),
    MODEL_PRICES,
    ids=[f"{m}-{p}" for _, m, p, _ in MODEL_PRICES],
)
def test_every_model_price_in_the_spec(
    catalogue: Catalogue, operation: str, model: str, params: dict[str, Any] | None, credits: int
) -> None:
    assert catalogue.quote(operation, model, params) == credits


@pytest.mark.parametrize(
    ("operation", "model", "params"),
    [
        ("video", "MiniMax-Hailuo-02", {"resolution": "1080P", "duration": 10}),
        ("video", "MiniMax-Hailuo-02", {"resolution": "720P", "duration": 6}),
        ("video", "MiniMax-Hailuo-02", {"resolution": "768P", "duration": 8}),
        ("video", "MiniMax-Hailuo-02", {"resolution": "768P"}),
        ("video", "MiniMax-Hailuo-02", None),
        ("video", "Gen-4 Turbo", {"duration": 7}),
        ("video", "Gen-4 Aleph", {"duration": 5}),
        ("music", "Music 1.5", {"duration": 91}),
        ("music", "Music 1.5", {"duration": 120}),
    ],
)
def test_options_a_model_does_not_offer_are_unsupported(
    catalogue: Catalogue, operation: str, model: str, params: dict[str, Any] | None
) -> None:
    with pytest.raises(UnsupportedOption) as caught:
        catalogue.quote(operation, model, params)

    assert caught.value.details["model"] == model


def test_unsupported_option_lists_what_is_offered(catalogue: Catalogue) -> None:
    with pytest.raises(UnsupportedOption) as caught:
        catalogue.quote("video", "MiniMax-Hailuo-02", {"resolution": "1080P", "duration": 10})

    assert {"resolution": "1080P", "duration": 6, "credits": 1100} in caught.value.details[
        "offered"
    ]


def test_resolution_is_case_insensitive(catalogue: Catalogue) -> None:
    assert (
        catalogue.quote("video", "MiniMax-Hailuo-02", {"resolution": "768p", "duration": 10})
        == 1240
    )


@pytest.mark.parametrize(
    ("operation", "credits"),
    [
        ("audio", 1),
        ("video", 2),
        ("script_generation", 1),
        ("voice_creation", 5),
        ("video_processing", 2),
        ("chat_refinement", 1),
    ],
)
def test_operation_base_prices(catalogue: Catalogue, operation: str, credits: int) -> None:
    assert catalogue.quote(operation) == credits


@pytest.mark.parametrize("operation", ["image", "music"])
def test_image_and_music_need_a_model(catalogue: Catalogue, operation: str) -> None:
    with pytest.raises(UnsupportedOption, match="needs a model"):
        catalogue.quote(operation)


def test_the_shipped_catalogue_has_exactly_the_spec_operations(catalogue: Catalogue) -> None:
    assert set(catalogue.operations) == {
        "audio",
        "video",
        "image",
        "music",
        "script_generation",
        "voice_creation",
        "video_processing",
        "chat_refinement",
    }


def test_the_shipped_catalogue_has_exactly_the_spec_models(catalogue: Catalogue) -> None:
    assert set(catalogue.models) == {model for _, model, _, _ in MODEL_PRICES}


@pytest.mark.parametrize("model", ["Unknown-Model", "minimax-hailuo-02", "FLUX.1 [PRO]", ""])
def test_an_unknown_model_is_rejected(catalogue: Catalogue, model: str) -> None:
    with pytest.raises(UnknownModel) as caught:
        catalogue.quote("video", model)

    assert caught.value.details["model"] == model


@pytest.mark.parametrize(
    ("operation", "model"),
    [
        ("image", "MiniMax-Hailuo-02"),
        ("video", "FLUX.1 [pro]"),
        ("video", "Music 1.5"),
        ("music", "Gen-4 Turbo"),
        ("audio", "FLUX.1 [dev]"),
    ],
)
def test_a_model_used_with_another_operation_is_rejected(
    catalogue: Catalogue, operation: str, model: str
) -> None:
    with pytest.raises(UnknownModel, match="belongs to"):
        catalogue.quote(operation, model)


@pytest.mark.parametrize("operation", ["teleport", "Video", "", None, 42])
def test_an_unknown_operation_is_rejected(catalogue: Catalogue, operation: Any) -> None:
    with pytest.raises(UnknownOperation):
        catalogue.quote(operation)


@pytest.mark.parametrize(
    "params",
    [
        {"fps": 30},
        {"resolution": "768P", "duration": 6, "seed": 1},
    ],
)
def test_unknown_params_are_rejected(catalogue: Catalogue, params: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedOption, match="Unknown params"):
        catalogue.quote("video", "MiniMax-Hailuo-02", params)


def test_unknown_params_are_rejected_for_a_single_price_model(catalogue: Catalogue) -> None:
    with pytest.raises(UnsupportedOption):
        catalogue.quote("image", "FLUX.1 [dev]", {"style": "anime"})


@pytest.mark.parametrize(
    "params",
    [
        {"resolution": 768, "duration": 6},
        {"resolution": ["768P"], "duration": 6},
        {"resolution": "768P", "duration": "6"},
        {"resolution": "768P", "duration": 6.0},
        {"resolution": "768P", "duration": True},
        {"resolution": "768P", "duration": 0},
        {"resolution": "768P", "duration": -6},
        {"resolution": "768P", "duration": 3601},
        {"resolution": "768P", "duration": 2**63},
    ],
)
def test_bad_param_types_and_values_are_rejected(
    catalogue: Catalogue, params: dict[str, Any]
) -> None:
    with pytest.raises(UnsupportedOption):
        catalogue.quote("video", "MiniMax-Hailuo-02", params)


def test_pricing_errors_are_invalid_input() -> None:
    for error in (UnknownModel, UnknownOperation, UnsupportedOption):
        assert issubclass(error, InvalidInput)


def test_models_for_lists_an_operations_models(catalogue: Catalogue) -> None:
    assert catalogue.models_for("music") == ["Music 1.5"]
    assert len(catalogue.models_for("image")) == 5


def test_provider_of_a_model(catalogue: Catalogue) -> None:
    assert catalogue.provider_of("Gen-4 Aleph") == "runway"
    assert catalogue.provider_of("nope") is None
    assert catalogue.provider_of(None) is None


# -- catalogue validation ------------------------------------------------------------------------

VALID = """
[operations.video]
base = 2
[operations.image]
requires_model = true

[[models]]
id = "A"
operation = "video"
prices = [{ credits = 10 }]
"""


def test_a_minimal_catalogue_loads() -> None:
    catalogue = Catalogue.from_toml(VALID)

    assert catalogue.quote("video", "A") == 10
    assert catalogue.provider_of("A") == "simulated"


@pytest.mark.parametrize(
    "text",
    [
        "[operations.video\nbase = 2",
        "[operations.video]\nbase = ",
        "[operations.video]\nbase = 2\nbase = 3",
    ],
)
def test_broken_toml_is_a_catalogue_error(text: str) -> None:
    with pytest.raises(CatalogueError, match="not valid TOML"):
        Catalogue.from_toml(text)


def test_a_duplicate_model_is_a_catalogue_error() -> None:
    duplicate = VALID + '[[models]]\nid = "A"\noperation = "video"\nprices = [{ credits = 20 }]\n'

    with pytest.raises(CatalogueError, match="listed twice"):
        Catalogue.from_toml(duplicate)


def test_a_model_with_an_unknown_operation_is_a_catalogue_error() -> None:
    text = VALID + '[[models]]\nid = "B"\noperation = "hologram"\nprices = [{ credits = 5 }]\n'

    with pytest.raises(CatalogueError, match="unknown operation"):
        Catalogue.from_toml(text)


@pytest.mark.parametrize("credits", ["0", "-5", "1.5", "true", '"10"'])
def test_a_model_price_that_is_not_a_positive_integer_is_a_catalogue_error(credits: str) -> None:
    text = VALID.replace("credits = 10", f"credits = {credits}")

    with pytest.raises(CatalogueError, match="positive integer"):
        Catalogue.from_toml(text)


@pytest.mark.parametrize("base", ["0", "-1", "2.5"])
def test_an_operation_base_that_is_not_a_positive_integer_is_a_catalogue_error(base: str) -> None:
    with pytest.raises(CatalogueError, match="positive integer"):
        Catalogue.from_toml(VALID.replace("base = 2", f"base = {base}"))


@pytest.mark.parametrize("key", ["duration", "max_duration"])
def test_a_non_positive_duration_is_a_catalogue_error(key: str) -> None:
    with pytest.raises(CatalogueError):
        Catalogue.from_toml(VALID.replace("{ credits = 10 }", f"{{ {key} = 0, credits = 10 }}"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "non-empty \\[operations\\]"),
        ("[operations]\n", "non-empty \\[operations\\]"),
        ("operations = 3\n", "non-empty \\[operations\\]"),
        ("[operations.video]\n", "needs a base price"),
        (VALID.replace("prices = [{ credits = 10 }]", "prices = []"), "at least one price"),
        (VALID.replace("prices = [{ credits = 10 }]", ""), "at least one price"),
        (VALID.replace('id = "A"', 'id = ""'), "needs an id"),
        (VALID.replace("{ credits = 10 }", "{ credits = 10, fps = 30 }"), "unknown price keys"),
        (
            VALID.replace("{ credits = 10 }", "{ credits = 10, resolution = 768 }"),
            "resolution must be a string",
        ),
    ],
)
def test_other_malformed_catalogues_are_catalogue_errors(text: str, message: str) -> None:
    with pytest.raises(CatalogueError, match=message):
        Catalogue.from_toml(text)
