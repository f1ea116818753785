/* engine — the RLM loop: the root model writes code, the sandbox runs it,
 * sub-calls go through the call path, and the loop ends on a final answer, or
 * when the turns or a budget run out (then one last request asks for the answer). */
#include "engine.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"
#include "prompt.h"
#include "reply.h"
#include "sandbox.h"
#include "sandbox_spawn.h"
#include "subcall_event.h"
#include "engine_internal.h"
#include "tokens.h"
#include "utf8.h"
#include "util.h"

/* Consecutive empty root replies tolerated before the run gives up. */
#define MAX_EMPTY_REPLIES 3
/* Characters of the compaction note kept. */
#define COMPACT_NOTE_CHARS 20000

/* What a sub-call gets once the cell's wall limit has passed. */
static void engine_fill_deadline(engine *e, char **results, size_t *result_lens, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(results[i]);
        results[i] = NULL;
        result_lens[i] = SIZE_MAX;
    }
    char why[200];
    if (e->p->cell_wall > 0 && e->cell_deadline > 0 && clock_now() >= e->cell_deadline)
        snprintf(why, sizeof why, "the cell ran for its wall limit of %g s, sub-calls included "
                 "(--cell-wall)", e->p->cell_wall);
    else
        snprintf(why, sizeof why, "the parent RLM's cell reached its wall limit (--cell-wall)");
    engine_fill_errors(results, n, "sub-calls stopped", why);
}

/* ---- sub-calls from model code ------------------------------------------ */

/* The text model code gets back for one sub-call: the reply, or an error
 * string it can recognise. A reply cut off at the token limit is an error
 * that carries the partial text: passing it on as a whole answer would
 * silently corrupt whatever the code aggregates. */
static char *engine_call_result(const lm_response *r, size_t *len)
{
    buf b;
    buf_init(&b, SIZE_MAX / 2);
    size_t content_len = lm_content_len(r);
    if (r->error != LM_OK)
        buf_printf(&b, "Error: sub-call failed (%s): %s", lm_error_name(r->error),
                   r->error_message ? r->error_message : "no detail");
    else if (content_len == 0)
        buf_puts(&b, "Error: sub-call failed (empty): the model returned no text");
    else if (r->finish_reason && strcmp(r->finish_reason, "length") == 0)
        buf_puts(&b, "Error: sub-call reply was cut off at the output token limit; "
                     "partial reply follows:\n");
    if (r->error == LM_OK && content_len)
        buf_append(&b, r->content, content_len);
    *len = b.len;
    return buf_take(&b);
}

/* A sub-call error that every later call would meet too: the key refused,
 * the model unknown. Retrying, or letting model code go on with a column of
 * "Error: ..." strings, only hides it. */
static int permanent_error(const lm_response *r)
{
    return r->error == LM_ERR_HTTP && (r->http_status == 401 || r->http_status == 403 ||
                                       r->http_status == 404);
}

static int request_refused(const lm_response *r)
{
    return r->error == LM_ERR_HTTP && (r->http_status == 400 || r->http_status == 413 ||
                                       r->http_status == 422);
}

/* Counts one failed sub-call (its result string) and keeps the first one's
 * message for the report. */
void engine_note_sub_failure(engine *e, const char *result)
{
    e->out->sub_call_errors++;
    if (!e->out->sub_call_error)
        e->out->sub_call_error = engine_strf("%.1000s", result + (strncmp(result, "Error: ", 7) ? 0 : 7));
}

/* Ends the run after this cell: the model error that made a sub-call fail. */
void engine_sub_fatal(engine *e, const char *why)
{
    if (e->fatal)
        return;
    e->fatal = strdup(why);
    e->out->permanent = 1;
}

/* The counts of a batch of sub-calls, for batch_progress and batch_end. */
static json_t *engine_batch_json(engine *e, const lm_batch_progress *pr)
{
    return json_pack("{s:i,s:I,s:I,s:I,s:I,s:I,s:f}", "turn", e->turn, "batch", (json_int_t)pr->size,
                     "done", (json_int_t)pr->done, "in_flight", (json_int_t)pr->in_flight,
                     "failed", (json_int_t)pr->failed, "retried", (json_int_t)pr->retried,
                     "seconds", clock_now() - e->batch_started);
}

/* The dispatcher's watcher of a batch (lm_watch_fn), on this RLM's thread
 * while it waits: the progress line and the event listener see the batch
 * move, and the clock tick. */
static void engine_batch_watch(void *ctx, const lm_batch_progress *pr)
{
    engine *e = ctx;
    if (pr->done == pr->size)
        return;   /* the batch_end event says it */
    engine_progress(e, "turn %d of %d · batch of %zu (%zu in flight, %zu done%s)", e->turn,
                    e->p->max_iterations, pr->size, pr->in_flight, pr->done,
                    pr->failed ? ", some failed" : "");
    engine_notify(e, "batch_progress", engine_batch_json(e, pr));
}

/* The watcher of a root request: how long it has waited, what has streamed. */
static void engine_root_watch(void *ctx, const lm_batch_progress *pr)
{
    engine *e = ctx;
    if (pr->done == pr->size)
        return;
    engine_notify(e, "root_wait", json_pack("{s:i,s:s,s:f,s:I,s:I,s:I}", "turn", e->turn,
                                            "model", e->p->model, "seconds", clock_now() - e->batch_started,
                                            "chars", (json_int_t)atomic_load(&e->stream_chars),
                                            "reasoning_chars", (json_int_t)atomic_load(&e->stream_reasoning),
                                            "retried", (json_int_t)pr->retried));
}

/* A preamble shorter than this is not marked: Anthropic caches no prefix
 * under 1024 tokens (about 4 bytes each), and a breakpoint on one is wasted. */
#define PREAMBLE_MIN_BYTES 4096
/* Bytes of a lone sub-call's prompt kept to find the next one's preamble. */
#define PREAMBLE_KEPT_BYTES ((size_t)1 << 20)

