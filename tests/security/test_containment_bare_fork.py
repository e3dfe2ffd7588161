"""A command's container forked without Python's after-fork hooks
(`fork.bare_fork`, used where the caller has one thread: `hermetic run`,
`Container.run` of a command, when the native child cannot run), and one
set up by the native child (runtime/native_child.py, the default where it
can run), each hold exactly what one forked with `os.fork` holds: capabilities, no_new_privs, the seccomp filter, its descriptors, a
session of its own, a keyring it cannot reach around the filter, /proc's
masks, its devices.  The command probes all of them from inside, once per
way of forking, in a fresh interpreter of one thread (so the bare fork is
really taken: the test says so)."""

from __future__ import annotations

import json
import textwrap

from attack import HOST_PYTHON, sentinel
from pytest_hermetic.runtime.capabilities import DEFAULT_CAPS

PROBE = textwrap.dedent("""
    import ctypes, errno, json, os
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    libc = ctypes.CDLL(None, use_errno=True)
    keyctl = libc.syscall(ctypes.c_long(250), ctypes.c_long(0), ctypes.c_long(-3), ctypes.c_long(0))  # GET_KEYRING_ID @s
    keyctl_errno = errno.errorcode.get(ctypes.get_errno()) if keyctl < 0 else None
    print(json.dumps({
        "caps": {k: status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
        "no_new_privs": status["NoNewPrivs"].strip(), "seccomp": status["Seccomp"].strip(),
        "fds": sorted(os.listdir("/proc/self/fd")), "pid": os.getpid(),
        "session_leader": os.getsid(0) == os.getpid(), "keyctl": keyctl_errno,
        "kcore": os.stat("/proc/kcore").st_size if os.path.exists("/proc/kcore") else None,
        "devices": sorted(os.listdir("/dev")),
        "uid": os.getuid(),
    }, sort_keys=True))
""")

def probe(way: str) -> tuple[dict, bool]:
    """The probe's findings in a container started from a fresh one-thread
    interpreter, its child forked `way` ("bare" or "os") or started natively
    ("native"), and whether that way was taken."""
    script = textwrap.dedent(f"""
        import json, os, sys
        from pytest_hermetic.container import Container
        from pytest_hermetic.runtime import native_child, process
        from pytest_hermetic.spec import Spec

        used = []
        bare = process.bare_fork
        def watched():
            made = bare()
            used.append(made is not None)
            return made
        process.bare_fork = watched if {way!r} == "bare" else (lambda: None)
        native_child.switch({way!r} == "native")
        start = native_child.Plan.start
        def started(plan, err_w, cgroup_fd=None):
            used.append(True)
            return start(plan, err_w, cgroup_fd)
        native_child.Plan.start = started
        read, write = os.pipe()
        container = Container(Spec.build("host", [{HOST_PYTHON!r}, "-c", {PROBE!r}], ephemeral=True))
        try:
            container.start(stdout=write)
            os.close(write)
            result = container.wait()
        finally:
            container.remove()
        found = os.read(read, 1 << 16).decode()
        print("PROBE", json.dumps({{"found": found, "code": result.exit_code, "bare": any(used)}}), flush=True)
    """)
    ran = sentinel(script)
    assert "SENTINEL-ALIVE" in ran.stdout, ran.stdout + ran.stderr
    line = next(line for line in ran.stdout.splitlines() if line.startswith("PROBE "))
    outcome = json.loads(line[len("PROBE "):])
    assert outcome["code"] == 0, ran.stdout + ran.stderr
    return json.loads(outcome["found"]), outcome["bare"]


def test_a_bare_forked_command_holds_what_an_os_forked_one_holds_and_no_more() -> None:
    bare, taken = probe("bare")
    assert taken, "the bare fork was not taken: this test no longer covers it"
    forked, taken_there = probe("os")
    assert not taken_there
    assert bare == forked, (bare, forked)
    native, taken = probe("native")
    assert taken, "the native child did not run: this test no longer covers it"
    assert native == forked, (native, forked)
    default = sum(1 << bit for bit in DEFAULT_CAPS.values())
    assert all(int(bare["caps"][k], 16) == default for k in ("CapPrm", "CapEff", "CapBnd")), bare["caps"]
    assert int(bare["caps"]["CapInh"], 16) == int(bare["caps"]["CapAmb"], 16) == 0
    assert bare["no_new_privs"] == "1" and bare["seccomp"] == "2"
    assert bare["fds"] == ["0", "1", "2", "3"], bare["fds"]  # 0-2 and listdir's own
    assert bare["pid"] == 1 and bare["session_leader"] and bare["uid"] == 0
    assert bare["keyctl"] == "EPERM"
    assert bare["kcore"] in (None, 0)  # masked (/dev/null) where the kernel has one
    assert "sda" not in bare["devices"] and "mem" not in bare["devices"], bare["devices"]

