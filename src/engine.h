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

#include <stddef.h>

#include "context.h"
#include "calls.h"
#include "ingest.h"
#include "rlm.h"
#include "trace.h"

/* auto: one plain call for inputs under direct_threshold tokens, an RLM
 * otherwise; rlm: always an RLM; direct: always one plain call (refused, as
 * a usage error, for an input no model window holds). */
enum { ENGINE_MODE_AUTO = 0, ENGINE_MODE_RLM = 1, ENGINE_MODE_DIRECT = 2 };

/* Estimated tokens above which direct mode is refused: larger than the
 * windows of current models, so such a request would only be rejected. */
#define ENGINE_DIRECT_MAX_TOKENS ((size_t)1000000)

typedef struct engine_params {
    const char *model;          /* root model */
    const char *sub_model;      /* model for llm_query when the code names none */
    int max_iterations;         /* root turns before the last "answer now" request */
    size_t output_limit;        /* characters of output per block shown to the root */
    double cell_timeout;        /* seconds per cell */
    size_t sandbox_memory;      /* RLIMIT_AS of the sandbox; 0 = its default */
    const char *sandbox_exe;    /* path of rlm-sandbox */
    int unsafe_no_sandbox;
    int stream;                 /* 1: stream root replies (progress shows them arriving) */
    /* The input as a document set (files, directories, JSONL, stdin); when
     * set it is used instead of the ctx argument of engine_run. */
    ingest_set *docs;
    int mode;                   /* ENGINE_MODE_*: how the question is answered */
    size_t direct_threshold;    /* auto: estimated tokens under which one plain call answers
                                   (0: never) */
    const char *search_cache_dir; /* where search() keeps its indexes; NULL: nowhere */
    /* Called with a one-line warning the user should see (a weaker sandbox
     * than this machine should allow, ...). May be NULL. */
    void (*warn)(void *userdata, const char *message);
    void *warn_data;
} engine_params;

typedef struct engine_outcome {
    rlm_status status;          /* RLM_OK (answer set), RLM_NO_ANSWER, or an error */
    char *answer;
    char *error;                /* why, when status is neither OK nor NO_ANSWER */
    int iterations;             /* root model calls made */
    size_t blocks;              /* code blocks run */
    size_t sub_calls;           /* sub-call prompts sent */
    size_t sub_call_errors;     /* of which failed */
    char *sandbox_layers;       /* confinement applied, e.g. "seccomp,rlimits" */
    const char *stopped_by;     /* the budget that ended the run ("max_cost", ...) or NULL */
    double cost_usd;            /* spent by the run; < 0 when any call's cost was unknown */
    double elapsed;             /* seconds */
    const char *mode;           /* "rlm" or "direct" (static) */
} engine_outcome;

typedef void (*engine_progress_fn)(void *userdata, const char *line);

/* Answers question over ctx (NULL: no context). Every model call goes
 * through c. Always fills *out and returns out->status. Every step is
 * recorded in t (may be NULL).
 *
 * When a budget runs out (calls.h refuses a call), no more code runs and no
 * more sub-calls are made: the cell in progress is interrupted, the root is
 * asked one last time for its best answer (prompt_last_turn_budget), and
 * stopped_by names the budget. The status is then RLM_OK with that answer,
 * or RLM_NO_ANSWER when it gave none. */
rlm_status engine_run(const engine_params *p, calls *c, trace *t, const context *ctx,
                      const char *question, engine_progress_fn progress, void *userdata,
                      engine_outcome *out);

void engine_outcome_clear(engine_outcome *out);

#endif
