/* calls — every model call of a run passes through here: budget check →
 * replay or cache lookup → the LM dispatcher → record and cache store → cost
 * and budget accounting. The engine calls this instead of lm_call*, so money,
 * limits, caching and record/replay live in one place.
 *
 * Ownership: calls_new borrows the dispatchers, price table and cache (they
 * must outlive the handle) and opens the record / replay files it is given;
 * calls_free closes them. A calls_reply owns its strings (calls_reply_clear).
 * Not thread-safe: one engine thread makes the calls.
 *
 * Request identity: a request is the canonical JSON
 *     {"v":1,"provider":..,"base_url":..,"model":..,"messages":[{"role","content"}..],
 *      "options":{..}, "max_tokens":n}
 * with sorted keys ("options" and "max_tokens" only when set); its key is the SHA-256 of those bytes. The cache and the
 * replay file are both looked up by that key. */
#ifndef RLM_CALLS_H
#define RLM_CALLS_H

#include <jansson.h>
#include <stddef.h>

#include "budget.h"
#include "cache.h"
#include "lm.h"
#include "pricing.h"

typedef struct calls calls;

/* Called with a one-line warning (cache trouble, ...). Borrowed string. */
typedef void (*calls_warn_fn)(void *userdata, const char *message);

typedef struct calls_options {
    lm *root_lm;               /* root turns; may be NULL only when replaying */
    lm *sub_lm;                /* sub-calls; NULL = root_lm */
    const char *provider;      /* part of the request key, e.g. "openai"; NULL = "openai" */
    const char *root_base_url; /* part of the request key */
    const char *sub_base_url;  /* NULL = root_base_url */
    const json_t *key_options; /* options that change replies (max_tokens, temperature,
                                  reasoning effort, ...), part of the request key; may be NULL */
    const pricing *prices;     /* NULL: every cost unknown */
    cache *cache;              /* NULL: no cache; disabled after its first failure */
    const char *record_path;   /* NULL: no recording; the file is created (truncated) */
    const char *replay_path;   /* NULL: no replay; else every request is answered from it */
    budget_limits limits;
    calls_warn_fn warn;
    void *warn_data;
} calls_options;

/* The outcome of one call. */
typedef struct calls_reply {
    lm_response r;      /* as the dispatcher fills it (or rebuilt from cache / replay) */
    double cost_usd;    /* this call's price; < 0 when unknown; 0 for a cache hit */
    int cached;         /* 1: answered from the response cache, no request made */
} calls_reply;

enum {
    CALLS_OK = 0,       /* the call(s) were made (or answered); see each reply's r.error */
    CALLS_BUDGET = 1,   /* refused: a budget is exhausted (calls_exhausted says which) */
    CALLS_REFUSED = 2,  /* refused for this batch only (calls_errmsg says why), the run goes on */
    CALLS_FATAL = -1,   /* the run cannot go on: a request missing from the replay file, ... */
};

/* Opens the handle: loads the replay file, creates the record file, starts
 * the budget clock. 0, or -1 with err set (unreadable or malformed replay
 * file, record file not writable). */
int calls_new(const calls_options *opts, calls **out, char *err, size_t errlen);

/* Starts a new run on the same handle: the budget clock restarts and what was
 * spent and the usage per model go back to zero (the record file and the
 * replay file's positions carry on). */
void calls_begin_run(calls *c);

/* One root request. final = 1 for the last "best answer" request after a
 * budget or the turns ran out: it skips every budget check (it may go over
 * cost and tokens by this one call, and max_time by its request timeout). Returns CALLS_OK with
 * *out filled, CALLS_BUDGET, or CALLS_FATAL (calls_errmsg). */
int calls_root(calls *c, const lm_request *req, int final, calls_reply *out);

/* A batch of n sub-calls (all for the same model), admitted or refused whole
 * (budget.h). On CALLS_OK every out[i] is filled; otherwise none is. */
int calls_sub(calls *c, const lm_request *reqs, size_t n, calls_reply *out);

/* The key of req as a root (sub = 0) or sub-call (sub = 1) request: what the
 * cache and the replay file are looked up by. 0, or -1 when out of memory. */
int calls_request_key(const calls *c, const lm_request *req, int sub, char key[CACHE_KEY_LEN]);

/* The limit that stopped the run, BUDGET_NONE while none has. */
budget_kind calls_exhausted(const calls *c);
/* A sentence on what was spent of the exhausted limit, borrowed from c. */
const char *calls_budget_message(calls *c);
/* The limit, for the trace: e.g. 0.02 for max_cost; -1 when no limit is exhausted. */
double calls_budget_limit(const calls *c);

/* Why the last CALLS_FATAL / CALLS_REFUSED happened; "" if none. Borrowed. */
const char *calls_errmsg(const calls *c);

/* Usage so far per model, as a new object:
 * {"MODEL": {"calls","cached_calls","errors","prompt_tokens","completion_tokens",
 *            "cost_usd" (null when any call's cost was unknown)}} */
json_t *calls_usage_json(const calls *c);
/* USD spent by the run; < 0 when any call's cost was unknown. */
double calls_cost(const calls *c);

void calls_reply_clear(calls_reply *r);
/* Closes the record file. NULL is a no-op. */
void calls_free(calls *c);

#endif
