"""Every command block of README.md and docs/*.md runs as written.

A block is a fenced ```sh, ```bash or ```console block (in a console block,
the lines after `$ ` are the commands and the rest is output).  Each block
runs as a bash script, the blocks of one page in order, in a private HOME,
store and state folder of that page.  A command must succeed, unless the docs
give its exit status in a comment on its line or the comment lines right
after it (`# hermetic: killed: ... (exit 137)`); a failure names the page and
the line.

What the test fills in, and nothing else:
- the registry: `127.0.0.1:5000` and `localhost:5000` become a real
  registry (Debian's docker-registry, `hermetic_testsupport/registry.py`) on
  a free port, holding `some/busybox:1` (the `busybox:` image);
- `/tmp/` becomes a folder of the page's own, removed afterwards;
- `hermetic` is the checkout's (`.venv/bin` first on PATH).

Markers, in an HTML comment on the line right before a block:
- `<!-- docs-check: skip (REASON) -->` leaves the block out; the reason is
  said (keep these few);
- `<!-- docs-check: file NAME -->` before any block (a ```python one, say)
  writes it as NAME in the page's folder, for the commands that use it.

A block that names `scripts/`, `bench/`, `tests/` or `.venv/` runs in the
repository's root; any other in the page's folder.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import pytest

from conftest import ROOT, run_cli

PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
FENCE = re.compile(r"^```(\w*)\s*$")
COMMAND_KINDS = ("sh", "bash", "console")
MARKER = re.compile(r"^<!--\s*docs-check:\s*(skip|file)\s*(.*?)\s*-->\s*$")
EXIT = re.compile(r"\(exit (\d+)")
IN_ROOT = re.compile(r"(^|[\s;&|(])(scripts|bench|tests|\.venv)/")
BLOCK_TIMEOUT = 180


@dataclass
class Block:
    page: str
    line: int  # of the fence, 1-based
    kind: str
    text: list[str]  # the lines inside the fence
    skip: str | None = None
    file: str | None = None
    commands: list[tuple[int, str, int]] = field(default_factory=list)  # (line, command, expected exit)


def parse_page(page: str) -> list[Block]:
    with open(os.path.join(ROOT, page)) as f:
        lines = f.read().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start, end = i, i + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        block = Block(page, start + 1, fence.group(1), lines[start + 1:end])
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = MARKER.match(lines[before]) if before >= 0 else None
        if marker and marker.group(1) == "skip":
            reason = marker.group(2).strip("() ")
            assert reason, f"{page}:{before + 1}: a docs-check skip needs a reason: <!-- docs-check: skip (why) -->"
            block.skip = reason
        elif marker and marker.group(1) == "file":
            block.file = marker.group(2)
        if block.kind in COMMAND_KINDS or block.file:
            block.commands = _commands(block)
            blocks.append(block)
        i = end + 1
    return blocks


def _commands(block: Block) -> list[tuple[int, str, int]]:
    """The block's commands with their doc line and the exit status the docs give (default 0)."""
    found: list[tuple[int, str, int]] = []
    lines = block.text
    for n, raw in enumerate(lines):
        line_no = block.line + 1 + n
        if block.kind == "console":
            if not raw.startswith("$ "):
                continue
            raw = raw[2:]
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        expected = 0
        same = EXIT.search(raw.partition(" #")[2]) if " #" in raw else None
        if same:
            expected = int(same.group(1))
        else:
            for after in lines[n + 1:]:
                if not after.lstrip().startswith("#"):
                    break
                match = EXIT.search(after)
                if match:
                    expected = int(match.group(1))
                    break
        if found and found[-1][1].endswith("\\"):  # a continued line belongs to the command before
            previous = found.pop()
            found.append((previous[0], previous[1] + "\n" + raw, max(previous[2], expected)))
            continue
        found.append((line_no, raw, expected))
    return found


def script(block: Block, tmp: str, registry: str) -> str:
    """The block as a bash script: each command announces its line; a failure says it and stops."""
    out = ["set -o pipefail", "trap 'trap - ERR; kill $(jobs -p) 2>/dev/null || true' EXIT",  # what a `... &` left running
           "trap 'echo \"docs-check: $__page:$__line: exit $? (the docs say 0)\" >&2; exit 1' ERR",
           f"__page={block.page}"]
    for line_no, command, expected in block.commands:
        command = fill(command, tmp, registry)
        out.append(f"__line={line_no}")
        if expected == 0:
            out.append(command)
        else:
            out += ["trap - ERR", command, "__s=$?",
                    f"trap 'echo \"docs-check: $__page:$__line: exit $? (the docs say 0)\" >&2; exit 1' ERR",
                    f'[ "$__s" -eq {expected} ] || {{ echo "docs-check: $__page:$__line: exit $__s, the docs say {expected}" >&2; exit 1; }}']
    return "\n".join(out) + "\n"


