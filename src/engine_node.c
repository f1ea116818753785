/* engine_node — what every RLM of the tree does around its loop, shared by
 * the engine's three files (engine_internal.h): events, progress and
 * failures of the node, its history and the session store, excerpts for the
 * trace, a budget stop, the gate on the tree's sandboxes; and its inputs:
 * checking them against their files,
 * handing them to a new sandbox, describing them, and the system prompt and
 * first message. engine.c (the loop), engine_children.c and engine_state.c
 * call down into it; it calls none of them. */
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "describe.h"
#include "engine_internal.h"
#include "frame.h"
#include "prompt.h"
#include "sandbox.h"
#include "utf8.h"
#include "util.h"

/* ---- small helpers ------------------------------------------------------- */

char *engine_strf(const char *fmt, ...)
{
    buf b;
    buf_init(&b, 64 * 1024);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    return buf_take(&b);
}

int engine_max_depth(const engine_params *p)
{
    return p->max_depth > 0 ? p->max_depth : 1;
}

int engine_max_children(const engine_params *p)
{
    return p->max_children > 0 ? p->max_children : 8;
}

double engine_child_share(const engine_params *p)
{
    return p->child_share > 0 && p->child_share <= 1 ? p->child_share : 0.5;
}

int engine_cancelled(const engine *e)
{
    return e->p->cancel && *e->p->cancel;
}

int engine_past_deadline(const engine *e)
{
    double now = clock_now();
    return (e->cell_deadline > 0 && now >= e->cell_deadline) ||
           (e->deadline > 0 && now >= e->deadline);
}

/* Records an event of this node: every event says which node of the call
 * tree it belongs to and its parent. Steals fields. */
/* fields with e's node and parent added; NULL when no one listens (fields
 * dropped). */
static json_t *engine_fields(engine *e, json_t *fields)
{
    if (!trace_active(e->trace)) {
        json_decref(fields);
        return NULL;
    }
    if (!fields)
        fields = json_object();
    if (fields) {
        json_object_set_new(fields, "node", json_string(e->node));
        json_object_set_new(fields, "parent", e->parent ? json_string(e->parent) : json_null());
    }
    return fields;
}

void engine_event(engine *e, const char *type, json_t *fields)
{
    if ((fields = engine_fields(e, fields)))
        trace_event(e->trace, type, fields);
}

void engine_notify(engine *e, const char *type, json_t *fields)
{
    if ((fields = engine_fields(e, fields)))
        trace_notify(e->trace, type, fields);
}

void engine_progress(engine *e, const char *fmt, ...)
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

void engine_fail(engine *e, rlm_status status, const char *fmt, ...)
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

/* The user cancelled the question: no answer, no last request. */
void engine_cancel(engine *e)
{
    if (e->out->error && strcmp(e->out->error, "cancelled") == 0)
        return;
    free(e->out->error);
    e->out->error = strdup("cancelled");
    e->out->status = RLM_NO_ANSWER;
    engine_event(e, "cancelled", json_pack("{s:i}", "turn", e->turn));
}

int history_push(history *h, const char *role, char *content)
{
    if (!content)
        return -1;
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        message *m = realloc(h->m, cap * sizeof *m);
        if (!m) {
            free(content);
            return -1;
        }
        h->m = m;
        h->cap = cap;
    }
    h->m[h->n].role = role;
    h->m[h->n].content = content;
    h->n++;
    return 0;
}

/* Frees messages [from, n). */
void history_truncate(history *h, size_t from)
{
    for (size_t i = from; i < h->n; i++)
        free(h->m[i].content);
    if (from < h->n)
        h->n = from;
}

void history_free(history *h)
{
    history_truncate(h, 0);
    free(h->m);
    memset(h, 0, sizeof *h);
}

/* The session store of this run: only the top RLM of a conversation has one. */
session *engine_store(const engine *e)
{
    return e->st ? e->st->store : NULL;
}

/* A store that fails is reported once per failure and the run goes on: the
 * answer matters more than its record. */
