"""`hermetic login` writing auth.json beside other logins at once."""

import json
import os
import subprocess
import sys

from pytest_hermetic.images.auth import remove_login, save_login

# Each writer a process of its own (not a fork of this one, which may have
# threads: a fork would copy their locks, and 3.12+ warns about it).
WRITER = """
import sys
from pytest_hermetic.images.auth import save_login
worker, path = sys.argv[1:]
for n in range(15):
    save_login(f"reg{worker}-{n}.test:5000", "u", "p", path)
"""


def test_logins_at_once_lose_no_entry(tmp_path):
    path = str(tmp_path / "auth.json")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(worker), path], env=env) for worker in range(6)]
    assert [writer.wait(timeout=60) for writer in writers] == [0] * 6
    with open(path) as f:
        auths = json.load(f)["auths"]
    assert len(auths) == 90, sorted(auths)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert remove_login("reg0-0.test:5000", path) == (True, path)
    assert remove_login("reg0-0.test:5000", path) == (False, path)
