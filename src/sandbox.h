/* sandbox — host side of the Python sandbox: starts the `rlm-sandbox` child,
 * hands it the context, runs cells, serves the sub-calls model code makes, and
 * enforces the per-cell wall timeout (SIGINT, then SIGKILL and a fresh child).
 *
 * Ownership: sandbox_start returns a handle freed by sandbox_free (which kills
 * the child). Every char* in a sandbox_cell is malloc'd and owned by the cell;
 * sandbox_cell_clear frees them. Strings passed in are borrowed.
 *
 * Design: one child process per RLM. The child embeds CPython, keeps one
 * namespace for its whole life, and talks to the host over a socketpair with
 * frames of a 4-byte big-endian length followed by that many bytes of UTF-8
 * JSON (frame.h). The host is the only authority: the child can only ask
 * (sub-calls), never tell (limits, depth). All waiting on the child happens on
 * the caller's thread with poll() and a deadline. Time spent inside the
 * sub-call callback does not count against the cell's timeout. */
#ifndef RLM_SANDBOX_H
#define RLM_SANDBOX_H

#include <stddef.h>

typedef struct sandbox sandbox;

typedef struct sandbox_options {
    const char *exe_path;      /* the rlm-sandbox executable (required) */
    int context_fd;            /* readable, mmap-able fd holding the context bytes (UTF-8);
                                  -1 for no context. Borrowed: the sandbox dup()s it, so
                                  restarts can reload it. */
    size_t context_len;        /* bytes in context_fd */
    int context_pack;          /* 1: context_fd is an ingest pack (ingest_pack, see
                                  docs/internals/context-format.md) and `context` may be
                                  a str, a list or a dict; 0: raw UTF-8 bytes, one str */
    int data_fd;               /* an external pack's data (the one input file), or -1;
                                  borrowed and dup()ed like context_fd. Set it to -1
                                  when unused (0 is a valid fd). */
    size_t data_len;           /* bytes of data_fd the pack refers to */
    const char *search_cache_dir; /* where search() indexes are kept (search-<key>.idx);
                                     NULL: none. The host reads and writes the files for
                                     the child, which cannot. */
    size_t memory_limit;       /* RLIMIT_AS for the child in bytes;
                                  0 = 4 GiB + 4 x (context_len + data_len) */
    double cell_timeout;       /* seconds of wall time per cell, sub-calls excluded; 0 = 120 */
    double kill_grace;         /* seconds between SIGINT and SIGKILL; 0 = 2 */
    size_t output_limit;       /* characters of output kept per cell (head + tail); 0 = 20000 */
    int unsafe_no_sandbox;     /* 1: skip every layer (the caller records this) */
    int no_namespaces;         /* 1: do not try namespaces (tests, `rlm doctor`); reported */
    int no_landlock;           /* 1: do not apply Landlock (tests, `rlm doctor`); reported */
} sandbox_options;

/* The kind of sub-call model code made. */
enum { SANDBOX_CALL_LLM = 0, SANDBOX_CALL_RLM = 1 };

/* Serves a batch of sub-calls from model code (llm_query, llm_query_batched,
 * rlm_query, rlm_query_batched). Runs on the thread that called sandbox_exec.
 * `model` may be NULL (use the default sub-model). The callee fills results[i]
 * for every i with a malloc'd string — an error description ("Error: ...") for
 * a prompt that failed, never NULL — and returns 0. Returning -1 means the run
 * must stop (a budget is exhausted or the user cancelled): every prompt of the
 * batch then receives an error string and the cell is interrupted. */
typedef int (*sandbox_call_fn)(void *userdata, int kind, const char *model,
                               const char *const *prompts, size_t n_prompts,
                               char **results);

/* The outcome of one cell. */
typedef struct sandbox_cell {
    char *output;         /* captured stdout + stderr, with a traceback appended if the
                             cell raised; head + tail kept within output_limit, with a
                             marker saying how many characters were cut */
    size_t output_chars;  /* characters the cell produced before cutting */
    int raised;           /* 1 if the cell ended in an exception (incl. timeout) */
    int timed_out;        /* 1 if the cell hit the wall timeout */
    int restarted;        /* 1 if the child died or had to be killed and a fresh one
                             replaced it: all variables were lost (context reloaded) */
    char *final_answer;   /* set when the cell called FINAL / FINAL_VAR or set
                             answer["ready"] = True; NULL otherwise */
    double seconds;       /* wall time of the cell, sub-calls excluded */
    double call_seconds;  /* wall time spent serving sub-calls */
    size_t n_calls;       /* sub-call prompts served */
} sandbox_cell;

/* Starts a child and waits until it is locked down with the context loaded.
 * Returns 0, or -1 with a message in err (the executable is missing, the
 * context cannot be loaded, the lockdown failed, ...). */
int sandbox_start(const sandbox_options *opts, sandbox **out, char *err, size_t errlen);

/* Runs `code` in the persistent namespace. `call` serves sub-calls (NULL: they
 * fail with an error string). Always fills *cell. Returns 0 when the cell ran
 * (even if it raised or timed out — see the flags), -1 when the sandbox is
 * broken beyond repair (a restart failed too); err says why. */
int sandbox_exec(sandbox *sb, const char *code, sandbox_call_fn call, void *userdata,
                 sandbox_cell *cell, char *err, size_t errlen);

/* Reads variable `name` as str(value) for a FINAL_VAR(name) written in the
 * model's text. Returns 0 with *value set (malloc'd), 1 when there is no such
 * variable (*value is a message for the model), -1 on a broken sandbox. */
int sandbox_get_var(sandbox *sb, const char *name, char **value, char *err, size_t errlen);

/* Names of the confinement layers applied in the current child, strongest
 * first, e.g. "landlock(abi 7),namespaces(user,net,ipc,pid),seccomp,rlimits";
 * layers the machine refused follow as " (without: landlock, namespaces)";
 * "none (unsafe)" with unsafe_no_sandbox. Borrowed; valid until the next
 * restart or sandbox_free.
 *
 * Layers. Landlock, namespaces, seccomp and rlimits are each probed and
 * applied in the strongest form the kernel allows; Landlock and namespaces
 * degrade (sandbox_warnings says why), seccomp + rlimits are the floor:
 * sandbox_start fails without them unless unsafe_no_sandbox is set. */
const char *sandbox_layers(const sandbox *sb);

/* Why layers are missing, "" when none is: e.g. "landlock: not available:
 * Function not implemented (kernel built without Landlock)". A caller should
 * show it to the user once (it is a weaker sandbox, never a silent one).
 * Borrowed, like sandbox_layers. */
const char *sandbox_warnings(const sandbox *sb);

/* Every layer as a JSON array, strongest first:
 * [{"name": "landlock", "active": true, "detail": "ABI 7: ..."}, ...].
 * Borrowed, like sandbox_layers. */
const char *sandbox_layers_json(const sandbox *sb);

/* The child's Python version, e.g. "3.11.2". Borrowed, like sandbox_layers. */
const char *sandbox_python_version(const sandbox *sb);

/* Process id of the current child (for tests and benchmarks). */
int sandbox_pid(const sandbox *sb);

/* The rlm-sandbox executable to use: `configured` when set, else the one
 * next to the running program (an installed or built rlm), else
 * ../libexec/rlm/ beside it, else this build's own, else the install
 * prefix's. malloc'd; NULL only when out of memory. */
char *sandbox_find_exe(const char *configured);

void sandbox_cell_clear(sandbox_cell *cell);
/* Kills the child and frees everything. NULL is a no-op. */
void sandbox_free(sandbox *sb);

#endif
