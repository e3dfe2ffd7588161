"""`@hermetic(image=REGISTRY_REF)` pulls on first use, also with two xdist workers at once."""

from __future__ import annotations

import os

import pytest


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_marker_image_from_a_registry(pytester: pytest.Pytester, busybox_remote, workers, monkeypatch, tmp_path):
    store = tmp_path / "store"
    monkeypatch.setenv("HERMETIC_STORE", str(store))  # empty: the first test to run pulls
    pytester.makepyfile(test_pulled=f'''
import os
from pytest_hermetic import hermetic

IMAGE = "{busybox_remote}"

@hermetic(image=IMAGE)
def test_the_image_root():
    assert os.path.isfile("/bin/busybox") and os.listdir("/root") == []

@hermetic(image=IMAGE)
def test_busybox_root():
    assert "hermetic busybox" in open("/etc/os-release").read()
    assert os.getpid() == 2
''')
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", *workers, timeout=120)
    result.assert_outcomes(passed=2)
    assert len(os.listdir(store / "layers")) == 1 and os.listdir(store / "tmp") == []
