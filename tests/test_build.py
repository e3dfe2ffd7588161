"""`hermetic build`: real Containerfiles built on real images (busybox, `host` with gcc), run,
read back by skopeo and umoci, and compared file by file with Debian's buildah."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess

import pytest
from conftest import run_cli

from hermetic_testsupport.registry import run, umoci_unpack

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds run containers as root here (rootless: see docs/build.md)")

TWO_STAGES = """\
# syntax=docker/dockerfile:1
ARG BUILDER=host
FROM ${BUILDER} AS build
WORKDIR /src
COPY hello.c .
RUN mkdir -p /out && gcc -O2 -static -o /out/hello hello.c

FROM busybox:test
ARG SALUTE=hi
ENV APP_GREETING=$SALUTE \\
    PATH=/app:/usr/bin:/bin
WORKDIR /app
COPY --from=build /out/hello /app/hello
COPY data/ /app/data/
USER app
ENTRYPOINT ["/app/hello"]
CMD ["world"]
"""

HELLO_C = r"""#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char cwd[256];
    printf("%s %s uid=%d cwd=%s\n", getenv("APP_GREETING"), argc > 1 ? argv[1] : "?", (int)getuid(), getcwd(cwd, sizeof cwd));
    return 0;
}
"""


def make_context(path, containerfile: str = TWO_STAGES) -> str:
    os.makedirs(path / "data" / "sub", exist_ok=True)
    (path / "Containerfile").write_text(containerfile)
    (path / "hello.c").write_text(HELLO_C)
    (path / "data" / "one.txt").write_text("one\n")
    (path / "data" / "sub" / "run.sh").write_text("#!/bin/sh\necho run\n")
    os.chmod(path / "data" / "sub" / "run.sh", 0o750)
    (path / "data" / "secret.key").write_text("do not ship\n")
    (path / ".containerignore").write_text("# keys stay out\ndata/*.key\n")
    return str(path)


def build(*args: str):
    return run_cli("build", *args, timeout=300)


def test_two_stage_build_runs_as_docker_would_make_it(busybox_image, tmp_path):
    context = make_context(tmp_path / "ctx")
    built = build("-t", "hello:1", "--build-arg", "SALUTE=hey", context)
    assert built.returncode == 0, built.stderr
    assert "STEP 1/" in built.stderr and "note: `# syntax=docker/dockerfile:1` ignored" in built.stderr
    image_id = built.stdout.strip()
    assert image_id.startswith("sha256:")
    ran = run_cli("run", "hello:1")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "hey world uid=1000 cwd=/app\n"  # ENTRYPOINT + CMD, USER app, WORKDIR, ENV from ARG
    listing = run_cli("run", "--user", "0", "--entrypoint", "", "hello:1", "/bin/sh", "-c",
                      "ls -n /app/data /app/data/sub; stat -c '%a %u %g %n' /app/hello /app/data/sub/run.sh; "
                      "test -e /src || echo no-build-stage-files")
    assert listing.returncode == 0, listing.stderr
    assert "secret.key" not in listing.stdout  # .containerignore
    assert "755 0 0 /app/hello" in listing.stdout
    assert "750 0 0 /app/data/sub/run.sh" in listing.stdout  # mode kept, owner 0:0 as Docker's COPY
    assert "no-build-stage-files" in listing.stdout  # only the result crossed over


def test_built_image_is_read_by_skopeo_and_umoci(busybox_image, tmp_path):
    context = make_context(tmp_path / "ctx")
    assert build("-t", "readable:1", "-t", "readable:2", context).returncode == 0
    assert run_cli("images").stdout.count("readable") == 2
    layout = tmp_path / "layout"
    saved = run_cli("save", "readable:1", f"oci:{layout}:r")
    assert saved.returncode == 0, saved.stderr
    config = json.loads(run("skopeo", "inspect", "--config", f"oci:{layout}:r"))
    assert config["config"]["Entrypoint"] == ["/app/hello"] and config["config"]["Cmd"] == ["world"]
    assert config["config"]["User"] == "app" and config["config"]["WorkingDir"] == "/app"
    assert "APP_GREETING=hi" in config["config"]["Env"]
    assert config["created"] == "1970-01-01T00:00:00Z"
    rootfs = umoci_unpack(f"{layout}:r", str(tmp_path / "bundle"))
    assert open(os.path.join(rootfs, "app/data/one.txt")).read() == "one\n"
    assert not os.path.exists(os.path.join(rootfs, "app/data/secret.key"))


def test_errors_are_one_line_and_tag_nothing(busybox_image, tmp_path):
    context = make_context(tmp_path / "ctx")
    cases = {
        "FROM busybox:test\nFROBNICATE now\n": "Containerfile:2: unknown instruction FROBNICATE",
        "FROM busybox:test\nCOPY missing.txt /x\n": "Containerfile:2: COPY: missing.txt: no such file or folder",
        "FROM busybox:test\nRUN echo first; echo the-last-words; exit 3\n":
            "Containerfile:2: RUN (step 2/2) failed: exited with status 3; its last line of output: 'the-last-words'",
        "FROM no-such-image:1\n": "Containerfile:1: FROM no-such-image:1: image 'no-such-image:1' is not in the local store",
        "FROM busybox:test\nCOPY ../outside /x\n": "Containerfile:2: COPY: ../outside: outside the build context",
        "FROM busybox:test\nADD https://example.com/x /x\n": "ADD of a URL is not supported",
        "FROM busybox:test\nONBUILD RUN true\n": "ONBUILD is not supported",
        "FROM busybox:test\nCOPY --chown=ghost hello.c /x\n": "--chown=ghost: no user 'ghost' in the image's /etc/passwd",
        "FROM busybox:test\nRUN <<EOF\necho hi\nEOF\n": "heredocs (<<EOF) are not supported",
    }
    for text, expected in cases.items():
        (tmp_path / "ctx" / "Containerfile").write_text(text)
        ran = build("-q", "-t", "never:1", context)
        errors = [line for line in ran.stderr.splitlines() if line.startswith("hermetic: error:")]
        assert ran.returncode == 125, (text, ran.stderr)
        assert len(errors) == 1 and expected in errors[0], (text, ran.stderr)
        assert "Traceback" not in ran.stderr
    assert "never" not in run_cli("images").stdout


def test_copy_never_reads_outside_the_context(busybox_image, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    outside = tmp_path / "outside-secret"
    outside.write_text("host secret\n")
    os.symlink(str(outside), context / "abs-link")
    os.symlink("../outside-secret", context / "rel-link")
    (context / "dir").mkdir()
    os.symlink("/etc", context / "dir" / "etc-link")  # inside a copied folder: copied as a link
    for link in ("abs-link", "rel-link"):
        (context / "Containerfile").write_text(f"FROM busybox:test\nCOPY {link} /got\n")
        ran = build("-q", "-t", "escape:1", str(context))
        assert ran.returncode == 125 and "not in the build context" in ran.stderr, ran.stderr
    # In the image, a destination symlink resolves inside the image, never on the host.
    (context / "Containerfile").write_text("FROM busybox:test\nRUN ln -s /host-etc /target\nCOPY dir/ /target/\n"
                                           "RUN readlink /target/etc-link && ls -d /host-etc\n")
    ran = build("-t", "inside:1", str(context))
    assert ran.returncode == 0, ran.stderr
    assert "/etc\n/host-etc" in ran.stderr
    assert not os.path.exists("/host-etc")


def test_run_has_no_network_unless_asked(busybox_image, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Containerfile").write_text("FROM busybox:test\nRUN ls /sys/class/net | tr '\\n' ' ' && echo\n")
    ran = build("--no-cache", str(context))
    assert ran.returncode == 0, ran.stderr
    assert "\nlo \n" in ran.stderr
    ran = build("--no-cache", "--net", str(context))
    assert ran.returncode == 0, ran.stderr
    assert "eth0 lo \n" in ran.stderr


def test_add_unpacks_a_local_tar_and_copy_options(busybox_image, tmp_path):
    context = tmp_path / "ctx"
    (context / "tree" / "inner").mkdir(parents=True)
    (context / "tree" / "inner" / "f").write_text("in the tar\n")
    subprocess.run(["tar", "-C", str(context / "tree"), "-czf", str(context / "t.tgz"), "inner"], check=True)
    (context / "plain.txt").write_text("plain\n")
    import gzip

    (context / "note.gz").write_bytes(gzip.compress(b"not a tar\n"))  # compressed, but no tar: copied as it is
    (context / "Containerfile").write_text(
        "FROM busybox:test\nARG DEST=/opt\nADD t.tgz note.gz ${DEST}/\nCOPY --chown=app:app --chmod=640 plain.txt *.tgz /owned/\n"
        "LABEL a=b\nEXPOSE 8080\nSTOPSIGNAL SIGINT\nVOLUME /data\nHEALTHCHECK --interval=5s CMD true\n"
        "ARG TARGETARCH\nARG FROM_CLI\nRUN [\"/bin/sh\", \"-c\", \"echo exec $TARGETARCH $FROM_CLI > /forms\"]\n"
        "SHELL [\"/bin/sh\", \"-ec\"]\nRUN echo shell >> /forms\n")
    ran = build("-t", "added:1", "--build-arg", "FROM_CLI=given", str(context))
    assert ran.returncode == 0, ran.stderr
    import platform

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    assert run_cli("run", "added:1", "cat", "/forms").stdout == f"exec {arch} given\nshell\n"
    out = run_cli("run", "added:1", "/bin/sh", "-c", "cat /opt/inner/f; zcat /opt/note.gz; stat -c '%a %U:%G %n' /owned/plain.txt /owned/t.tgz")
    assert out.stdout == "in the tar\nnot a tar\n640 app:app /owned/plain.txt\n640 app:app /owned/t.tgz\n", out.stderr
    saved = run_cli("save", "added:1", f"oci:{tmp_path}/layout:a")
    assert saved.returncode == 0, saved.stderr
    config = json.loads(run("skopeo", "inspect", "--config", f"oci:{tmp_path}/layout:a"))["config"]
    from pytest_hermetic.images.store import Store

    ours = Store().local("added:1").config
    config["Healthcheck"] = ours["Healthcheck"]  # (not in OCI's schema: skopeo drops it)
    assert ours["Shell"] == ["/bin/sh", "-ec"] and not any("FROM_CLI" in e for e in ours["Env"])  # ARGs stay out
    assert config["Labels"] == {"a": "b"} and config["ExposedPorts"] == {"8080/tcp": {}}
    assert config["StopSignal"] == "SIGINT" and config["Volumes"] == {"/data": {}}
    assert config["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000}


# -- against buildah --------------------------------------------------------------

BUILDAH_FILE = """\
ARG BASE=busybox:test
FROM ${BASE} AS build
RUN mkdir -p /out/lib && printf '#!/bin/sh\\necho "$APP_GREETING $*"\\n' > /out/hello && chmod 755 /out/hello \\
    && ln -s ../hello /out/lib/link && echo x > /out/lib/data && chmod 600 /out/lib/data