void engine_store_failed(engine *e, const char *what)
{
    session *s = engine_store(e);
    char msg[768];
    snprintf(msg, sizeof msg, "session store: cannot save %s: %s", what, s ? session_errmsg(s) : "");
    if (e->p->warn)
        e->p->warn(e->p->warn_data, msg);
    engine_event(e, "warning", json_pack("{s:s}", "message", msg));
}

/* Appends a message (and writes it to the session store); takes ownership
 * of content. -1 when out of memory. */
int engine_push(engine *e, const char *role, char *content)
{
    if (history_push(e->h, role, content) != 0)
        return -1;
    session *s = engine_store(e);
    if (s && session_add_message(s, role, content) != 0)
        engine_store_failed(e, "a message");
    return 0;
}

json_t *engine_text_json(const char *text, size_t len)
{
    json_t *j = text ? frame_string(text, len) : json_null();
    return j ? j : json_null();
}

json_t *engine_excerpt(const char *text, size_t max_chars)
{
    return engine_excerpt_n(text, text ? strlen(text) : 0, max_chars);
}

/* json_stringn, the UTF-8 checked by utf8_valid (ASCII eight bytes at a
 * time) rather than by jansson a character at a time; null for NULL. */
static json_t *excerpt_string(const char *text, size_t len)
{
    json_t *j = text && utf8_valid(text, len) ? json_stringn_nocheck(text, len) : NULL;
    return j ? j : json_null();
}

char *engine_excerpt_cut(const char *text, size_t len, size_t max_chars, size_t *out_len)
{
    *out_len = 0;
    return text ? utf8_bound_n(text, len, max_chars, out_len) : NULL;
}

json_t *engine_excerpt_n(const char *text, size_t len, size_t max_chars)
{
    if (!text)
        return json_null();
    if (len <= max_chars)   /* never more characters than bytes: whole, with no copy to cut */
        return excerpt_string(text, len);
    size_t cut_len = 0;
    char *cut = utf8_bound_n(text, len, max_chars, &cut_len);
    json_t *j = excerpt_string(cut, cut_len);
    free(cut);
    return j;
}

json_t *engine_usage_json(const lm_response *r)
{
    return json_pack("{s:I,s:I,s:I,s:I}", "prompt_tokens", (json_int_t)r->prompt_tokens,
                     "cached_tokens", (json_int_t)r->cached_tokens, "cache_write_tokens",
                     (json_int_t)r->cache_write_tokens, "completion_tokens",
                     (json_int_t)r->completion_tokens);
}

/* A call's cost for the trace: null when unknown, never a guessed 0. */
json_t *engine_cost_json(double usd)
{
    return usd >= 0 ? json_real(usd) : json_null();
}

/* Every prompt of a refused batch gets the same error string. */
void engine_fill_errors(char **results, size_t n, const char *what, const char *why)
{
    for (size_t i = 0; i < n; i++) {
        buf b;
        buf_init(&b, 4096);
        buf_printf(&b, "Error: %s: %s", what, why);
        results[i] = buf_take(&b);
    }
}

/* Records that a budget refused a call; the loop then makes the last request. */
void engine_budget_stop(engine *e, const char *detail)
{
    if (e->budget_stop)
        return;
    e->budget_stop = 1;
    budget_kind k = calls_exhausted(e->calls);
    engine_event(e, "budget_exhausted",
                json_pack("{s:i,s:s?,s:f,s:s,s:s?}", "turn", e->turn, "budget", budget_kind_name(k),
                          "limit", calls_budget_limit(e->calls), "message",
                          calls_budget_message(e->calls), "refused", detail));
}

/* The run's inputs checked against their files (ingest_validate): a file
 * that shrank is cut to the bytes left, a file rewritten in place is
 * noted. Says each new problem as a warning. Returns 1 when any input
 * changed. */
