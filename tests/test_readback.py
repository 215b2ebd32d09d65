"""ReadBack: every value read back from the library's own files checked, one line naming the file."""
import math
import re

import pytest

from hierclf.errors import RunError
from hierclf.readback import ReadBack, parse_json


def test_damaged_values_end_in_one_line_naming_the_file_and_the_remedy():
    check = ReadBack("run/auto.json", "delete it to choose again")
    assert check.field({"lr": 0.1}, "lr") == 0.1 and check.number(3, "n", whole=True, lo=0) == 3
    cases = [(lambda: check.field([], "lr"), "run/auto.json: the file is [], not a table; delete it to choose again"),
             (lambda: check.field({}, "lr"), "run/auto.json: lr is missing"),
             (lambda: check.text(5, "name"), "name is 5, not text"),
             (lambda: check.number(True, "n"), "n is True, not a finite number"),
             (lambda: check.number(math.nan, "n"), "n is nan, not a finite number"),
             (lambda: check.number(1.5, "n", whole=True), "n is 1.5, not a finite whole number"),
             (lambda: check.number(-1, "n", lo=0, hi=3), "n is -1, expected >= 0 and <= 3"),
             (lambda: check.number(0, "n", gt=0), "n is 0, expected > 0"),
             (lambda: check.numbers([1, "x"], "v"), "v[1] is 'x', not a finite number"),
             (lambda: check.numbers([1], "v", length=2), "v holds 1 values, expected 2")]
    for call, message in cases:
        with pytest.raises(RunError, match=re.escape(message)):
            call()
    assert check.text("x" * 100, "name") == "x" * 100  # long text is text; only its display is cut
    with pytest.raises(RunError, match=re.escape("name is [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ..., not text")):
        check.text([0] * 30, "name")


def test_json_nested_too_deep_is_a_value_error_as_other_damage_is():
    assert parse_json('{"a": [1, 2]}') == {"a": [1, 2]}
    with pytest.raises(ValueError, match="nested too deep"):
        parse_json("[" * 100_000 + "]" * 100_000)
