"""The containers of hermetic tests, around the test that runs in one:
each test's spec worked out once per marker spec, the next test's container
prepared while the current test runs, and earlier tests' containers removed
once their reports are home (off every test's path).  `parent` runs the
test itself."""

from __future__ import annotations

import os
from typing import Any

import pytest

from .. import _pytest_compat as compat
from ..bindings import volumes_for
from ..container import Container
from ..errors import HermeticError
from ..fixtures import with_host_tmp
from ..images.store import Store
from ..runtime import process
from ..spec import Spec

# The per-test spec of the last few marker specs (a session under
# --hermetic has one): the bindings are the same for every test of a spec,
# image, working folder and basetemp, and working them out (paths, existence
# checks, sorting) is pytest-process work on every test's path.
_SPECS_KEPT = 8
_specs: list[tuple[tuple, Spec]] = []


def container_spec(config: pytest.Config, spec: Spec, store: Store, image: Any) -> Spec:
    """`spec` as a per-test container runs it: what the test needs at its
    host paths (pytest's basetemp read-write, so `tmp_path` behaves as
    without isolation; the test tree and where pytest runs; in another
    image the interpreter too), its rw layer in memory, no state folder, no
    accounting beyond the limits asked for (each a measurable cost per
    test), pytest's working folder, and the host's name unless the marker
    names one (fixtures of wider scope record facts such as
    `socket.gethostname()` in the parent and the test compares; the UTS
    namespace still keeps a `sethostname` inside)."""
    cwd = os.getcwd()  # (a wider fixture may have changed it: part of the key)
    basetemp = compat.basetemp(config)
    # Only for `host`: in another image the bindings follow the shared
    # libraries mapped at the time (an extension a fixture imported later).
    key = (spec, store.root, cwd, basetemp, str(config.rootpath), os.uname().nodename) if image is None else None
    for kept_key, kept in _specs:
        if kept_key == key:
            return kept
    volumes = volumes_for(with_host_tmp(spec), code=(str(config.rootpath), cwd),
                          writable=[basetemp] if basetemp is not None else [], store=store, image=image)
    made = spec.with_options(volumes=tuple(volumes), ephemeral=True, tracked=False, accounting=False,
                             workdir=spec.workdir or cwd, hostname=spec.hostname or os.uname().nodename)
    if key is not None:
        _specs.insert(0, (key, made))
        del _specs[_SPECS_KEPT:]
    return made


def nothing_between(item: pytest.Item, nextitem: pytest.Item) -> bool:
    """Whether pytest's process does nothing for `nextitem` after `item`
    that its child would miss if it were forked now (while `item` runs):
    no teardown or set-up of a wider scope between them but a module's or
    class's that does nothing (`compat.only_plain_nodes_between`: the child
    catches up with its stack), no stop asked for, the same warning filters
    around both (the warnings plugin's, in force at the fork).  Only
    logging `item`'s reports comes between, which a test's process never
    reads."""
    session = item.session
    return (not session.shouldfail and not session.shouldstop and compat.only_plain_nodes_between(item, nextitem)
            and compat.same_warning_filters(item, nextitem))


_next: tuple[int, Spec, Container] | None = None  # (owner pid, its per-test spec, the next test's container)


def prepare_next(config: pytest.Config, spec: Spec) -> None:
    """Prepare the next test's container (`Container.prepare`: its cgroup
    and what its child needs) now, while this test's child runs and this
    process would only wait: its start then goes straight to the fork.
    For a test without a network (the --hermetic default) or on the host's
    bridge; it is used only if the next test's spec, working folder and
    basetemp turn out the same (`take_next`), else removed."""
    global _next
    discard_next()
    prepared = _prepare(config, spec)
    if prepared is not None:
        _next = (os.getpid(), *prepared)


def _prepare(config: pytest.Config, spec: Spec) -> tuple[Spec, Container] | None:
    """A prepared container for a test of `spec` (no network, or the host's
    bridge), with its per-test spec; None where there is none (the test
    makes its own, and says what fails).  An image is only looked up in the
    store here, never pulled: a pull, and its error, are the test's own."""
    if spec.net is not False and spec.net is not True:
        return None
    store = Store()
    try:
        image = None if spec.image == "host" else store.resolve(spec.image)
        made = container_spec(config, spec, store, image)
        return made, Container(made, store=store, image=image).prepare()
    except (HermeticError, OSError):
        return None


