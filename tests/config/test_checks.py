"""The value checks every schema shares, bound to the caller's error family."""

from __future__ import annotations

import pytest

from mess_ros.config.checks import Checks, as_kind
from mess_ros.errors import MessError


class SampleError(MessError):
    """Stands for a subpackage's own family."""


checks = Checks(SampleError)


def test_bools_are_not_numbers_and_integers_are_floats() -> None:
    assert as_kind(int, True) is None and as_kind(float, False) is None
    assert as_kind(bool, 1) is None
    converted = as_kind(float, 100)
    assert converted == 100.0 and isinstance(converted, float)
    assert as_kind(str, 3) is None and as_kind(str, "") == ""


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (lambda: checks.integer(2.5, "layers"), "layers must be an integer, got 2.5"),
        (lambda: checks.integer(True, "layers"), "layers must be an integer, got True"),
        (lambda: checks.integer(0, "layers", minimum=1), "layers must be >= 1, got 0"),
        (lambda: checks.number("fast", "rate"), "rate must be a number, got 'fast'"),
        (lambda: checks.boolean(1, "flag"), "flag must be true or false, got 1"),
        (lambda: checks.string(3, "name"), "name must be a string, got 3"),
        (lambda: checks.string("", "name", non_empty=True), "name must be a non-empty string"),
        (lambda: checks.strings("a", "names"), "names must be a list of strings, got 'a'"),
        (lambda: checks.strings(["a", 1], "names"), "names must be a string, got 1"),
        (lambda: checks.pair([1], "hw", checks.integer), "hw must be a list of two values"),
        (lambda: checks.pair([1, "x"], "hw", checks.integer), "hw must be an integer, got 'x'"),
        (lambda: checks.mapping([1], "spec"), "spec must be a mapping, got list"),
    ],
)
def test_each_check_raises_the_bound_family_naming_the_field(check: object, message: str) -> None:
    with pytest.raises(SampleError) as info:
        check()  # type: ignore[operator]
    assert message in str(info.value)


def test_good_values_come_back_typed() -> None:
    assert checks.integer(3, "n", minimum=3) == 3
    assert checks.number(2, "x") == 2.0
    assert checks.pair((1, 2), "hw", checks.integer) == (1, 2)
    assert checks.strings(("a", "b"), "names") == ["a", "b"]
    assert checks.mapping({"a": 1}, "spec") == {"a": 1}


def test_keys_reject_missing_and_unknown_ones() -> None:
    with pytest.raises(SampleError, match="spec is missing name"):
        checks.keys({"width": 1}, "spec", {"name"}, {"width"})
    with pytest.raises(SampleError, match="spec has unknown keys widht; allowed: name, width"):
        checks.keys({"name": "a", "widht": 1}, "spec", {"name"}, {"width"})
    checks.keys({"name": "a"}, "spec", {"name"}, {"width"})
