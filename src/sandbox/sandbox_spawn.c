/* sandbox_spawn — starting rlm-sandbox processes: a fresh process in new
 * namespaces (or without them, reported), or a fork from a sandbox factory's
 * zygote, which has already paid for Python's start-up and the preload; and
 * which rlm-sandbox executable to start (sandbox_find_exe).
 *
 * Design note: spawning. A process cannot move itself into a new PID
 * namespace, so a fresh child gets its namespaces at spawn time. posix_spawn
 * has no namespace flags, so the host uses a fork-like clone(2) with them; in
 * the threaded host the new process may only make async-signal-safe calls
 * before execve (dup2, open, close_range, sigaction, setpgid), with everything
 * prepared beforehand and exec failures reported through a close-on-exec
 * pipe. The flag sets are tried strongest first (a non-root user may lack
 * user namespaces; root without them still gets the others) and the first
 * that works is kept for restarts; when none does, posix_spawn starts the
 * child without namespaces and the layer report says why.
 *
 * Design note: the factory. A spawned child spends ~75 ms of CPU before it
 * can read its init frame: the exec and dynamic linking of libpython, the
 * interpreter's start-up and, most of it, importing the allowed modules. None
 * of that depends on the child's input, so a zygote does it once and forks
 * each child from there: a copy-on-write fork of a process that already holds
 * all of it. The zygote is rlm-sandbox started with "--zygote", like a child
 * but without a PID namespace (the pids it reports are ours), in new user,
 * network and IPC namespaces when the kernel allows. Its user namespace maps
 * our user to itself (written here, from the parent namespace): without a
 * mapping nobody in it could create the nested user namespace a child needs.
 * For each request the zygote clones the child with CLONE_PARENT into new
 * user, network, IPC and PID namespaces (the strongest set allowed, as a
 * spawn would): the child is the first process of its PID namespace and, by
 * CLONE_PARENT, a child of ours, not of the zygote, so waitpid, kill and the
 * restart logic of sandbox.c work on it unchanged, and it outlives the
 * zygote. (An intermediate process that unshares the namespaces and forks
 * would cost a second copy of the page tables per child, and this process
 * would have to become a child subreaper to adopt the orphan.) Requests are
 * serialised per factory (a fork takes a few milliseconds); the children's
 * start-ups, which take the rest, run in parallel on the callers' threads.
 *
 * Everything a forked child touches is a copy-on-write fault, about 30 us
 * each on the virtual machines we measured, so the zygote also does what a
 * child would do before its lockdown whatever its input (the import guard,
 * the snapshot of the modules, the seccomp program) and freezes its heap out
 * of the collector's reach (child/child.c): on a loaded 2-core virtual
 * machine a forked child was ready in 12-25 ms, a spawned one in 63-100 ms
 * (bench/sandbox_bench.sh).
 *
 * A factory fails for good when its zygote dies, hangs or breaks the
 * protocol, and when its children cannot get namespaces of their own while
 * the zygote has some (sharing the zygote's would make a forked child less
 * isolated than a spawned one); every wait has a deadline, and the callers
 * spawn instead. */
#include "sandbox_spawn.h"
#include "fdpass.h"

#include "frame.h"
#include "pack.h"
#include "sandbox_policy.h"
#include "util.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define FACTORY_READY_SECONDS 10.0 /* for the zygote to start Python and preload */
#define FACTORY_FORK_SECONDS 10.0  /* for one fork request */
#define FACTORY_SEND_TIMEOUT 10    /* seconds a blocked write to the zygote may take */
#define FACTORY_FRAME_MAX ((size_t)1 << 20) /* the zygote's frames are small (an input's
                                                summary at most) */
#define FACTORY_MAX_INPUTS 4096     /* as a sandbox's */