def take_next(spec: Spec | None) -> Container | None:
    """The container `prepare_next` made, if it was made for `spec` (the
    per-test one); else None, and it is removed."""
    global _next
    ready, _next = _next, None
    if ready is None or ready[0] != os.getpid():
        return None  # none, or a parent's (a fork's copy is not ours)
    if ready[1] is spec or ready[1] == spec:
        return ready[2]
    ready[2].remove()
    return None


def discard_next() -> None:
    """Remove the prepared container, if any (the session's end)."""
    take_next(None)  # (matches no spec)


class Ahead:
    """A next test's container, started while the current test runs: its
    child has built its root and waits for pytest's word (`go`) before it
    runs the item's phases, so neither the fork of pytest nor the set-up is
    on that test's path.  pytest's ends of the child's pipes come with it."""

    def __init__(self, item: pytest.Item, spec: Spec, container: Container, read_fd: int, reply_w: int,
                 go_w: int, listeners: list) -> None:
        self.owner = os.getpid()
        self.item = item
        self.spec = spec
        self.container = container
        self.read_fd = read_fd  # the child's messages
        self.reply_w = reply_w  # answers to its `containers` calls
        self.go_w = go_w
        self.listeners = listeners  # pytest's own, found at the fork (loopback_relay)

    def go(self) -> None:
        """Let the child run its test (`Container.confirm_start` then says
        whether its set-up failed)."""
        try:
            os.write(self.go_w, b"g")
        except BrokenPipeError:
            pass  # its set-up failed and it is gone: confirm_start says why
        finally:
            os.close(self.go_w)

    def discard(self) -> None:
        """Its test is not the next one after all: the child ends unused."""
        os.close(self.go_w)  # (it reads no word and returns)
        os.close(self.read_fd)
        os.close(self.reply_w)
        self.container.remove()


# The containers started ahead, in the order their tests come.  Two: one
# container's start (the zygote's fork, then its child's set-up) takes
# longer than a trivial test, so with one started ahead each test waited
# for the end of its own set-up; with two, each set-up has two tests' time
# to finish, and fills what the cores would leave idle.
AHEAD = 2
_aheads: list[Ahead] = []


def keep_ahead(config: pytest.Config, upcoming: list[tuple[pytest.Item, Spec]], start: Any) -> None:
    """Have the containers of `upcoming` (the next tests and their specs,
    in order, at most AHEAD) started ahead: those started already for them
    stay, any other is discarded, the rest are prepared and started now:
    `start(container, item)` forks its child (ahead) and returns pytest's
    ends of its pipes (read, reply, go) and the listeners found."""
    _forget_copies()
    discard_next()
    kept = 0
    while kept < len(_aheads) and kept < len(upcoming) and _aheads[kept].item is upcoming[kept][0]:
        kept += 1
    while len(_aheads) > kept:
        _aheads.pop().discard()
    for later, spec in upcoming[kept:AHEAD]:
        prepared = _prepare(config, spec)
        if prepared is None:
            return
        made, container = prepared
        try:
            read_fd, reply_w, go_w, listeners = start(container, later)
        except (HermeticError, OSError):
            return  # (removed) the test makes its own, and says what fails
        _aheads.append(Ahead(later, made, container, read_fd, reply_w, go_w, listeners))


def take_ahead(item: pytest.Item | None, spec: Spec | None) -> Ahead | None:
    """The container started ahead for `item` and its per-test `spec`, if
    it is the first one; else None, and all of them are discarded."""
    _forget_copies()
    if _aheads and _aheads[0].item is item and (_aheads[0].spec is spec or _aheads[0].spec == spec):
        return _aheads.pop(0)
    while _aheads:
        _aheads.pop().discard()
    return None


def discard_ahead() -> None:
    take_ahead(None, None)  # (matches no item)


def _forget_copies() -> None:
    """A fork's copy of the list (a pytest session inside a test) holds the
    parent's containers: not ours."""
    if _aheads and _aheads[0].owner != os.getpid():
        _aheads.clear()


