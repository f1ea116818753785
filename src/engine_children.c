/* engine_children — rlm_query below the depth limit: each prompt starts a
 * child RLM (its own sandbox and root loop, a share of the run's budget
 * through calls_child) on a thread of its own, at most max_children at once;
 * what the child answers, or an "Error: ..." string, is what the parent's
 * code receives. A batch larger than max_child_batch is refused whole, and
 * the sandboxes alive in the whole tree are bounded by max_sandboxes (the
 * gate): without both, one rlm_query_batched at depth 3 could start
 * max_children^2 processes, and a batch of 65,536 as many child RLMs. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_internal.h"
#include "util.h"

/* One rlm_query of a batch: a whole RLM one level down, on its own thread,
 * with its own share of the budget (calls_child) and its own sandbox. */
typedef struct child_job {
    engine *parent;
    const char *prompt;
    size_t prompt_len;
    const char *context;       /* NULL: the prompt is the child's input */
    size_t context_len;
    const char *model;         /* NULL: the parent's root model */
    char *node;
    char *result;              /* what rlm_query returns */
    size_t result_len;         /* its bytes (an answer may hold NUL bytes) */
    engine_outcome out;
} child_job;

typedef struct child_pool {
    child_job *jobs;
    size_t n;
    size_t next;               /* the next job to take, under lock */
    pthread_mutex_t lock;
} child_pool;

/* ---- children -------------------------------------------------------------- */

static void child_run(child_job *j)
{
    engine *pe = j->parent;
    double t0 = clock_now();
    const char *input = j->context ? j->context : j->prompt;
    size_t input_len = j->context ? j->context_len : j->prompt_len;
    calls *cc = calls_child(pe->calls, engine_child_share(pe->p));
    ingest_set *docs = NULL;
    char err[512];
    j->result_len = SIZE_MAX;
    if (!cc) {
        j->result = engine_strf("Error: child RLM failed: out of memory");
    } else if (ingest_open_text(input, input_len, &docs, err, sizeof err) != 0) {
        j->result = engine_strf("Error: child RLM failed: %s", err);
    } else {
        engine_params cp = *pe->p;
        cp.docs = docs;
        cp.state = NULL;
        cp.mode = ENGINE_MODE_RLM;   /* the model asked for an RLM, not one plain call */
        cp.stream = 0;
        cp.warn = NULL;   /* the user's warning list is not thread-safe; the trace keeps them */
        if (j->model && j->model[0])
            cp.model = j->model;
        engine_run_node(&cp, cc, pe->trace, j->prompt, j->node, pe, NULL, NULL, &j->out);
        if (j->out.status == RLM_OK) {
            j->result = j->out.answer;
            j->result_len = j->out.answer_len;
            j->out.answer = NULL;
        } else if (j->out.status == RLM_NO_ANSWER) {
            j->result = engine_strf("Error: child RLM gave no answer: %s",
                                    j->out.error ? j->out.error : "no final answer");
        } else {
            j->result = engine_strf("Error: child RLM failed (%s): %s", rlm_status_name(j->out.status),
                                    j->out.error ? j->out.error : "no detail");
        }
    }
    if (trace_active(pe->trace)) {
        json_t *ev = json_pack("{s:s,s:s,s:s,s:o,s:s?,s:f,s:i,s:I}", "node", j->node, "parent",
                               pe->node, "status", rlm_status_name(j->out.status), "answer",
                               engine_excerpt_n(j->result,
                                                j->result_len == SIZE_MAX ? strlen(j->result)
                                                                          : j->result_len,
                                                TRACE_EXCERPT_CHARS),
                               "stopped_by",
                               j->out.stopped_by, "seconds", clock_now() - t0, "iterations",
                               j->out.iterations, "sub_calls", (json_int_t)j->out.sub_calls);
        trace_event(pe->trace, "child_end", ev);
    }
    ingest_free(docs);
    calls_free(cc);
}

static void *child_worker(void *arg)
{
    child_pool *pool = arg;
    for (;;) {
        pthread_mutex_lock(&pool->lock);
        size_t i = pool->next++;
        pthread_mutex_unlock(&pool->lock);
        if (i >= pool->n)
            return NULL;
        child_run(&pool->jobs[i]);
    }
}

/* rlm_query / rlm_query_batched below the depth limit: one child RLM per
 * prompt, at most max_children at once (this thread is one of them). */
