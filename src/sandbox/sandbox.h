/* sandbox — host side of the Python sandbox: starts the `rlm-sandbox` child,
 * hands it the context, runs cells, serves the sub-calls model code makes, and
 * enforces the per-cell wall timeout (SIGINT, then SIGKILL and a fresh child).
 *
 * Ownership: sandbox_start returns a handle freed by sandbox_free (which kills
 * the child). Every char* in a sandbox_cell is malloc'd and owned by the cell;
 * sandbox_cell_clear frees them. Strings passed in are borrowed; descriptors
 * passed in are borrowed and dup()ed (the sandbox keeps its own copies, so a
 * restarted child can load every input again). A factory is freed by
 * sandbox_factory_free; a sandbox started from it holds a reference of its
 * own, so either may go first.
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

#include <jansson.h>
#include <stdatomic.h>
#include <stddef.h>

typedef struct sandbox sandbox;

/* A sandbox factory: a zygote process that has started Python and imported
 * the allowed modules once, and forks ready-to-configure children from that
 * state (a few milliseconds each instead of a whole start-up). See
 * sandbox_factory_new. */
typedef struct sandbox_factory sandbox_factory;

/* One input handed to the sandbox. The first comes with sandbox_options (its
 * fields have the same names there) and becomes `context`; more are added
 * with sandbox_add_input. */
typedef struct sandbox_input {
    int context_fd;            /* readable, mmap-able fd holding the input (UTF-8 bytes or
                                  a pack); -1 for none (an empty str). Borrowed: the
                                  sandbox dup()s it, so restarts can reload it. */
    size_t context_len;        /* bytes in context_fd */
    int context_pack;          /* 1: context_fd is an ingest pack (ingest_pack, see
                                  docs/internals/context-format.md) and the variable may be
                                  a str, a list or a dict; 0: raw UTF-8 bytes, one str,
                                  which the sandbox hands the child as the pack of one str
                                  (a convenience of its tests and benches: the engine
                                  always hands over a pack, every input being an
                                  ingest_set) */
    int data_fd;               /* an external pack's data (the one input file), or -1;
                                  borrowed and dup()ed like context_fd. Set it to -1
                                  when unused (0 is a valid fd). */
    size_t data_len;           /* bytes of data_fd the pack refers to */
    int parsed;                /* 1: a pack of JSON or JSON lines (ingest_format), which the
                                  child parses into objects: it gets longer to load */
} sandbox_input;

typedef struct sandbox_options {
    const char *exe_path;      /* the rlm-sandbox executable (required) */
    /* The first input, `context` (also `context_0`): the fields of a
     * sandbox_input, documented there. */
    int context_fd;
    size_t context_len;
    int context_pack;
    int data_fd;
    size_t data_len;
    int parsed;
    const char *first_alias;   /* one more name for the first input, a numbered one of the
                                  policy table (a legacy session's "context_1"); NULL: none */
    const char *search_cache_dir; /* where search() indexes are kept (bm25-<key>.idx);
                                     NULL: none. The host builds the first input's index
                                     there from its own copy of the input and hands the
                                     child a read-only descriptor (sandbox_cache.h);
                                     nothing the child sends is stored. */
    size_t memory_limit;       /* RLIMIT_AS for the child in bytes; 0 = 4 GiB + 4 x the
                                  bytes of every input (context_len + data_len), counted
                                  again at each restart. An input added to a running
                                  child must fit in the limit it started with. */
    double cell_timeout;       /* seconds of wall time per cell, sub-calls excluded; 0 = 120 */
    double kill_grace;         /* seconds between SIGINT and SIGKILL; 0 = 2 */
    size_t output_limit;       /* characters of output kept per cell (head + tail); 0 = 20000 */
    int unsafe_no_sandbox;     /* 1: skip every layer (the caller records this) */
    int no_namespaces;         /* 1: do not try namespaces (tests, `rlm doctor`); reported */
    int no_landlock;           /* 1: do not apply Landlock (tests, `rlm doctor`); reported.
                                  RLM_SANDBOX_FLOOR_ONLY=1 in the environment sets both
                                  (and a factory's no_namespaces): the floor alone */
    const atomic_int *cancel; /* may be NULL. Non-zero (set from another thread or a
                                   signal handler) interrupts the running cell like a
                                   timeout and sandbox_exec reports it cancelled; read at
                                   least every 100 ms while sandbox_exec waits. Borrowed:
                                   must outlive the sandbox. */
    int factory_inputs;        /* 1: the inputs are the factory's (sandbox_factory_add_input:
                                  a conversation's), in order, and the first input's
                                  fields above are ignored; a forked child finds them in
                                  its zygote's memory, a spawned one loads them */
    sandbox_factory *factory;  /* NULL: spawn a new process; set: fork the child from this
                                  zygote (restarts too) when it runs the same exe_path with
                                  the same namespace choice (no_namespaces,
                                  unsafe_no_sandbox); when the zygote is gone or a fork
                                  fails, the child is spawned instead. The sandbox keeps a
                                  reference: the factory may be freed first. */
} sandbox_options;

