/* lockdown — the confinement layers of the rlm-sandbox child: rlimits,
 * no-new-privileges, Landlock and a seccomp filter that makes dangerous system
 * calls fail with EPERM, so model code sees an OSError instead of a dead process.
 *
 * Design note. Each layer is one static function with the same shape; the
 * table in sandbox_lockdown applies them in order and records their state.
 *
 * Landlock gets an empty ruleset that handles every access right the kernel's
 * ABI knows: the child preloads every module before lockdown, so after it the
 * interpreter needs no file at all, and "nothing" is the strictest policy
 * (read access to the interpreter's own files would only serve tracebacks of
 * library frames, which the seccomp filter denies anyway). From ABI 4 it also
 * handles TCP bind/connect with no port allowed, from ABI 6 it scopes abstract
 * unix sockets and signals to the domain. It binds the calling thread and the
 * ones it creates; the watchdog thread predates it but runs no model code, and
 * no thread can be created after lockdown.
 *
 * The seccomp filter is default-allow with a deny list. A default-deny
 * allowlist would be shorter to audit, but CPython, glibc and the allowed
 * modules need a long, version-dependent tail of harmless calls (mmap variants,
 * futex, getrandom, rseq, madvise, clock and signal calls, ...), and a missing
 * one turns legitimate code into a crash; what must never happen is short and
 * stable: new files, sockets, processes and threads, signals to others,
 * privilege or namespace changes, kernel interfaces, changes to the filesystem
 * and probes of it by path. Landlock and the namespaces back it up
 * independently. Denied calls return EPERM (clone3 returns ENOSYS so glibc
 * falls back to clone, which is denied). Calls from a foreign ABI (i386
 * int 0x80, x32) do not match the filter's architecture and kill the process:
 * libseccomp's default. */
#include "lockdown.h"
#include "sandbox_policy.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/kd.h>
#include <linux/sockios.h>
#include <linux/vt.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* System calls that always fail with EPERM. Names unknown on the build
 * architecture (open, fork, ... on arm64) are skipped. */
static const char *const denied_syscalls[] = {
    /* opening files by path or handle */
    "open", "openat", "openat2", "creat", "name_to_handle_at", "open_by_handle_at",
    "open_tree", "fanotify_init", "uselib", "memfd_create", "memfd_secret",
    /* probing the filesystem by path: existence, metadata, link targets, the
     * working directory (fstat goes through newfstatat, filtered below) */
    "stat", "lstat", "access", "faccessat", "faccessat2", "readlink", "readlinkat", "statfs",
    "getxattr", "lgetxattr", "listxattr", "llistxattr", "chdir", "fchdir", "getcwd",
    "inotify_init", "inotify_init1", "inotify_add_watch", "fanotify_mark",
    /* network and IPC endpoints, persistent IPC objects */
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    "mq_open", "mq_unlink", "shmget", "semget", "msgget",
    /* System V IPC objects by id: without an IPC namespace these are the
     * user's other programs' (attach, read, remove, post to them) */
    "shmat", "shmdt", "shmctl", "semop", "semtimedop", "semctl", "msgsnd", "msgrcv", "msgctl",
    "ipc",
    /* new programs, processes and threads (no thread is needed after lockdown,
     * and RLIMIT_NPROC does not bind root) */
    "execve", "execveat", "fork", "vfork", "clone",
    /* other processes */
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open", "pidfd_getfd",
    "pidfd_send_signal", "kcmp", "process_madvise", "process_mrelease", "move_pages",
    "migrate_pages",
    /* mounts, namespaces, root directory */
    "mount", "umount", "umount2", "unshare", "setns", "pivot_root", "chroot", "fsopen",
    "fsconfig", "fsmount", "fspick", "move_mount", "mount_setattr",
    /* identity and capabilities */
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
    "setfsgid", "setgroups", "capset",
    /* kernel interfaces */
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "bpf", "perf_event_open", "personality", "keyctl", "add_key",
    "request_key", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "iopl", "ioperm", "modify_ldt", "syslog", "swapon", "swapoff",
    "acct", "quotactl", "quotactl_fd", "sethostname", "setdomainname", "settimeofday",
    "clock_settime", "clock_adjtime", "adjtimex", "lookup_dcookie", "vhangup",
    "nfsservctl",
    /* filesystem changes */
    "unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "mknod",
    "mknodat", "rmdir", "symlink", "symlinkat", "link", "linkat", "chmod", "fchmod",
    "fchmodat", "chown", "fchown", "lchown", "fchownat", "truncate", "ftruncate",
    "fallocate", "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr",
    "fremovexattr", "utime", "utimes", "utimensat", "futimesat",
    /* raising limits (root could raise hard limits) */
    "setrlimit",
};

