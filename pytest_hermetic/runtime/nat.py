"""Outbound NAT for the host bridge (`net=True`), as Docker's default bridge.

One rule set, added when the bridge is made and removed with it: with
nftables a table of our own (`ip hermetic_<bridge>`), deleted in one command; with
only iptables (its nf_tables or legacy flavour), rules marked with a
comment, each deleted by its exact spec.  Nothing else of the host's
firewall is read or changed.

The kernel forwards only if `net.ipv4.ip_forward` is 1.  That switch is the
host's and affects every interface, so the engine never flips it; `doctor`
and `hermetic network ls` say when it is off (containers then still reach
the host and each other, not the outside).
"""

from __future__ import annotations

import os
import shutil
import subprocess

from ..errors import ContainerStartError

TABLE = "hermetic"


def _table(bridge: str) -> str:
    return f"{TABLE}_{bridge}"


def backend() -> str | None:
    """"nft", "iptables", or None when the host has neither (`$HERMETIC_NAT`
    picks one where both are installed)."""
    chosen = os.environ.get("HERMETIC_NAT")
    for tool in ((chosen,) if chosen in ("nft", "iptables") else ("nft", "iptables")):
        if shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin"):
            return tool
    return None


def _tool(name: str) -> str:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") or name


def _iptables_rules(subnet: str, bridge: str) -> list[list[str]]:
    tag = ["-m", "comment", "--comment", f"{TABLE}:{bridge}"]
    return [
        ["-t", "nat", "POSTROUTING", "-s", subnet, "!", "-o", bridge, *tag, "-j", "MASQUERADE"],
        ["-t", "filter", "FORWARD", "-i", bridge, *tag, "-j", "ACCEPT"],
        ["-t", "filter", "FORWARD", "-o", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", *tag, "-j", "ACCEPT"],
    ]


def _iptables(action: str, rule: list[str]) -> subprocess.CompletedProcess:
    table, chain, spec = rule[:2], rule[2], rule[3:]
    return subprocess.run([_tool("iptables"), "-w", *table, action, chain, *spec], capture_output=True, text=True)


def add(subnet: str, bridge: str) -> str | None:
    """Add the rules (idempotent); returns the backend used, None if none."""
    tool = backend()
    if tool == "nft":
        script = (
            f"table ip {_table(bridge)} {{\n"
            f"  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n"
            f"    ip saddr {subnet} oifname != \"{bridge}\" masquerade\n  }}\n"
            f"  chain forward {{ type filter hook forward priority filter; policy accept;\n"
            f"    iifname \"{bridge}\" accept\n"
            f"    oifname \"{bridge}\" ct state established,related accept\n  }}\n"
            "}\n"
        )
        remove(subnet, bridge)  # a table left by a killed run: start from exactly ours
        done = subprocess.run([_tool("nft"), "-f", "-"], input=script, capture_output=True, text=True)
        if done.returncode != 0:
            raise ContainerStartError(f"cannot add the NAT rules for {bridge} with nft: {done.stderr.strip()}")
    elif tool == "iptables":
        for rule in _iptables_rules(subnet, bridge):
            if _iptables("-C", rule).returncode != 0:
                done = _iptables("-A", rule)
                if done.returncode != 0:
                    raise ContainerStartError(f"cannot add the NAT rules for {bridge} with iptables: {done.stderr.strip()}")
    return tool


def remove(subnet: str, bridge: str) -> None:
    tool = backend()
    if tool == "nft":
        if present(subnet, bridge):
            subprocess.run([_tool("nft"), "delete", "table", "ip", _table(bridge)], capture_output=True)
    elif tool == "iptables":
        for rule in _iptables_rules(subnet, bridge):
            while _iptables("-C", rule).returncode == 0:
                if _iptables("-D", rule).returncode != 0:
                    break


def present(subnet: str, bridge: str) -> bool:
    """Whether our rules are in the host's firewall now."""
    tool = backend()
    if tool == "nft":
        return subprocess.run([_tool("nft"), "list", "table", "ip", _table(bridge)], capture_output=True).returncode == 0
    if tool == "iptables":
        return any(_iptables("-C", rule).returncode == 0 for rule in _iptables_rules(subnet, bridge))
    return False


def forwarding_enabled() -> bool:
    try:
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            return f.read().strip() == "1"
    except OSError:
        return False