void sandbox_describe_status(int status, char *out, size_t len)
{
    if (WIFEXITED(status)) {
        snprintf(out, len, "exited with status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        const char *hint = sig == SIGKILL   ? " - out of memory, or killed from outside"
                           : sig == SIGSEGV ? " - a crash"
                           : sig == SIGSYS  ? " - a forbidden system call"
                                            : "";
        snprintf(out, len, "was killed by signal %d (%s%s)", sig, strsignal(sig), hint);
    } else {
        snprintf(out, len, "ended with wait status %d", status);
    }
}

int sandbox_floor_only(void)
{
    const char *v = getenv("RLM_SANDBOX_FLOOR_ONLY");
    return v && v[0] && strcmp(v, "0") != 0;
}

/* ---- inputs ---- */

/* Seconds a child may take to load an input of this many bytes. */
double sandbox_input_seconds(const sandbox_input *in)
{
    double per_gb = SANDBOX_START_SECONDS_PER_GB + (in->parsed ? SANDBOX_PARSE_SECONDS_PER_GB : 0);
    return SANDBOX_START_TIMEOUT + per_gb * (double)(in->context_len + in->data_len) / 1e9;
}

/* Describes an input (the sandbox's copy: a pack, sandbox_input_copy) the
 * way the init and add_input frames do. */
void sandbox_input_describe(json_t *frame, const sandbox_input *in)
{
    json_object_set_new(frame, "has_context", json_boolean(in->context_fd >= 0));
    json_object_set_new(frame, "context_len", json_integer((json_int_t)in->context_len));
    if (in->context_fd >= 0) {
        json_object_set_new(frame, "context_format", json_string("pack"));
        json_object_set_new(frame, "has_data", json_boolean(in->data_fd >= 0));
        json_object_set_new(frame, "data_len", json_integer((json_int_t)in->data_len));
    }
}

void sandbox_input_close(sandbox_input *in)
{
    if (in->context_fd >= 0)
        close(in->context_fd);
    if (in->data_fd >= 0)
        close(in->data_fd);
    in->context_fd = in->data_fd = -1;
}

/* Raw bytes as the child takes every input: the pack of one str whose
 * external data is those bytes (the descriptor duplicated, never copied). */
static int copy_raw_as_pack(const sandbox_input *in, sandbox_input *out, char *err, size_t errlen)
{
    int fd;
    size_t len;
    if (pack_write_str(in->context_len, &fd, &len, err, errlen) != 0)
        return -1;
    out->context_fd = fcntl(fd, F_DUPFD_CLOEXEC, SANDBOX_FD_FLOOR);
    close(fd);
    if (in->context_len)
        out->data_fd = fcntl(in->context_fd, F_DUPFD_CLOEXEC, SANDBOX_FD_FLOOR);
    if (out->context_fd < 0 || (in->context_len && out->data_fd < 0)) {
        snprintf(err, errlen, "cannot duplicate the context fd: %s", strerror(errno));
        sandbox_input_close(out);
        return -1;
    }
    out->context_len = len;
    out->context_pack = 1;
    out->data_len = in->context_len;
    return 0;
}

/* Our own CLOEXEC duplicates of an input's descriptors, above the fds the
 * child is handed (so the dup2 calls at spawn cannot overwrite each other):
 * always a pack, raw bytes made the pack of one str. 0, or -1 with err. */
int sandbox_input_copy(const sandbox_input *in, sandbox_input *out, char *err, size_t errlen)
{
    *out = (sandbox_input){.context_fd = -1, .data_fd = -1};
    if (!in || in->context_fd < 0)
        return 0;
    if (!in->context_pack)
        return copy_raw_as_pack(in, out, err, errlen);
    out->context_fd = fcntl(in->context_fd, F_DUPFD_CLOEXEC, SANDBOX_FD_FLOOR);
    if (out->context_fd < 0) {
        snprintf(err, errlen, "cannot duplicate the context fd: %s", strerror(errno));
        return -1;
    }
    out->context_len = in->context_len;
    out->context_pack = 1;
    out->parsed = in->parsed;
    if (in->data_fd >= 0) {
        out->data_fd = fcntl(in->data_fd, F_DUPFD_CLOEXEC, SANDBOX_FD_FLOOR);
        if (out->data_fd < 0) {
            snprintf(err, errlen, "cannot duplicate the context data fd: %s", strerror(errno));
            sandbox_input_close(out);
            return -1;
        }
        out->data_len = in->data_len;
    }
    return 0;
}

/* ---- spawning ---- */

/* Everything the new process needs between clone and execve, prepared
 * before the clone so that it allocates nothing. */
typedef struct spawn_plan {
    const char *exe;
    char **argv;
    char **envp;
    sandbox_fds fds;
    int keep_stderr;
    int error_fd;     /* write end of the exec-error pipe, CLOEXEC, >= SANDBOX_FD_FLOOR */
} spawn_plan;

/* Runs in the cloned process: async-signal-safe calls only, never returns. */
static void exec_cloned(const spawn_plan *plan)
{
    int first_closed = 7;
    int handed[3] = {plan->fds.context, plan->fds.data, plan->fds.cache};
    if (dup2(plan->fds.channel, 3) < 0)
        goto fail;
    int null_fd = open("/dev/null", O_RDWR);
    if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(null_fd, 1) < 0 ||
        (!plan->keep_stderr && dup2(null_fd, 2) < 0))
        goto fail;
    /* fds 4, 5, 6 have fixed meanings; an absent one is /dev/null. */
    for (int i = 0; i < 3; i++)
        if (dup2(handed[i] >= 0 ? handed[i] : null_fd, 4 + i) < 0)
            goto fail;
    if (close_range((unsigned)first_closed, (unsigned)plan->error_fd - 1, 0) != 0 ||
        close_range((unsigned)plan->error_fd + 1, ~0U, 0) != 0)
        goto fail;
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL); /* fails harmlessly for KILL, STOP, libc's own */
    setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(plan->exe, plan->argv, plan->envp);
