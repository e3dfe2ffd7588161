"""What machine a benchmark ran on: shared by the scripts in bench/."""

from __future__ import annotations

import os
import platform


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def describe() -> dict[str, str]:
    """CPU model (and whether it is a virtual machine), cores, kernel, cgroup
    version, Python, load average."""
    from pytest_hermetic.runtime import cgroups

    model, hypervisor = "unknown", False
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and " hypervisor" in line:
                hypervisor = True
    return {
        "cpu": model + (" (virtual machine)" if hypervisor else ""),
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "cgroup": cgroups.detect().version,
        "python": platform.python_version(),
        "load average": loadavg(),
    }
