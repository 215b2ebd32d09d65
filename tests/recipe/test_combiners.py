"""The combiners' names and words, without torch: what the schema and the command line read."""
import subprocess
import sys

import pytest

from hierclf.errors import RecipeError
from hierclf.recipe.combiners import COMBINER_NAMES, COMBINER_WORDS, check_combiner_name, combiner_doc


def test_every_combiner_is_named_in_order_and_documented_and_an_unknown_name_is_refused():
    from hierclf.combine.registry import COMBINERS
    assert list(COMBINERS) == list(COMBINER_NAMES) == ["flat", "product", "routed", "stacking", "blend", "coarse"]
    assert all(f"{name}: {COMBINER_WORDS[name].summary}" in combiner_doc() for name in COMBINER_NAMES)
    check_combiner_name("routed", "combine.method")
    with pytest.raises(RecipeError, match="combine.method = 'avg': no such combiner; combiners are flat, product"):
        check_combiner_name("avg", "combine.method = 'avg'")


def test_the_names_load_without_torch():
    code = "import sys, hierclf.recipe.combiners, hierclf.recipe.schema; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
