"""The package's shape, measured: the import layers docs/architecture.md draws, no import circle,
small modules and functions, few modules at the root, and a documented public API.

Imports are read from the source (ast), at module level and inside functions alike; the layers
count those under `if TYPE_CHECKING:` too (a type a module names is a dependency of its design,
whoever follows it), the import circles only those that run."""
from __future__ import annotations

import ast
import functools
import inspect
from pathlib import Path

import pytest

import hierclf

PACKAGE = Path(hierclf.__file__).parent

LAYERS = (
    ("errors",),
    ("seeding", "metrics", "readback", "options", "figures", "config"),
    ("runtime",),
    ("data",),
    ("recipe",),
    ("hierarchy",),
    ("combine",),
    ("run",),
    ("models",),
    ("train", "predict"),
    ("report", "export"),
    ("tune",),
    ("estimator", "cli"),
    ("__main__", "__init__"),
)
"""Bottom to top: a module may import its own package and the packages of the layers below it,
never a package beside it or above it. The same table is drawn in docs/architecture.md."""

MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_PARAMETERS, MAX_ROOT_MODULES = 400, 80, 8, 10


@functools.cache
def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, name: str, typing: bool = False) -> set[str]:
    """The hierclf modules `path` imports when it runs, and with `typing` those it imports under
    `if TYPE_CHECKING:` too."""
    tree = ast.parse(path.read_text())
    checking = set() if typing else {
        id(child) for node in ast.walk(tree) if isinstance(node, ast.If)
        and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for statement in node.body for child in ast.walk(statement)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    imported = set()
    for node in ast.walk(tree):
        if id(node) in checking:
            continue
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names if alias.name.startswith("hierclf"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1 folders
                parents = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parents + ([base] if base else []))
            if base.startswith("hierclf"):
                modules = _modules()
                for alias in node.names:  # `from hierclf import errors` names a module; `from x import f` a name
                    imported.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {module for module in imported if module != name}


def _graph(typing: bool = False) -> dict[str, set[str]]:
    return {name: _imports(path, name, typing) for name, path in _modules().items()}


def _part(module: str) -> str:
    """The package (or root module) a module belongs to: hierclf.run.files → run; hierclf.cli → cli."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(part: str) -> int:
    for level, parts in enumerate(LAYERS):
        if part in parts:
            return level
    raise AssertionError(f"hierclf.{part} is in no layer of tests/test_shape.py's LAYERS (and architecture.md)")


def test_every_module_imports_only_its_own_package_and_the_layers_below():
    offences = []
    for module, imports in _graph(typing=True).items():
        own = _part(module)
        for imported in imports:
            other = _part(imported)
            if other != own and (imported != "hierclf" and _layer(other) >= _layer(own)):
                offences.append(f"{module} imports {imported} (layer {_layer(other)} ≥ {_layer(own)})")
    assert not offences, "\n".join(offences)


def test_no_import_circle():
    graph = _graph()
    seen, on_path, circles = set(), [], []

    def visit(module: str) -> None:
        if module in on_path:
            circles.append(on_path[on_path.index(module):] + [module])
            return
        if module in seen or module not in graph:
            return
        seen.add(module)
        on_path.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        on_path.pop()

    for module in sorted(graph):
        visit(module)
    assert not circles, "\n".join(" → ".join(circle) for circle in circles)


TESTED_THROUGH = {
    "hierarchy.protocol": ["hierarchy/test_groups.py", "hierarchy/test_factors.py"],  # a Protocol: its two kinds
    "hierarchy.sections": ["report/test_evaluate.py"],
    "hierarchy.stage": ["hierarchy/test_stages.py"],
    "runtime.launch": ["runtime/test_processes.py"],
    "tune.bar": ["tune/test_specialist.py"],
    "report.text": ["report/test_report.py", "report/test_evaluate.py"],
    "report.markdown": ["report/test_report.py"],
    "report.runs_command": ["report/test_runs_table.py"],
    "report.controls": ["report/test_evaluate.py"],
    "export.onnx_file": ["export/test_onnx.py"],
    "export.graph": ["export/test_onnx.py", "combine/test_arithmetic.py"],
    "export.command": ["export/test_onnx.py"],
    "predict.command": ["predict/test_pipeline.py", "predict/test_onnx_engine.py", "predict/test_openvino_engine.py"],
    "predict.engine_names": ["predict/test_votes.py"],
    "train.record": ["train/test_callbacks.py", "train/test_board.py"],
    "train.state": ["train/test_loop.py"],
    "train.checkpoint": ["train/test_stage.py"],
    "models.saved": ["models/test_factory.py", "predict/test_pipeline.py"],
    "models.spec": ["predict/test_votes.py"],
    "models.weights": ["models/test_factory.py"],
    "data.labels": ["hierarchy/test_factors.py", "hierarchy/test_layout.py"],
    "predict.output": ["predict/test_shards.py", "predict/test_pipeline.py"],
    "predict.stage_models": ["predict/test_pipeline.py", "predict/test_onnx_engine.py"],
    "combine.base": ["combine/test_blend.py", "combine/test_stacking.py"],
    "run.scored": ["report/test_runs_table.py", "predict/test_pipeline.py"],
    "config.data": ["config/test_keys.py"],
}
"""The modules whose tests live in another module's file (the command or the layer that uses
them), and where: every other module has its mirror, tests/<folder>/test_<module>.py."""


def test_every_module_has_its_mirror_test_file_or_says_where_it_is_tested():
    tests = Path(__file__).parent
    missing = []
    for name, path in _modules().items():
        if path.name in ("__init__.py", "__main__.py"):
            continue
        short = name.removeprefix("hierclf.")
        folder, _, module = short.rpartition(".")
        mirror = tests / folder / f"test_{module}.py"
        if short in TESTED_THROUGH:
            assert not mirror.exists(), f"{short} has its mirror now: take it out of TESTED_THROUGH"
            assert all((tests / file).is_file() for file in TESTED_THROUGH[short]), short
        elif not mirror.is_file():
            missing.append(f"{short}: no {mirror.relative_to(tests.parent)}")
    assert not missing, "\n".join(missing)


def test_modules_are_small_and_few_sit_at_the_root():
    long = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert not {name: lines for name, lines in long.items() if lines > MAX_MODULE_LINES}
    root = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, root


def _is_click_command(node: ast.FunctionDef) -> bool:
    return any("command" in ast.unparse(decorator) or "click" in ast.unparse(decorator)
               for decorator in node.decorator_list)


def test_functions_are_short_and_take_few_parameters():
    offences = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or _is_click_command(node):
                continue
            arguments = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                         if a.arg not in ("self", "cls")]
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES or len(arguments) > MAX_PARAMETERS:
                offences.append(f"{name}.{node.name}: {lines} lines, {len(arguments)} parameters")
    assert not offences, "\n".join(offences)


@pytest.mark.parametrize("name", [name for name in hierclf.__all__ if name != "__version__"])
def test_the_public_api_is_documented(name):
    exported = getattr(hierclf, name)
    doc = inspect.getdoc(exported) or ""
    assert doc, f"hierclf.{name} has no docstring"
    if inspect.isfunction(exported):
        signature = inspect.signature(exported)
        assert "Args:" in doc or not signature.parameters, f"hierclf.{name}: its docstring needs Args:"
        returns = signature.return_annotation not in (None, "None", inspect.Signature.empty)
        assert "Returns:" in doc or not returns, f"hierclf.{name}: its docstring needs Returns:"
