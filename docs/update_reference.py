"""Regenerate the key tables of docs/recipes.md from the code (run by `make docs`)."""
from pathlib import Path

from hierclf.recipe.reference import key_reference_markdown

page = Path(__file__).with_name("recipes.md")
text = page.read_text()
head, rest = text.split("<!-- keys:start -->\n", 1)
_, tail = rest.split("<!-- keys:end -->", 1)
page.write_text(f"{head}<!-- keys:start -->\n{key_reference_markdown()}<!-- keys:end -->{tail}")
print(f"updated {page}")
