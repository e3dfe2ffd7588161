"""The zygote unpickles a session's shared configuration once
(zygote_process.Configs): pytest leaves each test's own fields out of the
order (zygote._Fork), so consecutive tests send the same bytes."""

import pickle

import pytest

from pytest_hermetic.forked import zygote
from pytest_hermetic.forked.zygote_process import Configs
from pytest_hermetic.runtime.config import ProcessConfig
from pytest_hermetic.runtime.rootfs import RootfsConfig


def config(keep_fds: tuple[int, ...], cgroup: str, spare: dict[str, int], meanwhile: object = None) -> ProcessConfig:
    return ProcessConfig(rootfs=RootfsConfig(lowers=["/"], upper="/u", work="/w", merged="/m"), hostname="vm",
                         keep_fds=keep_fds, cgroup_procs=[f"/sys/fs/cgroup/pids/{cgroup}/cgroup.procs"],
                         spare=spare, relayed={5: 9}, meanwhile=meanwhile)  # type: ignore[arg-type]


class Recorder:
    """Stands for the zygote: keeps what pytest's side would send."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def _send(self, order: tuple, fds: list[int]) -> int:
        self.sent.append(order)
        return len(self.sent)

    reap = reaped = None


def test_two_tests_send_the_same_configuration_and_keep_their_own_fields() -> None:
    recorder = Recorder()
    first = config((19, 21), "hermetic-a", {"net": 24}, meanwhile=lambda: None)  # (unpicklable: never sent)
    second = config((21, 26), "hermetic-b", {"net": 29}, meanwhile=lambda: None)
    for made in (first, second):
        zygote._Fork(recorder, 0, 7, True, None)(made, 3, made.cgroup_procs)  # type: ignore[arg-type]
    assert recorder.sent[0][1] == recorder.sent[1][1]  # the same bytes
    assert recorder.sent[0][2] != recorder.sent[1][2]  # each test's cgroup beside them
    # pytest's own object keeps its fields (spawn's side uses them)
    assert second.keep_fds == (21, 26) and second.spare == {"net": 29} and second.relayed == {5: 9}
    assert second.meanwhile is not None and second.cgroup_procs == ["/sys/fs/cgroup/pids/hermetic-b/cgroup.procs"]
    sent = pickle.loads(recorder.sent[1][1])
    assert sent.keep_fds is None and sent.spare is None and sent.relayed is None and sent.cgroup_procs is None


def test_the_zygote_unpickles_each_configuration_once() -> None:
    configs = Configs()
    one = pickle.dumps(config((), "a", {}))
    other = pickle.dumps(ProcessConfig(rootfs=RootfsConfig(lowers=["/"], upper="/u", work="/w", merged="/m"),
                                       hostname="other"))
    first = configs.get(one)
    assert configs.get(one) is first
    assert configs.get(other).hostname == "other"
    assert configs.get(one) is not first and configs.get(one).hostname == "vm"  # (the last one only is kept)


def test_a_bad_configuration_raises_and_is_not_kept() -> None:
    configs = Configs()
    good = pickle.dumps(config((), "a", {}))
    configs.get(good)
    with pytest.raises(Exception):
        configs.get(b"not a pickle")
    assert configs.get(good).hostname == "vm"
