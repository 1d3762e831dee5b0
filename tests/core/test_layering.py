"""The layering of the package (docs: GUIDE "The layers"), read from the source with `ast`: every module's
imports of lit_diffsr point to its own layer or below, and no two modules import each other, directly or
through others. Imports inside functions count too: a lazy import hides a dependency, it does not remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lit_diffsr

PACKAGE = Path(lit_diffsr.__file__).parent

# Layer of each part of the package, bottom first; a module imports only from its layer or below. The leaf
# modules (ops: pure tensor operations; errors, safe_load; arguments: reading a command line; slurm.job:
# who we are on Slurm) import nothing above them; the entry points (commands and what only they use) on top.
LAYERS = {
    "lit_diffsr.ops": 0,
    "lit_diffsr.errors": 0,
    "lit_diffsr.safe_load": 0,
    "lit_diffsr.arguments": 0,
    "lit_diffsr.slurm.job": 0,
    "lit_diffsr.diffusion": 1,
    "lit_diffsr.nets": 2,
    "lit_diffsr.data": 3,
    "lit_diffsr.metrics": 3,
    "lit_diffsr.loggers": 3,
    "lit_diffsr.methods": 4,
    "lit_diffsr.callbacks": 5,
    "lit_diffsr.pipelines": 5,
    "lit_diffsr.pipelines.cli": 6,
    "lit_diffsr.slurm": 6,
    "lit_diffsr.run_dir": 6,
    "lit_diffsr.runtime": 6,
    "lit_diffsr.train": 6,
    "lit_diffsr.cli": 6,
    "lit_diffsr.__main__": 6,
    "lit_diffsr.evaluate": 6,
    "lit_diffsr.plot": 6,
    "lit_diffsr.convert": 6,
    "lit_diffsr.conf": 6,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (PACKAGE.parent / relative).with_suffix(".py").is_file() or (
        PACKAGE.parent / relative / "__init__.py"
    ).is_file()


def imported_modules(path: Path) -> set[str]:
    """The lit_diffsr modules `path` imports anywhere in its body (`from P import m` counts as P.m when m is
    a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base)
    return {module for module in found if module == "lit_diffsr" or module.startswith("lit_diffsr.")}


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): imported_modules(path) for path in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    """The layer of the longest prefix of `module` in LAYERS."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer: add it (or its package) to LAYERS")


def test_every_import_points_to_the_same_layer_or_below():
    upward = [
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in import_graph().items()
        if module != "lit_diffsr"
        for target in sorted(targets)
        if target != "lit_diffsr" and layer(target) > layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_the_guide_rules_hold_by_name():
    """The rules as the GUIDE states them, independent of the numbers in LAYERS."""
    entry_points = ("callbacks", "pipelines", "cli", "train", "run_dir", "runtime")
    above = {
        "diffusion": ("nets", "data", "metrics", "methods", *entry_points),
        "nets": ("data", "methods", *entry_points),
        "data": ("methods", *entry_points),
        "methods": entry_points,
        "ops": ("errors", "safe_load", "diffusion", "nets", "data", "methods"),
    }

    def within(module: str, part: str) -> bool:
        return module == f"lit_diffsr.{part}" or module.startswith(f"lit_diffsr.{part}.")

    broken = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for floor, forbidden in above.items()
        if within(module, floor)
        for target in sorted(targets)
        if any(within(target, part) for part in forbidden)
    ]
    assert not broken, "\n".join(broken)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as [a, b, ..., a], or None. A module importing its own package (the
    package's `__init__` re-exports the module, e.g. `load_method` listing `lit_diffsr.methods.__all__`) is
    not a dependency of the package on the module and is left out."""
    edges = {
        module: {t for t in targets if t in graph and not module.startswith(f"{t}.") and t != "lit_diffsr"}
        for module, targets in graph.items()
    }
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                return [*stack[stack.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[module] = "done"
        stack.pop()
        return None

    for module in sorted(edges):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_checks_see_what_they_check():
    """The graph holds imports made inside functions, and a cycle is found when there is one."""
    graph = import_graph()
    assert "lit_diffsr.methods" in graph["lit_diffsr.methods.base"]  # a lazy import in own_classes
    assert "lit_diffsr.nets.unet" in graph["lit_diffsr.nets"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a.x": {"a"}, "a": {"a.x"}}) is None
