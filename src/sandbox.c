/* sandbox — host side of the Python sandbox: spawns rlm-sandbox, hands it the
 * context and settings, runs cells with a wall timeout, serves sub-calls, and
 * replaces the child whenever it dies, hangs or breaks the protocol.
 *
 * Design note. The child is untrusted once model code has run: every frame it
 * sends is size-checked before it is read, anything unexpected (garbage, an
 * unknown type, a truncated frame) ends that child, and no wait is without a
 * deadline — reads go through poll(), writes have SO_SNDTIMEO. The cell clock
 * stops while the sub-call callback runs. A timeout first sends SIGINT (the
 * cell gets a TimeoutError and the namespace survives); if the child has not
 * answered kill_grace seconds later it is killed and a fresh one started from
 * the same context fd. The child runs in its own process group so a
 * terminal's Ctrl-C does not reach it, with only fds 3 (socket) and 4
 * (context) open besides /dev/null.
 *
 * Namespaces. The child is started in new user, network, IPC and PID
 * namespaces when the kernel allows: no network interface but a down lo, no
 * System V IPC shared with anyone, no process visible or signalable but
 * itself. A process cannot move itself into a new PID namespace, so this is
 * the host's job, at spawn time. posix_spawn has no namespace flags, so the
 * host uses a fork-like clone(2) with the namespace flags; in the threaded
 * host the new process may only make async-signal-safe calls before execve
 * (dup2, open, close_range, sigaction, setpgid), with everything prepared
 * beforehand and exec failures reported through a close-on-exec pipe. The
 * flag sets are tried strongest first (a non-root user may lack user
 * namespaces; root without them still gets the others) and the first that
 * works is kept for restarts; when none does, posix_spawn starts the child
 * without namespaces and the layer report says why. */
#include "sandbox.h"

#include "frame.h"
#include "utf8.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define SANDBOX_START_TIMEOUT 10.0 /* seconds for spawn + preload + lockdown */
/* Loading the context into one str costs time in proportion to its size
 * (about 5 s per GB where fresh pages are dear): extra start-up seconds. */
#define SANDBOX_START_SECONDS_PER_GB 10.0
#define SANDBOX_SEND_TIMEOUT 10    /* seconds a blocked write to the child may take */
#define SANDBOX_MAX_BATCH 65536    /* prompts in one sub-call frame */
#define SANDBOX_RAW_STALL_MS 30000 /* a raw frame that stops arriving this long is dropped */
#define SANDBOX_FD_FLOOR 10        /* our fds to hand over sit above 3 and 4 */

struct sandbox {
    char *exe_path;
    int context_fd; /* our CLOEXEC dup, or -1 */
    size_t context_len;
    int context_pack;
    int data_fd;    /* our CLOEXEC dup of an external pack's data, or -1 */
    size_t data_len;
    char *search_cache_dir;
    pthread_t cache_thread;
    int cache_running;
    size_t memory_limit;
    double cell_timeout;
    double kill_grace;
    size_t output_limit;
    int unsafe_no_sandbox;
    int no_namespaces;
    int no_landlock;
    int ns_index;         /* entry of namespace_sets that worked; -1 before the first try */
    char ns_detail[256];  /* why namespaces are missing or partial */
    unsigned long long next_id; /* request ids: random start, then counting */
    pid_t pid;  /* -1 when there is no child */
    int sock;   /* -1 when there is no child */
    frame_reader reader;
    char layers[256];
    char warnings[512];
    char python[64];      /* the child's Py_GetVersion(), first word */
    char *layers_json;    /* [{"name","active","detail"}], strongest first */
};

/* Namespace sets to try, strongest first. */
static const struct {
    int flags;
    const char *names;
} namespace_sets[] = {
    {CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWPID, "user,net,ipc,pid"},
    {CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWPID, "net,ipc,pid"},
};
#define NAMESPACE_SETS ((int)(sizeof namespace_sets / sizeof namespace_sets[0]))

/* How a request ended. */
enum {
    WAIT_REPLY,       /* the expected frame arrived */
    WAIT_KILLED,      /* timed out and ignored SIGINT for kill_grace */
    WAIT_DIED,        /* the child closed the socket or could not be written to */
    WAIT_PROTOCOL     /* the child sent something it must not send */
};

/* State of one request (a cell or a variable read). */
typedef struct wait_state {
    double started;
    double timeout;      /* seconds of child time allowed; sub-calls excluded */
    double call_seconds; /* time spent in the callback */
    size_t n_calls;
    int interrupted;     /* SIGINT was sent */
    double kill_at;
    int stopped;         /* the callback asked to stop the run */
    sandbox_call_fn call;
    void *userdata;
    long long id;        /* the request id the reply must carry; -1: none (start-up) */
} wait_state;

/* ---- child processes ---- */

static void describe_status(int status, char *out, size_t len)
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

/* Kills and reaps the child (no zombie) and closes our end of its socket.
 * Returns its wait status, or -1 if there was none. */
static int stop_child(sandbox *sb)
{
    int status = -1;
    if (sb->pid > 0) {
        kill(sb->pid, SIGKILL);
        while (waitpid(sb->pid, &status, 0) < 0 && errno == EINTR)
            ;
    }
    if (sb->sock >= 0)
        close(sb->sock);
    sb->pid = -1;
    sb->sock = -1;
    frame_reader_reset(&sb->reader);
    /* The child is gone, so its end of the cache socket is closed: the
     * thread sees end of file and ends. */
    if (sb->cache_running)
        pthread_join(sb->cache_thread, NULL);
    sb->cache_running = 0;
    return status;
}

