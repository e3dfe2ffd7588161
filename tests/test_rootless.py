"""The same checks as an unprivileged user (rootless: a user namespace,
subordinate ids through newuidmap when /etc/subuid grants them)."""

import os
import subprocess
import socket

import pytest

from conftest import inner_session_as, run_cli


def test_namespaces_from_inside(test_user):
    ran = run_cli("run", "host", "--", "sh", "-c", "echo $$; hostname; ls /sys/class/net; id -u", user=test_user)
    assert ran.returncode == 0, ran.stderr
    pid, hostname, nets, uid = ran.stdout.split()
    assert (pid, nets, uid) == ("1", "lo", "0")
    assert hostname != socket.gethostname()


def test_subordinate_ids_are_mapped(test_user):
    ran = run_cli("run", "host", "cat", "/proc/self/uid_map", user=test_user)
    lines = [line.split() for line in ran.stdout.splitlines()]
    assert lines[0][0] == "0" and lines[0][2] == "1"
    assert len(lines) == 2 and lines[1][0] == "1" and int(lines[1][2]) >= 65536, ran.stdout


def test_writes_vanish_and_host_files_stay_protected(test_user):
    ran = run_cli("run", "host", "sh", "-c",
                  "echo x > /etc/rootless-test && cat /etc/rootless-test; echo y >> /etc/shadow 2>/dev/null && echo shadow-writable; "
                  "cat /etc/shadow >/dev/null 2>&1 || echo shadow-unreadable", user=test_user)
    assert "x" in ran.stdout.split()
    assert not os.path.exists("/etc/rootless-test")
    # Container root is the unprivileged user on the host: host root's files stay out of reach.
    assert "shadow-unreadable" in ran.stdout and "shadow-writable" not in ran.stdout


def test_a_limit_without_delegation_is_a_clear_error(test_user):
    ran = run_cli("run", "--mem", "64M", "host", "true", user=test_user)
    assert ran.returncode == 125
    assert "mem limit" in ran.stderr and "fix:" in ran.stderr
    assert ran.stderr.count("\n") == 1


def test_no_limit_runs_without_cgroups(test_user):
    ran = run_cli("run", "--timeout", "2", "host", "sh", "-c", "sleep 30 & sleep 30", user=test_user)
    assert ran.returncode == 137
    assert "timeout after 2 s: killed" in ran.stderr


def test_import_commit_and_run_an_image(test_user, busybox_rootfs):
    assert run_cli("import", f"dir:{busybox_rootfs}", "rl-busybox:1", user=test_user).returncode == 0
    changed = run_cli("run", "--commit", "rl-busybox:2", "rl-busybox:1", "sh", "-c",
                      "rm /etc/os-release; echo hi > /root/new; rm -rf /home && mkdir /home && touch /home/o", user=test_user)
    assert changed.returncode == 0, changed.stderr
    ran = run_cli("run", "rl-busybox:2", "sh", "-c", "cat /root/new; ls /home; test -e /etc/os-release || echo gone",
                  user=test_user)
    assert ran.stdout.split() == ["hi", "o", "gone"], ran.stderr
    base = run_cli("run", "rl-busybox:1", "sh", "-c", "ls /root | wc -l", user=test_user)
    assert base.stdout.strip() == "0"
    for ref in ("rl-busybox:1", "rl-busybox:2"):
        run_cli("rmi", ref, user=test_user)
    assert run_cli("gc", "-q", user=test_user).returncode == 0


def test_the_plugin_as_an_unprivileged_user(test_user):
    """An inner pytest session run by the test user with --hermetic."""
    ran, _ = inner_session_as(test_user, "plugin-project", "test_inner.py", (
        "import os, time\n"
        "from pytest_hermetic import hermetic\n\n"
        "@hermetic\n"
        "def test_inside(tmp_path):\n"
        "    assert os.getpid() == 2\n"
        "    (tmp_path / 'kept').write_text('x')\n"
        "    open('/etc/rootless-plugin-test', 'w').write('vanishes')\n\n"
        "@hermetic\n"  # (its container prepared while the one before ran)
        "def test_inside_again():\n"
        "    assert os.getpid() == 2\n"
        "    assert not os.path.exists('/etc/rootless-plugin-test')\n\n"
        "def test_host_untouched():\n"
        "    assert not os.path.exists('/etc/rootless-plugin-test')\n\n"
        "@hermetic(timeout=1)\n"
        "def test_timeout():\n"
        "    time.sleep(30)\n"))
    assert "1 failed, 3 passed" in ran.stdout, ran.stdout + ran.stderr
    assert "hermetic: timeout after 1 s: killed" in ran.stdout