FROM ${BASE}
ARG SALUTE=hi
ENV APP_GREETING=$SALUTE
WORKDIR /app
COPY --from=build /out/ /app/
COPY data/ /app/data/
COPY --chown=app:app --chmod=640 data/one.txt /app/owned.txt
USER app
ENTRYPOINT ["/app/hello"]
CMD ["world"]
"""


def _buildah_skip_reason() -> str | None:
    if shutil.which("buildah") is None:
        return "buildah is not installed (scripts/install-deps.sh installs Debian's)"
    return None


def _tree(root: str) -> dict[str, tuple]:
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                what = ("link", os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                what = ("file", open(path, "rb").read())
            else:
                what = ("dir" if stat.S_ISDIR(st.st_mode) else oct(stat.S_IFMT(st.st_mode)), None)
            found[rel] = (*what, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return found


@pytest.mark.skipif(_buildah_skip_reason() is not None, reason=_buildah_skip_reason() or "")
def test_same_image_as_buildah_bud_file_by_file(busybox_image, tmp_path):
    context = make_context(tmp_path / "ctx", BUILDAH_FILE)
    layout = tmp_path / "layout"
    assert run_cli("save", "busybox:test", f"oci:{layout}:busybox").returncode == 0
    ours = build("-t", "vs-buildah:1", context)
    assert ours.returncode == 0, ours.stderr
    assert run_cli("save", "vs-buildah:1", f"oci:{layout}:ours").returncode == 0
    storage = ["--root", str(tmp_path / "buildah-root"), "--runroot", str(tmp_path / "buildah-run"),
               "--storage-driver", "vfs"]
    try:
        run("buildah", *storage, "bud", "--isolation", "chroot", "--build-arg", f"BASE=oci:{layout}:busybox",
            "-t", "theirs", context)
        run("buildah", *storage, "push", "theirs", f"oci:{layout}:theirs")
    finally:
        subprocess.run(["buildah", *storage, "rmi", "--all", "--force"], capture_output=True)
    ours_tree = _tree(umoci_unpack(f"{layout}:ours", str(tmp_path / "b-ours")))
    theirs_tree = _tree(umoci_unpack(f"{layout}:theirs", str(tmp_path / "b-theirs")))
    different = {k: (ours_tree.get(k), theirs_tree.get(k)) for k in set(ours_tree) | set(theirs_tree)
                 if ours_tree.get(k) != theirs_tree.get(k)}
    assert not different
    ours_config = json.loads(run("skopeo", "inspect", "--config", f"oci:{layout}:ours"))["config"]
    theirs_config = json.loads(run("skopeo", "inspect", "--config", f"oci:{layout}:theirs"))["config"]
    for field in ("Env", "Entrypoint", "Cmd", "WorkingDir", "User"):
        assert ours_config.get(field) == theirs_config.get(field), field


def test_the_worked_example_of_docs_build_md(busybox_image):
    from conftest import ROOT

    example = os.path.join(ROOT, "docs", "examples", "build")
    page = open(os.path.join(ROOT, "docs", "build.md")).read()
    for name in ("Containerfile", "hello.c", ".containerignore"):  # the page shows the example's files as they are
        shown = page.split(f"<!-- docs-check: file {name} -->\n", 1)[1].split("\n", 1)[1].split("```", 1)[0]
        assert shown == open(os.path.join(example, name)).read(), name
    first = build("-t", "hello-docs:1", example)
    assert first.returncode == 0, first.stderr
    assert run_cli("run", "hello-docs:1").stdout == "hello, world\n"
    again = build("-t", "hello-docs:1", example)
    assert again.stdout == first.stdout
    assert [line for line in again.stderr.splitlines() if line.startswith("-->")] == ["--> cached"] * 4
    other = build("-t", "hello-docs:1", "--build-arg", "SALUTE=hi", example)
    assert other.returncode == 0, other.stderr
    assert [line for line in other.stderr.splitlines() if line.startswith("-->")] == ["--> cached"] * 4  # only ENV changed
    assert run_cli("run", "hello-docs:1").stdout == "hi, world\n"
    listing = run_cli("run", "--entrypoint", "", "hello-docs:1", "/bin/ls", "-R", "/app/data").stdout
    assert "readme.txt" in listing and "tool.sh" in listing and "local.key" not in listing


def test_a_rootless_build_writes_the_containers_ids_not_the_hosts(test_user, busybox_rootfs, tmp_path):
    import pwd
    import tarfile

    entry = pwd.getpwnam(test_user)
    home = os.path.join(os.path.dirname(os.environ["HERMETIC_STATE"]), f"home-{entry.pw_uid}")
    context = os.path.join(home, "build-context")
    os.makedirs(os.path.join(context, "data"), exist_ok=True)
    with open(os.path.join(context, "data", "f.txt"), "w") as f:
        f.write("rootless\n")
    with open(os.path.join(context, "Containerfile"), "w") as f:
        f.write("FROM rl-build-busybox:1\nCOPY data/ /plain/\nCOPY --chown=app:app data/ /owned/\n"
                "RUN echo made > /made\n")
    os.chown(home, entry.pw_uid, entry.pw_gid)
    for folder, dirs, files in os.walk(context):  # only ours: other tests leave links in that home
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.chown(name, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    assert run_cli("import", f"dir:{busybox_rootfs}", "rl-build-busybox:1", user=test_user).returncode == 0
    built = run_cli("build", "-t", "rl-built:1", context, user=test_user, timeout=300)
    assert built.returncode == 0, built.stderr
    layout = os.path.join(home, "layout")
    assert run_cli("save", "rl-built:1", f"oci:{layout}:x", user=test_user).returncode == 0
    owners = {}
    index = json.load(open(os.path.join(layout, "index.json")))
    manifest = json.load(open(os.path.join(layout, "blobs", "sha256", index["manifests"][0]["digest"][7:])))
    for layer in manifest["layers"][1:]:  # the build's layers
        with tarfile.open(os.path.join(layout, "blobs", "sha256", layer["digest"][7:])) as tar:
            owners.update({m.name: (m.uid, m.gid) for m in tar.getmembers() if not m.isdir()})
    assert owners == {"plain/f.txt": (0, 0), "owned/f.txt": (1000, 1000), "made": (0, 0)}, owners
    run_cli("rmi", "rl-built:1", user=test_user)
    run_cli("rmi", "rl-build-busybox:1", user=test_user)
    assert run_cli("gc", "-q", "--build-cache", user=test_user).returncode == 0


def test_from_a_registry_image_then_push_what_was_built(registry, busybox_remote, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Containerfile").write_text(f"FROM {busybox_remote}\nRUN echo built > /built.txt\nCMD [\"cat\", \"/built.txt\"]\n")
    target = f"{registry.host}/built/app:1"
    ran = build("-t", target, str(context))  # the base is pulled on first use, as `run` does
    assert ran.returncode == 0, ran.stderr
    pushed = run_cli("push", target)
    assert pushed.returncode == 0, pushed.stderr
    inspected = json.loads(run("skopeo", "inspect", "--tls-verify=false", f"docker://{target}"))
    assert len(inspected["Layers"]) == 2 and inspected["Created"] == "1970-01-01T00:00:00Z"
    config = json.loads(run("skopeo", "inspect", "--tls-verify=false", "--config", f"docker://{target}"))
    assert config["config"]["Cmd"] == ["cat", "/built.txt"]
    assert run_cli("run", target).stdout == "built\n"


def test_target_and_stages_the_target_does_not_need(busybox_image, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Containerfile").write_text(
        "FROM busybox:test AS base\nRUN echo base > /base\n"
        "FROM base AS broken\nRUN exit 1\n"
        "FROM base AS tool\nRUN echo tool > /tool\n"
        "FROM scratch\nCOPY --from=tool /base /tool /\nWORKDIR /made/here\n"
        "COPY --from=1 /etc/passwd /never\n")
    whole = build("-q", "-t", "stages:1", str(context))
    assert whole.returncode == 125 and "Containerfile:4: RUN (step" in whole.stderr  # stage 1 is needed by COPY --from=1
    (context / "Containerfile").write_text((context / "Containerfile").read_text().replace("COPY --from=1 /etc/passwd /never\n", ""))
    final = build("-t", "stages:1", str(context))
    assert final.returncode == 0, final.stderr
    assert "RUN exit 1" not in final.stderr  # not needed: not built
    saved = run_cli("save", "stages:1", f"oci:{tmp_path}/layout:s")
    assert saved.returncode == 0, saved.stderr
    rootfs = umoci_unpack(f"{tmp_path}/layout:s", str(tmp_path / "bundle"))
    assert sorted(os.listdir(rootfs)) == ["base", "made", "tool"]  # WORKDIR makes its folder, as Docker
    assert os.path.isdir(os.path.join(rootfs, "made", "here"))
    tool = build("--target", "tool", "-t", "stages:tool", str(context))
    assert tool.returncode == 0, tool.stderr
    assert run_cli("run", "stages:tool", "cat", "/base", "/tool").stdout == "base\ntool\n"
    missing = build("--target", "nope", str(context))
    assert missing.returncode == 125 and "--target nope: no stage of that name" in missing.stderr


def test_add_of_a_hostile_tar_is_refused_and_writes_nothing_outside(busybox_image, tmp_path):
    import io
    import tarfile

    context = tmp_path / "ctx"
    context.mkdir()
    with tarfile.open(context / "evil.tar", "w") as tar:
        data = b"planted\n"
        member = tarfile.TarInfo("../../../../../../tmp/hermetic-build-planted")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    (context / "Containerfile").write_text("FROM busybox:test\nADD evil.tar /x/\n")
    ran = build("-q", "-t", "evil:1", str(context))
    errors = [line for line in ran.stderr.splitlines() if line.startswith("hermetic: error:")]
    assert ran.returncode == 125 and len(errors) == 1, ran.stderr
    assert "Containerfile:2: ADD: refusing layer member" in errors[0]
    assert not os.path.exists("/tmp/hermetic-build-planted")
    assert "evil" not in run_cli("images").stdout