/* The exit status of a child that is going away by itself: waits a moment
 * for it to finish dying before killing it, so the report says what really
 * happened (a crash, an exit code) rather than our SIGKILL. */
static int collect_child(sandbox *sb)
{
    int status = -1;
    for (int i = 0; i < 50 && sb->pid > 0; i++) {
        pid_t rc = waitpid(sb->pid, &status, WNOHANG);
        if (rc == sb->pid) {
            sb->pid = -1;
            break;
        }
        if (rc < 0 && errno != EINTR)
            break;
        usleep(2000);
    }
    int killed = stop_child(sb);
    return status != -1 ? status : killed;
}

/* Everything the new process needs between clone and execve, prepared
 * before the clone so that it allocates nothing. */
typedef struct spawn_plan {
    const char *exe;
    char **argv;
    char **envp;
    int channel_fd;   /* becomes fd 3 */
    int context_fd;   /* becomes fd 4, or -1 */
    int data_fd;      /* becomes fd 5, or -1 */
    int cache_fd;     /* becomes fd 6, or -1 */
    int keep_stderr;
    int error_fd;     /* write end of the exec-error pipe, CLOEXEC, >= SANDBOX_FD_FLOOR */
} spawn_plan;

/* Runs in the cloned process: async-signal-safe calls only, never returns. */
static void exec_cloned(const spawn_plan *plan)
{
    int first_closed = 7;
    int handed[3] = {plan->context_fd, plan->data_fd, plan->cache_fd};
    if (dup2(plan->channel_fd, 3) < 0)
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

/* Starts the child in new namespaces. Returns its pid, or -1 with errno set
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
    int handed[3] = {plan->context_fd, plan->data_fd, plan->cache_fd};
    if (posix_spawn_file_actions_adddup2(&actions, plan->channel_fd, 3) != 0 ||
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

/* Tries the namespace sets from the one that worked last (all of them the
 * first time), then falls back to a plain spawn. */
static pid_t spawn_with_layers(sandbox *sb, const spawn_plan *plan, char *err, size_t errlen)
{
    if (!sb->unsafe_no_sandbox && !sb->no_namespaces) {
        int first = sb->ns_index >= 0 ? sb->ns_index : 0;
        buf why;
        buf_init(&why, sizeof sb->ns_detail);
        for (int i = first; i < NAMESPACE_SETS; i++) {
            pid_t pid = spawn_in_namespaces(plan, namespace_sets[i].flags);
            if (pid > 0) {
                sb->ns_index = i;
                snprintf(sb->ns_detail, sizeof sb->ns_detail, "%s%s%s", namespace_sets[i].names,
                         why.len ? "; refused: " : "", why.len ? why.data : "");
                buf_free(&why);
                return pid;
            }
            buf_printf(&why, "%s%s: %s", why.len ? "; " : "", namespace_sets[i].names,
                       strerror(errno));
        }
        sb->ns_index = NAMESPACE_SETS;
        snprintf(sb->ns_detail, sizeof sb->ns_detail, "not available: %s",
                 why.len ? why.data : "no namespace set left to try");
        buf_free(&why);
    } else {
        sb->ns_index = NAMESPACE_SETS;
        snprintf(sb->ns_detail, sizeof sb->ns_detail, "%s",
                 sb->unsafe_no_sandbox ? "unsafe_no_sandbox" : "switched off by the caller");
    }
    return spawn_plain(plan, err, errlen);
}

/* ---- the search-index cache, served to the child ----
 *
 * The child cannot open files, so the host keeps its search index cache
 * (search-<key>.idx in the cache directory) on its behalf, over a socket that
 * is the child's fd 6, served by one thread per child: 'L' + a 32-hex-digit
 * key is answered with one byte (1: found) and the file's descriptor; 'S' +
 * key is followed by the index until the child closes the socket, stored
 * through a temporary file renamed into place (the child validates an index
 * against the documents when it loads one, so a torn file is only a miss). */
typedef struct cache_server {
    int sock;
    char *dir;
} cache_server;

static int key_ok(const char *key)
{
    for (int i = 0; i < 32; i++)
        if (!((key[i] >= '0' && key[i] <= '9') || (key[i] >= 'a' && key[i] <= 'f')))
            return 0;
    return 1;
}

static void cache_reply(int sock, int fd)
{
    char status = fd >= 0;
    struct iovec iov = {.iov_base = &status, .iov_len = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof control.buf;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    }
    while (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
}

/* Copies the rest of the stream into path, atomically. */
static void cache_store(int sock, const char *path)
{
    char tmp[PATH_MAX + 32];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid()) >= sizeof tmp)
        return;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    char block[64 * 1024];
    size_t total = 0;
    int ok = 1;
    for (;;) {
        ssize_t n = read(sock, block, sizeof block);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            ok &= n == 0;
            break;
        }
        ok &= write_full(fd, block, (size_t)n) == 0;
        total += (size_t)n;
    }
    ok &= close(fd) == 0 && total > 0;
    if (!ok || rename(tmp, path) != 0)
        unlink(tmp);
}

static void *cache_main(void *arg)
{
    cache_server *cs = arg;
    char req[33];
    char path[PATH_MAX];
    while (read_full(cs->sock, req, sizeof req) == 0) {
        if ((req[0] != 'L' && req[0] != 'S') || !key_ok(req + 1))
            break;
        if ((size_t)snprintf(path, sizeof path, "%s/search-%.32s.idx", cs->dir, req + 1) >=
            sizeof path)
            break;
        if (req[0] == 'S') {
            mkdir(cs->dir, 0700);
            cache_store(cs->sock, path);
            break;
        }
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        cache_reply(cs->sock, fd);
        if (fd >= 0)
            close(fd);
    }
    close(cs->sock);
    free(cs->dir);
    free(cs);
    return NULL;
}