fail:;
    int code = errno;
    ssize_t ignored = write(plan->error_fd, &code, sizeof code);
    (void)ignored;
    _exit(127);
}

/* Starts the process in new namespaces. Returns its pid, or -1 with errno set
 * (EPERM, EINVAL, ENOSPC, ... from clone, or the execve error). */
static pid_t spawn_in_namespaces(const spawn_plan *base, int flags)
{
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0)
        return -1;
    spawn_plan plan = *base;
    plan.error_fd = fcntl(pipe_fds[1], F_DUPFD_CLOEXEC, SANDBOX_FD_FLOOR);
    close(pipe_fds[1]);
    if (plan.error_fd < 0) {
        int saved = errno;
        close(pipe_fds[0]);
        errno = saved;
        return -1;
    }
    /* No signal handler of the host may run in the new process. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    long pid = syscall(SYS_clone, (unsigned long)flags | SIGCHLD, NULL, NULL, NULL, 0UL);
    if (pid == 0)
        exec_cloned(&plan);
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(plan.error_fd);
    if (pid < 0) {
        close(pipe_fds[0]);
        errno = clone_errno;
        return -1;
    }
    int exec_errno = 0;
    ssize_t n;
    while ((n = read(pipe_fds[0], &exec_errno, sizeof exec_errno)) < 0 && errno == EINTR)
        ;
    close(pipe_fds[0]);
    if (n > 0) { /* exec failed: the process is exiting */
        while (waitpid((pid_t)pid, NULL, 0) < 0 && errno == EINTR)
            ;
        errno = exec_errno ? exec_errno : EIO;
        return -1;
    }
    return (pid_t)pid;
}

static pid_t spawn_plain(const spawn_plan *plan, char *err, size_t errlen)
{
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    int have_actions = 0, have_attr = 0;
    pid_t pid = -1;
    if (posix_spawn_file_actions_init(&actions) != 0)
        goto fail_setup;
    have_actions = 1;
    int handed[3] = {plan->fds.context, plan->fds.data, plan->fds.cache};
    if (posix_spawn_file_actions_adddup2(&actions, plan->fds.channel, 3) != 0 ||
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0) != 0 ||
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0) != 0 ||
        (!plan->keep_stderr &&
         posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0) != 0))
        goto fail_setup;
    for (int i = 0; i < 3; i++)
        if (handed[i] >= 0 ? posix_spawn_file_actions_adddup2(&actions, handed[i], 4 + i) != 0
                           : posix_spawn_file_actions_addopen(&actions, 4 + i, "/dev/null",
                                                              O_RDONLY, 0) != 0)
            goto fail_setup;
    if (posix_spawn_file_actions_addclosefrom_np(&actions, 7) != 0)
        goto fail_setup;
    if (posix_spawnattr_init(&attr) != 0)
        goto fail_setup;
    have_attr = 1;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    /* Signals the host ignores would stay ignored across exec, and CPython
     * installs its SIGINT handler only over the default disposition. */
    if (posix_spawnattr_setsigmask(&attr, &none) != 0 ||
        posix_spawnattr_setsigdefault(&attr, &all) != 0 ||
        posix_spawnattr_setpgroup(&attr, 0) != 0 ||
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                            POSIX_SPAWN_SETPGROUP) != 0)
        goto fail_setup;
    int spawn_rc = posix_spawn(&pid, plan->exe, &actions, &attr, plan->argv, plan->envp);
    if (spawn_rc != 0) {
        snprintf(err, errlen, "cannot start %s: %s", plan->exe, strerror(spawn_rc));
        pid = -1;
    }
    goto done;
fail_setup:
    snprintf(err, errlen, "cannot prepare the sandbox process (out of memory?)");
done:
    if (have_actions)
        posix_spawn_file_actions_destroy(&actions);
    if (have_attr)
        posix_spawnattr_destroy(&attr);
    return pid;
}

/* Tries the namespace sets from *index on (all of them when it is -1), then
 * falls back to a plain spawn. Fills ns and *index (n_sets: none). */
