/* calls — the one path every model call takes: budget admission, replay and
 * cache lookups by request hash, the dispatcher for what is left, then the
 * record file, the cache, the price and the budget's accounting. */
#include "calls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prompt.h"
#include "util.h"

/* Largest line of a replay file: one request and its reply. */
#define REPLAY_MAX_LINE ((size_t)1 << 30)
/* How much of an unknown request's last message a replay error shows. */
#define REPLAY_EXCERPT_CHARS 120

typedef struct replay_entry {
    char key[CACHE_KEY_LEN];
    size_t line;          /* 1-based line in the file: keeps file order among equal keys */
    json_t *response;
    int used;
} replay_entry;

typedef struct model_usage {
    char *model;
    long calls, cached_calls, errors, prompt_tokens, completion_tokens;
    double cost;
    long unknown_cost;
} model_usage;

struct calls {
    calls_options o;
    budget budget;
    FILE *record;
    replay_entry *replay;
    size_t n_replay;
    int replaying;
    model_usage *usage;
    size_t n_usage;
    char budget_msg[256];
    char errmsg[1024];
};

/* ---- request identity ---------------------------------------------------- */

/* The canonical request (see calls.h). NULL when out of memory. */
static json_t *calls_canonical(const calls *c, const lm_request *req, int sub)
{
    const char *base = sub && c->o.sub_base_url ? c->o.sub_base_url : c->o.root_base_url;
    json_t *msgs = json_array();
    for (size_t i = 0; msgs && i < req->n_messages; i++)
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", req->messages[i].role, "content",
                                              req->messages[i].content ? req->messages[i].content : ""));
    json_t *canon = json_pack("{s:i,s:s,s:s,s:s,s:o*}", "v", 1, "provider",
                              c->o.provider && c->o.provider[0] ? c->o.provider : "openai", "base_url",
                              base ? base : "", "model", req->model ? req->model : "", "messages", msgs);
    if (canon && c->o.key_options)
        json_object_set_new(canon, "options", json_deep_copy(c->o.key_options));
    if (canon && req->max_tokens > 0)
        json_object_set_new(canon, "max_tokens", json_integer(req->max_tokens));
    return canon;
}

/* The key of a canonical request. 0, or -1 when out of memory. */
static int calls_key(const json_t *canon, char key[CACHE_KEY_LEN])
{
    char *text = json_dumps(canon, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    if (!text)
        return -1;
    int rc = cache_hash(text, strlen(text), key);
    free(text);
    return rc;
}

int calls_request_key(const calls *c, const lm_request *req, int sub, char key[CACHE_KEY_LEN])
{
    json_t *canon = calls_canonical(c, req, sub);
    int rc = canon ? calls_key(canon, key) : -1;
    json_decref(canon);
    return rc;
}

/* ---- replies as JSON (record and replay files) --------------------------- */

static json_t *reply_to_json(const lm_response *r)
{
    return json_pack("{s:s?,s:s?,s:I,s:s?,s:s?,s:s?,s:I,s:I,s:I,s:i}",
                     "error", r->error ? lm_error_name(r->error) : NULL,
                     "error_message", r->error_message, "http_status", (json_int_t)r->http_status,
                     "content", r->content, "reasoning", r->reasoning, "finish_reason", r->finish_reason,
                     "prompt_tokens", (json_int_t)r->prompt_tokens,
                     "completion_tokens", (json_int_t)r->completion_tokens,
                     "cached_tokens", (json_int_t)r->cached_tokens, "attempts", r->attempts);
}

static lm_error error_from_name(const char *name)
{
    if (!name)
        return LM_OK;
    /* lm_error values are small and contiguous; their names are the wire form. */
    for (int e = 1; e < 64; e++)
        if (strcmp(lm_error_name((lm_error)e), name) == 0)
            return (lm_error)e;
    return LM_ERR_HTTP;
}

static char *json_dup_string(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? strdup(s) : NULL;
}

static long json_long(json_t *obj, const char *key, long fallback)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (long)json_integer_value(v) : fallback;
}

static void reply_from_json(json_t *j, lm_response *r)
{
    memset(r, 0, sizeof *r);
    r->error = error_from_name(json_string_value(json_object_get(j, "error")));
    r->error_message = json_dup_string(j, "error_message");
    r->http_status = json_long(j, "http_status", 0);
    r->content = json_dup_string(j, "content");
    r->reasoning = json_dup_string(j, "reasoning");
    r->finish_reason = json_dup_string(j, "finish_reason");
    r->prompt_tokens = json_long(j, "prompt_tokens", -1);
    r->completion_tokens = json_long(j, "completion_tokens", -1);
    r->cached_tokens = json_long(j, "cached_tokens", -1);
    r->cache_write_tokens = -1;
    r->attempts = (int)json_long(j, "attempts", 1);
    if (r->error == LM_OK && !r->content)
        r->content = strdup("");
}

