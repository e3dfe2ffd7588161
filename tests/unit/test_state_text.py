"""state.json's writer (state.py `json_text`): json.dumps's very text, without importing json for plain values."""

import json
import subprocess
import sys

import pytest

from pytest_hermetic.state import json_text

SAMPLES = [
    {},
    {"id": "0123abcd" * 8, "name": "web", "image": "host", "command": ["sh", "-c", "echo hi; exit 3"],
     "created": 1764633600.123456, "pid": 4242, "start": 987654321, "cgroup": ["/sys/fs/cgroup/pids/x"],
     "rw_dir": None, "network": None, "address": "10.88.0.2", "alive": True, "gone": False},
    {"command": ['echo "quoted"', "back\\slash", "tab\there", "new\nline", "caf\u00e9", "\u2603", "\x7f", ""]},
    {"nested": {"a": [1, 2.5, -3, [], {}, [None, True]], "b": {"c": {"d": "e"}}}},
    {"floats": [0.0, -0.0, 1e300, 1e-300, 0.1 + 0.2, float("inf"), float("-inf")]},
    {"tuple": (1, "two"), "big": 1 << 70, "neg": -(1 << 70)},
    {"keys": {1: "int key", None: "none key"}},
]


@pytest.mark.parametrize("data", SAMPLES)
def test_the_same_text_as_json_dumps(data):
    assert json_text(data) == json.dumps(data)


def test_nan_is_left_to_json():
    assert json_text({"x": float("nan")}) == '{"x": NaN}'


def test_a_plain_state_does_not_import_json():
    code = ("import sys; from pytest_hermetic.state import json_text; "
            "json_text({'id': 'x', 'command': ['true'], 'created': 1.5, 'cgroup': [], 'rw_dir': None}); "
            "print('json' in sys.modules, 're' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False False\n"
