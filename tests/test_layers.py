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



def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _root(node: ast.expr) -> ast.expr:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node


def _own_or_torch(node: ast.Attribute) -> bool:
    """``self._x``, ``cls._x``, ``super()._x``, or torch's own (``nn.modules.x._Base``,
    ``module._forward_hooks``): torch internals with no public name are allowed."""
    root = _root(node.value)
    if isinstance(root, ast.Name) and root.id in ("self", "cls", "torch", "nn"):
        return True
    if isinstance(root, ast.Call) and isinstance(root.func, ast.Name) and root.func.id == "super":
        return True
    return node.attr in ("_forward_hooks", "_forward_pre_hooks")


def test_no_module_reaches_into_private_names():
    """No ``from x import _name`` of another module's private function, class or constant
    (importing a private module, such as ``models._timm``, is allowed), and no
    ``obj._member`` but on ``self``, ``cls``, ``super()`` or torch's own objects."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE.parent)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                # The folder the import names: ``from . import _timm`` imports a module.
                folder = path.parent.joinpath(*[".."] * (node.level - 1),
                                              *(node.module or "").split(".")).resolve()
                problems += [f"{where}:{node.lineno} imports {a.name}" for a in node.names
                             if _private(a.name) and not (folder / f"{a.name}.py").exists()]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "marginrobust"):
                problems += [f"{where}:{node.lineno} imports {a.name}" for a in node.names
                             if _private(a.name)]
            elif (isinstance(node, ast.Attribute) and _private(node.attr)
                  and not _own_or_torch(node)):
                problems.append(f"{where}:{node.lineno} reads .{node.attr}")
    assert not problems, "private names used across objects:\n" + "\n".join(problems)
