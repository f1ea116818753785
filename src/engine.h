/* engine — the RLM loop for one question: system prompt and context
 * description, root turns, code cells in the sandbox, sub-calls through the
 * call path (calls.h: budgets, cache, record/replay, the dispatcher),
 * final-answer detection, the turn limit and the budget stop.
 *
 * Ownership: the engine borrows the call path, trace and context; every
 * string in an engine_outcome is malloc'd and freed by engine_outcome_clear
 * (stopped_by is a static string). */
#ifndef RLM_ENGINE_H
#define RLM_ENGINE_H

#include <stdatomic.h>
#include <stddef.h>

#include "calls.h"
#include "ingest.h"
#include "rlm.h"
#include "session.h"
#include "trace.h"

/* auto: one plain call for inputs under direct_threshold tokens, an RLM
 * otherwise; rlm: always an RLM; direct: always one plain call (refused, as
 * a usage error, for an input no model window holds). */
enum { ENGINE_MODE_AUTO = 0, ENGINE_MODE_RLM = 1, ENGINE_MODE_DIRECT = 2 };

/* Estimated tokens above which direct mode is refused: larger than the
 * windows of current models, so such a request would only be rejected. */
#define ENGINE_DIRECT_MAX_TOKENS ((size_t)1000000)

/* Defaults of the bounds (engine_params). */
#define ENGINE_MAX_CHILD_BATCH 256
#define ENGINE_MAX_SANDBOXES 32
/* Bytes of data a conversation's question may leave for the next. */
#define ENGINE_SNAPSHOT_MAX ((size_t)256 << 20)

/* A pool's named input (rlm_pool_add_input), already in the memory of its
 * zygote: every run that uses it forks its sandbox from `factory`, where the
 * input is `context`, so its bytes are loaded once however many runs use it
 * at once. The rest describes it, made once when it was loaded. */
typedef struct engine_preloaded {
    struct sandbox_factory *factory; /* holds the input as its one input */
    const char *name;           /* the input's name in the pool */
    const char *description;    /* what the root is told about it */
    size_t tokens;              /* its estimated tokens (mode auto) */
    size_t bytes, documents;
    const char *direct_text;    /* the input as direct mode sends it, or NULL when it is
                                   too large to be answered by one call */
} engine_preloaded;