_after: tuple[Any, bool] = (None, False)  # (session, whether its tests have run in the order of session.items)


def note_order(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Note whether pytest runs the tests in the order of `session.items`
    (its own loop does; an xdist worker runs what it is sent): only then is
    the test after the next one known ahead (`item_after`).  Once a next
    test was not the one after in that order, none is guessed again in
    the session: an xdist worker is sent its tests in runs of neighbours,
    and each guess across the end of a run was a container started for
    nothing (13 of 171 in a 160-test `-n 2` session)."""
    global _after
    session, in_order = _after
    follows = nextitem is not None and _item_after(nextitem.session, item) is nextitem
    if session is not item.session:
        _after = (item.session, follows)
    elif nextitem is not None:  # (the last test: nothing comes next, no guess was wrong)
        _after = (session, in_order and follows)


def item_after(item: pytest.Item) -> pytest.Item | None:
    """The test expected after `item` (see `note_order`), or None."""
    session, in_order = _after
    return _item_after(session, item) if in_order and session is item.session else None


def _item_after(session: Any, item: pytest.Item) -> pytest.Item | None:
    index = index_of(session).get(id(item))
    items = session.items
    return items[index + 1] if index is not None and index + 1 < len(items) else None


_held: tuple[int, int] | None = None  # (owner pid, fd of the last test's mount namespace)


def hold_namespace(container: Container, close: Any = os.close) -> None:
    """Keep `container`'s mount namespace (its set-up is done) until the
    next test's is made, as its other namespaces are made while a test
    lives (spare.py, placeholder.py): a namespace made after the last one
    ended may get its inode number again, and a test comparing the two
    would take the new one for the old (test_plugin_isolation does).  The
    next test's start may otherwise come late enough for that (the zygote).
    The last one held is let go by `close` (see `Zygote.close`)."""
    global _held
    try:
        fd = os.open(f"/proc/{container.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # gone already
        fd = -1
    previous, _held = _held, (os.getpid(), fd)
    if previous is not None and previous[0] == os.getpid() and previous[1] >= 0:
        close(previous[1])


def release_namespace() -> None:
    global _held
    held, _held = _held, None
    if held is not None and held[0] == os.getpid() and held[1] >= 0:
        os.close(held[1])


_indexed: tuple[Any, int, dict[int, int]] | None = None  # (session, its item count, item id -> index)


def index_of(session: pytest.Session) -> dict[int, int]:
    """Where each item of the session is in `session.items`, which a zygote
    shares, and `item_after` (made once a session: 33,000 items took ms)."""
    global _indexed
    if _indexed is None or _indexed[0] is not session or _indexed[1] != len(session.items):
        _indexed = (session, len(session.items), {id(item): i for i, item in enumerate(session.items)})
    return _indexed[2]


_pending: list[Container] = []
_pending_owner = os.getpid()


def defer_removal(container: Container) -> None:
    """Remove `container` later (`finish_pending`): its reports are home."""
    global _pending_owner
    if _pending_owner != os.getpid():  # a fork's copy (a pytest session inside a test): not ours
        _pending.clear()
        _pending_owner = os.getpid()
    _pending.append(container)


def finish_pending_of(reaper: Any) -> None:
    """Remove the pending containers whose child `reaper` reaps (a zygote's,
    before it ends), waiting for each."""
    for container in list(_pending) if _pending_owner == os.getpid() else ():
        forker = container.process.reaper if container.process is not None else None
        if forker is not None and forker.reap == reaper:
            _pending.remove(container)
            container.remove()


def finish_pending(block: bool = True) -> None:
    """Remove the containers whose reports are in; with `block`, wait for
    all of them (end of the session), else only for those already gone."""
    # (A fork's copy of the list holds the parent's containers: not ours.)
    for container in list(_pending) if _pending_owner == os.getpid() else ():
        if block or (container.process is not None and container.process.poll() is not None):
            _pending.remove(container)
            container.remove()
    if block:
        process.discard_prepared()  # the session's end: no next test
        discard_next()
        discard_ahead()
        release_namespace()
