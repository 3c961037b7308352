"""The import graph of the medmae package, read with ``ast``: no cycle among medmae modules, and ``hub_cards``
imports medmae modules only at module top.

``python tests/hub_cards/test_import_graph.py [PACKAGE_ROOT]`` prints the graph's facts (cycles, function-level
imports).
"""

from __future__ import annotations

import ast
import configparser
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the repository root is the package `medmae`
PACKAGE = "medmae"
# Imports by name at call time (``importlib.import_module``), each documented where it is made: medmae's own
# ``modeling/layers.py`` (shipped as remote code, so it may import only torch and transformers) reaches the
# export and push of the installed package this way, and a remote-code copy of it does not; the family table
# (``training/families.py``) names its classes by string so that ``medmae pretrain --help`` imports no torch.
LATE_BOUND = {
    ("medmae.modeling.layers", "medmae.hub_cards.push"),
    ("medmae.modeling.layers", "medmae.modeling.remote_code"),
    ("medmae.training.families", "medmae.configuration"),
    ("medmae.training.families", "medmae.modeling"),
}
# Cycles outside hub_cards that predate this test, held together by imports inside functions; the training/ part
# of issue #10 removes them (delete the entry then). No other cycle may appear.
KNOWN_CYCLES: list[list[str]] = []


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported medmae module (or package)
    line: int
    in_function: bool


def package_modules(root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    """``{dotted name: file}`` of every module of the installed packages (``packages`` of ``setup.cfg``)."""
    setup = configparser.ConfigParser()
    setup.read(root / "setup.cfg")
    modules = {}
    for package in setup["options"]["packages"].split():
        folder = root.joinpath(*package.split(".")[1:])
        for path in sorted(folder.glob("*.py")):
            modules[package if path.name == "__init__.py" else f"{package}.{path.stem}"] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a medmae module."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def _function_nodes(tree: ast.AST) -> set[int]:
    """ids of every node inside a function body."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inside.update(id(child) for child in ast.walk(node) if child is not node)
    return inside


def module_imports(name: str, path: Path, modules: dict[str, Path]) -> tuple[list[Import], list[Import]]:
    """(import statements of medmae modules, ``importlib.import_module("medmae...")`` calls) in one module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    in_function = _function_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    imports, late = [], []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [_resolve(alias.name, modules) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            for alias in node.names:
                full = f"{base_name}.{alias.name}"
                targets.append(full if full in modules else _resolve(base_name, modules))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            target = _resolve(node.args[0].value, modules)
            if target:
                late.append(Import(name, target, node.lineno, id(node) in in_function))
            continue
        for target in dict.fromkeys(t for t in targets if t):
            imports.append(Import(name, target, node.lineno, id(node) in in_function))
    return imports, late


def import_graph(root: Path = PACKAGE_ROOT) -> tuple[dict[str, Path], list[Import], list[Import]]:
    modules = package_modules(root)
    imports, late = [], []
    for name, path in modules.items():
        found, found_late = module_imports(name, path, modules)
        imports += found
        late += found_late
    return modules, imports, late


def cycles(modules, imports: list[Import]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a module importing itself), sorted."""
    edges = {name: sorted({i.target for i in imports if i.source == name}) for name in modules}
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node):  # Tarjan; the graph is small, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges[node]:
                found.append(sorted(component))

    for node in modules:
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_import_cycle_among_medmae_modules():
    modules, imports, _ = import_graph()
    assert {"medmae", "medmae.hub_cards.export", "medmae.modeling.layers", "medmae.training.cli"} <= set(modules)
    assert [cycle for cycle in cycles(modules, imports) if cycle not in KNOWN_CYCLES] == []


def test_hub_cards_imports_medmae_modules_only_at_module_top():
    _, imports, _ = import_graph()
    late = [f"{i.source}:{i.line} -> {i.target}" for i in imports
            if i.in_function and i.source.startswith("medmae.hub_cards")]
    assert late == []


def test_hub_cards_imports_go_one_way():
    """hub_cards modules import each other downward only: nothing below imports a module above it."""
    modules, imports, _ = import_graph()
    order = ["catalogue", "layout", "run_records", "provenance", "reference", "zoo", "cards", "verify", "export", "push"]
    assert sorted(order) == sorted(m.rsplit(".", 1)[1] for m in modules if m.startswith("medmae.hub_cards."))
    for i in imports:
        if i.source.startswith("medmae.hub_cards.") and i.target.startswith("medmae.hub_cards."):
            source, target = i.source.rsplit(".", 1)[1], i.target.rsplit(".", 1)[1]
            assert order.index(target) < order.index(source), f"{i.source}:{i.line} imports {i.target}"


def test_the_package_does_not_import_hub_cards_back_except_the_documented_late_bound_calls():
    """Only ``training`` (the ``medmae`` commands) imports hub_cards; the model base class reaches it by name."""
    _, imports, late = import_graph()
    users = {i.source.split(".")[1] for i in imports
             if i.target.startswith("medmae.hub_cards") and not i.source.startswith("medmae.hub_cards")}
    assert users <= {"training"}
    assert {(i.source, i.target) for i in late} == LATE_BOUND


def main(argv: list[str]) -> int:
    modules, imports, late = import_graph(Path(argv[0]) if argv else PACKAGE_ROOT)
    in_function = [i for i in imports if i.in_function]
    statements = {(i.source, i.line) for i in in_function}
    print(f"{len(modules)} modules, {len(imports)} imports of medmae modules; {len(statements)} import statements "
          f"of medmae modules inside functions, {sum(s.startswith('medmae.hub_cards') for s, _ in statements)} "
          "of them in hub_cards")
    for component in cycles(modules, imports):
        print("cycle:", " <-> ".join(component))
    for i in in_function:
        print(f"  function-level: {i.source}:{i.line} -> {i.target}")
    for i in late:
        print(f"  late-bound (importlib): {i.source}:{i.line} -> {i.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
