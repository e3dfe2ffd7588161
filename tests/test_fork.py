"""runtime/fork.py: `bare_fork`, the zygote's fork without Python's
after-fork work, in real interpreters of their own (a fork here would be a
fork of pytest)."""

import json
import subprocess
import sys

CHILDREN = r'''
import json, os, random, sys, threading
from pytest_hermetic.runtime.fork import bare_fork

ran = []
os.register_at_fork(after_in_child=lambda: ran.append("hook"))
fork_now = bare_fork()
assert fork_now is not None
random.seed(7)  # the parent's state, which a child must not repeat
r, w = os.pipe()
pids = []
for _ in range(3):
    pid = fork_now()
    if pid == 0:
        os.write(w, json.dumps({"pid": os.getpid(), "random": random.random(), "hooks": ran,
                                "thread": threading.current_thread() is threading.main_thread()}).encode() + b"\n")
        os._exit(3)
    pids.append(pid)
os.close(w)
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
lines = os.read(r, 1 << 16).decode().splitlines()
print(json.dumps({"pids": pids, "codes": codes, "children": [json.loads(x) for x in lines],
                  "parent_random": random.random()}))
'''


def test_children_of_a_bare_fork_run_no_hook_but_draw_their_own_random_numbers():
    done = subprocess.run([sys.executable, "-c", CHILDREN], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    children = seen["children"]
    assert sorted(c["pid"] for c in children) == sorted(seen["pids"]) and seen["codes"] == [3, 3, 3]
    assert all(c["hooks"] == [] and c["thread"] for c in children)  # no hook ran; the one thread is main
    draws = {c["random"] for c in children} | {seen["parent_random"]}
    assert len(draws) == 4  # each child reseeded, as random's own at-fork hook does


def test_a_process_with_another_thread_gets_no_bare_fork():
    script = r'''
import threading
from pytest_hermetic.runtime.fork import bare_fork
assert bare_fork() is not None
stop = threading.Event()
thread = threading.Thread(target=stop.wait)
thread.start()
try:
    print(bare_fork() is None)
finally:
    stop.set()
    thread.join()
'''
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


SIGNAL_AT_THE_FORK = r'''
import os, signal, sys
from pytest_hermetic.container import Container
from pytest_hermetic.errors import ContainerStartError
from pytest_hermetic.spec import Spec


class Boom(Exception):
    pass


def raises(signum, frame):
    raise Boom()  # as a Ctrl-C's KeyboardInterrupt would, from pytest's handler


def masked():
    return 1 if signal.pthread_sigmask(signal.SIG_BLOCK, []) else 0


me = os.getpid()
signal.signal(signal.SIGUSR1, raises)
c = Container(Spec.build("host", ["true"]))
try:  # no signal: the callable runs with the caller's mask, which is back as it was here
    c.start(target=masked)
    print("mask", c.wait().exit_code, sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])), flush=True)
finally:
    c.remove()
real_fork = os.fork


def fork():
    pid = real_fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGUSR1)  # a signal at the child's first instant, in the caller's frames
    return pid


os.fork = fork
c = Container(Spec.build("host", ["true"]))
try:
    c.start(target=lambda: 0)
    print("exit", c.wait().exit_code, flush=True)
except ContainerStartError as exc:
    print("start error:", exc, flush=True)
except BaseException as exc:
    if os.getpid() != me:  # the child, unwound into this script's frames: it would go on as its parent
        print("ESCAPED", type(exc).__name__, flush=True)
        os._exit(3)
    raise
finally:
    if os.getpid() == me:
        c.remove()
print("done", flush=True)
'''


def test_a_signal_at_a_childs_first_instant_stays_in_the_child():
    """A signal whose Python handler raises (pytest's Ctrl-C), delivered to a
    container's child before its own code runs: the child reports it as its
    set-up's failure, and never unwinds into its parent's frames to go on as
    the parent (a test's child ran the rest of a pytest session so, under
    load); the mask is blocked only across the fork."""
    done = subprocess.run([sys.executable, "-c", SIGNAL_AT_THE_FORK], capture_output=True, text=True, timeout=60)
    assert "ESCAPED" not in done.stdout, done.stdout + done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "mask 0 []", lines
    assert lines[1].startswith("start error:") and "Boom" in lines[1], lines
    assert lines[2:] == ["done"], lines
