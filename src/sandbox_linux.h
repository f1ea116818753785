/* sandbox_linux — confinement of the rlm-sandbox child on Linux: resource
 * limits, no-new-privileges and a seccomp filter; landlock and namespaces are
 * meant to slot in as further layers here.
 *
 * Called once by the child after CPython is up, the allowed modules are
 * imported and the context is loaded, and before any model code runs. It is
 * irreversible by design: nothing after it can open a file, reach the network,
 * start a process or raise a limit. */
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
} sandbox_lockdown_options;

/* Applies every layer. Writes their names, comma separated, to layers (e.g.
 * "seccomp,rlimits"). Returns 0, or -1 with a message in err; on failure the
 * caller must not run model code (some layers may already be in force). */
int sandbox_lockdown(const sandbox_lockdown_options *opts, char *layers, size_t layers_len,
                     char *err, size_t errlen);

#endif
