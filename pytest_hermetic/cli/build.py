"""`hermetic build`: an image from a Containerfile (docs/build.md)."""

from __future__ import annotations

import sys

from .output import say

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

    from . import Verb


def add_parsers(verb: "Verb") -> None:
    build = verb("build", help="build an image from a Containerfile (each RUN a container; cached, reproducible)")
    build.add_argument("-f", "--file", metavar="FILE", help="the Containerfile (default CONTEXT/Containerfile, "
                       "else CONTEXT/Dockerfile)")
    build.add_argument("-t", "--tag", action="append", default=[], metavar="NAME[:TAG]",
                       help="name the image (repeat for more names)")
    build.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE", help="set an ARG")
    build.add_argument("--target", metavar="STAGE", help="build this stage (and what it needs), not the last")
    build.add_argument("--no-cache", action="store_true", help="run every step; use no cached layer")
    build.add_argument("--net", action="store_const", const="true", dest="net", default="false",
                       help="RUN on the host bridge with NAT out, as `run --net` (default: no network)")
    build.add_argument("--network", dest="net", metavar="NET", help="RUN on this network: none, bridge, or a named one")
    build.add_argument("--push", action="store_true", help="then push every -t that names a registry "
                       "(HOST[:PORT]/NAME[:TAG]), as `hermetic push` does")
    build.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    build.add_argument("context", metavar="CONTEXT", help="the folder COPY and ADD read")
    build.set_defaults(handler=cmd_build)


def cmd_build(args: argparse.Namespace) -> int:
    from ..build import build
    from ..errors import BuildError
    from ..spec import parse_net

    build_args = {}
    for item in args.build_arg:
        key, sep, value = item.partition("=")
        if not key:
            raise BuildError(f"--build-arg {item!r}: use KEY=VALUE")
        if not sep:  # as Docker: KEY alone takes the value from the environment
            import os

            if key not in os.environ:
                continue
            value = os.environ[key]
        build_args[key] = value

    pushes = registry_tags(args.tag) if args.push else []

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    try:
        image = build(args.file, args.context, tags=args.tag, build_args=build_args, target=args.target,
                      no_cache=args.no_cache, net=parse_net(args.net), progress=progress)
    except BuildError as exc:
        if args.quiet and exc.output:  # the step's output was not shown as it came: its tail, then the line
            print(exc.output, file=sys.stderr)
        raise
    if not args.quiet:
        say(f"built {image.familiar} ({image.id[7:19]})")
    print(image.id)
    for tag in pushes:
        from ..images.push import push
        from ..images.store import Store

        digest, _outcome = push(Store(), tag, None)
        if not args.quiet:
            say(f"pushed {tag} {digest}")
    return 0


def registry_tags(tags: list[str]) -> list[str]:
    """The -t names `--push` pushes: those whose first part names a registry
    (a host with a dot or a port, or localhost), as Docker reads a name.  A
    bare name (Docker Hub) is not pushed by accident: one line, before the build."""
    from ..errors import BuildError

    pushed: list[str] = []
    bare: list[str] = []
    for tag in tags:
        first, slash, _rest = tag.partition("/")
        (pushed if slash and ("." in first or ":" in first or first == "localhost") else bare).append(tag)
    if not tags or bare:
        raise BuildError(f"--push: -t {bare[0]} names no registry; write -t HOST[:PORT]/NAME[:TAG] "
                         "(e.g. localhost:5000/app:1), or push it afterwards with `hermetic push NAME DEST`"
                         if bare else "--push needs a -t naming a registry, e.g. -t localhost:5000/app:1")
    return pushed