static pid_t spawn_with_sets(const spawn_plan *plan, const sandbox_namespace_set *sets, int n_sets,
                             int use_namespaces, const char *why_not, int *index,
                             sandbox_namespaces *ns, char *err, size_t errlen)
{
    memset(ns, 0, sizeof *ns);
    if (use_namespaces) {
        buf why;
        buf_init(&why, sizeof ns->detail);
        for (int i = *index >= 0 ? *index : 0; i < n_sets; i++) {
            pid_t pid = spawn_in_namespaces(plan, sets[i].flags);
            if (pid > 0) {
                *index = i;
                ns->active = 1;
                snprintf(ns->names, sizeof ns->names, "%s", sets[i].names);
                snprintf(ns->detail, sizeof ns->detail, "%s%s%s", sets[i].names,
                         why.len ? "; refused: " : "", why.len ? why.data : "");
                buf_free(&why);
                return pid;
            }
            buf_printf(&why, "%s%s: %s", why.len ? "; " : "", sets[i].names, strerror(errno));
        }
        snprintf(ns->detail, sizeof ns->detail, "not available: %s",
                 why.len ? why.data : "no namespace set left to try");
        buf_free(&why);
    } else {
        snprintf(ns->detail, sizeof ns->detail, "%s", why_not ? why_not : "not asked for");
    }
    *index = n_sets;
    return spawn_plain(plan, err, errlen);
}

/* Large allocations (the context str, above all) get transparent huge pages:
 * on machines where a page fault is expensive this takes a 40 MB context from
 * ~150 ms to ~15 ms. CPython ignores the environment; nothing else is in it. */
static char tunables[] = "GLIBC_TUNABLES=glibc.malloc.hugetlb=1";

pid_t sandbox_spawn(const char *exe, const sandbox_fds *fds, int use_namespaces,
                    const char *why_not, int *ns_index, sandbox_namespaces *ns, char *err,
                    size_t errlen)
{
    char *argv[] = {(char *)exe, NULL};
    char *envp[] = {tunables, NULL};
    spawn_plan plan = {
        .exe = exe,
        .argv = argv,
        .envp = envp,
        .fds = *fds,
        .keep_stderr = getenv("RLM_SANDBOX_STDERR") != NULL, /* debugging only */
        .error_fd = -1,
    };
    snprintf(err, errlen, "cannot start %s", exe);
    return spawn_with_sets(&plan, sandbox_child_namespaces, (int)sandbox_child_namespaces_count, use_namespaces, why_not,
                           ns_index, ns, err, errlen);
}

/* ---- the factory ---- */

/* An input the factory keeps: our duplicates of its descriptors, its name,
 * the summary of a parsed one. */
typedef struct factory_input {
    char name[65];
    sandbox_input in;
    json_t *summary;
} factory_input;

struct sandbox_factory {
    pthread_mutex_t lock;   /* one request at a time; guards everything below */
    int refs;               /* the owner's, plus one per sandbox */
    char *exe;
    int use_namespaces;
    pid_t pid;              /* the zygote; -1 once it is gone */
    int sock;               /* our end of its channel; -1 once it is gone */
    frame_reader reader;
    int ready;              /* its zygote_ready arrived */
    double started;         /* when it was spawned (clock_now) */
    int failed;             /* gone for good: sandboxes are spawned */
    char why[256];          /* why it failed */
    sandbox_namespaces ns;  /* the zygote's own namespaces */
    long long next_id;
    factory_input *inputs;  /* what sandbox_factory_add_input gave, in order */
    size_t n_inputs;
    size_t held;            /* how many of them the zygote holds */
};

/* Writes text to /proc/PID/name. 0, or -1 with errno set. */
static int write_proc(pid_t pid, const char *name, const char *text)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/%s", (long)pid, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = write_full(fd, text, strlen(text));
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* Maps our user and group to themselves in the zygote's user namespace (one
 * line each, which an unprivileged parent may write), so that the zygote's
 * children can create user namespaces nested in it. Unmapped, their own
 * namespaces are refused, and the factory gives way to spawning. */
static void map_zygote_user(sandbox_factory *f)
{
    char uid_line[64], gid_line[64];
    snprintf(uid_line, sizeof uid_line, "%u %u 1\n", (unsigned)geteuid(), (unsigned)geteuid());
    snprintf(gid_line, sizeof gid_line, "%u %u 1\n", (unsigned)getegid(), (unsigned)getegid());
    if (write_proc(f->pid, "uid_map", uid_line) != 0 ||
        (write_proc(f->pid, "setgroups", "deny") != 0 && errno != ENOENT) ||
        write_proc(f->pid, "gid_map", gid_line) != 0) {
        size_t used = strlen(f->ns.detail);
        snprintf(f->ns.detail + used, sizeof f->ns.detail - used,
                 "; its user could not be mapped (%s)", strerror(errno));
    }
}

/* Kills and reaps the zygote and marks the factory failed, with why. Called
 * with the lock held. With grace, a zygote that is exiting by itself gets a
 * moment, so that the reason names its real exit status, not our SIGKILL. */
int sandbox_reap_within(pid_t *pid, int tries)
{
    int status = -1;
    for (int i = 0; i < tries && *pid > 0; i++) {
        pid_t rc = waitpid(*pid, &status, WNOHANG);
        if (rc == *pid) {
            *pid = -1;
            return status;
        }
        if (rc < 0 && errno != EINTR)
            break;
        usleep(2000);
    }
    return -1;
}

