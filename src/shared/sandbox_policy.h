/* sandbox_policy — the one list of what model code finds in the REPL: every
 * name rlm binds, which of them the sandbox puts back after each cell and
 * which the model may rebind, which take context=, and the modules model
 * code may import (and those refused with a pointer to what to use instead);
 * the modules the child loads before its lockdown; and the namespaces a child
 * and a zygote run in. Compiled into the host library and into rlm-sandbox,
 * so the child's namespace, the host's checks, the system prompt's test, the
 * spawner and the zygote's fork read one list. (The system calls, rlimits and
 * Landlock rules are the lockdown's own: src/child/lockdown.c.)
 *
 * Ownership: everything here is constant data with static storage. */
#ifndef RLM_SANDBOX_POLICY_H
#define RLM_SANDBOX_POLICY_H

#include <stddef.h>

typedef enum sandbox_name_kind {
    SANDBOX_NAME_FUNCTION,  /* a REPL function of the `_rlm` module; restored after each cell */
    SANDBOX_NAME_DATA,      /* an input, a history, the answer dict; restored after each cell */
    SANDBOX_NAME_HELPER,    /* a C helper; bound once, a rebinding by the model stands */
    SANDBOX_NAME_HOST_VAR,  /* a value the host sets (answer_1, ...); the model may rebind it */
} sandbox_name_kind;

/* X(name, kind, takes_context, numbered). `numbered` names a family: the
 * name is a prefix completed by 0, 1, 2, ... (context_0 is the first input,
 * context_1 the second, ...; answer_1 the first question's answer).
 * takes_context: the function accepts context= (the helpers: which input to
 * work on; rlm_query: the child's input).
 *
 * The contract names (FUNCTION and DATA) are those of the reference library
 * `rlms` (FINAL and FINAL_VAR included: older versions of it, and the models
 * trained on them, finish with them); the helpers and answer_k are rlm's. */
#define SANDBOX_REPL_NAMES(X)                                  \
    X("context", SANDBOX_NAME_DATA, 0, 0)                      \
    X("context_", SANDBOX_NAME_DATA, 0, 1)                     \
    X("history", SANDBOX_NAME_DATA, 0, 0)                      \
    X("history_", SANDBOX_NAME_DATA, 0, 1)                     \
    X("answer", SANDBOX_NAME_DATA, 0, 0)                       \
    X("llm_query", SANDBOX_NAME_FUNCTION, 0, 0)                \
    X("llm_query_batched", SANDBOX_NAME_FUNCTION, 0, 0)        \
    X("rlm_query", SANDBOX_NAME_FUNCTION, 1, 0)                \
    X("rlm_query_batched", SANDBOX_NAME_FUNCTION, 0, 0)        \
    X("FINAL", SANDBOX_NAME_FUNCTION, 0, 0)                    \
    X("FINAL_VAR", SANDBOX_NAME_FUNCTION, 0, 0)                \
    X("SHOW_VARS", SANDBOX_NAME_FUNCTION, 0, 0)                \
    X("grep", SANDBOX_NAME_HELPER, 1, 0)                       \
    X("chunks", SANDBOX_NAME_HELPER, 1, 0)                     \
    X("search", SANDBOX_NAME_HELPER, 1, 0)                     \
    X("count_tokens", SANDBOX_NAME_HELPER, 0, 0)               \
    X("answer_", SANDBOX_NAME_HOST_VAR, 0, 1)

/* The top-level modules model code may import: the pure-computation
 * standard library. Each is imported before the lockdown, and its
 * attributes are put back after every cell. `ast` and `builtins` give
 * nothing new: the glue already uses ast, and `__builtins__` is the
 * builtins module itself (docs/sandbox.md). `time` is here because models
 * time their code: time.sleep only spends the cell's own --cell-timeout.
 * Models write code for a plain Python (the reference runs `exec` with any
 * import), so every module that computes without reaching outside the
 * process is worth its place; those already loaded by the ones above
 * (time, enum, abc, contextlib, numbers, calendar) cost nothing at start. */
#define SANDBOX_ALLOWED_MODULES(X)                                                        \
    X("re") X("json") X("math") X("collections") X("itertools") X("functools")            \
    X("statistics") X("string") X("textwrap") X("heapq") X("bisect") X("datetime")        \
    X("random") X("difflib") X("unicodedata") X("fractions") X("decimal")                 \
    X("dataclasses") X("typing") X("operator") X("copy") X("csv") X("io") X("ast")        \
    X("builtins") X("time") X("enum") X("abc") X("contextlib") X("numbers") X("calendar")  \
    X("pprint") X("html") X("struct") X("base64") X("binascii") X("zlib") X("array")

