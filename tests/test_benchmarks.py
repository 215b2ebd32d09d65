"""Every benchmark script still imports, over the public API: a rename in the library breaks
`make test`, not the next person who runs the benchmark (nothing is run; each script's work sits
behind its __main__). A script reaches inside the package only where the inside is what it
measures, and says so here."""
import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest

import hierclf

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))

MEASURES_INTERNALS = {
    "finetune_grid": "patches the pre-issue-43 mode switch into the fold to measure the unfreeze it broke",
    "large_image_memory": "the memory of decoding one very large image, in a fresh process",
    "lr_choice": "the learning-rate range test, built from a fold's own model, loaders, loss and optimizer",
    "profile_step": "fit's training step against a bare loop over the same loader and loss",
    "speed_engines": "each engine's vote on the same batches, beside the pipeline",
    "speed_gpu": "fit against a bare loop over the same loader and loss, on a GPU",
    "speed_precision": "fit against a bare loop over the same cached loader and loss, in each precision and layout",
    "speed_train": "fit against a bare loop over the same loader and loss",
}


def hierclf_imports(script: Path) -> tuple[set[str], set[str]]:
    """The public names a script imports from `hierclf`, and the submodules it imports (in its
    code or in code it hands to a fresh process)."""
    text = script.read_text()
    names = {alias.name for node in ast.walk(ast.parse(text))
             if isinstance(node, ast.ImportFrom) and node.module == "hierclf" for alias in node.names}
    return names, set(re.findall(r"^\s*(?:from|import) (hierclf\.[\w.]+)", text, re.M))


def test_there_are_benchmarks_to_check():
    assert len(SCRIPTS) >= 20


@pytest.mark.parametrize("script", SCRIPTS, ids=[script.stem for script in SCRIPTS])
def test_a_benchmark_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # they import their neighbours (harness, bare)
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)


@pytest.mark.parametrize("script", SCRIPTS, ids=[script.stem for script in SCRIPTS])
def test_a_benchmark_uses_the_public_api_unless_it_measures_the_inside(script):
    names, modules = hierclf_imports(script)
    assert names <= set(hierclf.__all__), f"{script.name} imports {sorted(names - set(hierclf.__all__))} from hierclf"
    if script.stem in MEASURES_INTERNALS:
        assert modules, f"{script.name} no longer reaches inside: take it off MEASURES_INTERNALS"
    else:
        assert not modules, f"{script.name} imports {sorted(modules)}: use `from hierclf import …`"
