"""The cgroup controllers against a folder shaped like a cgroup (as youki tests
its controllers): the files a kernel would show, `apply` writes, `stats`
parses what the kernel writes.  No root, no real cgroup; tests/test_limits.py
checks the same code against the kernel."""

from __future__ import annotations

import pytest

from pytest_hermetic.errors import CgroupUnavailable
from pytest_hermetic.runtime.cgroups import Hierarchy, Limits, Stats, parse_hierarchy
from pytest_hermetic.runtime.cgroups import v1, v2

UNLIMITED_V1 = "9223372036854771712\n"  # what v1 shows for "no limit" (LONG_MAX rounded to a page)


def cgroup_folder(path, files: dict[str, str]):
    """A folder holding `files` with their contents, as the kernel would show them."""
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def read(path, name: str) -> str:
    return (path / name).read_text()


# ------------------------------------------------------------------ cgroup v2


def test_v2_memory_limit_turns_swap_off_where_the_kernel_has_swap(tmp_path):
    group = cgroup_folder(tmp_path, {"memory.max": "max\n", "memory.swap.max": "max\n"})
    v2.memory.apply(str(group), 64 << 20)
    assert read(group, "memory.max") == str(64 << 20)
    assert read(group, "memory.swap.max") == "0"


def test_v2_memory_limit_without_swap_accounting_writes_no_swap_file(tmp_path):
    group = cgroup_folder(tmp_path, {"memory.max": "max\n"})
    v2.memory.apply(str(group), 6 << 20)
    assert read(group, "memory.max") == str(6 << 20)
    assert not (group / "memory.swap.max").exists()


def test_v2_no_limit_writes_nothing(tmp_path):
    group = cgroup_folder(tmp_path, {})
    v2.memory.apply(str(group), None)
    v2.cpu.apply(str(group), None)
    v2.pids.apply(str(group), None)
    assert list(group.iterdir()) == []


@pytest.mark.parametrize("cpus, written", [(0.5, "50000 100000"), (2, "200000 100000"), (1.25, "125000 100000"),
                                           (0.001, "1000 100000")])  # the kernel refuses a quota under 1 ms
def test_v2_cpu_bandwidth(tmp_path, cpus, written):
    group = cgroup_folder(tmp_path, {"cpu.max": "max 100000\n"})
    v2.cpu.apply(str(group), cpus)
    assert read(group, "cpu.max") == written


def test_v2_pids_limit(tmp_path):
    group = cgroup_folder(tmp_path, {"pids.max": "max\n"})
    v2.pids.apply(str(group), 24)
    assert read(group, "pids.max") == "24"


def test_v2_stats_of_a_container_that_was_oom_killed(tmp_path):
    group = cgroup_folder(tmp_path, {
        "memory.max": "33554432\n",
        "memory.peak": "33550336\n",
        "memory.events": "low 0\nhigh 0\nmax 57\noom 1\noom_kill 1\noom_group_kill 0\n",
        "cpu.stat": "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n"
                    "nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
        "pids.max": "5\n",
        "pids.events": "max 3\n",
    })
    assert v2.V2Cgroup(str(group)).stats() == Stats(memory_limit=32 << 20, memory_peak=33550336, oom_kills=1,
                                                     cpu_usec=1234567, pids_limit=5, pids_limit_hits=3)


def test_v2_stats_on_an_old_kernel_without_limits(tmp_path):
    """Before 5.19 there is no memory.peak; unlimited files say "max"; memory.events
    before 4.13 has no oom_kill; pids.events may be missing entirely."""
    group = cgroup_folder(tmp_path, {
        "memory.max": "max\n",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\n",
        "cpu.stat": "usage_usec 42\nuser_usec 40\nsystem_usec 2\n",
        "pids.max": "max\n",
    })
    assert v2.V2Cgroup(str(group)).stats() == Stats(memory_limit=None, memory_peak=None, oom_kills=0,
                                                     cpu_usec=42, pids_limit=None, pids_limit_hits=0)


def test_v2_stats_of_a_cgroup_that_is_gone_are_empty(tmp_path):
    assert v2.V2Cgroup(str(tmp_path / "gone")).stats() == Stats()