int engine_children(engine *e, const char *model, const char *const *prompts,
                    const size_t *prompt_lens, const char *const *contexts,
                    const size_t *context_lens, size_t n, char **results, size_t *result_lens)
{
    size_t max_batch = (size_t)(e->p->max_child_batch > 0 ? e->p->max_child_batch
                                                          : ENGINE_MAX_CHILD_BATCH);
    if (n > max_batch) {
        char why[256];
        snprintf(why, sizeof why, "a batch of %zu child RLMs is more than one batch may start "
                 "(--max-child-batch %zu); send smaller batches, or use llm_query_batched for "
                 "plain sub-calls", n, max_batch);
        engine_fill_errors(results, n, "rlm_query_batched refused", why);
        engine_event(e, "child_batch_refused", json_pack("{s:i,s:I,s:I}", "turn", e->turn,
                                                         "batch", (json_int_t)n, "limit",
                                                         (json_int_t)max_batch));
        e->out->sub_call_errors += n;
        if (!e->out->sub_call_error)
            e->out->sub_call_error = engine_strf("rlm_query_batched refused: %s", why);
        return 0;
    }
    child_pool pool = {.n = n};
    pool.jobs = calloc(n ? n : 1, sizeof *pool.jobs);
    size_t n_threads = (size_t)engine_max_children(e->p);
    if (n_threads > n)
        n_threads = n;
    pthread_t *threads = calloc(n_threads ? n_threads : 1, sizeof *threads);
    if (!pool.jobs || !threads) {
        free(pool.jobs);
        free(threads);
        engine_fill_errors(results, n, "child RLM failed", "out of memory");
        return 0;
    }
    pthread_mutex_init(&pool.lock, NULL);
    for (size_t i = 0; i < n; i++) {
        child_job *j = &pool.jobs[i];
        j->parent = e;
        j->prompt = prompts[i];
        j->prompt_len = prompt_lens[i];
        j->context = contexts ? contexts[i] : NULL;
        j->context_len = j->context ? context_lens[i] : 0;
        j->model = model;
        j->node = engine_strf("%s.%zu", e->node, ++e->children_started);
        size_t input_len = j->context ? j->context_len : j->prompt_len;
        if (trace_active(e->trace))
            trace_event(e->trace, "child_start",
                     json_pack("{s:s,s:s,s:s,s:i,s:i,s:o,s:I,s:b}", "node", j->node, "parent",
                               e->node, "model",
                               model && model[0] ? model : e->p->model, "depth", e->level + 1,
                               "turn", e->turn, "prompt",
                               engine_excerpt_n(prompts[i], prompt_lens[i], TRACE_EXCERPT_CHARS),
                               "context_chars", (json_int_t)input_len, "has_context",
                               j->context != NULL));
    }
    engine_progress(e, "turn %d of %d · %zu child RLMs, %zu at a time", e->turn,
                    e->p->max_iterations, n, n_threads);
    size_t started = 0;
    engine_gate_waiting(e, 1);
    for (size_t t = 1; t < n_threads; t++)
        if (pthread_create(&threads[started], NULL, child_worker, &pool) == 0)
            started++;
    child_worker(&pool);
    for (size_t t = 0; t < started; t++)
        pthread_join(threads[t], NULL);
    engine_gate_waiting(e, 0);
    pthread_mutex_destroy(&pool.lock);

    for (size_t i = 0; i < n; i++) {
        child_job *j = &pool.jobs[i];
        results[i] = j->result ? j->result : engine_strf("Error: child RLM failed: out of memory");
        result_lens[i] = j->result ? j->result_len : SIZE_MAX;
        e->out->sub_calls += 1 + j->out.sub_calls;
        e->out->sub_call_errors += j->out.sub_call_errors;
        e->out->sub_calls_deduplicated += j->out.sub_calls_deduplicated;
        if (!e->out->sub_call_error && j->out.sub_call_error) {
            e->out->sub_call_error = j->out.sub_call_error;
            j->out.sub_call_error = NULL;
        }
        if (strncmp(results[i], "Error: ", 7) == 0) {
            engine_note_sub_failure(e, results[i]);
            /* What stopped the child for good (a refused key, an unknown
             * model) stops every level; under strict, so does any failure. */
            if (j->out.status == RLM_ERR_MODEL && j->out.permanent)
                engine_sub_fatal(e, j->out.error ? j->out.error : results[i] + 7);
            else if (e->p->strict)
                engine_sub_fatal(e, results[i] + 7);
        }
        e->out->children += 1 + j->out.children;
        e->out->sandboxes += j->out.sandboxes;
        if (j->out.depth_reached > e->out->depth_reached)
            e->out->depth_reached = j->out.depth_reached;
        free(j->node);
        engine_outcome_clear(&j->out);
    }
    free(pool.jobs);
    free(threads);
    /* A child that ran the whole tree's budget out: this level stops too. */
    if (calls_exhausted(e->calls) != BUDGET_NONE)
        engine_budget_stop(e, "a child RLM");
    return e->fatal ? -1 : 0;   /* -1 interrupts the cell; the run then ends */
}