/* The kind of sub-call model code made. */
enum { SANDBOX_CALL_LLM = 0, SANDBOX_CALL_RLM = 1 };

/* Serves a batch of sub-calls from model code (llm_query, llm_query_batched,
 * rlm_query, rlm_query_batched). Runs on the thread that called sandbox_exec.
 * `model` may be NULL (use the default sub-model). `contexts` is NULL when no
 * prompt of the batch came with a context (always for SANDBOX_CALL_LLM), else
 * n_prompts entries, each NULL (that prompt had none) or str() of the context
 * object as UTF-8; joining a context to its prompt, when no child RLM may be
 * started, is the callee's business. Every text comes with its length in
 * bytes (prompt_lens, context_lens: it may hold NUL bytes, and a NUL follows
 * it too). Prompts and contexts are borrowed, valid until the callback
 * returns (they point into the frame the child sent: no copy is made of a
 * large context). The callee fills results[i] for every i with a malloc'd
 * string — an error description ("Error: ...") for a prompt that failed,
 * never NULL — and result_lens[i] with its length when it may hold NUL bytes
 * (left at SIZE_MAX, the result is read up to its first NUL), and returns 0.
 * Returning -1 means the cell must stop (a budget is exhausted, its wall
 * limit passed or the user cancelled): the cell is interrupted, and every
 * prompt of the batch gets an error string (the callee's, when it filled
 * results[i], which it should, saying why). Time spent here does not count against the cell's
 * timeout, and the sandbox does not watch `cancel` meanwhile. */
typedef int (*sandbox_call_fn)(void *userdata, int kind, const char *model,
                               const char *const *prompts, const size_t *prompt_lens,
                               const char *const *contexts, const size_t *context_lens,
                               size_t n_prompts, char **results, size_t *result_lens);

/* A batch of prompts still arriving from the child: the sub-calls of a
 * plain batch (prompts, no contexts) can start while the rest come. */
typedef struct sandbox_batch sandbox_batch;

/* Serves a plain batch (no contexts) as its prompts arrive; given to
 * sandbox_exec_batched, called instead of sandbox_call_fn (same userdata,
 * same thread, same contract for results and the return value) as soon as
 * the call frame is in, before any prompt. The prompts come through
 * sandbox_batch_more. Returning SANDBOX_BATCH_DECLINE before reading any
 * has the batch read whole and served by the sandbox_call_fn instead. Prompts
 * the callee did not read are read and dropped after it returns. */
typedef int (*sandbox_batch_fn)(void *userdata, int kind, const char *model, sandbox_batch *b,
                                size_t n_prompts, char **results, size_t *result_lens);
#define SANDBOX_BATCH_DECLINE 1

/* The byte length prompt i was announced with (before it arrived). */
size_t sandbox_batch_length(const sandbox_batch *b, size_t i);
/* Reads from the child until a prompt more has arrived, at most timeout_ms
 * (-1: until one does). Returns how many have arrived (a prefix, in order);
 * *last is set once all have, or the child stopped sending or broke the
 * protocol (then fewer did, and the cell's child is replaced after the
 * callback returns). Only the callback's thread may call it. */
