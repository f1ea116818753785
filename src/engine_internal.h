/* engine_internal — what the engine's files share: the state of one run
 * (struct engine), the root history, a conversation's state, and the helpers
 * the child-RLM and conversation code use. Not a public contract: only the
 * four engine files include it. They call downward, but for the recursion of
 * the domain (an RLM's child is an RLM: engine.c <-> engine_children.c).
 *
 *   engine.c           one RLM's loop: root turns, cells, sub-calls, the last
 *                      request, compaction, direct mode, the run itself
 *   engine_node.c      what each node does around the loop: events, progress,
 *                      failures, the history, the store; its inputs into a
 *                      sandbox, their description and the first messages
 *   engine_children.c  rlm_query below the depth limit: child RLMs on threads
 *   engine_state.c     conversations: inputs (held by the conversation's
 *                      zygote), a fresh sandbox per question with the data
 *                      the last one left, answers, the session store */
#ifndef RLM_ENGINE_INTERNAL_H
#define RLM_ENGINE_INTERNAL_H

#include <jansson.h>

#include <pthread.h>
#include <stdatomic.h>

#include "engine.h"
#include "sandbox.h"

/* How much of each prompt and reply of a sub-call goes into the trace. */
#define TRACE_EXCERPT_CHARS 2000

typedef struct message {
    const char *role;
    char *content;
} message;

/* The root history: owned by the run, or by the conversation. */
typedef struct history {
    message *m;
    size_t n, cap;
} history;

/* One input of a conversation. */
typedef struct engine_input {
    ingest_set *docs;          /* borrowed */
    int announced;             /* described to the root already */
} engine_input;

struct engine_state {
    session *store;            /* borrowed; NULL: in memory only */
    history h;
    sandbox_factory *factory;  /* the conversation's zygote: holds every input, each
                                  question's sandbox is forked from it; NULL until the
                                  first question, or when it could not start (then each
                                  question's sandbox is spawned with the inputs) */
    int no_factory;            /* it could not start */
    size_t inputs_loaded;      /* inputs[0 .. inputs_loaded) are in the factory */
    engine_input *inputs;
    size_t n_inputs, cap_inputs;
    char **answers;            /* answers[k - 1] of question k (NULL: none) */
    json_t **histories;        /* histories[k - 1]: question k's messages, the
                                  variable history_{k-1} (NULL: none) */
    int questions;
    sandbox_snapshot data;     /* what the last question left (fd -1: nothing yet) */
    int data_question;         /* the question that left it */
    char *data_note;           /* for the next question's message: data that could not be
                                  carried or loaded, and why; NULL: none */
    char *resume_warning;      /* what a resumed session cannot give back, for the user */
    int layers_warned;         /* the weaker-sandbox warning was given once */
    int legacy_names;          /* a session recorded before context_0: the first input is
                                  also context_1, later ones context_2, ... */
    size_t question_start;     /* h.m[question_start] opens the current question */
};

/* The sandboxes alive in one tree of RLMs (engine_children.c): at most
 * `cap` at once, the top RLM's included. An RLM that is waiting for its own
 * children is not busy: a child may wait for a sandbox only while some
 * holder is busy (it will finish, or start waiting itself), so waiting
 * never deadlocks; otherwise it is refused. */
typedef struct engine_gate {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int cap;
    int alive;
    int busy;
} engine_gate;

/* The state of one run: the top RLM's, or a child's at a deeper level. */
typedef struct engine {
    const engine_params *p;
    calls *calls;
    trace *trace;
    sandbox *sb;
    engine_state *st;          /* the conversation, or NULL */
    history own;               /* the history when there is no conversation */
    history *h;
    const char *question;
    char *node;                /* call-tree id: "0", "0.1", ... */
    const char *parent;        /* the parent's id, NULL for the top RLM */
    sandbox_factory *factory;  /* children's sandboxes fork from it (the top RLM's, when
                                  max_depth > 1); NULL: they are spawned */
    int level;                 /* 1 for the top RLM, 2 for its children, ... */
    size_t children_started;   /* numbers this node's children */
    engine_progress_fn progress;
    void *progress_data;
    int turn;                  /* current root turn, 1-based */
    int budget_stop;           /* a budget refused a call: no more code, one last request */
    char *fatal;               /* a sub-call path failure that ends the run (replay miss) */
    engine_outcome *out;
    double start;
    double stream_shown;       /* when a streaming progress line was last shown */
    atomic_size_t stream_chars;     /* of the root reply streaming in (set on the I/O thread) */
    atomic_size_t stream_reasoning;
    double batch_started;      /* when the batch of sub-calls under way was sent */
    engine_gate *gate;         /* the tree's (the top RLM's own_gate) */
    engine_gate own_gate;      /* the top RLM's: initialised by engine_run_node */
    int gate_held;             /* this RLM holds one of the gate's sandboxes (children) */
    double deadline;           /* > 0: the parent's cell ends then, and this RLM with it */
    double cell_deadline;      /* > 0 while a cell runs with a wall limit: when it ends */
    buf last_sub_prompt;       /* the start of the last lone sub-call's prompt, for its
                                  preamble (engine_mark_preamble); bounded */
    struct engine_launch *launch;  /* the sandbox still starting (engine_start_sandbox_early) */
} engine;