/* Calls newer than the libseccomp this was built with, by their number in the
 * unified table that x86-64 and arm64 share for every call numbered from 424
 * on. Each is denied only when libseccomp does not know it by name (then it is
 * in the list above, or harmless). */
static const struct {
    const char *name;
    int nr;
} late_syscalls[] = {
    {"memfd_secret", 447}, {"fchmodat2", 452},     {"statmount", 457},
    {"listmount", 458},    {"lsm_get_self_attr", 459}, {"lsm_set_self_attr", 460},
    {"lsm_list_modules", 461}, {"setxattrat", 463}, {"getxattrat", 464},
    {"listxattrat", 465},  {"removexattrat", 466}, {"open_tree_attr", 467},
    {"file_getattr", 468}, {"file_setattr", 469},
};

/* Signal-sending calls whose first argument is the target process: allowed
 * only when it is this process (raise(), abort(), Python's own signals). */
static const char *const signal_syscalls[] = {
    "kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
};

/* Calls on another process named by their first argument (0 is this one):
 * its scheduling, its CPUs, its robust futex list. */
static const char *const other_pid_syscalls[] = {
    "sched_setaffinity", "sched_setscheduler", "sched_setparam", "sched_setattr",
    "get_robust_list",
};

/* fcntl commands that make the kernel signal a process: the owner of a
 * descriptor's I/O signals (F_SETOWN, F_SETOWN_EX), the signal it gets
 * (F_SETSIG), and leases and directory notifications, whose signals go
 * to that owner. */
static const unsigned long denied_fcntls[] = {
    F_SETOWN, F_SETOWN_EX, F_SETSIG, F_SETLEASE, F_NOTIFY,
};

/* ioctl commands that make the kernel signal a process, or act on a
 * terminal's processes: I/O signal owner and O_ASYNC by ioctl (any file,
 * sockets included), a terminal's foreground group, controlling terminal,
 * signals to its foreground group (TIOCSIG; SIGWINCH on a resize; SIGHUP on
 * a hangup or on losing the terminal), typing into it, redirecting the
 * console, the line discipline, and the virtual console's signals. Model
 * code has no terminal (fds 0-2 are /dev/null unless RLM_SANDBOX_STDERR is
 * set for debugging), so this is only a second line. */
static const unsigned long denied_ioctls[] = {
    FIOSETOWN,  SIOCSPGRP,  FIOASYNC,   TIOCSPGRP,   TIOCSCTTY,  TIOCNOTTY, TIOCSIG,
    TIOCSTI,    TIOCSWINSZ, TIOCVHANGUP, TIOCCONS,   TIOCLINUX,  TIOCSETD,  KDSIGACCEPT,
    VT_SETMODE,
};

static int lockdown_fail(char *err, size_t errlen, const char *what, int code)
{
    snprintf(err, errlen, "%s: %s", what, strerror(code < 0 ? -code : code));
    return -1;
}

/* ---- rlimits ---- */

static int set_limit(int resource, rlim_t value, const char *name, char *err, size_t errlen)
{
    struct rlimit lim = {value, value};
    if (setrlimit(resource, &lim) != 0) {
        snprintf(err, errlen, "setrlimit(%s): %s", name, strerror(errno));
        return -1;
    }
    return 0;
}

/* RLIMIT_NPROC 0 stops new processes and threads for ordinary users (root is
 * exempt, which is why seccomp also denies clone). RLIMIT_FSIZE 0 turns any
 * write to a regular file into EFBIG (SIGXFSZ is ignored by the child). Under
 * AddressSanitizer RLIMIT_AS is skipped: its shadow memory reserves terabytes
 * of address space, so any limit would make every allocation fail. */