int engine_check_inputs(engine *e)
{
    ingest_set *sets[64];
    size_t n = 0;
    if (e->p->docs)
        sets[n++] = e->p->docs;
    for (size_t i = 0; e->st && i < e->st->n_inputs && n < 64; i++)
        if (e->st->inputs[i].docs)
            sets[n++] = e->st->inputs[i].docs;
    int changed = 0;
    for (size_t i = 0; i < n; i++) {
        size_t before = ingest_problem_count(sets[i]);
        if (ingest_validate(sets[i]) == 0)
            continue;
        changed = 1;
        for (size_t k = before; k < ingest_problem_count(sets[i]); k++) {
            char msg[4200];
            snprintf(msg, sizeof msg, "input: %s", ingest_problem(sets[i], k));
            engine_event(e, "warning", json_pack("{s:s}", "message", msg));
            if (e->p->warn && e->level == 1)
                e->p->warn(e->p->warn_data, msg);
        }
    }
    return changed;
}

void engine_sandbox_trouble(engine *e, int changed, const char *what, const char *err)
{
    if (changed || engine_check_inputs(e))
        engine_fail(e, RLM_ERR_INPUT, "an input file changed while rlm was using it (a log rotated "
                    "with copytruncate, rewritten?): the sandbox cannot load it again as it was "
                    "read; run again on a copy of the file (%s%s%s)", what, err ? ": " : "",
                    err ? err : "");
    else
        engine_fail(e, RLM_ERR_SANDBOX, "%s: %s", what, err ? err : "no detail");
}

/* ---- the sandbox gate (engine_gate) -------------------------------------------------------------- */

#define GATE_WAIT_MS 100 /* how often a waiting child looks at cancel and its deadline */

static int gate_may_wait(const engine *e)
{
    return !engine_cancelled(e) && !engine_past_deadline(e);
}

int engine_gate_acquire(engine *e, char *why, size_t whylen)
{
    engine_gate *g = e->gate;
    pthread_mutex_lock(&g->lock);
    while (g->alive >= g->cap && g->busy > 0 && gate_may_wait(e)) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += GATE_WAIT_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&g->changed, &g->lock, &until);
    }
    int ok = g->alive < g->cap;
    if (ok) {
        g->alive++;
        g->busy++;
        e->gate_held = 1;
    } else {
        snprintf(why, whylen,
                 "%d sandboxes are alive in this run, the most --max-sandboxes allows, and every "
                 "RLM holding one is waiting for children of its own",
                 g->cap);
        if (!gate_may_wait(e))
            snprintf(why, whylen, "%s", engine_cancelled(e) ? "cancelled while waiting for a sandbox"
                                        : "the parent's cell reached its wall limit (--cell-wall) "
                                          "while this child waited for a sandbox");
    }
    pthread_mutex_unlock(&g->lock);
    return ok ? 0 : -1;
}

void engine_gate_release(engine *e)
{
    if (!e->gate_held)
        return;
    engine_gate *g = e->gate;
    pthread_mutex_lock(&g->lock);
    g->alive--;
    g->busy--;
    pthread_cond_broadcast(&g->changed);
    pthread_mutex_unlock(&g->lock);
    e->gate_held = 0;
}

void engine_gate_waiting(engine *e, int waiting)
{
    engine_gate *g = e->gate;
    pthread_mutex_lock(&g->lock);
    g->busy += waiting ? -1 : 1;
    pthread_cond_broadcast(&g->changed);
    pthread_mutex_unlock(&g->lock);
}

/* ---- inputs into the sandbox, first messages ------------------------------ */

/* The sandbox's view of an input: its pack, whose descriptors
 * engine_input_close closes. */
int engine_input_open(ingest_set *docs, sandbox_input *in, char *err, size_t errlen)
{
    memset(in, 0, sizeof *in);
    in->context_fd = -1;
    in->data_fd = -1;
    if (docs) {
        size_t pack_len;
        int pack_fd = -1, data_fd = -1;
        if (ingest_pack(docs, &pack_fd, &pack_len, &data_fd, err, errlen) != 0)
            return -1;
        in->context_fd = pack_fd;
        in->context_len = pack_len;
        in->context_pack = 1;
        in->data_fd = data_fd;
        in->data_len = data_fd >= 0 ? ingest_total_bytes(docs) : 0;
        in->parsed = ingest_format_of(docs) != INGEST_TEXT;
    }
    return 0;
}

void engine_input_close(const sandbox_input *in, const ingest_set *docs)
{
    if (!docs)
        return;
    if (in->context_fd >= 0)
        close(in->context_fd);
    if (in->data_fd >= 0)
        close(in->data_fd);
}

