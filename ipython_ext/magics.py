"""`%%container` and `%container`: the engine in a notebook cell.

    %load_ext ipython_ext
    %%container host --mem 64M
    echo pid=$$; ls /sys/class/net

Containers are started by the kernel's helper process (`helper.py`), never
by the kernel itself; this module parses, validates, streams and reports.
"""

from __future__ import annotations

import atexit
import codecs
import os
import shlex
import sys
import time
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_cell_magic, magics_class
from IPython.core.magic_arguments import ArgDecorator, argument, magic_arguments

from pytest_hermetic import options as container_options
from pytest_hermetic.errors import HermeticError

from . import protocol
from .client import HelperClient
from .display import PullProgress, human, show_table
from .errors import ContainerCellError, ContainerCellInterrupted

MAX_SCRIPT = 128 * 1024 - 1  # Linux's limit for one argv string (MAX_ARG_STRLEN)

LINE_USAGE = """\
%container ps                  running containers (and this kernel's stopped ones)
%container images              images in the store
%container commit NAME REF     save NAME's read-write layer as image REF
%container stop NAME           end NAME's processes; its files stay until rm (commit still works)
%container rm NAME...          end and remove NAME (files and all)
%container exec NAME CMD...    run CMD (no shell) in the kept container NAME
%container pull REF [--platform OS/ARCH] [--quiet]
%container build -t NAME [-f FILE] [--build-arg K=V]... [--target STAGE] [--no-cache] [--net] CONTEXT
%%containerfile NAME [--context DIR] [--build-arg K=V]... [--target STAGE] [--no-cache] [--net]
                               build the cell (a Containerfile) as image NAME; context: the working folder
%%container IMAGE [options]    run the cell as a shell script in a container (%%container? for options)"""


class _Sink:
    """Output chunks from the helper: decoded incrementally (a UTF-8
    character may be cut between two chunks) and written to the kernel's
    stdout/stderr at once, or kept for --out/--err."""

    def __init__(self, capture_out: bool = False, capture_err: bool = False) -> None:
        self.decoders = {k: codecs.getincrementaldecoder("utf-8")("replace") for k in (protocol.STDOUT, protocol.STDERR)}
        self.capture = {protocol.STDOUT: capture_out, protocol.STDERR: capture_err}
        self.kept: dict[int, list[str]] = {protocol.STDOUT: [], protocol.STDERR: []}

    def __call__(self, kind: int, data: bytes, final: bool = False) -> None:
        text = self.decoders[kind].decode(data, final)
        if not text:
            return
        if self.capture[kind]:
            self.kept[kind].append(text)
            return
        stream = sys.stdout if kind == protocol.STDOUT else sys.stderr
        stream.write(text)
        stream.flush()  # ipykernel would wait for its flush interval

    def finish(self) -> None:
        for kind in (protocol.STDOUT, protocol.STDERR):
            self(kind, b"", final=True)

    def text(self, kind: int) -> str:
        return "".join(self.kept[kind])


class _container_options(ArgDecorator):
    """The engine's container options a cell takes (`pytest_hermetic.options`), at this place in the list."""

    def add_to_parser(self, parser: Any, group: Any) -> None:
        container_options.add_arguments((group or parser).add_argument, container_options.CELL)


def _short(exc: HermeticError) -> HermeticError:
    """Engine errors show as one line in the notebook, as on the command line."""
    exc._render_traceback_ = lambda: [f"{type(exc).__name__}: {exc}"]  # type: ignore[attr-defined]
    return exc