/* ---- the replay file ----------------------------------------------------- */

static int replay_compare(const void *a, const void *b)
{
    const replay_entry *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    if (c)
        return c;
    return x->line < y->line ? -1 : x->line > y->line;
}

/* Reads one line into b (without the newline). 1 for a line, 0 at EOF, -1
 * when the line is longer than the buffer's maximum. */
static int read_line(FILE *f, buf *b)
{
    char chunk[65536];
    buf_reset(b);
    int any = 0;
    while (fgets(chunk, sizeof chunk, f)) {
        any = 1;
        size_t n = strlen(chunk);
        int end = n > 0 && chunk[n - 1] == '\n';
        if (buf_append(b, chunk, end ? n - 1 : n) != 0)
            return -1;
        if (end)
            return 1;
    }
    return any;
}

static int replay_add(calls *c, size_t line, const char *key, json_t *response, size_t *cap)
{
    if (c->n_replay == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        replay_entry *grown = realloc(c->replay, ncap * sizeof *grown);
        if (!grown)
            return -1;
        c->replay = grown;
        *cap = ncap;
    }
    replay_entry *e = &c->replay[c->n_replay++];
    snprintf(e->key, sizeof e->key, "%s", key);
    e->line = line;
    e->response = json_incref(response);
    e->used = 0;
    return 0;
}

static int replay_load(calls *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open replay file '%s': %s", path, strerror(errno));
        return -1;
    }
    buf line;
    buf_init(&line, REPLAY_MAX_LINE);
    size_t cap = 0, lineno = 0;
    int rc = -1, got;
    while ((got = read_line(f, &line)) == 1) {
        lineno++;
        if (line.len == 0)
            continue;
        json_error_t jerr;
        json_t *j = json_loadb(line.data, line.len, 0, &jerr);
        const char *key = json_string_value(json_object_get(j, "key"));
        json_t *resp = json_object_get(j, "response");
        if (!key || strlen(key) != CACHE_KEY_LEN - 1 || !json_is_object(resp)) {
            snprintf(err, errlen, "replay file '%s' line %zu: not a record line (%s)", path, lineno,
                     j ? "needs \"key\" and \"response\"" : jerr.text);
            json_decref(j);
            goto done;
        }
        int added = replay_add(c, lineno, key, resp, &cap);
        json_decref(j);
        if (added != 0) {
            snprintf(err, errlen, "out of memory");
            goto done;
        }
    }
    if (got < 0 || ferror(f)) {
        snprintf(err, errlen, "replay file '%s': line %zu is unreadable or too long", path, lineno + 1);
        goto done;
    }
    qsort(c->replay, c->n_replay, sizeof *c->replay, replay_compare);
    rc = 0;
done:
    buf_free(&line);
    fclose(f);
    return rc;
}

/* The recorded response for key: the first one not yet used, in file order
 * (a run may send the same request twice and get different replies), else the
 * last one again. NULL when the file has none. */
