/* pytest_hermetic.runtime.clone_child: a command container's PID 1, in C.
 *
 * The Python side (native_child.py) works out every step the engine's Python
 * child (init.py, rootfs/, descriptors.py) would make for this container, as
 * a plan: a list of steps, each an operation with numbers and strings.
 * `start(plan, err_w)` runs it in a child made with
 * clone(CLONE_VM | CLONE_VFORK) on a stack of its own: no copy of the
 * (Python) parent's page tables, no interpreter in the child.  The calling
 * thread waits until the child has exec'd or ended (as a vfork does); the
 * GIL is let go meanwhile.  `start(plan, err_w, cgroup_fd)` (cgroup v2)
 * makes it with clone3(CLONE_INTO_CGROUP | CLONE_VFORK) instead: born in
 * its cgroup, so nobody moves it there (clone3 takes no function to run on
 * a new stack, so that child is a copy of the parent, as after a fork).
 *
 * The CLONE_VM child shares the parent's memory until its exec: it touches
 * only its own stack and the plan (parsed here before the clone, freed
 * after), calls no allocator and takes no lock.  Every signal is blocked from before the
 * clone until just before the child's exec (its dispositions reset first),
 * so no handler of the parent's ever runs in it.
 *
 * A step that fails writes one report on `err_w` (close-on-exec; a clean
 * exec closes it with nothing written): REPORT_MAGIC, the step's index, its
 * errno and a detail number; then the child exits (127 or 126 for the exec,
 * else 125).  native_child.py words it as the Python child's line.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Raised whenever the plan's format or an operation's meaning changes:
 * native_child.py uses an extension built from another version of this
 * file not at all (the Python child runs instead). */
#define ABI 2

enum op {
    OP_PRCTL = 1,        /* a: option, b: arg2 */
    OP_UNSHARE,          /* a: flags */
    OP_LOOPBACK_UP,
    OP_MOUNT,            /* s0 source, s1 target, s2 fstype, s3 data; a: flags */
    OP_MASK,             /* s0 target, s1 the null node; a: 1 if a folder on every kernel */
    OP_READ_ONLY,        /* s0 target: a read-only, nosuid, nodev, noexec bind of itself */
    OP_MKDIR,            /* s0 path; a: mode */
    OP_MKNOD,            /* s0 path; a: mode, b: device */
    OP_CHOWN,            /* s0 path; a: uid, b: gid */
    OP_UMASK_SET,        /* a: mask (the one before is kept for OP_UMASK_BACK) */
    OP_UMASK_BACK,
    OP_SYMLINK,          /* s0 target, s1 link */
    OP_WRITE_FILE,       /* s0 path, s1 content (a: its length) */
    OP_CHDIR,            /* s0 path */
    OP_SETHOSTNAME,      /* s0 name */
    OP_PIVOT_ROOT,       /* pivot_root(".", ".") */
    OP_UMOUNT2,          /* s0 target; a: flags */
    OP_OPEN_ON,          /* s0 path; a: open flags, b: the fd to put it on, c: inheritable */
    OP_SETSID,
    OP_SESSION_KEYRING,  /* ENOSYS, EPERM: no keyrings here (or the caller's filter refuses): fine */
    OP_CAPBSET_DROP,     /* a: capabilities to drop (a bit each), b: the highest this kernel has */
    OP_AMBIENT_CLEAR,    /* (its failure is no error) */
    OP_SETGROUPS_NONE,
    OP_SETRESGID,        /* a: gid */
    OP_SETRESUID,        /* a: uid */
    OP_CAPSET,           /* a: effective and permitted (inheritable empty) */
    OP_SECCOMP,          /* s0: the program (a: its length in bytes) */
    OP_WORKDIR,          /* s0: chdir, made first (mkdir -p, 0755) if missing; detail 1: it could not be made */
    OP_SIGNALS_DEFAULT,  /* every disposition back to the default */
    OP_DUP2,             /* a: from, b: to; c: 0 close-on-exec, else inheritable */
    OP_CLOEXEC_ABOVE_2,  /* close_range(3, ~0, CLOSE_RANGE_CLOEXEC) */
    OP_EXEC,             /* strings: a candidates, then b argv, then c environment; mask cleared first */
    OP_CLOSE,            /* a: fd (not open: fine) */
    OP_MOUNT_IF_DIR,     /* as OP_MOUNT, where s1 is a folder (else nothing) */
    OP_SETNS,            /* a: fd, b: its kind (CLONE_NEW*) */
    OP_REOPEN,           /* s0 path; a: its flags, b: fd; c: 1 inheritable, 2 a read-only file (else a terminal
                            or FIFO): reopened on a read-only mount of its own, or noted as failed (OPEN_ON c&2) */
    OP_LAST
};

