"""The one C part: a command container's PID 1 (pytest_hermetic/runtime/clone_child.c).

Optional: where it cannot be built (no C compiler, no Python headers) the
package installs without it and the engine's Python child runs every
container (pytest_hermetic/runtime/native_child.py says when each runs).
Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("pytest_hermetic.runtime.clone_child", ["pytest_hermetic/runtime/clone_child.c"],
                             optional=True, extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"])])
