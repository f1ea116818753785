/* sandbox_linux — confinement of the rlm-sandbox child on Linux, applied by
 * the child itself: no-new-privileges, rlimits, Landlock and a seccomp filter.
 * (The fourth layer, namespaces, is entered by the host when it spawns the
 * child, since a process cannot move itself into a new PID namespace.)
 *
 * Called once by the child after CPython is up, the allowed modules are
 * imported and the context is loaded, and before any model code runs. It is
 * irreversible by design: nothing after it can open a file, reach the network,
 * start a process or a thread, or raise a limit. */
#ifndef RLM_SANDBOX_LINUX_H
#define RLM_SANDBOX_LINUX_H

#include <stddef.h>

/* Defined when built with AddressSanitizer (GCC or Clang). */
#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANDBOX_ASAN 1
#endif
#endif

typedef struct sandbox_lockdown_options {
    size_t memory_limit;   /* RLIMIT_AS in bytes; 0 leaves it unlimited */
    int unsafe_no_sandbox; /* 1: apply nothing, report "none (unsafe)" */
    int skip_landlock;     /* 1: do not apply Landlock (set by the host, for tests
                              and for `rlm doctor` comparisons); reported as off */
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

/* Applies every layer, each in the strongest form the kernel offers. Landlock
 * degrades (the report says why); seccomp and rlimits are the floor: if either
 * fails, returns -1 with a message in err and the caller must not run model
 * code (some layers may already be in force). Writes the active layers, comma
 * separated and strongest first, to layers (e.g. "landlock(abi 7),seccomp,
 * rlimits") and fills report (which may be NULL). */
int sandbox_lockdown(const sandbox_lockdown_options *opts, sandbox_lockdown_report *report,
                     char *layers, size_t layers_len, char *err, size_t errlen);

#endif
