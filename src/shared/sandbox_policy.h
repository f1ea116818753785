/* sandbox_policy — the one list of what model code finds in the REPL: every
 * name rlm binds, which of them the sandbox puts back after each cell and
 * which the model may rebind, which take context=, and the modules model
 * code may import (and those refused with a pointer to what to use instead).
 * Compiled into the host library and into rlm-sandbox, so the child's
 * namespace, the host's checks and the system prompt's test read one list.
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
 * builtins module itself (docs/sandbox.md). */
#define SANDBOX_ALLOWED_MODULES(X)                                                        \
    X("re") X("json") X("math") X("collections") X("itertools") X("functools")            \
    X("statistics") X("string") X("textwrap") X("heapq") X("bisect") X("datetime")        \
    X("random") X("difflib") X("unicodedata") X("fractions") X("decimal")                 \
    X("dataclasses") X("typing") X("operator") X("copy") X("csv") X("io") X("ast")        \
    X("builtins")

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

/* The table's entry for name: an exact name, or a numbered family's prefix
 * followed by digits only ("context_12"); NULL when name is none of them. */
const sandbox_repl_name *sandbox_policy_find(const char *name);

/* The hint for a refused module (its top-level name), NULL for others. */
const char *sandbox_policy_refusal(const char *module);

#endif