/* Starts the thread serving sock (taken on success). 0 or -1. */
static int cache_start(sandbox *sb, int sock)
{
    cache_server *cs = calloc(1, sizeof *cs);
    if (!cs || !(cs->dir = strdup(sb->search_cache_dir))) {
        free(cs);
        return -1;
    }
    cs->sock = sock;
    if (pthread_create(&sb->cache_thread, NULL, cache_main, cs) != 0) {
        free(cs->dir);
        free(cs);
        return -1;
    }
    sb->cache_running = 1;
    return 0;
}

static int spawn_child(sandbox *sb, char *err, size_t errlen)
{
    int sv[2] = {-1, -1}, child_end = -1, rc = -1;
    int cache_pair[2] = {-1, -1}, cache_child = -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        snprintf(err, errlen, "socketpair: %s", strerror(errno));
        goto fail;
    }
    /* Above 3 and 4 so the dup2 calls in the child cannot overwrite each other. */
    child_end = fcntl(sv[1], F_DUPFD_CLOEXEC, SANDBOX_FD_FLOOR);
    if (child_end < 0) {
        snprintf(err, errlen, "fcntl: %s", strerror(errno));
        goto fail;
    }
    if (sb->search_cache_dir &&
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, cache_pair) == 0) {
        cache_child = fcntl(cache_pair[1], F_DUPFD_CLOEXEC, SANDBOX_FD_FLOOR);
        close(cache_pair[1]);
        cache_pair[1] = -1;
        if (cache_child < 0) {
            close(cache_pair[0]);
            cache_pair[0] = -1;
        }
    }
    char *argv[] = {sb->exe_path, NULL};
    /* Large allocations (the context str, above all) get transparent huge
     * pages: on machines where a page fault is expensive this takes a 40 MB
     * context from ~150 ms to ~15 ms. CPython ignores the environment. */
    char tunables[] = "GLIBC_TUNABLES=glibc.malloc.hugetlb=1";
    char *envp[] = {tunables, NULL};
    spawn_plan plan = {
        .exe = sb->exe_path,
        .argv = argv,
        .envp = envp,
        .channel_fd = child_end,
        .context_fd = sb->context_fd,
        .data_fd = sb->data_fd,
        .cache_fd = cache_child,
        .keep_stderr = getenv("RLM_SANDBOX_STDERR") != NULL, /* debugging only */
        .error_fd = -1,
    };
    snprintf(err, errlen, "cannot start %s", sb->exe_path);
    pid_t pid = spawn_with_layers(sb, &plan, err, errlen);
    if (pid <= 0)
        goto fail;
    sb->pid = pid;
    sb->sock = sv[0];
    sv[0] = -1;
    if (cache_pair[0] >= 0 && cache_start(sb, cache_pair[0]) == 0)
        cache_pair[0] = -1;
    struct timeval send_timeout = {SANDBOX_SEND_TIMEOUT, 0};
    setsockopt(sb->sock, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof send_timeout);
    rc = 0;
fail:
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    if (child_end >= 0)
        close(child_end);
    if (cache_child >= 0)
        close(cache_child);
    if (cache_pair[0] >= 0)
        close(cache_pair[0]);
    return rc;
}

/* ---- waiting for frames ---- */

static int send_frame(sandbox *sb, json_t *frame, char *why, size_t whylen)
{
    if (!frame) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    int rc = frame_write(sb->sock, frame, FRAME_MAX, why, whylen);
    json_decref(frame);
    return rc;
}

/* Answers every prompt of a call with the same error, e.g. after a stop. */
static void fill_errors(char **results, size_t n, const char *message)
{
    for (size_t i = 0; i < n; i++) {
        free(results[i]);
        results[i] = strdup(message);
    }
}

/* For kind "rlm" with a context, the prompt the callback sees carries the
 * context after it: the callback's signature has no separate context, and a
 * degraded rlm_query (a plain sub-call) must still see what it is about. */
static char *compose_rlm_prompt(json_t *prompt, json_t *context)
{
    buf b;
    buf_init(&b, FRAME_MAX * 2);
    if (buf_append(&b, json_string_value(prompt), json_string_length(prompt)) != 0 ||
        buf_puts(&b, "\n\nContext:\n") != 0 ||
        buf_append(&b, json_string_value(context), json_string_length(context)) != 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_take(&b);
}

static int poll_timeout_ms(double seconds)
{
    if (seconds <= 0)
        return 0;
    double ms = ceil(seconds * 1000.0);
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* Reads the raw frame that follows a call frame with "prompt_lengths". The
 * child writes it right after the call frame, so this waits only while bytes
 * keep coming: a child that stalls mid-frame is a protocol error. */
static int read_raw_frame(sandbox *sb, const wait_state *ws, char **data, size_t *len, char *why,
                          size_t whylen)
{
    for (;;) {
        /* Bounded by the cell's wall time too, so a stalled child costs no more
         * than any other cell would. */
        int wait_ms = SANDBOX_RAW_STALL_MS;
        if (ws->interrupted || ws->timeout > 0) {
            double now = clock_now();
            double left = ws->interrupted ? ws->kill_at - now
                                          : ws->timeout - (now - ws->started - ws->call_seconds);
            int left_ms = poll_timeout_ms(left);
            wait_ms = left_ms < wait_ms ? left_ms : wait_ms;
        }
        struct pollfd p = {.fd = sb->sock, .events = POLLIN};
        int n = poll(&p, 1, wait_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(why, whylen, "the prompts of a call did not arrive");
            return -1;
        }
        int rc = frame_reader_step_raw(&sb->reader, sb->sock, data, len, why, whylen);
        if (rc == FRAME_READY)
            return 0;
        if (rc != FRAME_MORE)
            return -1;
    }
}

static int utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = utf8_sequence_length(p + i, len - i);
        if (n == 0)
            return 0;
        i += n;
    }
    return 1;
}