/* The bytes a and b start with in common. */
static size_t common_prefix(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen, i = 0;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

/* Marks the preamble sub-call prompts share (the instructions before each
 * chunk) as a cached prefix: the same text for every prompt of a batch, or
 * for a lone prompt and the one before it. It is cut after its last newline,
 * so a block never ends inside a word or a UTF-8 sequence. */
static void engine_mark_preamble(engine *e, lm_message *msgs, size_t n)
{
    size_t shared = 0;
    if (n > 1) {
        shared = lm_message_len(&msgs[0]);
        for (size_t i = 1; i < n && shared >= PREAMBLE_MIN_BYTES; i++)
            shared = common_prefix(msgs[0].content, shared, msgs[i].content, lm_message_len(&msgs[i]));
    } else if (n == 1) {
        const buf *last = &e->last_sub_prompt;
        shared = last->len ? common_prefix(last->data, last->len, msgs[0].content, lm_message_len(&msgs[0])) : 0;
        size_t keep = lm_message_len(&msgs[0]) < PREAMBLE_KEPT_BYTES ? lm_message_len(&msgs[0]) : PREAMBLE_KEPT_BYTES;
        buf_reset(&e->last_sub_prompt);
        buf_append(&e->last_sub_prompt, msgs[0].content, keep);   /* out of memory: no mark next time */
    }
    while (shared > 0 && msgs[0].content[shared - 1] != '\n')
        shared--;
    if (shared < PREAMBLE_MIN_BYTES)
        return;
    for (size_t i = 0; i < n; i++)
        msgs[i].cache_prefix = shared;
}

/* Marks the prompt-cache breakpoints of a root request: the system prompt,
 * the end of what the previous request sent (the message before the last
 * assistant reply: what the provider cached last turn) and the newest
 * message (what the next turn will start with). */
static void engine_mark_history(lm_message *msgs, size_t n)
{
    if (n == 0)
        return;
    if (strcmp(msgs[0].role, "system") == 0)
        msgs[0].cache_point = 1;
    msgs[n - 1].cache_point = 1;
    for (size_t i = n - 1; i > 1; i--) {
        if (strcmp(msgs[i].role, "assistant") == 0) {
            msgs[i - 1].cache_point = 1;
            break;
        }
    }
}

/* A batch whose prompts are still arriving from the sandbox, as the call
 * path's feed (lm_feed): each prompt goes into its message as it arrives,
 * and its bytes are let go as soon as its request is over — a trace keeps
 * only the excerpt it shows. */
typedef struct engine_feed {
    sandbox_batch *b;
    lm_message *msgs;
    char **excerpts;     /* per prompt, when tracing: cut before its bytes go */
    size_t *excerpt_lens;
    size_t arrived;
} engine_feed;

static size_t engine_feed_more(void *ctx, int timeout_ms, int *last)
{
    engine_feed *f = ctx;
    size_t ready = sandbox_batch_more(f->b, timeout_ms, last);
    for (; f->arrived < ready; f->arrived++) {
        size_t len = 0;
        const char *text = sandbox_batch_prompt(f->b, f->arrived, &len);
        f->msgs[f->arrived].content = text ? text : "";
        f->msgs[f->arrived].content_len = text ? len : 0;
    }
    return ready;
}

/* On the dispatcher's I/O thread (or the caller's): request i is over. */
static void engine_feed_done(void *ctx, size_t i)
{
    engine_feed *f = ctx;
    if (f->excerpts && !f->excerpts[i])
        f->excerpts[i] = engine_excerpt_cut(f->msgs[i].content, lm_message_len(&f->msgs[i]),
                                            TRACE_EXCERPT_CHARS, &f->excerpt_lens[i]);
    f->msgs[i].content = NULL;
    f->msgs[i].content_len = 0;
    sandbox_batch_release(f->b, i);
}

/* Plain sub-calls (llm_query*, and rlm_query* at the last level) on the
 * sub-model; see sandbox_call_fn for the contract. With a batch still
 * arriving (stream: prompts and prompt_lens are NULL), each request goes out
 * as soon as its prompt is in (sandbox_batch_fn). */
static int engine_sub_calls_from(engine *e, int kind, const char *model, const char *const *prompts,
                                 const size_t *prompt_lens, sandbox_batch *stream, size_t n,
                                 char **results, size_t *result_lens)
{
    const char *use_model = model && model[0] ? model : e->p->sub_model;
    lm_message *msgs = calloc(n ? n : 1, sizeof *msgs);
    lm_request *reqs = calloc(n ? n : 1, sizeof *reqs);
    calls_reply *resps = calloc(n ? n : 1, sizeof *resps);
    char **excerpts = stream && trace_active(e->trace) ? calloc(n ? n : 1, sizeof *excerpts) : NULL;
    size_t *excerpt_lens = excerpts ? calloc(n ? n : 1, sizeof *excerpt_lens) : NULL;
    engine_feed feed = {.b = stream, .msgs = msgs, .excerpts = excerpts, .excerpt_lens = excerpt_lens};
    lm_feed fed = {engine_feed_more, engine_feed_done, &feed};
    size_t n_ready = n;
    int status = 0;
    if (!msgs || !reqs || !resps || (stream && trace_active(e->trace) && !excerpt_lens)) {
        engine_fill_errors(results, n, "sub-call failed", "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        msgs[i].role = "user";
        /* Not arrived yet: no content, its announced length (for the budget). */
        msgs[i].content = stream ? NULL : prompts[i];
        msgs[i].content_len = stream ? sandbox_batch_length(stream, i) : prompt_lens[i];
        reqs[i].model = use_model;
        reqs[i].messages = &msgs[i];
        reqs[i].n_messages = 1;
        reqs[i].cancel = e->p->cancel;
        reqs[i].deadline = e->cell_deadline;
    }
    if (e->p->prompt_cache)
        engine_mark_preamble(e, msgs, n);
    reqs[0].watch = engine_batch_watch;
    reqs[0].watch_ctx = e;
    engine_progress(e, "turn %d of %d · batch of %zu in flight", e->turn, e->p->max_iterations, n);
    const char *kind_name = kind == SANDBOX_CALL_RLM ? "rlm_query" : "llm_query";
    e->batch_started = clock_now();
    engine_event(e, "batch_start", json_pack("{s:i,s:s,s:s,s:I}", "turn", e->turn, "kind", kind_name,
                                             "model", use_model, "batch", (json_int_t)n));
    int rc = stream ? calls_sub_fed(e->calls, reqs, n, resps, &fed, &n_ready)
                    : calls_sub(e->calls, reqs, n, resps);
    if (rc == CALLS_OK && n_ready < n) {
        /* The child stopped sending its prompts: it is replaced after this
         * batch, whose answers it will never read. */
        for (size_t i = n_ready; i < n; i++)
            lm_response_fail(&resps[i].r, LM_ERR_CANCELLED, "the prompt never arrived", NULL);
    }
    if (trace_active(e->trace)) {
        lm_batch_progress end = {.size = n, .done = n};
        for (size_t i = 0; rc == CALLS_OK && i < n; i++) {
            end.failed += resps[i].r.error != LM_OK;
            end.retried += resps[i].r.attempts > 1 ? (size_t)resps[i].r.attempts - 1 : 0;
        }
        if (rc != CALLS_OK)
            end.failed = n;
        json_t *ev = engine_batch_json(e, &end);
        json_object_set_new(ev, "refused", json_boolean(rc != CALLS_OK));
        engine_event(e, "batch_end", ev);
    }
    if (rc == CALLS_BUDGET) {
        char detail[128];
        snprintf(detail, sizeof detail, "a batch of %zu sub-calls", n);
        engine_budget_stop(e, detail);
        engine_fill_errors(results, n, "budget exhausted", calls_budget_message(e->calls));
        status = -1;   /* interrupts the cell: no more code runs */
        goto done;
    }
    if (rc == CALLS_REFUSED) {
        engine_fill_errors(results, n, "sub-call refused", calls_errmsg(e->calls));
        goto done;
    }
    if (rc != CALLS_OK) {
        e->fatal = strdup(calls_errmsg(e->calls));
        engine_fill_errors(results, n, "sub-call failed", calls_errmsg(e->calls));
        status = -1;
        goto done;
    }

    const char *stop = NULL;        /* why the run must end (borrowed from results) */
    int strict_stop = 0;
    size_t refused = 0;
    for (size_t i = 0; i < n; i++) {
        const lm_response *r = &resps[i].r;
        results[i] = engine_call_result(r, &result_lens[i]);
        e->out->sub_calls++;
        e->out->sub_calls_deduplicated += resps[i].deduplicated != 0;
        if (strncmp(results[i], "Error: ", 7) == 0) {
            engine_note_sub_failure(e, results[i]);
            if (!stop && (permanent_error(r) || e->p->strict)) {
                stop = results[i];
                strict_stop = !permanent_error(r);
            }
            refused += request_refused(r);
        }
        /* Every prompt of a batch refused: the requests themselves are wrong
         * (a parameter the endpoint rejects, a window smaller than any piece).
         * One prompt refused alone is the model's to fix: a too-long slice is
         * the common case, and its next try sends a smaller one. */
        if (i == n - 1 && !stop && n > 1 && refused == n)
            stop = results[i];
        /* Thousands of sub-calls per batch: without a trace, build no event
         * (excerpts included) only to throw it away. */
        if (!trace_active(e->trace)) {
            calls_reply_clear(&resps[i]);
            continue;
        }
        subcall_event *rec = calloc(1, sizeof *rec);
        if (rec) {
            size_t reply_len = 0;
            char *reply_cut = engine_excerpt_cut(results[i], result_lens[i], TRACE_EXCERPT_CHARS, &reply_len);
            *rec = (subcall_event){
                .turn = e->turn, .kind = kind_name, .model = strdup(use_model),
                .index = i, .batch = n, .error = r->error ? lm_error_name(r->error) : NULL,
                .finish_reason = r->finish_reason ? strdup(r->finish_reason) : NULL,
                .http_status = r->http_status, .seconds = r->seconds, .attempts = r->attempts,
                .prompt_tokens = r->prompt_tokens, .cached_tokens = r->cached_tokens,
                .cache_write_tokens = r->cache_write_tokens, .completion_tokens = r->completion_tokens,
                .cost_usd = resps[i].cost_usd, .cost_no_cache_usd = resps[i].cost_no_cache_usd,
                .cached = resps[i].cached, .deduplicated = resps[i].deduplicated,
                .sent = r->sent_at > 0, .sent_seconds = r->sent_at - e->batch_started,
                .node = strdup(e->node), .parent = e->parent ? strdup(e->parent) : NULL,
                .reply = reply_cut, .reply_len = reply_len};
            if (excerpts && excerpts[i]) {
                rec->prompt = excerpts[i];   /* the event takes it */
                rec->prompt_len = excerpt_lens[i];
                excerpts[i] = NULL;
            } else {
                rec->prompt = engine_excerpt_cut(msgs[i].content, lm_message_len(&msgs[i]),
                                                 TRACE_EXCERPT_CHARS, &rec->prompt_len);
            }
            subcall_event_emit(e->trace, rec);
        }
        calls_reply_clear(&resps[i]);
    }
    if (stop) {
        const char *why = stop + 7;
        if (strncmp(why, "sub-call failed ", 16) == 0 && strchr(why, ':'))
            why = strchr(why, ':') + 2;   /* "sub-call failed (http): " is said once, by the caller */
        char msg[2048];
        snprintf(msg, sizeof msg, "%s%.1900s", strict_stop ? "(strict: any failed sub-call ends the run) "
                                                           : "", why);
        engine_sub_fatal(e, msg);
        status = -1;   /* interrupts the cell: the run ends with this error */
    }
done:
    for (size_t i = 0; excerpts && i < n; i++)
        free(excerpts[i]);
    free(excerpts);
    free(excerpt_lens);
    free(msgs);
    free(reqs);
    free(resps);
    return status;
}

int engine_sub_calls(engine *e, int kind, const char *model, const char *const *prompts,
                     const size_t *prompt_lens, size_t n, char **results, size_t *result_lens)
{
    return engine_sub_calls_from(e, kind, model, prompts, prompt_lens, NULL, n, results, result_lens);
}

/* The sandbox's callback for a plain batch still arriving (sandbox_batch_fn):
 * requests go out as their prompts come. Everything that needs the whole
 * batch first, or none of it, is left to engine_serve_calls: a stop already
 * decided, child RLMs, a shared preamble to mark for a provider that caches
 * only marked prefixes. */
static int engine_serve_batch(void *userdata, int kind, const char *model, sandbox_batch *b,
                              size_t n, char **results, size_t *result_lens)
{
    engine *e = userdata;
    if (engine_past_deadline(e) || engine_cancelled(e) || e->budget_stop || e->fatal ||
        (e->p->prompt_cache && calls_sub_marks_cache(e->calls)) ||
        (kind == SANDBOX_CALL_RLM && e->level < engine_max_depth(e->p)))
        return SANDBOX_BATCH_DECLINE;
    int status = engine_sub_calls_from(e, kind, model, NULL, NULL, b, n, results, result_lens);
    if (status == 0 && engine_past_deadline(e)) {
        engine_fill_deadline(e, results, result_lens, n);
        status = -1;
    }
    return status;
}

/* The sandbox's sub-call callback (sandbox_call_fn). */
static int engine_serve_calls(void *userdata, int kind, const char *model,
                              const char *const *prompts, const size_t *prompt_lens,
                              const char *const *contexts, const size_t *context_lens, size_t n,
                              char **results, size_t *result_lens)
{
    engine *e = userdata;
    int status = 0;
    if (engine_past_deadline(e)) {
        engine_fill_deadline(e, results, result_lens, n);
        return -1;   /* the cell is interrupted: its time is up */
    }
    if (engine_cancelled(e)) {
        engine_fill_errors(results, n, "cancelled", "the user cancelled the question");
        status = -1;
    } else if (e->budget_stop || e->fatal) {
        engine_fill_errors(results, n, "budget exhausted", calls_budget_message(e->calls));
        status = -1;
    } else if (kind == SANDBOX_CALL_RLM && e->level < engine_max_depth(e->p)) {
        status = engine_children(e, model, prompts, prompt_lens, contexts, context_lens, n,
                                 results, result_lens);
    } else if (contexts) {
        /* At the last level a child would be one plain call on prompt + context. */
        char **joined = calloc(n, sizeof *joined);
        size_t *joined_lens = calloc(n, sizeof *joined_lens);
        int ok = joined && joined_lens;
        for (size_t i = 0; ok && i < n; i++) {
            buf b;
            buf_init(&b, SIZE_MAX / 2);
            buf_append(&b, prompts[i], prompt_lens[i]);
            if (contexts[i]) {
                buf_puts(&b, "\n\nContext:\n");
                buf_append(&b, contexts[i], context_lens[i]);
            }
            joined_lens[i] = b.len;
            joined[i] = buf_take(&b);
            ok = joined[i] != NULL;
        }
        if (ok)
            status = engine_sub_calls(e, kind, model, (const char *const *)joined, joined_lens, n,
                                      results, result_lens);
        else
            engine_fill_errors(results, n, "sub-call failed", "out of memory");
        for (size_t i = 0; joined && i < n; i++)
            free(joined[i]);
        free(joined);
        free(joined_lens);
    } else {
        status = engine_sub_calls(e, kind, model, prompts, prompt_lens, n, results, result_lens);
    }
    if (status == 0 && engine_past_deadline(e)) {
        /* The batch outlived the cell's wall limit (its requests were ended
         * at the deadline): the cell is interrupted, whatever came back. */
        engine_fill_deadline(e, results, result_lens, n);
        status = -1;
    }
    return status;
}

/* ---- root turns ---------------------------------------------------------- */

/* What a request to the root model came back with (engine_ask_root). */
typedef enum root_result {
    ROOT_FAILED = -1,  /* a fatal error (the outcome says why), or the user cancelled */
    ROOT_REPLY,        /* a reply to act on */
    ROOT_EMPTY,        /* an empty reply: the caller nudges, up to MAX_EMPTY_REPLIES */
    ROOT_BUDGET,       /* a budget refused the request: the last request follows */
} root_result;

/* How a turn, or the code of its reply, ended (engine_turn, engine_run_blocks,
 * engine_text_final_var). The run loop goes on while TURN_GO_ON. */
typedef enum turn_result {
    TURN_FAILED = -1,  /* fatal, or cancelled: the outcome says why */
    TURN_GO_ON,        /* no answer yet: the next turn */
    TURN_ANSWERED,     /* the outcome holds the answer */
    TURN_BUDGET,       /* a budget ran out: one last request, saying which */
    TURN_OUT_OF_TIME,  /* a child's parent cell reached its wall limit: no last request */
} turn_result;

/* Progress of a streamed root reply. Runs on the dispatcher's I/O thread
 * while the engine thread waits for this very call, so the two never touch
 * the engine at the same time; throttled to a few lines a second. */
static void engine_stream_progress(void *ctx, const lm_progress *pr)
{
    engine *e = ctx;
    atomic_store(&e->stream_chars, pr->content_chars);
    atomic_store(&e->stream_reasoning, pr->reasoning_chars);
    if (!e->progress)
        return;
    double now = clock_now();
    if (now - e->stream_shown < 0.1)
        return;
    e->stream_shown = now;
    if (pr->reasoning_chars)
        engine_progress(e, "turn %d of %d · %s writing: %zu chars, %zu reasoning", e->turn,
                        e->p->max_iterations, e->p->model, pr->content_chars, pr->reasoning_chars);
    else
        engine_progress(e, "turn %d of %d · %s writing: %zu chars", e->turn, e->p->max_iterations,
                        e->p->model, pr->content_chars);
}

/* Asks the root model for the next reply (final: the last request, see
 * calls_root); *resp is filled for ROOT_REPLY. */
static root_result engine_ask_root(engine *e, lm_response *resp, int final)
{
    lm_message *msgs = calloc(e->h->n, sizeof *msgs);
    if (!msgs) {
        engine_fail(e, RLM_ERR_NOMEM, "out of memory");
        return ROOT_FAILED;
    }
    for (size_t i = 0; i < e->h->n; i++) {
        msgs[i].role = e->h->m[i].role;
        msgs[i].content = e->h->m[i].content;
    }
    if (e->p->prompt_cache)
        engine_mark_history(msgs, e->h->n);
    lm_request req = {.model = e->p->model, .messages = msgs, .n_messages = e->h->n,
                      .cancel = e->p->cancel, .stream = e->p->stream,
                      .progress = e->progress || trace_active(e->trace) ? engine_stream_progress : NULL,
                      .progress_ctx = e, .deadline = e->deadline, .watch = engine_root_watch,
                      .watch_ctx = e};
    atomic_store(&e->stream_chars, 0);
    atomic_store(&e->stream_reasoning, 0);
    e->batch_started = clock_now();
    engine_progress(e, "turn %d of %d · waiting for %s", e->turn, e->p->max_iterations, e->p->model);
    engine_event(e, "root_request",
                json_pack("{s:i,s:s,s:I,s:b,s:o}", "turn", e->turn, "model", e->p->model,
                          "messages", (json_int_t)e->h->n, "stream", req.stream,
                          "last_message", engine_excerpt(msgs[e->h->n - 1].content, 100000)));
    calls_reply cr;
    int rc = calls_root(e->calls, &req, final, &cr);
    free(msgs);
    if (rc == CALLS_BUDGET) {
        engine_budget_stop(e, final ? "the last request" : "a root request");
        return ROOT_BUDGET;
    }
    if (rc != CALLS_OK) {
        engine_fail(e, RLM_ERR_MODEL, "root model request failed: %s", calls_errmsg(e->calls));
        return ROOT_FAILED;
    }
    *resp = cr.r;
    e->out->iterations++;

    engine_event(e, "root_reply",
                json_pack("{s:i,s:o,s:s?,s:s?,s:s?,s:I,s:f,s:i,s:o,s:o,s:b,s:o,s:s}", "turn", e->turn,
                          "content", engine_text_json(resp->content, lm_content_len(resp)),
                          "reasoning", resp->reasoning,
                          "error", resp->error ? lm_error_name(resp->error) : NULL,
                          "error_message", resp->error_message,
                          "http_status", (json_int_t)resp->http_status,
                          "seconds", resp->seconds, "attempts", resp->attempts,
                          "usage", engine_usage_json(resp), "cost_usd", engine_cost_json(cr.cost_usd),
                          "cached", cr.cached, "cost_no_cache_usd", engine_cost_json(cr.cost_no_cache_usd),
                          "model", req.model));
    if (resp->error == LM_ERR_EMPTY || (resp->error == LM_OK && lm_content_len(resp) == 0))
        return ROOT_EMPTY;
    if (resp->error != LM_OK) {
        const char *why = resp->error_message ? resp->error_message : "no detail";
        e->out->permanent = permanent_error(resp);
        if (resp->http_status)
            engine_fail(e, RLM_ERR_MODEL, "root model request failed (%s, HTTP %ld): %s",
                        lm_error_name(resp->error), resp->http_status, why);
        else
            engine_fail(e, RLM_ERR_MODEL, "root model request failed (%s): %s",
                        lm_error_name(resp->error), why);
        return ROOT_FAILED;
    }
    return ROOT_REPLY;
}

/* A root reply is kept as text (history, parsing, a compaction note): a NUL
 * byte in it (\u0000 from the model) would cut it short wherever it went,
 * so each becomes U+FFFD, visibly. The trace has the reply as it came. */
static void engine_reply_as_text(lm_response *r)
{
    size_t len = lm_content_len(r);
    if (!r->content || !memchr(r->content, '\0', len))
        return;
    buf clean;
    buf_init(&clean, len * 3 + 1);
    for (size_t i = 0; i < len; i++)
        buf_append(&clean, r->content[i] ? r->content + i : "\xEF\xBF\xBD", r->content[i] ? 1 : 3);
    if (!clean.data)
        return; /* out of memory: the reply stays cut at its NUL */
    free(r->content);
    r->content_len = clean.len;
    r->content = buf_take(&clean);
}

/* Sets the answer (len bytes, NUL bytes included; SIZE_MAX: up to its
 * first NUL) and records it. Takes ownership of answer; how is a static
 * string (engine_outcome.how). */
static void engine_answer(engine *e, char *answer, size_t len, const char *how)
{
    free(e->out->answer);
    e->out->answer = answer;
    e->out->answer_len = len == SIZE_MAX ? strlen(answer) : len;
    e->out->status = RLM_OK;
    e->out->how = how;
    engine_event(e, "final_answer",
                json_pack("{s:i,s:s,s:o}", "turn", e->turn, "how", how, "answer",
                          engine_text_json(answer, e->out->answer_len)));
}

/* Resolves FINAL_VAR(name) written in the text: TURN_ANSWERED, TURN_GO_ON
 * when the variable is missing (*note explains), TURN_FAILED on a broken
 * sandbox. */
static turn_result engine_text_final_var(engine *e, const char *name, char **note)
{
    char err[512];
    char *value = NULL;
    size_t value_len = 0;
    if (engine_sandbox_wait(e, 1) != 0)
        return TURN_FAILED;
    int rc = sandbox_get_var(e->sb, name, &value, &value_len, err, sizeof err);
    if (rc == 0) {
        engine_answer(e, value, value_len, "FINAL_VAR in text");
        return TURN_ANSWERED;
    }
    if (rc == 1) {
        buf b;
        buf_init(&b, 64 * 1024);
        buf_printf(&b, "Your FINAL_VAR(%s) was not accepted: %s", name,
                   value ? value : "there is no such variable");
        free(value);
        *note = buf_take(&b);
        return TURN_GO_ON;
    }
    free(value);
    engine_fail(e, RLM_ERR_SANDBOX, "sandbox failed: %s", err);
    return TURN_FAILED;
}

/* Runs the reply's code blocks in order, stopping early at a final answer.
 * Appends the feedback message unless the run is answered. TURN_ANSWERED,
 * TURN_GO_ON, or TURN_FAILED; a budget stop is e->budget_stop (the caller's
 * to turn into TURN_BUDGET). */
static turn_result engine_run_blocks(engine *e, const reply *rp)
{
    prompt_block_result *results = calloc(rp->n_blocks, sizeof *results);
    sandbox_cell *cells = calloc(rp->n_blocks, sizeof *cells);
    char **shown = calloc(rp->n_blocks, sizeof *shown);
    char *note = NULL;
    turn_result status = TURN_GO_ON;
    size_t ran = 0;
    if (!results || !cells || !shown) {
        engine_fail(e, RLM_ERR_NOMEM, "out of memory");
        status = TURN_FAILED;
        goto done;
    }
    if (engine_sandbox_wait(e, 1) != 0) {
        status = TURN_FAILED;
        goto done;
    }
    for (size_t i = 0; i < rp->n_blocks; i++) {
        char err[512];
        engine_progress(e, "turn %d of %d · running block %zu of %zu", e->turn,
                        e->p->max_iterations, i + 1, rp->n_blocks);
        engine_notify(e, "code_start", json_pack("{s:i,s:I,s:I,s:s}", "turn", e->turn, "block",
                                                 (json_int_t)(i + 1), "blocks", (json_int_t)rp->n_blocks,
                                                 "code", rp->blocks[i]));
        session *store = engine_store(e);
        /* The cell's wall limit counts its sub-calls and children: past it
         * their requests end and no more are served (engine_serve_calls). A
         * child's cells end with its parent's at the latest. */
        e->cell_deadline = e->p->cell_wall > 0 ? clock_now() + e->p->cell_wall : 0;
        if (e->deadline > 0 && (e->cell_deadline == 0 || e->deadline < e->cell_deadline))
            e->cell_deadline = e->deadline;
        int rc = sandbox_exec_batched(e->sb, rp->blocks[i], engine_serve_calls, engine_serve_batch, e,
                                      &cells[i], err, sizeof err);
        e->cell_deadline = 0;
        ran = i + 1;
        e->out->blocks++;
        /* The code, for the record; nothing re-runs it (the next question
         * gets this one's data instead). */
        if (store && session_add_cell(store, rp->blocks[i], NULL) != 0)
            engine_store_failed(e, "a cell");
        engine_event(e, "code",
                    json_pack("{s:i,s:I,s:I,s:s,s:o,s:I,s:b,s:b,s:b,s:o,s:f,s:f,s:I}", "turn", e->turn,
                              "block", (json_int_t)i + 1, "blocks", (json_int_t)rp->n_blocks,
                              "code", rp->blocks[i],
                              "output", engine_text_json(cells[i].output, cells[i].output_len),
                              "output_chars", (json_int_t)cells[i].output_chars,
                              "raised", cells[i].raised, "timed_out", cells[i].timed_out,
                              "restarted", cells[i].restarted, "final_answer",
                              engine_text_json(cells[i].final_answer, cells[i].final_answer_len),
                              "seconds", cells[i].seconds, "call_seconds", cells[i].call_seconds,
                              "calls", (json_int_t)cells[i].n_calls));
        if (rc != 0) {
            engine_sandbox_trouble(e, 0, "sandbox failed", err);
            status = TURN_FAILED;
            goto done;
        }
        if (cells[i].restarted && engine_check_inputs(e)) {
            /* The restarted sandbox read the input again: from a file that
             * is not what it was, its answers would be about other data. */
            engine_sandbox_trouble(e, 1, "the sandbox restarted", NULL);
            status = TURN_FAILED;
            goto done;
        }
        if (cells[i].cancelled || engine_cancelled(e)) {
            engine_cancel(e);
            status = TURN_FAILED;
            goto done;
        }
        if (e->fatal) {
            engine_fail(e, RLM_ERR_MODEL, "sub-call failed: %s", e->fatal);
            status = TURN_FAILED;
            goto done;
        }
        if (cells[i].final_answer) {
            engine_answer(e, cells[i].final_answer, cells[i].final_answer_len,
                          cells[i].final_literal ? "final_literal" : "code");
            cells[i].final_answer = NULL;
            status = TURN_ANSWERED;
            goto done;
        }
        if (e->budget_stop)
            break;   /* the budget is spent: the rest of the reply's code does not run */
    }

    if (e->budget_stop) {
        /* The last request follows; its message says why. */
    } else if (rp->final_kind == REPLY_FINAL_VAR) {
        /* The variable was computed by the code that just ran: its value does
         * not depend on output the model has not seen. */
        status = engine_text_final_var(e, rp->final_text, &note);
        if (status != TURN_GO_ON)
            goto done;
    } else if (rp->final_kind == REPLY_FINAL_VALUE) {
        /* A literal answer written in the same reply as code was written
         * before its output existed: models invent that output. */
        note = strdup("Your FINAL(...) in the same reply as code was not accepted: it was "
                      "written before you saw the output above. If it still holds, reply "
                      "with FINAL(...) again, or set it from code.");
    }

    for (size_t i = 0; i < ran; i++) {
        const char *out = cells[i].output ? cells[i].output : "";
        size_t shown_len = 0;
        shown[i] = utf8_bound_n(out, cells[i].output ? cells[i].output_len : 0,
                                  e->p->output_limit + 1024, &shown_len);
        results[i].code = rp->blocks[i];
        results[i].output = shown[i] ? shown[i] : "";
        results[i].output_len = shown[i] ? shown_len : 0;
        results[i].variables = cells[i].variables;
        results[i].raised = cells[i].raised;
        results[i].timed_out = cells[i].timed_out;
        results[i].restarted = cells[i].restarted;
    }
    if (rp->unclosed) {
        /* Said, so that the model knows what ran and closes its next block. */
        char *both = engine_strf("Your last code block has no closing ``` fence: it ran to the end "
                                 "of your reply.%s%s", note ? "\n" : "", note ? note : "");
        free(note);
        note = both;
    }
    if (engine_push(e, "user", prompt_feedback(results, ran, e->turn + 1, e->p->max_iterations, note)) != 0) {
        engine_fail(e, RLM_ERR_NOMEM, "out of memory");
        status = TURN_FAILED;
    }
done:
    if (cells)
        for (size_t i = 0; i < rp->n_blocks; i++)
            sandbox_cell_clear(&cells[i]);
    if (shown)
        for (size_t i = 0; i < rp->n_blocks; i++)
            free(shown[i]);
    free(cells);
    free(shown);
    free(results);
    free(note);
    return status;
}

/* ---- compaction ----------------------------------------------------------- */

/* Estimated tokens of the root history. */
static size_t history_tokens(const history *h)
{
    size_t bytes = 0;
    for (size_t i = 0; i < h->n; i++)
        bytes += strlen(h->m[i].content);
    return tokens_estimate(bytes, TOKENS_PROSE);
}

/* When the history nears the root model's window, the root summarises its
 * work so far and the history becomes the system prompt plus that note (the
 * variables stay in the sandbox). A failed or refused summary leaves the
 * history as it was. */
static void engine_maybe_compact(engine *e)
{
    size_t window = e->p->context_window ? e->p->context_window : 128000;
    double at = e->p->compact_at > 0 ? e->p->compact_at : 0.85;
    size_t before = history_tokens(e->h);
    if (at >= 1 || (double)before < at * (double)window || e->h->n < 3)
        return;
    size_t n = e->h->n;
    lm_message *msgs = calloc(n + 1, sizeof *msgs);
    char *ask = prompt_compact_request();
    if (!msgs || !ask) {
        free(msgs);
        free(ask);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        msgs[i].role = e->h->m[i].role;
        msgs[i].content = e->h->m[i].content;
    }
    msgs[n].role = "user";
    msgs[n].content = ask;
    /* The history up to now is last turn's prefix: cached, it makes the
     * summary cheap; the request to summarise is asked once. */
    if (e->p->prompt_cache)
        engine_mark_history(msgs, n);
    lm_request req = {.model = e->p->model, .messages = msgs, .n_messages = n + 1,
                      .cancel = e->p->cancel};
    engine_progress(e, "turn %d of %d · compacting the history (%zu tokens)", e->turn,
                    e->p->max_iterations, before);
    double t0 = clock_now();
    calls_reply cr;
    int rc = calls_root(e->calls, &req, 0, &cr);
    free(msgs);
    free(ask);
    if (rc != CALLS_OK)
        return;   /* a budget refused it (the turn's own request says so) or replay failed */
    const lm_response *r = &cr.r;
    if (r->error != LM_OK || !r->content || !r->content[0]) {
        engine_event(e, "compaction_failed",
                     json_pack("{s:i,s:s?,s:s?}", "turn", e->turn, "error",
                               r->error ? lm_error_name(r->error) : "empty", "error_message",
                               r->error_message));
        calls_reply_clear(&cr);
        return;
    }
    engine_reply_as_text(&cr.r);
    char *note = utf8_bound(r->content, strlen(r->content), COMPACT_NOTE_CHARS);
    char *msg = note ? prompt_compacted(note, e->question, e->turn, e->p->max_iterations) : NULL;
    free(note);
    if (!msg) {
        calls_reply_clear(&cr);
        return;
    }
    size_t removed = e->h->n - 1;
    history_truncate(e->h, 1);   /* the system prompt stays */
    if (e->st)
        e->st->question_start = 1;   /* the question's history starts at the note */
    session *store = engine_store(e);
    if (store && session_compact(store, LONG_MAX, msg) < 0)
        engine_store_failed(e, "the compaction");
    if (history_push(e->h, "user", msg) != 0) {
        calls_reply_clear(&cr);
        return;
    }
    engine_event(e, "compaction",
                 json_pack("{s:i,s:I,s:I,s:I,s:I,s:f,s:o,s:o,s:o,s:o,s:s}", "turn", e->turn, "messages",
                           (json_int_t)removed, "tokens_before", (json_int_t)before, "tokens_after",
                           (json_int_t)history_tokens(e->h), "window", (json_int_t)window,
                           "seconds", clock_now() - t0, "note",
                           engine_excerpt(r->content, TRACE_EXCERPT_CHARS), "usage", engine_usage_json(r),
                           "cost_usd", engine_cost_json(cr.cost_usd), "cost_no_cache_usd",
                           engine_cost_json(cr.cost_no_cache_usd), "model", e->p->model));
    calls_reply_clear(&cr);
}

/* One root turn. On the last turn (after the turn or budget limit) no code
 * runs, as the last request tells the model: a text FINAL / FINAL_VAR
 * counts, and so does a reply with neither code nor FINAL (the reply itself
 * is the answer). TURN_BUDGET asks the caller for the last request. */
static turn_result engine_turn(engine *e, int *empty_replies, int last)
{
    lm_response resp = {0};
    if (engine_cancelled(e)) {
        engine_cancel(e);
        return TURN_FAILED;
    }
    if (!last)
        engine_maybe_compact(e);
    root_result asked = engine_ask_root(e, &resp, last);
    if (asked == ROOT_FAILED && engine_cancelled(e)) {
        engine_cancel(e);
        lm_response_clear(&resp);
        return TURN_FAILED;
    }
    if (asked == ROOT_FAILED || asked == ROOT_BUDGET) {
        lm_response_clear(&resp);
        return asked == ROOT_BUDGET ? TURN_BUDGET : TURN_FAILED;
    }
    if (asked == ROOT_EMPTY) {
        lm_response_clear(&resp);
        if (++*empty_replies >= MAX_EMPTY_REPLIES) {
            engine_fail(e, RLM_ERR_MODEL, "the root model returned %d empty replies in a row",
                        *empty_replies);
            return TURN_FAILED;
        }
        /* No empty assistant message: some providers reject one. */
        if (engine_push(e, "user", prompt_nudge(e->turn + 1, e->p->max_iterations)) != 0) {
            engine_fail(e, RLM_ERR_NOMEM, "out of memory");
            return TURN_FAILED;
        }
        return TURN_GO_ON;
    }
    *empty_replies = 0;

    engine_reply_as_text(&resp);
    reply rp;
    if (reply_parse(resp.content, strlen(resp.content), &rp) != 0) {
        lm_response_clear(&resp);
        engine_fail(e, RLM_ERR_NOMEM, "out of memory");
        return TURN_FAILED;
    }
    char *content = resp.content;
    resp.content = NULL;
    lm_response_clear(&resp);
    if (engine_push(e, "assistant", content) != 0) {
        reply_clear(&rp);
        engine_fail(e, RLM_ERR_NOMEM, "out of memory");
        return TURN_FAILED;
    }

    turn_result status = TURN_GO_ON;
    if (rp.n_blocks > 0 && !last) {
        status = engine_run_blocks(e, &rp);
        if (status == TURN_GO_ON && e->budget_stop)
            status = TURN_BUDGET;
    } else if (rp.final_kind == REPLY_FINAL_VALUE) {
        engine_answer(e, rp.final_text, SIZE_MAX, "FINAL in text");
        rp.final_text = NULL;
        status = TURN_ANSWERED;
    } else if (rp.final_kind == REPLY_FINAL_VAR) {
        char *note = NULL;
        status = engine_text_final_var(e, rp.final_text, &note);
        if (status == TURN_GO_ON) {
            char *fb = prompt_feedback(NULL, 0, e->turn + 1, e->p->max_iterations, note);
            if (engine_push(e, "user", fb) != 0) {
                engine_fail(e, RLM_ERR_NOMEM, "out of memory");
                status = TURN_FAILED;
            }
        }
        free(note);
    } else if (last && rp.n_blocks == 0) {
        /* The reply to the last request, with neither code nor FINAL: the
         * model answered in plain words, and the reference library takes
         * that reply as the answer. So do we, saying so (how "last_reply"). */
        const char *text = e->h->m[e->h->n - 1].content;
        size_t start = 0, end = strlen(text);
        while (start < end && (text[start] == ' ' || text[start] == '\n' || text[start] == '\t' ||
                               text[start] == '\r'))
            start++;
        while (end > start && (text[end - 1] == ' ' || text[end - 1] == '\n' ||
                               text[end - 1] == '\t' || text[end - 1] == '\r'))
            end--;
        char *answer = end > start ? str_dup_len(text + start, end - start) : NULL;
        if (answer) {
            engine_answer(e, answer, SIZE_MAX, "last_reply");
            status = TURN_ANSWERED;
        }
    } else if (engine_push(e, "user", prompt_nudge(e->turn + 1, e->p->max_iterations)) != 0) {
        engine_fail(e, RLM_ERR_NOMEM, "out of memory");
        status = TURN_FAILED;
    }
    reply_clear(&rp);
    return status;
}

/* ---- the run ------------------------------------------------------------- */

/* Estimated tokens of a document set, each document by its kind of text. */
static size_t docs_tokens(const ingest_set *docs)
{
    size_t tokens = 0;
    const ingest_doc *d = ingest_docs(docs);
    for (size_t i = 0; i < ingest_count(docs); i++)
        tokens += tokens_estimate(d[i].len, tokens_kind_of_name(d[i].name));
    return tokens;
}

char *engine_describe(const engine_params *p, ingest_set *docs, char *err, size_t errlen)
{
    const engine_preloaded *pre = p->preloaded;
    if (pre && !docs) {
        char *d = strdup(pre->description);
        if (!d)
            snprintf(err, errlen, "out of memory");
        return d;
    }
    sandbox *sb = NULL;
    const json_t *summary = NULL;
    if (docs && ingest_format_of(docs) != INGEST_TEXT) {
        /* What the root is told of a parsed input comes from the parse. */
        sandbox_input in = {.context_fd = -1, .data_fd = -1};
        if (engine_input_open(docs, &in, err, errlen) != 0)
            return NULL;
        sandbox_options so = {
            .exe_path = p->sandbox_exe, .memory_limit = p->sandbox_memory,
            .cell_timeout = p->cell_timeout, .output_limit = p->output_limit,
            .unsafe_no_sandbox = p->unsafe_no_sandbox, .cancel = p->cancel, .factory = p->factory,
            .context_fd = in.context_fd, .context_len = in.context_len,
            .context_pack = in.context_pack, .data_fd = in.data_fd, .data_len = in.data_len,
            .parsed = in.parsed,
        };
        int rc = sandbox_start(&so, &sb, err, errlen);
        engine_input_close(&in, docs);
        if (rc != 0)
            return NULL;
        summary = sandbox_input_summary(sb, 0);
    }
    char *d = engine_input_describe(docs, summary);
    sandbox_free(sb);
    if (d && pre) {
        char *both = engine_described_with_named(pre, d);
        free(d);
        d = both;
    }
    if (!d)
        snprintf(err, errlen, "out of memory");
    return d;
}

int engine_preload(const engine_params *p, const char *name, ingest_set *docs,
                   engine_preloaded *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    sandbox_options so = {.exe_path = p->sandbox_exe, .unsafe_no_sandbox = p->unsafe_no_sandbox};
    sandbox_factory *f = NULL;
    json_t *summary = NULL;
    char *description = NULL, *direct = NULL, *own_name = strdup(name);
    int rc = -1;
    if (!own_name) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (sandbox_factory_new(&so, &f, err, errlen) != 0)
        goto done;
    sandbox_input in = {.context_fd = -1, .data_fd = -1};
    if (engine_input_open(docs, &in, err, errlen) != 0)
        goto done;
    int added = sandbox_factory_add_input(f, "context", &in, err, errlen);
    engine_input_close(&in, docs);
    if (added != 0) {
        rc = added == -2 ? -2 : -1;
        goto done;
    }
    /* The description of a parsed input comes from the zygote's parse. */
    char copy_name[64];
    sandbox_input copy;
    if (sandbox_factory_input_copy(f, 0, copy_name, sizeof copy_name, &copy, &summary, err,
                                   errlen) != 0)
        goto done;
    sandbox_input_close(&copy);
    description = engine_input_describe(docs, summary);
    size_t tokens = docs_tokens(docs);
    /* Small enough to be answered by one call: its text is kept for that. */
    if (tokens < p->direct_threshold)
        direct = engine_direct_text(docs);
    if (!description || (tokens < p->direct_threshold && !direct)) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    *out = (engine_preloaded){.factory = f, .name = own_name, .description = description,
                              .tokens = tokens, .bytes = ingest_total_bytes(docs),
                              .documents = ingest_count(docs), .direct_text = direct};
    f = NULL;
    own_name = description = direct = NULL;
    rc = 0;
done:
    json_decref(summary);
    sandbox_factory_free(f);
    free(own_name);
    free(description);
    free(direct);
    return rc;
}

void engine_preloaded_clear(engine_preloaded *pre)
{
    sandbox_factory_free(pre->factory);
    free((char *)pre->name);
    free((char *)pre->description);
    free((char *)pre->direct_text);
    memset(pre, 0, sizeof *pre);
}

/* The one last request for the best answer so far, after the turns or a
 * budget ran out. `message` is taken (the user message that asks for it). */
static void engine_last_request(engine *e, char *ask, int *empty_replies, const char *why)
{
    if (engine_push(e, "user", ask) != 0) {
        engine_fail(e, RLM_ERR_NOMEM, "out of memory");
        return;
    }
    turn_result rc = engine_turn(e, empty_replies, 1);
    if (rc == TURN_GO_ON || rc == TURN_BUDGET) {
        e->out->status = RLM_NO_ANSWER;
        free(e->out->error);
        e->out->error = strdup(why);
    }
}

/* ---- direct mode ---------------------------------------------------------- */

/* Estimated tokens of the whole input, per kind of text. */
static size_t engine_input_tokens(const engine_params *p)
{
    return (p->preloaded ? p->preloaded->tokens : 0) + (p->docs ? docs_tokens(p->docs) : 0);
}

/* The user message of direct mode: the whole input between markers (each
 * document under its name), then the question. NULL when out of memory. */
char *engine_direct_text(ingest_set *docs)
{
    buf b;
    buf_init(&b, SIZE_MAX / 2);   /* bounded by the input, which direct mode keeps small */
    buf_puts(&b, "");
    if (docs) {
        ingest_validate(docs);   /* a file that shrank is cut, never read past its end */
        const ingest_doc *d = ingest_docs(docs);
        size_t n = ingest_count(docs);
        for (size_t i = 0; i < n; i++) {
            if (n > 1 || ingest_kind_of(docs) != INGEST_STR)
                buf_printf(&b, "=== %s ===\n", d[i].name);
            size_t clean_len = 0;
            char *clean = utf8_sanitize(d[i].data ? d[i].data : "", d[i].len, &clean_len);
            if (clean)
                buf_append(&b, clean, clean_len);
            free(clean);
            buf_puts(&b, "\n");
        }
    }
    return b.data ? buf_take(&b) : NULL;
}

static char *engine_direct_message(const engine_params *p, const char *question)
{
    char *own = p->preloaded ? NULL : engine_direct_text(p->docs);
    const char *text = p->preloaded ? p->preloaded->direct_text : own;
    if (!text)
        return NULL;
    buf b;
    buf_init(&b, SIZE_MAX / 2);   /* the input and the question, both bounded upstream */
    buf_printf(&b, "<input>\n%s</input>\n\nQuestion: %s", text, question);
    free(own);
    return b.data ? buf_take(&b) : NULL;
}

/* Answers with one plain call: no sandbox, no code. */
/* Direct mode sends a JSON input as text, unparsed; it must still be JSON,
 * as in the RLM loop where the sandbox parses it. Inputs here are small (under
 * the direct threshold), so the host checks them: a .json that does not parse
 * is an input error; a JSON line that does not is a warning. 0, or -1 with
 * the outcome set. */
static int engine_direct_check_json(engine *e)
{
    ingest_set *docs = e->p->docs;
    ingest_format format = docs ? ingest_format_of(docs) : INGEST_TEXT;
    const ingest_doc *d = docs ? ingest_docs(docs) : NULL;
    for (size_t i = 0; format != INGEST_TEXT && i < ingest_count(docs); i++) {
        json_error_t jerr;
        if (format == INGEST_JSON) {
            json_t *v = json_loadb(d[i].data ? d[i].data : "", d[i].len,
                                   JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
            json_decref(v);
            if (!v) {
                engine_fail(e, RLM_ERR_INPUT, "input: %s is not valid JSON: %s at line %d, column %d",
                            d[i].name, jerr.text, jerr.line, jerr.column);
                return -1;
            }
            continue;
        }
        size_t line = 0;
        for (size_t at = 0; at < d[i].len;) {
            const char *nl = memchr(d[i].data + at, '\n', d[i].len - at);
            size_t end = nl ? (size_t)(nl - d[i].data) : d[i].len;
            line++;
            json_t *v = NULL;
            size_t k = at;
            while (k < end && strchr(" \t\r", d[i].data[k]))
                k++;
            if (k < end && !(v = json_loadb(d[i].data + at, end - at,
                                            JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr))) {
                char msg[1200];
                snprintf(msg, sizeof msg, "input: %s line %zu: not valid JSON: %s (sent as text in "
                         "direct mode)", d[i].name, line, jerr.text);
                if (e->p->warn)
                    e->p->warn(e->p->warn_data, msg);
                engine_event(e, "warning", json_pack("{s:s}", "message", msg));
            }
            json_decref(v);
            at = end + 1;
        }
    }
    return 0;
}

static void engine_direct(engine *e, const char *question)
{
    if (engine_direct_check_json(e) != 0)
        return;
    if (engine_push(e, "system", prompt_direct_system()) != 0 ||
        engine_push(e, "user", engine_direct_message(e->p, question)) != 0) {
        engine_fail(e, RLM_ERR_NOMEM, "out of memory");
        return;
    }
    e->turn = 1;
    lm_response resp = {0};
    root_result rc = engine_ask_root(e, &resp, 0);
    if (rc == ROOT_REPLY) {
        engine_answer(e, resp.content, lm_content_len(&resp), "direct");
        resp.content = NULL;
    } else if (rc == ROOT_EMPTY) {
        engine_fail(e, RLM_ERR_MODEL, "the model returned an empty reply");
    } else if (rc == ROOT_BUDGET) {
        e->out->status = RLM_NO_ANSWER;
        free(e->out->error);
        e->out->error = strdup("budget exhausted before the call");
    }
    lm_response_clear(&resp);
}

/* Starts the zygote the children's sandboxes fork from, while the root's
 * own first turn goes on: without it, 64 children starting at once spend
 * seconds in interpreter start-ups on a small machine. Without a factory
 * (it could not start) children spawn their sandboxes. */
static void engine_start_factory(engine *e)
{
    sandbox_options so = {.exe_path = e->p->sandbox_exe, .unsafe_no_sandbox = e->p->unsafe_no_sandbox};
    char err[512];
    if (sandbox_factory_new(&so, &e->factory, err, sizeof err) != 0) {
        e->factory = NULL;
        engine_event(e, "warning", json_pack("{s:s,s:s}", "message",
                                             "child sandboxes will be spawned, not forked",
                                             "detail", err));
    }
}

rlm_status engine_run_node(const engine_params *p, calls *c, trace *t, const char *question,
                           const char *node, engine *parent,
                           engine_progress_fn progress, void *userdata, engine_outcome *out)
{
    int level = parent ? parent->level + 1 : 1;
    memset(out, 0, sizeof *out);
    out->status = RLM_NO_ANSWER;
    out->mode = "rlm";
    out->depth_reached = level;
    engine e = {.p = p, .calls = c, .trace = t, .st = level == 1 ? p->state : NULL,
                .question = question, .node = strdup(node), .parent = parent ? parent->node : NULL, .level = level,
                .factory = parent ? parent->factory : p->factory,
                .progress = progress, .progress_data = userdata, .out = out, .start = clock_now(),
                .deadline = parent ? parent->cell_deadline : 0};
    buf_init(&e.last_sub_prompt, PREAMBLE_KEPT_BYTES);
    if (parent) {
        e.gate = parent->gate;
    } else {
        /* The top RLM's sandbox is the first of the tree's. */
        e.gate = &e.own_gate;
        pthread_mutex_init(&e.own_gate.lock, NULL);
        pthread_cond_init(&e.own_gate.changed, NULL);
        e.own_gate.cap = p->max_sandboxes > 0 ? p->max_sandboxes : ENGINE_MAX_SANDBOXES;
        e.own_gate.alive = e.own_gate.busy = 1;
    }
    e.h = e.st ? &e.st->h : &e.own;
    engine_state *st = e.st;
    ingest_set *docs = st ? NULL : p->docs;
    int number = 0;
    if (!e.node) {
        engine_fail(&e, RLM_ERR_NOMEM, "out of memory");
        return out->status;
    }

    const engine_preloaded *pre = st || level > 1 ? NULL : p->preloaded;
    size_t bytes = docs ? ingest_total_bytes(docs) : 0;
    size_t documents = docs ? ingest_count(docs) : 0;
    /* The trace names the file of an input that is one (a text has no name). */
    const char *file = docs && documents == 1 && ingest_kind_of(docs) == INGEST_STR &&
                               ingest_docs(docs)[0].name[0]
                           ? ingest_docs(docs)[0].name
                           : NULL;
    engine_event(&e, "question",
                 json_pack("{s:s,s:s?,s:I,s:I,s:i,s:s?}", "question", question, "context",
                           file, "context_bytes",
                           (json_int_t)(bytes + (pre ? pre->bytes : 0)), "documents",
                           (json_int_t)(documents + (pre ? pre->documents : 0)), "depth", level,
                           "named_input", pre ? pre->name : NULL));
    if (st) {
        number = st->questions + 1;
        if (st->store && session_begin_question(st->store, question, &number) != 0)
            engine_store_failed(&e, "the question");
        out->question = number;
        engine_event(&e, "mode", json_pack("{s:s,s:s,s:i,s:I}", "mode", "rlm", "requested",
                                          "conversation", "question_number", number, "inputs",
                                          (json_int_t)st->n_inputs));
        if (engine_state_sandbox(&e) != 0)
            goto done;
        if (engine_state_messages(&e, question, number) != 0) {
            engine_fail(&e, RLM_ERR_NOMEM, "out of memory");
            goto done;
        }
    } else {
        size_t tokens = engine_input_tokens(p);
        size_t threshold = p->direct_threshold;   /* 0: auto never answers directly */
        /* A named input is sent whole only alone, and when it was small
         * enough to keep its text (engine_preloaded.direct_text). */
        int can_direct = !pre || (pre->direct_text && !docs);
        if (p->mode == ENGINE_MODE_DIRECT && !can_direct) {
            engine_fail(&e, RLM_ERR_USAGE, "--mode direct: the named input '%s' %s; use --mode rlm "
                        "or auto", pre->name, docs ? "comes with another input"
                                                         : "is too large to send whole");
            goto done;
        }
        int direct = can_direct && (p->mode == ENGINE_MODE_DIRECT ||
                                    (p->mode == ENGINE_MODE_AUTO && tokens < threshold));
        out->mode = direct ? "direct" : "rlm";
        engine_event(&e, "mode", json_pack("{s:s,s:s,s:I,s:I}", "mode", out->mode, "requested",
                                          p->mode == ENGINE_MODE_DIRECT ? "direct"
                                          : p->mode == ENGINE_MODE_RLM ? "rlm" : "auto",
                                          "estimated_tokens", (json_int_t)tokens, "threshold",
                                          (json_int_t)threshold));
        if (direct && p->mode == ENGINE_MODE_DIRECT && tokens > ENGINE_DIRECT_MAX_TOKENS &&
            tokens > threshold) {
            engine_fail(&e, RLM_ERR_USAGE, "--mode direct: the input is about %zu tokens, more than "
                        "any model's window (%zu); use --mode rlm or auto", tokens,
                        (size_t)ENGINE_DIRECT_MAX_TOKENS);
            goto done;
        }
        if (direct) {
            engine_direct(&e, question);
            goto done;
        }
        if (pre) {
            if (engine_start_preloaded(&e, docs, question) != 0)
                goto done;
            goto started;
        }
        /* A text input is described before its sandbox starts: the
         * description reads every page, which the host then drops, so host
         * and sandbox never hold the input at once. A parsed input (JSON) is
         * described from the summary its sandbox sends, so that sandbox
         * comes first. */
        int parsed = docs && ingest_format_of(docs) != INGEST_TEXT;
        if (parsed && engine_start_sandbox(&e, docs, NULL) != 0)
            goto done;
        if (engine_first_messages(&e, docs, question) != 0) {
            engine_fail(&e, RLM_ERR_NOMEM, "out of memory");
            goto done;
        }
        /* A top RLM's sandbox starts while the root model thinks about the
         * first turn (a spawn takes tens of milliseconds, a fork from a
         * pool's zygote a few, each on the critical path otherwise); the
         * first code block waits for it if it is not up yet. */
        if (!parsed && (level == 1
                            ? engine_start_sandbox_early(&e, docs)
                            : engine_start_sandbox(&e, docs, NULL)) != 0)
            goto done;
    }

started:
    if (level == 1 && engine_max_depth(p) > 1 && !p->factory)
        engine_start_factory(&e);

    int empty_replies = 0;
    turn_result rc = TURN_GO_ON;
    for (e.turn = 1; e.turn <= p->max_iterations && rc == TURN_GO_ON; e.turn++) {
        if (e.deadline > 0 && clock_now() >= e.deadline) {
            /* The parent's cell is out of time: no turn, no last request. */
            out->status = RLM_NO_ANSWER;
            free(out->error);
            out->error = engine_strf("the parent's cell reached its wall limit (--cell-wall) "
                                     "before this child answered");
            rc = TURN_OUT_OF_TIME;
            break;
        }
        rc = engine_turn(&e, &empty_replies, 0);
        if (rc != TURN_GO_ON)
            break;
    }
    if (rc == TURN_BUDGET && level > 1 && out->iterations == 0) {
        /* A child refused before its first turn has nothing to answer from. */
        out->status = RLM_NO_ANSWER;
        free(out->error);
        out->error = engine_strf("budget exhausted before the child's first turn: %s",
                                 calls_budget_message(c));
    } else if (rc == TURN_BUDGET) {
        /* A budget ran out: one last request, saying which. */
        char why[512];
        snprintf(why, sizeof why, "budget exhausted: %s", calls_budget_message(c));
        if (out->iterations >= e.turn)
            e.turn++;   /* this turn's reply arrived: the last request is the next turn */
        engine_last_request(&e, prompt_last_turn_budget(calls_budget_message(c)), &empty_replies, why);
    } else if (rc == TURN_GO_ON) {
        /* The turns ran out: one last request for the best answer so far. */
        engine_event(&e, "turns_exhausted", json_pack("{s:i}", "max_iterations", p->max_iterations));
        e.turn = p->max_iterations + 1;
        engine_last_request(&e, prompt_last_turn(), &empty_replies, "no final answer within the turn limit");
    }

done:
    engine_sandbox_wait(&e, 0);   /* a sandbox the run did not need: its end, or its failure said */
    out->elapsed = clock_now() - e.start;
    out->stopped_by = budget_kind_name(calls_exhausted(c));
    out->cost_usd = calls_cost(c);
    if (st && number > 0)
        engine_state_answered(&e, number, out->status == RLM_OK ? out->answer : NULL);
    json_t *end =
                 json_pack("{s:s,s:s,s:o,s:s?,s:s?,s:i,s:I,s:I,s:I,s:f,s:s?,s:o,s:I,s:I,s:i}", "mode",
                           out->mode, "status", rlm_status_name(out->status), "answer",
                           engine_text_json(out->answer, out->answer_len),
                           "how", out->status == RLM_OK ? out->how : NULL,
                           "error", out->error, "iterations", out->iterations, "blocks",
                           (json_int_t)out->blocks, "sub_calls", (json_int_t)out->sub_calls,
                           "sub_call_errors", (json_int_t)out->sub_call_errors, "elapsed",
                           out->elapsed, "stopped_by", out->stopped_by, "cost_usd",
                           engine_cost_json(out->cost_usd), "children", (json_int_t)out->children,
                           "sandboxes", (json_int_t)out->sandboxes, "depth_reached",
                           out->depth_reached);
    budget spent;
    calls_budget_snapshot(c, &spent);
    if (end)
        json_object_update_new(end, json_pack("{s:I,s:I,s:I,s:o}", "sub_calls_deduplicated",
                                              (json_int_t)out->sub_calls_deduplicated, "cached_tokens",
                                              (json_int_t)spent.cached_tokens, "cache_write_tokens",
                                              (json_int_t)spent.cache_write_tokens, "cost_no_cache_usd",
                                              engine_cost_json(out->cost_usd >= 0 ? spent.cost_no_cache : -1)));
    engine_event(&e, "run_end", end);
    sandbox_free(e.sb);
    engine_gate_release(&e);
    if (level == 1) {
        if (e.factory != p->factory)
            sandbox_factory_free(e.factory);   /* the run's own, not the pool's */
        pthread_cond_destroy(&e.own_gate.changed);
        pthread_mutex_destroy(&e.own_gate.lock);
    }
    history_free(&e.own);
    buf_free(&e.last_sub_prompt);
    free(e.fatal);
    free(e.node);
    return out->status;
}

rlm_status engine_run(const engine_params *p, calls *c, trace *t, const char *question,
                      engine_progress_fn progress, void *userdata,
                      engine_outcome *out)
{
    return engine_run_node(p, c, t, question, TRACE_ROOT_NODE, NULL, progress, userdata, out);
}

void engine_outcome_clear(engine_outcome *out)
{
    free(out->answer);
    free(out->error);
    free(out->sub_call_error);
    free(out->sandbox_layers);
    memset(out, 0, sizeof *out);
}

