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
    return 0