/* Points texts[i] into the raw frame: prompt i is lengths[i] bytes followed
 * by a NUL, back to back, filling the frame exactly. Invalid UTF-8 (only a
 * hostile child sends it) is repaired into owned[i]. 0, or -1 when the
 * lengths do not describe the frame. */
static int split_raw_prompts(json_t *lengths, const char *data, size_t len, const char **texts,
                             char **owned)
{
    size_t off = 0;
    for (size_t i = 0; i < json_array_size(lengths); i++) {
        json_t *l = json_array_get(lengths, i);
        if (!json_is_integer(l) || json_integer_value(l) < 0)
            return -1;
        size_t n = (size_t)json_integer_value(l);
        if (n >= len - off || data[off + n] != '\0')
            return -1;
        texts[i] = data + off;
        if (!utf8_valid(data + off, n)) {
            owned[i] = utf8_sanitize(data + off, n, NULL);
            if (!owned[i])
                return -1;
            texts[i] = owned[i];
        }
        off += n + 1;
    }
    return off == len ? 0 : -1;
}

/* Serves one "call" frame. Returns 0, or -1 with why set when the frame is
 * malformed (a protocol error) or the reply cannot be sent. Prompts come in
 * the frame ("prompts") or, for plain sub-calls, in a raw frame right after
 * it ("prompt_lengths"; docs/internals/sandbox-protocol.md): that skips a
 * JSON parse and a copy of a batch that may hold the whole input. */
