"""pytest's private API is used in one module only, each use documented, and
the engine's part of running a test (`bindings`) knows nothing of pytest.

Whether the shims still work with pytest's newest release and main branch:
scripts/pytest_compat_check.sh runs the plugin tests against them."""

import ast
import inspect
import os
import subprocess
import sys

from pytest_hermetic import _pytest_compat

PACKAGES = ("pytest_hermetic", "ipython_ext")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Attributes of pytest's (and pluggy's) objects that have no public name.
PRIVATE_ATTRIBUTES = {"_setupstate", "_fixtureinfo", "_request", "_tmp_path_factory", "_hookimpls",
                      "_initrequest", "_catch_configured_warnings"}


def private_pytest_uses(path: str) -> list[str]:
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "_pytest":
            found.append(f"from {node.module} import")
        elif isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] == "_pytest"]
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRIBUTES:
            found.append(f".{node.attr}")
        elif isinstance(node, ast.Constant) and node.value in ("capturemanager", *PRIVATE_ATTRIBUTES):
            found.append(repr(node.value))  # getplugin("capturemanager"), getattr(x, "_request")
    return found


def test_only_the_compat_module_uses_pytest_internals():
    users = {}
    for package in PACKAGES:
        for folder, _, names in os.walk(os.path.join(ROOT, package)):
            for name in names:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    uses = private_pytest_uses(path)
                    if uses:
                        users[os.path.relpath(path, ROOT)] = uses
    compat = os.path.join("pytest_hermetic", "_pytest_compat.py")
    assert compat in users, "the check no longer sees the compat module's own uses"
    del users[compat]
    assert users == {}, f"pytest's private API outside {compat}: {users}"


def test_every_shim_says_what_it_relies_on():
    shims = [fn for name, fn in vars(_pytest_compat).items()
             if inspect.isfunction(fn) and not name.startswith("_") and fn.__module__ == _pytest_compat.__name__]
    assert len(shims) >= 10
    for fn in shims:
        doc = inspect.getdoc(fn) or ""
        assert "Relies on" in doc or "Public API" in doc, f"{fn.__name__}: no word on what it relies on"


def test_bindings_import_nothing_of_pytest():
    code = "import sys, pytest_hermetic.bindings; print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest', 'pluggy')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"
