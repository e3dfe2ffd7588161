"""Platforms (`linux/amd64`, `linux/arm64/v8`) and the pick from a multi-platform index.

As Docker does: the host's platform by default; on arm64 a manifest without
a variant counts as `v8`; attestation entries (`unknown/unknown`) never match.
"""

from __future__ import annotations

import os

from ..errors import ImageNotFound, SpecError

_ARCH = {"x86_64": ("amd64", None), "amd64": ("amd64", None), "aarch64": ("arm64", "v8"), "arm64": ("arm64", "v8"),
         "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"), "i686": ("386", None), "i386": ("386", None),
         "ppc64le": ("ppc64le", None), "s390x": ("s390x", None), "riscv64": ("riscv64", None)}


def host() -> dict:
    machine = os.uname().machine  # not the platform module: it costs start-up
    arch, variant = _ARCH.get(machine, (machine, None))
    return {"os": "linux", "architecture": arch, "variant": variant}


def parse(text: str) -> dict:
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise SpecError(f"--platform {text!r}: expected OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8")
    arch, variant = parts[1], parts[2] if len(parts) == 3 else None
    if arch in _ARCH and _ARCH[arch][0] != arch:  # x86_64 -> amd64, aarch64 -> arm64
        arch, default = _ARCH[arch]
        variant = variant or default
    elif arch == "arm64" and variant is None:
        variant = "v8"
    return {"os": parts[0], "architecture": arch, "variant": variant}


# Architectures a kernel of the first runs natively (its compat mode), and the
# names binfmt_misc's QEMU handlers have for each (qemu-user-static's).
_COMPAT = {"amd64": ("386",), "arm64": ("arm",)}
_QEMU = {"amd64": "x86_64", "arm64": "aarch64", "arm": "arm", "386": "i386", "ppc64le": "ppc64le", "s390x": "s390x",
         "riscv64": "riscv64"}


def cannot_run(wanted: dict) -> str | None:
    """Why this machine cannot run `wanted`'s programs (None: it can,
    natively or through a binfmt_misc emulator such as qemu-user-static)."""
    here = host()
    if wanted["os"] != "linux":
        return f"{format(wanted)} is not a Linux platform, and containers here run on Linux"
    if matches(here, wanted) or wanted["architecture"] in _COMPAT.get(here["architecture"], ()):
        return None
    handler = f"/proc/sys/fs/binfmt_misc/qemu-{_QEMU.get(wanted['architecture'], wanted['architecture'])}"
    try:
        with open(handler) as f:
            if f.readline().strip() == "enabled":
                return None
    except OSError:
        pass
    return (f"this {format(here)} machine cannot run {format(wanted)} programs (no binfmt_misc handler {handler}); "
            f"fix: install an emulator (Debian: apt install qemu-user-static binfmt-support), or use --platform "
            f"{format(here)}")


def of_config(config: dict) -> dict:
    return {"os": config.get("os", ""), "architecture": config.get("architecture", ""), "variant": config.get("variant")}


def format(p: dict) -> str:
    return "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)


def _variant(p: dict) -> str | None:
    if p.get("architecture") == "arm64" and not p.get("variant"):
        return "v8"
    return p.get("variant") or None


def matches(candidate: dict, wanted: dict) -> bool:
    if candidate.get("os") != wanted["os"] or candidate.get("architecture") != wanted["architecture"]:
        return False
    return wanted.get("variant") is None or _variant(candidate) == _variant(wanted)


def select(manifests: list[dict], wanted: dict, name: str) -> dict:
    """The index entry for `wanted`; an exact variant beats none."""
    fits = [m for m in manifests if matches(m.get("platform") or {}, wanted)]
    if not fits:
        have = sorted({format(m.get("platform") or {}) for m in manifests if (m.get("platform") or {}).get("os") != "unknown"})
        raise ImageNotFound(f"{name} has no {format(wanted)} image (it has: {', '.join(have) or 'none'}); "
                            "choose one with --platform")
    fits.sort(key=lambda m: (m.get("platform") or {}).get("variant") != wanted.get("variant"))
    return fits[0]