static int serve_call(sandbox *sb, json_t *frame, wait_state *ws, char *why, size_t whylen)
{
    const char *kind_text = json_string_value(json_object_get(frame, "kind"));
    json_t *prompts = json_object_get(frame, "prompts");
    json_t *lengths = json_object_get(frame, "prompt_lengths");
    json_t *contexts = json_object_get(frame, "contexts");
    json_t *model = json_object_get(frame, "model");
    char *raw = NULL;
    size_t raw_len = 0;
    if (json_is_array(lengths)) {
        if (read_raw_frame(sb, ws, &raw, &raw_len, why, whylen) != 0)
            return -1;
        prompts = lengths; /* the same count and bounds checks apply */
    }
    size_t n = json_array_size(prompts);
    int kind = kind_text && strcmp(kind_text, "rlm") == 0   ? SANDBOX_CALL_RLM
               : kind_text && strcmp(kind_text, "llm") == 0 ? SANDBOX_CALL_LLM
                                                            : -1;
    if (kind < 0 || !json_is_array(prompts) || n == 0 || n > SANDBOX_MAX_BATCH ||
        (model && !json_is_null(model) && !json_is_string(model)) ||
        (contexts && !json_is_null(contexts) &&
         (!json_is_array(contexts) || json_array_size(contexts) != n))) {
        snprintf(why, whylen, "malformed call frame");
        free(raw);
        return -1;
    }
    int rc = -1;
    const char **texts = calloc(n, sizeof *texts);
    char **owned = calloc(n, sizeof *owned);
    char **results = calloc(n, sizeof *results);
    json_t *list = NULL;
    if (!texts || !owned || !results) {
        snprintf(why, whylen, "out of memory");
        goto fail;
    }
    if (raw) {
        if (split_raw_prompts(lengths, raw, raw_len, texts, owned) != 0) {
            snprintf(why, whylen, "malformed call frame (prompt lengths do not match)");
            goto fail;
        }
    }
    for (size_t i = 0; !raw && i < n; i++) {
        json_t *p = json_array_get(prompts, i);
        json_t *c = json_is_array(contexts) ? json_array_get(contexts, i) : NULL;
        if (!json_is_string(p) || (c && !json_is_null(c) && !json_is_string(c))) {
            snprintf(why, whylen, "malformed call frame");
            goto fail;
        }
        texts[i] = json_string_value(p);
        if (kind == SANDBOX_CALL_RLM && json_is_string(c)) {
            owned[i] = compose_rlm_prompt(p, c);
            if (!owned[i]) {
                snprintf(why, whylen, "out of memory");
                goto fail;
            }
            texts[i] = owned[i];
        }
    }
    if (ws->interrupted) {
        fill_errors(results, n, "Error: the cell was interrupted (wall time exceeded)");
    } else if (ws->stopped) {
        fill_errors(results, n, "Error: the run was stopped (a budget is exhausted or the "
                                "run was cancelled)");
    } else if (!ws->call) {
        fill_errors(results, n, "Error: sub-calls are not available here");
    } else {
        double t0 = clock_now();
        int call_rc = ws->call(ws->userdata, kind, json_string_value(model), texts, n, results);
        ws->call_seconds += clock_now() - t0;
        ws->n_calls += n;
        if (call_rc != 0) {
            ws->stopped = 1;
            fill_errors(results, n, "Error: the run was stopped (a budget is exhausted or the "
                                    "run was cancelled)");
        }
    }
    list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        const char *r = results[i] ? results[i] : "Error: no result";
        if (json_array_append_new(list, frame_string(r, strlen(r))) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    json_t *reply = list ? json_pack("{s:s, s:o, s:b}", "type", "call_result", "results", list,
                                     "stop", ws->interrupted || ws->stopped)
                         : NULL;
    list = NULL; /* json_pack took it, or failed and freed it */
    if (reply && frame_encoded_size(reply) > FRAME_MAX) {
        json_t *small = json_array();
        for (size_t i = 0; small && i < n; i++)
            json_array_append_new(small, json_string("Error: the results are too large to "
                                                     "return to the sandbox"));
        json_object_set_new(reply, "results", small);
    }
    rc = send_frame(sb, reply, why, whylen);
fail:
    for (size_t i = 0; i < n && results; i++)
        free(results[i]);
    for (size_t i = 0; i < n && owned; i++)
        free(owned[i]);
    free(results);
    free(owned);
    free(texts);
    free(raw);
    json_decref(list);
    return rc;
}

/* Reads frames until one of type `want`, serving calls meanwhile and
 * enforcing the timeout. *reply is set only for WAIT_REPLY. */
static int wait_reply(sandbox *sb, const char *want, wait_state *ws, json_t **reply, char *why,
                      size_t whylen)
{
    *reply = NULL;
    for (;;) {
        double now = clock_now();
        double used = now - ws->started - ws->call_seconds;
        if (!ws->interrupted && ws->timeout > 0 && used >= ws->timeout) {
            kill(sb->pid, SIGINT);
            ws->interrupted = 1;
            ws->kill_at = now + sb->kill_grace;
        }
        if (ws->interrupted && now >= ws->kill_at)
            return WAIT_KILLED;
        double left = ws->interrupted ? ws->kill_at - now
                      : ws->timeout > 0 ? ws->timeout - used
                                        : 3600;
        struct pollfd p = {.fd = sb->sock, .events = POLLIN};
        int n = poll(&p, 1, poll_timeout_ms(left));
        if (n < 0 && errno != EINTR) {
            snprintf(why, whylen, "poll: %s", strerror(errno));
            return WAIT_DIED;
        }
        if (n <= 0)
            continue;
        json_t *frame = NULL;
        int rc = frame_reader_step(&sb->reader, sb->sock, &frame, why, whylen);
        if (rc == FRAME_MORE)
            continue;
        if (rc == FRAME_EOF || rc == FRAME_IO_ERROR) {
            if (rc == FRAME_EOF)
                snprintf(why, whylen, "closed its end of the socket");
            return WAIT_DIED;
        }
        if (rc == FRAME_ERROR)
            return WAIT_PROTOCOL;
        const char *type = json_string_value(json_object_get(frame, "type"));
        if (type && strcmp(type, want) == 0) {
            json_t *id = json_object_get(frame, "id");
            if (ws->id >= 0 && (!json_is_integer(id) || json_integer_value(id) != ws->id)) {
                /* Model code wrote a frame to fd 3 itself. */
                snprintf(why, whylen, "a '%s' frame that does not answer the request (forged "
                                      "on the channel by model code?)", want);
                json_decref(frame);
                return WAIT_PROTOCOL;
            }
            *reply = frame;
            return WAIT_REPLY;
        }
        if (type && strcmp(type, "call") == 0) {
            rc = serve_call(sb, frame, ws, why, whylen);
            json_decref(frame);
            if (rc != 0)
                return WAIT_PROTOCOL;
            continue;
        }
        const char *message = json_string_value(json_object_get(frame, "message"));
        if (type && strcmp(type, "error") == 0 && message)
            snprintf(why, whylen, "%s", message); /* a start-up failure, explained */
        else
            snprintf(why, whylen, "unexpected frame of type '%.40s'", type ? type : "(none)");
        json_decref(frame);
        return WAIT_PROTOCOL;
    }
}

/* ---- start-up ---- */

static json_t *layer_entry(const char *name, int active, const char *detail)
{
    return json_pack("{s:s, s:b, s:s}", "name", name, "active", active, "detail", detail);
}

typedef struct layer_text {
    buf active;  /* "landlock(abi 7),namespaces(...),seccomp,rlimits" */
    buf absent;  /* "landlock, namespaces" */
    buf reasons; /* "landlock: not available: ...; ..." */
} layer_text;

static void add_layer(json_t *list, layer_text *t, const char *label, const char *name,
                      int active, const char *detail)
{
    json_array_append_new(list, layer_entry(name, active, detail));
    if (active) {
        buf_printf(&t->active, "%s%s", t->active.len ? "," : "", label);
    } else {
        buf_printf(&t->absent, "%s%s", t->absent.len ? ", " : "", name);
        buf_printf(&t->reasons, "%s%s: %s", t->reasons.len ? "; " : "", name, detail);
    }
}

/* The layers of the new child: the child's own report (trusted: no model code
 * has run in it yet) with the host's namespaces put in their place, strongest
 * first. Fills layers, warnings and layers_json. A child without seccomp and
 * rlimits is refused unless unsafe_no_sandbox was asked for. */
static int compose_layers(sandbox *sb, json_t *ready, char *err, size_t errlen)
{
    json_t *details = json_object_get(ready, "layer_details");
    json_t *list = json_array();
    layer_text t;
    buf_init(&t.active, sizeof sb->layers / 2);
    buf_init(&t.absent, sizeof sb->layers / 2);
    buf_init(&t.reasons, sizeof sb->warnings - 1);
    int rc = -1, floor = 0, ns_added = 0;
    if (!list) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    char ns_label[64];
    int have_ns = sb->ns_index >= 0 && sb->ns_index < NAMESPACE_SETS;
    snprintf(ns_label, sizeof ns_label, "namespaces(%s)",
             have_ns ? namespace_sets[sb->ns_index].names : "");
    if (sb->unsafe_no_sandbox) {
        static const char *const names[] = {"landlock", "namespaces", "seccomp", "rlimits"};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            add_layer(list, &t, names[i], names[i], 0, "off: unsafe_no_sandbox");
        snprintf(sb->layers, sizeof sb->layers, "none (unsafe)");
        floor = 2;
    }
    for (size_t i = 0; !sb->unsafe_no_sandbox && i < json_array_size(details); i++) {
        json_t *d = json_array_get(details, i);
        const char *name = json_string_value(json_object_get(d, "name"));
        const char *label = json_string_value(json_object_get(d, "label"));
        const char *detail = json_string_value(json_object_get(d, "detail"));
        int active = json_is_true(json_object_get(d, "active"));
        if (!name)
            continue;
        if (strcmp(name, "seccomp") == 0 && !ns_added) {
            add_layer(list, &t, ns_label, "namespaces", have_ns, sb->ns_detail);
            ns_added = 1;
        }
        add_layer(list, &t, label ? label : name, name, active, detail ? detail : "");
        if (active && (strcmp(name, "seccomp") == 0 || strcmp(name, "rlimits") == 0))
            floor++;
    }
    if (!sb->unsafe_no_sandbox && !ns_added)
        add_layer(list, &t, ns_label, "namespaces", have_ns, sb->ns_detail);
    if (floor < 2) {
        snprintf(err, errlen, "the sandbox floor (seccomp + rlimits) is not in force (%s); "
                              "refusing to run model code (unsafe_no_sandbox runs it "
                              "unconfined)",
                 t.reasons.len ? t.reasons.data : "the child reported no layers");
        goto fail;
    }
    if (!sb->unsafe_no_sandbox)
        snprintf(sb->layers, sizeof sb->layers, "%s%s%s%s", t.active.data ? t.active.data : "",
                 t.absent.len ? " (without: " : "", t.absent.len ? t.absent.data : "",
                 t.absent.len ? ")" : "");
    snprintf(sb->warnings, sizeof sb->warnings, "%s", t.reasons.len ? t.reasons.data : "");
    free(sb->layers_json);
    sb->layers_json = json_dumps(list, JSON_COMPACT);
    if (!sb->layers_json) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    rc = 0;
fail:
    buf_free(&t.active);
    buf_free(&t.absent);
    buf_free(&t.reasons);
    json_decref(list);
    return rc;
}

static int handshake(sandbox *sb, char *err, size_t errlen)
{
    char why[512] = "";
    json_t *init = json_pack("{s:s, s:i, s:b, s:I, s:I, s:I, s:f, s:b}", "type", "init",
                             "version", 1, "has_context", sb->context_fd >= 0, "context_len",
                             (json_int_t)sb->context_len, "output_limit",
                             (json_int_t)sb->output_limit, "memory_limit",
                             (json_int_t)sb->memory_limit, "cell_timeout", sb->cell_timeout,
                             "unsafe_no_sandbox", sb->unsafe_no_sandbox);
    if (init && sb->no_landlock)
        json_object_set_new(init, "skip_landlock", json_true());
    if (init && sb->context_pack) {
        json_object_set_new(init, "context_format", json_string("pack"));
        json_object_set_new(init, "has_data", json_boolean(sb->data_fd >= 0));
        json_object_set_new(init, "data_len", json_integer((json_int_t)sb->data_len));
    }
    if (init && sb->cache_running)
        json_object_set_new(init, "has_search_cache", json_true());
    if (send_frame(sb, init, why, sizeof why) != 0) {
        int status = collect_child(sb);
        char how[160] = "could not be reached";
        if (status != -1)
            describe_status(status, how, sizeof how);
        snprintf(err, errlen, "the sandbox process %s during start-up", how);
        return -1;
    }
    /* No SIGINT during start-up: the deadline ends it with SIGKILL. */
    double start_limit = SANDBOX_START_TIMEOUT + SANDBOX_START_SECONDS_PER_GB *
                         (double)(sb->context_len + sb->data_len) / 1e9;
    wait_state ws = {.started = clock_now(), .timeout = 0, .interrupted = 1,
                     .kill_at = clock_now() + start_limit, .id = -1};
    json_t *reply = NULL;
    int rc = wait_reply(sb, "ready", &ws, &reply, why, sizeof why);
    if (rc == WAIT_REPLY) {
        const char *python = json_string_value(json_object_get(reply, "python"));
        snprintf(sb->python, sizeof sb->python, "%.*s", python ? (int)strcspn(python, " ") : 0,
                 python ? python : "");
        int ok = compose_layers(sb, reply, err, errlen);
        json_decref(reply);
        if (ok != 0)
            stop_child(sb);
        return ok;
    }
    if (rc == WAIT_KILLED) {
        stop_child(sb);
        snprintf(err, errlen, "the sandbox was not ready after %.0f s", start_limit);
        return -1;
    }
    /* Start-up failures arrive as an "error" frame; why holds its message. */
    int status = collect_child(sb);
    char how[160] = "";
    if (status != -1)
        describe_status(status, how, sizeof how);
    snprintf(err, errlen, "the sandbox process failed during start-up: %s%s%s", why,
             how[0] ? "; it " : "", how);
    return -1;
}

static int start_child(sandbox *sb, char *err, size_t errlen)
{
    frame_reader_reset(&sb->reader);
    if (spawn_child(sb, err, errlen) != 0)
        return -1;
    return handshake(sb, err, errlen);
}

int sandbox_start(const sandbox_options *opts, sandbox **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!opts || !opts->exe_path || !*opts->exe_path) {
        snprintf(err, errlen, "no sandbox executable given");
        return -1;
    }
    sandbox *sb = calloc(1, sizeof *sb);
    if (!sb) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    sb->pid = -1;
    sb->sock = -1;
    sb->context_fd = -1;
    sb->data_fd = -1;
    sb->ns_index = -1;
    sb->no_namespaces = opts->no_namespaces != 0;
    sb->no_landlock = opts->no_landlock != 0;
    if (getrandom(&sb->next_id, sizeof sb->next_id, 0) != (ssize_t)sizeof sb->next_id)
        sb->next_id = (unsigned long long)(clock_wall() * 1e6) ^ (unsigned long long)getpid();
    sb->next_id &= (1ULL << 52) - 1; /* ids stay exact integers in any JSON reader */
    frame_reader_init(&sb->reader, FRAME_MAX);
    sb->exe_path = strdup(opts->exe_path);
    if (!sb->exe_path) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (opts->context_fd >= 0) {
        sb->context_fd = fcntl(opts->context_fd, F_DUPFD_CLOEXEC, SANDBOX_FD_FLOOR);
        if (sb->context_fd < 0) {
            snprintf(err, errlen, "cannot duplicate the context fd: %s", strerror(errno));
            goto fail;
        }
        sb->context_len = opts->context_len;
        sb->context_pack = opts->context_pack != 0;
    }
    if (opts->context_fd >= 0 && opts->context_pack && opts->data_fd >= 0) {
        sb->data_fd = fcntl(opts->data_fd, F_DUPFD_CLOEXEC, SANDBOX_FD_FLOOR);
        if (sb->data_fd < 0) {
            snprintf(err, errlen, "cannot duplicate the context data fd: %s", strerror(errno));
            goto fail;
        }
        sb->data_len = opts->data_len;
    }
    if (opts->search_cache_dir && opts->search_cache_dir[0] &&
        !(sb->search_cache_dir = strdup(opts->search_cache_dir))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    sb->memory_limit = opts->memory_limit;
    if (sb->memory_limit == 0) {
        /* The input's bytes: in the pack, or in the external data fd. */
        size_t input = sb->context_len + sb->data_len;
        size_t extra = input > (SIZE_MAX - ((size_t)4 << 30)) / 4
                           ? SIZE_MAX - ((size_t)4 << 30)
                           : input * 4;
        sb->memory_limit = ((size_t)4 << 30) + extra;
    }
    sb->cell_timeout = opts->cell_timeout > 0 ? opts->cell_timeout : 120;
    sb->kill_grace = opts->kill_grace > 0 ? opts->kill_grace : 2;
    sb->output_limit = opts->output_limit ? opts->output_limit : 20000;
    if (sb->output_limit > FRAME_MAX / 8)
        sb->output_limit = FRAME_MAX / 8;
    sb->unsafe_no_sandbox = opts->unsafe_no_sandbox != 0;
    if (start_child(sb, err, errlen) != 0)
        goto fail;
    *out = sb;
    return 0;
fail:
    sandbox_free(sb);
    return -1;
}

/* ---- cells ---- */

static int restart(sandbox *sb, char *err, size_t errlen)
{
    stop_child(sb);
    return start_child(sb, err, errlen);
}

/* Ends a request that did not get its reply: learns how the child went,
 * restarts it, and writes a message for the model into out. Returns 0, or
 * -1 when no new child could be started (err says why). */
static int recover(sandbox *sb, int how, const wait_state *ws, const char *why, buf *out,
                   char *err, size_t errlen)
{
    char status_text[160] = "";
    if (how == WAIT_KILLED) {
        stop_child(sb);
        buf_printf(out, "TimeoutError: cell exceeded %g s wall time and did not stop when "
                        "interrupted; the sandbox was killed and restarted.",
                   sb->cell_timeout);
    } else if (how == WAIT_DIED) {
        int status = collect_child(sb);
        if (status != -1)
            describe_status(status, status_text, sizeof status_text);
        buf_printf(out, "[sandbox] the Python process died while running this (%s)%s",
                   status_text[0] ? status_text : why,
                   ws->interrupted ? " after the wall-time interrupt" : "");
        buf_puts(out, "; it was restarted.");
    } else {
        stop_child(sb);
        buf_printf(out, "[sandbox] the Python process broke the protocol (%s) and was "
                        "restarted.",
                   why);
    }
    buf_puts(out, " All variables were lost; `context` and the REPL functions are loaded "
                  "again.\n");
    return start_child(sb, err, errlen);
}

static char *json_strdup(json_t *s)
{
    return json_is_string(s) ? str_dup_len(json_string_value(s), json_string_length(s)) : NULL;
}

static void fill_cell(sandbox_cell *cell, json_t *reply, const wait_state *ws)
{
    cell->output = json_strdup(json_object_get(reply, "output"));
    if (!cell->output)
        cell->output = strdup("");
    json_t *chars = json_object_get(reply, "output_chars");
    cell->output_chars = json_is_integer(chars) && json_integer_value(chars) >= 0
                             ? (size_t)json_integer_value(chars)
                             : strlen(cell->output ? cell->output : "");
    cell->raised = json_is_true(json_object_get(reply, "raised"));
    cell->timed_out = ws->interrupted && json_is_true(json_object_get(reply, "interrupted"));
    cell->final_answer = json_strdup(json_object_get(reply, "final_answer"));
}

static void set_cell_message(sandbox_cell *cell, const char *text)
{
    free(cell->output);
    cell->output = strdup(text);
    cell->output_chars = strlen(text);
}

int sandbox_exec(sandbox *sb, const char *code, sandbox_call_fn call, void *userdata,
                 sandbox_cell *cell, char *err, size_t errlen)
{
    memset(cell, 0, sizeof *cell);
    double t0 = clock_now();
    if (sb->pid <= 0 && restart(sb, err, errlen) != 0) {
        set_cell_message(cell, "[sandbox] the Python sandbox is not available.\n");
        cell->raised = 1;
        return -1;
    }
    char why[512] = "";
    json_t *code_json = frame_string(code ? code : "", code ? strlen(code) : 0);
    long long id = (long long)sb->next_id++;
    json_t *request = code_json ? json_pack("{s:s, s:o, s:I}", "type", "exec", "code", code_json,
                                            "id", (json_int_t)id)
                                : NULL;
    if (request && frame_encoded_size(request) > FRAME_MAX) {
        json_decref(request);
        set_cell_message(cell, "[sandbox] the code is too large to run.\n");
        cell->raised = 1;
        return 0;
    }
    wait_state ws = {.started = clock_now(), .timeout = sb->cell_timeout, .call = call,
                     .userdata = userdata, .id = id};
    json_t *reply = NULL;
    int how = send_frame(sb, request, why, sizeof why) == 0
                  ? wait_reply(sb, "result", &ws, &reply, why, sizeof why)
                  : WAIT_DIED;
    int rc = 0;
    if (how == WAIT_REPLY) {
        fill_cell(cell, reply, &ws);
        json_decref(reply);
    } else {
        buf out;
        buf_init(&out, 4096);
        rc = recover(sb, how, &ws, why, &out, err, errlen);
        cell->output = buf_take(&out);
        cell->output_chars = strlen(cell->output ? cell->output : "");
        cell->raised = 1;
        cell->restarted = 1;
        cell->timed_out = how == WAIT_KILLED || (ws.interrupted && how == WAIT_DIED);
    }
    cell->call_seconds = ws.call_seconds;
    cell->n_calls = ws.n_calls;
    cell->seconds = clock_now() - t0 - ws.call_seconds;
    if (cell->seconds < 0)
        cell->seconds = 0;
    return rc;
}

int sandbox_get_var(sandbox *sb, const char *name, char **value, char *err, size_t errlen)
{
    *value = NULL;
    if (sb->pid <= 0 && restart(sb, err, errlen) != 0)
        return -1;
    char why[512] = "";
    json_t *name_json = frame_string(name ? name : "", name ? strlen(name) : 0);
    long long id = (long long)sb->next_id++;
    json_t *request = name_json ? json_pack("{s:s, s:o, s:I}", "type", "get_var", "name",
                                            name_json, "id", (json_int_t)id)
                                : NULL;
    wait_state ws = {.started = clock_now(), .timeout = sb->cell_timeout, .id = id};
    json_t *reply = NULL;
    int how = send_frame(sb, request, why, sizeof why) == 0
                  ? wait_reply(sb, "var", &ws, &reply, why, sizeof why)
                  : WAIT_DIED;
    if (how == WAIT_REPLY) {
        int found = json_is_true(json_object_get(reply, "found"));
        *value = json_strdup(json_object_get(reply, "value"));
        json_decref(reply);
        if (!*value)
            *value = strdup(found ? "" : "Error: no such variable");
        if (!*value) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        return found ? 0 : 1;
    }
    buf out;
    buf_init(&out, 4096);
    buf_puts(&out, "Error: reading the variable failed. ");
    if (recover(sb, how, &ws, why, &out, err, errlen) != 0) {
        buf_free(&out);
        return -1;
    }
    *value = buf_take(&out);
    return 1;
}

const char *sandbox_layers(const sandbox *sb)
{
    return sb ? sb->layers : "";
}

const char *sandbox_warnings(const sandbox *sb)
{
    return sb ? sb->warnings : "";
}

const char *sandbox_layers_json(const sandbox *sb)
{
    return sb && sb->layers_json ? sb->layers_json : "[]";
}

const char *sandbox_python_version(const sandbox *sb)
{
    return sb ? sb->python : "";
}

int sandbox_pid(const sandbox *sb)
{
    return sb ? (int)sb->pid : -1;
}

void sandbox_cell_clear(sandbox_cell *cell)
{
    if (!cell)
        return;
    free(cell->output);
    free(cell->final_answer);
    memset(cell, 0, sizeof *cell);
}

void sandbox_free(sandbox *sb)
{
    if (!sb)
        return;
    stop_child(sb);
    if (sb->context_fd >= 0)
        close(sb->context_fd);
    if (sb->data_fd >= 0)
        close(sb->data_fd);
    free(sb->search_cache_dir);
    free(sb->exe_path);
    free(sb->layers_json);
    free(sb);
}

/* ---- finding the executable ---- */

#ifndef RLM_SANDBOX_BUILD_PATH
#define RLM_SANDBOX_BUILD_PATH ""
#endif
#ifndef RLM_SANDBOX_INSTALL_PATH
#define RLM_SANDBOX_INSTALL_PATH ""
#endif

static int is_executable(const char *path)
{
    return path && path[0] && access(path, X_OK) == 0;
}

char *sandbox_find_exe(const char *configured)
{
    if (configured && configured[0])
        return strdup(configured);
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            buf b;
            buf_init(&b, PATH_MAX * 2);
            buf_printf(&b, "%s/rlm-sandbox", self);
            if (is_executable(b.data))
                return buf_take(&b);
            buf_reset(&b);
            buf_printf(&b, "%s/../libexec/rlm/rlm-sandbox", self);
            if (is_executable(b.data))
                return buf_take(&b);
            buf_free(&b);
        }
    }
    if (is_executable(RLM_SANDBOX_BUILD_PATH))
        return strdup(RLM_SANDBOX_BUILD_PATH);
    return strdup(RLM_SANDBOX_INSTALL_PATH);
}
