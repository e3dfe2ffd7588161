"""Each namespace, checked from inside a real container (as root)."""

import os
import socket
import subprocess

from conftest import run_cli


def sh(script: str, *options: str, image: str = "host"):
    return run_cli("run", *options, image, "sh", "-c", script)


def test_pid_namespace_pid1_and_only_own_processes():
    ran = sh("echo $$; ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '")
    assert ran.returncode == 0, ran.stderr
    pid, procs = ran.stdout.splitlines()
    assert pid == "1"
    # PID 1 (sh), the pipeline's ls/grep/sort/tr: nothing from the host.
    assert all(int(p) < 20 for p in procs.split()), procs


def test_uts_namespace_hostname():
    ran = sh("hostname; cat /etc/hostname")
    inside, from_file = ran.stdout.split()
    assert inside != socket.gethostname()
    assert inside == from_file
    named = sh("hostname", "--hostname", "web-1")
    assert named.stdout.strip() == "web-1"


def test_network_namespace_has_only_loopback_and_it_is_up():
    ran = sh("ls /sys/class/net; cat /sys/class/net/lo/operstate; cat /proc/net/dev | tail -n +3 | cut -d: -f1")
    lines = ran.stdout.split()
    assert lines[0] == "lo" and lines[-1] == "lo" and len(lines) == 3, ran.stdout
    assert lines[1] in ("unknown", "up")


def test_loopback_works_inside():
    script = "python3 -c \"import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); c=socket.create_connection(s.getsockname()); print('ok')\""
    assert sh(script).stdout.strip() == "ok"


def test_ipc_namespace_hides_sysv_shm():
    before = subprocess.run(["ipcs", "-m"], capture_output=True, text=True).stdout
    ran = sh("ipcmk -M 4096 >/dev/null && ipcs -m | grep -c 0x")
    assert ran.stdout.strip() == "1", ran.stdout + ran.stderr
    after = subprocess.run(["ipcs", "-m"], capture_output=True, text=True).stdout
    assert before == after


def test_mount_namespace_hides_mounts(tmp_path):
    def host_tmp_mounts() -> list[str]:
        # (Only /tmp's: other tests, under xdist, mount and unmount the
        # store's shared layer images meanwhile.)
        with open("/proc/self/mountinfo") as f:
            return [line for line in f if line.split()[4] == "/tmp"]

    before = host_tmp_mounts()
    ran = sh("mount -t tmpfs none /tmp && grep -c ' /tmp ' /proc/self/mountinfo", "--privileged")
    assert ran.returncode == 0, ran.stderr
    assert int(ran.stdout) >= 1  # the container sees its mount...
    assert host_tmp_mounts() == before  # ...the host does not


def test_cgroup_namespace_root_is_slash():
    ran = sh("cat /proc/self/cgroup")
    for line in ran.stdout.splitlines():
        assert line.rsplit(":", 1)[1] == "/", ran.stdout


def test_capabilities_reduced_and_no_new_privs():
    ran = sh("grep -E '^(CapBnd|CapEff|NoNewPrivs)' /proc/self/status")
    fields = dict(line.split(":\t") for line in ran.stdout.splitlines())
    assert fields["CapBnd"] == fields["CapEff"] == "00000000a80425fb"  # Docker's default set
    assert fields["NoNewPrivs"] == "1"
    privileged = sh("grep CapEff /proc/self/status", "--privileged")
    assert privileged.stdout.split()[1] != "00000000a80425fb"


def test_cannot_mount_or_reach_devices_without_privilege():
    # Each check says its own result, so one refusal cannot stand for another.
    ran = sh("mount -t tmpfs none /mnt 2>/dev/null && echo mounted || echo mount-refused; "
             "mknod /tmp/disk b 8 0 && (head -c1 /tmp/disk >/dev/null 2>&1 && echo disk-read || echo disk-refused); "
             "ls /dev | tr '\\n' ' '")
    lines = ran.stdout.splitlines()
    assert lines[0] == "mount-refused"
    assert lines[1] == "disk-refused"  # mknod works (CAP_MKNOD), but every mount is nodev
    devices = set(lines[2].split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd"} <= devices
    assert not devices & {"vda", "sda", "mem", "kmsg"}


def test_masked_and_readonly_paths():
    masked = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug") if os.path.exists(p)]
    assert masked, "none of the masked files exists on this kernel"
    # Masked files are /dev/null bound over them: a character device, empty.
    script = "; ".join(f"echo {p}=$(stat -c %t:%T {p})=$(wc -c < {p})" for p in masked)
    script += "; echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo proc-sys-ro; touch /sys/x 2>/dev/null || echo sys-ro"
    out = sh(script).stdout
    for path in masked:
        assert f"{path}=1:3=0" in out, out
    assert "proc-sys-ro" in out and "sys-ro" in out


def test_only_standard_fds_reach_the_command():
    extra = os.open("/etc/hostname", os.O_RDONLY)  # inheritable=False by default; make one inheritable
    os.set_inheritable(extra, True)
    try:
        ran = sh("ls /proc/self/fd | tr '\\n' ' '")
    finally:
        os.close(extra)
    assert ran.stdout.split() == ["0", "1", "2", "3"]  # 3 is ls's own directory handle


def test_dev_pts_and_shm_work():
    ran = sh("python3 -c 'import os, pty; m, s = pty.openpty(); print(os.ttyname(s))'; echo x > /dev/shm/y && cat /dev/shm/y")
    assert ran.stdout.split() == ["/dev/pts/0", "x"], ran.stdout + ran.stderr


def test_sigpipe_has_its_default_action():
    # Python ignores SIGPIPE; exec would pass that on unless undone.
    ran = sh("yes | head -n 1; grep SigIgn /proc/self/status")
    assert ran.stdout.split()[0] == "y"
    assert ran.stdout.split()[-1] == "0000000000000000"