/* Modules refused with a hint rather than the plain list: model code that
 * reaches for threads or processes wants concurrent sub-calls, which the
 * batched functions give. X(module, hint). */
#define SANDBOX_CONCURRENCY_HINT                                                          \
    "the sandbox runs no threads or processes of model code. For sub-calls "              \
    "in parallel use llm_query_batched(prompts) or rlm_query_batched(prompts): "          \
    "they run concurrently on the host and return the answers in order"
#define SANDBOX_REFUSED_MODULES(X)                 \
    X("threading", SANDBOX_CONCURRENCY_HINT)       \
    X("_thread", SANDBOX_CONCURRENCY_HINT)         \
    X("concurrent", SANDBOX_CONCURRENCY_HINT)      \
    X("multiprocessing", SANDBOX_CONCURRENCY_HINT) \
    X("asyncio", SANDBOX_CONCURRENCY_HINT)

/* Modules the allowed ones import lazily, the glue's own needs and rlm's two
 * built-in modules: imported before the lockdown, after the allowed ones, so
 * library code finds them in sys.modules. Model code still cannot import
 * them by name (the guard allows SANDBOX_ALLOWED_MODULES only). */
#define SANDBOX_PRELOAD_MODULES(X)                                                        \
    X("_strptime") X("linecache") X("traceback")                                \
    X("encodings.ascii") X("encodings.latin_1") X("encodings.utf_8_sig")                  \
    X("encodings.utf_16") X("encodings.utf_16_le") X("encodings.utf_16_be")               \
    X("encodings.utf_32") X("encodings.cp1252") X("encodings.cp437")                      \
    X("encodings.unicode_escape") X("encodings.raw_unicode_escape") X("encodings.idna")   \
    X("_rlm") X("_rlm_docs")

/* The namespace sets a child runs in, strongest first: X(clone flags,
 * names). The host spawns a child into the first set the kernel allows
 * (sandbox_spawn.c) and a zygote forks its children the same way
 * (lockdown.c's sandbox_fork_isolated); a non-root user may lack user
 * namespaces, and root without them still gets the others. A zygote itself
 * runs in the same sets without the PID namespace, so that the pids of the
 * children it forks are valid in the host; they get their own PID namespace
 * when they are forked. The flags are <sched.h>'s CLONE_NEW*. */
#define SANDBOX_CHILD_NAMESPACES(X)                                        \
    X(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWPID, "user,net,ipc,pid") \
    X(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWPID, "net,ipc,pid")
#define SANDBOX_ZYGOTE_NAMESPACES(X)                                       \
    X(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC, "user,net,ipc")          \
    X(CLONE_NEWNET | CLONE_NEWIPC, "net,ipc")

typedef struct sandbox_namespace_set {
    int flags;           /* CLONE_NEW* */
    const char *names;   /* as the layer report says them */
} sandbox_namespace_set;

typedef struct sandbox_repl_name {
    const char *name;
    sandbox_name_kind kind;
    int takes_context;
    int numbered;
} sandbox_repl_name;

typedef struct sandbox_refused_module {
    const char *name;
    const char *hint;
} sandbox_refused_module;

extern const sandbox_repl_name sandbox_repl_names[];
extern const size_t sandbox_repl_names_count;
extern const char *const sandbox_allowed_modules[];
extern const size_t sandbox_allowed_modules_count;
extern const sandbox_refused_module sandbox_refused_modules[];
extern const size_t sandbox_refused_modules_count;
extern const char *const sandbox_preload_modules[];
extern const size_t sandbox_preload_modules_count;
extern const sandbox_namespace_set sandbox_child_namespaces[];
extern const size_t sandbox_child_namespaces_count;
extern const sandbox_namespace_set sandbox_zygote_namespaces[];
extern const size_t sandbox_zygote_namespaces_count;

/* The table's entry for name: an exact name, or a numbered family's prefix
 * followed by digits only ("context_12"); NULL when name is none of them. */
const sandbox_repl_name *sandbox_policy_find(const char *name);

/* The hint for a refused module (its top-level name), NULL for others. */
const char *sandbox_policy_refusal(const char *module);

#endif