#define REPORT_MAGIC 0x31434e48u /* "HNC1" */
#define MAX_STRINGS_FIXED 4

struct step {
    int32_t op;
    int64_t a, b, c;
    uint32_t nstr;
    const char **s;      /* nstr strings, NULL where the plan gave none; then a NULL */
    uint32_t *len;       /* their lengths */
};

struct plan {
    uint32_t count;
    struct step *steps;
    int err_w;
    char *blob;          /* a copy of the plan's bytes: the strings point into it */
};

/* ---- the child: no allocation, no lock, nothing of Python's ---- */

static int report(const struct plan *plan, uint32_t index, int err, int32_t detail, int code) {
    uint32_t message[4] = {REPORT_MAGIC, index, (uint32_t)err, (uint32_t)detail};
    ssize_t ignored = write(plan->err_w, message, sizeof message);
    (void)ignored;
    _exit(code);
}

/* What the child keeps between steps (on its own stack). */
struct child_state {
    mode_t umask_before;
    int failed[8];      /* descriptors OP_REOPEN could not reopen: /dev/null goes there (OP_OPEN_ON, c & 2) */
    int nfailed;
};

static int reopen(const struct step *st);

static int run_step(const struct plan *plan, uint32_t index, struct child_state *state) {
    mode_t *umask_before = &state->umask_before;
    const struct step *st = &plan->steps[index];
    const char *const *s = st->s;
    switch (st->op) {
    case OP_PRCTL:
        return prctl((int)st->a, (unsigned long)st->b, 0, 0, 0) < 0 ? -1 : 0;
    case OP_UNSHARE:
        return unshare((int)st->a);
    case OP_LOOPBACK_UP: {
        int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (sock < 0) return -1;
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        memcpy(ifr.ifr_name, "lo", 3);
        int r = ioctl(sock, SIOCGIFFLAGS, &ifr);
        if (r == 0) {
            ifr.ifr_flags |= IFF_UP;
            r = ioctl(sock, SIOCSIFFLAGS, &ifr);
        }
        int saved = errno;
        close(sock);
        errno = saved;
        return r;
    }
    case OP_MOUNT:
        return mount(s[0], s[1], s[2], (unsigned long)st->a, s[3]) < 0 ? -1 : 0;
    case OP_MASK: {
        /* As kernelfs.mask_paths: tried as the kind the path is on every
         * kernel; ENOENT: this kernel lacks it; another failure: looked at,
         * and mounted as what it is (detail 1 a folder, 2 a file). */
        static const char empty[] = "size=0";
        int folder = st->a != 0;
        unsigned long dir_flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
        int r = folder ? mount("tmpfs", s[0], "tmpfs", dir_flags, empty) : mount(s[1], s[0], NULL, MS_BIND, NULL);
        if (r == 0 || errno == ENOENT) return 0;
        struct stat info;
        if (lstat(s[0], &info) < 0) return 0;
        folder = S_ISDIR(info.st_mode);
        r = folder ? mount("tmpfs", s[0], "tmpfs", dir_flags, empty) : mount(s[1], s[0], NULL, MS_BIND, NULL);
        if (r < 0) report(plan, index, errno, folder ? 1 : 2, 125);
        return 0;
    }
    case OP_READ_ONLY:
        if (mount(s[0], s[0], NULL, MS_BIND | MS_REC, NULL) < 0)
            return errno == ENOENT ? 0 : -1;  /* ENOENT: not in this kernel's /proc */
        if (mount(NULL, s[0], NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
            report(plan, index, errno, 1, 125);
        return 0;
    case OP_MKDIR:
        return mkdir(s[0], (mode_t)st->a);
    case OP_MKNOD:
        return mknod(s[0], (mode_t)st->a, (dev_t)st->b);
    case OP_CHOWN:
        return chown(s[0], (uid_t)st->a, (gid_t)st->b);
    case OP_UMASK_SET:
        *umask_before = umask((mode_t)st->a);
        return 0;
    case OP_UMASK_BACK:
        umask(*umask_before);
        return 0;
    case OP_SYMLINK:
        return symlink(s[0], s[1]);
    case OP_WRITE_FILE: {
        int fd = open(s[0], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) return -1;
        size_t done = 0, size = (size_t)st->a;
        while (done < size) {
            ssize_t n = write(fd, s[1] + done, size - done);
            if (n < 0) {
                if (errno == EINTR) continue;
                int saved = errno;
                close(fd);
                report(plan, index, saved, 1, 125);
            }
            done += (size_t)n;
        }
        close(fd);
        return 0;
    }
    case OP_CHDIR:
        return chdir(s[0]);
    case OP_SETHOSTNAME:
        return sethostname(s[0], st->len[0]);
    case OP_PIVOT_ROOT:
        return syscall(SYS_pivot_root, ".", ".") < 0 ? -1 : 0;
    case OP_UMOUNT2:
        return umount2(s[0], (int)st->a);
    case OP_REOPEN:
        if (reopen(st) < 0 && state->nfailed < 8) state->failed[state->nfailed++] = (int)st->b;
        return 0;
    case OP_OPEN_ON: {
        if (st->c & 2) {  /* only where OP_REOPEN failed */
            int failed = 0;
            for (int i = 0; i < state->nfailed; i++) failed |= state->failed[i] == (int)st->b;
            if (!failed) return 0;
        }
        int fd = open(s[0], (int)st->a);
        if (fd < 0) return -1;
        int r = st->c & 1 ? dup2(fd, (int)st->b) : dup3(fd, (int)st->b, O_CLOEXEC);
        if (r < 0) report(plan, index, errno, 1, 125);
        close(fd);
        return 0;
    }
    case OP_SETSID:
        return setsid() < 0 ? -1 : 0;
    case OP_SESSION_KEYRING:
        if (syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, 0L) < 0 && errno != ENOSYS && errno != EPERM)
            return -1;
        return 0;
    case OP_CAPBSET_DROP:
        for (int cap = 0; cap <= st->b && cap < 64; cap++)
            if (((uint64_t)st->a >> cap) & 1)
                if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) report(plan, index, errno, cap, 125);
        return 0;
    case OP_AMBIENT_CLEAR:
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        return 0;
    case OP_SETGROUPS_NONE:
        return (int)syscall(SYS_setgroups, 0, NULL);
    case OP_SETRESGID:
        return (int)syscall(SYS_setresgid, (gid_t)st->a, (gid_t)st->a, (gid_t)st->a);
    case OP_SETRESUID:
        return (int)syscall(SYS_setresuid, (uid_t)st->a, (uid_t)st->a, (uid_t)st->a);
    case OP_CAPSET: {
        struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct data[2];
        memset(data, 0, sizeof data);
        uint64_t keep = (uint64_t)st->a;
        data[0].effective = data[0].permitted = (uint32_t)keep;
        data[1].effective = data[1].permitted = (uint32_t)(keep >> 32);
        return (int)syscall(SYS_capset, &header, data);
    }
    case OP_SECCOMP: {
        struct sock_fprog program = {(unsigned short)(st->a / sizeof(struct sock_filter)),
                                     (struct sock_filter *)(uintptr_t)s[0]};
        return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0) < 0 ? -1 : 0;
    }
    case OP_WORKDIR: {
        if (chdir(s[0]) == 0) return 0;
        if (errno != ENOENT) return -1;
        /* mkdir -p in place, on a copy of the path on this stack */
        char path[4096];
        if (st->len[0] >= sizeof path) report(plan, index, ENAMETOOLONG, 1, 125);
        memcpy(path, s[0], st->len[0] + 1);
        for (char *p = path + 1;; p++) {
            if (*p == '/' || *p == 0) {
                char was = *p;
                *p = 0;
                if (mkdir(path, 0755) < 0 && errno != EEXIST) report(plan, index, errno, 1, 125);
                *p = was;
                if (!was) break;
            }
        }
        if (chdir(s[0]) < 0) report(plan, index, errno, 1, 125);
        return 0;
    }
    case OP_SIGNALS_DEFAULT: {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        for (int sig = 1; sig < _NSIG; sig++)
            if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, NULL);  /* (32, 33: glibc's own: EINVAL) */
        return 0;
    }
    case OP_DUP2:
        if (st->a == st->b) return 0;
        return (st->c ? dup2((int)st->a, (int)st->b) : dup3((int)st->a, (int)st->b, O_CLOEXEC)) < 0 ? -1 : 0;
    case OP_CLOSE:
        close((int)st->a);
        return 0;
    case OP_SETNS:
        return setns((int)st->a, (int)st->b);
    case OP_MOUNT_IF_DIR: {
        struct stat info;
        if (stat(s[1], &info) < 0 || !S_ISDIR(info.st_mode)) return 0;
        return mount(s[0], s[1], s[2], (unsigned long)st->a, s[3]) < 0 ? -1 : 0;
    }
    case OP_CLOEXEC_ABOVE_2:
        return syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */) < 0 ? -1 : 0;
    case OP_EXEC: {
        /* As init.execvpe: each candidate in turn; the first error other
         * than "not there" is the one said, else the last. */
        uint32_t candidates = (uint32_t)st->a;
        char *const *argv = (char *const *)(s + candidates);
        char *const *envp = (char *const *)(s + candidates + st->b + 1);
        int first = 0, last = ENOENT;
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (uint32_t i = 0; i < candidates; i++) {
            execve(s[i], argv, envp);
            last = errno;
            if (!first && last != ENOENT && last != ENOTDIR) first = last;
        }
        int err = first ? first : last;
        report(plan, index, err, 0, err == ENOENT ? 127 : 126);
        return 0;
    }
    }
    errno = EINVAL;
    return -1;
}