def test_v2_kill_uses_cgroup_kill_where_the_kernel_has_it(tmp_path):
    """5.14+: one write kills every member (none here: cgroup.procs is empty)."""
    group = cgroup_folder(tmp_path, {"cgroup.procs": "", "cgroup.kill": "", "cgroup.freeze": "0\n"})
    assert v2.V2Cgroup(str(group)).kill() == []
    assert (read(group, "cgroup.kill"), read(group, "cgroup.freeze")) == ("1", "0\n")


def test_v2_kill_freezes_and_thaws_on_older_kernels(tmp_path):
    group = cgroup_folder(tmp_path, {"cgroup.procs": "", "cgroup.freeze": "0\n"})
    assert v2.V2Cgroup(str(group)).kill() == []
    assert read(group, "cgroup.freeze") == "0"  # written: frozen for the kill, thawed after
    assert not (group / "cgroup.kill").exists()


def v2_hierarchy(tmp_path, delegated: str) -> Hierarchy:
    cgroup_folder(tmp_path / "ci", {"cgroup.subtree_control": delegated})
    return Hierarchy("v2", str(tmp_path), {}, {"": "/ci"})


@pytest.fixture
def no_parent_override(monkeypatch):
    monkeypatch.delenv("HERMETIC_CGROUP_PARENT", raising=False)


def test_v2_create_makes_one_directory_below_our_cgroup_and_applies_every_limit(tmp_path, no_parent_override):
    hierarchy = v2_hierarchy(tmp_path, "cpu memory pids\n")
    group = v2.V2Cgroup.create(hierarchy, "hermetic-t1", Limits(mem=64 << 20, cpus=0.5, pids=None), fuse=4096)
    path = tmp_path / "ci" / "hermetic-t1"
    assert group.path == str(path) and group.directories() == [str(path)]
    assert group.join_paths() == [f"{path}/cgroup.procs"]
    assert (read(path, "memory.max"), read(path, "cpu.max"), read(path, "pids.max")) == (
        str(64 << 20), "50000 100000", "4096")
    assert group.pids() == []  # no cgroup.procs: nothing joined yet


def test_v2_create_under_the_configured_parent(tmp_path, monkeypatch):
    cgroup_folder(tmp_path / "elsewhere" / "ci", {"cgroup.subtree_control": "pids\n"})
    monkeypatch.setenv("HERMETIC_CGROUP_PARENT", "elsewhere/ci/")
    group = v2.V2Cgroup.create(Hierarchy("v2", str(tmp_path), {}, {"": "/ci"}), "hermetic-t2", Limits(pids=7))
    assert group.path == str(tmp_path / "elsewhere" / "ci" / "hermetic-t2")
    assert read(tmp_path / "elsewhere" / "ci" / "hermetic-t2", "pids.max") == "7"


def test_v2_fuse_is_left_out_where_pids_is_not_delegated(tmp_path, no_parent_override):
    group = v2.V2Cgroup.create(v2_hierarchy(tmp_path, "memory\n"), "hermetic-t3", Limits(), fuse=4096)
    assert list((tmp_path / "ci" / "hermetic-t3").iterdir()) == []
    assert group.directories() == [str(tmp_path / "ci" / "hermetic-t3")]


def test_v2_limit_whose_controller_is_not_delegated_names_the_fix(tmp_path, no_parent_override):
    with pytest.raises(CgroupUnavailable) as info:
        v2.V2Cgroup.create(v2_hierarchy(tmp_path, "pids\n"), "hermetic-t4", Limits(cpus=1.0))
    message = str(info.value)
    assert "cpus limit needs the cgroup v2 'cpu' controller" in message
    assert "cgroup.subtree_control has: pids" in message and "HERMETIC_CGROUP_PARENT" in message
    assert not (tmp_path / "ci" / "hermetic-t4").exists()


# ------------------------------------------------------------------ cgroup v1


def test_v1_memory_limit_covers_swap_where_memsw_exists(tmp_path):
    group = cgroup_folder(tmp_path, {"memory.limit_in_bytes": UNLIMITED_V1,
                                     "memory.memsw.limit_in_bytes": UNLIMITED_V1})
    v1.memory.apply(str(group), 64 << 20)
    assert read(group, "memory.limit_in_bytes") == read(group, "memory.memsw.limit_in_bytes") == str(64 << 20)