/* The description of an input for the root; NULL when out of memory. The
 * description read the whole input: the host needs none of its pages now. */
char *engine_input_describe(ingest_set *docs, const json_t *summary)
{
    char *d = describe_input(docs, summary);
    ingest_release_pages(docs);
    return d;
}

/* A sandbox start: what the engine's thread prepares (options, the input's
 * descriptors), what sandbox_start makes of it, and when. */
struct engine_launch {
    sandbox_options so;
    sandbox_input in;          /* descriptors held until the start is done */
    ingest_set *docs;          /* whose pack descriptors engine_input_close closes */
    sandbox *sb;
    int rc;                    /* sandbox_start's */
    char err[1024];
    double seconds;            /* how long sandbox_start took */
    double waited;             /* how long the run waited for it */
    pthread_t thread;
};

/* The first half of a start, on the engine's thread: the tree's gate (a
 * child's), the options and the input's descriptors. 0, or -1 with the
 * outcome set. */
static int launch_prepare(engine *e, ingest_set *docs, sandbox_factory *inputs_from,
                          struct engine_launch *l)
{
    memset(l, 0, sizeof *l);
    l->so = (sandbox_options){
        .exe_path = e->p->sandbox_exe,
        .memory_limit = e->p->sandbox_memory,
        .cell_timeout = e->p->cell_timeout,
        .output_limit = e->p->output_limit,
        .unsafe_no_sandbox = e->p->unsafe_no_sandbox,
        .search_cache_dir = e->p->search_cache_dir,
        .cancel = e->p->cancel,
        .factory = inputs_from ? inputs_from : e->factory,
        .factory_inputs = inputs_from != NULL,
        .first_alias = e->st && e->st->legacy_names ? "context_1" : NULL,
    };
    l->in = (sandbox_input){.context_fd = -1, .data_fd = -1};
    char err[1024];
    engine_progress(e, "starting sandbox");
    if (e->level > 1 && engine_gate_acquire(e, err, sizeof err) != 0) {
        engine_fail(e, RLM_ERR_SANDBOX, "no sandbox for this child RLM: %s", err);
        engine_event(e, "error", json_pack("{s:s,s:s}", "where", "sandbox", "message", err));
        return -1;
    }
    engine_check_inputs(e);   /* a file that shrank since it was read is cut, and said */
    if (!inputs_from && engine_input_open(docs, &l->in, err, sizeof err) != 0) {
        engine_fail(e, RLM_ERR_INPUT, "cannot hand the input to the sandbox: %s", err);
        return -1;
    }
    l->docs = inputs_from ? NULL : docs;
    l->so.context_fd = l->in.context_fd;
    l->so.context_len = l->in.context_len;
    l->so.context_pack = l->in.context_pack;
    l->so.data_fd = l->in.data_fd;
    l->so.data_len = l->in.data_len;
    l->so.parsed = l->in.parsed;
    return 0;
}

/* The middle: touches nothing of the engine's, so it may run on a thread of
 * its own (engine_start_sandbox_early). */
static void launch_run(struct engine_launch *l)
{
    double t0 = clock_now();
    l->rc = sandbox_start(&l->so, &l->sb, l->err, sizeof l->err);
    l->seconds = clock_now() - t0;
}

static void *launch_main(void *arg)
{
    launch_run(arg);
    return NULL;
}

/* The last half, on the engine's thread: the sandbox becomes e->sb, or the
 * failure the outcome. needed: the run waits for this sandbox to go on; a
 * sandbox the run turned out not to need (it answered before any code)
 * that failed is a warning, not the run's failure. 0, or -1. */
