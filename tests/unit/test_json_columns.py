"""JSON columns read back whatever the standard parser read back, also where orjson refuses."""

from __future__ import annotations

import json

import pytest

from storage.json_columns import json_loads


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "b": [true, null, 2.5, "x"]}',
        '{"big": 123456789012345678901234567890}',  # orjson would read a float
        '{"edge": 9223372036854775807, "neg": -1234567890123456789012}',
        '{"lone": "\\ud800"}',  # a lone surrogate: orjson refuses
        '{"k": 1, "k": 2}',
        "[]",
    ],
)
def test_a_json_column_reads_as_the_standard_parser_reads_it(text: str) -> None:
    read = json_loads(text)
    assert read == json.loads(text)
    assert repr(read) == repr(json.loads(text)), "the same types too (an int stays an int)"


def test_text_that_is_not_json_still_fails() -> None:
    with pytest.raises(ValueError):
        json_loads("{not json")