@magics_class
class ContainerMagics(Magics):
    def __init__(self, shell) -> None:  # noqa: ANN001
        super().__init__(shell)
        self.client = HelperClient()
        atexit.register(self.close)

    def close(self) -> None:
        """Stop every container this kernel started, and the helper."""
        self.client.close()

    @magic_arguments()
    @argument("image", nargs="?", default=None, metavar="IMAGE",
              help="host (default), NAME[:TAG], dir:PATH, tar:FILE; with --name, only for a new container")
    @argument("--commit", metavar="REF", help="after a successful cell, save the read-write layer as image REF")
    @_container_options()
    @argument("--shell", default="/bin/sh", metavar="SHELL", help="interpreter run as SHELL -c BODY (default /bin/sh)")
    @argument("--out", metavar="VAR", help="store stdout in VAR instead of showing it")
    @argument("--err", metavar="VAR", help="store stderr in VAR instead of showing it")
    @argument("--no-raise-error", action="store_true", help="on a non-zero exit, say why on stderr instead of raising")
    @line_cell_magic
    def container(self, line: str, cell: str | None = None) -> None:
        """Run the cell as a shell script in a container (`%%container`), or
        manage containers and images (`%container VERB`, see `%container help`).

        Without --name each cell gets a fresh container, removed after it.
        A non-zero exit raises ContainerCellError, which says the status and
        why (out of memory, timeout, signal).  Interrupting the kernel stops
        the cell's processes (SIGINT, then SIGKILL after a second), not the
        kernel.
        """
        try:
            if cell is None:
                return self._line(line)
            return self._cell(line, cell)
        except HermeticError as exc:
            raise _short(exc) from None

    # -- %%container ---------------------------------------------------------------

    def _cell(self, line: str, cell: str) -> None:
        from pytest_hermetic.spec import Spec

        # POSIX splitting (IPython's own keeps quotes: -e "A=b c" must not).
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%%container: {exc}") from None
        args = self.container.parser.parse_args(words)
        options = container_options.from_arguments(args, container_options.CELL)
        options.pop("name", None)  # the helper's own argument: which kept container
        if len(cell.encode()) > MAX_SCRIPT:
            raise UsageError("the cell is larger than 128 KiB, Linux's limit for one argument; "
                             "put the script in a file, bind it with -v, and run that")
        # Every bad value fails here, before anything starts.
        Spec.build(args.image or "host", [args.shell, "-c", cell], name=args.name, **options)
        if args.commit:
            from pytest_hermetic.images.commit import target_name

            target_name(args.commit)
        sink = _Sink(capture_out=bool(args.out), capture_err=bool(args.err))
        reply = self.client.call("run", image=args.image, name=args.name, options=options, shell=args.shell,
                                 script=cell, commit=args.commit, on_output=sink, interruptible=True)
        sink.finish()
        assert self.shell is not None  # a magic runs in a shell
        if args.out:
            self.shell.user_ns[args.out] = sink.text(protocol.STDOUT)
        if args.err:
            self.shell.user_ns[args.err] = sink.text(protocol.STDERR)
        self._report(reply, [args.shell, "-c", cell], sink, args.no_raise_error)
        if reply.get("committed"):
            committed = reply["committed"]
            print(f"committed {committed['image']} ({committed['id'][7:19]})")

    def _report(self, reply: dict, cmd: list[str], sink: _Sink, no_raise: bool) -> None:
        for note in reply.get("notes") or []:
            print(f"note: {note}", file=sys.stderr)
        if reply.get("interrupted"):
            raise ContainerCellInterrupted("the cell's processes in the container were stopped")
        if reply["exit_code"] == 0:
            return
        error = ContainerCellError(reply["exit_code"], cmd, reply.get("reason"), sink.text(protocol.STDOUT) or None,
                                   sink.text(protocol.STDERR) or None)
        if no_raise:
            print(f"container: {error}", file=sys.stderr)
            return
        raise error

    # -- %container VERB --------------------------------------------------------------

    def _line(self, line: str) -> None:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%container: {exc}") from None
        if not words or words[0] in ("help", "-h", "--help"):
            print(LINE_USAGE)
            return
        verb, rest = words[0], words[1:]
        handler = getattr(self, f"_verb_{verb}", None)
        if handler is None:
            raise UsageError(f"%container: unknown verb {verb!r} (for a cell, use %%container)\n{LINE_USAGE}")
        handler(rest)

    def _need(self, rest: list[str], usage: str, more: bool = False) -> None:
        wanted = len(usage.split()) - 1  # the verb itself is not in `rest`
        if len(rest) < wanted or (not more and len(rest) > wanted):
            raise UsageError(f"usage: %container {usage}" + (" ..." if more else ""))

    def _verb_ps(self, rest: list[str]) -> None:
        from pytest_hermetic.state import list_states

        self._need(rest, "ps")
        ours = {}
        if self.client.running:
            ours = {c["id"]: c for c in self.client.call("list")["containers"]}
        rows = [("CONTAINER ID", "NAME", "IMAGE", "STATUS", "PIDS", "CREATED", "OWNER")]
        for state in list_states():
            if not state["alive"]:
                continue
            mine = state.get("owner_pid") == self.client.pid
            status = ours.get(state["id"], {}).get("status", "running")
            rows.append((state["id"][:12], state.get("name", ""), state.get("image", ""), status,
                         str(len(state.get("pids") or [])), _ago(time.time() - state.get("created", time.time())),
                         "this kernel" if mine else f"pid {state.get('owner_pid')}"))
        show_table(rows)

    def _verb_images(self, rest: list[str]) -> None:
        from pytest_hermetic.images.store import Store

        self._need(rest, "images")
        rows = [("IMAGE", "ID", "LAYERS", "SIZE", "CREATED"), ("host", "-", "1 (the host's /)", "-", "-")]
        problems: list[str] = []
        for image in Store().images(problems):
            rows.append((image.familiar, image.id[7:19], str(len(image.layers)) + (" + host" if image.is_host else ""),
                         human(image.size), _ago(time.time() - image.created)))
        show_table(rows)
        for problem in problems:
            print(f"note: {problem}", file=sys.stderr)

    def _verb_commit(self, rest: list[str]) -> None:
        from pytest_hermetic.images.commit import target_name

        self._need(rest, "commit NAME REF")
        target_name(rest[1])
        reply = self.client.call("commit", name=rest[0], ref=rest[1], patience=3600.0)
        print(f"committed {reply['image']} ({reply['id'][7:19]})")

    def _verb_stop(self, rest: list[str]) -> None:
        self._need(rest, "stop NAME")
        self._own(rest[0])
        self.client.call("stop", name=rest[0])

    def _verb_rm(self, rest: list[str]) -> None:
        self._need(rest, "rm NAME", more=True)
        for name in rest:
            self._own(name)
            self.client.call("rm", name=name)

    def _verb_exec(self, rest: list[str]) -> None:
        self._need(rest, "exec NAME CMD", more=True)
        self._own(rest[0])
        sink = _Sink()
        reply = self.client.call("exec", name=rest[0], argv=rest[1:], on_output=sink, interruptible=True)
        sink.finish()
        self._report(reply, rest[1:], sink, False)

    def _verb_pull(self, rest: list[str]) -> None:
        import argparse

        parser = argparse.ArgumentParser(prog="%container pull", add_help=False, exit_on_error=False)
        parser.add_argument("reference")
        parser.add_argument("--platform")
        parser.add_argument("--quiet", "-q", action="store_true")
        try:
            args = parser.parse_args(rest)
        except (argparse.ArgumentError, SystemExit):
            raise UsageError("usage: %container pull REF [--platform OS/ARCH] [--quiet]") from None
        from pytest_hermetic.images.pull import pull
        from pytest_hermetic.images.store import Store

        progress = None if args.quiet else PullProgress(args.reference, notebook=self._in_notebook())
        image = pull(Store(), args.reference, platform=args.platform, progress=progress, quiet=args.quiet)
        if progress is not None:
            progress.close()
        print(f"pulled {image.familiar} ({image.id[7:19]})")

    def _verb_build(self, rest: list[str]) -> None:
        if not rest or rest[0] in ("-h", "--help"):
            raise UsageError("usage: %container build -t NAME [-f FILE] [--build-arg K=V]... [--target STAGE] "
                             "[--no-cache] [--net] CONTEXT (see `hermetic build --help`)")
        self._build(rest)

    @magic_arguments()
    @argument("name", metavar="NAME", help="the image's name (NAME[:TAG])")
    @argument("--context", default=None, metavar="DIR", help="the folder COPY and ADD read (default: the working folder)")
    @argument("--build-arg", action="append", default=[], metavar="K=V", help="set an ARG")
    @argument("--target", metavar="STAGE", help="build this stage (and what it needs), not the last")
    @argument("--no-cache", action="store_true", help="run every step; use no cached layer")
    @argument("--net", action="store_true", help="RUN on the host bridge with NAT out (default: no network)")
    @cell_magic
    def containerfile(self, line: str, cell: str) -> None:
        """Build the cell, a Containerfile, as image NAME; the build's steps
        and RUN output are shown as they come.  Steps are cached: running the
        cell again with nothing changed takes milliseconds."""
        import tempfile

        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%%containerfile: {exc}") from None
        args = self.containerfile.parser.parse_args(words)
        with tempfile.TemporaryDirectory(prefix="hermetic-containerfile-") as folder:
            path = os.path.join(folder, "Containerfile")
            with open(path, "w", encoding="utf-8") as f:
                f.write(cell)
            argv = ["-f", path, "-t", args.name]
            argv += [word for item in args.build_arg for word in ("--build-arg", item)]
            argv += ["--target", args.target] if args.target else []
            argv += ["--no-cache"] if args.no_cache else []
            argv += ["--net"] if args.net else []
            self._build([*argv, args.context or os.getcwd()])

    def _build(self, argv: list[str]) -> None:
        from .build import run_build

        def write(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()  # ipykernel would wait for its flush interval

        try:
            run_build(argv, write)
        except HermeticError as exc:
            raise _short(exc) from None
        except KeyboardInterrupt:
            raise ContainerCellInterrupted("the build was stopped (its step's container with it); nothing was "
                                           "tagged") from None

    def _own(self, name: str) -> None:
        """Fail without starting a helper when this kernel has no containers."""
        if not self.client.running:
            from pytest_hermetic.errors import ContainerNotFound

            raise ContainerNotFound(f"no container named {name!r} was started by this kernel; see `%container ps`")

    def _in_notebook(self) -> bool:
        return getattr(self.shell, "kernel", None) is not None


def _ago(seconds: float) -> str:
    for unit, span in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= span:
            return f"{int(seconds // span)} {unit} ago"
    return "just now"
