/* bench/setup_floor.c: the floor of one hermetic container in C.
 *
 * The system calls that `Container(Spec.build("host", ["true"])).run()` and
 * `.remove()` make, parent and child, as strace shows them on a hybrid
 * cgroup v1 host (2026-12-03, main 501340d): the state folder, four cgroups
 * (pids, freezer, memory, cpuacct) below the ones this process sits in, a
 * PID namespace, the child's mount, UTS, IPC and network namespaces,
 * loopback up, the scratch tmpfs with its device nodes, the init layer's
 * files, the overlay over `/`, /proc, /dev, /sys, /tmp, the masked and
 * read-only paths, pivot_root, a cgroup namespace, a new session and
 * keyring, the bounding set and capabilities of Docker's default, no new
 * privileges, the engine's own seccomp filter (read from FILTER), and the
 * exec of /usr/bin/true; then the cgroups' statistics and removal.
 *
 * It is not the engine: no checks of an image's paths, no volumes, no
 * errors worth a user's reading.  It answers one question (issue #16): how
 * fast the same work is with no Python in it, next to bwrap in the same
 * run.  bench/setup_floor.py builds and runs it.
 *
 * With --child it is the child's half alone, for a parent that made the
 * state folder, the cgroups and the PID namespace and spawned it in them
 * (setup_floor.py's Python parent: what a native child started with
 * posix_spawn, no fork of Python, would cost).
 *
 *     setup_floor STATE_ROOT FILTER
 *     setup_floor --child SCRATCH FILTER [HOSTNAME]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what) { perror(what); _exit(125); }
/* snprintf into an array, or stop: a path cut short would be another path */
#define FMT(buf, ...) do { if (snprintf(buf, sizeof buf, __VA_ARGS__) >= (int)sizeof buf) { errno = ENAMETOOLONG; die(#buf); } } while (0)
static void must(int r, const char *what) { if (r < 0) die(what); }

static void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    must(fd, path);
    if (write(fd, text, strlen(text)) < 0) die(path);
    close(fd);
}

static long read_long(const char *path) {
    char buf[256];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    return atol(buf);
}

static char cg[4][1100], home[4][1100];  /* the container's; this thread's own */  /* pids, freezer, memory, cpuacct: ours, below where this process sits */

static void cgroup_paths(const char *name) {
    static const char *ctl[4] = {"pids", "freezer", "memory", "cpuacct"};
    char line[1024], at[4][1024] = {{0}};
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) die("/proc/self/cgroup");
    while (fgets(line, sizeof line, f)) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c2 = 0;
        char *path = c2 + 1;
        path[strcspn(path, "\n")] = 0;
        for (int i = 0; i < 4; i++) {
            char *tok, *save, list[200];
            FMT(list, "%s", c1 + 1);
            for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
                if (!strcmp(tok, ctl[i])) FMT(at[i], "%s", strcmp(path, "/") ? path : "");
        }
    }
    fclose(f);
    for (int i = 0; i < 4; i++)
    {
        FMT(cg[i], "/sys/fs/cgroup/%s%s/%s", ctl[i], at[i], name);
        FMT(home[i], "/sys/fs/cgroup/%s%s", ctl[i], at[i]);
    }
}

static struct sock_fprog prog;
static char scratch[700];
static const char *hostname = "setup-floor";  /* --child's HOSTNAME: the engine's container's */

static void bind_null(const char *nodes, const char *target, int optional) {
    char src[700];
    FMT(src, "%s/null", nodes);
    if (mount(src, target, NULL, MS_BIND, NULL) < 0 && !(optional && errno == ENOENT)) die(target);
}

