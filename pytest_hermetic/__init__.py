"""pytest-hermetic: hermetic test environments for Python, with no daemon.

    from pytest_hermetic import hermetic

    @hermetic(mem="64M")
    def test_isolated(): ...

`hermetic` is `pytest.mark.hermetic`; it is looked up lazily so that the
engine (`pytest_hermetic.container`, `pytest_hermetic.runtime`) never imports
pytest.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from typing import Any

__version__ = "0.1.0"
__all__ = ["hermetic", "Build", "Container", "Spec", "Result"]


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext pytest_hermetic`: the notebook magics (IPython imported only now)."""
    from ipython_ext import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from ipython_ext import unload_ipython_extension as unload

    unload(ipython)


def __getattr__(name: str) -> Any:
    if name == "hermetic":
        import pytest

        return pytest.mark.hermetic
    if name in ("Container", "Result"):
        from . import container

        return getattr(container, name)
    if name == "Build":  # an image built from a Containerfile: @hermetic(image=Build("tests/images/Containerfile"))
        from .build.reference import Build

        return Build
    if name == "Spec":
        from .spec import Spec

        return Spec
    raise AttributeError(f"module 'pytest_hermetic' has no attribute {name!r}")
