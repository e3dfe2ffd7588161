"""`hermetic run`'s quick parser (cli/run.py `quick_arguments`) against argparse.

Whatever the quick parser reads, argparse must read the same way (every
attribute of the namespace); whatever it declines (None), argparse reads,
errors included.  Run on every Python the suite covers (3.10 to 3.13), whose
argparses differ in corners (`--`, `-x=value`), which is why it declines those."""

from __future__ import annotations

import itertools
import random

import pytest

from pytest_hermetic.cli import parser
from pytest_hermetic.cli.run import quick_arguments


def argparse_reads(argv: list[str]) -> dict | None:
    """vars() of argparse's namespace for `hermetic run ARGV`, or None when it refuses it."""
    try:
        return vars(parser("run").parse_args(["run", *argv]))
    except SystemExit:
        return None


def same_as_argparse(argv: list[str]) -> bool:
    """Whether the quick parser read `argv` (True) or declined it (False); fails if it read it differently."""
    quick = quick_arguments(list(argv))
    if quick is None:
        return False
    expected = argparse_reads(argv)
    assert expected is not None, f"argparse refuses {argv} but the quick parser read it"
    assert vars(quick) == expected, argv
    return True


# The shapes scripts and users write: each must take the quick path.
QUICK = [
    ["host", "true"],
    ["host", "sh", "-c", "echo hi; exit 3"],
    ["host", "ls", "-l", "--color=never", "/"],
    ["-m", "64M", "--cpus", "0.5", "--pids-limit", "20", "host", "true"],
    ["--memory=64M", "--mem", "1g", "host", "true"],
    ["-e", "A=1", "-e", "B", "--env=C=3", "-v", "/tmp:/x:ro", "--volume", "/srv:/srv", "host", "env"],
    ["--network=bridge", "--net=mynet", "host", "true"],
    ["--name", "web", "-d", "--rm", "-i", "-t", "busybox:latest", "sh"],
    ["--init", "--read-only", "--tmpfs", "/run:size=1m", "--privileged", "--userns", "host", "true"],
    ["--cap-add", "NET_ADMIN", "--cap-drop=ALL", "--security-opt", "seccomp=unconfined", "host", "true"],
    ["-w", "/tmp", "-u", "1000:1000", "--hostname", "h", "--entrypoint", "", "host", "id"],
    ["-p", "8080:80", "--publish=127.0.0.1::53/udp", "--timeout", "5", "--shm-size", "1g", "host", "true"],
    ["--commit", "mine:1", "--platform", "linux/amd64", "--stop-signal", "SIGINT", "--stop-timeout", "3",
     "--env-file", "/dev/null", "host", "true"],
    ["host", "-m", "64M", "--rm"],  # after the image: all the command's
    ["--timeout", "", "host", "true"],  # an empty value is a value
]

# What it leaves to argparse: abbreviations, bundles, `--`, missing or dash values, help, unknown flags.
DECLINED = [
    [], ["-m"], ["-m", "64M"], ["--rm"], ["--mem", "-5", "host", "true"], ["--memo", "64M", "host", "true"],
    ["-it", "host", "sh"], ["-m64M", "host", "true"], ["-m=64M", "host", "true"], ["--", "host", "true"],
    ["host", "--", "true"], ["-h"], ["--help"], ["--no-such-flag", "host"], ["--network", "host", "true"],
    ["--network"], ["--rm=yes", "host", "true"], ["--mem=", "host", "true"], ["", "true"], ["-", "true"],
    ["--version"], ["-e", "-x", "host", "true"],
]


@pytest.mark.parametrize("argv", QUICK, ids=" ".join)
def test_the_plain_shapes_take_the_quick_path_and_read_as_argparse_reads_them(argv):
    assert same_as_argparse(argv), f"{argv} should not need argparse"


@pytest.mark.parametrize("argv", DECLINED, ids=lambda argv: " ".join(argv) or "(nothing)")
def test_the_rest_is_left_to_argparse(argv):
    assert quick_arguments(list(argv)) is None


def test_random_command_lines_read_alike():
    """Words drawn from flags, values and odd spellings, thousands of lines:
    every line read quickly reads the same through argparse."""
    words = ["-m", "--mem", "--memory=1g", "-e", "A=1", "--env", "-v", "/a:/b", "--network", "--network=n",
             "--net", "-d", "--detach", "--rm", "-i", "-t", "-it", "--commit", "x:1", "--", "-", "", "-5",
             "--init", "--userns", "--privileged", "--name", "n", "--timeout", "3", "--cap-add", "ALL",
             "-h", "--mem=", "-p", "80", "--tmpfs", "/t", "host", "true", "sh", "-c", "busybox:1"]
    rng = random.Random(16)
    quick = 0
    for _ in range(3000):
        argv = [rng.choice(words) for _ in range(rng.randint(0, 7))]
        quick += same_as_argparse(argv)
    assert quick > 300  # the comparison covered many lines the quick path took


def test_every_flag_of_run_reads_alike():
    """Each of run's flags alone, with a value (next word and `=`), before an image."""
    run = parser("run")._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    flags = [flag for action in run._actions for flag in action.option_strings if flag not in ("-h", "--help")]
    for flag, value in itertools.product(flags, ["x", "64M"]):
        for argv in ([flag, "host", "true"], [flag, value, "host", "true"], [f"{flag}={value}", "host", "true"]):
            same_as_argparse(argv)
    # and each flag has a quick spelling (a bare --network: argparse's, which may take the image as its value)
    quick = [flag for flag in flags if same_as_argparse([flag, "v", "host"]) or same_as_argparse([flag, "host"])
             or same_as_argparse([f"{flag}=v", "host"])]
    assert quick == flags
