/* sandbox_spawn — how the host starts rlm-sandbox processes for sandbox.c:
 * spawned fresh (clone(2) into new namespaces, else posix_spawn), or forked
 * by a sandbox factory's zygote, a process that has already started Python
 * and imported the allowed modules. Internal to the host. (sandbox_find_exe,
 * declared in sandbox.h for the API, lives in sandbox_spawn.c too.)
 *
 * Ownership: descriptors passed in are borrowed (the new process gets its own
 * copies). A factory is reference-counted: sandbox_factory_new's caller holds
 * one reference (dropped by sandbox_factory_free), each sandbox started from
 * it another (sandbox_factory_hold / sandbox_factory_release), so a sandbox
 * may restart from it, or fall back to spawning, after its owner freed it. */
#ifndef RLM_SANDBOX_SPAWN_H
#define RLM_SANDBOX_SPAWN_H

#include "sandbox.h"

#include <sys/types.h>

/* Our descriptors to hand over sit at or above this, so the dup2 calls that
 * put them on 3..6 in the new process cannot overwrite each other. */
#define SANDBOX_FD_FLOOR 10

/* The descriptors a new child gets as fds 3, 4, 5 and 6 (the channel, the
 * first input, its external data, the search cache socket); -1 for none
 * (/dev/null). Each one given must be >= SANDBOX_FD_FLOOR. Borrowed. */
typedef struct sandbox_fds {
    int channel;
    int context;
    int data;
    int cache;
} sandbox_fds;

/* The namespaces a child runs in, for its layer report. */
typedef struct sandbox_namespaces {
    int active;       /* it runs in at least one namespace the host is not in */
    char names[64];   /* e.g. "user,net,ipc,pid"; "" when none */
    char detail[256]; /* the names and what the kernel refused; or why none */
} sandbox_namespaces;

/* 1 when the environment variable RLM_SANDBOX_FLOOR_ONLY is set (to
 * anything but "" or "0"): every sandbox and factory then refuses Landlock
 * and namespaces, as on a machine without them, so that the floor alone can
 * be tested. Read from the host's environment only (the child's is empty and
 * model code cannot reach the host's); it can only remove layers. */
int sandbox_floor_only(void);

/* Why namespaces are off when the caller or the environment said so. */
#define SANDBOX_FLOOR_ONLY_WHY "switched off by the host (RLM_SANDBOX_FLOOR_ONLY)"

/* Starts a fresh rlm-sandbox child with fds in place. With use_namespaces it
 * tries the namespace sets strongest first (user,net,ipc,pid, then
 * net,ipc,pid) from *ns_index on (-1: all of them; updated to the set that
 * worked, so restarts do not retry refused ones), then falls back to
 * posix_spawn; without, why_not says why (for the report). Fills *ns.
 * Returns the pid, or -1 with err. */
pid_t sandbox_spawn(const char *exe, const sandbox_fds *fds, int use_namespaces,
                    const char *why_not, int *ns_index, sandbox_namespaces *ns, char *err,
                    size_t errlen);

/* A wait status in words: "exited with status 3", "was killed by signal 9
 * (Killed - out of memory, or killed from outside)". */
void sandbox_describe_status(int status, char *out, size_t len);

/* Waits up to tries x 2 ms for *pid, a child that is going away by itself,
 * to exit. Returns its wait status and sets *pid to -1 once reaped; -1 when
 * it is still running (or already gone). */
int sandbox_reap_within(pid_t *pid, int tries);

/* ---- inputs (a sandbox's and a factory's) ---- */

#define SANDBOX_START_TIMEOUT 10.0 /* seconds for spawn + preload + lockdown */
/* Loading the context into one str costs time in proportion to its size
 * (about 5 s per GB where fresh pages are dear): extra start-up seconds. */
#define SANDBOX_START_SECONDS_PER_GB 10.0
/* Parsing a JSON input into Python objects costs more: about 25 s per GB on
 * the 2-core VM we measure on (100 MB of JSON lines: 2-5 s, loaded). */
#define SANDBOX_PARSE_SECONDS_PER_GB 60.0

/* Our own CLOEXEC duplicates of an input's descriptors, at or above
 * SANDBOX_FD_FLOOR, always as a pack (the only form the child reads): raw
 * bytes become the pack of one str whose external data is their descriptor
 * (pack_write_str), never a copy. 0, or -1 with err. */
int sandbox_input_copy(const sandbox_input *in, sandbox_input *out, char *err, size_t errlen);

/* Closes an input's descriptors and marks them -1. */
void sandbox_input_close(sandbox_input *in);

/* Seconds a process may take to load an input of its size. */
double sandbox_input_seconds(const sandbox_input *in);

/* Adds the fields describing an input (a sandbox_input_copy) to an init or
 * add_input frame. */
void sandbox_input_describe(json_t *frame, const sandbox_input *in);

/* ---- factories (sandbox_factory_new and _free are in sandbox.h) ---- */

/* Takes a reference for a sandbox; NULL is passed through. */
sandbox_factory *sandbox_factory_hold(sandbox_factory *f);

/* Drops a reference; the last one frees the factory. NULL is a no-op. */
void sandbox_factory_release(sandbox_factory *f);

/* 1 when a child of exe, with (use_namespaces) or without namespaces, can be
 * forked by f: the same executable and the same choice as the factory's. */
int sandbox_factory_fits(const sandbox_factory *f, const char *exe, int use_namespaces);

/* Forks a child from the zygote with fds in place; it then runs exactly like
 * a spawned child from the init frame on. With inputs > 0 it is given the
 * first `inputs` of the inputs the zygote holds (sandbox_factory_add_input)
 * instead of fds->context and fds->data, which must be -1; its init frame
 * must say so ("preloaded"). Thread-safe (one request at a time per
 * factory). The pid is a child of this process (CLONE_PARENT), to be reaped
 * like a spawned one. Fills *ns. Returns the pid, or -1 with err: the
 * factory has failed (its zygote died, hung or broke the protocol: it stays
 * failed, the zygote is killed), does not hold that many inputs, or this
 * fork failed; either way the caller spawns instead. */
pid_t sandbox_factory_fork(sandbox_factory *f, const sandbox_fds *fds, size_t inputs,
                           sandbox_namespaces *ns, char *err, size_t errlen);

/* How many inputs the factory keeps (its zygote may hold fewer, if it
 * failed). */
size_t sandbox_factory_input_count(sandbox_factory *f);

/* Input i of the factory: its name (the first's is "context"), our own
 * duplicates of its descriptors (the caller closes them) and its summary
 * (a new reference, or NULL). 0, or -1 with err. */
int sandbox_factory_input_copy(sandbox_factory *f, size_t i, char *name, size_t size,
                               sandbox_input *in, json_t **summary, char *err, size_t errlen);

#endif