/* "/proc/self/fd/N" into `out` (no snprintf in the child: see the top). */
static void fd_path(char out[32], int fd) {
    static const char head[] = "/proc/self/fd/";
    char digits[12];
    int n = 0;
    memcpy(out, head, sizeof head - 1);
    do digits[n++] = (char)('0' + fd % 10); while ((fd /= 10) > 0);
    for (int i = 0; i < n; i++) out[sizeof head - 1 + i] = digits[n - 1 - i];
    out[sizeof head - 1 + n] = 0;
}

#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif

/* descriptors.py's _on_read_only_mount / _reopen_node: `path` opened again
 * on a detached read-only mount of its own, and the same inode; -1 if not. */
static int on_read_only_mount(const char *path, int fd, int open_flags, uint64_t attrs) {
    int tree = (int)syscall(SYS_open_tree, AT_FDCWD, path, 1 /* OPEN_TREE_CLONE */ | O_CLOEXEC);
    if (tree < 0) return -1;
    uint64_t attr[4] = {attrs, 0, 0, 0};  /* struct mount_attr: set, clear, propagation, userns_fd */
    int reopened = -1;
    if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, attr, sizeof attr) == 0) {
        char link[32];
        fd_path(link, tree);
        reopened = open(link, open_flags);
    }
    close(tree);
    struct stat now, then;
    if (reopened >= 0 && (fstat(reopened, &now) < 0 || fstat(fd, &then) < 0 || now.st_dev != then.st_dev
                          || now.st_ino != then.st_ino)) {  /* another file by now at that path */
        close(reopened);
        reopened = -1;
    }
    return reopened;
}

