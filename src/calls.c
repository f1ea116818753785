/* calls — the one path every model call takes: budget admission, identical
 * sub-calls shared, replay and cache lookups by request hash, the dispatcher
 * for what is left, then the record file, the cache, the price (prompt-cache
 * reads and writes at their own prices) and the budget's accounting; for one
 * RLM or a whole tree of them on several threads. */
#include "calls.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dedupe.h"
#include "frame.h"
#include "tokens.h"
#include "utf8.h"
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
    long cached_tokens, cache_write_tokens;   /* of prompt_tokens: read from / written to
                                                 the provider's prompt cache */
    long deduplicated;                        /* sub-calls answered by an identical one */
    double cost, cost_no_cache;
    long unknown_cost;
} model_usage;

/* What every handle of a tree shares. The lock serialises admission,
 * accounting, the cache, the record file and the replay positions; it is
 * never held while the dispatcher waits for replies. */
typedef struct calls_core {
    calls_options o;          /* o.cache is NULL once the cache failed */
    pthread_mutex_t lock;
    FILE *record;             /* NULL once a write failed */
    replay_entry *replay;     /* read-only after calls_new but for .used */
    size_t n_replay;
    int replaying;
    model_usage *usage;       /* the whole tree's, per model */
    size_t n_usage;
    dedupe *answers;          /* sub-call replies by key; NULL: no deduplication */
    pthread_cond_t settled;   /* broadcast when a claimed key of answers is settled */
} calls_core;

/* One RLM's handle: the top one owns the core; a child borrows it. Fields
 * other than errmsg and budget_msg are read and written under core->lock
 * (budget.limits is written only when a handle is made or a run begins). */
struct calls {
    calls_core *core;
    calls *parent;            /* NULL for the top handle */
    budget budget;            /* this RLM's limits, what it and its descendants spent */
    size_t n_children;        /* live children: calls_free order */
    const calls *msg_level;   /* the budget budget_msg describes */
    long root_cached_prefix;  /* prompt tokens of this RLM's last root request, when the
                                 provider caches prefixes (calls_root): the next
                                 request's prefix, priced as cached by the admission
                                 estimate; 0 otherwise */
    char budget_msg[256];
    char errmsg[1024];
};

/* ---- request identity ---------------------------------------------------- */