static int launch_finish(engine *e, struct engine_launch *l, int needed)
{
    engine_input_close(&l->in, l->docs);   /* the sandbox keeps its own duplicates, for restarts */
    if (l->rc != 0 && !needed) {
        char msg[1200];
        snprintf(msg, sizeof msg, "the sandbox could not start (this run needed none): %s", l->err);
        if (e->p->warn)
            e->p->warn(e->p->warn_data, msg);
        engine_event(e, "error", json_pack("{s:s,s:s}", "where", "sandbox", "message", l->err));
        return -1;
    }
    if (l->rc == -2) {
        engine_fail(e, RLM_ERR_INPUT, "input: %s", l->err);
        engine_event(e, "error", json_pack("{s:s,s:s}", "where", "input", "message", l->err));
        return -1;
    }
    if (l->rc != 0) {
        engine_sandbox_trouble(e, 0, "cannot start the sandbox", l->err);
        engine_event(e, "error", json_pack("{s:s,s:s}", "where", "sandbox", "message", l->err));
        return -1;
    }
    e->sb = l->sb;
    e->out->sandboxes++;
    free(e->out->sandbox_layers);
    e->out->sandbox_layers = strdup(sandbox_layers(e->sb));
    /* A layer this machine refused is never silent: the user hears it and
     * the trace keeps it (once per run: children see the same machine). */
    const char *warnings = sandbox_warnings(e->sb);
    if (warnings[0] && e->p->warn && e->level == 1 && !(e->st && e->st->layers_warned)) {
        if (e->st)
            e->st->layers_warned = 1; /* a conversation's questions see the same machine */
        buf w;
        buf_init(&w, 8192);
        buf_printf(&w, "weaker sandbox: %s", warnings);
        if (w.data)
            e->p->warn(e->p->warn_data, w.data);
        buf_free(&w);
    }
    /* seconds: the start itself; waited: how much of it the run waited for
     * (less than seconds when it started while the root model thought). */
    engine_event(e, "sandbox_ready",
                 json_pack("{s:s,s:i,s:f,s:f,s:b,s:s,s:b}", "layers", sandbox_layers(e->sb), "pid",
                           sandbox_pid(e->sb), "seconds", l->seconds, "waited",
                           l->waited, "unsafe",
                           e->p->unsafe_no_sandbox, "warnings", warnings, "forked",
                           sandbox_forked(e->sb)));
    if (!l->so.factory_inputs)
        engine_input_problems(e, sandbox_input_summary(e->sb, 0));
    return 0;
}

/* Starts this run's sandbox on one input (NULL: none). */
int engine_start_sandbox(engine *e, ingest_set *docs, sandbox_factory *inputs_from)
{
    struct engine_launch l;
    if (launch_prepare(e, docs, inputs_from, &l) != 0)
        return -1;
    launch_run(&l);
    l.waited = l.seconds;   /* all of it */
    return launch_finish(e, &l, 1);
}

/* engine_start_sandbox_early, also for a start on a factory's inputs. */
static int start_early(engine *e, ingest_set *docs, sandbox_factory *inputs_from)
{
    struct engine_launch *l = malloc(sizeof *l);
    if (!l)
        return engine_start_sandbox(e, docs, inputs_from);
    if (launch_prepare(e, docs, inputs_from, l) != 0) {
        free(l);
        return -1;
    }
    if (pthread_create(&l->thread, NULL, launch_main, l) != 0) {
        launch_run(l);   /* no thread: the start as it always was */
        l->waited = l->seconds;
        int rc = launch_finish(e, l, 1);
        free(l);
        return rc;
    }
    e->launch = l;
    return 0;
}

int engine_start_sandbox_early(engine *e, ingest_set *docs)
{
    return start_early(e, docs, NULL);
}

int engine_sandbox_wait(engine *e, int needed)
{
    struct engine_launch *l = e->launch;
    if (!l)
        return 0;
    e->launch = NULL;
    double t0 = clock_now();
    pthread_join(l->thread, NULL);
    l->waited = clock_now() - t0;
    int rc = launch_finish(e, l, needed);
    free(l);
    return rc;
}

/* What the sandbox skipped while parsing an input (JSON lines that are not
 * JSON) is never silent: a warning each, on stderr and in the trace. */