static void factory_fail(sandbox_factory *f, const char *why, int grace)
{
    int status = grace ? sandbox_reap_within(&f->pid, 25) : -1;
    if (f->pid > 0) {
        kill(f->pid, SIGKILL);
        while (waitpid(f->pid, &status, 0) < 0 && errno == EINTR)
            ;
        status = -1;
    }
    f->pid = -1;
    if (f->sock >= 0)
        close(f->sock);
    f->sock = -1;
    frame_reader_reset(&f->reader);
    f->failed = 1;
    char how[160] = "";
    if (status != -1)
        sandbox_describe_status(status, how, sizeof how);
    snprintf(f->why, sizeof f->why, "%s%s%s", why, how[0] ? "; the zygote " : "", how);
}

static int timeout_ms(double seconds)
{
    if (seconds <= 0)
        return 0;
    double ms = ceil(seconds * 1000.0);
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* Waits until `deadline` for the zygote's frame of type `want` (with `id`
 * when id >= 0). 0 with *reply set, or -1 with why. */
static int factory_wait(sandbox_factory *f, const char *want, long long id, double deadline,
                        json_t **reply, char *why, size_t whylen)
{
    *reply = NULL;
    for (;;) {
        /* Past the deadline, a frame already there still counts (the first
         * request may come long after zygote_ready did). */
        double left = deadline - clock_now();
        struct pollfd p = {.fd = f->sock, .events = POLLIN};
        int n = poll(&p, 1, timeout_ms(left));
        if (n < 0 && errno != EINTR) {
            snprintf(why, whylen, "poll: %s", strerror(errno));
            return -1;
        }
        if (n == 0 && left <= 0) {
            snprintf(why, whylen, "the zygote did not answer within %.0f s",
                     id >= 0 ? FACTORY_FORK_SECONDS : FACTORY_READY_SECONDS);
            return -1;
        }
        if (n <= 0)
            continue;
        json_t *frame = NULL;
        int rc = frame_reader_step(&f->reader, f->sock, &frame, why, whylen);
        if (rc == FRAME_MORE)
            continue;
        if (rc == FRAME_EOF) {
            snprintf(why, whylen, "the zygote closed its channel");
            return -1;
        }
        if (rc != FRAME_READY)
            return -1;
        const char *type = json_string_value(json_object_get(frame, "type"));
        json_t *got_id = json_object_get(frame, "id");
        if (type && strcmp(type, want) == 0 &&
            (id < 0 || (json_is_integer(got_id) && json_integer_value(got_id) == id))) {
            *reply = frame;
            return 0;
        }
        const char *message = json_string_value(json_object_get(frame, "message"));
        if (type && strcmp(type, "error") == 0 && message)
            snprintf(why, whylen, "the zygote failed: %s", message);
        else
            snprintf(why, whylen, "unexpected frame from the zygote (type '%.40s')",
                     type ? type : "(none)");
        json_decref(frame);
        return -1;
    }
}

/* The namespaces of a forked child: its own set (`got`; "" when it has
 * none, because none were asked for or the kernel refused every set to a
 * zygote that has none either), and the refusals. */
static void forked_namespaces(const sandbox_factory *f, const char *got, const char *refused,
                              sandbox_namespaces *ns)
{
    memset(ns, 0, sizeof *ns);
    if (!f->use_namespaces) {
        snprintf(ns->detail, sizeof ns->detail, "%s", f->ns.detail);
        return;
    }
    if (got[0]) {
        /* A set without a user namespace leaves the child in the zygote's. */
        int shared_user = strncmp(got, "user", 4) != 0 && strncmp(f->ns.names, "user", 4) == 0;
        ns->active = 1;
        snprintf(ns->names, sizeof ns->names, "%s%s", shared_user ? "user," : "", got);
        snprintf(ns->detail, sizeof ns->detail, "%s%s%s%s", ns->names,
                 shared_user ? " (user shared with the sandbox factory's zygote)" : "",
                 refused[0] ? "; refused: " : "", refused);
    } else {
        /* Only when the zygote has none either (else it does not fork). */
        snprintf(ns->detail, sizeof ns->detail, "not available: %s",
                 refused[0] ? refused : "no namespace set left to try");
    }
}

