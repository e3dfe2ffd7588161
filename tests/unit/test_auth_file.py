"""`hermetic login` writing auth.json beside other logins at once."""

import json
import os

from pytest_hermetic.images.auth import remove_login, save_login


def test_logins_at_once_lose_no_entry(tmp_path):
    path = str(tmp_path / "auth.json")
    children = []
    for worker in range(6):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                for n in range(15):
                    save_login(f"reg{worker}-{n}.test:5000", "u", "p", path)
            except BaseException:
                code = 1
            os._exit(code)
        children.append(pid)
    assert all(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 for pid in children)
    with open(path) as f:
        auths = json.load(f)["auths"]
    assert len(auths) == 90, sorted(auths)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert remove_login("reg0-0.test:5000", path) == (True, path)
    assert remove_login("reg0-0.test:5000", path) == (False, path)