size_t sandbox_batch_more(sandbox_batch *b, int timeout_ms, int *last);
/* Prompt i (arrived) and its byte length (invalid UTF-8 repaired to U+FFFD;
 * a NUL follows it), or NULL once released. Borrowed until released or the
 * callback returns. */
const char *sandbox_batch_prompt(const sandbox_batch *b, size_t i, size_t *len);
/* Frees prompt i's bytes early (its request is over). Any thread may release
 * a prompt while the callback's thread reads later ones; each at most once. */
void sandbox_batch_release(sandbox_batch *b, size_t i);

/* The outcome of one cell. */
typedef struct sandbox_cell {
    size_t output_len;    /* bytes of output (it may hold NUL bytes: print('\0')) */
    char *output;         /* captured stdout + stderr, with a traceback appended if the
                             cell raised; head + tail kept within output_limit, with a
                             marker saying how many characters were cut */
    size_t output_chars;  /* characters the cell produced before cutting */
    int raised;           /* 1 if the cell ended in an exception (incl. timeout, cancel) */
    int timed_out;        /* 1 if the cell hit the wall timeout */
    int cancelled;        /* 1 if *options.cancel interrupted the cell (then timed_out
                             is 0 and the output says it was cancelled by the user) */
    int restarted;        /* 1 if the child died or had to be killed and a fresh one
                             replaced it: the model's variables were lost (every input
                             and every sandbox_set_var variable were given again) */
    size_t final_answer_len; /* bytes of final_answer, NUL bytes included */
    char *final_answer;   /* set when the cell called FINAL / FINAL_VAR or set
                             answer["ready"] = True; NULL otherwise */
    char *variables;      /* the model's variables after the cell, one bounded line
                             "name: type, ..." (NULL when the child sent none) */
    int final_literal;    /* 1: final_answer is the text of `FINAL(some words)` whose
                             words raised NameError or SyntaxError (the reference's
                             reading of it), not a value the code computed */
    double seconds;       /* wall time of the cell, sub-calls excluded */
    double call_seconds;  /* wall time spent serving sub-calls */
    size_t n_calls;       /* sub-call prompts served */
} sandbox_cell;

/* Starts a child and waits until it is locked down with the context loaded.
 * Returns 0, or -1 with a message in err (the executable is missing, the
 * context cannot be loaded, the lockdown failed, ...), or -2 when the input
 * itself is at fault: a JSON input that does not parse (err names the
 * document, the line and the column). */
int sandbox_start(const sandbox_options *opts, sandbox **out, char *err, size_t errlen);

/* Runs `code` in the persistent namespace. `call` serves sub-calls (NULL: they
 * fail with an error string). Always fills *cell. Returns 0 when the cell ran
 * (even if it raised, timed out or was cancelled — see the flags; a cancel
 * already set when it is called runs nothing and reports the cell cancelled),
 * -1 when the sandbox is broken beyond repair (a restart failed too); err
 * says why. */
int sandbox_exec(sandbox *sb, const char *code, sandbox_call_fn call, void *userdata,
                 sandbox_cell *cell, char *err, size_t errlen);

/* sandbox_exec, with plain batches of the cell served by batch_call as
 * their prompts arrive (sandbox_batch_fn); other calls go to call. */
int sandbox_exec_batched(sandbox *sb, const char *code, sandbox_call_fn call,
                         sandbox_batch_fn batch_call, void *userdata, sandbox_cell *cell, char *err,
                         size_t errlen);

/* Binds `name` to another input (a conversation's context_1, context_2, ...),
 * decoded like the first: raw UTF-8 bytes become one str (invalid bytes
 * U+FFFD), a pack a str, a list or a dict. The name must be a Python
 * identifier of at most 64 characters, and neither a fixed name of the
 * policy table (context, llm_query, grep, answer, ...: sandbox_policy.h),
 * nor an input's, nor one set with sandbox_set_var. The variable is protected like
 * `context` (restored after every cell) and survives restarts: a restarted
 * child loads every input again, in order. grep, chunks and search work on it
 * with context=<the variable> (or one of its documents). The descriptors are
 * borrowed and dup()ed; the child maps them, so a large input costs about its
 * size once. Returns 0, or -1 with err: a bad name, an input the child could
 * not load (the sandbox still works, without it; if the child died loading it,
 * a fresh one replaced it and the model's variables were lost), or a broken
 * sandbox; -2 (the sandbox works, without it) when the input itself is at
 * fault, as for sandbox_start. */
