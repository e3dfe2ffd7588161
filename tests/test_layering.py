"""The import contract (docs/architecture.md), checked on the source, no root needed.

One walk over the AST of every module of `pytest_hermetic` and `ipython_ext`
sees every import, those inside functions and under TYPE_CHECKING included
(an import inside a function is still an arrow).  A test of our own rather
than import-linter: the private-name rule needs the same walk anyway, the
contract is three short rules, and it adds no dependency to four Pythons' CI.

1. Layers: a module imports only modules of its own layer or below.
2. No import cycles between modules (an import of a package a module lives
   in does not count: a package's `__init__` gathers its submodules).
3. Below the front ends nothing imports pytest or IPython.
4. No module uses a `_name` (function, class, constant, method) that another
   module defines: neither `from m import _name` nor `thing._name`; except
   inside a package listed in SHARED_PRIVATE_PACKAGES, one module's concern
   split into files, whose modules share their `_names` among themselves
   only.  The `_`-named modules (`_fs`, `_proc`, `_record`, `_pytest_compat`)
   are the project's internal modules: importable by the project, not its API.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("pytest_hermetic", "ipython_ext")

# Bottom to top; a module belongs to the first entry that names it or a
# package above it.  networks sits below container: `Container` joins the
# network its spec names, and nothing in networks knows containers.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "_record", "paths", "_fs", "_proc", "_libc"),
    ("runtime",),
    ("images",),
    ("spec", "options", "bindings"),
    ("networks",),
    ("container", "state", "gc", "publish", "detached", "usage"),
    ("build",),  # hermetic build: each step a Container
    ("cli", "__main__", "doctor", "plugin", "forked", "fixtures", "_pytest_compat"),
    ("", "ipython_ext"),  # the package itself (`%load_ext pytest_hermetic`) and the notebook magics
]

# One concern split into files for size (as a long module would be one file):
# their modules may share `_names`, nothing outside may use them.
SHARED_PRIVATE_PACKAGES: set[str] = set()  # (images/layers/ shares public names now)

# ---- KNOWN EXCEPTIONS: the lead empties these after merging the renovation's
# other branches.  Each entry must still be needed, or the test fails.
KNOWN_LAYER_VIOLATIONS: set[tuple[str, str]] = set()
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()
KNOWN_PRIVATE_USES: set[tuple[str, str]] = set()
# ---- end of KNOWN EXCEPTIONS


def _modules() -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(ROOT, package)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for file in files:
                if file.endswith(".py"):
                    path = os.path.join(folder, file)
                    name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()
TREES = {name: ast.parse(open(path).read(), path) for name, path in MODULES.items()}


def _imports(name: str) -> list[tuple[str, str | None, int]]:
    """(imported module, name taken from it or None, line) for every import in `name`."""
    package = name if MODULES[name].endswith("__init__.py") else name.rpartition(".")[0]
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] in PACKAGES]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            source = (base + ("." + node.module if node.module else "")) if node.level else (node.module or "")
            if source.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append((submodule, None, node.lineno) if submodule in MODULES else (source, alias.name, node.lineno))
    return found


def _edges() -> dict[tuple[str, str], int]:
    edges: dict[tuple[str, str], int] = {}
    for name in MODULES:
        for target, _, line in _imports(name):
            if target != name:
                edges.setdefault((name, target), line)
    return edges


EDGES = _edges()


def _layer(module: str) -> int:
    inner = module.split(".", 1)[1] if module.startswith("pytest_hermetic.") else ("" if module == "pytest_hermetic" else module)
    for index, names in enumerate(LAYERS):
        if any(inner == n or inner.startswith(n + ".") for n in names if n) or inner in names:
            return index
    raise AssertionError(f"{module} has no layer: add it to LAYERS in tests/test_layering.py and docs/architecture.md")


LONG_MODULE = 450  # lines (issue #12): past it, the docstring says why it is one concern


def test_a_long_module_says_why_it_is_one() -> None:
    """A module past LONG_MODULE lines says in its docstring why it is one
    concern ("One concern, ..."), or that it is generated data."""
    unexplained = []
    for name, path in sorted(MODULES.items()):
        with open(path) as f:
            lines = sum(1 for _ in f)
        doc = ast.get_docstring(TREES[name]) or ""
        if lines > LONG_MODULE and "One concern" not in doc and "Generated by" not in doc:
            unexplained.append(f"{path}: {lines} lines")
    assert not unexplained, "split these, or say in the docstring why each is one concern:\n" + "\n".join(unexplained)


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        _layer(module)


def test_imports_run_down_the_layers() -> None:
    wrong = {(src, dst) for src, dst in EDGES if _layer(dst) > _layer(src)}
    new = sorted(wrong - KNOWN_LAYER_VIOLATIONS)
    assert not new, "imports up the layers (see docs/architecture.md):\n" + "\n".join(
        f"  {os.path.relpath(MODULES[s], ROOT)}:{EDGES[s, d]}: {s} -> {d}" for s, d in new)
    assert not KNOWN_LAYER_VIOLATIONS - wrong, f"fixed, so take them off KNOWN_LAYER_VIOLATIONS: {sorted(KNOWN_LAYER_VIOLATIONS - wrong)}"


def test_the_engine_imports_no_front_end_library() -> None:
    front = _layer("pytest_hermetic.cli")
    found = []
    for name, tree in TREES.items():
        if _layer(name) >= front:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if not node.level else []
            found += [f"{os.path.relpath(MODULES[name], ROOT)}:{node.lineno}: {m}" for m in modules
                      if m.split(".")[0] in ("pytest", "_pytest", "IPython", "ipykernel")]
    assert not found, "the engine imports a front end's library:\n" + "\n".join(found)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in `graph`, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _graph(edges: set[tuple[str, str]]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for src, dst in edges:
        if not src.startswith(dst + "."):  # a module importing its own package: not an arrow between modules
            graph.setdefault(src, set()).add(dst)
    return graph


def test_no_import_cycles() -> None:
    edges = set(EDGES)
    cycle = _cycle(_graph(edges - KNOWN_CYCLE_EDGES))
    assert cycle is None, "an import cycle: " + " -> ".join(cycle or [])
    stale = [edge for edge in sorted(KNOWN_CYCLE_EDGES)
             if edge not in edges or not _cycle(_graph(edges - (KNOWN_CYCLE_EDGES - {edge})))]
    assert not stale, f"these close no cycle any more, so take them off KNOWN_CYCLE_EDGES: {stale}"


def _defined_private(tree: ast.Module) -> set[str]:
    """The `_names` a module defines: functions, classes, methods, constants, attributes."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name):
                names.add(target.id)
            elif isinstance(target, ast.Attribute):
                names.add(target.attr)
    return {n for n in names if n.startswith("_") and not n.endswith("__")}


