"""The `hermetic` command (also `python -m pytest_hermetic`).

Exit statuses follow `docker run`: the command's own status; 125 when the
engine fails (bad option, unknown image); 126/127 when the command cannot be
run or found; 137 when the container was killed (out of memory, timeout).
Every engine failure is one line on stderr, never a traceback.

One module per family of verbs (`run`, `images`, `containers`, `system`),
each with `add_parsers(verb)` and one short `cmd_<verb>` per verb that turns
arguments into calls of the engine and its answers into lines; the work is
elsewhere (containers' lifecycle in `detached.py`, images in `images/`).
Only the module of the verb given is imported, and the engine's modules are
imported inside the commands: `hermetic run` should not pay for what
`hermetic images` needs.
"""

from __future__ import annotations

import os
import sys

from ..errors import HermeticError
from .output import say

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    import argparse
    from typing import Callable, NoReturn, Sequence

    from .run import Arguments

    Verb = Callable[..., argparse.ArgumentParser]

# Each verb and the module (in this package) that adds its parser and runs it.
VERBS = {
    "run": "run",
    "build": "build",
    "images": "images", "pull": "images", "push": "images", "save": "images", "import": "images",
    "commit": "images", "rmi": "images", "tag": "images", "login": "images", "logout": "images",
    "ps": "containers", "logs": "containers", "exec": "containers", "stop": "containers", "kill": "containers",
    "rm": "containers", "inspect": "containers", "wait": "containers", "top": "containers", "stats": "containers",
    "port": "containers",
    "gc": "system", "network": "system", "doctor": "system", "version": "system",
    "completion": "completion", "__complete": "completion",
}


def parser(only: str | None = None) -> "argparse.ArgumentParser":
    """The command's parser; with `only`, just that verb's (the one given)."""
    from .arguments import build  # lazily: argparse is ~5 ms of a quick `hermetic run`'s start

    return build(only)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-v"]):
        from .system import version_line

        print(version_line())
        return 0
    args: argparse.Namespace | Arguments | None = None
    if argv[:1] == ["run"]:
        from .run import quick_arguments

        args = quick_arguments(argv[1:])  # None: not one it reads; argparse decides (and words any error)
    if args is None:
        args = parser(argv[0] if argv and argv[0] in VERBS else None).parse_args(argv)
    try:
        return args.handler(args)
    except HermeticError as exc:
        say(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `hermetic images | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        say(f"error: {exc}")
        return 125
    except Exception as exc:  # a bug: still one line, the traceback on demand
        if os.environ.get("HERMETIC_DEBUG"):
            raise
        say(f"error: internal error ({type(exc).__name__}: {exc}); this is a bug: please report it with the "
            "traceback that HERMETIC_DEBUG=1 shows")
        return 125


def console() -> "NoReturn":
    """The `hermetic` console script (and `python -m pytest_hermetic`):
    `main()`, then an exit that skips the interpreter's finalization (its
    modules torn down one by one: ~2 ms of a `hermetic run`) when nothing is
    left that needs it: no exit handlers (coverage's, a temporary
    directory's finalizer), no threads to join, the standard streams flushed."""
    code = main()
    if isinstance(code, int) and "threading" not in sys.modules and "atexit" not in sys.modules:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - a closed pipe: the ordinary exit words it as Python does
            pass
        else:
            os._exit(code)
    sys.exit(code)
