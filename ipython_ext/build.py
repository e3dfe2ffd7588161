"""`%container build` and `%%containerfile`: `hermetic build` from a notebook.

The build runs as a subprocess, `python -m pytest_hermetic build ...`, not
in the kernel (which never forks: subprocess execs at once) and not in the
container helper: the helper serves one request at a time over its socket
and streams containers' file descriptors, while a build is a long series
of containers reporting through a Python callback; run there it would hold
the helper (and the kernel's kept containers) for the whole build.  The
subprocess is the command line itself: the same step lines, the same
one-line errors, its own clean-up; an interrupt of the kernel is passed on
to it as SIGINT, as Ctrl-C in a terminal.

It never imports IPython.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from pytest_hermetic.errors import BuildError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

INTERRUPT_GRACE = 10.0  # seconds the build has to stop its step after SIGINT before SIGKILL


def run_build(args: list[str], write: Callable[[str], None]) -> str:
    """`hermetic build ARGS`, its output lines given to `write` as they come; the image id.

    A failure raises `BuildError` with the command's own last line (the
    step, its line in the Containerfile, the status) and the output before it."""
    import ipython_ext

    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(ipython_ext.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "pytest_hermetic", "build", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    try:
        for raw in proc.stderr:  # the steps and the RUN output: stderr; the id: stdout, one line
            line = raw.decode("utf-8", "replace")
            lines.append(line.rstrip("\n"))
            if not line.startswith("hermetic: error: "):
                write(line)
        image_id = proc.stdout.read().decode().strip()
        status = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(INTERRUPT_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    finally:
        proc.stdout.close()
        proc.stderr.close()
    if status != 0:
        errors = [line for line in lines if line.startswith("hermetic: error: ")]
        said = [line for line in lines if line.strip()]
        message = (errors[-1][len("hermetic: error: "):] if errors  # the engine's one line
                   else said[-1] if said  # argparse's: "hermetic build: error: the following arguments ..."
                   else f"hermetic build exited with status {status}")
        raise BuildError(message, "\n".join(line for line in lines[-20:] if line not in errors))
    return image_id


__all__ = ["run_build"]
