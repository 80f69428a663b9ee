"""The package's import structure, read from the source (every import statement,
function-level ones included): layers import one way, no module imports itself back
through others, and no module reaches into another module's private names."""

import ast
import os
import pathlib

import pytest

PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[2] / "fiftyone_prune"
PACKAGE = "fiftyone_prune"
# a module may import from the layers to its right only
LAYERS = ["cli", "plugin", "sdk", "core"]


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, level: int, name: str | None, importer: str,
             is_package: bool) -> str:
    if level:
        base = importer.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - (level - 1)]
        module = ".".join(base + ([module] if module else []))
    if name and f"{module}.{name}" in MODULES:  # `from pkg import submodule`
        return f"{module}.{name}"
    return module


def _imports(name: str, path: pathlib.Path):
    """(imported module, names taken from it, aliases bound to it) per import statement."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    bound = alias.asname or alias.name.split(".")[0]
                    found.append((alias.name, [], [bound] if alias.asname else []))
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                target = _resolve(node.module or "", node.level, alias.name, name, is_package)
                if target.split(".")[0] != PACKAGE:
                    continue
                if target in MODULES and target.endswith("." + alias.name):
                    found.append((target, [], [alias.asname or alias.name]))
                else:
                    found.append((target, [alias.name], []))
    return tree, found


def _graph():
    graph = {}
    for name, path in MODULES.items():
        _, found = _imports(name, path)
        graph[name] = {target for target, _, _ in found if target in MODULES and target != name}
    return graph


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_no_import_cycle_function_level_imports_included():
    graph = _graph()
    cycles = []
    state = {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_layers_import_downward_only():
    wrong = []
    for name, targets in _graph().items():
        mine = _layer(name)
        if mine is None:
            continue
        for target in targets:
            theirs = _layer(target)
            if theirs is not None and LAYERS.index(theirs) < LAYERS.index(mine):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_module_reads_a_private_name_of_another():
    wrong = []
    for name, path in MODULES.items():
        tree, found = _imports(name, path)
        aliases = set()
        for target, names, bound in found:
            if target == name:
                continue
            wrong += [f"{name}: from {target} import {n}" for n in names
                      if n.startswith("_") and not n.startswith("__")]
            aliases.update(bound)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                wrong.append(f"{name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not wrong, "private names read across modules:\n" + "\n".join(sorted(set(wrong)))


@pytest.mark.parametrize("bad,expected", [
    ("from fiftyone_prune.sdk import scores\nscores._x()\n", "scores._x"),
    ("from fiftyone_prune.sdk.scores import _x\n", "import _x"),
])
def test_the_private_name_check_catches_both_forms(tmp_path, bad, expected, monkeypatch):
    path = tmp_path / "probe.py"
    path.write_text(bad)
    monkeypatch.setitem(MODULES, "fiftyone_prune.sdk.probe_module", path)
    with pytest.raises(AssertionError, match=expected.replace(".", r"\.")):
        test_no_module_reads_a_private_name_of_another()