int sandbox_factory_new(const sandbox_options *opts, sandbox_factory **out, char *err,
                        size_t errlen)
{
    *out = NULL;
    if (!opts || !opts->exe_path || !*opts->exe_path) {
        snprintf(err, errlen, "no sandbox executable given");
        return -1;
    }
    sandbox_factory *f = calloc(1, sizeof *f);
    if (!f || !(f->exe = strdup(opts->exe_path))) {
        free(f);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&f->lock, NULL);
    f->refs = 1;
    f->pid = -1;
    f->sock = -1;
    f->next_id = 1;
    int floor_only = sandbox_floor_only();
    f->use_namespaces = !opts->no_namespaces && !opts->unsafe_no_sandbox && !floor_only;
    frame_reader_init(&f->reader, FACTORY_FRAME_MAX);
    int sv[2] = {-1, -1}, child_end = -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0 ||
        (child_end = fcntl(sv[1], F_DUPFD_CLOEXEC, SANDBOX_FD_FLOOR)) < 0) {
        snprintf(err, errlen, "cannot make the zygote's channel: %s", strerror(errno));
        goto fail;
    }
    char zygote_flag[] = "--zygote";
    char *argv[] = {f->exe, zygote_flag, NULL};
    char *envp[] = {tunables, NULL};
    spawn_plan plan = {
        .exe = f->exe,
        .argv = argv,
        .envp = envp,
        .fds = {.channel = child_end, .context = -1, .data = -1, .cache = -1},
        .keep_stderr = getenv("RLM_SANDBOX_STDERR") != NULL,
        .error_fd = -1,
    };
    int index = -1;
    snprintf(err, errlen, "cannot start %s", f->exe);
    f->pid = spawn_with_sets(&plan, sandbox_zygote_namespaces, (int)sandbox_zygote_namespaces_count, f->use_namespaces,
                             opts->unsafe_no_sandbox ? "unsafe_no_sandbox"
                             : floor_only            ? SANDBOX_FLOOR_ONLY_WHY
                                                     : "switched off by the caller",
                             &index, &f->ns, err, errlen);
    if (f->pid <= 0) {
        f->pid = -1;
        goto fail;
    }
    f->started = clock_now();
    if (strncmp(f->ns.names, "user", 4) == 0)
        map_zygote_user(f);
    f->sock = sv[0];
    sv[0] = -1;
    struct timeval send_timeout = {FACTORY_SEND_TIMEOUT, 0};
    setsockopt(f->sock, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof send_timeout);
    close(sv[1]);
    close(child_end);
    *out = f;
    return 0;
fail:
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    if (child_end >= 0)
        close(child_end);
    sandbox_factory_free(f);
    return -1;
}

/* Waits for the zygote's start-up, once. Called with the lock held. 0, or
 * -1 with why (the factory must then fail). */
static int factory_ready(sandbox_factory *f, char *why, size_t whylen)
{
    if (f->ready)
        return 0;
    json_t *reply = NULL;
    if (factory_wait(f, "zygote_ready", -1, f->started + FACTORY_READY_SECONDS, &reply, why,
                     whylen) != 0)
        return -1;
    f->ready = 1;
    json_decref(reply);
    return 0;
}

pid_t sandbox_factory_fork(sandbox_factory *f, const sandbox_fds *fds, size_t inputs,
                           sandbox_namespaces *ns, char *err, size_t errlen)
{
    char why[512] = "";
    pid_t pid = -1;
    json_t *reply = NULL;
    pthread_mutex_lock(&f->lock);
    if (f->failed) {
        snprintf(err, errlen, "the sandbox factory has failed: %s", f->why);
        goto done;
    }
    if (inputs > f->held || (inputs && (fds->context >= 0 || fds->data >= 0))) {
        snprintf(err, errlen, "the zygote holds %zu inputs, not %zu", f->held, inputs);
        goto done;
    }
    if (factory_ready(f, why, sizeof why) != 0)
        goto fail;
    long long id = f->next_id++;
    int passed[4], n = 0;
    passed[n++] = fds->channel;
    if (fds->context >= 0)
        passed[n++] = fds->context;
    if (fds->data >= 0)
        passed[n++] = fds->data;
    if (fds->cache >= 0)
        passed[n++] = fds->cache;
    /* A child that shared the zygote's namespaces would be less isolated
     * than a spawned one, which gets its own: when the zygote has some,
     * the child must get its own or not be forked. */
    json_t *request = json_pack("{s:s, s:I, s:b, s:b, s:b, s:b, s:b, s:I}", "type", "fork", "id",
                                (json_int_t)id, "has_context", fds->context >= 0, "has_data",
                                fds->data >= 0, "has_search_cache", fds->cache >= 0,
                                "namespaces", f->use_namespaces, "require_namespaces",
                                f->use_namespaces && f->ns.active, "inputs",
                                (json_int_t)inputs);
    int sent = request && frame_write(f->sock, request, FACTORY_FRAME_MAX, why, sizeof why) == 0;
    json_decref(request);
    if (!sent || fd_send(f->sock, 0, passed, n, why, sizeof why) != 0 ||
        factory_wait(f, "forked", id, clock_now() + FACTORY_FORK_SECONDS, &reply, why,
                     sizeof why) != 0)
        goto fail;
    json_t *got = json_object_get(reply, "pid");
    const char *names = json_string_value(json_object_get(reply, "namespaces"));
    const char *refused = json_string_value(json_object_get(reply, "refused"));
    names = names ? names : "";
    refused = refused ? refused : "";
    if (!json_is_integer(got) || json_integer_value(got) <= 0) {
        const char *message = json_string_value(json_object_get(reply, "message"));
        if (!names[0] && refused[0]) {
            /* It will be refused every time: spawn from now on. */
            snprintf(why, sizeof why, "its children cannot get namespaces of their own "
                                      "(refused: %s)", refused);
            goto fail;
        }
        snprintf(err, errlen, "the zygote could not fork: %s", message ? message : "no reason");
        goto done;
    }
    pid = (pid_t)json_integer_value(got);
    forked_namespaces(f, names, refused, ns);
    goto done;
fail:
    factory_fail(f, why, 1);
    snprintf(err, errlen, "the sandbox factory failed: %s", f->why);
done:
    json_decref(reply);
    pthread_mutex_unlock(&f->lock);
    return pid;
}

