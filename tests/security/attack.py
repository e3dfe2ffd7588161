"""Shared pieces of the containment tests (tests/security/test_containment_*.py).

Every fix these tests prove must hold on its own, so containers run with the
seccomp filter off where the engine has one (`--security-opt
seccomp=unconfined`, `seccomp=False` in the marker): a filter that blocks a
call would hide a hole behind it.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import subprocess
import sys

from conftest import ROOT, run_cli

HOST_PYTHON = "/usr/bin/python3"  # in the `host` image, and readable by the test user


@functools.lru_cache(maxsize=None)
def unconfined() -> tuple[str, ...]:
    """The CLI options that turn the seccomp filter off, if it has one."""
    text = run_cli("run", "--help").stdout
    return ("--security-opt", "seccomp=unconfined") if "seccomp=unconfined" in text else ()


def marker_options() -> str:
    """The marker's keyword for the same, if it has one."""
    from pytest_hermetic.spec import Spec

    return "seccomp=False" if "seccomp" in getattr(Spec, "__dataclass_fields__", {}) or hasattr(Spec, "seccomp") else ""


def spec_options() -> dict:
    """The same for `Spec.build`."""
    return {"seccomp": False} if marker_options() else {}


def run(*args: str, user: str | None = None, **kwargs):  # noqa: ANN201
    """`hermetic run ARGS` with the seccomp filter off."""
    return run_cli("run", *unconfined(), *args, user=user, **kwargs)


def user_home(user: str) -> str:
    """The test user's home for this session (the one `run_cli(user=...)` uses)."""
    entry = pwd.getpwnam(user)
    home = os.path.join(os.path.dirname(os.environ["HERMETIC_STATE"]), f"home-{entry.pw_uid}")
    os.makedirs(home, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    return home


def user_dir(user: str, name: str) -> str:
    """A fresh folder of the test user's, in its home."""
    entry = pwd.getpwnam(user)
    path = os.path.join(user_home(user), name)
    shutil.rmtree(path, ignore_errors=True)
    os.mkdir(path, 0o755)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def sentinel(script: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `script` (Python) in a process of its own session and process
    group, the caller a container's signals must not reach: it prints
    SENTINEL-ALIVE at its end if nothing killed it.  Being in its own
    session, a failed containment kills it, not this pytest."""
    env = {k: v for k, v in os.environ.items() if k.startswith("HERMETIC_") or k in ("PATH", "LANG")}
    env["PYTHONPATH"] = ROOT
    return subprocess.run([sys.executable, "-c", script + "\nprint('SENTINEL-ALIVE', flush=True)\n"],
                          capture_output=True, text=True, env=env, timeout=timeout, start_new_session=True, cwd="/")


def inner_session(user: str | None, project: str, source: str, *args: str,
                  timeout: float = 180, output: str | None = None) -> subprocess.CompletedProcess:
    """An inner `pytest -p hermetic` session over `source` (test_inner.py),
    as root or as `user`, in a process of its own session (see `sentinel`).
    With `output`, its stdout and stderr go to that file (`pytest > log`),
    read back as the result's stdout."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": ROOT, "LANG": "C.UTF-8"}
    prefix: list[str] = []
    if user is None:
        base = os.path.join(os.path.dirname(os.environ["HERMETIC_STATE"]), "security-projects")
        os.makedirs(base, exist_ok=True)
        directory = os.path.join(base, project)
        env.update({k: v for k, v in os.environ.items() if k.startswith("HERMETIC_")})
    else:
        entry = pwd.getpwnam(user)
        home = user_home(user)
        directory = os.path.join(home, project)
        env.update(HOME=home, HERMETIC_STATE=f"{home}/state", XDG_DATA_HOME=f"{home}/data")
        prefix = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups"]
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    with open(os.path.join(directory, "test_inner.py"), "w") as f:
        f.write(source)
    if user is not None:
        for path in (directory, os.path.join(directory, "test_inner.py")):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    argv = [*prefix, sys.executable, "-m", "pytest", "-p", "hermetic", "-p", "no:cacheprovider",
            "-q", "-rA", "--basetemp", os.path.join(directory, ".basetemp"), *args, "test_inner.py"]
    if output is None:
        return subprocess.run(argv, cwd=directory, env=env, capture_output=True, text=True, timeout=timeout,
                              start_new_session=True)
    with open(output, "a") as out:
        ran = subprocess.run(argv, cwd=directory, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
                             timeout=timeout, start_new_session=True)
    with open(output) as out:
        ran.stdout, ran.stderr = out.read(), ""
    return ran


def needs_unprivileged_python() -> None:
    import pytest

    if os.path.realpath(sys.executable).startswith("/root/"):
        pytest.skip("this interpreter lives under /root, out of an unprivileged user's reach")
