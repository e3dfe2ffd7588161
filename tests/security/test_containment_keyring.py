"""Each container has a session keyring of its own, not its caller's.

The caller (a process made for the test, in a fresh session keyring of its
own: root's real keyrings are never touched) adds a harmless marker key
that only its possessors may use, then starts a container; from inside, the
attack searches its session keyring for the marker and reads the marker by
its id.  Both must fail, with the seccomp filter off: the keyring is what
holds, not a blocked system call."""

from __future__ import annotations

import os
import pwd
import subprocess
import textwrap

from attack import HOST_PYTHON, unconfined, user_home
from conftest import ROOT

_KEYCTL = ("import ctypes, os, platform\n"
           "libc = ctypes.CDLL(None, use_errno=True)\n"
           "NR = {'x86_64': (250, 248), 'aarch64': (219, 217)}[platform.machine()]\n"
           "def keyctl(*args):\n"
           "    result = libc.syscall(NR[0], *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])\n"
           "    return result if result >= 0 else -ctypes.get_errno()\n"
           "SESSION = -3\n")

# argv: the caller's session keyring id and the marker's id.
ATTACK = _KEYCTL + textwrap.dedent("""
    import sys
    theirs, marker = int(sys.argv[1]), int(sys.argv[2])
    ours = keyctl(0, SESSION, 0)  # KEYCTL_GET_KEYRING_ID
    print("session", "SAME" if ours == theirs else "own")
    found = keyctl(10, SESSION, b"user", b"hermetic-marker", 0)  # KEYCTL_SEARCH
    print("search", "FOUND" if found >= 0 else found)
    buf = ctypes.create_string_buffer(64)
    read = keyctl(11, marker, buf, 64)  # KEYCTL_READ
    print("read", "READ " + buf.value.decode() if read >= 0 else read)
    linked = keyctl(8, SESSION, marker)  # KEYCTL_LINK into our own keyring
    print("link", "LINKED" if linked >= 0 else linked)
""")

# The caller: its own new session keyring, a marker only possessors may use
# (KEY_POS_ALL), a container.
CALLER = _KEYCTL + textwrap.dedent("""
    import subprocess, sys
    theirs = keyctl(1, None)  # KEYCTL_JOIN_SESSION_KEYRING: a fresh anonymous one for this process
    assert theirs > 0, theirs
    value = b"hermetic-secret-marker"
    marker = libc.syscall(NR[1], b"user", b"hermetic-marker", value, len(value), ctypes.c_long(SESSION))
    assert marker > 0, ctypes.get_errno()
    assert keyctl(5, marker, 0x3f000000) == 0  # KEYCTL_SETPERM: possessor only
    assert keyctl(10, SESSION, b"user", b"hermetic-marker", 0) == marker  # the caller does find it
    argv = [sys.executable, "-m", "pytest_hermetic", "run", *sys.argv[1:], "host", PYTHON, "-c", ATTACK,
            str(theirs), str(marker)]
    ran = subprocess.run(argv, capture_output=True, text=True)
    print(ran.stdout, ran.stderr, "exit", ran.returncode)
""")


def _attack(user: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k.startswith("HERMETIC_") or k in ("PATH", "LANG")}
    env["PYTHONPATH"] = ROOT
    prefix: list[str] = []
    python = HOST_PYTHON
    if user is not None:
        entry = pwd.getpwnam(user)
        home = user_home(user)
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ROOT, "HOME": home, "XDG_DATA_HOME": f"{home}/data",
               "HERMETIC_STATE": f"{home}/state", "LANG": "C.UTF-8"}
        prefix = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups"]
    script = f"PYTHON = {HOST_PYTHON!r}\nATTACK = {ATTACK!r}\n" + CALLER
    ran = subprocess.run([*prefix, python, "-c", script, *unconfined()], capture_output=True, text=True, env=env,
                         timeout=60, cwd="/")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran.stdout


def _assert_contained(out: str) -> None:
    assert "exit 0" in out, out
    assert "session own" in out, out
    for word in ("SAME", "FOUND", "READ", "LINKED"):
        assert word not in out, out
    assert "search -126" in out, out  # ENOKEY


def test_the_callers_session_keyring_is_out_of_reach():
    _assert_contained(_attack())


def test_the_callers_session_keyring_is_out_of_reach_rootless(test_user):
    _assert_contained(_attack(test_user))