int sandbox_factory_add_input(sandbox_factory *f, const char *name, const sandbox_input *in,
                              char *err, size_t errlen)
{
    char why[512] = "";
    int rc = -1;
    json_t *reply = NULL;
    factory_input slot = {.summary = NULL};
    pthread_mutex_lock(&f->lock);
    if (f->n_inputs >= FACTORY_MAX_INPUTS) {
        snprintf(err, errlen, "too many inputs (at most %d)", FACTORY_MAX_INPUTS);
        goto done;
    }
    snprintf(slot.name, sizeof slot.name, "%s", f->n_inputs == 0 ? "context" : name ? name : "");
    if (!slot.name[0] || sandbox_input_copy(in, &slot.in, err, errlen) != 0)
        goto done;
    factory_input *grown = realloc(f->inputs, (f->n_inputs + 1) * sizeof *grown);
    if (!grown) {
        sandbox_input_close(&slot.in);
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    f->inputs = grown;
    rc = 0;
    if (f->failed || f->held < f->n_inputs)
        goto keep; /* no zygote to hold it: sandboxes spawn and load it */
    if (factory_ready(f, why, sizeof why) != 0)
        goto zygote_failed;
    long long id = f->next_id++;
    int fds[2], n_fds = 0;
    if (slot.in.context_fd >= 0)
        fds[n_fds++] = slot.in.context_fd;
    if (slot.in.context_fd >= 0 && slot.in.data_fd >= 0)
        fds[n_fds++] = slot.in.data_fd;
    /* The first is the children's `context`; the zygote knows it as context_0. */
    json_t *request = json_pack("{s:s, s:I, s:s}", "type", "add_input", "id", (json_int_t)id,
                                "name", f->n_inputs == 0 ? "context_0" : slot.name);
    if (request)
        sandbox_input_describe(request, &slot.in);
    int sent = request && frame_write(f->sock, request, FACTORY_FRAME_MAX, why, sizeof why) == 0;
    json_decref(request);
    if (!sent || fd_send(f->sock, 0, fds, n_fds, why, sizeof why) != 0 ||
        factory_wait(f, "input_added", id, clock_now() + sandbox_input_seconds(&slot.in), &reply,
                     why, sizeof why) != 0)
        goto zygote_failed;
    if (!json_is_true(json_object_get(reply, "ok"))) {
        const char *message = json_string_value(json_object_get(reply, "message"));
        rc = json_is_true(json_object_get(reply, "input_error")) ? -2 : -1;
        if (rc == -2)
            snprintf(err, errlen, "%s", message ? message : "the input cannot be read");
        else
            snprintf(err, errlen, "the sandbox factory could not load input '%s': %s", slot.name,
                     message && message[0] ? message : "no reason given");
        sandbox_input_close(&slot.in);
        goto done;
    }
    slot.summary = json_incref(json_object_get(reply, "summary"));
    f->held++;
    goto keep;
zygote_failed:
    factory_fail(f, why, 1);
keep:
    f->inputs[f->n_inputs++] = slot;
done:
    json_decref(reply);
    pthread_mutex_unlock(&f->lock);
    return rc;
}

size_t sandbox_factory_input_count(sandbox_factory *f)
{
    pthread_mutex_lock(&f->lock);
    size_t n = f->n_inputs;
    pthread_mutex_unlock(&f->lock);
    return n;
}

int sandbox_factory_input_copy(sandbox_factory *f, size_t i, char *name, size_t size,
                               sandbox_input *in, json_t **summary, char *err, size_t errlen)
{
    pthread_mutex_lock(&f->lock);
    int rc = -1;
    if (i >= f->n_inputs)
        snprintf(err, errlen, "the factory has no input %zu", i);
    else if (sandbox_input_copy(&f->inputs[i].in, in, err, errlen) == 0) {
        snprintf(name, size, "%s", f->inputs[i].name);
        *summary = json_incref(f->inputs[i].summary);
        rc = 0;
    }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

int sandbox_factory_fits(const sandbox_factory *f, const char *exe, int use_namespaces)
{
    return f && exe && strcmp(f->exe, exe) == 0 && f->use_namespaces == (use_namespaces != 0);
}

int sandbox_factory_pid(sandbox_factory *f)
{
    if (!f)
        return -1;
    pthread_mutex_lock(&f->lock);
    int pid = (int)f->pid;
    pthread_mutex_unlock(&f->lock);
    return pid;
}

sandbox_factory *sandbox_factory_hold(sandbox_factory *f)
{
    if (f) {
        pthread_mutex_lock(&f->lock);
        f->refs++;
        pthread_mutex_unlock(&f->lock);
    }
    return f;
}

void sandbox_factory_release(sandbox_factory *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->lock);
    int last = --f->refs == 0;
    pthread_mutex_unlock(&f->lock);
    if (!last)
        return;
    if (f->pid > 0 || f->sock >= 0)
        factory_fail(f, "freed", 0);
    for (size_t i = 0; i < f->n_inputs; i++) {
        sandbox_input_close(&f->inputs[i].in);
        json_decref(f->inputs[i].summary);
    }
    free(f->inputs);
    frame_reader_reset(&f->reader);
    pthread_mutex_destroy(&f->lock);
    free(f->exe);
    free(f);
}

void sandbox_factory_free(sandbox_factory *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->lock);
    if (!f->failed)
        factory_fail(f, "the factory was freed", 0);
    pthread_mutex_unlock(&f->lock);
    sandbox_factory_release(f);
}