/* ---- the loop (engine.c) ------------------------------------------------- */

/* Runs one RLM of the tree: node is its call-tree id, parent the RLM that
 * started it (NULL for the top, level 1; a child is one level below its
 * parent and forks its sandbox from the parent's factory). See engine_run. */
rlm_status engine_run_node(const engine_params *p, calls *c, trace *t, const char *question, const char *node, engine *parent,
                           engine_progress_fn progress, void *userdata, engine_outcome *out);

/* Counts one failed sub-call (result is its "Error: ..." string) and keeps
 * the first failure's message for the report. */
void engine_note_sub_failure(engine *e, const char *result);
/* A sub-call failure ends the run once the cell is interrupted: why is the
 * provider's message (the run's error says "sub-call failed: why"). */
void engine_sub_fatal(engine *e, const char *why);

/* Plain sub-calls on the sub-model (sandbox_call_fn's contract). */
int engine_sub_calls(engine *e, int kind, const char *model, const char *const *prompts,
                     const size_t *prompt_lens, size_t n, char **results, size_t *result_lens);

/* ---- the node's plumbing and its inputs (engine_node.c) -------------------- */

/* The effective recursion settings (engine_params' defaults applied). */
int engine_max_depth(const engine_params *p);
int engine_max_children(const engine_params *p);
double engine_child_share(const engine_params *p);

/* A malloc'd formatted string; NULL when out of memory. */
char *engine_strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

int engine_cancelled(const engine *e);
/* Whether the cell running (or this RLM, for a child whose parent's cell
 * has a wall limit) is past its wall limit. */
