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
