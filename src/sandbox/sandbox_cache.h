/* sandbox_cache — the search-index service the host runs for one sandbox
 * child, on the socket that is the child's fd 6. The child, which cannot
 * open files, asks for the index of its first input; the host builds it from
 * its own copy of that input (or finds it in its cache directory, checked
 * like any untrusted file) and sends a read-only descriptor. Nothing the
 * child sends is ever written to a file: it can only ask.
 *
 * Ownership: sandbox_cache_start takes the socket and borrows the input's
 * descriptors (the sandbox keeps them open until after sandbox_cache_stop);
 * sandbox_cache_stop ends the thread and frees everything. */
#ifndef RLM_SANDBOX_CACHE_H
#define RLM_SANDBOX_CACHE_H

#include "sandbox.h"

typedef struct sandbox_cache sandbox_cache;

/* Serves sock (the host's end of the child's fd 6) on a thread of its own
 * until sandbox_cache_stop: each request is 'L' followed by the 32 hex
 * digits of the child's search_content_key for its first input, answered
 * with one byte, 1 with the index's descriptor attached (SCM_RIGHTS) or 0
 * (no index: the key is not the host's for that input, or the index could
 * not be built or stored; the child then builds one in its own memory).
 * Anything else on the socket ends the service. Returns 0 with *out set
 * (sock is then the service's), or -1 (sock is still the caller's). */
int sandbox_cache_start(const char *cache_dir, const sandbox_input *input, int sock,
                        sandbox_cache **out);

/* Stops a build in progress, wakes and joins the thread, closes the socket.
 * NULL is a no-op. */
void sandbox_cache_stop(sandbox_cache *c);

#endif
