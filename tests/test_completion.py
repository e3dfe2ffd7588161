"""Shell completion for real: the scripts `hermetic completion bash|zsh|fish`
prints, loaded into the shell itself, complete verbs, flags and live names
(an image, a detached container and a named network of this session)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import run_cli

# The checkout's command, as the scripts call it back (`COMP_WORDS[0]`).
HERMETIC = os.path.join(os.path.dirname(sys.executable), "hermetic")
TAG = f"compl{os.getpid()}"


@pytest.fixture(scope="module")
def names():  # noqa: ANN201
    """An image, a detached container and a named network, removed afterwards."""
    image, container, network = f"{TAG}-img:1", f"{TAG}-web", f"{TAG}-net"
    assert run_cli("import", "busybox:", image).returncode == 0
    ran = run_cli("run", "-d", "--name", container, "host", "sleep", "120")
    assert ran.returncode == 0, ran.stderr
    made = run_cli("network", "create", network, "--subnet", "10.201.0.0/24")
    assert made.returncode == 0, made.stderr
    try:
        yield {"image": image, "container": container, "network": network}
    finally:
        run_cli("rm", "-f", container)
        run_cli("network", "rm", network)
        run_cli("rmi", image)


def script(shell: str) -> str:
    ran = run_cli("completion", shell)
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def env() -> dict[str, str]:
    keep = ("HERMETIC_STORE", "HERMETIC_STATE", "HERMETIC_OFFLINE")
    return {"PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8",
            **{k: os.environ[k] for k in keep if k in os.environ}}


def bash_complete(source: str, words: list[str], tmp_path) -> list[str]:
    """COMPREPLY for the line `words` (the last one being completed), from `_hermetic` in a real bash."""
    path = tmp_path / "hermetic.bash"
    path.write_text(source)
    array = " ".join("'" + w.replace("'", "'\\''") + "'" for w in [HERMETIC, *words])
    ran = subprocess.run(["bash", "--norc", "--noprofile", "-c",
                          f'source {path}; COMP_WORDS=({array}); COMP_CWORD={len(words)}; _hermetic; '
                          'printf "%s\\n" "${COMPREPLY[@]}"'],
                         capture_output=True, text=True, env=env(), timeout=60, cwd=str(tmp_path))
    assert ran.returncode == 0 and not ran.stderr, ran.stderr
    return ran.stdout.split()


CASES = [
    (["r"], {"run", "rm", "rmi"}, set()),
    (["run", "--m"], {"--mem"}, set()),
    (["rmi", ""], {"host", "{image}"}, set()),
    (["run", "--mem", "64M", "-e", "A=1", ""], {"host", "{image}"}, {"{container}"}),
    (["run", "--net", ""], {"bridge", "{network}"}, {"{image}"}),
    (["run", "host", ""], set(), {"{image}", "host"}),  # the command: files, not images
    (["run", "host", "--m"], set(), {"--mem"}),  # a flag of the command, not of run
    (["stop", "-t", "5", ""], {"{container}"}, {"{image}"}),
    (["logs", "-f", ""], {"{container}"}, set()),
    (["rm", "{container}", ""], {"{container}"}, set()),
    (["network", ""], {"create", "ls", "rm"}, set()),
    (["network", "rm", ""], {"{network}"}, {"bridge"}),
    (["completion", ""], {"bash", "zsh", "fish"}, set()),
    (["--"], {"--help"}, set()),
]


def _fill(items: set[str], names: dict[str, str]) -> set[str]:
    return {item.format(**names) for item in items}


@pytest.mark.parametrize("words, wanted, unwanted", CASES, ids=[" ".join(c[0]) or "-" for c in CASES])
def test_bash_completes(names, tmp_path, words, wanted, unwanted) -> None:
    words = [w.format(**names) for w in words]
    got = set(bash_complete(script("bash"), words, tmp_path))
    assert _fill(wanted, names) <= got, got
    assert not (_fill(unwanted, names) & got), got


@pytest.mark.skipif(not shutil.which("zsh"), reason="zsh is not installed (scripts/install-deps.sh installs it)")
def test_zsh_completes_through_bashcompinit(names, tmp_path) -> None:
    """The zsh script under zsh itself: its `_hermetic` in sh emulation, as
    bashcompinit's compgen calls it."""
    path = tmp_path / "_hermetic"
    path.write_text(script("zsh"))
    results = {}
    for words in (["rmi", ""], ["stop", ""], ["run", "--net", ""]):
        array = " ".join("'" + w + "'" for w in [HERMETIC, *words])
        ran = subprocess.run(["zsh", "-f", "-c", f"source {path}; COMP_WORDS=({array}); COMP_CWORD={len(words)}; "
                              "emulate sh -c _hermetic; print -l -- $COMPREPLY"],
                             capture_output=True, text=True, env=env(), timeout=60, cwd=str(tmp_path))
        assert ran.returncode == 0, ran.stderr
        results[words[0]] = set(ran.stdout.split())
    assert names["image"] in results["rmi"] and "host" in results["rmi"]
    assert names["container"] in results["stop"]
    assert {"bridge", names["network"]} <= results["run"]


@pytest.mark.skipif(not shutil.which("fish"), reason="fish is not installed (scripts/install-deps.sh installs it)")
def test_fish_completes(names, tmp_path) -> None:
    """fish's own `complete -C LINE` with the script loaded."""
    path = tmp_path / "hermetic.fish"
    path.write_text(script("fish"))

    def complete(line: str) -> set[str]:
        ran = subprocess.run(["fish", "--no-config", "-c", f"source {path}; complete -C '{HERMETIC} {line}'"],
                             capture_output=True, text=True, env=env(), timeout=60, cwd=str(tmp_path))
        assert ran.returncode == 0, ran.stderr
        return {row.split("\t")[0] for row in ran.stdout.splitlines()}

    assert {"run", "rm", "rmi"} <= complete("r")
    assert {names["image"], "host"} <= complete("rmi ")
    assert names["container"] in complete("stop -t 5 ")
    assert {"bridge", names["network"]} <= complete("run --net ")
    assert names["network"] in complete("network rm ")
    assert "--mem" in complete("run --m")
    assert names["image"] not in complete("run host ")


def test_syntax_of_every_script() -> None:
    for shell, check in (("bash", ["bash", "-n"]), ("zsh", ["zsh", "-n"]), ("fish", ["fish", "-n"])):
        if not shutil.which(check[0]):
            continue
        ran = subprocess.run(check, input=script(shell), capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, f"{shell}: {ran.stderr}"


def test_complete_helper_is_fast_and_hidden(names) -> None:
    for what, wanted in (("images", names["image"]), ("containers", names["container"]), ("networks", names["network"])):
        started = time.monotonic()
        ran = run_cli("__complete", what)
        assert ran.returncode == 0 and wanted in ran.stdout.split(), ran.stderr
        assert time.monotonic() - started < 2.0  # a shell waits for it on every Tab
    assert "__complete" not in run_cli("--help").stdout


@pytest.mark.parametrize("args, words", [
    (["completion", "tcsh"], "invalid choice: 'tcsh'"),
    (["completion"], "required: SHELL"),
])
def test_bad_shell_is_one_line(args: list[str], words: str) -> None:
    ran = run_cli(*args)
    assert ran.returncode == 125 and ran.stderr.count("\n") == 1 and words in ran.stderr, ran.stderr
