"""The key tables of docs/recipes.md come from the schema."""
from pathlib import Path

from hierclf.recipe.schema import StageConfig
from hierclf.recipe.reference import STAGE_SLICES, key_reference, key_reference_markdown

REPO = Path(__file__).resolve().parents[2]


def test_every_key_is_documented_and_the_docs_carry_the_generated_tables():
    """Adding a key without its doc, or without `make docs`, fails."""
    assert key_reference_markdown() in (REPO / "docs" / "recipes.md").read_text()
    for section, keys in key_reference().items():
        for name, _, doc in keys:
            assert doc.strip(), f"{section}.{name} has no documentation"


def test_the_stage_table_lists_each_key_once_under_its_slice():
    markdown = key_reference_markdown()
    coarse = markdown.split("### [coarse]")[1].split("### [combine]")[0]
    rows = [line.split("`")[1] for line in coarse.splitlines() if line.startswith("| `")]
    assert sorted(rows) == sorted(item for item, _, _ in key_reference()["coarse"])
    assert len(rows) == len(set(rows))
    assert [f"#### {title}" in coarse for title, _ in STAGE_SLICES] == [True] * len(STAGE_SLICES)
    assert "`device`" in coarse.split("#### Device and seed")[1] and StageConfig().device == "auto"
