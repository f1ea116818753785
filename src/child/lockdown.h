/* lockdown — confinement of the rlm-sandbox child on Linux, applied by
 * the child itself: no-new-privileges, rlimits, Landlock and a seccomp filter.
 * (The fourth layer, namespaces, is entered when the child is started, since
 * a process cannot move itself into a new PID namespace: by the host when it
 * spawns the child, or by a zygote's sandbox_fork_isolated when it forks it.)
 *
 * Called once by the child after CPython is up, the allowed modules are
 * imported and the context is loaded, and before any model code runs. It is
 * irreversible by design: nothing after it can open a file, reach the network,
 * start a process or a thread, or raise a limit. */
#ifndef RLM_LOCKDOWN_H
#define RLM_LOCKDOWN_H

#include <stddef.h>

struct sock_filter;

/* Defined when built with AddressSanitizer (GCC or Clang). */
#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANDBOX_ASAN 1
#endif
#endif

/* A seccomp program built ahead of time by sandbox_filter_build. */
typedef struct sandbox_filter {
    int for_pid;                /* the pid of the process it is for */
    unsigned short len;         /* instructions */
    struct sock_filter *code;   /* malloc'd; kept for the life of the process */
} sandbox_filter;

/* Builds the seccomp program sandbox_lockdown loads, for a process whose pid
 * will be for_pid (signals may go to it alone): a zygote builds it once for
 * its children, each pid 1 of its own PID namespace, where building it would
 * cost copy-on-write faults. Returns 0, or -1 with err. */
int sandbox_filter_build(int for_pid, sandbox_filter *out, char *err, size_t errlen);

typedef struct sandbox_lockdown_options {
    size_t memory_limit;   /* RLIMIT_AS in bytes; 0 leaves it unlimited */
    int unsafe_no_sandbox; /* 1: apply nothing, report "none (unsafe)" */
    int skip_landlock;     /* 1: do not apply Landlock (set by the host, for tests
                              and for `rlm doctor` comparisons); reported as off */
    const sandbox_filter *filter; /* prebuilt seccomp program, loaded when it is for
                                     this process's pid; NULL or another pid: the
                                     program is built here */
} sandbox_lockdown_options;

/* One confinement layer as applied (or not) in this process. */
typedef struct sandbox_layer_state {
    const char *name; /* "landlock", "seccomp", "rlimits" (static string) */
    int active;
    char label[40];   /* its entry in the layers string, e.g. "landlock(abi 7)" */
    char detail[192]; /* what it does here, or why it is not in force */
} sandbox_layer_state;

enum { SANDBOX_LOCKDOWN_LAYERS = 3 };

typedef struct sandbox_lockdown_report {
    sandbox_layer_state layers[SANDBOX_LOCKDOWN_LAYERS]; /* strongest first */
    size_t n;
} sandbox_lockdown_report;

/* What sandbox_fork_isolated did. */
typedef struct sandbox_fork_report {
    int pid;             /* the new process, in the caller's PID namespace; -1: failed */
    int error;           /* errno of the failure when pid is -1 */
    char namespaces[32]; /* the set it entered, e.g. "user,net,ipc,pid"; "" for none */
    char refused[192];   /* the sets the kernel refused, and why ("" when none was) */
} sandbox_fork_report;

/* What sandbox_fork_isolated remembers from one call to the next; zeroed
 * before the first. */
typedef struct sandbox_fork_memory {
    int first_set;      /* the namespace set that worked last */
    char refused[192];  /* why the stronger ones were refused */
} sandbox_fork_memory;

/* Forks a new process into new namespaces: user, network, IPC and PID, the
 * strongest set the kernel allows (sets refused before, per memory, are not
 * tried again, but still reported), or none when isolate is 0; when the
 * kernel refuses every set, none either, unless `required` (then no process
 * is made: report->refused says why). The
 * new process is the first of its PID namespace and a child of the caller's
 * parent (CLONE_PARENT), which reaps it. It is a raw clone(2): no atfork
 * handler runs, so the caller must have no other thread that could hold a
 * lock the new process needs (see sandbox_threads_idle), and must reinit what
 * a fork breaks itself (CPython: PyOS_BeforeFork and the AfterFork calls).
 *
 * Returns 0 in the new process, with no capabilities, every signal blocked
 * (it sets the mask it wants) and the caller's descriptors; returns 1 in the
 * caller with *report filled (report->pid -1 when no process could be made). */
int sandbox_fork_isolated(int isolate, int required, sandbox_fork_memory *memory,
                          sandbox_fork_report *report);

/* Waits at most `seconds` until every other thread of the process is blocked
 * in futex(2) — waiting for a condition or a lock, holding none the calling
 * thread could need in a fork of the process. Returns 0, or -1 when one stays
 * busy (or cannot be inspected). */
int sandbox_threads_idle(double seconds);

/* Applies every layer, each in the strongest form the kernel offers. Landlock
 * degrades (the report says why); seccomp and rlimits are the floor: if either
 * fails, returns -1 with a message in err and the caller must not run model
 * code (some layers may already be in force). Writes the active layers, comma
 * separated and strongest first, to layers (e.g. "landlock(abi 7),seccomp,
 * rlimits") and fills report (which may be NULL). */
int sandbox_lockdown(const sandbox_lockdown_options *opts, sandbox_lockdown_report *report,
                     char *layers, size_t layers_len, char *err, size_t errlen);

#endif