static int layer_rlimits(const sandbox_lockdown_options *opts, sandbox_layer_state *layer,
                         char *err, size_t errlen)
{
    layer->name = "rlimits";
#ifdef SANDBOX_ASAN
    snprintf(layer->detail, sizeof layer->detail,
             "file size 0, no core dumps, no new processes; no address-space limit under "
             "AddressSanitizer");
#else
    if (opts->memory_limit && set_limit(RLIMIT_AS, (rlim_t)opts->memory_limit, "AS", err, errlen))
        return -1;
    snprintf(layer->detail, sizeof layer->detail,
             "address space %zu MiB, file size 0, no core dumps, no new processes",
             opts->memory_limit >> 20);
#endif
    if (set_limit(RLIMIT_FSIZE, 0, "FSIZE", err, errlen) ||
        set_limit(RLIMIT_CORE, 0, "CORE", err, errlen) ||
        set_limit(RLIMIT_NPROC, 0, "NPROC", err, errlen))
        return -1;
    layer->active = 1;
    return 0;
}

/* ---- Landlock ---- */

/* The kernel's Landlock ABI (include/uapi/linux/landlock.h), spelled out here
 * because the build machine's headers may predate the ABI the running kernel
 * offers. The attribute grows with the ABI; the kernel takes the size. */
#define LL_CREATE_RULESET_VERSION (1U << 0)
#define LL_FS_ABI1 ((1ULL << 13) - 1) /* execute .. make_sym */
#define LL_FS_REFER (1ULL << 13)      /* ABI 2 */
#define LL_FS_TRUNCATE (1ULL << 14)   /* ABI 3 */
#define LL_FS_IOCTL_DEV (1ULL << 15)  /* ABI 5 */
#define LL_NET_BIND_TCP (1ULL << 0)   /* ABI 4 */
#define LL_NET_CONNECT_TCP (1ULL << 1)
#define LL_SCOPE_ABSTRACT_UNIX (1ULL << 0) /* ABI 6 */
#define LL_SCOPE_SIGNAL (1ULL << 1)

typedef struct landlock_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
} landlock_attr;

/* The ABI version the kernel offers, or -errno (ENOSYS: not built in,
 * EOPNOTSUPP: disabled at boot). */
static long landlock_abi(void)
{
#ifdef SYS_landlock_create_ruleset
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);
    return abi < 0 ? -errno : abi;
#else
    return -ENOSYS;
#endif
}

/* Landlock never fails the lockdown: without it the child is still held by
 * seccomp, and the report says what is missing and why. */
static int layer_landlock(const sandbox_lockdown_options *opts, sandbox_layer_state *layer,
                          char *err, size_t errlen)
{
    (void)err, (void)errlen;
    layer->name = "landlock";
    if (opts->skip_landlock) {
        snprintf(layer->detail, sizeof layer->detail, "switched off by the host");
        return 0;
    }
    long abi = landlock_abi();
    if (abi < 0) {
        snprintf(layer->detail, sizeof layer->detail, "not available: %s%s", strerror((int)-abi),
                 abi == -ENOSYS       ? " (kernel built without Landlock)"
                 : abi == -EOPNOTSUPP ? " (Landlock disabled at boot; add it to lsm=)"
                                      : "");
        return 0;
    }
    landlock_attr attr = {.handled_access_fs = LL_FS_ABI1};
    size_t size = sizeof attr.handled_access_fs;
    if (abi >= 2)
        attr.handled_access_fs |= LL_FS_REFER;
    if (abi >= 3)
        attr.handled_access_fs |= LL_FS_TRUNCATE;
    if (abi >= 4) {
        attr.handled_access_net = LL_NET_BIND_TCP | LL_NET_CONNECT_TCP;
        size = offsetof(landlock_attr, scoped);
    }
    if (abi >= 5)
        attr.handled_access_fs |= LL_FS_IOCTL_DEV;
    if (abi >= 6) {
        attr.scoped = LL_SCOPE_ABSTRACT_UNIX | LL_SCOPE_SIGNAL;
        size = sizeof attr;
    }
    int fd = (int)syscall(SYS_landlock_create_ruleset, &attr, size, 0);
    if (fd < 0) {
        snprintf(layer->detail, sizeof layer->detail, "ABI %ld, ruleset refused: %s", abi,
                 strerror(errno));
        return 0;
    }
    /* No rules: every handled access is denied everywhere. */
    long rc = syscall(SYS_landlock_restrict_self, fd, 0);
    int saved = errno;
    close(fd);
    if (rc != 0) {
        snprintf(layer->detail, sizeof layer->detail, "ABI %ld, restrict_self failed: %s", abi,
                 strerror(saved));
        return 0;
    }
    layer->active = 1;
    snprintf(layer->label, sizeof layer->label, "landlock(abi %ld)", abi);
    snprintf(layer->detail, sizeof layer->detail, "ABI %ld: no filesystem access%s%s", abi,
             abi >= 4 ? ", no TCP bind or connect" : " (TCP needs ABI 4)",
             abi >= 6 ? ", signals and abstract unix sockets scoped to the sandbox" : "");
    return 0;
}