#define COPY_LIMIT (16 << 20)  /* descriptors.COPY_LIMIT */

/* descriptors.py's _sealed_copy: a read-only fd on a sealed memfd holding
 * the file's content (read with pread), or -1 (too big, or no memfd). */
static int sealed_copy(int fd) {
    int copy = (int)syscall(SYS_memfd_create, "hermetic-read-only", 1 /* MFD_CLOEXEC */ | 2 /* MFD_ALLOW_SEALING */);
    if (copy < 0) return -1;
    char buf[16384];
    off_t done = 0;
    int result = -1;
    for (;;) {
        ssize_t n = pread(fd, buf, sizeof buf, done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) goto out;
        if (n == 0) break;
        done += n;
        if (done > COPY_LIMIT) goto out;
        for (ssize_t put = 0; put < n;) {
            ssize_t w = write(copy, buf + put, (size_t)(n - put));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) goto out;
            put += w;
        }
    }
    if (fcntl(copy, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) < 0) goto out;
    char link[32];
    fd_path(link, copy);
    result = open(link, O_RDONLY | O_CLOEXEC);
out:
    close(copy);
    return result;
}

static int reopen(const struct step *st) {
    int fd = (int)st->b, flags = (int)st->a, reopened;
    off_t offset = 0;
    if (st->c & 2) {  /* a regular file open read-only: same file, same offset, on a read-only mount or a copy */
        offset = lseek(fd, 0, SEEK_CUR);
        if (offset < 0) offset = 0;
        reopened = on_read_only_mount(st->s[0], fd, O_RDONLY | O_CLOEXEC | O_NOCTTY | (flags & O_NONBLOCK),
                                      0x1 | 0x2 | 0x4 | 0x8 /* MOUNT_ATTR_RDONLY | NOSUID | NODEV | NOEXEC */);
        if (reopened < 0) reopened = sealed_copy(fd);
        if (reopened < 0) return -1;
        if (lseek(reopened, offset, SEEK_SET) < 0) goto fail;
    } else {  /* a terminal or FIFO: non-blocking (a FIFO's open would wait for its other end), then its flags */
        reopened = on_read_only_mount(st->s[0], fd, (flags & O_ACCMODE) | O_NOCTTY | O_NONBLOCK | O_CLOEXEC,
                                      0x1 | 0x2 | 0x8 /* MOUNT_ATTR_RDONLY | NOSUID | NOEXEC */);
        if (reopened < 0) return -1;
        if (fcntl(reopened, F_SETFL, flags) < 0) goto fail;
    }
    if ((st->c & 1 ? dup2(reopened, fd) : dup3(reopened, fd, O_CLOEXEC)) < 0) goto fail;
    close(reopened);
    return 0;
fail:
    close(reopened);
    return -1;
}

