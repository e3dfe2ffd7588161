"""IPython extension: `%%container` cells and the `%container` line magic.

    %load_ext ipython_ext        (or %load_ext pytest_hermetic)

Nothing is imported here at module level: `python -m ipython_ext.helper`
(the helper process that starts the containers) must not pay for IPython.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

_loaded: dict[int, object] = {}  # id(shell) -> its ContainerMagics


def load_ipython_extension(ipython: "InteractiveShell") -> None:
    from .magics import ContainerMagics

    if id(ipython) in _loaded:  # loaded under both names: one set of magics, one helper
        return
    magics = ContainerMagics(ipython)
    ipython.register_magics(magics)
    _loaded[id(ipython)] = magics


def unload_ipython_extension(ipython: "InteractiveShell") -> None:
    """Remove the magics; stop every container this kernel started, and the helper."""
    import atexit

    magics = _loaded.pop(id(ipython), None)
    if magics is None:
        return
    try:
        magics.close()  # type: ignore[attr-defined]
    finally:
        atexit.unregister(magics.close)  # type: ignore[attr-defined]
        manager = ipython.magics_manager
        for kind in ("line", "cell"):
            if manager.magics[kind].get("container") is not None:
                del manager.magics[kind]["container"]
        manager.registry.pop(type(magics).__name__, None)