int sandbox_add_input(sandbox *sb, const char *name, const sandbox_input *in, char *err,
                      size_t errlen);

/* What the child found in input i (0: the first, then in sandbox_add_input
 * order) when it parsed it — a pack made with INGEST_JSON or INGEST_JSONL:
 * {"format": "json"|"jsonl", "type": "list", "length": N, "keys": [first
 * 40 of a dict], "item_types": {"dict": n, ...} (of the first 10,000
 * items or values), "first_keys": [a list's first record's keys],
 * "preview": a repr cut to 2,000 characters, "skipped": JSON lines that did
 * not parse, "problems": [the first 20, naming the line]}. NULL for a text
 * input. Borrowed; valid until the next restart or sandbox_free. */
const json_t *sandbox_input_summary(const sandbox *sb, size_t i);

/* Sets variable `name` to the str `value` (UTF-8; invalid bytes become U+FFFD),
 * e.g. a session's answer_1. Not protected: model code may rebind it. A
 * restarted child gets the values set here again (the latest per name). The
 * name follows sandbox_add_input's rules. Returns 0, or -1 with err (a bad
 * name, a value too large for a frame, a broken sandbox). */
int sandbox_set_var(sandbox *sb, const char *name, const char *value, char *err,
                    size_t errlen);

/* Binds `name` to the Python value of a JSON value (objects become dicts,
 * arrays lists), protected like an input: put back after every cell, and
 * set again in a restarted child. Binding "history_0" binds `history` too
 * (a conversation's earlier questions, sandbox_policy.h). The name follows
 * sandbox_add_input's rules and cannot be set again. Does not steal value
 * (the sandbox keeps a reference). Returns 0, or -1 with err, as
 * sandbox_set_var. */
int sandbox_set_value(sandbox *sb, const char *name, json_t *value, char *err, size_t errlen);

/* Reads variable `name` as str(value) for a FINAL_VAR(name) written in the
 * model's text. Returns 0 with *value set (malloc'd) and *value_len (may be
 * NULL) its length in bytes (NUL bytes included), 1 when there is no such
 * variable (*value is a message for the model), -1 on a broken sandbox. */
int sandbox_get_var(sandbox *sb, const char *name, char **value, size_t *value_len, char *err,
                    size_t errlen);

/* The data a question leaves for the next (docs/internals/snapshot-format.md):
 * bytes the child wrote, which the host keeps and hands to the next
 * question's child but never reads. */
typedef struct sandbox_snapshot {
    int fd;               /* a sealed memfd holding the bytes (its size is len); -1: none */
    size_t len;
    size_t variables;     /* how many variables it holds */
    json_t *not_carried;  /* what was left out, as the child said and the host checked:
                             [{"reason": "not_data"|"too_large"|"too_deep"|"cycle",
                               "count": n, "names": [the first few, identifiers]}] */
} sandbox_snapshot;

/* Asks the child for the data variables of its namespace, written into a
 * new memfd of at most max_bytes (larger variables are left out and said
 * so). Runs no model code: the child puts the namespace back first, then
 * looks at exact types only. Returns 0 with *out filled (the caller owns
 * it: sandbox_snapshot_clear); 1 when it could not be taken (err says why;
 * the child is fine); -1 when the child is gone (err says why; it is not
 * restarted). */
int sandbox_take_snapshot(sandbox *sb, size_t max_bytes, sandbox_snapshot *out, char *err,
                          size_t errlen);

/* Binds the variables of a snapshot (fd, len bytes: another child's
 * sandbox_take_snapshot) in the child, which validates all of it first.
 * The sandbox keeps its own duplicate of fd: a restarted child binds them
 * again. At most one per sandbox. Returns 0 (*variables, may be NULL, gets
 * how many were bound); 1 when the child refused it (a flawed snapshot, out
 * of memory: err says why, nothing was bound, the child is fine); -1 on a
 * broken sandbox. */