def fill(text: str, tmp: str, registry: str) -> str:
    text = text.replace("127.0.0.1:5000", registry).replace("localhost:5000", registry.replace("127.0.0.1", "localhost"))
    return re.sub(r"(?<![\w.])/tmp/", tmp + "/", text)


# -- the registry and the run ---------------------------------------------------


@pytest.fixture(scope="module")
def docs_registry(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The docs' registry, holding some/busybox:1 (the images page pulls it)."""
    from hermetic_testsupport.registry import RegistryServer

    server = RegistryServer(str(tmp_path_factory.mktemp("docs-registry"))).start()
    seed = f"docs-seed-{os.getpid()}:1"  # xdist workers share the session's store
    try:
        assert run_cli("import", "busybox:", seed).returncode == 0
        pushed = run_cli("push", seed, f"{server.host}/some/busybox:1")
        assert pushed.returncode == 0, pushed.stderr
        run_cli("rmi", seed)
        yield server.host
    finally:
        server.stop()


def page_env(base: str) -> dict[str, str]:
    env = {
        "PATH": os.path.join(ROOT, ".venv", "bin") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": os.path.join(base, "home"), "LANG": "C.UTF-8", "TERM": "dumb",
        "HERMETIC_STORE": os.path.join(base, "store"), "HERMETIC_STATE": os.path.join(base, "state"),
        # Registries on loopback only; an unknown `name:tag` is not looked up on the internet.
        "HERMETIC_OFFLINE": "1",
    }
    os.makedirs(env["HOME"], exist_ok=True)
    return env


def run_block(block: Block, base: str, registry: str) -> str | None:
    """Run one block; None if it passed, else what went wrong (page:line first)."""
    work = os.path.join(base, "work")
    tmp = os.path.join(base, "tmp")
    os.makedirs(work, exist_ok=True)
    os.makedirs(tmp, exist_ok=True)
    if block.file:
        with open(os.path.join(work, block.file), "w") as f:
            f.write("\n".join(block.text) + "\n")
        return None
    cwd = ROOT if IN_ROOT.search("\n".join(c for _, c, _ in block.commands)) else work
    proc = subprocess.Popen(["bash", "-c", script(block, tmp, registry)], cwd=cwd, env=page_env(base),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        output, _ = proc.communicate()
        return f"{block.page}:{block.line}: the block did not end within {BLOCK_TIMEOUT} s\n{output[-3000:]}"
    finally:
        _end_stragglers(proc.pid)
    if proc.returncode != 0:
        where = re.findall(r"docs-check: (\S+:\d+: .*)", output)
        head = where[-1] if where else f"{block.page}:{block.line}: exit {proc.returncode}"
        return f"{head}\n{output[-3000:]}"
    return None


def _end_stragglers(pgid: int) -> None:
    """What a block left running in its process group (a `... &` it started)."""
    try:
        os.killpg(pgid, 15)
    except ProcessLookupError:
        return


def _clean(base: str) -> None:
    """The page's detached containers, networks and store, then its folder."""
    env = page_env(base)
    hermetic = os.path.join(ROOT, ".venv", "bin", "hermetic")
    ids = subprocess.run([hermetic, "ps", "-a", "-q"], env=env, capture_output=True, text=True, timeout=60).stdout.split()
    if ids:
        subprocess.run([hermetic, "rm", "-f", *ids], env=env, capture_output=True, timeout=60)
    listing = subprocess.run([hermetic, "network", "ls"], env=env, capture_output=True, text=True, timeout=60).stdout
    for row in listing.splitlines()[1:]:
        name, kind = row.split()[:2]
        if kind == "named":
            subprocess.run([hermetic, "network", "rm", name], env=env, capture_output=True, timeout=60)
    subprocess.run([hermetic, "gc", "-q"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("page", PAGES)
def test_command_blocks_run_as_written(page: str, docs_registry: str) -> None:
    blocks = parse_page(page)
    base = tempfile.mkdtemp(prefix="hermetic-docs-", dir="/var/tmp")
    os.chmod(base, 0o755)
    failures, skipped, ran = [], [], []
    try:
        for block in blocks:
            if block.skip:
                skipped.append(f"{page}:{block.line}: skipped ({block.skip})")
                continue
            started = time.monotonic()
            failure = run_block(block, base, docs_registry)
            if failure:
                failures.append(failure)
            elif block.commands and not block.file:
                ran.append(f"{page}:{block.line}: ok ({len(block.commands)} commands, {time.monotonic() - started:.1f} s)")
    finally:
        _clean(base)
    for line in ran + skipped:  # shown with -s or -rA
        print(line)
    assert not failures, "\n\n".join(failures)


def test_the_checker_reads_the_markers_and_exit_statuses(tmp_path) -> None:
    """The parser itself: skip reasons, expected exits, console prompts, a failure's line."""
    page = tmp_path / "page.md"
    page.write_text("\n".join([
        "<!-- docs-check: skip (needs a terminal) -->", "```sh", "false", "```", "",
        "```console", "$ true   # fine", "output line", "$ sh -c 'exit 3'", "# (exit 3)", "```", "",
        "```sh", "true", "false", "```",
    ]) + "\n")
    rel = os.path.relpath(page, ROOT)
    blocks = parse_page(rel)
    assert [b.skip for b in blocks] == ["needs a terminal", None, None]
    assert blocks[1].commands == [(7, "true   # fine", 0), (9, "sh -c 'exit 3'", 3)]
    assert run_block(blocks[1], str(tmp_path), "127.0.0.1:1") is None
    failure = run_block(blocks[2], str(tmp_path), "127.0.0.1:1")
    assert failure is not None and failure.startswith(f"{rel}:15: exit 1")


# -- pages that must agree with the command ---------------------------------------


def _doctor_dirs(user: str, env: dict[str, str]) -> dict[str, str]:
    """`store dir` and `state dir` as `hermetic doctor` reports them to `user`."""
    import pwd

    entry = pwd.getpwnam(user)
    ran = subprocess.run(["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups",
                          "/usr/bin/python3", "-m", "pytest_hermetic", "doctor"],
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ROOT, "LANG": "C.UTF-8", **env},
                         capture_output=True, text=True, timeout=120, cwd="/")
    found = dict(re.findall(r"^\s+\w+\s+(store dir|state dir)\s+(\S+)", ran.stdout, re.M))
    assert set(found) == {"store dir", "state dir"}, ran.stdout + ran.stderr
    return found


def test_rootless_page_says_the_folders_doctor_reports(test_user: str) -> None:
    """docs/rootless.md's sentence on the store and state folders, against
    what `hermetic doctor` prints to the unprivileged user."""
    import pwd

    entry = pwd.getpwnam(test_user)
    with open(os.path.join(ROOT, "docs", "rootless.md")) as f:
        page = " ".join(f.read().split())
    for phrase in ("`$XDG_DATA_HOME/hermetic`", "`~/.local/share/hermetic`", "`$XDG_RUNTIME_DIR/hermetic`",
                   "`/dev/shm/hermetic-<uid>`"):
        assert phrase in page, f"docs/rootless.md no longer says {phrase}; make it match `hermetic doctor`"
    # In the session's folder (open to the user), not tmp_path (root's, 0700).
    home = os.path.join(os.path.dirname(os.environ["HERMETIC_STATE"]), f"docs-home-{entry.pw_uid}")
    os.makedirs(home, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    plain = _doctor_dirs(test_user, {"HOME": str(home)})
    assert plain["store dir"] == f"{home}/.local/share/hermetic"  # `~/.local/share/hermetic`
    assert plain["state dir"] == f"/dev/shm/hermetic-{entry.pw_uid}"  # `/dev/shm/hermetic-<uid>`
    # A login session's runtime folder: a tmpfs of the user's own.
    runtime = f"/dev/shm/hermetic-docs-runtime-{os.getpid()}"
    os.mkdir(runtime, 0o700)
    try:
        os.chown(runtime, entry.pw_uid, entry.pw_gid)
        xdg = _doctor_dirs(test_user, {"HOME": str(home), "XDG_RUNTIME_DIR": runtime, "XDG_DATA_HOME": f"{home}/data"})
        assert xdg["state dir"] == f"{runtime}/hermetic"  # `$XDG_RUNTIME_DIR/hermetic`
        assert xdg["store dir"] == f"{home}/data/hermetic"  # `$XDG_DATA_HOME/hermetic`
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def _compared_section() -> str:
    with open(os.path.join(ROOT, "docs", "cli.md")) as f:
        text = f.read()
    assert "## Against Docker and Podman" in text, "docs/cli.md lost its section '## Against Docker and Podman'"
    return text.split("## Against Docker and Podman", 1)[1]


def test_cli_page_compares_every_verb_and_flag() -> None:
    """docs/cli.md's tables against docker/podman have a row naming each verb
    and each flag the parser has (a new one needs its row: same, different,
    absent, and why)."""
    from pytest_hermetic.cli import parser
    from pytest_hermetic.cli.completion import shapes

    section = _compared_section()
    rows = [line for line in section.splitlines() if line.startswith("|")]
    cells = " ".join(rows)
    verbs, top_flags = shapes(parser())
    missing = []
    for key, shape in verbs.items():
        if f"`{key}" not in cells and f"`{key.split()[-1]}" not in cells:
            missing.append(f"verb {key}")
        for spellings in shape.flag_groups:
            if "--help" in spellings:
                continue
            if not any(re.search(rf"`{re.escape(flag)}(?![\w-])", cells) for flag in spellings):
                missing.append(f"{key} {'/'.join(spellings)}")
    assert not missing, "docs/cli.md's 'Against Docker and Podman' tables lack rows for: " + ", ".join(missing)