/* ---- seccomp ---- */

static int deny(scmp_filter_ctx ctx, const char *name, int action, unsigned n_args,
                const struct scmp_arg_cmp *args, char *err, size_t errlen)
{
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR || nr < 0)
        return 0; /* not a system call on this architecture */
    int rc = seccomp_rule_add_array(ctx, action, nr, n_args, args);
    if (rc != 0) {
        char what[96];
        snprintf(what, sizeof what, "seccomp rule for %s", name);
        return lockdown_fail(err, errlen, what, rc);
    }
    return 0;
}

static int add_late_rules(scmp_filter_ctx ctx, int action, char *err, size_t errlen)
{
    uint32_t arch = seccomp_arch_native();
    if (arch != SCMP_ARCH_X86_64 && arch != SCMP_ARCH_AARCH64)
        return 0;
    for (size_t i = 0; i < sizeof late_syscalls / sizeof late_syscalls[0]; i++) {
        if (seccomp_syscall_resolve_name(late_syscalls[i].name) != __NR_SCMP_ERROR)
            continue; /* known by name: handled by the lists */
        int rc = seccomp_rule_add(ctx, action, late_syscalls[i].nr, 0);
        if (rc != 0)
            return lockdown_fail(err, errlen, late_syscalls[i].name, rc);
    }
    return 0;
}