int sandbox_load_snapshot(sandbox *sb, int fd, size_t len, size_t *variables, char *err,
                          size_t errlen);

/* Closes the snapshot's fd and frees its list; *snap becomes empty. */
void sandbox_snapshot_clear(sandbox_snapshot *snap);

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

/* 1 when the current child was forked by a factory's zygote, 0 when it was
 * spawned (no factory, a factory that does not fit, or the fallback). */
int sandbox_forked(const sandbox *sb);

/* Starts a zygote: rlm-sandbox in zygote mode, with opts' exe_path and
 * namespace choice (no_namespaces, unsafe_no_sandbox; every other field is
 * ignored, the context fields above all). It runs in new user, network and
 * IPC namespaces when the kernel allows (the same fallbacks as a spawned
 * child, without the PID namespace, so the pids it reports are ours), starts
 * Python and imports the allowed modules, then forks a child for each
 * sandbox_start that names it: the child enters its own user, network, IPC
 * and PID namespaces and goes on exactly like a spawned child from the init
 * frame on (context, namespace, lockdown, ready); sandbox_layers says which
 * namespaces it really got. Forked children share the zygote's memory
 * copy-on-write.
 *
 * Returns without waiting for the zygote's start-up (~100 ms of CPU), which
 * overlaps the caller's work; the first fork waits for it (10 s at most).
 * Thread-safe afterwards: many threads may start sandboxes from one factory
 * at once (the forks are serialised inside, the start-ups are not). A zygote
 * that dies, hangs or fails to start leaves the factory failed for good:
 * sandboxes are then spawned. The zygote exits when this process closes its
 * channel (exits), like a child.
 *
 * The forked children are children of the calling process, not of the
 * zygote (CLONE_PARENT): they are reaped, and outlive the zygote, like
 * spawned ones.
 *
 * Returns 0 with *out set (free it with sandbox_factory_free), or -1 with
 * err (no executable, the process cannot be started). */
int sandbox_factory_new(const sandbox_options *opts, sandbox_factory **out, char *err,
                        size_t errlen);

/* The zygote's process id, -1 once it is gone (for tests and benchmarks). */
int sandbox_factory_pid(sandbox_factory *f);

/* Loads an input into the factory's zygote, once, for every sandbox
 * started later with factory_inputs (a conversation's: each question's
 * sandbox is forked with the inputs already in memory, shared copy-on-write,
 * instead of loading them again). The first input added becomes `context`
 * (name is ignored), the others are bound to `name` (rules of
 * sandbox_add_input). The descriptors are borrowed and dup()ed: the factory
 * keeps them, so a sandbox that cannot be forked (the zygote is gone)
 * spawns and loads every input itself. Returns 0 (also when the zygote
 * failed meanwhile: the input is kept for spawning); -2 when the input
 * itself is at fault (a .json that does not parse; err says why); -1 with
 * err when the zygote refused it otherwise. Not thread-safe with sandboxes
 * starting from the factory at the same time. */
int sandbox_factory_add_input(sandbox_factory *f, const char *name, const sandbox_input *in,
                              char *err, size_t errlen);

/* Kills the zygote. Sandboxes started from it live on (they restart by
 * spawning). NULL is a no-op. */
void sandbox_factory_free(sandbox_factory *f);

/* The rlm-sandbox executable to use: `configured` when set; else, when this
 * code runs from the shared library, the one beside it or in the installed
 * tree's libexec/rlm relative to it (a wheel's, a --prefix install's); else
 * the one next to the running program (an installed or built rlm) or in
 * libexec/rlm relative to it; else this build's own, else the configured
 * install prefix's. malloc'd; NULL only when out of memory. */
char *sandbox_find_exe(const char *configured);

void sandbox_cell_clear(sandbox_cell *cell);
/* Kills the child and frees everything. NULL is a no-op. */
void sandbox_free(sandbox *sb);

#endif