/* The canonical request (see calls.h). NULL when out of memory. */
static json_t *calls_canonical(const calls *c, const lm_request *req, int sub)
{
    const calls_options *o = &c->core->o;
    const char *base = sub && o->sub_base_url ? o->sub_base_url : o->root_base_url;
    const char *provider = sub && o->sub_provider ? o->sub_provider : o->provider;
    json_t *msgs = json_array();
    for (size_t i = 0; msgs && i < req->n_messages; i++) {
        const lm_message *m = &req->messages[i];
        json_array_append_new(msgs, json_pack("{s:s,s:o}", "role", m->role, "content",
                                              frame_string(m->content ? m->content : "",
                                                           lm_message_len(m))));
    }
    json_t *canon = json_pack("{s:i,s:s,s:s,s:s,s:o*}", "v", 1, "provider",
                              provider && provider[0] ? provider : "openai", "base_url",
                              base ? base : "", "model", req->model ? req->model : "", "messages", msgs);
    if (canon && o->key_options)
        json_object_set_new(canon, "options", json_deep_copy(o->key_options));
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

/* The identity of a sub-call for deduplication: what calls_canonical holds
 * (provider, base URL, model, options, max_tokens, each message's role and
 * content), hashed as length-prefixed parts without being encoded as JSON
 * first — on a batch of thousands of long prompts the encoding would cost
 * more than the hash. Not the cache's key (different bytes go in). 0, or -1
 * out of memory. */
static int calls_identity_key(const calls *c, const lm_request *req, const char *options, char key[CACHE_KEY_LEN])
{
    const calls_options *o = &c->core->o;
    const char *base = o->sub_base_url ? o->sub_base_url : o->root_base_url;
    const char *provider = o->sub_provider ? o->sub_provider : o->provider;
    char max_tokens[32];
    snprintf(max_tokens, sizeof max_tokens, "%ld", req->max_tokens > 0 ? req->max_tokens : 0);
    size_t n = 5 + 2 * req->n_messages;
    const void **parts = calloc(n, sizeof *parts);
    size_t *lens = calloc(n, sizeof *lens);
    int rc = -1;
    if (parts && lens) {
        const char *head[5] = {provider && provider[0] ? provider : "openai", base ? base : "",
                               req->model ? req->model : "", options ? options : "", max_tokens};
        for (size_t i = 0; i < 5; i++) {
            parts[i] = head[i];
            lens[i] = strlen(head[i]);
        }
        for (size_t i = 0; i < req->n_messages; i++) {
            const lm_message *m = &req->messages[i];
            parts[5 + 2 * i] = m->role ? m->role : "";
            lens[5 + 2 * i] = m->role ? strlen(m->role) : 0;
            parts[6 + 2 * i] = m->content ? m->content : "";
            lens[6 + 2 * i] = m->content ? lm_message_len(m) : 0;
        }
        rc = cache_hash_parts(parts, lens, n, key);
    }
    free(parts);
    free(lens);
    return rc;
}

/* ---- replies as JSON (record and replay files) --------------------------- */

static json_t *reply_to_json(const lm_response *r)
{
    json_t *content = r->content ? frame_string(r->content, lm_content_len(r)) : json_null();
    json_t *j = json_pack("{s:s?,s:s?,s:I,s:o,s:s?,s:s?,s:I,s:I,s:I,s:i}",
                     "error", r->error ? lm_error_name(r->error) : NULL,
                     "error_message", r->error_message, "http_status", (json_int_t)r->http_status,
                     "content", content ? content : json_null(), "reasoning", r->reasoning,
                     "finish_reason", r->finish_reason,
                     "prompt_tokens", (json_int_t)r->prompt_tokens,
                     "completion_tokens", (json_int_t)r->completion_tokens,
                     "cached_tokens", (json_int_t)r->cached_tokens, "attempts", r->attempts);
    if (j && r->cache_write_tokens >= 0)
        json_object_set_new(j, "cache_write_tokens", json_integer(r->cache_write_tokens));
    return j;
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
    json_t *content = json_object_get(j, "content");
    if (json_is_string(content)) {
        r->content_len = json_string_length(content);
        r->content = str_dup_len(json_string_value(content), r->content_len);
    }
    r->reasoning = json_dup_string(j, "reasoning");
    r->finish_reason = json_dup_string(j, "finish_reason");
    r->prompt_tokens = json_long(j, "prompt_tokens", -1);
    r->completion_tokens = json_long(j, "completion_tokens", -1);
    r->cached_tokens = json_long(j, "cached_tokens", -1);
    r->cache_write_tokens = json_long(j, "cache_write_tokens", -1);
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

static int replay_add(calls_core *c, size_t line, const char *key, json_t *response, size_t *cap)
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

static int replay_load(calls_core *c, const char *path, char *err, size_t errlen)
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
        json_t *j = json_loadb(line.data, line.len, JSON_ALLOW_NUL, &jerr);
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
static json_t *replay_find(calls_core *c, const char *key)
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

static model_usage *usage_for(calls_core *c, const char *model)
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

/* The price of one finished call, and what it would have cost without the
 * provider's prompt cache (every prompt token at the input price): 0 for a
 * response-cache hit or a deduplicated sub-call (nothing was billed) and for
 * a failure that reported no usage (providers do not bill those); unknown
 * (-1) for an unknown model or a success without usage. */
static double call_cost(const calls_core *core, const char *model, const calls_reply *cr, double *no_cache)
{
    *no_cache = 0;
    if (cr->cached || cr->deduplicated)
        return 0;
    const lm_response *r = &cr->r;
    if (r->error != LM_OK && r->prompt_tokens < 0 && r->completion_tokens < 0)
        return 0;
    price pr;
    if (!pricing_lookup(core->o.prices, model, &pr)) {
        *no_cache = -1;
        return -1;
    }
    *no_cache = pricing_cost(&pr, r->prompt_tokens, 0, 0, r->completion_tokens);
    return pricing_cost(&pr, r->prompt_tokens, r->cached_tokens, r->cache_write_tokens, r->completion_tokens);
}

/* Under the lock: charges one finished call made on c to c, to every
 * ancestor, and to the tree's usage table. */
static void calls_account(calls *c, const char *model, calls_reply *cr)
{
    cr->cost_usd = call_cost(c->core, model, cr, &cr->cost_no_cache_usd);
    const lm_response *r = &cr->r;
    long tokens = -1;
    int billed = !cr->cached && !cr->deduplicated;
    if (billed && (r->prompt_tokens >= 0 || r->completion_tokens >= 0))
        tokens = (r->prompt_tokens > 0 ? r->prompt_tokens : 0) +
                 (r->completion_tokens > 0 ? r->completion_tokens : 0);
    for (calls *level = c; level; level = level->parent) {
        budget_charge(&level->budget, tokens, cr->cost_usd);
        if (billed)
            budget_charge_cache(&level->budget, r->cached_tokens, r->cache_write_tokens,
                                cr->cost_no_cache_usd);
    }
    model_usage *u = usage_for(c->core, model);
    if (!u)
        return;
    u->calls++;
    if (cr->cached) {
        u->cached_calls++;
        return;
    }
    if (cr->deduplicated) {
        u->deduplicated++;
        return;
    }
    if (r->error != LM_OK)
        u->errors++;
    if (r->prompt_tokens > 0)
        u->prompt_tokens += r->prompt_tokens;
    if (r->completion_tokens > 0)
        u->completion_tokens += r->completion_tokens;
    if (r->cached_tokens > 0)
        u->cached_tokens += r->cached_tokens;
    if (r->cache_write_tokens > 0)
        u->cache_write_tokens += r->cache_write_tokens;
    if (cr->cost_usd >= 0) {
        u->cost += cr->cost_usd;
        u->cost_no_cache += cr->cost_no_cache_usd;
    } else {
        u->unknown_cost++;
    }
}

/* ---- cache and record (under the lock) ----------------------------------- */

static void calls_drop_cache(calls_core *core, const char *why)
{
    char msg[1200];
    snprintf(msg, sizeof msg, "response cache disabled for the rest of the run: %s", why);
    if (core->o.warn)
        core->o.warn(core->o.warn_data, msg);
    core->o.cache = NULL;
}

static int cache_lookup(calls_core *core, const char *key, calls_reply *out)
{
    if (!core->o.cache)
        return 0;
    cache_entry e;
    char err[512];
    int hit = cache_get(core->o.cache, key, &e, err, sizeof err);
    if (hit < 0)
        calls_drop_cache(core, err);
    if (hit != 1)
        return 0;
    memset(out, 0, sizeof *out);
    out->r.content = e.content;
    out->r.content_len = e.content_len;
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
static void cache_store(calls_core *core, const char *key, const lm_response *r)
{
    if (!core->o.cache || r->error != LM_OK || lm_content_len(r) == 0 ||
        (r->finish_reason && strcmp(r->finish_reason, "length") == 0))
        return;
    cache_entry e = {.content = r->content, .content_len = lm_content_len(r),
                     .reasoning = r->reasoning, .finish_reason = r->finish_reason,
                     .prompt_tokens = r->prompt_tokens, .completion_tokens = r->completion_tokens};
    char err[512];
    if (cache_put(core->o.cache, key, &e, err, sizeof err) != 0)
        calls_drop_cache(core, err);
}

/* One line of the record file, encoded WITHOUT the lock: the request may
 * hold megabytes of prompts. NULL when out of memory. */
static char *record_line(const char *key, json_t *canon, const lm_response *r)
{
    json_t *line = json_pack("{s:s,s:O,s:o}", "key", key, "request", canon, "response", reply_to_json(r));
    char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
    json_decref(line);
    return text;
}

/* Appends one whole line (or, for NULL, gives up): lines from several
 * threads never interleave because every write holds the lock. */
static void record_write(calls_core *core, const char *line)
{
    if (!core->record)
        return;
    if (line && fputs(line, core->record) != EOF && fputc('\n', core->record) != EOF &&
        fflush(core->record) == 0)
        return;
    if (core->o.warn)
        core->o.warn(core->o.warn_data, "cannot write the record file: recording stopped");
    fclose(core->record);
    core->record = NULL;
}

/* ---- admission in a tree of budgets --------------------------------------- */

/* Design note. Each RLM of a run has a handle, and each handle a budget: the
 * top one holds the run's limits; a child's holds its share of what its
 * parent had left when it was made (calls_child). Every call is charged to
 * its handle's budget and to every ancestor's, so a budget always counts its
 * whole subtree and the top one the whole run.
 *
 * A call is admitted only if every budget on its path to the top admits it.
 * All are checked first and the call is counted only when none refuses: a
 * count left in a child's budget by a batch its parent refused would spend a
 * share on calls never made. The refusal is the TOP-MOST budget that refuses:
 * when the run's own limit is reached that is the run's budget, which is then
 * exhausted and refuses every later call anywhere in the tree, even if a
 * child's share would have refused too; a share that runs out while the run
 * still has budget stops that child (and its descendants) alone. Admission and
 * accounting are two short critical sections: the lock is free while the
 * dispatcher waits, so calls of many RLMs are in flight at once, and a call
 * admitted on one thread may end a little over a limit because another
 * thread's call was admitted on the same estimate (the next admit refuses).
 *
 * A child's root request is one sub-call for every ancestor (everything below
 * the top root is the run's sub-call) but a root request for the child. */
static size_t level_subcalls(const calls *level, const calls *h, size_t n_subcalls)
{
    return level == h || n_subcalls > 0 ? n_subcalls : 1;
}

/* Under the lock: the budget that stops h — the top-most exhausted one among
 * h and its ancestors, which refuses h's next call; NULL while none is. */
static const calls *stopping_level(const calls *h)
{
    const calls *found = NULL;
    for (const calls *level = h; level; level = level->parent)
        if (level->budget.exhausted != BUDGET_NONE)
            found = level;
    return found;
}

/* How h's budget message names the limit of level. */
static const char *level_whose(const calls *h, const calls *level)
{
    if (!level->parent)
        return h->parent ? "the whole run's limit" : NULL;
    if (level == h)
        return "this child's share";
    if (level == h->parent)
        return "the parent RLM's share";
    return "an ancestor RLM's share";
}

/* Under the lock: h's budget message, describing level (NULL: none). */
static void describe_stop(calls *h, const calls *level, double now)
{
    h->msg_level = level;
    if (!level)
        budget_describe(&h->budget, BUDGET_NONE, now, h->budget_msg, sizeof h->budget_msg);
    else
        budget_describe_as(&level->budget, level->budget.exhausted, now, level_whose(h, level), h->budget_msg,
                           sizeof h->budget_msg);
}

/* Admits a call of n_subcalls sub-calls (0: a root request) made on h, or
 * refuses it (see the design note). final: the last best-answer request,
 * admitted without a check and counted everywhere. BUDGET_NONE, or the limit
 * that refused. */
static budget_kind tree_admit(calls *h, size_t n_subcalls, long est_tokens, double est_cost, int final)
{
    double now = clock_now();
    pthread_mutex_lock(&h->core->lock);
    calls *refuser = NULL;
    budget_kind kind = BUDGET_NONE;
    for (calls *level = h; level && !final; level = level->parent) {
        budget_kind k = budget_check(&level->budget, level_subcalls(level, h, n_subcalls), est_tokens,
                                     est_cost, now);
        if (k != BUDGET_NONE) {
            refuser = level;
            kind = k;
        }
    }
    if (refuser) {
        budget_exhaust(&refuser->budget, kind);
        /* Say what was refused, not only what was spent: a big batch is
         * refused while most of the limit is left. */
        h->msg_level = refuser;
        budget_describe_refusal(&refuser->budget, kind, final ? 0 : level_subcalls(refuser, h, n_subcalls),
                                est_tokens, est_cost, now, level_whose(h, refuser), h->budget_msg,
                                sizeof h->budget_msg);
    } else {
        for (calls *level = h; level; level = level->parent)
            budget_count(&level->budget, level_subcalls(level, h, n_subcalls));
    }
    pthread_mutex_unlock(&h->core->lock);
    return kind;
}

/* ---- the call path ------------------------------------------------------- */

static long estimate_tokens(const lm_request *req)
{
    size_t bytes = 0;
    /* A fed request not yet arrived has its length and no content. */
    for (size_t i = 0; i < req->n_messages; i++)
        bytes += req->messages[i].content ? lm_message_len(&req->messages[i])
                                          : req->messages[i].content_len;
    return (long)tokens_estimate(bytes, TOKENS_PROSE);
}

/* The input side of a request's price, for admission. cached_prefix of the
 * tokens are a prefix the provider has cached (calls.root_cached_prefix): a
 * root history resent every turn would otherwise be estimated at the full
 * input price and stop a run long before it spent its budget. */
static double estimate_cost(const calls_core *core, const char *model, long tokens, long cached_prefix)
{
    price pr;
    if (!pricing_lookup(core->o.prices, model, &pr))
        return 0;
    long cached = cached_prefix < tokens ? cached_prefix : tokens;
    if (cached < 0)
        cached = 0;
    return ((double)(tokens - cached) * pr.input + (double)cached * pr.cached_input) / 1e6;
}

/* A budget that cannot be counted must not pretend to hold. Every budget of
 * a tree has a cost limit exactly when the run has one. */
static int cost_unenforceable(calls *c, const char *model)
{
    price pr;
    if (c->core->o.limits.max_cost < 0 || pricing_lookup(c->core->o.prices, model, &pr))
        return 0;
    snprintf(c->errmsg, sizeof c->errmsg,
             "the price of model '%s' is unknown, so max_cost cannot be enforced "
             "(add it to a prices file: docs/budgets.md)", model);
    return 1;
}

/* Names a request the replay file does not hold, on one line. */
static void replay_missing(calls *c, const lm_request *req, const char *key, int sub)
{
    const lm_message *last = &req->messages[req->n_messages - 1];
    char *excerpt = utf8_bound(last->content ? last->content : "", lm_message_len(last),
                                 REPLAY_EXCERPT_CHARS);
    snprintf(c->errmsg, sizeof c->errmsg,
             "request not in the replay file: %s call to model '%s', key %.16s…, last message: %s",
             sub ? "sub" : "root", req->model, key, excerpt ? excerpt : "");
    free(excerpt);
    for (char *ch = c->errmsg; *ch; ch++)
        if ((unsigned char)*ch < 0x20)
            *ch = ' ';
}

/* Reads a feed to its end: how many requests it gave in all. */
static size_t feed_drain(const lm_feed *feed)
{
    int last = 0;
    size_t ready = 0;
    while (!last)
        ready = feed->more(feed->ctx, -1, &last);
    return ready;
}

/* What a feed that wraps another hands on to the dispatcher: some of the
 * batch's requests, in the order they arrived, and the way back to their
 * indices for the inner feed's `done`. The first member of keyed_feed and
 * dedupe_feed, so sub_feed_done serves both. */
typedef struct sub_feed {
    const lm_request *reqs;   /* the batch */
    const lm_feed *inner;
    lm_request *out;          /* handed on: out[k] is reqs[index[k]] */
    size_t *index;
    size_t n;
} sub_feed;

/* Hands request i on; the batch's watcher rides on the first handed on. */
static void sub_feed_add(sub_feed *f, size_t i)
{
    lm_request r = f->reqs[i];
    r.watch = f->n == 0 ? f->reqs[0].watch : NULL;
    r.watch_ctx = f->n == 0 ? f->reqs[0].watch_ctx : NULL;
    f->out[f->n] = r;
    f->index[f->n++] = i;
}

/* Request i of the batch is over without going out. */
static void sub_feed_release(const sub_feed *f, size_t i)
{
    if (f->inner->done)
        f->inner->done(f->inner->ctx, i);
}

static void sub_feed_done(void *ctx, size_t k)
{
    sub_feed *f = ctx;
    sub_feed_release(f, f->index[k]);
}

/* A fed batch with a response cache or a record file (calls_run): each
 * request's key is made and the cache asked as it arrives, and those the
 * cache does not answer go to the dispatcher at once. */
typedef struct keyed_feed {
    sub_feed s;          /* those the cache did not answer */
    calls *c;
    int sub, recording;
    json_t **canon;
    char (*keys)[CACHE_KEY_LEN];
    calls_reply *out;
    size_t arrived;
    int failed;          /* out of memory for a key: the call fails once the batch is over */
} keyed_feed;

static size_t keyed_feed_more(void *ctx, int timeout_ms, int *last)
{
    keyed_feed *f = ctx;
    size_t ready = f->s.inner->more(f->s.inner->ctx, timeout_ms, last);
    for (; f->arrived < ready; f->arrived++) {
        size_t i = f->arrived;
        f->canon[i] = calls_canonical(f->c, &f->s.reqs[i], f->sub);
        int hit = 0;
        if (!f->canon[i] || calls_key(f->canon[i], f->keys[i]) != 0) {
            f->failed = 1;
        } else {
            pthread_mutex_lock(&f->c->core->lock);
            hit = cache_lookup(f->c->core, f->keys[i], &f->out[i]);
            pthread_mutex_unlock(&f->c->core->lock);
        }
        /* The canonical request holds a copy of the prompt: only the record
         * file needs it. */
        if (!f->recording) {
            json_decref(f->canon[i]);
            f->canon[i] = NULL;
        }
        if (hit)
            sub_feed_release(&f->s, i);
        else
            sub_feed_add(&f->s, i);
    }
    return f->s.n;
}

/* Answers every request: from the replay file, else the cache, else the
 * dispatcher; then records, stores and accounts. The lock is taken twice,
 * around the lookups and around the bookkeeping; keys, record lines and the
 * wait for replies happen without it. */
static int calls_run(calls *c, lm *m, const lm_request *reqs, size_t n, int sub, calls_reply *out,
                     const lm_feed *feed, size_t *n_ready)
{
    calls_core *core = c->core;
    int rc = CALLS_FATAL;
    size_t given = n;
    json_t **canon = calloc(n, sizeof *canon);
    char (*keys)[CACHE_KEY_LEN] = calloc(n, sizeof *keys);
    char **lines = calloc(n, sizeof *lines);
    lm_request *pending = calloc(n, sizeof *pending);
    size_t *pending_index = calloc(n, sizeof *pending_index);
    lm_response *pending_out = calloc(n, sizeof *pending_out);
    size_t n_pending = 0;
    if (!canon || !keys || !lines || !pending || !pending_index || !pending_out) {
        snprintf(c->errmsg, sizeof c->errmsg, "out of memory");
        goto done;
    }
    memset(out, 0, n * sizeof *out);
    pthread_mutex_lock(&core->lock);
    int recording = core->record != NULL;
    int caching = core->o.cache != NULL;
    pthread_mutex_unlock(&core->lock);
    /* A key costs a JSON encoding and a hash of every prompt: on a batch that
     * holds the whole input that is a second of CPU before the first request
     * goes out. Without replay, cache or record nothing reads it. The cache
     * and the record file can only be dropped during this call, never added. */
    int need_key = core->replaying || caching || recording;
    /* Replayed requests never go out: the batch is read whole, as when it
     * came in one piece. */
    int drained = feed && (core->replaying || !m);
    if (drained)
        n = feed_drain(feed);
    if (feed && !drained && need_key) {
        keyed_feed kf = {.s = {.reqs = reqs, .inner = feed, .out = pending, .index = pending_index},
                         .c = c, .sub = sub, .recording = recording, .canon = canon, .keys = keys,
                         .out = out};
        lm_feed wrap = {keyed_feed_more, sub_feed_done, &kf};
        pending[0].watch = reqs[0].watch;   /* read before the first request arrives */
        pending[0].watch_ctx = reqs[0].watch_ctx;
        n_pending = lm_call_fed(m, pending, n, pending_out, &wrap);
        for (size_t k = n_pending; k < given; k++)
            lm_response_clear(&pending_out[k]);
        n = kf.arrived;
        for (size_t k = 0; k < n_pending; k++)
            out[pending_index[k]].r = pending_out[k];
        if (kf.failed) {
            snprintf(c->errmsg, sizeof c->errmsg, "out of memory");
            goto done;
        }
        goto settle;
    }
    for (size_t i = 0; i < n && need_key; i++) {
        canon[i] = calls_canonical(c, &reqs[i], sub);
        if (!canon[i] || calls_key(canon[i], keys[i]) != 0) {
            snprintf(c->errmsg, sizeof c->errmsg, "out of memory");
            goto done;
        }
        /* The canonical request holds a copy of every prompt: on a batch of
         * thousands of long prompts that is a whole extra copy of the input
         * for as long as the batch runs. Only the record file needs it. */
        if (!recording) {
            json_decref(canon[i]);
            canon[i] = NULL;
        }
    }
    size_t missing = n;
    pthread_mutex_lock(&core->lock);
    for (size_t i = 0; i < n; i++) {
        if (core->replaying) {
            json_t *resp = replay_find(core, keys[i]);
            if (!resp) {
                missing = i;
                break;
            }
            reply_from_json(resp, &out[i].r);
        } else if (!need_key || !cache_lookup(core, keys[i], &out[i])) {
            pending[n_pending] = reqs[i];
            pending_index[n_pending++] = i;
        }
    }
    pthread_mutex_unlock(&core->lock);
    if (missing < n) {
        replay_missing(c, &reqs[missing], keys[missing], sub);
        goto done;
    }
    if (n_pending > 0) {
        if (!m) {
            snprintf(c->errmsg, sizeof c->errmsg, "no model endpoint to send the request to");
            goto done;
        }
        /* The batch's watcher rides on its first request, which the cache
         * may have answered. */
        pending[0].watch = reqs[0].watch;
        pending[0].watch_ctx = reqs[0].watch_ctx;
        if (feed && !drained) {
            /* No key, no lookup: every request is pending, in order, and
             * goes out as soon as it arrives — from reqs itself, which the
             * feed fills in as prompts arrive (pending holds early copies). */
            n = n_pending = lm_call_fed(m, reqs, n_pending, pending_out, feed);
            for (size_t k = n; k < given; k++)
                lm_response_clear(&pending_out[k]);
        } else {
            lm_call_many(m, pending, n_pending, pending_out);
        }
        for (size_t k = 0; k < n_pending; k++)
            out[pending_index[k]].r = pending_out[k];
    }
settle:
    for (size_t i = 0; i < n && recording; i++)
        lines[i] = record_line(keys[i], canon[i], &out[i].r);
    pthread_mutex_lock(&core->lock);
    for (size_t k = 0; k < n_pending && need_key; k++)
        cache_store(core, keys[pending_index[k]], &out[pending_index[k]].r);
    for (size_t i = 0; i < n; i++) {
        if (recording)
            record_write(core, lines[i]);
        calls_account(c, reqs[i].model ? reqs[i].model : "", &out[i]);
    }
    pthread_mutex_unlock(&core->lock);
    rc = CALLS_OK;
done:
    if (n_ready)
        *n_ready = n;
    if (rc != CALLS_OK && out)
        for (size_t i = 0; i < n; i++)
            calls_reply_clear(&out[i]);
    for (size_t i = 0; canon && i < n; i++)
        json_decref(canon[i]);
    for (size_t i = 0; lines && i < n; i++)
        free(lines[i]);
    free(canon);
    free(keys);
    free(lines);
    free(pending);
    free(pending_index);
    free(pending_out);
    return rc;
}

/* ---- identical sub-calls ------------------------------------------------ */

/* Design note. A program that maps llm_query over its pieces often asks the
 * same thing twice: duplicate records, a retried loop, two children that
 * split the input alike. With deduplication on, each sub-call's identity
 * (what the canonical request of calls.h holds: calls_identity_key) is
 * claimed in the tree's table (dedupe.h) before anything is sent:
 *   - the first request of a key in a batch LEADS it: it is sent (or answered
 *     by the replay file or the response cache, like any call) and its reply
 *     settles the key;
 *   - later requests of the same key in the same batch FOLLOW it and copy its
 *     reply once it is back;
 *   - a key another thread leads makes the request WAIT (on `settled`, in
 *     steps of 100 ms so its cancel flag and deadline hold) after this batch's
 *     own leaders were sent — never before, so two threads that each wait for
 *     the other's key still both send first;
 *   - a key already settled is ANSWERED at once with a copy.
 * A reply that is no answer (an error, an empty or truncated reply) is not
 * kept: its key is released and the requests that followed or waited for it
 * take another round, where the first of them leads and is sent. Copies are
 * calls_reply.deduplicated: no tokens, no cost, counted per model. */
enum { ROLE_LEAD, ROLE_FOLLOW, ROLE_WAIT, ROLE_DONE, ROLE_PLAIN };

/* The request of n whose key sorts first, then by position: groups equal keys. */
typedef struct key_order {
    const char (*keys)[CACHE_KEY_LEN];
    size_t index;
} key_order;

static int key_order_compare(const void *a, const void *b)
{
    const key_order *x = a, *y = b;
    int c = strcmp(x->keys[x->index], y->keys[y->index]);
    return c ? c : (x->index > y->index) - (x->index < y->index);
}

/* A copy of a reply for an identical request: its text, no usage. */
static int reply_copy(const lm_response *from, lm_response *to)
{
    memset(to, 0, sizeof *to);
    to->prompt_tokens = to->completion_tokens = to->cached_tokens = to->cache_write_tokens = -1;
    to->http_status = from->http_status;
    to->content_len = lm_content_len(from);
    to->content = str_dup_len(from->content ? from->content : "", to->content_len);
    to->reasoning = from->reasoning ? strdup(from->reasoning) : NULL;
    to->finish_reason = from->finish_reason ? strdup(from->finish_reason) : NULL;
    if (to->content && (!from->reasoning || to->reasoning) && (!from->finish_reason || to->finish_reason))
        return 0;
    lm_response_clear(to);
    return -1;
}

/* Under the lock: waits until key is no longer led by another thread, or
 * req is cancelled (its flag or deadline). 1 when it was cancelled. */
static int wait_settled(calls_core *core, const char *key, const lm_request *req)
{
    while (dedupe_state_of(core->answers, key) == DEDUPE_PENDING) {
        if ((req->cancel && *req->cancel) || (req->deadline > 0 && clock_now() >= req->deadline))
            return 1;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&core->settled, &core->lock, &until);
    }
    return 0;
}

/* Under the lock: a deduplicated reply for out (copy of `from`, or of key's
 * settled reply when from is NULL), accounted to c. 0, or -1 when there is
 * none to copy (the request takes another round). */
static int answer_copy(calls *c, const lm_request *req, const char *key, const lm_response *from,
                       calls_reply *out)
{
    memset(out, 0, sizeof *out);
    int rc = from ? reply_copy(from, &out->r) : dedupe_take(c->core->answers, key, &out->r);
    if (rc != 0)
        return -1;
    out->deduplicated = 1;
    calls_account(c, req->model ? req->model : "", out);
    return 0;
}

/* calls_run for sub-calls with deduplication (see the design note). */
/* The first round of a fed batch (calls_run_deduped): each request's role
 * is decided as it arrives, in order — the first of its key in the batch is
 * the one that sorts first by position, as in a whole batch — and those to
 * send are handed on to the dispatcher at once. */
typedef struct dedupe_feed {
    sub_feed s;          /* those to send */
    calls *c;
    const char *options;
    char (*keys)[CACHE_KEY_LEN];
    int *role;
    size_t *first;
    calls_reply *out;
    size_t arrived;
    size_t *seen;        /* open addressing by key: index + 1, 0 empty */
    size_t seen_size;    /* a power of two, above twice the batch */
} dedupe_feed;

/* The batch's earlier request with key i's key, or SIZE_MAX after noting i
 * as the first of its key. */
static size_t dedupe_feed_first(dedupe_feed *f, size_t i)
{
    size_t h = 0;
    for (size_t k = 0; k < 16 && f->keys[i][k]; k++)
        h = h * 31 + (unsigned char)f->keys[i][k];
    for (size_t slot = h & (f->seen_size - 1);; slot = (slot + 1) & (f->seen_size - 1)) {
        if (f->seen[slot] == 0) {
            f->seen[slot] = i + 1;
            return SIZE_MAX;
        }
        if (strcmp(f->keys[f->seen[slot] - 1], f->keys[i]) == 0)
            return f->seen[slot] - 1;
    }
}

static size_t dedupe_feed_more(void *ctx, int timeout_ms, int *last)
{
    dedupe_feed *f = ctx;
    size_t ready = f->s.inner->more(f->s.inner->ctx, timeout_ms, last);
    calls_core *core = f->c->core;
    for (; f->arrived < ready; f->arrived++) {
        size_t i = f->arrived;
        f->first[i] = i;
        if (calls_identity_key(f->c, &f->s.reqs[i], f->options, f->keys[i]) != 0) {
            f->keys[i][0] = '\0';
            f->role[i] = ROLE_PLAIN;   /* out of memory: sent, shared with nobody */
        } else {
            size_t j = dedupe_feed_first(f, i);
            if (j != SIZE_MAX) {
                f->first[i] = j;
                f->role[i] = ROLE_FOLLOW;
                continue;
            }
            pthread_mutex_lock(&core->lock);
            dedupe_state st = dedupe_claim(core->answers, f->keys[i]);
            if (st == DEDUPE_ANSWERED && answer_copy(f->c, &f->s.reqs[i], f->keys[i], NULL, &f->out[i]) == 0)
                f->role[i] = ROLE_DONE;
            else
                f->role[i] = st == DEDUPE_LEAD ? ROLE_LEAD : st == DEDUPE_PENDING ? ROLE_WAIT : ROLE_PLAIN;
            pthread_mutex_unlock(&core->lock);
            if (f->role[i] == ROLE_DONE)
                sub_feed_release(&f->s, i);
            if (f->role[i] != ROLE_LEAD && f->role[i] != ROLE_PLAIN)
                continue;
        }
        sub_feed_add(&f->s, i);
    }
    return f->s.n;
}

static int calls_run_deduped(calls *c, lm *m, const lm_request *reqs, size_t n, calls_reply *out,
                             const lm_feed *feed, size_t *n_ready)
{
    calls_core *core = c->core;
    int rc = CALLS_FATAL;
    char (*keys)[CACHE_KEY_LEN] = calloc(n, sizeof *keys);
    int *role = calloc(n, sizeof *role);
    size_t *first = calloc(n, sizeof *first);
    key_order *order = calloc(n, sizeof *order);
    size_t *todo = calloc(n, sizeof *todo);
    lm_request *send = calloc(n, sizeof *send);
    size_t *send_index = calloc(n, sizeof *send_index);
    calls_reply *sent = calloc(n, sizeof *sent);
    char *options = NULL;
    memset(out, 0, n * sizeof *out);
    if (!keys || !role || !first || !order || !todo || !send || !send_index || !sent) {
        snprintf(c->errmsg, sizeof c->errmsg, "out of memory");
        goto done;
    }
    options = core->o.key_options ? json_dumps(core->o.key_options, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (core->o.key_options && !options) {
        snprintf(c->errmsg, sizeof c->errmsg, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n && !feed; i++) {
        if (calls_identity_key(c, &reqs[i], options, keys[i]) != 0) {
            snprintf(c->errmsg, sizeof c->errmsg, "out of memory");
            goto done;
        }
        todo[i] = i;
    }
    size_t n_todo = feed ? 0 : n;
    for (int fed_round = feed != NULL; n_todo > 0 || fed_round; fed_round = 0) {
        size_t n_send = 0;
        int sent_rc = CALLS_OK;
        if (fed_round) {
            size_t seen_size = 4;
            while (seen_size < 2 * n)
                seen_size *= 2;
            dedupe_feed f = {.s = {.reqs = reqs, .inner = feed, .out = send, .index = send_index},
                             .c = c, .options = options, .keys = keys, .role = role, .first = first,
                             .out = out, .seen = calloc(seen_size, sizeof(size_t)), .seen_size = seen_size};
            if (!f.seen) {
                snprintf(c->errmsg, sizeof c->errmsg, "out of memory");
                goto done;
            }
            lm_feed wrap = {dedupe_feed_more, sub_feed_done, &f};
            send[0].watch = reqs[0].watch;   /* read before the first request arrives */
            send[0].watch_ctx = reqs[0].watch_ctx;
            sent_rc = calls_run(c, m, send, n, 1, sent, &wrap, NULL);
            free(f.seen);
            n = f.arrived;
            n_send = f.s.n;
            n_todo = n;
            for (size_t i = 0; i < n; i++)
                todo[i] = i;
            goto sent;
        }
        /* Equal keys of this round: each request's first of its kind. */
        for (size_t k = 0; k < n_todo; k++)
            order[k] = (key_order){keys, todo[k]};
        qsort(order, n_todo, sizeof *order, key_order_compare);
        for (size_t k = 0; k < n_todo; k++)
            first[order[k].index] = k > 0 && strcmp(keys[order[k].index], keys[order[k - 1].index]) == 0
                                        ? first[order[k - 1].index] : order[k].index;
        pthread_mutex_lock(&core->lock);
        for (size_t k = 0; k < n_todo; k++) {
            size_t i = todo[k];
            if (first[i] != i) {
                role[i] = ROLE_FOLLOW;
                continue;
            }
            dedupe_state st = dedupe_claim(core->answers, keys[i]);
            if (st == DEDUPE_ANSWERED && answer_copy(c, &reqs[i], keys[i], NULL, &out[i]) == 0) {
                role[i] = ROLE_DONE;
                continue;
            }
            role[i] = st == DEDUPE_LEAD ? ROLE_LEAD : st == DEDUPE_PENDING ? ROLE_WAIT : ROLE_PLAIN;
            if (role[i] == ROLE_WAIT)
                continue;
            send[n_send] = reqs[i];
            send_index[n_send++] = i;
        }
        pthread_mutex_unlock(&core->lock);
        if (n_send > 0) {
            send[0].watch = reqs[0].watch;
            send[0].watch_ctx = reqs[0].watch_ctx;
            sent_rc = calls_run(c, m, send, n_send, 1, sent, NULL, NULL);
        }
sent:;
        size_t n_next = 0;
        pthread_mutex_lock(&core->lock);
        for (size_t s = 0; s < n_send; s++) {
            size_t i = send_index[s];
            if (role[i] == ROLE_LEAD)
                dedupe_settle(core->answers, keys[i], sent_rc == CALLS_OK ? &sent[s].r : &(lm_response){0});
            if (sent_rc == CALLS_OK) {
                out[i] = sent[s];
                memset(&sent[s], 0, sizeof sent[s]);
                role[i] = ROLE_DONE;
            }
        }
        pthread_cond_broadcast(&core->settled);
        if (sent_rc != CALLS_OK) {
            pthread_mutex_unlock(&core->lock);
            rc = sent_rc;
            goto done;
        }
        for (size_t k = 0; k < n_todo; k++) {
            size_t i = todo[k];
            if (role[i] == ROLE_WAIT) {
                if (wait_settled(core, keys[i], &reqs[i])) {
                    lm_response_fail(&out[i].r, LM_ERR_CANCELLED,
                                     reqs[i].cancel && *reqs[i].cancel ? "cancelled" : "deadline reached", NULL);
                    out[i].r.prompt_tokens = out[i].r.completion_tokens = -1;
                    out[i].r.cached_tokens = out[i].r.cache_write_tokens = -1;
                    calls_account(c, reqs[i].model ? reqs[i].model : "", &out[i]);
                    role[i] = ROLE_DONE;
                } else if (answer_copy(c, &reqs[i], keys[i], NULL, &out[i]) == 0) {
                    role[i] = ROLE_DONE;
                }
            }
        }
        /* Followers last: their first may have been a waiter. */
        for (size_t k = 0; k < n_todo; k++) {
            size_t i = todo[k], j = first[i];
            if (role[i] == ROLE_FOLLOW && role[j] == ROLE_DONE && dedupe_shareable(&out[j].r) &&
                answer_copy(c, &reqs[i], keys[i], &out[j].r, &out[i]) == 0)
                role[i] = ROLE_DONE;
        }
        pthread_mutex_unlock(&core->lock);
        for (size_t k = 0; k < n_todo; k++)
            if (role[todo[k]] != ROLE_DONE)
                todo[n_next++] = todo[k];
        n_todo = n_next;
    }
    rc = CALLS_OK;
done:
    if (n_ready)
        *n_ready = n;
    if (rc != CALLS_OK && out)
        for (size_t i = 0; i < n; i++)
            calls_reply_clear(&out[i]);
    free(options);
    free(keys);
    free(role);
    free(first);
    free(order);
    free(todo);
    free(send);
    free(send_index);
    free(sent);
    return rc;
}

int calls_root(calls *c, const lm_request *req, int final, calls_reply *out)
{
    c->errmsg[0] = '\0';
    memset(out, 0, sizeof *out);
    long est = final ? 0 : estimate_tokens(req);
    double est_cost = final ? 0 : estimate_cost(c->core, req->model, est, c->root_cached_prefix);
    if (tree_admit(c, 0, est, est_cost, final) != BUDGET_NONE)
        return CALLS_BUDGET;
    int rc = calls_run(c, c->core->o.root_lm, req, 1, 0, out, NULL, NULL);
    /* The provider caches prefixes: it says it read or wrote one, or it
     * reports cache reads with no write field (OpenAI's automatic cache,
     * whose first reply reads 0). */
    const lm_response *r = &out->r;
    if (rc == CALLS_OK && r->error == LM_OK)
        c->root_cached_prefix = r->cached_tokens > 0 || r->cache_write_tokens > 0 ||
                                        (r->cached_tokens == 0 && r->cache_write_tokens < 0)
                                    ? r->prompt_tokens : 0;
    return rc;
}

int calls_sub_fed(calls *c, const lm_request *reqs, size_t n, calls_reply *out, const lm_feed *feed,
                  size_t *n_ready)
{
    c->errmsg[0] = '\0';
    if (n_ready)
        *n_ready = 0;
    if (n == 0)
        return CALLS_OK;
    if (cost_unenforceable(c, reqs[0].model))
        return CALLS_REFUSED;
    long est = 0;
    for (size_t i = 0; i < n; i++)
        est += estimate_tokens(&reqs[i]);
    if (tree_admit(c, n, est, estimate_cost(c->core, reqs[0].model, est, 0), 0) != BUDGET_NONE)
        return CALLS_BUDGET;
    const calls_options *o = &c->core->o;
    lm *m = o->sub_lm ? o->sub_lm : o->root_lm;
    if (c->core->answers)
        return calls_run_deduped(c, m, reqs, n, out, feed, n_ready);
    return calls_run(c, m, reqs, n, 1, out, feed, n_ready);
}

int calls_sub_marks_cache(const calls *c)
{
    const calls_options *o = &c->core->o;
    return lm_marks_cache(o->sub_lm ? o->sub_lm : o->root_lm);
}

int calls_sub(calls *c, const lm_request *reqs, size_t n, calls_reply *out)
{
    return calls_sub_fed(c, reqs, n, out, NULL, NULL);
}

/* ---- handles ------------------------------------------------------------- */

int calls_new(const calls_options *opts, calls **out, char *err, size_t errlen)
{
    *out = NULL;
    calls *c = calloc(1, sizeof *c);
    calls_core *core = calloc(1, sizeof *core);
    if (!c || !core || pthread_mutex_init(&core->lock, NULL) != 0) {
        free(c);
        free(core);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_cond_init(&core->settled, NULL);
    c->core = core;
    core->o = *opts;
    /* The paths are only used here; keep no borrowed pointers to them. */
    core->o.record_path = core->o.replay_path = NULL;
    budget_init(&c->budget, &opts->limits, clock_now());
    if (opts->dedupe && !(core->answers = dedupe_new())) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (opts->replay_path && opts->replay_path[0]) {
        if (replay_load(core, opts->replay_path, err, errlen) != 0)
            goto fail;
        core->replaying = 1;
    }
    if (opts->record_path && opts->record_path[0]) {
        core->record = fopen(opts->record_path, "w");
        if (!core->record) {
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

calls *calls_child(calls *parent, double share)
{
    assert(share > 0 && share <= 1);
    calls *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->core = parent->core;
    c->parent = parent;
    double now = clock_now();
    pthread_mutex_lock(&c->core->lock);
    budget_limits left = budget_no_limits();
    for (const calls *level = parent; level; level = level->parent)
        budget_limit_to_left(&level->budget, &left);
    budget_limits mine = budget_share(&left, share);
    budget_init(&c->budget, &mine, now);
    parent->n_children++;
    pthread_mutex_unlock(&c->core->lock);
    return c;
}

void calls_begin_run(calls *c)
{
    assert(!c->parent && c->n_children == 0);
    calls_core *core = c->core;
    pthread_mutex_lock(&core->lock);
    budget_init(&c->budget, &core->o.limits, clock_now());
    for (size_t i = 0; i < core->n_usage; i++)
        free(core->usage[i].model);
    free(core->usage);
    core->usage = NULL;
    core->n_usage = 0;
    pthread_mutex_unlock(&core->lock);
    c->msg_level = NULL;
    c->root_cached_prefix = 0;
    c->budget_msg[0] = '\0';
    c->errmsg[0] = '\0';
}

void calls_forget_answers(calls *c)
{
    pthread_mutex_lock(&c->core->lock);
    if (c->core->answers)
        dedupe_forget(c->core->answers);
    pthread_mutex_unlock(&c->core->lock);
}

budget_kind calls_exhausted(const calls *c)
{
    pthread_mutex_lock(&c->core->lock);
    const calls *level = stopping_level(c);
    budget_kind k = level ? level->budget.exhausted : BUDGET_NONE;
    pthread_mutex_unlock(&c->core->lock);
    return k;
}

const char *calls_budget_message(calls *c)
{
    pthread_mutex_lock(&c->core->lock);
    const calls *level = stopping_level(c);
    if (!c->budget_msg[0] || c->msg_level != level)
        describe_stop(c, level, clock_now());
    pthread_mutex_unlock(&c->core->lock);
    return c->budget_msg;
}

double calls_budget_limit(const calls *c)
{
    pthread_mutex_lock(&c->core->lock);
    const calls *level = stopping_level(c);
    double limit = -1;
    if (level) {
        const budget_limits *l = &level->budget.limits;
        switch (level->budget.exhausted) {
        case BUDGET_COST: limit = l->max_cost; break;
        case BUDGET_TOKENS: limit = (double)l->max_tokens; break;
        case BUDGET_TIME: limit = l->max_time; break;
        case BUDGET_SUBCALLS: limit = (double)l->max_subcalls; break;
        case BUDGET_NONE: break;
        }
    }
    pthread_mutex_unlock(&c->core->lock);
    return limit;
}

void calls_budget_snapshot(const calls *c, budget *out)
{
    pthread_mutex_lock(&c->core->lock);
    *out = c->budget;
    pthread_mutex_unlock(&c->core->lock);
}

const char *calls_errmsg(const calls *c)
{
    return c->errmsg;
}

json_t *calls_usage_json(const calls *c)
{
    calls_core *core = c->core;
    json_t *j = json_object();
    pthread_mutex_lock(&core->lock);
    for (size_t i = 0; j && i < core->n_usage; i++) {
        const model_usage *u = &core->usage[i];
        json_t *m = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:o}", "calls", (json_int_t)u->calls,
                              "cached_calls", (json_int_t)u->cached_calls, "deduplicated",
                              (json_int_t)u->deduplicated, "errors", (json_int_t)u->errors,
                              "prompt_tokens", (json_int_t)u->prompt_tokens, "cached_tokens",
                              (json_int_t)u->cached_tokens, "cache_write_tokens",
                              (json_int_t)u->cache_write_tokens, "completion_tokens",
                              (json_int_t)u->completion_tokens, "cost_usd",
                              u->unknown_cost ? json_null() : json_real(u->cost), "cost_no_cache_usd",
                              u->unknown_cost ? json_null() : json_real(u->cost_no_cache));
        json_object_set_new(j, u->model, m);
    }
    pthread_mutex_unlock(&core->lock);
    return j;
}

double calls_cost(const calls *c)
{
    pthread_mutex_lock(&c->core->lock);
    double cost = c->budget.unknown_cost_calls ? -1 : c->budget.cost;
    pthread_mutex_unlock(&c->core->lock);
    return cost;
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
    assert(c->n_children == 0);
    calls_core *core = c->core;
    if (c->parent) {
        pthread_mutex_lock(&core->lock);
        c->parent->n_children--;
        pthread_mutex_unlock(&core->lock);
        free(c);
        return;
    }
    if (core->record)
        fclose(core->record);
    for (size_t i = 0; i < core->n_replay; i++)
        json_decref(core->replay[i].response);
    free(core->replay);
    for (size_t i = 0; i < core->n_usage; i++)
        free(core->usage[i].model);
    free(core->usage);
    dedupe_free(core->answers);
    pthread_cond_destroy(&core->settled);
    pthread_mutex_destroy(&core->lock);
    free(core);
    free(c);
}
