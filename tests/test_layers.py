"""The package's rooms import only downwards: every ``import`` of a marginrobust module
(at the top of a file or inside a function) must name a module of a lower layer, or one of
its own package in the same layer. Parsed with ``ast``, so nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "marginrobust"

# Lowest first. A module belongs to the first (longest) prefix that matches it.
LAYERS: list[list[str]] = [
    ["marginrobust.errors", "marginrobust.stopping"],
    ["marginrobust.io"],
    ["marginrobust.registry", "marginrobust.presets", "marginrobust.precision",
     "marginrobust.distributed"],
    ["marginrobust.runlock"],
    ["marginrobust.data", "marginrobust.models"],
    ["marginrobust.margins"],
    ["marginrobust.evaluate.store"],
    ["marginrobust.train"],
    ["marginrobust.evaluate"],
    # Runners: they read checkpoints written by train/ and drive the engines.
    ["marginrobust.train.run", "marginrobust.evaluate.run", "marginrobust.tracker"],
    ["marginrobust.report"],
    ["marginrobust.cli"],
    ["marginrobust.__main__", "marginrobust"],
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> tuple[int, str]:
    best: tuple[int, int, str] | None = None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix), prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0], best[2]


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
            # ``from . import attacks`` imports a module; ``from .x import f`` imports x.
            found += [(n if (PACKAGE.parent / (n.replace(".", "/") + ".py")).exists()
                       or (PACKAGE.parent / n.replace(".", "/")).is_dir() else target,
                       node.lineno) for n in names]
    return [(t, line) for t, line in found if t == "marginrobust" or
            t.startswith("marginrobust.")]


def test_no_module_imports_upwards_or_sideways():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        layer, room = _layer(module)
        for target, line in _imports(path, module):
            if target == module:
                continue
            t_layer, t_room = _layer(target)
            if t_layer > layer or (t_layer == layer and t_room != room):
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} {module} "
                                f"(layer {layer}) imports {target} (layer {t_layer})")
    assert not problems, "\n".join(problems)


def test_package_files_stay_small_or_say_why():
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().count("\n")
        if lines > 420:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert "lines" in doc.lower(), f"{path.name} has {lines} lines and no stated reason"