/* The filter's rules; signals may go to process self_pid only. */
static int add_seccomp_rules(scmp_filter_ctx ctx, int self_pid, char *err, size_t errlen)
{
    const int eperm = SCMP_ACT_ERRNO(EPERM);
    for (size_t i = 0; i < sizeof denied_syscalls / sizeof denied_syscalls[0]; i++)
        if (deny(ctx, denied_syscalls[i], eperm, 0, NULL, err, errlen))
            return -1;
    if (add_late_rules(ctx, eperm, err, errlen) ||
        deny(ctx, "clone3", SCMP_ACT_ERRNO(ENOSYS), 0, NULL, err, errlen))
        return -1;

    /* glibc's fstat is newfstatat(fd, "", AT_EMPTY_PATH); a lookup by path
     * (os.stat('/etc/shadow')) never sets that flag from Python. */
    struct scmp_arg_cmp by_path3 = SCMP_A3(SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, 0);
    struct scmp_arg_cmp by_path2 = SCMP_A2(SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, 0);
    if (deny(ctx, "newfstatat", eperm, 1, &by_path3, err, errlen) ||
        deny(ctx, "fstatat64", eperm, 1, &by_path3, err, errlen) ||
        deny(ctx, "statx", eperm, 1, &by_path2, err, errlen))
        return -1;

    struct scmp_arg_cmp not_self = SCMP_A0(SCMP_CMP_NE, (scmp_datum_t)self_pid);
    for (size_t i = 0; i < sizeof signal_syscalls / sizeof signal_syscalls[0]; i++)
        if (deny(ctx, signal_syscalls[i], eperm, 1, &not_self, err, errlen))
            return -1;

    /* prlimit64 with a new limit sets; glibc's getrlimit passes NULL there.
     * Another process's limits (or scheduling, or robust list) are none of
     * the sandbox's business: with no PID namespace they are the host's. */
    struct scmp_arg_cmp sets_limit = SCMP_A2(SCMP_CMP_NE, 0);
    if (deny(ctx, "prlimit64", eperm, 1, &sets_limit, err, errlen))
        return -1;
    struct scmp_arg_cmp other_a0 = SCMP_A0(SCMP_CMP_NE, 0), other_a1 = SCMP_A1(SCMP_CMP_NE, 0);
    for (size_t i = 0; i < sizeof other_pid_syscalls / sizeof other_pid_syscalls[0]; i++)
        if (deny(ctx, other_pid_syscalls[i], eperm, 1, &other_a0, err, errlen))
            return -1;
    /* setpriority / ioprio_set(which, who, value): anything but "this
     * process" (PRIO_PROCESS / IOPRIO_WHO_PROCESS, who 0) would renice the
     * user's other processes, the host among them. */
    struct scmp_arg_cmp not_prio_process = SCMP_A0(SCMP_CMP_NE, PRIO_PROCESS);
    struct scmp_arg_cmp not_ioprio_process = SCMP_A0(SCMP_CMP_NE, 1 /* IOPRIO_WHO_PROCESS */);
    if (deny(ctx, "setpriority", eperm, 1, &not_prio_process, err, errlen) ||
        deny(ctx, "setpriority", eperm, 1, &other_a1, err, errlen) ||
        deny(ctx, "ioprio_set", eperm, 1, &not_ioprio_process, err, errlen) ||
        deny(ctx, "ioprio_set", eperm, 1, &other_a1, err, errlen))
        return -1;

    /* Signals the kernel sends on our behalf: a descriptor's owner gets
     * SIGIO (or the signal F_SETSIG names, SIGKILL included) when I/O is
     * possible, once O_ASYNC is on — and a terminal makes its foreground
     * process group the owner by itself. Without Landlock's signal scoping
     * that reaches the host. The command argument is an unsigned int to the
     * kernel: compared on its low 32 bits, so high bits set cannot slip a
     * command past the filter. */
    for (size_t i = 0; i < sizeof denied_fcntls / sizeof denied_fcntls[0]; i++) {
        struct scmp_arg_cmp cmd = SCMP_A1(SCMP_CMP_MASKED_EQ, 0xFFFFFFFFu, denied_fcntls[i]);
        if (deny(ctx, "fcntl", eperm, 1, &cmd, err, errlen) ||
            deny(ctx, "fcntl64", eperm, 1, &cmd, err, errlen))
            return -1;
    }
    struct scmp_arg_cmp set_async[2] = {SCMP_A1(SCMP_CMP_MASKED_EQ, 0xFFFFFFFFu, F_SETFL),
                                        SCMP_A2(SCMP_CMP_MASKED_EQ, O_ASYNC, O_ASYNC)};
    if (deny(ctx, "fcntl", eperm, 2, set_async, err, errlen) ||
        deny(ctx, "fcntl64", eperm, 2, set_async, err, errlen))
        return -1;
    for (size_t i = 0; i < sizeof denied_ioctls / sizeof denied_ioctls[0]; i++) {
        struct scmp_arg_cmp cmd = SCMP_A1(SCMP_CMP_MASKED_EQ, 0xFFFFFFFFu, denied_ioctls[i]);
        if (deny(ctx, "ioctl", eperm, 1, &cmd, err, errlen))
            return -1;
    }
    return 0;
}

/* Loads a program built by sandbox_filter_build, on every thread. */
static int load_prebuilt(const sandbox_filter *filter, char *err, size_t errlen)
{
    struct sock_fprog prog = {.len = filter->len, .filter = filter->code};
    long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
    if (rc > 0) {
        snprintf(err, errlen, "seccomp: thread %ld could not be synchronised", rc);
        return -1;
    }
    return rc == 0 ? 0 : lockdown_fail(err, errlen, "seccomp", errno);
}

static const char seccomp_detail[] =
    "all threads: no files, sockets, exec, processes or threads, signals to others, "
    "path probes, mounts, namespaces, identity or limit changes";

