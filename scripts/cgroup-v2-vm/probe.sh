#!/bin/sh
# Checks, inside the VM, the kernel facts the engine's design depends on:
# overlayfs over the 9p share, the cgroup v2 interface files of a child of
# $HERMETIC_CGROUP_PARENT and what they do, and the host's interpreters.
#
#   python3 scripts/cgroup-v2-vm/run.py [--cache MODE] -- sh scripts/cgroup-v2-vm/probe.sh [SECTION...]
#
# SECTIONs: overlay, cgroup, python (default: all three).
# Prints one "PROBE name: ok|FAIL ..." line per check; exits 0 either way
# (it reports, it does not judge). Only touches tmpfs places and cgroups it
# creates under $HERMETIC_CGROUP_PARENT, and removes them.

say() { echo "PROBE $*"; }

grep ' / ' /proc/mounts | sed 's/^/PROBE root-mount: /'

try_overlay() {  # name lowerdir file-in-lower [extra options]
    name=$1 lower=$2 f=$3 extra=$4
    base=$(mktemp -d /tmp/ovl.XXXXXX)
    mkdir "$base/u" "$base/w" "$base/m"
    sum=$(md5sum < "$lower/$f")
    dmesg -C 2>/dev/null
    if mount -t overlay overlay -o "lowerdir=$lower,upperdir=$base/u,workdir=$base/w$extra" "$base/m" 2>"$base/err"; then
        # Read through, create, copy up a regular file of the lower layer,
        # delete it (a whiteout), and check the lower side is unchanged.
        r=ok
        ls "$base/m" >/dev/null || r="FAIL readdir"
        echo new > "$base/m/hvm-new-file" || r="FAIL create"
        echo x >> "$base/m/$f" || r="FAIL copy-up $f"
        [ -f "$base/u/$f" ] || r="$r (no copy-up of $f)"
        rm "$base/m/$f" || r="FAIL unlink $f"
        [ -e "$base/m/$f" ] && r="FAIL $f still there"
        [ -c "$base/u/$f" ] || r="$r (no whiteout for $f)"
        [ "$(md5sum < "$lower/$f")" = "$sum" ] || r="FAIL lower changed"
        say "overlay $name: $r ($(grep " $base/m " /proc/mounts | cut -d' ' -f4))"
        umount "$base/m"
    else
        say "overlay $name: FAIL mount: $(cat "$base/err")"
    fi
    dmesg 2>/dev/null | grep -iE 'overlay|9p' | sed "s/^/PROBE overlay $name dmesg: /"
    rm -rf "$base"
}

# Each check in a cgroup of its own, so the counters are its own.
in_cg() {  # cgroup command...: run command as a member of cgroup
    cg=$1; shift
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" "$@"
}

