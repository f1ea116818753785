/* engine — the RLM loop: the root model writes code, the sandbox runs it,
 * sub-calls go through the call path, and the loop ends on a final answer, or
 * when the turns or a budget run out (then one last request asks for the answer). */
#include "engine.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "describe.h"
#include "prompt.h"
#include "reply.h"
#include "sandbox.h"
#include "utf8.h"
#include "util.h"

/* How much of each prompt and reply of a sub-call goes into the trace. */
#define TRACE_EXCERPT_CHARS 2000
/* Consecutive empty root replies tolerated before the run gives up. */
#define MAX_EMPTY_REPLIES 3

typedef struct message {
    const char *role;
    char *content;
} message;

/* The state of one run. */
typedef struct engine {
    const engine_params *p;
    calls *calls;
    trace *trace;
    sandbox *sb;
    engine_progress_fn progress;
    void *progress_data;
    message *messages;
    size_t n_messages, cap_messages;
    int turn;                  /* current root turn, 1-based */
    int budget_stop;           /* a budget refused a call: no more code, one last request */
    char *fatal;               /* a sub-call path failure that ends the run (replay miss) */
    engine_outcome *out;
    double start;
    double stream_shown;       /* when a streaming progress line was last shown */
} engine;

/* ---- small helpers ------------------------------------------------------- */

static void engine_progress(engine *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void engine_progress(engine *e, const char *fmt, ...)
{
    if (!e->progress)
        return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof line)
        snprintf(line + n, sizeof line - (size_t)n, " · %zu sub-calls · %.1fs", e->out->sub_calls,
                 clock_now() - e->start);
    e->progress(e->progress_data, line);
}

