/* calls — every model call of a run passes through here: budget check →
 * identical sub-calls shared (dedupe.h) → replay or cache lookup → the LM
 * dispatcher → record and cache store → cost and budget accounting. The engine calls this instead of lm_call*, so money,
 * limits, caching and record/replay live in one place.
 *
 * A run is a tree of RLMs, and so a tree of handles: calls_new makes the top
 * one (the run's limits); calls_child makes a child's, which shares everything
 * with its parent but has its own share of the budget. Every call is charged
 * to its handle and to every ancestor, and the run's limits hold for the
 * whole tree (docs/budgets.md; the design note in calls.c).
 *
 * Ownership: calls_new borrows the dispatchers, price table and cache (they
 * must outlive the handle) and opens the record / replay files it is given;
 * calls_free of the top handle closes them. A child borrows all that from
 * its parent, which must outlive it. A calls_reply owns its strings
 * (calls_reply_clear).
 *
 * Threads: every handle of one tree may be used at the same time from its own
 * thread (one thread per handle at a time). One lock shared by the tree
 * serialises admission, accounting, the cache, the record file and the replay
 * positions; it is not held while the dispatcher waits for replies, so the
 * calls of many RLMs are in flight together. calls_errmsg and
 * calls_budget_message are per handle. The warn callback may be called from
 * any of these threads with the lock held: it must not call calls_*.
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
    const char *sub_provider;  /* the sub-calls' (part of their key); NULL = provider */
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
    int dedupe;                /* 1: identical sub-calls of the tree are sent once and the
                                  reply shared (calls_sub), also across runs until
                                  calls_forget_answers */
} calls_options;

/* The outcome of one call. */
typedef struct calls_reply {
    lm_response r;      /* as the dispatcher fills it (or rebuilt from cache / replay) */
    double cost_usd;    /* this call's price; < 0 when unknown; 0 for a cache hit */
    double cost_no_cache_usd; /* what it would have cost without the provider's prompt
                               * cache (cached and written prompt tokens at the input
                               * price); < 0 when unknown */
    int cached;         /* 1: answered from the response cache, no request made */
    int deduplicated;   /* 1: a sub-call identical to an earlier one of the run (or the
                         * same batch), answered with its reply, no request made */
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

/* A child's handle: same dispatchers, cache, record/replay files, usage
 * table and tree budget as `parent`, plus its own share of the budget.
 * share in (0, 1]: the child may spend at most share x what remained of each
 * of the parent's cost, token and sub-call limits when the child was created
 * (what remained there and at every ancestor, whichever is least; tokens and
 * sub-calls rounded down; a limit the parent does not have stays unlimited for
 * the child; max_time is the tree's deadline, not shared out — children run
 * concurrently). Every call made on the child is charged to the child and to
 * every ancestor, and is admitted only if every one of them admits it. A
 * child's root requests count as sub-calls for its ancestors (every request
 * below the top root is a sub-call of the tree's run) but as root requests for
 * the child itself. NULL when out of memory. Free with calls_free before the
 * parent. */
calls *calls_child(calls *parent, double share);

/* Starts a new run on the top handle (children are made per run, and none may
 * be alive): the budget clock restarts and what was spent and the usage per
 * model go back to zero (the record file and the replay file's positions
 * carry on). */
void calls_begin_run(calls *c);

/* The next run is unrelated to the last (not a question of the same
 * conversation): the replies kept for identical sub-calls are dropped. */
void calls_forget_answers(calls *c);

/* One root request. final = 1 for the last "best answer" request after a
 * budget or the turns ran out: it skips every budget check, of c and of its
 * ancestors (it may go over cost and tokens by this one call, and max_time by
 * its request timeout), and is charged to every level like any call. Returns
 * CALLS_OK with *out filled, CALLS_BUDGET, or CALLS_FATAL (calls_errmsg). */
int calls_root(calls *c, const lm_request *req, int final, calls_reply *out);

/* A batch of n sub-calls (all for the same model), admitted or refused whole
 * (budget.h). On CALLS_OK every out[i] is filled; otherwise none is. With
 * the dedupe option, a request identical to one of the same batch or an
 * earlier one of the tree (everything its key covers is the same) is not sent: it gets a copy of that
 * reply (calls_reply.deduplicated; no tokens, no cost), waiting for it if it
 * is still in flight on another thread. Only answers are shared: after a
 * failure, an identical request is sent again. Every request is still a
 * sub-call for the budget's max_subcalls. */
int calls_sub(calls *c, const lm_request *reqs, size_t n, calls_reply *out);

/* 1 when sub-calls go to a provider that caches only the prefixes a request
 * marks (lm_marks_cache). */
int calls_sub_marks_cache(const calls *c);

/* calls_sub for a batch whose prompts are still arriving (lm_feed): admitted
 * from the announced lengths (a message with no content yet counts its
 * content_len), each request's identity, key and cache lookup made as it
 * arrives and the request sent at once; with a replay file (which answers
 * every request) the feed is read to its end first. The feed's requests are
 * reqs, filled in place. *n_ready: how many arrived in all (below n only
 * when the feed broke off); out[i] is filled below it on CALLS_OK. The
 * feed's `done` may be called for some requests, not necessarily all. */
int calls_sub_fed(calls *c, const lm_request *reqs, size_t n, calls_reply *out, const lm_feed *feed,
                  size_t *n_ready);

/* The key of req as a root (sub = 0) or sub-call (sub = 1) request: what the
 * cache and the replay file are looked up by. 0, or -1 when out of memory. */
int calls_request_key(const calls *c, const lm_request *req, int sub, char key[CACHE_KEY_LEN]);

/* The limit that stops c, BUDGET_NONE while none does: c's own (for a child,
 * its share) or an ancestor's, whichever refuses c's next call — the
 * top-most exhausted budget among c and its ancestors. A child whose share
 * ran out reports it while its parent reports BUDGET_NONE and goes on; once
 * the run's limit is reached the top handle, and every handle below it,
 * reports that limit. */
budget_kind calls_exhausted(const calls *c);
/* A sentence on what was spent of that limit, borrowed from c, naming whose
 * limit it is for a child: "max_subcalls: 3 of this child's share of 3
 * sub-calls used", "... of the whole run's limit of ..."; the top handle's
 * says "max_subcalls: 10 sub-calls made of 10". */
const char *calls_budget_message(calls *c);
/* That limit, for the trace: e.g. 0.02 for max_cost; -1 when none stops c. */
double calls_budget_limit(const calls *c);
/* A copy of c's budget: its limits (for a child, its share) and what c and
 * its descendants spent and were admitted. */
void calls_budget_snapshot(const calls *c, budget *out);

/* Why the last CALLS_FATAL / CALLS_REFUSED happened; "" if none. Borrowed. */
const char *calls_errmsg(const calls *c);

/* Usage so far per model of the whole tree (from any of its handles), as a new object:
 * {"MODEL": {"calls","cached_calls","deduplicated","errors","prompt_tokens",
 *            "cached_tokens","cache_write_tokens" (of prompt_tokens, read from and
 *            written to the provider's prompt cache),"completion_tokens",
 *            "cost_usd" (null when any call's cost was unknown),
 *            "cost_no_cache_usd" (the same calls without the prompt cache)}} */
json_t *calls_usage_json(const calls *c);
/* USD spent by c and its descendants (by the run, for the top handle); < 0
 * when any of their calls' cost was unknown. */
double calls_cost(const calls *c);

void calls_reply_clear(calls_reply *r);
/* Frees a child's handle (its children first), or the top handle and what
 * the tree shares, closing the record file. NULL is a no-op. */
void calls_free(calls *c);

#endif
