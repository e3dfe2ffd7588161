"""Image verbs: images, pull, push, save, import, commit, rmi, tag, login, logout."""

from __future__ import annotations

import time

from .. import options
from ..errors import ImageReferenceError
from .output import ago, human, output_format, print_json, say, table

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

    from . import Verb


def add_parsers(verb: "Verb") -> None:
    images = verb("images", help="list images in the local store")
    images.add_argument("-q", "--quiet", action="store_true", help="only the image ids (12 hex digits)")
    images.add_argument("--digests", action="store_true", help="show each image's manifest digest")
    images.add_argument("--format", type=output_format, default="table", metavar="json|table",
                        help="json: one JSON array of the images")
    images.set_defaults(handler=cmd_images)
    tag = verb("tag", help="give an image in the store another name (never pulls)")
    tag.add_argument("source", metavar="IMAGE", help="a name or an id prefix (completed from the store)")
    tag.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    tag.set_defaults(handler=cmd_tag)
    login = verb("login", help="check credentials with a registry and save them for pulls and pushes")
    login.add_argument("registry", nargs="?", default="docker.io", metavar="REGISTRY", help="HOST[:PORT] (default docker.io)")
    login.add_argument("-u", "--username", metavar="USER")
    login.add_argument("-p", "--password", metavar="PASSWORD", help="visible to other users (ps); prefer --password-stdin")
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    login.add_argument("--authfile", metavar="PATH", help="the auth.json to write (default $REGISTRY_AUTH_FILE, else "
                       "$XDG_RUNTIME_DIR/containers/auth.json)")
    login.set_defaults(handler=cmd_login)
    logout = verb("logout", help="remove a registry's saved credentials")
    logout.add_argument("registry", nargs="?", default="docker.io", metavar="REGISTRY")
    logout.add_argument("--authfile", metavar="PATH", help="the auth.json to change (default as for login)")
    logout.set_defaults(handler=cmd_logout)
    pull = verb("pull", help="pull an image from a registry into the local store")
    pull.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="from a multi-platform image (default: this machine's)")
    pull.add_argument("-q", "--quiet", action="store_true", help="no progress, only the name and id")
    pull.add_argument("ref", metavar="NAME[:TAG|@DIGEST]")

    pull.set_defaults(handler=cmd_pull)
    push = verb("push", help="push an image from the local store to a registry")
    push.add_argument("--chunk-size", metavar="SIZE", help="upload in chunks of SIZE (default: one request per blob)")
    push.add_argument("ref", metavar="IMAGE")
    push.add_argument("dest", nargs="?", metavar="DEST", help="registry reference to push to (default: IMAGE's name)")

    push.set_defaults(handler=cmd_push)
    save = verb("save", help="write an image as an OCI layout or a docker archive")
    save.add_argument("ref", metavar="IMAGE")
    save.add_argument("dest", metavar="oci:DIR[:TAG]|docker-archive:FILE[:REF]")

    save.set_defaults(handler=cmd_save)
    imp = verb("import", help="import an image: dir:PATH, tar:FILE, oci:DIR[:TAG], docker-archive:FILE[:REF]")
    imp.add_argument("source", metavar="SOURCE")
    imp.add_argument("name", metavar="NAME[:TAG]", nargs="?", help="needed for dir: and tar:; default for oci: DIR's name:TAG, "
                     "for docker-archive: its tag")
    imp.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="environment for the image config")
    imp.add_argument("-w", "--workdir", help="working directory for the image config")
    imp.add_argument("--user", help="user for the image config")
    imp.add_argument("--cmd", help="default command (a shell-style string)")

    imp.set_defaults(handler=cmd_import)
    com = verb("commit", help="save a running container's read-write layer as an image")
    com.add_argument("container", metavar="CONTAINER", help="name or id")
    com.add_argument("ref", metavar="REF")

    com.set_defaults(handler=cmd_commit)
    rmi = verb("rmi", help="remove images (their layers go at the next gc)")
    rmi.add_argument("-f", "--force", action="store_true",
                     help="untag also an image a running container uses (its layers stay until the container is gone)")
    rmi.add_argument("refs", nargs="+", metavar="IMAGE")

    rmi.set_defaults(handler=cmd_rmi)


def cmd_images(args: argparse.Namespace) -> int:
    from ..images.store import Store

    store = Store()
    problems: list[str] = []
    images = store.images(problems)
    digests = store.read_refs()
    if args.quiet:
        for image_id in dict.fromkeys(image.id[7:19] for image in images):
            print(image_id)
    elif args.format == "json":
        print_json([{"name": "host", "id": None, "digest": None, "layers": 1, "size": None, "created": None, "host": True}] + [
            {"name": image.familiar, "id": image.id, "digest": digests.get(image.name), "layers": len(image.layers),
             "size": image.size, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(image.created)),
             "host": image.is_host} for image in images])
    else:
        rows = [("IMAGE", *(("DIGEST",) if args.digests else ()), "ID", "LAYERS", "SIZE", "CREATED")]
        rows.append(("host", *(("-",) if args.digests else ()), "-", "1 (the host's /)", "-", "-"))
        for image in images:
            rows.append((image.familiar, *((digests.get(image.name, "-"),) if args.digests else ()), image.id[7:19],
                         str(len(image.layers)) + (" + host" if image.is_host else ""), human(image.size),
                         ago(time.time() - image.created)))
        table(rows)
    for problem in problems:
        say(f"note: {problem}")
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    from ..images.commit import target_name
    from ..images.store import Store

    Store().tag_as(args.source, target_name(args.target))
    return 0