static int layer_seccomp(const sandbox_lockdown_options *opts, sandbox_layer_state *layer,
                         char *err, size_t errlen)
{
    layer->name = "seccomp";
    if (opts->filter && opts->filter->code && opts->filter->for_pid == (int)getpid()) {
        if (load_prebuilt(opts->filter, err, errlen) != 0)
            return -1;
        layer->active = 1;
        snprintf(layer->detail, sizeof layer->detail, "%s", seccomp_detail);
        return 0;
    }
    int rc = -1;
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) {
        snprintf(err, errlen, "seccomp_init failed");
        return -1;
    }
    /* A filter binds only the thread that loads it unless synchronised: the
     * child's watchdog thread predates the lockdown and must not stay
     * unfiltered (glibc even aborts when setuid() succeeds in one thread and
     * fails in another). TSYNC also gives it no_new_privs. */
    int attr = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
    if (attr != 0) {
        lockdown_fail(err, errlen, "seccomp thread synchronisation", attr);
        goto fail;
    }
    if (add_seccomp_rules(ctx, (int)getpid(), err, errlen) != 0)
        goto fail;
    int load = seccomp_load(ctx);
    if (load != 0) {
        lockdown_fail(err, errlen, "seccomp_load", load);
        goto fail;
    }
    layer->active = 1;
    snprintf(layer->detail, sizeof layer->detail, "%s", seccomp_detail);
    rc = 0;
fail:
    seccomp_release(ctx);
    return rc;
}

int sandbox_filter_build(int for_pid, sandbox_filter *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int rc = -1, fd = -1;
    struct stat st;
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) {
        snprintf(err, errlen, "seccomp_init failed");
        return -1;
    }
    if (add_seccomp_rules(ctx, for_pid, err, errlen) != 0)
        goto done;
    /* libseccomp 2.5 exports a program to a descriptor only. */
    fd = memfd_create("seccomp", MFD_CLOEXEC);
    int exported = fd >= 0 ? seccomp_export_bpf(ctx, fd) : -errno;
    if (exported != 0 || fstat(fd, &st) != 0 || st.st_size <= 0 ||
        st.st_size % (off_t)sizeof(struct sock_filter) != 0 ||
        st.st_size / (off_t)sizeof(struct sock_filter) > BPF_MAXINSNS) {
        lockdown_fail(err, errlen, "seccomp_export_bpf", exported ? exported : EINVAL);
        goto done;
    }
    out->code = malloc((size_t)st.st_size);
    if (!out->code || pread(fd, out->code, (size_t)st.st_size, 0) != st.st_size) {
        snprintf(err, errlen, "cannot read the exported seccomp program");
        free(out->code);
        out->code = NULL;
        goto done;
    }
    out->len = (unsigned short)(st.st_size / (off_t)sizeof(struct sock_filter));
    out->for_pid = for_pid;
    rc = 0;
done:
    if (fd >= 0)
        close(fd);
    seccomp_release(ctx);
    return rc;
}

/* ---- all together ---- */

typedef int (*layer_fn)(const sandbox_lockdown_options *, sandbox_layer_state *, char *,
                        size_t);

int sandbox_lockdown(const sandbox_lockdown_options *opts, sandbox_lockdown_report *report,
                     char *layers, size_t layers_len, char *err, size_t errlen)
{
    sandbox_lockdown_report local;
    if (!report)
        report = &local;
    memset(report, 0, sizeof *report);
    if (layers_len)
        layers[0] = '\0';
    if (opts->unsafe_no_sandbox) {
        snprintf(layers, layers_len, "none (unsafe)");
        return 0;
    }
    /* A file write past RLIMIT_FSIZE must be an error, not a fatal signal. */
    signal(SIGXFSZ, SIG_IGN);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return lockdown_fail(err, errlen, "PR_SET_NO_NEW_PRIVS", errno);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

    /* Order of application: seccomp last, since it denies calls the others
     * may need. Order of the report: strongest first. */
    static const struct {
        layer_fn apply;
        size_t slot;
    } order[SANDBOX_LOCKDOWN_LAYERS] = {
        {layer_rlimits, 2},
        {layer_landlock, 0},
        {layer_seccomp, 1},
    };
    report->n = SANDBOX_LOCKDOWN_LAYERS;
    for (size_t i = 0; i < SANDBOX_LOCKDOWN_LAYERS; i++)
        if (order[i].apply(opts, &report->layers[order[i].slot], err, errlen) != 0)
            return -1;
    size_t used = 0;
    for (size_t i = 0; i < report->n && used < layers_len; i++) {
        const sandbox_layer_state *l = &report->layers[i];
        if (!l->active)
            continue;
        int n = snprintf(layers + used, layers_len - used, "%s%s", used ? "," : "",
                         l->label[0] ? l->label : l->name);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    return 0;
}

/* ---- forking into namespaces (the zygote) ----
 *
 * unshare(CLONE_NEWPID) moves only the caller's future children into the new
 * PID namespace, and unshare(CLONE_NEWUSER) cannot be undone, so the zygote
 * does not enter them itself: it clones the child into them. A process that
 * creates a user namespace holds every capability in it, and a fork (unlike
 * the exec of a spawned child) keeps them: the new process drops them all
 * before anything else.
 *
 * The clone is raw, not glibc's fork: only the kernel's clone takes
 * namespace flags with CLONE_PARENT. glibc then still holds the zygote's
 * thread id in the new process's thread descriptor; since 2.34 it asks the
 * kernel (gettid) where that matters, for a signal to itself, and the stale
 * copy is only compared with itself (mutex owners). */

/* Namespace sets, strongest first: a spawned child's (the policy table's). */
#define FORK_SETS ((int)sandbox_child_namespaces_count)

static int drop_capabilities(void)
{
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capset, &header, data) != 0)
        return -1;
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); /* EINVAL before 4.3 */
    return 0;
}