static int child_main(void *arg) {
    const struct plan *plan = arg;
    struct child_state state;
    memset(&state, 0, sizeof state);
    state.umask_before = 022;
    for (uint32_t i = 0; i < plan->count; i++)
        if (run_step(plan, i, &state) < 0) report(plan, i, errno, 0, 125);
    report(plan, plan->count, 0, 0, 125);  /* a plan that does not end in an exec */
    return 125;
}

/* ---- the parent: parse, clone, wait for the exec ---- */

static void free_plan(struct plan *plan) {
    if (plan->steps) {
        for (uint32_t i = 0; i < plan->count; i++) {
            PyMem_Free(plan->steps[i].s);
            PyMem_Free(plan->steps[i].len);
        }
    }
    PyMem_Free(plan->steps);
    PyMem_Free(plan->blob);
}

/* The plan's bytes: u32 count; then each step: i32 op, i64 a, b, c, u32
 * nstr, and nstr strings, each i32 length (-1: none) and that many bytes
 * and a NUL. */
static int parse(const char *data, Py_ssize_t size, struct plan *plan) {
    Py_ssize_t at = 0;
#define TAKE(dst) do { if (at + (Py_ssize_t)sizeof(dst) > size) goto bad; memcpy(&(dst), plan->blob + at, sizeof(dst)); at += sizeof(dst); } while (0)
    plan->blob = PyMem_Malloc(size ? (size_t)size : 1);
    if (!plan->blob) { PyErr_NoMemory(); return -1; }
    memcpy(plan->blob, data, (size_t)size);
    uint32_t count;
    TAKE(count);
    if (count > 100000) goto bad;
    plan->steps = PyMem_Calloc(count ? count : 1, sizeof *plan->steps);
    if (!plan->steps) { PyErr_NoMemory(); return -1; }
    plan->count = count;
    for (uint32_t i = 0; i < count; i++) {
        struct step *st = &plan->steps[i];
        TAKE(st->op);
        TAKE(st->a);
        TAKE(st->b);
        TAKE(st->c);
        TAKE(st->nstr);
        if (st->op <= 0 || st->op >= OP_LAST || st->nstr > 1000000) goto bad;
        st->s = PyMem_Calloc(st->nstr + 1 < MAX_STRINGS_FIXED ? MAX_STRINGS_FIXED : st->nstr + 1, sizeof *st->s);
        st->len = PyMem_Calloc(st->nstr + 1 < MAX_STRINGS_FIXED ? MAX_STRINGS_FIXED : st->nstr + 1, sizeof *st->len);
        if (!st->s || !st->len) { PyErr_NoMemory(); return -1; }
        for (uint32_t j = 0; j < st->nstr; j++) {
            int32_t length;
            TAKE(length);
            if (length < 0) continue;
            if (at + length + 1 > size || plan->blob[at + length] != 0) goto bad;
            st->s[j] = plan->blob + at;
            st->len[j] = (uint32_t)length;
            at += length + 1;
        }
        if (st->op == OP_EXEC && (st->a < 1 || st->b < 1 || st->c < 0 || (uint64_t)st->a + st->b + st->c + 1 != st->nstr))
            goto bad;
        if (st->op == OP_EXEC) {
            /* argv and the environment each end in a NULL: the one string
             * slot between them (length -1) and the array's own last one */
            if (st->s[st->a + st->b] != NULL) goto bad;
            for (int64_t j = 0; j < st->a + st->b + st->c + 1; j++)
                if (j != st->a + st->b && st->s[j] == NULL) goto bad;
        }
    }
    if (at != size) goto bad;
    return 0;
bad:
    PyErr_SetString(PyExc_ValueError, "a native child's plan that does not parse");
    return -1;
#undef TAKE
}