static void mask_dir(const char *target) {
    if (mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0") < 0 && errno != ENOENT)
        die(target);
}

static void ro(const char *target) {
    if (mount(target, target, NULL, MS_BIND | MS_REC, NULL) < 0) {
        if (errno == ENOENT) return;
        die(target);
    }
    must(mount(NULL, target, NULL, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_REMOUNT | MS_BIND, NULL), target);
}

static void child(void) {
    char path[1400], nodes[1200], merged[1200], opts[4000];
    prctl(PR_SET_PDEATHSIG, 9);
    must(unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET), "unshare");
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = {0};
    strcpy(ifr.ifr_name, "lo");
    must(ioctl(s, SIOCGIFFLAGS, &ifr), "lo");
    ifr.ifr_flags |= IFF_UP;
    must(ioctl(s, SIOCSIFFLAGS, &ifr), "lo up");
    close(s);
    must(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), "private");
    must(mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755"), "scratch");
    FMT(nodes, "%s/nodes", scratch);
    must(mkdir(nodes, 0700), "nodes");
    must(mount("tmpfs", nodes, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=700,size=4k,nr_inodes=16"), "nodes tmpfs");
    static const struct { const char *name; int maj, min; } dev[6] = {
        {"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};
    umask(0);
    for (int i = 0; i < 6; i++) {
        FMT(path, "%s/%s", nodes, dev[i].name);
        must(mknod(path, S_IFCHR | 0666, makedev(dev[i].maj, dev[i].min)), path);
    }
    umask(022);
    static const char *dirs[] = {"merged", "upper", "work", "init", "init/proc", "init/dev", "init/sys", "init/tmp"};
    for (unsigned i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        FMT(path, "%s/%s", scratch, dirs[i]);
        must(mkdir(path, 0755), path);
    }
    FMT(path, "%s/init/etc", scratch);
    must(mkdir(path, 0777), path);
    FMT(path, "%s/init/etc/hostname", scratch);
    char text[300];
    FMT(text, "%s\n", hostname);
    write_file(path, text);
    FMT(path, "%s/init/etc/hosts", scratch);
    FMT(text, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t%s\n", hostname);
    write_file(path, text);
    FMT(path, "%s/init/etc/resolv.conf", scratch);
    write_file(path, "# hermetic: no network (net=False), loopback only\n");
    FMT(merged, "%s/merged", scratch);
    FMT(opts, "lowerdir=%s/init:/,upperdir=%s/upper,workdir=%s/work,index=off,redirect_dir=off,metacopy=off",
             scratch, scratch, scratch);
    if (mount("overlay", merged, "overlay", MS_NODEV, opts) < 0) {
        FMT(opts, "lowerdir=%s/init:/,upperdir=%s/upper,workdir=%s/work", scratch, scratch, scratch);
        must(mount("overlay", merged, "overlay", MS_NODEV, opts), "overlay");
    }
    must(chdir(merged), "chdir merged");
    must(mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL), "proc");
    must(mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NODEV | MS_STRICTATIME, "mode=755,size=65536k"), "dev");
    for (int i = 0; i < 6; i++) {
        char target[64];
        FMT(target, "dev/%s", dev[i].name);
        FMT(path, "%s/%s", nodes, dev[i].name);
        must(mknod(target, S_IFREG | 0644, 0), target);
        must(mount(path, target, NULL, MS_BIND, NULL), target);
    }
    must(mkdir("dev/pts", 0777), "pts");
    must(mount("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"), "devpts");
    must(symlink("pts/ptmx", "dev/ptmx"), "ptmx");
    must(mkdir("dev/shm", 0777), "shm");
    must(mount("shm", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k"), "shm");
    must(mkdir("dev/mqueue", 0777), "mqueue");
    must(mount("mqueue", "dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL), "mqueue");
    symlink("/proc/self/fd", "dev/fd");
    symlink("/proc/self/fd/0", "dev/stdin");
    symlink("/proc/self/fd/1", "dev/stdout");
    symlink("/proc/self/fd/2", "dev/stderr");
    symlink("/proc/kcore", "dev/core");
    must(mount("sysfs", "sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL), "sys");
    must(mount("tmpfs", "tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"), "tmp");
    mask_dir("proc/acpi");
    mask_dir("proc/asound");
    bind_null(nodes, "proc/interrupts", 1);
    bind_null(nodes, "proc/kcore", 1);
    bind_null(nodes, "proc/keys", 1);
    bind_null(nodes, "proc/latency_stats", 1);
    bind_null(nodes, "proc/timer_list", 1);
    bind_null(nodes, "proc/timer_stats", 1);
    bind_null(nodes, "proc/sched_debug", 1);
    mask_dir("proc/scsi");
    mask_dir("sys/firmware");
    mask_dir("sys/devices/virtual/powercap");
    ro("proc/bus");
    ro("proc/fs");
    ro("proc/irq");
    ro("proc/sys");
    ro("proc/sysrq-trigger");
    must(sethostname(hostname, strlen(hostname)), "sethostname");
    must(syscall(SYS_pivot_root, ".", "."), "pivot_root");
    must(umount2(".", MNT_DETACH), "umount");
    must(chdir("/"), "chdir /");
    int null = open("/dev/null", O_RDWR | O_NOCTTY | O_CLOEXEC);
    dup2(null, 0);
    close(null);
    must(unshare(CLONE_NEWCGROUP), "cgroupns");
    setsid();
    syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, NULL);
    static const int keep[] = {0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31};
    for (int cap = 0; cap <= 40; cap++) {
        int kept = 0;
        for (unsigned i = 0; i < sizeof keep / sizeof *keep; i++) kept |= keep[i] == cap;
        if (!kept) prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
    }
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {{0}};
    for (unsigned i = 0; i < sizeof keep / sizeof *keep; i++) {
        data[0].effective |= 1u << keep[i];
        data[0].permitted |= 1u << keep[i];
    }
    must(syscall(SYS_capset, &hdr, data), "capset");
    must(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "nnp");
    must(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0), "seccomp");
    syscall(SYS_close_range, 3, ~0U, 4 /* CLOSE_RANGE_CLOEXEC */);
    char *argv[] = {"true", NULL}, *envp[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "HOSTNAME=setup-floor", NULL};
    execve("/usr/bin/true", argv, envp);
    die("execve");
}

static void load_filter(const char *file) {
    static struct sock_filter insns[4096];
    int ffd = open(file, O_RDONLY | O_CLOEXEC);
    must(ffd, file);
    ssize_t n = read(ffd, insns, sizeof insns);
    close(ffd);
    prog.len = n / sizeof *insns;
    prog.filter = insns;
}

int main(int argc, char **argv) {
    char id[64], state[600], path[900];
    if ((argc == 4 || argc == 5) && !strcmp(argv[1], "--child")) {
        FMT(scratch, "%s", argv[2]);
        if (argc == 5) hostname = argv[4];
        load_filter(argv[3]);
        child();
    }
    if (argc != 3) { fprintf(stderr, "usage: setup_floor STATE_ROOT FILTER | --child SCRATCH FILTER [HOSTNAME]\n"); return 2; }
    load_filter(argv[2]);
    FMT(id, "hermetic-floor-%d", getpid());  /* `hermetic gc` clears a killed one */
    FMT(state, "%s/%s", argv[1], id);
    must(mkdir(state, 0700), state);
    FMT(scratch, "%s/scratch", state);
    must(mkdir(scratch, 0755), scratch);
    cgroup_paths(id);
    for (int i = 0; i < 4; i++) must(mkdir(cg[i], 0777), cg[i]);
    FMT(path, "%s/pids.max", cg[0]);
    write_file(path, "max");
    /* Born in its cgroups, as the engine's ThreadRoute does it on v1: this
     * thread steps in ("0" to each `tasks` file: the thread alone, without
     * the rwsem a process's migration waits on), forks, and steps back. */
    for (int i = 0; i < 4; i++) {
        FMT(path, "%s/tasks", cg[i]);
        write_file(path, "0");
    }
    must(unshare(CLONE_NEWPID), "pidns");
    pid_t pid = fork();
    must(pid, "fork");
    if (pid == 0) child();
    for (int i = 0; i < 4; i++) {
        FMT(path, "%s/tasks", home[i]);
        write_file(path, "0");
    }
    int status;
    must(waitpid(pid, &status, 0), "wait");
    FMT(path, "%s/memory.max_usage_in_bytes", cg[2]);
    read_long(path);
    FMT(path, "%s/memory.oom_control", cg[2]);
    read_long(path);
    FMT(path, "%s/cpuacct.usage", cg[3]);
    read_long(path);
    FMT(path, "%s/pids.events", cg[0]);
    read_long(path);
    for (int i = 3; i >= 0; i--) must(rmdir(cg[i]), cg[i]);
    must(rmdir(scratch), "rm scratch");
    must(rmdir(state), "rm state");
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