int sandbox_fork_isolated(int isolate, int required, sandbox_fork_memory *memory,
                          sandbox_fork_report *report)
{
    memset(report, 0, sizeof *report);
    report->pid = -1;
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    /* Sets refused before are not tried again (a refused clone may cost a
     * copy of the page tables), but still reported. */
    int first = memory->first_set >= 0 && memory->first_set <= FORK_SETS ? memory->first_set : 0;
    snprintf(report->refused, sizeof report->refused, "%s", isolate ? memory->refused : "");
    size_t used = strlen(report->refused);
    int last = isolate && required ? FORK_SETS - 1 : FORK_SETS;
    for (int i = isolate ? first : FORK_SETS; i <= last; i++) {
        unsigned long flags = i < FORK_SETS ? (unsigned long)sandbox_child_namespaces[i].flags : 0;
        long pid = syscall(SYS_clone, CLONE_PARENT | flags | SIGCHLD, NULL, NULL, NULL, 0UL);
        if (pid == 0) {
            if (drop_capabilities() != 0)
                _exit(3);
            return 0;
        }
        if (pid > 0) {
            report->pid = (int)pid;
            if (i < FORK_SETS)
                snprintf(report->namespaces, sizeof report->namespaces, "%s", sandbox_child_namespaces[i].names);
            if (isolate) {
                memory->first_set = i;
                snprintf(memory->refused, sizeof memory->refused, "%s", report->refused);
            }
            break;
        }
        report->error = errno;
        if (i == FORK_SETS)
            break;
        int n = snprintf(report->refused + used, sizeof report->refused - used, "%s%s: %s",
                         used ? "; " : "", sandbox_child_namespaces[i].names, strerror(errno));
        if (n > 0 && (size_t)n < sizeof report->refused - used)
            used += (size_t)n;
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    return 1;
}

/* 1 when thread tid is blocked in futex(2), per /proc/self/task/TID/syscall
 * (the number of the call it is blocked in, or "running"). */
static int thread_in_futex(long tid)
{
    char path[64], text[64];
    snprintf(path, sizeof path, "/proc/self/task/%ld/syscall", tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return 0;
    text[n] = '\0';
    char *end;
    long number = strtol(text, &end, 10);
    return end != text && number == SYS_futex;
}

int sandbox_threads_idle(double seconds)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long self = (long)syscall(SYS_gettid);
    for (;;) {
        DIR *dir = opendir("/proc/self/task");
        if (!dir)
            return -1;
        int busy = 0;
        struct dirent *entry;
        while (!busy && (entry = readdir(dir))) {
            char *end;
            long tid = strtol(entry->d_name, &end, 10);
            if (end != entry->d_name && *end == '\0' && tid != self)
                busy = !thread_in_futex(tid);
        }
        closedir(dir);
        if (!busy)
            return 0;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9 >
            seconds)
            return -1;
        usleep(500);
    }
}