#define STACK_SIZE (256 * 1024)

/* clone3's arguments (linux/sched.h's struct clone_args, up to `cgroup`:
 * CLONE_ARGS_SIZE_VER2), spelled out: that header and glibc's sched.h clash. */
struct clone3_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};
#define HERMETIC_CLONE_INTO_CGROUP 0x200000000ULL
#ifndef SYS_clone3
#define SYS_clone3 435
#endif

static pid_t clone_into_cgroup(struct plan *plan, int cgroup_fd) {
    struct clone3_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_VFORK | HERMETIC_CLONE_INTO_CGROUP;
    args.exit_signal = SIGCHLD;
    args.cgroup = (uint64_t)cgroup_fd;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) child_main(plan);  /* (a copy of this process: never returns) */
    return (pid_t)pid;
}

static PyObject *start(PyObject *self, PyObject *args) {
    Py_buffer data;
    int err_w, cgroup_fd = -1;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*i|i:start", &data, &err_w, &cgroup_fd)) return NULL;
    struct plan plan;
    memset(&plan, 0, sizeof plan);
    plan.err_w = err_w;
    int parsed = parse(data.buf, data.len, &plan);
    PyBuffer_Release(&data);
    if (parsed < 0) { free_plan(&plan); return NULL; }
    void *stack = cgroup_fd >= 0 ? NULL :
        mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        free_plan(&plan);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    sigset_t all, before;
    sigfillset(&all);
    pid_t pid;
    int err;
    Py_BEGIN_ALLOW_THREADS
    pthread_sigmask(SIG_SETMASK, &all, &before);
    if (cgroup_fd >= 0)
        pid = clone_into_cgroup(&plan, cgroup_fd);
    else
        pid = clone(child_main, (char *)stack + STACK_SIZE, CLONE_VM | CLONE_VFORK | SIGCHLD, &plan);
    err = errno;
    pthread_sigmask(SIG_SETMASK, &before, NULL);
    Py_END_ALLOW_THREADS
    /* The child has exec'd or ended: its stack and the plan are ours again. */
    if (stack) munmap(stack, STACK_SIZE);
    free_plan(&plan);
    if (pid < 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(pid);
}

/* Whether clone3 is there (5.3+) and not refused by a filter of the
 * caller's (a container manager's profile may say ENOSYS or EPERM): a
 * call with a size too small for any version is EINVAL where it is. */
static PyObject *clone3_works(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    struct clone3_args args;
    memset(&args, 0, sizeof args);
    long r = syscall(SYS_clone3, &args, (size_t)8);
    return PyBool_FromLong(r < 0 && errno == EINVAL);
}

static PyMethodDef methods[] = {
    {"start", start, METH_VARARGS,
     "start(plan: bytes, err_w: int, cgroup_fd: int = -1) -> pid: run the plan in a clone(CLONE_VM | CLONE_VFORK)\n"
     "child, or with cgroup_fd a clone3(CLONE_INTO_CGROUP | CLONE_VFORK) one; return once it has exec'd or ended."},
    {"clone3_works", clone3_works, METH_NOARGS, "clone3_works() -> bool: clone3 is there and not filtered."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "clone_child",
                                    "A command container's PID 1 in C (see native_child.py).", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_clone_child(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "ABI", ABI) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