def test_v1_memory_limit_without_swap_accounting(tmp_path):
    group = cgroup_folder(tmp_path, {"memory.limit_in_bytes": UNLIMITED_V1})
    v1.memory.apply(str(group), 64 << 20)
    assert read(group, "memory.limit_in_bytes") == str(64 << 20)
    assert not (group / "memory.memsw.limit_in_bytes").exists()


@pytest.mark.parametrize("cpus, quota", [(0.5, "50000"), (3, "300000"), (0.001, "1000")])
def test_v1_cpu_bandwidth(tmp_path, cpus, quota):
    group = cgroup_folder(tmp_path, {"cpu.cfs_period_us": "100000\n", "cpu.cfs_quota_us": "-1\n"})
    v1.cpu.apply(str(group), cpus)
    assert (read(group, "cpu.cfs_period_us"), read(group, "cpu.cfs_quota_us")) == ("100000", quota)


def test_v1_controllers_not_mounted_are_skipped(tmp_path):
    for controller in (v1.memory, v1.cpu, v1.pids):
        controller.apply(None, 1)
    result = Stats()
    v1.memory.stats(None, result)
    v1.cpu.stats(None, result)
    v1.pids.stats(None, result)
    assert result == Stats()


def test_v1_stats_of_a_container_that_was_oom_killed(tmp_path):
    memory = cgroup_folder(tmp_path / "memory", {
        "memory.limit_in_bytes": "33554432\n",
        "memory.max_usage_in_bytes": "33554432\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    })
    cpuacct = cgroup_folder(tmp_path / "cpuacct", {"cpuacct.usage": "2500999999\n"})
    pids = cgroup_folder(tmp_path / "pids", {"pids.max": "24\n", "pids.events": "max 1\n"})
    group = v1.V1Cgroup({"memory": str(memory), "cpuacct": str(cpuacct), "pids": str(pids)})
    assert group.stats() == Stats(memory_limit=32 << 20, memory_peak=32 << 20, oom_kills=2,
                                  cpu_usec=2500999, pids_limit=24, pids_limit_hits=1)


def test_v1_stats_of_an_unlimited_container_on_an_old_kernel(tmp_path):
    """"No limit" is a huge number in v1; oom_control before 4.13 has no
    oom_kill line; without memory.max_usage_in_bytes there is no peak."""
    memory = cgroup_folder(tmp_path / "memory", {
        "memory.limit_in_bytes": UNLIMITED_V1,
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\n",
    })
    pids = cgroup_folder(tmp_path / "pids", {"pids.max": "max\n"})
    group = v1.V1Cgroup({"memory": str(memory), "pids": str(pids)})
    assert group.stats() == Stats(memory_limit=None, memory_peak=None, oom_kills=0, cpu_usec=None,
                                  pids_limit=None, pids_limit_hits=0)


def test_v1_freezer_freezes_and_thaws(tmp_path):
    group = cgroup_folder(tmp_path, {"freezer.state": "THAWED\n"})
    assert v1.freezer.freeze(str(group)) is True
    assert read(group, "freezer.state") == "FROZEN"
    v1.freezer.thaw(str(group))
    assert read(group, "freezer.state") == "THAWED"


def test_v1_freezer_that_is_not_there_says_so(tmp_path):
    assert v1.freezer.freeze(str(tmp_path / "gone")) is False
    v1.freezer.thaw(str(tmp_path / "gone"))  # nothing to thaw, no error


def test_v1_kill_goes_through_the_freezer(tmp_path):
    freezer = cgroup_folder(tmp_path / "freezer", {"cgroup.procs": "", "freezer.state": "THAWED\n"})
    pids = cgroup_folder(tmp_path / "pids", {"cgroup.procs": ""})
    group = v1.V1Cgroup({"freezer": str(freezer), "pids": str(pids)})
    assert group.kill() == [] and group.pids() == []
    assert read(freezer, "freezer.state") == "THAWED"  # frozen for the kill, thawed after


def v1_hierarchy(tmp_path) -> Hierarchy:
    """This host's layout: cpu and cpuacct co-mounted, our process in /ci everywhere."""
    mounts = {"memory": "memory", "cpu": "cpu,cpuacct", "cpuacct": "cpu,cpuacct", "pids": "pids", "freezer": "freezer"}
    for folder in set(mounts.values()):
        (tmp_path / folder / "ci").mkdir(parents=True)
    return Hierarchy("v1", None, {c: str(tmp_path / m) for c, m in mounts.items()}, {c: "/ci" for c in mounts})


def test_v1_create_makes_only_the_hierarchies_it_needs(tmp_path, no_parent_override):
    group = v1.V1Cgroup.create(v1_hierarchy(tmp_path), "hermetic-t5", Limits(accounting=False), fuse=4096)
    assert sorted(group.dirs) == ["freezer", "pids"]
    assert group.directories()[0] == str(tmp_path / "pids" / "ci" / "hermetic-t5")  # pids first, for gc
    assert read(tmp_path / "pids" / "ci" / "hermetic-t5", "pids.max") == "4096"
    assert not (tmp_path / "memory" / "ci" / "hermetic-t5").exists()


def test_v1_create_shares_the_directory_of_co_mounted_controllers(tmp_path, no_parent_override):
    group = v1.V1Cgroup.create(v1_hierarchy(tmp_path), "hermetic-t6", Limits(mem=64 << 20, cpus=1.5, pids=10))
    shared = str(tmp_path / "cpu,cpuacct" / "ci" / "hermetic-t6")
    assert group.dirs["cpu"] == group.dirs["cpuacct"] == shared
    assert len(group.directories()) == len(group.join_paths()) == 4  # pids, freezer, memory, cpu+cpuacct
    assert read(tmp_path / "cpu,cpuacct" / "ci" / "hermetic-t6", "cpu.cfs_quota_us") == "150000"
    assert read(tmp_path / "memory" / "ci" / "hermetic-t6", "memory.limit_in_bytes") == str(64 << 20)
    assert read(tmp_path / "pids" / "ci" / "hermetic-t6", "pids.max") == "10"


def test_v1_limit_whose_controller_is_not_mounted_names_the_fix(tmp_path, no_parent_override):
    hierarchy = v1_hierarchy(tmp_path)
    del hierarchy.v1["memory"]
    with pytest.raises(CgroupUnavailable, match="mem limit needs the cgroup v1 'memory' controller, which is not "
                                                "mounted; fix: mount it, or drop the limit"):
        v1.V1Cgroup.create(hierarchy, "hermetic-t7", Limits(mem=64 << 20))


# ------------------------------------------------------------------ detection

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
""".splitlines(keepends=True)
HYBRID_CGROUP = """\
9:name=systemd:/user.slice
8:pids:/user.slice/session-1.scope
4:memory:/process api/x
2:cpu,cpuacct:/
0::/user.slice
""".splitlines(keepends=True)


def test_hybrid_host():
    hierarchy = parse_hierarchy(HYBRID_MOUNTINFO, HYBRID_CGROUP)
    assert (hierarchy.version, hierarchy.unified) == ("hybrid", "/sys/fs/cgroup/unified")
    assert hierarchy.v1 == {"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                            "memory": "/sys/fs/cgroup/memory", "freezer": "/sys/fs/cgroup/freezer",
                            "pids": "/sys/fs/cgroup/pids"}
    assert hierarchy.own["pids"] == "/user.slice/session-1.scope" and hierarchy.own["memory"] == "/process api/x"
    assert hierarchy.own["cpuacct"] == "/" and hierarchy.own[""] == "/user.slice"


def test_pure_v2_host_with_an_escaped_mount_point():
    mountinfo = ["29 23 0:26 / /sys/fs/cgroup\\040v2 rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
                 "30 23 0:27 / /tmp rw - tmpfs tmpfs rw\n"]
    hierarchy = parse_hierarchy(mountinfo, ["0::/hermetic-ci\n"])
    assert (hierarchy.version, hierarchy.unified, hierarchy.v1, hierarchy.own) == (
        "v2", "/sys/fs/cgroup v2", {}, {"": "/hermetic-ci"})


def test_pure_v1_host_and_no_cgroups_at_all():
    v1_only = [line for line in HYBRID_MOUNTINFO if "cgroup2" not in line]
    assert parse_hierarchy(v1_only, HYBRID_CGROUP).version == "v1"
    none = parse_hierarchy(["30 23 0:27 / /tmp rw - tmpfs tmpfs rw\n"], [])
    assert (none.version, none.unified, none.v1, none.own) == ("none", None, {}, {})
