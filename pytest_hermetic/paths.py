"""Where the engine keeps things.

* The store (images, layers): `$HERMETIC_STORE`, else `/var/lib/hermetic` as
  root and `$XDG_DATA_HOME/hermetic` otherwise.
* Runtime state (one folder per container, holding its read-write layer):
  `$HERMETIC_STATE`, else `/run/hermetic` as root and
  `$XDG_RUNTIME_DIR/hermetic` otherwise.
"""

from __future__ import annotations

import os


def store_root() -> str:
    configured = os.environ.get("HERMETIC_STORE")
    if configured:
        return os.path.abspath(configured)
    if os.geteuid() == 0:
        return "/var/lib/hermetic"
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "hermetic")


def state_root() -> str:
    configured = os.environ.get("HERMETIC_STATE")
    if configured:
        return os.path.abspath(configured)
    if os.geteuid() == 0:
        return "/run/hermetic"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.access(runtime, os.W_OK):
        return os.path.join(runtime, "hermetic")
    return f"/tmp/hermetic-{os.geteuid()}"
