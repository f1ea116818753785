/* sandbox_linux — the confinement layers of the rlm-sandbox child: rlimits,
 * no-new-privileges and a seccomp filter that makes dangerous system calls fail
 * with EPERM, so model code sees an OSError instead of a dead process.
 *
 * Design note. Each layer is one static function with the same shape; the
 * table in sandbox_lockdown applies them in order and records their names.
 * Layers that need work before exec (namespaces) or a path policy (landlock)
 * are expected to join that table later without touching the others.
 *
 * The seccomp filter is default-allow with a deny list: CPython needs a long
 * and version-dependent tail of harmless calls (mmap, futex, getrandom, ...),
 * while what must never happen is short and stable — new files, sockets,
 * processes, signals to others, privilege or namespace changes, kernel
 * interfaces, and changes to the filesystem. Denied calls return EPERM
 * (clone3 returns ENOSYS so glibc falls back to clone, which is filtered on
 * its flags). Calls from a foreign ABI (i386 int 0x80, x32) do not match the
 * filter's architecture and kill the process: libseccomp's default. */
#include "sandbox_linux.h"

#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

/* System calls that always fail with EPERM. Names unknown on the build
 * architecture (open, fork, ... on arm64) are skipped. */
static const char *const denied_syscalls[] = {
    /* opening files by path or handle */
    "open", "openat", "openat2", "creat", "name_to_handle_at", "open_by_handle_at",
    "open_tree", "fanotify_init", "uselib",
    /* network and IPC endpoints, persistent IPC objects */
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    "mq_open", "mq_unlink", "shmget", "semget", "msgget",
    /* new programs and processes (clone is filtered on its flags below) */
    "execve", "execveat", "fork", "vfork",
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
 * unified table that x86-64 and arm64 share since Linux 5.x. */
static const struct {
    const char *name;
    int nr;
} late_syscalls[] = {
    {"fchmodat2", 452},
};

/* Signal-sending calls whose first argument is the target process: allowed
 * only when it is this process (raise(), abort(), Python's own signals). */
static const char *const signal_syscalls[] = {
    "kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
};

static int lockdown_fail(char *err, size_t errlen, const char *what, int code)
{
    snprintf(err, errlen, "%s: %s", what, strerror(code < 0 ? -code : code));
    return -1;
}

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
 * exempt, which is why seccomp also filters clone). RLIMIT_FSIZE 0 turns any
 * write to a regular file into EFBIG (SIGXFSZ is ignored by the child). Under
 * AddressSanitizer RLIMIT_AS is skipped: its shadow memory reserves terabytes
 * of address space, so any limit would make every allocation fail. */
static int layer_rlimits(const sandbox_lockdown_options *opts, const char **name, char *err,
                         size_t errlen)
{
#ifdef SANDBOX_ASAN
    *name = "rlimits(no RLIMIT_AS under ASan)";
#else
    *name = "rlimits";
    if (opts->memory_limit && set_limit(RLIMIT_AS, (rlim_t)opts->memory_limit, "AS", err, errlen))
        return -1;
#endif
    if (set_limit(RLIMIT_FSIZE, 0, "FSIZE", err, errlen) ||
        set_limit(RLIMIT_CORE, 0, "CORE", err, errlen) ||
        set_limit(RLIMIT_NPROC, 0, "NPROC", err, errlen))
        return -1;
    return 0;
}

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

static int add_seccomp_rules(scmp_filter_ctx ctx, char *err, size_t errlen)
{
    const int eperm = SCMP_ACT_ERRNO(EPERM);
    for (size_t i = 0; i < sizeof denied_syscalls / sizeof denied_syscalls[0]; i++)
        if (deny(ctx, denied_syscalls[i], eperm, 0, NULL, err, errlen))
            return -1;

    uint32_t arch = seccomp_arch_native();
    if (arch == SCMP_ARCH_X86_64 || arch == SCMP_ARCH_AARCH64) {
        for (size_t i = 0; i < sizeof late_syscalls / sizeof late_syscalls[0]; i++) {
            if (seccomp_syscall_resolve_name(late_syscalls[i].name) != __NR_SCMP_ERROR)
                continue; /* known by name: nothing special to do */
            int rc = seccomp_rule_add(ctx, eperm, late_syscalls[i].nr, 0);
            if (rc != 0)
                return lockdown_fail(err, errlen, late_syscalls[i].name, rc);
        }
    }

    /* clone without CLONE_THREAD makes a process; threads are left alone.
     * The flags are the first argument on x86-64 and arm64. */
    struct scmp_arg_cmp no_thread = SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0);
    if (deny(ctx, "clone", eperm, 1, &no_thread, err, errlen) ||
        deny(ctx, "clone3", SCMP_ACT_ERRNO(ENOSYS), 0, NULL, err, errlen))
        return -1;

    struct scmp_arg_cmp not_self = SCMP_A0(SCMP_CMP_NE, (scmp_datum_t)getpid());
    for (size_t i = 0; i < sizeof signal_syscalls / sizeof signal_syscalls[0]; i++)
        if (deny(ctx, signal_syscalls[i], eperm, 1, &not_self, err, errlen))
            return -1;

    /* prlimit64 with a new limit sets; glibc's getrlimit passes NULL there. */
    struct scmp_arg_cmp sets_limit = SCMP_A2(SCMP_CMP_NE, 0);
    if (deny(ctx, "prlimit64", eperm, 1, &sets_limit, err, errlen))
        return -1;

    /* Pushing bytes into a terminal's input queue would type commands. */
    struct scmp_arg_cmp sti = SCMP_A1(SCMP_CMP_EQ, TIOCSTI);
    if (deny(ctx, "ioctl", eperm, 1, &sti, err, errlen))
        return -1;
    return 0;
}

static int layer_seccomp(const sandbox_lockdown_options *opts, const char **name, char *err,
                         size_t errlen)
{
    (void)opts;
    *name = "seccomp";
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
    if (add_seccomp_rules(ctx, err, errlen) != 0)
        goto fail;
    int load = seccomp_load(ctx);
    if (load != 0) {
        lockdown_fail(err, errlen, "seccomp_load", load);
        goto fail;
    }
    rc = 0;
fail:
    seccomp_release(ctx);
    return rc;
}

int sandbox_lockdown(const sandbox_lockdown_options *opts, char *layers, size_t layers_len,
                     char *err, size_t errlen)
{
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

    /* Seccomp comes last because the layers before it may need calls it
     * denies; landlock (paths) would go right before it. The report lists
     * the strongest layer first. */
    const char *limits = NULL, *filter = NULL;
    if (layer_rlimits(opts, &limits, err, errlen) != 0 ||
        layer_seccomp(opts, &filter, err, errlen) != 0)
        return -1;
    snprintf(layers, layers_len, "%s,%s", filter, limits);
    return 0;
}