typedef struct engine_params {
    const char *model;          /* root model */
    const char *sub_model;      /* model for llm_query when the code names none */
    int max_iterations;         /* root turns before the last "answer now" request */
    const char *system_prompt;  /* the user's system prompt template (prompt_system_fill's
                                   placeholders), or NULL: rlm's own */
    size_t output_limit;        /* characters of output per block shown to the root */
    double cell_timeout;        /* seconds per cell, sub-calls excluded */
    double cell_wall;           /* wall seconds per cell with its sub-calls and child RLMs:
                                   past it, sub-calls in flight end, no more are served and
                                   the cell is interrupted; 0 = no limit */
    size_t sandbox_memory;      /* RLIMIT_AS of the sandbox; 0 = its default */
    size_t snapshot_max;        /* a conversation: bytes of data one question leaves for the
                                   next (docs/sessions.md); 0 = ENGINE_SNAPSHOT_MAX */
    const char *sandbox_exe;    /* path of rlm-sandbox */
    int unsafe_no_sandbox;
    int stream;                 /* 1: stream root replies (progress shows them arriving) */
    /* The input: a document set (files, directories, JSONL, stdin, or one
     * text given through the API, ingest_open_text); NULL: none. */
    ingest_set *docs;
    int mode;                   /* ENGINE_MODE_*: how the question is answered */
    size_t direct_threshold;    /* auto: estimated tokens under which one plain call answers
                                   (0: never) */
    const char *search_cache_dir; /* where search() keeps its indexes; NULL: nowhere */
    /* Called with a one-line warning the user should see (a weaker sandbox
     * than this machine should allow, ...). May be NULL. */
    void (*warn)(void *userdata, const char *message);
    void *warn_data;

    /* Recursion. Levels of RLMs allowed: 1 (the paper's setting) makes
     * rlm_query a plain llm_query on prompt + context; 3 lets the root start
     * children that start children. Each child is a whole RLM (its own
     * sandbox and root loop, the same root model unless rlm_query names one)
     * on its context (default: the prompt itself), run on its own thread. */
    int max_depth;              /* 0 = 1 */
    int max_children;           /* child RLMs of one batch running at once; 0 = 8 */
    int max_child_batch;        /* prompts one rlm_query_batched may start as child RLMs;
                                   a bigger batch is refused whole; 0 = 256 */
    int max_sandboxes;          /* sandboxes alive at once in the whole tree, the top RLM's
                                   included; 0 = 32 */
    double child_share;         /* share of the remaining budget each child may spend
                                   (calls_child); 0 = 0.5 */
    /* Compaction: when the root history's estimated tokens reach
     * compact_at x context_window, the older turns are summarised by the root
     * model into one note (variables stay in the sandbox). */
    size_t context_window;      /* tokens of the root model's window; 0 = 128000 */
    double compact_at;          /* fraction of the window; 0 = 0.85; >= 1: never */
    /* Set non-zero (from a signal handler, another thread) to cancel the
     * question: the cell in progress and the model requests in flight end,
     * the outcome is RLM_NO_ANSWER with error "cancelled". May be NULL. */
    const atomic_int *cancel;
    /* 1: any sub-call that fails (after its retries) ends the run with
     * RLM_ERR_MODEL. 0: only errors no retry can fix do (401, 403, 404, a
     * 400 on every prompt of a batch of several); others come back to model code as
     * "Error: ..." strings and are counted. */
    int strict;
    /* 1: mark prompt-cache breakpoints (lm_message.cache_point, cache_prefix)
     * on the system prompt, the latest turns and a batch's shared preamble;
     * providers that cache only where asked (Anthropic) then cache them. */
    int prompt_cache;
    /* A conversation (engine_state_new): NULL answers one question and frees
     * everything; set, the history, the sandbox and its inputs carry over
     * to the next engine_run, and the inputs come from the state (docs is
     * then ignored). */
    struct engine_state *state;
    /* A pool's zygote (rlm_pool): the top RLM's sandbox and every child's
     * are forked from it. NULL: the top sandbox is spawned and children fork
     * from a zygote of the run's own (max_depth > 1). Borrowed. */
    struct sandbox_factory *factory;
    /* A pool's named input, or NULL. Set, it is `context`, and the run's
     * own input (docs), when there is one, is `context_1`. Not with
     * a conversation (state). Borrowed. */
    const engine_preloaded *preloaded;
} engine_params;

typedef struct engine_outcome {
    rlm_status status;          /* RLM_OK (answer set), RLM_NO_ANSWER, or an error */
    char *answer;
    size_t answer_len;          /* its bytes: an answer may hold NUL bytes (FINAL("a\0b")) */
    char *error;                /* why, when status is neither OK nor NO_ANSWER */
    int iterations;             /* root model calls made */
    size_t blocks;              /* code blocks run */
    size_t sub_calls;           /* sub-call prompts sent */
    size_t sub_call_errors;     /* of which failed */
    size_t sub_calls_deduplicated; /* of which identical to an earlier one of the run or
                                   * conversation, answered with its reply, not sent */
    char *sub_call_error;       /* the first failure's message, or NULL */
    int permanent;              /* the error (status RLM_ERR_MODEL) is one no retry fixes:
                                 * a refused key, an unknown model, every prompt of a batch
                                 * refused, or a sub-call failed under strict */
    char *sandbox_layers;       /* confinement applied, e.g. "seccomp,rlimits" */
    const char *stopped_by;     /* the budget that ended the run ("max_cost", ...) or NULL */
    double cost_usd;            /* spent by the run; < 0 when any call's cost was unknown */
    double elapsed;             /* seconds */
    const char *mode;           /* "rlm" or "direct" (static) */
    size_t children;            /* child RLMs started, at every depth */
    size_t sandboxes;           /* sandboxes started, this one and every descendant's */
    int depth_reached;          /* deepest level of RLM that ran (1 = no children) */
    int question;               /* in a conversation, this question's number (1-based); else 0 */
    const char *how;            /* how the answer was given (static): "code", "final_literal",
                                   "FINAL in text", "FINAL_VAR in text", "last_reply",
                                   "direct"; NULL without an answer */
} engine_outcome;

typedef void (*engine_progress_fn)(void *userdata, const char *line);

/* Answers question over p->docs (NULL: no context). Every model call goes
 * through c. Always fills *out and returns out->status. Every step is
 * recorded in t (may be NULL).
 *
 * When a budget runs out (calls.h refuses a call), no more code runs and no
 * more sub-calls are made: the cell in progress is interrupted, the root is
 * asked one last time for its best answer (prompt_last_turn_budget), and
 * stopped_by names the budget. The status is then RLM_OK with that answer,
 * or RLM_NO_ANSWER when it gave none. */