def cmd_login(args: argparse.Namespace) -> int:
    import sys

    from ..errors import SpecError
    from ..images import auth, config
    from ..images.registry import Registry

    registry = auth.registry_key(args.registry)
    user = args.username
    if not user:
        if not sys.stdin.isatty() or args.password_stdin:
            raise SpecError("login: give the user name with -u USER")
        user = input("Username: ").strip()
    if args.password_stdin:
        if args.password is not None:
            raise SpecError("login: --password and --password-stdin are exclusive")
        password = sys.stdin.read().rstrip("\r\n")
    elif args.password is not None:
        say("warning: --password on the command line is visible to other users; use --password-stdin")
        password = args.password
    elif sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
    else:
        raise SpecError("login: give the password with --password-stdin (stdin is not a terminal)")
    if not user or not password:
        raise SpecError("login: the user name and the password must not be empty")
    if config.offline() and not config.is_loopback(registry):
        raise SpecError(f"login: HERMETIC_OFFLINE is set, so registry {registry} cannot check the credentials")
    Registry(registry, credentials=(user, password)).check_login()
    path = auth.save_login(registry, user, password, args.authfile)
    say(f"credentials for {registry} saved in {path}")
    print("Login Succeeded")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from ..images import auth

    registry = auth.registry_key(args.registry)
    removed, path = auth.remove_login(registry, args.authfile)
    print(f"Removed login credentials for {registry}" if removed else f"Not logged in to {registry}")
    if removed:
        say(f"from {path}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from ..images.pull import Puller
    from ..images.store import Store

    puller = Puller(Store(), platform=args.platform, quiet=args.quiet)
    image = puller.pull(args.ref)
    if not args.quiet:
        say(f"pulled {image.familiar}: {puller.layers} layer{'s' if puller.layers != 1 else ''} "
             f"({puller.fetched} fetched, {human(puller.bytes)}) in {puller.seconds:.2f} s, manifest {puller.manifest_digest}")
    print(f"{image.familiar} {image.id}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from ..images.push import push
    from ..images.store import Store
    from ..spec import parse_size

    chunk = parse_size(args.chunk_size, "--chunk-size") if args.chunk_size else None
    digest, outcome = push(Store(), args.ref, args.dest, chunk_size=chunk)
    counts: dict[str, int] = {}
    for how in outcome.values():
        counts[how] = counts.get(how, 0) + 1
    say("pushed " + ", ".join(f"{n} {how}" for how, n in sorted(counts.items())) + f" blob{'s' if len(outcome) != 1 else ''}")
    print(f"{args.dest or args.ref} {digest}")
    return 0


def cmd_save(args: argparse.Namespace) -> int:
    from ..images import reference as refs
    from ..images.archives import save_docker_archive, save_oci
    from ..images.store import Store

    store = Store()
    image = store.local(args.ref)
    dest = refs.parse(args.dest)
    if dest.transport == "oci":
        digest = save_oci(store, image, dest.path, dest.tag)
        print(f"{args.dest} {digest}")
    elif dest.transport == "docker-archive":
        save_docker_archive(store, image, dest.path, dest.tag)
        print(f"{args.dest} {image.id}")
    else:
        raise ImageReferenceError(f"cannot save to {args.dest!r}: use oci:DIR[:TAG] or docker-archive:FILE[:REF] "
                                  "(to a registry: `hermetic push`)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    import shlex

    from ..errors import SpecError
    from ..images.store import Store
    from ..images.transports import import_image
    from ..spec import parse_user, parse_workdir

    try:
        cmd = shlex.split(args.cmd) if args.cmd else None
    except ValueError as exc:
        raise SpecError(f"--cmd {args.cmd!r}: {exc}; quote it as a shell would") from None
    image = import_image(Store(), args.source, args.name, env=options.parse_env(args.env), workdir=parse_workdir(args.workdir),
                         user=parse_user(args.user), cmd=cmd)
    print(f"{image.familiar} {image.id}")
    return 0


def cmd_commit(args: argparse.Namespace) -> int:
    from ..container import commit_running

    image = commit_running(args.container, args.ref)
    print(f"{image.familiar} {image.id}")
    return 0


def cmd_rmi(args: argparse.Namespace) -> int:
    from ..images.store import Store

    store = Store()
    for ref in dict.fromkeys(args.refs):  # `rmi $(images -q)` may name an image twice
        print(f"untagged {store.remove(ref, force=args.force)}")
    return 0