def test_files_of_wider_fixtures_under_tmp_are_there_rootless(test_user):
    from test_plugin_fidelity import TMP_SUITE

    ran, _ = inner_session_as(test_user, "tmp-project", "test_inner.py", TMP_SUITE, "--hermetic", "-p", "no:randomly")
    assert "2 passed" in ran.stdout, ran.stdout + ran.stderr
    assert not os.path.exists("/tmp/hermetic-fidelity-left-behind")


def test_a_mount_below_the_hosts_tmp_does_not_stop_rootless_tests(test_user):
    """In a user namespace the kernel refuses an overlay of a folder with a
    (locked) mount below it; another program's mount under /tmp made every
    rootless hermetic test fail at set-up ("mount: Invalid argument")."""
    from test_plugin_fidelity import TMP_SUITE

    state = os.environ["HERMETIC_STATE"]
    assert state.startswith("/tmp/"), state  # the suite keeps its state under /tmp (tests/conftest.py)
    probe = os.path.join(state, "a-mount-below-tmp")
    os.makedirs(probe, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "probe", probe], check=True)
    try:
        ran, _ = inner_session_as(test_user, "tmp-mount-project", "test_inner.py", TMP_SUITE, "--hermetic",
                                  "-p", "no:randomly")
    finally:
        subprocess.run(["umount", probe], check=True)
        os.rmdir(probe)
    assert "2 passed" in ran.stdout, ran.stdout + ran.stderr
    assert not os.path.exists("/tmp/hermetic-fidelity-left-behind")


def test_bridged_network_through_slirp4netns_reaches_the_host(test_user):
    # The host's loopback, seen from the container as slirp4netns's 10.0.2.2.
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(20)
    port = server.getsockname()[1]
    import threading

    def serve():
        try:
            conn, _ = server.accept()
            conn.sendall(b"hello rootless\n")
            conn.close()
        except OSError:
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        ran = run_cli("run", "--net=bridge", "host", "--", "python3", "-c",
                      "import socket, os; print(open('/proc/net/route').read().split()[11]);"
                      f"print(socket.create_connection(('10.0.2.2', {port}), timeout=5).makefile().readline(), end='');"
                      "print(open('/etc/resolv.conf').read().split()[-1])", user=test_user)
    finally:
        server.close()
        thread.join()
    assert ran.returncode == 0, ran.stderr
    route_dev, hello, dns = ran.stdout.split("\n")[:3]
    assert route_dev == "tap0" and hello == "hello rootless" and dns == "10.0.2.3"


def test_named_networks_rootless_are_a_clear_error(test_user):
    ran = run_cli("run", "--net", "svc", "host", "true", user=test_user)
    assert ran.returncode == 125 and "need root in this version" in ran.stderr and "Traceback" not in ran.stderr


def test_private_networks_per_test_as_an_unprivileged_user(test_user):
    """The web/token suite, rootless: each test's "svc" is its own network,
    its bridge held by a process of the user's own (runtime/netholder.py)."""
    ran, home = inner_session_as(test_user, "network-project", "test_web.py", (
        "import os, socket, urllib.request\n"
        "import pytest\n"
        "from pytest_hermetic import hermetic\n\n"
        "@pytest.mark.parametrize('n', range(4))\n"
        "@hermetic(net='svc')\n"
        "def test_own_token(containers, n):\n"
        "    token = f'token-{n}-{os.urandom(4).hex()}'\n"
        "    web = containers.run('host', ['sh', '-c', f'cd /srv; echo {token} > token; exec python3 -m http.server 8000'],\n"
        "                         name='web', net='svc')\n"
        "    web.wait_for_port(8000)\n"
        "    assert urllib.request.urlopen('http://web:8000/token', timeout=5).read().decode().strip() == token\n"
        "    print('TOKEN', n, token, os.getuid())\n\n"
        "@hermetic\n"
        "def test_loopback_only(containers):\n"
        "    containers.run('host', ['sleep', '30'], name='web', net='svc')\n"
        "    with pytest.raises(OSError):\n"
        "        socket.getaddrinfo('web', 8000)\n"), "-rA", "-n", "2")
    assert "5 passed" in ran.stdout, ran.stdout + ran.stderr
    tokens = [line.split() for line in ran.stdout.splitlines() if line.startswith("TOKEN ")]
    assert len({t[2] for t in tokens}) == 4 and {t[3] for t in tokens} == {"0"}  # root inside, four networks
    private = os.path.join(home, "state", "networks", "private")
    assert not os.path.isdir(private) or os.listdir(private) == []  # every network and its holder gone