void engine_input_problems(engine *e, const json_t *summary)
{
    size_t i;
    const json_t *problem;
    json_array_foreach(json_object_get(summary, "problems"), i, problem) {
        char msg[1200];
        snprintf(msg, sizeof msg, "input: %s", json_string_value(problem));
        if (e->p->warn)
            e->p->warn(e->p->warn_data, msg);
        engine_event(e, "warning", json_pack("{s:s}", "message", msg));
    }
    size_t skipped = (size_t)json_integer_value(json_object_get(summary, "skipped"));
    size_t listed = json_array_size(json_object_get(summary, "problems"));
    if (skipped > listed) {
        char msg[128];
        snprintf(msg, sizeof msg, "input: ... and %zu more lines that are not JSON, skipped",
                 skipped - listed);
        if (e->p->warn)
            e->p->warn(e->p->warn_data, msg);
        engine_event(e, "warning", json_pack("{s:s}", "message", msg));
    }
}

char *engine_system_prompt(const engine *e, const char *description, int *described)
{
    const char *custom = e->p->system_prompt;
    *described = custom && description && strstr(custom, "{context_description}") != NULL;
    return custom ? prompt_system_fill(custom, e->p->max_iterations, description)
                  : prompt_system(e->p->max_iterations);
}

/* The system prompt and the first question, for an input described so. */
static int engine_open_messages(engine *e, const char *description, const char *question)
{
    int described;
    int rc = engine_push(e, "system", engine_system_prompt(e, description, &described));
    if (rc == 0)
        rc = engine_push(e, "user", prompt_first_user(described ? "" : description, question,
                                                      e->p->max_iterations));
    return rc;
}

/* The system prompt and the first question. A parsed input is described from
 * the summary of the sandbox that parsed it (started first for that reason). */
int engine_first_messages(engine *e, ingest_set *docs, const char *question)
{
    engine_check_inputs(e);   /* the description reads the files: cut any that shrank first */
    char *description = engine_input_describe(docs, e->sb ? sandbox_input_summary(e->sb, 0) : NULL);
    if (!description)
        return -1;
    int rc = engine_open_messages(e, description, question);
    free(description);
    return rc;
}

char *engine_described_with_named(const engine_preloaded *pre, const char *own)
{
    buf b;
    buf_init(&b, SIZE_MAX / 2);   /* two descriptions, each bounded (describe.h) */
    buf_printf(&b, "%s\nThe variable `context_1` holds another input:\n%s", pre->description, own);
    return b.data ? buf_take(&b) : NULL;
}

/* A run on a pool's named input (engine_params.preloaded): its sandbox is
 * forked from the zygote that holds the input already, the run's own input
 * (if any) is added as context_1, and the root is told about both, the
 * named one from the description made when it was loaded. 0, or -1 with
 * the outcome set. */
int engine_start_preloaded(engine *e, ingest_set *docs, const char *question)
{
    const engine_preloaded *pre = e->p->preloaded;
    /* Alone, the named input is described already: the fork from its
     * zygote (a few milliseconds) runs while the root model thinks. */
    if (!docs && e->level == 1) {
        if (start_early(e, NULL, pre->factory) != 0)
            return -1;
        if (engine_open_messages(e, pre->description, question) != 0) {
            engine_fail(e, RLM_ERR_NOMEM, "out of memory");
            return -1;
        }
        return 0;
    }
    if (engine_start_sandbox(e, NULL, pre->factory) != 0)
        return -1;
    char *own = NULL;
    if (docs) {
        sandbox_input si;
        char err[1024];
        engine_check_inputs(e);
        int rc = engine_input_open(docs, &si, err, sizeof err);
        if (rc == 0) {
            rc = sandbox_add_input(e->sb, "context_1", &si, err, sizeof err);
            engine_input_close(&si, docs);
        }
        if (rc != 0) {
            engine_fail(e, RLM_ERR_INPUT, rc == -2 ? "input: %s" : "cannot load an input: %s", err);
            return -1;
        }
        engine_input_problems(e, sandbox_input_summary(e->sb, 1));
        char *d = engine_input_describe(docs, sandbox_input_summary(e->sb, 1));
        own = d ? engine_described_with_named(pre, d) : NULL;
        free(d);
        if (!own) {
            engine_fail(e, RLM_ERR_NOMEM, "out of memory");
            return -1;
        }
    }
    int rc = engine_open_messages(e, own ? own : pre->description, question);
    free(own);
    if (rc != 0)
        engine_fail(e, RLM_ERR_NOMEM, "out of memory");
    return rc;
}