/* ---- finding the executable ---- */

#ifndef RLM_SANDBOX_BUILD_PATH
#define RLM_SANDBOX_BUILD_PATH ""
#endif
#ifndef RLM_SANDBOX_INSTALL_PATH
#define RLM_SANDBOX_INSTALL_PATH ""
#endif
#ifndef RLM_HELPERS_FROM_LIBDIR
#define RLM_HELPERS_FROM_LIBDIR "../libexec/rlm"
#endif
#ifndef RLM_HELPERS_FROM_BINDIR
#define RLM_HELPERS_FROM_BINDIR "../libexec/rlm"
#endif

static int is_executable(const char *path)
{
    return path && path[0] && access(path, X_OK) == 0;
}

/* dir/rlm-sandbox, else dir/helpers/rlm-sandbox, when executable: its real
 * path (malloc'd), else NULL. */
static char *sandbox_beside(const char *dir, const char *helpers)
{
    char path[PATH_MAX * 2];
    int n = snprintf(path, sizeof path, "%s/rlm-sandbox", dir);
    if (n > 0 && (size_t)n < sizeof path && is_executable(path))
        return realpath(path, NULL);
    n = snprintf(path, sizeof path, "%s/%s/rlm-sandbox", dir, helpers);
    if (n > 0 && (size_t)n < sizeof path && is_executable(path))
        return realpath(path, NULL);
    return NULL;
}

/* The directory of the shared library holding this code (librlm.so loaded
 * by a program: Python's ctypes, a C program linked with -lrlm), into
 * dir; -1 when this code is part of the program itself (the static library
 * linked into rlm), which the program's own path covers. */
static int library_dir(const char *self_exe, char *dir, size_t dirlen)
{
    Dl_info info;
    char lib[PATH_MAX];
    if (!dladdr((void *)sandbox_find_exe, &info) || !info.dli_fname ||
        !strchr(info.dli_fname, '/') || !realpath(info.dli_fname, lib))
        return -1;
    if (self_exe && strcmp(lib, self_exe) == 0)
        return -1;
    char *slash = strrchr(lib, '/');
    *slash = '\0';
    return snprintf(dir, dirlen, "%s", lib) < (int)dirlen ? 0 : -1;
}

char *sandbox_find_exe(const char *configured)
{
    if (configured && configured[0])
        return strdup(configured);
    char self[PATH_MAX], dir[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n > 0 ? n : 0] = '\0';
    char *found = NULL;
    /* The library's own installed (or built) tree first: a Python process's
     * executable is python3, and a sandbox next to it would be another rlm's. */
    if (library_dir(self, dir, sizeof dir) == 0)
        found = sandbox_beside(dir, RLM_HELPERS_FROM_LIBDIR);
    char *slash = strrchr(self, '/');
    if (!found && slash) {
        *slash = '\0';
        found = sandbox_beside(self, RLM_HELPERS_FROM_BINDIR);
    }
    if (found)
        return found;
    if (is_executable(RLM_SANDBOX_BUILD_PATH))
        return strdup(RLM_SANDBOX_BUILD_PATH);
    return strdup(RLM_SANDBOX_INSTALL_PATH);
}