static json_t *replay_find(calls *c, const char *key)
{
    size_t lo = 0, hi = c->n_replay;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(c->replay[mid].key, key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    replay_entry *last = NULL;
    for (size_t i = lo; i < c->n_replay && strcmp(c->replay[i].key, key) == 0; i++) {
        last = &c->replay[i];
        if (!last->used) {
            last->used = 1;
            return last->response;
        }
    }
    return last ? last->response : NULL;
}

/* ---- accounting ---------------------------------------------------------- */

static model_usage *usage_for(calls *c, const char *model)
{
    for (size_t i = 0; i < c->n_usage; i++)
        if (strcmp(c->usage[i].model, model) == 0)
            return &c->usage[i];
    model_usage *grown = realloc(c->usage, (c->n_usage + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    c->usage = grown;
    model_usage *u = &c->usage[c->n_usage];
    memset(u, 0, sizeof *u);
    u->model = strdup(model);
    if (!u->model)
        return NULL;
    c->n_usage++;
    return u;
}

/* The price of one finished call: 0 for a cache hit (nothing was billed) and
 * for a failure that reported no usage (providers do not bill those); unknown
 * (-1) for an unknown model or a success without usage. */
static double call_cost(const calls *c, const char *model, const calls_reply *cr)
{
    if (cr->cached)
        return 0;
    const lm_response *r = &cr->r;
    if (r->error != LM_OK && r->prompt_tokens < 0 && r->completion_tokens < 0)
        return 0;
    price pr;
    if (!pricing_lookup(c->o.prices, model, &pr))
        return -1;
    return pricing_cost(&pr, r->prompt_tokens, r->cached_tokens, r->completion_tokens);
}

static void calls_account(calls *c, const char *model, calls_reply *cr)
{
    cr->cost_usd = call_cost(c, model, cr);
    const lm_response *r = &cr->r;
    long tokens = -1;
    if (!cr->cached && (r->prompt_tokens >= 0 || r->completion_tokens >= 0))
        tokens = (r->prompt_tokens > 0 ? r->prompt_tokens : 0) +
                 (r->completion_tokens > 0 ? r->completion_tokens : 0);
    budget_charge(&c->budget, tokens, cr->cost_usd);
    model_usage *u = usage_for(c, model);
    if (!u)
        return;
    u->calls++;
    if (cr->cached) {
        u->cached_calls++;
        return;
    }
    if (r->error != LM_OK)
        u->errors++;
    if (r->prompt_tokens > 0)
        u->prompt_tokens += r->prompt_tokens;
    if (r->completion_tokens > 0)
        u->completion_tokens += r->completion_tokens;
    if (cr->cost_usd >= 0)
        u->cost += cr->cost_usd;
    else
        u->unknown_cost++;
}

/* ---- cache and record ---------------------------------------------------- */

static void calls_drop_cache(calls *c, const char *why)
{
    char msg[1200];
    snprintf(msg, sizeof msg, "response cache disabled for the rest of the run: %s", why);
    if (c->o.warn)
        c->o.warn(c->o.warn_data, msg);
    c->o.cache = NULL;
}

static int cache_lookup(calls *c, const char *key, calls_reply *out)
{
    if (!c->o.cache)
        return 0;
    cache_entry e;
    char err[512];
    int hit = cache_get(c->o.cache, key, &e, err, sizeof err);
    if (hit < 0)
        calls_drop_cache(c, err);
    if (hit != 1)
        return 0;
    memset(out, 0, sizeof *out);
    out->r.content = e.content;
    out->r.reasoning = e.reasoning;
    out->r.finish_reason = e.finish_reason;
    out->r.prompt_tokens = e.prompt_tokens;
    out->r.completion_tokens = e.completion_tokens;
    out->r.http_status = 200;
    out->r.cached_tokens = -1;
    out->r.cache_write_tokens = -1;
    out->cached = 1;
    return 1;
}

/* Errors and replies cut off at the token limit are not stored: the next run
 * should try again rather than inherit a failure. */
static void cache_store(calls *c, const char *key, const lm_response *r)
{
    if (!c->o.cache || r->error != LM_OK || !r->content || !r->content[0] ||
        (r->finish_reason && strcmp(r->finish_reason, "length") == 0))
        return;
    cache_entry e = {.content = r->content, .reasoning = r->reasoning, .finish_reason = r->finish_reason,
                     .prompt_tokens = r->prompt_tokens, .completion_tokens = r->completion_tokens};
    char err[512];
    if (cache_put(c->o.cache, key, &e, err, sizeof err) != 0)
        calls_drop_cache(c, err);
}

static void record_write(calls *c, const char *key, json_t *canon, const lm_response *r)
{
    if (!c->record)
        return;
    json_t *line = json_pack("{s:s,s:O,s:o}", "key", key, "request", canon, "response", reply_to_json(r));
    if (line && json_dumpf(line, c->record, JSON_COMPACT) == 0 && fputc('\n', c->record) != EOF &&
        fflush(c->record) == 0) {
        json_decref(line);
        return;
    }
    json_decref(line);
    if (c->o.warn)
        c->o.warn(c->o.warn_data, "cannot write the record file: recording stopped");
    fclose(c->record);
    c->record = NULL;
}

/* ---- the call path ------------------------------------------------------- */

static long estimate_tokens(const lm_request *req)
{
    size_t bytes = 0;
    for (size_t i = 0; i < req->n_messages; i++)
        bytes += req->messages[i].content ? strlen(req->messages[i].content) : 0;
    return (long)prompt_estimate_tokens(bytes);
}

static double estimate_cost(const calls *c, const char *model, long tokens)
{
    price pr;
    if (!pricing_lookup(c->o.prices, model, &pr))
        return 0;
    return (double)tokens * pr.input / 1e6;
}

/* A budget that cannot be counted must not pretend to hold. */
static int cost_unenforceable(calls *c, const char *model)
{
    price pr;
    if (c->o.limits.max_cost < 0 || pricing_lookup(c->o.prices, model, &pr))
        return 0;
    snprintf(c->errmsg, sizeof c->errmsg,
             "the price of model '%s' is unknown, so max_cost cannot be enforced "
             "(add it to a prices file: docs/budgets.md)", model);
    return 1;
}

static int calls_refused_by_budget(calls *c)
{
    budget_describe(&c->budget, c->budget.exhausted, clock_now(), c->budget_msg, sizeof c->budget_msg);
    return CALLS_BUDGET;
}

/* Answers reqs[i] for every i with todo[i] set: from the replay file, else
 * the cache, else the dispatcher; then records, stores and accounts. */
static int calls_run(calls *c, lm *m, const lm_request *reqs, size_t n, int sub, calls_reply *out)
{
    int rc = CALLS_FATAL;
    json_t **canon = calloc(n, sizeof *canon);
    char (*keys)[CACHE_KEY_LEN] = calloc(n, sizeof *keys);
    lm_request *pending = calloc(n, sizeof *pending);
    size_t *pending_index = calloc(n, sizeof *pending_index);
    lm_response *pending_out = calloc(n, sizeof *pending_out);
    size_t n_pending = 0;
    if (!canon || !keys || !pending || !pending_index || !pending_out) {
        snprintf(c->errmsg, sizeof c->errmsg, "out of memory");
        goto done;
    }
    memset(out, 0, n * sizeof *out);
    /* A key costs a JSON encoding and a hash of every prompt: on a batch that
     * holds the whole input that is a second of CPU before the first request
     * goes out. Without replay, cache or record nothing reads it. The cache
     * can only be dropped during this call, never added. */
    int need_key = c->replaying || c->o.cache || c->record;
    for (size_t i = 0; i < n; i++) {
        if (!need_key) {
            pending[n_pending] = reqs[i];
            pending_index[n_pending++] = i;
            continue;
        }
        canon[i] = calls_canonical(c, &reqs[i], sub);
        if (!canon[i] || calls_key(canon[i], keys[i]) != 0) {
            snprintf(c->errmsg, sizeof c->errmsg, "out of memory");
            goto done;
        }
        /* The canonical request holds a copy of every prompt: on a batch of
         * thousands of long prompts that is a whole extra copy of the input
         * for as long as the batch runs. Only the record file needs it. */
        if (!c->record) {
            json_decref(canon[i]);
            canon[i] = NULL;
        }
        if (c->replaying) {
            json_t *resp = replay_find(c, keys[i]);
            if (!resp) {
                const lm_message *last = &reqs[i].messages[reqs[i].n_messages - 1];
                char *excerpt = prompt_bound(last->content ? last->content : "",
                                             last->content ? strlen(last->content) : 0, REPLAY_EXCERPT_CHARS);
                snprintf(c->errmsg, sizeof c->errmsg,
                         "request not in the replay file: %s call to model '%s', key %.16s…, last message: %s",
                         sub ? "sub" : "root", reqs[i].model, keys[i], excerpt ? excerpt : "");
                free(excerpt);
                /* One line on a terminal. */
                for (char *ch = c->errmsg; *ch; ch++)
                    if ((unsigned char)*ch < 0x20)
                        *ch = ' ';
                goto done;
            }
            reply_from_json(resp, &out[i].r);
        } else if (!cache_lookup(c, keys[i], &out[i])) {
            pending[n_pending] = reqs[i];
            pending_index[n_pending++] = i;
        }
    }
    if (n_pending > 0) {
        if (!m) {
            snprintf(c->errmsg, sizeof c->errmsg, "no model endpoint to send the request to");
            goto done;
        }
        lm_call_many(m, pending, n_pending, pending_out);
        for (size_t k = 0; k < n_pending; k++) {
            out[pending_index[k]].r = pending_out[k];
            cache_store(c, keys[pending_index[k]], &pending_out[k]);
        }
    }
    for (size_t i = 0; i < n; i++) {
        record_write(c, keys[i], canon[i], &out[i].r);
        calls_account(c, reqs[i].model ? reqs[i].model : "", &out[i]);
    }
    rc = CALLS_OK;
done:
    if (rc != CALLS_OK && out)
        for (size_t i = 0; i < n; i++)
            calls_reply_clear(&out[i]);
    for (size_t i = 0; canon && i < n; i++)
        json_decref(canon[i]);
    free(canon);
    free(keys);
    free(pending);
    free(pending_index);
    free(pending_out);
    return rc;
}

int calls_root(calls *c, const lm_request *req, int final, calls_reply *out)
{
    c->errmsg[0] = '\0';
    memset(out, 0, sizeof *out);
    budget_kind k;
    if (final) {
        k = budget_admit_final(&c->budget, clock_now());
    } else {
        long est = estimate_tokens(req);
        k = budget_admit(&c->budget, 0, est, estimate_cost(c, req->model, est), clock_now());
    }
    if (k != BUDGET_NONE)
        return calls_refused_by_budget(c);
    return calls_run(c, c->o.root_lm, req, 1, 0, out);
}

int calls_sub(calls *c, const lm_request *reqs, size_t n, calls_reply *out)
{
    c->errmsg[0] = '\0';
    if (n == 0)
        return CALLS_OK;
    if (cost_unenforceable(c, reqs[0].model))
        return CALLS_REFUSED;
    long est = 0;
    for (size_t i = 0; i < n; i++)
        est += estimate_tokens(&reqs[i]);
    budget_kind k = budget_admit(&c->budget, n, est, estimate_cost(c, reqs[0].model, est), clock_now());
    if (k != BUDGET_NONE)
        return calls_refused_by_budget(c);
    return calls_run(c, c->o.sub_lm ? c->o.sub_lm : c->o.root_lm, reqs, n, 1, out);
}

/* ---- handle -------------------------------------------------------------- */

int calls_new(const calls_options *opts, calls **out, char *err, size_t errlen)
{
    *out = NULL;
    calls *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->o = *opts;
    /* The paths are only used here; keep no borrowed pointers to them. */
    c->o.record_path = c->o.replay_path = NULL;
    budget_init(&c->budget, &opts->limits, clock_now());
    if (opts->replay_path && opts->replay_path[0]) {
        if (replay_load(c, opts->replay_path, err, errlen) != 0)
            goto fail;
        c->replaying = 1;
    }
    if (opts->record_path && opts->record_path[0]) {
        c->record = fopen(opts->record_path, "w");
        if (!c->record) {
            snprintf(err, errlen, "cannot create record file '%s': %s", opts->record_path, strerror(errno));
            goto fail;
        }
    }
    *out = c;
    return 0;
fail:
    calls_free(c);
    return -1;
}

void calls_begin_run(calls *c)
{
    budget_init(&c->budget, &c->o.limits, clock_now());
    for (size_t i = 0; i < c->n_usage; i++)
        free(c->usage[i].model);
    free(c->usage);
    c->usage = NULL;
    c->n_usage = 0;
    c->budget_msg[0] = '\0';
    c->errmsg[0] = '\0';
}

budget_kind calls_exhausted(const calls *c)
{
    return c->budget.exhausted;
}

const char *calls_budget_message(calls *c)
{
    if (!c->budget_msg[0])
        budget_describe(&c->budget, c->budget.exhausted, clock_now(), c->budget_msg, sizeof c->budget_msg);
    return c->budget_msg;
}

double calls_budget_limit(const calls *c)
{
    const budget_limits *l = &c->budget.limits;
    switch (c->budget.exhausted) {
    case BUDGET_COST: return l->max_cost;
    case BUDGET_TOKENS: return (double)l->max_tokens;
    case BUDGET_TIME: return l->max_time;
    case BUDGET_SUBCALLS: return (double)l->max_subcalls;
    case BUDGET_NONE: break;
    }
    return -1;
}

const char *calls_errmsg(const calls *c)
{
    return c->errmsg;
}

json_t *calls_usage_json(const calls *c)
{
    json_t *j = json_object();
    for (size_t i = 0; j && i < c->n_usage; i++) {
        const model_usage *u = &c->usage[i];
        json_object_set_new(j, u->model,
                            json_pack("{s:I,s:I,s:I,s:I,s:I,s:o}", "calls", (json_int_t)u->calls,
                                      "cached_calls", (json_int_t)u->cached_calls, "errors",
                                      (json_int_t)u->errors, "prompt_tokens", (json_int_t)u->prompt_tokens,
                                      "completion_tokens", (json_int_t)u->completion_tokens, "cost_usd",
                                      u->unknown_cost ? json_null() : json_real(u->cost)));
    }
    return j;
}

double calls_cost(const calls *c)
{
    return c->budget.unknown_cost_calls ? -1 : c->budget.cost;
}

void calls_reply_clear(calls_reply *r)
{
    lm_response_clear(&r->r);
    memset(r, 0, sizeof *r);
}

void calls_free(calls *c)
{
    if (!c)
        return;
    if (c->record)
        fclose(c->record);
    for (size_t i = 0; i < c->n_replay; i++)
        json_decref(c->replay[i].response);
    free(c->replay);
    for (size_t i = 0; i < c->n_usage; i++)
        free(c->usage[i].model);
    free(c->usage);
    free(c);
}