static void engine_fail(engine *e, rlm_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void engine_fail(engine *e, rlm_status status, const char *fmt, ...)
{
    buf b;
    buf_init(&b, 64 * 1024);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    free(e->out->error);
    e->out->error = buf_take(&b);
    e->out->status = status;
}

/* Appends a message; takes ownership of content. -1 when out of memory. */
static int engine_push(engine *e, const char *role, char *content)
{
    if (!content)
        return -1;
    if (e->n_messages == e->cap_messages) {
        size_t cap = e->cap_messages ? e->cap_messages * 2 : 16;
        message *m = realloc(e->messages, cap * sizeof *m);
        if (!m) {
            free(content);
            return -1;
        }
        e->messages = m;
        e->cap_messages = cap;
    }
    e->messages[e->n_messages].role = role;
    e->messages[e->n_messages].content = content;
    e->n_messages++;
    return 0;
}

static json_t *json_excerpt(const char *text, size_t max_chars)
{
    if (!text)
        return json_null();
    char *cut = prompt_bound(text, strlen(text), max_chars);
    json_t *j = cut ? json_string(cut) : json_null();
    free(cut);
    return j ? j : json_null();
}

static json_t *json_usage(const lm_response *r)
{
    return json_pack("{s:I,s:I}", "prompt_tokens", (json_int_t)r->prompt_tokens,
                     "completion_tokens", (json_int_t)r->completion_tokens);
}

/* A call's cost for the trace: null when unknown, never a guessed 0. */
static json_t *json_cost(double usd)
{
    return usd >= 0 ? json_real(usd) : json_null();
}

/* Every prompt of a refused batch gets the same error string. */
static void engine_fill_errors(char **results, size_t n, const char *what, const char *why)
{
    for (size_t i = 0; i < n; i++) {
        buf b;
        buf_init(&b, 4096);
        buf_printf(&b, "Error: %s: %s", what, why);
        results[i] = buf_take(&b);
    }
}

/* Records that a budget refused a call; the loop then makes the last request. */
static void engine_budget_stop(engine *e, const char *detail)
{
    if (e->budget_stop)
        return;
    e->budget_stop = 1;
    budget_kind k = calls_exhausted(e->calls);
    trace_event(e->trace, "budget_exhausted",
                json_pack("{s:i,s:s?,s:f,s:s,s:s?}", "turn", e->turn, "budget", budget_kind_name(k),
                          "limit", calls_budget_limit(e->calls), "message",
                          calls_budget_message(e->calls), "refused", detail));
}

/* ---- sub-calls from model code ------------------------------------------ */

/* The text model code gets back for one sub-call: the reply, or an error
 * string it can recognise. A reply cut off at the token limit is an error
 * that carries the partial text: passing it on as a whole answer would
 * silently corrupt whatever the code aggregates. */
static char *engine_call_result(const lm_response *r)
{
    buf b;
    buf_init(&b, SIZE_MAX / 2);
    if (r->error != LM_OK)
        buf_printf(&b, "Error: sub-call failed (%s): %s", lm_error_name(r->error),
                   r->error_message ? r->error_message : "no detail");
    else if (!r->content || !r->content[0])
        buf_puts(&b, "Error: sub-call failed (empty): the model returned no text");
    else if (r->finish_reason && strcmp(r->finish_reason, "length") == 0)
        buf_printf(&b, "Error: sub-call reply was cut off at the output token limit; "
                       "partial reply follows:\n%s", r->content);
    else
        buf_puts(&b, r->content);
    return buf_take(&b);
}

static int engine_serve_calls(void *userdata, int kind, const char *model,
                              const char *const *prompts, size_t n, char **results)
{
    engine *e = userdata;
    const char *use_model = model && model[0] ? model : e->p->sub_model;
    lm_message *msgs = calloc(n ? n : 1, sizeof *msgs);
    lm_request *reqs = calloc(n ? n : 1, sizeof *reqs);
    calls_reply *resps = calloc(n ? n : 1, sizeof *resps);
    int status = 0;
    if (!msgs || !reqs || !resps) {
        engine_fill_errors(results, n, "sub-call failed", "out of memory");
        goto done;
    }
    if (e->budget_stop || e->fatal) {
        engine_fill_errors(results, n, "budget exhausted", calls_budget_message(e->calls));
        status = -1;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        msgs[i].role = "user";
        msgs[i].content = prompts[i];
        reqs[i].model = use_model;
        reqs[i].messages = &msgs[i];
        reqs[i].n_messages = 1;
    }
    engine_progress(e, "turn %d of %d · batch of %zu in flight", e->turn, e->p->max_iterations, n);
    /* rlm_query degrades to llm_query until child RLMs exist (depth 1). */
    const char *kind_name = kind == SANDBOX_CALL_RLM ? "rlm_query" : "llm_query";
    int rc = calls_sub(e->calls, reqs, n, resps);
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

    for (size_t i = 0; i < n; i++) {
        const lm_response *r = &resps[i].r;
        results[i] = engine_call_result(r);
        e->out->sub_calls++;
        if (strncmp(results[i], "Error: ", 7) == 0)
            e->out->sub_call_errors++;
        /* Thousands of sub-calls per batch: without a trace, build no event
         * (excerpts included) only to throw it away. */
        if (!e->trace) {
            calls_reply_clear(&resps[i]);
            continue;
        }
        json_t *ev = json_pack("{s:i,s:s,s:s,s:I,s:I,s:o,s:o,s:s?,s:s?,s:I,s:f,s:i,s:o,s:o,s:b}",
                               "turn", e->turn, "kind", kind_name, "model", use_model,
                               "index", (json_int_t)i, "batch", (json_int_t)n,
                               "prompt", json_excerpt(prompts[i], TRACE_EXCERPT_CHARS),
                               "reply", json_excerpt(results[i], TRACE_EXCERPT_CHARS),
                               "error", r->error ? lm_error_name(r->error) : NULL,
                               "finish_reason", r->finish_reason,
                               "http_status", (json_int_t)r->http_status,
                               "seconds", r->seconds, "attempts", r->attempts,
                               "usage", json_usage(r), "cost_usd", json_cost(resps[i].cost_usd),
                               "cached", resps[i].cached);
        trace_event(e->trace, "sub_call", ev);
        calls_reply_clear(&resps[i]);
    }
done:
    free(msgs);
    free(reqs);
    free(resps);
    return status;
}

/* ---- root turns ---------------------------------------------------------- */

/* Progress of a streamed root reply. Runs on the dispatcher's I/O thread
 * while the engine thread waits for this very call, so the two never touch
 * the engine at the same time; throttled to a few lines a second. */
static void engine_stream_progress(void *ctx, const lm_progress *pr)
{
    engine *e = ctx;
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
 * calls_root). Returns 0 with *resp filled, 1 for an empty reply (caller
 * nudges), 2 when a budget refused the request, -1 on a fatal model error
 * (outcome set). */
static int engine_ask_root(engine *e, lm_response *resp, int final)
{
    lm_message *msgs = calloc(e->n_messages, sizeof *msgs);
    if (!msgs) {
        engine_fail(e, RLM_ERR_NOMEM, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < e->n_messages; i++) {
        msgs[i].role = e->messages[i].role;
        msgs[i].content = e->messages[i].content;
    }
    lm_request req = {.model = e->p->model, .messages = msgs, .n_messages = e->n_messages,
                      .stream = e->p->stream, .progress = e->progress ? engine_stream_progress : NULL,
                      .progress_ctx = e};
    engine_progress(e, "turn %d of %d · waiting for %s", e->turn, e->p->max_iterations, e->p->model);
    trace_event(e->trace, "root_request",
                json_pack("{s:i,s:s,s:I,s:b,s:o}", "turn", e->turn, "model", e->p->model,
                          "messages", (json_int_t)e->n_messages, "stream", req.stream,
                          "last_message", json_excerpt(msgs[e->n_messages - 1].content, 100000)));
    calls_reply cr;
    int rc = calls_root(e->calls, &req, final, &cr);
    free(msgs);
    if (rc == CALLS_BUDGET) {
        engine_budget_stop(e, final ? "the last request" : "a root request");
        return 2;
    }
    if (rc != CALLS_OK) {
        engine_fail(e, RLM_ERR_MODEL, "root model request failed: %s", calls_errmsg(e->calls));
        return -1;
    }
    *resp = cr.r;
    e->out->iterations++;

    trace_event(e->trace, "root_reply",
                json_pack("{s:i,s:s?,s:s?,s:s?,s:s?,s:I,s:f,s:i,s:o,s:o,s:b}", "turn", e->turn,
                          "content", resp->content, "reasoning", resp->reasoning,
                          "error", resp->error ? lm_error_name(resp->error) : NULL,
                          "error_message", resp->error_message,
                          "http_status", (json_int_t)resp->http_status,
                          "seconds", resp->seconds, "attempts", resp->attempts,
                          "usage", json_usage(resp), "cost_usd", json_cost(cr.cost_usd),
                          "cached", cr.cached));
    if (resp->error == LM_ERR_EMPTY || (resp->error == LM_OK && (!resp->content || !resp->content[0])))
        return 1;
    if (resp->error != LM_OK) {
        const char *why = resp->error_message ? resp->error_message : "no detail";
        if (resp->http_status)
            engine_fail(e, RLM_ERR_MODEL, "root model request failed (%s, HTTP %ld): %s",
                        lm_error_name(resp->error), resp->http_status, why);
        else
            engine_fail(e, RLM_ERR_MODEL, "root model request failed (%s): %s",
                        lm_error_name(resp->error), why);
        return -1;
    }
    return 0;
}

/* Sets the answer and records it. Takes ownership of answer. */
static void engine_answer(engine *e, char *answer, const char *how)
{
    free(e->out->answer);
    e->out->answer = answer;
    e->out->status = RLM_OK;
    trace_event(e->trace, "final_answer",
                json_pack("{s:i,s:s,s:s}", "turn", e->turn, "how", how, "answer", answer));
}

/* Resolves FINAL_VAR(name) written in the text. Returns 1 when answered, 0
 * when the variable is missing (*note explains), -1 on a broken sandbox. */
static int engine_text_final_var(engine *e, const char *name, char **note)
{
    char err[512];
    char *value = NULL;
    int rc = sandbox_get_var(e->sb, name, &value, err, sizeof err);
    if (rc == 0) {
        engine_answer(e, value, "FINAL_VAR in text");
        return 1;
    }
    if (rc == 1) {
        buf b;
        buf_init(&b, 64 * 1024);
        buf_printf(&b, "Your FINAL_VAR(%s) was not accepted: %s", name,
                   value ? value : "there is no such variable");
        free(value);
        *note = buf_take(&b);
        return 0;
    }
    free(value);
    engine_fail(e, RLM_ERR_SANDBOX, "sandbox failed: %s", err);
    return -1;
}

/* Runs the reply's code blocks in order, stopping early at a final answer.
 * Appends the feedback message unless the run is answered. Returns 1 when
 * answered, 0 to continue, -1 on a fatal error. */
static int engine_run_blocks(engine *e, const reply *rp)
{
    prompt_block_result *results = calloc(rp->n_blocks, sizeof *results);
    sandbox_cell *cells = calloc(rp->n_blocks, sizeof *cells);
    char **shown = calloc(rp->n_blocks, sizeof *shown);
    char *note = NULL;
    int status = 0;
    size_t ran = 0;
    if (!results || !cells || !shown) {
        engine_fail(e, RLM_ERR_NOMEM, "out of memory");
        status = -1;
        goto done;
    }
    for (size_t i = 0; i < rp->n_blocks; i++) {
        char err[512];
        engine_progress(e, "turn %d of %d · running block %zu of %zu", e->turn,
                        e->p->max_iterations, i + 1, rp->n_blocks);
        int rc = sandbox_exec(e->sb, rp->blocks[i], engine_serve_calls, e, &cells[i], err, sizeof err);
        ran = i + 1;
        e->out->blocks++;
        trace_event(e->trace, "code",
                    json_pack("{s:i,s:I,s:s,s:s?,s:I,s:b,s:b,s:b,s:s?,s:f,s:f,s:I}", "turn", e->turn,
                              "block", (json_int_t)i + 1, "code", rp->blocks[i],
                              "output", cells[i].output, "output_chars", (json_int_t)cells[i].output_chars,
                              "raised", cells[i].raised, "timed_out", cells[i].timed_out,
                              "restarted", cells[i].restarted, "final_answer", cells[i].final_answer,
                              "seconds", cells[i].seconds, "call_seconds", cells[i].call_seconds,
                              "calls", (json_int_t)cells[i].n_calls));
        if (rc != 0) {
            engine_fail(e, RLM_ERR_SANDBOX, "sandbox failed: %s", err);
            status = -1;
            goto done;
        }
        if (e->fatal) {
            engine_fail(e, RLM_ERR_MODEL, "sub-call failed: %s", e->fatal);
            status = -1;
            goto done;
        }
        if (cells[i].final_answer) {
            engine_answer(e, cells[i].final_answer, "code");
            cells[i].final_answer = NULL;
            status = 1;
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
        if (status != 0)
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
        shown[i] = prompt_bound(out, strlen(out), e->p->output_limit + 1024);
        results[i].code = rp->blocks[i];
        results[i].output = shown[i] ? shown[i] : "";
        results[i].raised = cells[i].raised;
        results[i].timed_out = cells[i].timed_out;
        results[i].restarted = cells[i].restarted;
    }
    if (engine_push(e, "user", prompt_feedback(results, ran, e->turn + 1, e->p->max_iterations, note)) != 0) {
        engine_fail(e, RLM_ERR_NOMEM, "out of memory");
        status = -1;
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

/* One root turn. On the last turn (after the turn or budget limit) no code
 * runs, as the last request tells the model: only a text FINAL / FINAL_VAR
 * counts. Returns 1 when answered, 0 to go on, 2 when a budget ran out (the
 * caller makes the last request), -1 on a fatal error. */
static int engine_turn(engine *e, int *empty_replies, int last)
{
    lm_response resp = {0};
    int rc = engine_ask_root(e, &resp, last);
    if (rc < 0 || rc == 2) {
        lm_response_clear(&resp);
        return rc;
    }
    if (rc == 1) {
        lm_response_clear(&resp);
        if (++*empty_replies >= MAX_EMPTY_REPLIES) {
            engine_fail(e, RLM_ERR_MODEL, "the root model returned %d empty replies in a row",
                        *empty_replies);
            return -1;
        }
        /* No empty assistant message: some providers reject one. */
        if (engine_push(e, "user", prompt_nudge(e->turn + 1, e->p->max_iterations)) != 0) {
            engine_fail(e, RLM_ERR_NOMEM, "out of memory");
            return -1;
        }
        return 0;
    }
    *empty_replies = 0;

    reply rp;
    if (reply_parse(resp.content, strlen(resp.content), &rp) != 0) {
        lm_response_clear(&resp);
        engine_fail(e, RLM_ERR_NOMEM, "out of memory");
        return -1;
    }
    char *content = resp.content;
    resp.content = NULL;
    lm_response_clear(&resp);
    if (engine_push(e, "assistant", content) != 0) {
        reply_clear(&rp);
        engine_fail(e, RLM_ERR_NOMEM, "out of memory");
        return -1;
    }

    int status = 0;
    if (rp.n_blocks > 0 && !last) {
        status = engine_run_blocks(e, &rp);
        if (status == 0 && e->budget_stop)
            status = 2;
    } else if (rp.final_kind == REPLY_FINAL_VALUE) {
        engine_answer(e, rp.final_text, "FINAL in text");
        rp.final_text = NULL;
        status = 1;
    } else if (rp.final_kind == REPLY_FINAL_VAR) {
        char *note = NULL;
        status = engine_text_final_var(e, rp.final_text, &note);
        if (status == 0) {
            char *fb = prompt_feedback(NULL, 0, e->turn + 1, e->p->max_iterations, note);
            if (engine_push(e, "user", fb) != 0) {
                engine_fail(e, RLM_ERR_NOMEM, "out of memory");
                status = -1;
            }
        }
        free(note);
    } else if (engine_push(e, "user", prompt_nudge(e->turn + 1, e->p->max_iterations)) != 0) {
        engine_fail(e, RLM_ERR_NOMEM, "out of memory");
        status = -1;
    }
    reply_clear(&rp);
    return status;
}

/* ---- the run ------------------------------------------------------------- */

static int engine_start_sandbox(engine *e, const context *ctx)
{
    sandbox_options so = {
        .exe_path = e->p->sandbox_exe,
        .context_fd = ctx ? context_fd(ctx) : -1,
        .context_len = ctx ? context_len(ctx) : 0,
        .data_fd = -1,
        .memory_limit = e->p->sandbox_memory,
        .cell_timeout = e->p->cell_timeout,
        .output_limit = e->p->output_limit,
        .unsafe_no_sandbox = e->p->unsafe_no_sandbox,
        .search_cache_dir = e->p->search_cache_dir,
    };
    char err[1024];
    engine_progress(e, "starting sandbox");
    double t0 = clock_now();
    int pack_fd = -1, data_fd = -1;
    if (e->p->docs) {
        size_t pack_len;
        if (ingest_pack(e->p->docs, &pack_fd, &pack_len, &data_fd, err, sizeof err) != 0) {
            engine_fail(e, RLM_ERR_INPUT, "cannot hand the input to the sandbox: %s", err);
            return -1;
        }
        so.context_fd = pack_fd;
        so.context_len = pack_len;
        so.context_pack = 1;
        so.data_fd = data_fd;
        so.data_len = data_fd >= 0 ? ingest_total_bytes(e->p->docs) : 0;
    }
    int started = sandbox_start(&so, &e->sb, err, sizeof err);
    /* The sandbox keeps its own duplicates, for restarts. */
    if (pack_fd >= 0)
        close(pack_fd);
    if (data_fd >= 0)
        close(data_fd);
    if (started != 0) {
        engine_fail(e, RLM_ERR_SANDBOX, "cannot start the sandbox: %s", err);
        trace_event(e->trace, "error", json_pack("{s:s,s:s}", "where", "sandbox", "message", err));
        return -1;
    }
    e->out->sandbox_layers = strdup(sandbox_layers(e->sb));
    /* A layer this machine refused is never silent: the user hears it and
     * the trace keeps it. */
    const char *warnings = sandbox_warnings(e->sb);
    if (warnings[0] && e->p->warn) {
        buf w;
        buf_init(&w, 8192);
        buf_printf(&w, "weaker sandbox: %s", warnings);
        if (w.data)
            e->p->warn(e->p->warn_data, w.data);
        buf_free(&w);
    }
    trace_event(e->trace, "sandbox_ready",
                json_pack("{s:s,s:i,s:f,s:b,s:s}", "layers", sandbox_layers(e->sb), "pid",
                          sandbox_pid(e->sb), "seconds", clock_now() - t0, "unsafe",
                          e->p->unsafe_no_sandbox, "warnings", warnings));
    return 0;
}

static int engine_first_messages(engine *e, const context *ctx, const char *question)
{
    char *description;
    if (e->p->docs)
        description = describe_docset(ingest_kind_of(e->p->docs), ingest_docs(e->p->docs),
                                      ingest_count(e->p->docs));
    else
        description = ctx ? prompt_describe_context(context_name(ctx), context_data(ctx), context_len(ctx))
                          : prompt_describe_context(NULL, "", 0);
    if (!description)
        return -1;
    /* The description read the whole input; the host needs none of it now. */
    context_release_pages(ctx);
    ingest_release_pages(e->p->docs);
    int rc = engine_push(e, "system", prompt_system(e->p->max_iterations));
    if (rc == 0)
        rc = engine_push(e, "user", prompt_first_user(description, question, e->p->max_iterations));
    free(description);
    return rc;
}

/* The one last request for the best answer so far, after the turns or a
 * budget ran out. `message` is taken (the user message that asks for it). */
static void engine_last_request(engine *e, char *ask, int *empty_replies, const char *why)
{
    if (engine_push(e, "user", ask) != 0) {
        engine_fail(e, RLM_ERR_NOMEM, "out of memory");
        return;
    }
    int rc = engine_turn(e, empty_replies, 1);
    if (rc == 0 || rc == 2) {
        e->out->status = RLM_NO_ANSWER;
        free(e->out->error);
        e->out->error = strdup(why);
    }
}

/* ---- direct mode ---------------------------------------------------------- */

/* Estimated tokens of the whole input, per kind of text. */
static size_t engine_input_tokens(const engine_params *p, const context *ctx)
{
    if (!p->docs)
        return ctx ? describe_estimate_tokens(context_len(ctx), DESCRIBE_PROSE) : 0;
    size_t total = 0;
    const ingest_doc *docs = ingest_docs(p->docs);
    for (size_t i = 0; i < ingest_count(p->docs); i++)
        total += describe_estimate_tokens(docs[i].len, describe_text_of_name(docs[i].name));
    return total;
}

/* The user message of direct mode: the whole input between markers (each
 * document under its name), then the question. NULL when out of memory. */
static char *engine_direct_message(const engine_params *p, const context *ctx, const char *question)
{
    buf b;
    buf_init(&b, SIZE_MAX / 2);
    buf_puts(&b, "<input>\n");
    if (p->docs) {
        ingest_validate(p->docs);   /* a file that shrank is cut, never read past its end */
        const ingest_doc *docs = ingest_docs(p->docs);
        size_t n = ingest_count(p->docs);
        for (size_t i = 0; i < n; i++) {
            if (n > 1 || ingest_kind_of(p->docs) != INGEST_STR)
                buf_printf(&b, "=== %s ===\n", docs[i].name);
            size_t clean_len = 0;
            char *clean = utf8_sanitize(docs[i].data ? docs[i].data : "", docs[i].len, &clean_len);
            if (clean)
                buf_append(&b, clean, clean_len);
            free(clean);
            buf_puts(&b, "\n");
        }
    } else if (ctx && context_len(ctx)) {
        size_t clean_len = 0;
        char *clean = utf8_sanitize(context_data(ctx), context_len(ctx), &clean_len);
        if (clean)
            buf_append(&b, clean, clean_len);
        free(clean);
        buf_puts(&b, "\n");
    }
    buf_printf(&b, "</input>\n\nQuestion: %s", question);
    return b.data ? buf_take(&b) : NULL;
}

/* Answers with one plain call: no sandbox, no code. */
static void engine_direct(engine *e, const context *ctx, const char *question)
{
    if (engine_push(e, "system", prompt_direct_system()) != 0 ||
        engine_push(e, "user", engine_direct_message(e->p, ctx, question)) != 0) {
        engine_fail(e, RLM_ERR_NOMEM, "out of memory");
        return;
    }
    e->turn = 1;
    lm_response resp = {0};
    int rc = engine_ask_root(e, &resp, 0);
    if (rc == 0) {
        engine_answer(e, resp.content, "direct");
        resp.content = NULL;
    } else if (rc == 1) {
        engine_fail(e, RLM_ERR_MODEL, "the model returned an empty reply");
    } else if (rc == 2) {
        e->out->status = RLM_NO_ANSWER;
        free(e->out->error);
        e->out->error = strdup("budget exhausted before the call");
    }
    lm_response_clear(&resp);
}

rlm_status engine_run(const engine_params *p, calls *c, trace *t, const context *ctx,
                      const char *question, engine_progress_fn progress, void *userdata,
                      engine_outcome *out)
{
    memset(out, 0, sizeof *out);
    out->status = RLM_NO_ANSWER;
    out->mode = "rlm";
    engine e = {.p = p, .calls = c, .trace = t, .progress = progress, .progress_data = userdata,
                .out = out, .start = clock_now()};

    size_t bytes = p->docs ? ingest_total_bytes(p->docs) : ctx ? context_len(ctx) : 0;
    trace_event(t, "question", json_pack("{s:s,s:s?,s:I,s:I}", "question", question, "context",
                                         ctx && !p->docs ? context_name(ctx) : NULL, "context_bytes",
                                         (json_int_t)bytes, "documents",
                                         (json_int_t)(p->docs ? ingest_count(p->docs) : ctx != NULL)));
    size_t tokens = engine_input_tokens(p, ctx);
    size_t threshold = p->direct_threshold;   /* 0: auto never answers directly */
    int direct = p->mode == ENGINE_MODE_DIRECT || (p->mode == ENGINE_MODE_AUTO && tokens < threshold);
    out->mode = direct ? "direct" : "rlm";
    trace_event(t, "mode", json_pack("{s:s,s:s,s:I,s:I}", "mode", out->mode, "requested",
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
        engine_direct(&e, ctx, question);
        goto done;
    }
    if (engine_first_messages(&e, ctx, question) != 0) {
        engine_fail(&e, RLM_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (engine_start_sandbox(&e, ctx) != 0)
        goto done;

    int empty_replies = 0;
    int rc = 0;
    for (e.turn = 1; e.turn <= p->max_iterations && rc == 0; e.turn++) {
        rc = engine_turn(&e, &empty_replies, 0);
        if (rc != 0)
            break;
    }
    if (rc == 2) {
        /* A budget ran out: one last request, saying which. */
        char why[512];
        snprintf(why, sizeof why, "budget exhausted: %s", calls_budget_message(c));
        if (out->iterations >= e.turn)
            e.turn++;   /* this turn's reply arrived: the last request is the next turn */
        engine_last_request(&e, prompt_last_turn_budget(calls_budget_message(c)), &empty_replies, why);
    } else if (rc == 0) {
        /* The turns ran out: one last request for the best answer so far. */
        trace_event(t, "turns_exhausted", json_pack("{s:i}", "max_iterations", p->max_iterations));
        e.turn = p->max_iterations + 1;
        engine_last_request(&e, prompt_last_turn(), &empty_replies, "no final answer within the turn limit");
    }

done:
    out->elapsed = clock_now() - e.start;
    out->stopped_by = budget_kind_name(calls_exhausted(c));
    out->cost_usd = calls_cost(c);
    trace_event(t, "run_end",
                json_pack("{s:s,s:s,s:s?,s:s?,s:i,s:I,s:I,s:I,s:f,s:s?,s:o}", "mode", out->mode,
                          "status",
                          rlm_status_name(out->status), "answer", out->answer, "error", out->error,
                          "iterations", out->iterations, "blocks", (json_int_t)out->blocks,
                          "sub_calls", (json_int_t)out->sub_calls, "sub_call_errors",
                          (json_int_t)out->sub_call_errors, "elapsed", out->elapsed, "stopped_by",
                          out->stopped_by, "cost_usd", json_cost(out->cost_usd)));
    sandbox_free(e.sb);
    for (size_t i = 0; i < e.n_messages; i++)
        free(e.messages[i].content);
    free(e.messages);
    free(e.fatal);
    return out->status;
}

void engine_outcome_clear(engine_outcome *out)
{
    free(out->answer);
    free(out->error);
    free(out->sandbox_layers);
    memset(out, 0, sizeof *out);
}