# --- overlayfs with a lower layer on the 9p share -------------------------
section_overlay() {
    try_overlay usr /usr lib/os-release
    try_overlay root / etc/passwd
    try_overlay usr-userxattr /usr lib/os-release ",userxattr"
    # The engine's rootless path: overlay inside a user namespace (the upper
    # must be a tmpfs of that namespace; userxattr is required there).
    dmesg -C 2>/dev/null
    out=$(unshare --user --map-root-user --mount sh -c '
        b=$(mktemp -d /tmp/ovlu.XXXXXX) && mount -t tmpfs tmpfs $b && mkdir $b/u $b/w $b/m &&
        mount -t overlay overlay -o lowerdir=/usr,upperdir=$b/u,workdir=$b/w,userxattr $b/m &&
        ls $b/m/bin >/dev/null && echo x >> $b/m/lib/os-release && rm $b/m/lib/os-release &&
        [ ! -e $b/m/lib/os-release ] && echo ok' 2>&1 | tr '\n' ' ')
    say "overlay usr in userns (userxattr): $out"
    dmesg 2>/dev/null | grep -iE 'overlay|9p' | sed 's/^/PROBE overlay userns dmesg: /'
    dmesg -C 2>/dev/null
    out=$(unshare --user --map-root-user --mount sh -c '
        b=$(mktemp -d /tmp/ovlu.XXXXXX) && mount -t tmpfs tmpfs $b && mkdir $b/u $b/w $b/m &&
        mount -t overlay overlay -o lowerdir=/,upperdir=$b/u,workdir=$b/w,userxattr $b/m &&
        ls $b/m/etc >/dev/null && echo ok' 2>&1 | tr '\n' ' ')
    say "overlay root in userns (userxattr): $out"
    dmesg 2>/dev/null | grep -iE 'overlay|9p' | sed 's/^/PROBE overlay userns root dmesg: /'
}

# --- cgroup v2 under the delegated parent ---------------------------------
section_cgroup() {
    P=/sys/fs/cgroup${HERMETIC_CGROUP_PARENT:?}
    say "cgroup root controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
    say "cgroup parent subtree_control: $(cat "$P/cgroup.subtree_control")"
    C=$P/probe-$$
    mkdir "$C"
    for f in memory.peak memory.events cgroup.kill pids.max cpu.max memory.max \
             memory.swap.max memory.oom.group cpu.stat memory.current pids.current \
             pids.events cgroup.freeze io.max; do
        if [ -e "$C/$f" ]; then say "cgroup file $f: ok"; else say "cgroup file $f: FAIL missing"; fi
    done
    rmdir "$C"

    # OOM kill counted in memory.events, peak in memory.peak.
    C=$P/probe-oom-$$; mkdir "$C"
    echo 32M > "$C/memory.max"; echo 0 > "$C/memory.swap.max"
    in_cg "$C" /usr/bin/python3 -c 'b = bytearray(256 << 20)' >/dev/null 2>&1
    say "oom (memory.max=32M, 256M wanted): exit=$? $(grep oom_kill "$C/memory.events" | tr '\n' ' ') memory.peak=$(cat "$C/memory.peak")"
    rmdir "$C"

    # pids.max refuses forks beyond the limit, counted in pids.events.
    C=$P/probe-pids-$$; mkdir "$C"
    echo 5 > "$C/pids.max"
    out=$(in_cg "$C" sh -c 'for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait' 2>&1 | head -n 1)
    say "pids.max=5, 8 forks: pids.events $(cat "$C/pids.events"); ${out:-no error}"
    # The shell died on the failed fork; its sleeps live on a moment (EBUSY).
    for i in 1 2 3 4 5 6 7 8 9 10; do rmdir "$C" 2>/dev/null && break; sleep 0.5; done

    # cpu.max throttles, cpu.stat counts it.
    C=$P/probe-cpu-$$; mkdir "$C"
    echo "10000 100000" > "$C/cpu.max"
    in_cg "$C" timeout 2 sh -c 'while :; do :; done'
    say "cpu.max 10% for 2 s of busy loop: $(grep -E 'usage_usec|nr_periods|nr_throttled' "$C/cpu.stat" | tr '\n' ' ')"
    rmdir "$C"

    # cgroup.kill ends every process in it at once.
    C=$P/probe-kill-$$; mkdir "$C"
    in_cg "$C" sh -c 'sleep 100 & sleep 100 & wait' &
    sleep 1
    before=$(wc -l < "$C/cgroup.procs")
    echo 1 > "$C/cgroup.kill"
    wait $! 2>/dev/null
    say "cgroup.kill: $before procs, shell exited $? (137 = SIGKILL), procs left: $(wc -l < "$C/cgroup.procs")"
    sleep 0.2
    rmdir "$C" && say "rmdir after kill: ok"
}

# --- the host's interpreters, read over 9p --------------------------------
section_python() {
    for py in /usr/bin/python3 /root/.pyenv/versions/*/bin/python3 "$(command -v python3)"; do
        [ -x "$py" ] || continue
        start=$(cut -d' ' -f1 /proc/uptime)
        v=$("$py" -c 'import sys, ssl, sqlite3; print(sys.version.split()[0])' 2>&1 | tail -n 1)
        end=$(cut -d' ' -f1 /proc/uptime)
        say "python $py: $v ($(awk "BEGIN { print $end - $start }") s)"
    done
}

[ $# -gt 0 ] || set -- overlay cgroup python
for section in "$@"; do "section_$section"; done
exit 0