rlm_status engine_run(const engine_params *p, calls *c, trace *t, const char *question, engine_progress_fn progress, void *userdata,
                      engine_outcome *out);

void engine_outcome_clear(engine_outcome *out);

/* Makes a named input for a pool (rlm_pool_add_input): a zygote of its own
 * (with p's sandbox_exe and unsafe_no_sandbox) with docs loaded as its
 * `context`, the description the root will be told (a parsed input's from
 * the zygote's parse), its estimated tokens and, when they are under
 * p->direct_threshold, its text for direct mode. docs is borrowed: nothing
 * in *out points into it (the zygote holds descriptors of its own, the text
 * is a copy), so it may be freed at once. 0 with *out filled (the caller's,
 * released by engine_preloaded_clear), or -1 with err; -2 when the input
 * itself is at fault (a .json that does not parse). */
int engine_preload(const engine_params *p, const char *name, ingest_set *docs,
                   engine_preloaded *out, char *err, size_t errlen);
void engine_preloaded_clear(engine_preloaded *pre);

/* The input as direct mode sends it to the model: the text (invalid UTF-8
 * replaced), each document under a "=== NAME ===" line when there are
 * several. docs NULL: "". NULL when out of memory. */
char *engine_direct_text(ingest_set *docs);

/* What the root model would be told about the input of a run with p and
 * docs: the description its first message holds, the named input
 * (p->preloaded) first when there is one. A parsed input (JSON, JSON lines)
 * is described from what a sandbox finds when it parses it: one is started
 * for that, and stopped. NULL with err set. */
char *engine_describe(const engine_params *p, ingest_set *docs, char *err, size_t errlen);

/* ---- conversations -------------------------------------------------------
 *
 * A conversation keeps, between questions, the root history and the data
 * its questions left, never a process: each question runs in a fresh
 * sandbox, forked from a zygote that holds the conversation's inputs
 * (loaded once), and starts with the data variables the previous question
 * left (a snapshot: str, numbers, lists, dicts, ..., the allowed modules;
 * not functions or classes, which the next question's first message
 * lists). Inputs: the first is `context` (also `context_0`), each later one
 * `context_1`, `context_2`, ... (described to the root with the question it
 * arrives with); after question k the answer is the variable `answer_k` and
 * its messages the list `history_{k-1}` (`history` is history_0). A
 * conversation always runs as an RLM (mode is ignored).
 *
 * With a store (session.h), every message, cell (its code, for the record),
 * answer and the data each question leaves are written as they happen;
 * engine_state_resume in a later process reads back the history, the
 * answers and the last data: nothing is re-run, no model is asked again. */
typedef struct engine_state engine_state;

/* store may be NULL (the conversation lives in memory only); borrowed. NULL
 * when out of memory. */
engine_state *engine_state_new(session *store);

/* Adds an input for the next question; docs is borrowed and must outlive
 * the state. Returns its number (1, 2, ...) or -1
 * when out of memory. */
int engine_state_add_input(engine_state *st, ingest_set *docs);

/* Number of questions asked so far (including those of earlier processes
 * after engine_state_resume). */
int engine_state_questions(const engine_state *st);

/* A session recorded before the first input was context_0 keeps its names:
 * the first input is also `context_1`, later ones `context_2`, ... (its
 * recorded code and history use them). Set before the first question. */
void engine_state_set_legacy_names(engine_state *st, int legacy);
int engine_state_legacy_names(const engine_state *st);

/* Reads the store's visible history, answers and last data into st. Call
 * after adding the same inputs, in the same order, as the process that
 * recorded the session. 0, or -1 with err. */
int engine_state_resume(engine_state *st, char *err, size_t errlen);

/* After engine_state_resume: what the session cannot give back, for the
 * user (a session recorded by an earlier rlm, whose variables were rebuilt
 * by re-running its cells, has only its history and answers), or NULL.
 * Borrowed. */
const char *engine_state_resume_warning(const engine_state *st);

/* 1 when the conversation holds data an earlier question left. */
int engine_state_has_data(const engine_state *st);

/* Kills the conversation's sandbox and frees the state. NULL is a no-op. */
void engine_state_free(engine_state *st);

#endif
