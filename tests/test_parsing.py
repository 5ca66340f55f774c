"""The one strict JSON body parser (thinnest_analytics.parsing.json_body)."""

import pytest

from thinnest_analytics.errors import ApiError
from thinnest_analytics.parsing import json_body


def test_it_reads_a_json_body():
    assert json_body(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"a": ', "not valid JSON: Expecting value at line 1 column 7"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b"[-Infinity]", "-Infinity is not a JSON number"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_it_refuses_what_is_not_strict_json_with_a_400_that_says_why(body, says):
    with pytest.raises(ApiError) as refused:
        json_body(body)
    assert (refused.value.status, refused.value.code) == (400, "malformed_json")
    assert says in refused.value.message


def test_the_caller_names_its_error_code():
    with pytest.raises(ApiError) as refused:
        json_body(b"{", code="malformed_body")
    assert refused.value.code == "malformed_body"