def _private_uses() -> dict[tuple[str, str], str]:
    defined = {name: _defined_private(tree) for name, tree in TREES.items()}
    shared = {name: next((p for p in SHARED_PRIVATE_PACKAGES if name == p or name.startswith(p + ".")), None)
              for name in TREES}
    uses: dict[tuple[str, str], str] = {}
    for name, tree in TREES.items():
        # Names this module may use: its own, and its shared package's.
        allowed = set(defined[name]).union(*(defined[m] for m in TREES if shared[name] and shared[m] == shared[name]))
        anywhere = set().union(*(names for m, names in defined.items() if m != name)) - allowed
        for target, taken, line in _imports(name):
            if taken and taken.startswith("_") and not taken.endswith("__") and target != name \
                    and not (shared[name] and shared[name] == shared.get(target)):
                uses.setdefault((name, taken), f"{os.path.relpath(MODULES[name], ROOT)}:{line}: from {target} import {taken}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.endswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                    and node.attr in anywhere):
                # Named in another module of ours (not a library's `os._exit`) and not in this one.
                uses.setdefault((name, node.attr), f"{os.path.relpath(MODULES[name], ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return uses


def test_no_private_names_across_modules() -> None:
    uses = _private_uses()
    new = sorted(set(uses) - KNOWN_PRIVATE_USES)
    assert not new, "a `_name` of another module (make it public in its owner, or move the caller):\n" + "\n".join(
        f"  {uses[k]}" for k in new)
    stale = KNOWN_PRIVATE_USES - set(uses)
    assert not stale, f"fixed, so take them off KNOWN_PRIVATE_USES: {sorted(stale)}"


@pytest.mark.parametrize("rule", ["layers", "cycles", "private"])
def test_the_checks_can_fail(rule: str) -> None:
    """Each rule sees a wrong arrow when there is one (so none passes vacuously)."""
    if rule == "layers":
        assert _layer("pytest_hermetic.runtime.process") < _layer("pytest_hermetic.container")
        assert ("pytest_hermetic.container", "pytest_hermetic.runtime.process") in EDGES
    elif rule == "cycles":
        assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
        assert _cycle({"a": {"b"}, "b": {"c"}}) is None
    else:
        tree = ast.parse("from .store import _helper\nx = store._meta\n")
        assert _defined_private(tree) == set() and _defined_private(ast.parse("def _f(): pass")) == {"_f"}
