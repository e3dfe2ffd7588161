"""pytest-forked under pytest 9.2: a shim, in one place for every script that
runs pytest-forked (bench/pytest_overhead.py, bench/parent_size.py,
scripts/third_party_check.py).

pytest 9.2 keeps a report's node id as a structured `_id` (pytest PR
#14758), which pytest-forked <= 1.7.5 hands to `marshal` as it is: every
forked test then fails with "EXITED with status 3" (ValueError:
unmarshallable object).  The shim sends the string form instead, as pytest's
own report serialization does; with a pytest that has no `_id` it changes
nothing.

Second, its child opens its stdout and stderr files as `sys.stdout` and
`sys.stderr`, and pytest's capture then puts its own in their place: the
files are left unclosed, and their ResourceWarning fails every test of a
suite that makes warnings errors (click: `filterwarnings = error`).  The
shim keeps them referenced in the child, which ends with `os._exit`, so
they are never collected unclosed.  `install(folder)` writes it there as the module NAME; a session
loads it with ARGS.
"""

from __future__ import annotations

import os

NAME = "hermetic_bench_forked_compat"
ARGS = ["-p", "pytest_forked", "-p", NAME, "--forked"]  # a pytest-forked session's options
SOURCE = '''\
import pytest_forked

_serialize_report = pytest_forked.serialize_report


def serialize_report(rep):
    d = _serialize_report(rep)
    if "_id" in d:
        d["nodeid"] = str(d.pop("_id"))
    return d


pytest_forked.serialize_report = serialize_report

_worker = pytest_forked._worker
_kept = []


def _keeping_open(*args, **kwargs):
    f = open(*args, **kwargs)
    _kept.append(f)
    return f


def _worker_keeping_files(*args):
    pytest_forked.open = _keeping_open  # in the child only: the names _worker looks up first
    return _worker(*args)


pytest_forked._worker = _worker_keeping_files
'''


def install(folder: str) -> str:
    """Write the shim into `folder` (a folder on the session's sys.path); its path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{NAME}.py")
    with open(path, "w") as f:
        f.write(SOURCE)
    return path