int engine_past_deadline(const engine *e);
/* The user cancelled: no answer, no last request. */
void engine_cancel(engine *e);
/* Records an event of e's node (adds node and parent). Steals fields. */
void engine_event(engine *e, const char *type, json_t *fields);
/* The same for progress that is no part of the record (trace_notify). */
void engine_notify(engine *e, const char *type, json_t *fields);
void engine_progress(engine *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void engine_fail(engine *e, rlm_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

int history_push(history *h, const char *role, char *content);
void history_truncate(history *h, size_t from);
void history_free(history *h);

/* The session store of this run (only the top RLM of a conversation has one). */
session *engine_store(const engine *e);
void engine_store_failed(engine *e, const char *what);
/* Appends a message (and saves it); takes content. -1 when out of memory. */
int engine_push(engine *e, const char *role, char *content);

json_t *engine_excerpt(const char *text, size_t max_chars);
/* text[0..len) as a JSON string (NUL bytes kept, invalid UTF-8 repaired),
 * null for NULL text: never NULL, for json_pack's "o". */
json_t *engine_text_json(const char *text, size_t len);
/* engine_excerpt of text[0..len), NUL bytes included. */
json_t *engine_excerpt_n(const char *text, size_t len, size_t max_chars);
/* The cut engine_excerpt_n makes, as bytes (a copy of at most max_chars
 * characters, not yet checked as UTF-8): NULL for a NULL text or out of
 * memory. For events written later, off the engine's thread (subcall_event). */
char *engine_excerpt_cut(const char *text, size_t len, size_t max_chars, size_t *out_len);
json_t *engine_usage_json(const lm_response *r);
json_t *engine_cost_json(double usd);
/* Checks the run's inputs against their files before a pass over them: a
 * file that shrank is cut to what is left, one rewritten in place noted,
 * each said as a warning. Returns 1 when any input changed. */
int engine_check_inputs(engine *e);

/* After the sandbox failed or was restarted (changed: the caller already
 * knows an input changed): when an input changed on disk
 * since it was read (a log rotated with copytruncate, rewritten), the
 * sandbox cannot be loaded again with what the model was told, and the run
 * stops as an input error that says so. Else the sandbox failure stands. */
void engine_sandbox_trouble(engine *e, int changed, const char *what, const char *err);

/* Every results[i] becomes "Error: what: why". */
void engine_fill_errors(char **results, size_t n, const char *what, const char *why);
/* A budget refused a call: no more code, one last request. */
void engine_budget_stop(engine *e, const char *detail);

/* The gate (engine_gate): a sandbox for a child RLM (0, or -1 with why:
 * none can be had without risking a deadlock, or the run is cancelled or
 * out of time), its release, and the RLM's waits for its children (its own
 * sandbox is then not busy: waiting 1, then 0 when they are done). */
int engine_gate_acquire(engine *e, char *why, size_t whylen);
void engine_gate_release(engine *e);
void engine_gate_waiting(engine *e, int waiting);

/* An input as the sandbox takes it (pack descriptors made for docs are
 * closed by engine_input_close), and its description for the root (which
 * also drops the host's pages of it; summary: what the sandbox found in a
 * parsed input, sandbox_input_summary, or NULL). */
int engine_input_open(ingest_set *docs, sandbox_input *in, char *err, size_t errlen);
void engine_input_close(const sandbox_input *in, const ingest_set *docs);
char *engine_input_describe(ingest_set *docs, const json_t *summary);
/* Warns (stderr, trace) of what the sandbox skipped parsing an input. */
void engine_input_problems(engine *e, const json_t *summary);
/* Starts this run's sandbox on one input (NULL: none), or, with
 * inputs_from, on the inputs that factory holds (a conversation's). */
int engine_start_sandbox(engine *e, ingest_set *docs, sandbox_factory *inputs_from);
/* The same start on a thread of its own, so that a spawned sandbox (tens
 * of milliseconds of interpreter start-up) comes up while the root model
 * thinks about its first turn; e->sb is NULL until engine_sandbox_wait.
 * 0, or -1 with the outcome set (its preparation failed). */
int engine_start_sandbox_early(engine *e, ingest_set *docs);
/* Waits for a start begun by engine_start_sandbox_early (none: 0 at once).
 * needed: the run goes on in it, so a failed start fails the run (-1, the
 * outcome set); otherwise (the run is over) a failure is only a warning. */
int engine_sandbox_wait(engine *e, int needed);
int engine_first_messages(engine *e, ingest_set *docs, const char *question);
/* A run on a pool's named input (engine_params.preloaded): its sandbox is
 * forked from the zygote holding the input, the run's own input (if any)
 * added as context_1, and the first messages describe both. 0, or -1 with
 * the outcome set. */
int engine_start_preloaded(engine *e, ingest_set *docs, const char *question);
/* The description of a named input and of a run's own input after it
 * (context_1). NULL when out of memory. */
char *engine_described_with_named(const engine_preloaded *pre, const char *own);
/* The system prompt of e's run: the user's template (system_prompt) or
 * rlm's, filled with description for {context_description}; *described
 * says it holds the description (the first message then leaves it out).
 * NULL when out of memory. */
char *engine_system_prompt(const engine *e, const char *description, int *described);

/* ---- child RLMs (engine_children.c) --------------------------------------- */

/* rlm_query / rlm_query_batched below the depth limit: one child RLM per
 * prompt, at most max_children at once. Fills every results[i]; returns 0. */
int engine_children(engine *e, const char *model, const char *const *prompts,
                    const size_t *prompt_lens, const char *const *contexts,
                    const size_t *context_lens, size_t n, char **results, size_t *result_lens);

/* ---- conversations (engine_state.c) --------------------------------------- */

/* The conversation's sandbox, running with every input loaded (and after a
 * resume, its namespace rebuilt). 0, or -1 with the outcome set. */
int engine_state_sandbox(engine *e);
/* The messages that open question `number`. -1 when out of memory. */
int engine_state_messages(engine *e, const char *question, int number);
/* Keeps the question's answer (NULL: none) for the next ones. */
void engine_state_answered(engine *e, int number, const char *answer);

#endif
