"""A tiny real image from the host's static busybox: the `busybox:` transport.

`hermetic import busybox: NAME` makes a one-layer image of a statically
linked busybox (Debian's `busybox-static`), a link for each of its applets
(`busybox --list-full`), and a minimal `/etc` (passwd, group, os-release).
It has no libc and no Python, which is the point: it shows what a container
sees of an image that is not the host, and it needs no registry and no
checkout of the repository.  `busybox:/PATH` takes another static binary (`busybox:TAG` is Docker Hub's busybox, pulled as any registry image).

The same tree is written either as a layer tar (owned by root, stamped
with the binary's time, so one binary always gives the same layer) or as a
rootfs folder (`build_rootfs`, for tools that want a folder).
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import tarfile

from ..errors import SpecError

CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
DIRECTORIES = ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "tmp", "var", "var/tmp", "home",
               "proc", "sys", "dev")
FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
                  "app:x:1000:1000:app:/home:/bin/sh\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\napp:x:1000:\n",
    "etc/os-release": 'NAME="hermetic busybox"\nID=busybox\n',
}
_PT_INTERP = 3


def is_static(path: str) -> bool:
    """Whether the ELF file at `path` has no program interpreter (no PT_INTERP
    header): it runs in an image without a libc."""
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF":
            return False
        wide, order = head[4] == 2, "<" if head[5] == 1 else ">"
        if wide:
            phoff, = struct.unpack_from(order + "Q", head, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
        else:
            phoff, = struct.unpack_from(order + "I", head, 28)
            phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from(order + "I", table, i * phentsize)[0] != _PT_INTERP for i in range(phnum))


def find_busybox(path: str = "") -> str:
    """The static busybox binary to use: `path`, else the host's; one clear error if there is none."""
    if path:
        if not os.path.isfile(path):
            raise SpecError(f"busybox:{path}: no such file")
        if not is_static(path):
            raise SpecError(f"busybox:{path}: not a statically linked executable (the image has no libc); "
                            "fix: apt-get install busybox-static and use busybox:")
        return path
    for candidate in CANDIDATES:
        if os.path.isfile(candidate) and is_static(candidate):
            return candidate
    raise SpecError("busybox: needs a statically linked busybox and this machine has none; "
                    "fix: apt-get install busybox-static (or busybox:/PATH to a static binary)")


def applets(busybox: str) -> list[str]:
    """The applets' paths (`bin/sh`, `usr/bin/awk`, ...), as the binary lists them."""
    try:
        out = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise SpecError(f"busybox:{busybox}: cannot list its applets ({exc})") from None
    paths = []
    for line in out.split():
        line = line.strip("/")
        # Only plain relative paths below the root: the list comes from a binary the caller named.
        if line and line != "bin/busybox" and ".." not in line.split("/"):
            paths.append(line)
    return sorted(set(paths))


def _link_target(applet: str) -> str:
    return os.path.relpath("/bin/busybox", os.path.dirname("/" + applet))


def write_layer(busybox: str, out: io.BufferedIOBase) -> None:
    """The image's one layer, an uncompressed tar, to `out`."""
    st = os.stat(busybox)
    mtime = int(st.st_mtime)

    def info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.size, ti.mtime = kind, mode, size, mtime
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    links = applets(busybox)
    dirs = set(DIRECTORIES) | {os.path.dirname(link) for link in links if os.path.dirname(link)}
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(dirs):
            tar.addfile(info(name, tarfile.DIRTYPE, 0o1777 if name in ("tmp", "var/tmp") else 0o755))
        with open(busybox, "rb") as f:
            tar.addfile(info("bin/busybox", tarfile.REGTYPE, 0o755, st.st_size), f)
        for name, text in sorted(FILES.items()):
            data = text.encode()
            tar.addfile(info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
        for link in links:
            if link in FILES:
                continue
            ti = info(link, tarfile.SYMTYPE, 0o777)
            ti.linkname = _link_target(link)
            tar.addfile(ti)


def build_rootfs(dest: str, path: str = "") -> str:
    """The same tree as a rootfs folder `dest` (new or empty), owned by the caller."""
    busybox = find_busybox(path)
    for sub in DIRECTORIES:
        os.makedirs(os.path.join(dest, sub), exist_ok=True)
    for sub in ("tmp", "var/tmp"):
        os.chmod(os.path.join(dest, sub), 0o1777)
    shutil.copy2(busybox, os.path.join(dest, "bin", "busybox"))
    for applet in applets(busybox):
        link = os.path.join(dest, applet)
        if os.path.lexists(link):
            continue
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(_link_target(applet), link)
    for name, text in FILES.items():
        with open(os.path.join(dest, name), "w") as f:
            f.write(text)
    return dest
