/* Unit tests for calls, the path every model call takes, offline: cache hits
 * (no request, cost 0), recording them, replaying a record file (same
 * replies, prices from usage, a missing request named), budget refusals of
 * whole batches, and a dollar budget that cannot be enforced. Then the tree
 * of handles: a child's share, the run's limit reached from two threads at
 * once, refusals that count nothing below them, a child's root requests as
 * the run's sub-calls, cost and usage reaching the top, the usage per model
 * (the run's one ledger), and the calls of children on several threads in
 * flight together against the fake server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "calls.h"
#include "pricing.h"
#include "util.h"

#include "fakelm_spawn.h"

#define FAKELM RLM_BUILD_DIR "/fakelm"

typedef struct fixture {
    char dir[64];
    char record[128], replay[128], prices[128];
    pricing *prices_table;
    cache *cache;
    pid_t server_pid;   /* fakelm, when a test started one; teardown stops it */
    int server_port;
    char base[128];     /* its base URL, for handles that borrow it */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/rlm-test-calls-XXXXXX");
    if (!f || !mkdtemp(f->dir))
        return -1;
    snprintf(f->record, sizeof f->record, "%s/record.jsonl", f->dir);
    snprintf(f->replay, sizeof f->replay, "%s/replay.jsonl", f->dir);
    snprintf(f->prices, sizeof f->prices, "%s/prices.json", f->dir);
    FILE *p = fopen(f->prices, "w");
    fputs("{\"root-model\": {\"input\": 1000, \"output\": 2000},"
          " \"sub-model\": {\"input\": 100, \"output\": 100}}", p);
    fclose(p);
    f->prices_table = pricing_new();
    char err[256];
    if (pricing_load_file(f->prices_table, f->prices, err, sizeof err) != 0)
        return -1;
    char cdir[128];
    snprintf(cdir, sizeof cdir, "%s/cache", f->dir);
    f->cache = cache_open(cdir, err, sizeof err);
    *state = f;
    return f->cache ? 0 : -1;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->server_pid > 0) {
        kill(f->server_pid, SIGTERM);
        waitpid(f->server_pid, NULL, 0);
    }
    cache_close(f->cache);
    pricing_free(f->prices_table);
    char cmd[256];
    const char *names[] = {"record.jsonl", "replay.jsonl", "prices.json", "cache/cache.sqlite",
                           "cache/cache.sqlite-wal", "cache/cache.sqlite-shm", "script.json", "port",
                           "fakelm.stderr"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(cmd, sizeof cmd, "%s/%s", f->dir, names[i]);
        unlink(cmd);
    }
    snprintf(cmd, sizeof cmd, "%s/cache", f->dir);
    rmdir(cmd);
    rmdir(f->dir);
    free(f);
    return 0;
}

static calls_options base_options(fixture *f)
{
    calls_options o = {.provider = "openai", .root_base_url = "http://127.0.0.1:1/v1",
                       .prices = f->prices_table, .limits = budget_no_limits()};
    return o;
}

static lm_request request(const lm_message *m, const char *model)
{
    lm_request r = {.model = model, .messages = m, .n_messages = 1};
    return r;
}

static void seed_cache(fixture *f, calls *c, const lm_request *req, int sub, const char *reply)
{
    char key[CACHE_KEY_LEN], err[256];
    assert_int_equal(calls_request_key(c, req, sub, key), 0);
    cache_entry e = {.content = (char *)reply, .finish_reason = "stop", .prompt_tokens = 1000,
                     .completion_tokens = 500};
    assert_int_equal(cache_put(f->cache, key, &e, err, sizeof err), 0);
}

static void test_keys_differ_by_what_changes_replies(void **state)
{
    fixture *f = *state;
    calls_options o = base_options(f);
    o.sub_base_url = "http://127.0.0.1:2/v1";
    calls *c;
    char err[256];
    assert_int_equal(calls_new(&o, &c, err, sizeof err), 0);
    lm_message m1 = {.role = "user", .content = "hello"}, m2 = {.role = "user", .content = "hello!"};
    lm_request a = request(&m1, "root-model"), b = request(&m2, "root-model"),
               d = request(&m1, "sub-model");
    char ka[CACHE_KEY_LEN], kb[CACHE_KEY_LEN], kd[CACHE_KEY_LEN], ks[CACHE_KEY_LEN], ka2[CACHE_KEY_LEN];
    calls_request_key(c, &a, 0, ka);
    calls_request_key(c, &a, 0, ka2);
    calls_request_key(c, &b, 0, kb);
    calls_request_key(c, &d, 0, kd);
    calls_request_key(c, &a, 1, ks);   /* another base URL for sub-calls */
    assert_string_equal(ka, ka2);
    assert_string_not_equal(ka, kb);
    assert_string_not_equal(ka, kd);
    assert_string_not_equal(ka, ks);
    assert_int_equal(strlen(ka), 64);
    calls_free(c);
}

static void test_cache_hit_record_and_replay(void **state)
{
    fixture *f = *state;
    calls_options o = base_options(f);
    o.cache = f->cache;
    o.record_path = f->record;
    calls *c;
    char err[256];
    assert_int_equal(calls_new(&o, &c, err, sizeof err), 0);
    lm_message m = {.role = "user", .content = "what is 6 x 7?"};
    lm_request req = request(&m, "root-model");
    seed_cache(f, c, &req, 0, "42");

    /* A hit: no endpoint is needed (root_lm is NULL) and it costs nothing. */
    calls_reply r;
    assert_int_equal(calls_root(c, &req, 0, &r), CALLS_OK);
    assert_string_equal(r.r.content, "42");
    assert_int_equal(r.cached, 1);
    assert_true(r.cost_usd == 0);
    calls_reply_clear(&r);
    /* A miss with no endpoint is an error of the call path, not a crash. */
    lm_message other = {.role = "user", .content = "not cached"};
    lm_request miss = request(&other, "root-model");
    assert_int_equal(calls_root(c, &miss, 0, &r), CALLS_FATAL);
    json_t *u = calls_usage_json(c);
    json_t *rm = json_object_get(u, "root-model");
    assert_int_equal(json_integer_value(json_object_get(rm, "calls")), 1);
    assert_int_equal(json_integer_value(json_object_get(rm, "cached_calls")), 1);
    assert_int_equal(json_integer_value(json_object_get(rm, "prompt_tokens")), 0);
    assert_true(json_real_value(json_object_get(rm, "cost_usd")) == 0);
    json_decref(u);
    assert_true(calls_cost(c) == 0);
    calls_free(c);

    /* Replay the recording: same reply, no endpoint, no cache; the recorded
     * usage is priced (1000 x 1000 + 500 x 2000 per million = $2). */
    calls_options ro = base_options(f);
    ro.replay_path = f->record;
    assert_int_equal(calls_new(&ro, &c, err, sizeof err), 0);
    assert_int_equal(calls_root(c, &req, 0, &r), CALLS_OK);
    assert_string_equal(r.r.content, "42");
    assert_string_equal(r.r.finish_reason, "stop");
    assert_int_equal(r.cached, 0);
    assert_true(fabs(r.cost_usd - 2.0) < 1e-9);
    calls_reply_clear(&r);
    /* Asked again: the last recorded reply answers again. */
    assert_int_equal(calls_root(c, &req, 0, &r), CALLS_OK);
    assert_string_equal(r.r.content, "42");
    calls_reply_clear(&r);
    assert_true(fabs(calls_cost(c) - 4.0) < 1e-9);
    /* A request the file does not hold is named. */
    assert_int_equal(calls_root(c, &miss, 0, &r), CALLS_FATAL);
    assert_non_null(strstr(calls_errmsg(c), "not in the replay file"));
    assert_non_null(strstr(calls_errmsg(c), "not cached"));
    assert_non_null(strstr(calls_errmsg(c), "root-model"));
    calls_free(c);
}

/* With no cache, record or replay no request key is computed: every request
 * of the batch goes straight to the endpoint (here there is none, which is
 * the call path's error, not a crash). */
static void test_batch_without_cache_goes_to_endpoint(void **state)
{
    fixture *f = *state;
    calls_options o = base_options(f);
    calls *c;
    char err[256];
    assert_int_equal(calls_new(&o, &c, err, sizeof err), 0);
    lm_message m[3] = {{.role = "user", .content = "a"}, {.role = "user", .content = "b"}, {.role = "user", .content = "c"}};
    lm_request reqs[3] = {request(&m[0], "sub-model"), request(&m[1], "sub-model"),
                          request(&m[2], "sub-model")};
    calls_reply out[3];
    assert_int_equal(calls_sub(c, reqs, 3, out), CALLS_FATAL);
    assert_non_null(strstr(calls_errmsg(c), "no model endpoint"));
    assert_true(calls_cost(c) == 0);
    calls_free(c);
}

static void test_bad_replay_and_record_paths(void **state)
{
    fixture *f = *state;
    calls_options o = base_options(f);
    calls *c;
    char err[256];
    o.replay_path = "/nonexistent/replay.jsonl";
    assert_int_equal(calls_new(&o, &c, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot open replay file"));
    FILE *r = fopen(f->replay, "w");
    fputs("{\"key\": \"short\", \"response\": {}}\n", r);
    fclose(r);
    o.replay_path = f->replay;
    assert_int_equal(calls_new(&o, &c, err, sizeof err), -1);
    assert_non_null(strstr(err, "line 1"));
    o.replay_path = NULL;
    o.record_path = "/nonexistent/dir/record.jsonl";
    assert_int_equal(calls_new(&o, &c, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot create record file"));
}

static void test_budget_refuses_whole_batch(void **state)
{
    fixture *f = *state;
    calls_options o = base_options(f);
    o.cache = f->cache;
    o.limits.max_subcalls = 3;
    calls *c;
    char err[256];
    assert_int_equal(calls_new(&o, &c, err, sizeof err), 0);
    lm_message m[4] = {{.role = "user", .content = "p0"}, {.role = "user", .content = "p1"}, {.role = "user", .content = "p2"}, {.role = "user", .content = "p3"}};
    lm_request reqs[4];
    for (int i = 0; i < 4; i++) {
        reqs[i] = request(&m[i], "sub-model");
        seed_cache(f, c, &reqs[i], 1, "ok");
    }
    calls_reply out[4];
    assert_int_equal(calls_sub(c, reqs, 2, out), CALLS_OK);
    calls_reply_clear(&out[0]);
    calls_reply_clear(&out[1]);
    /* One left: a batch of two is refused whole, and the run is stopped. */
    assert_int_equal(calls_sub(c, reqs + 2, 2, out), CALLS_BUDGET);
    assert_int_equal(calls_exhausted(c), BUDGET_SUBCALLS);
    assert_string_equal(calls_budget_message(c),
                        "max_subcalls: a batch of 2 sub-calls would go past the limit: 2 sub-calls made of 3");
    assert_true(calls_budget_limit(c) == 3);
    assert_int_equal(calls_sub(c, reqs + 3, 1, out), CALLS_BUDGET);
    /* The last best-answer request still goes (here: a hit). */
    seed_cache(f, c, &reqs[0], 0, "final");
    calls_reply r;
    assert_int_equal(calls_root(c, &reqs[0], 0, &r), CALLS_BUDGET);
    assert_int_equal(calls_root(c, &reqs[0], 1, &r), CALLS_OK);
    assert_string_equal(r.r.content, "final");
    calls_reply_clear(&r);
    /* A new run starts with a fresh budget. */
    calls_begin_run(c);
    assert_int_equal(calls_exhausted(c), BUDGET_NONE);
    assert_int_equal(calls_sub(c, reqs + 2, 2, out), CALLS_OK);
    calls_reply_clear(&out[0]);
    calls_reply_clear(&out[1]);
    calls_free(c);
}

static void test_max_cost_with_unknown_price(void **state)
{
    fixture *f = *state;
    calls_options o = base_options(f);
    o.cache = f->cache;
    o.limits.max_cost = 1.0;
    calls *c;
    char err[256];
    assert_int_equal(calls_new(&o, &c, err, sizeof err), 0);
    lm_message m = {.role = "user", .content = "x"};
    lm_request req = request(&m, "mystery-model");
    calls_reply out;
    assert_int_equal(calls_sub(c, &req, 1, &out), CALLS_REFUSED);
    assert_non_null(strstr(calls_errmsg(c), "mystery-model"));
    assert_int_equal(calls_exhausted(c), BUDGET_NONE);
    calls_free(c);
}

/* ---- a tree of handles --------------------------------------------------- */

#define N_PROMPTS 64

/* Sub-call prompts "p0".."p63" for sub-model, every one a cache hit. */
typedef struct prompts {
    char text[N_PROMPTS][8];
    lm_message msg[N_PROMPTS];
    lm_request req[N_PROMPTS];
} prompts;

static void prompts_seed(fixture *f, calls *c, prompts *p)
{
    for (int i = 0; i < N_PROMPTS; i++) {
        snprintf(p->text[i], sizeof p->text[i], "p%d", i);
        p->msg[i] = (lm_message){.role = "user", .content = p->text[i]};
        p->req[i] = request(&p->msg[i], "sub-model");
        seed_cache(f, c, &p->req[i], 1, "ok");
    }
}

/* calls_sub on reqs[first..first+n), replies released. */
static int sub_batch(calls *c, const prompts *p, int first, int n)
{
    calls_reply out[N_PROMPTS];
    int rc = calls_sub(c, p->req + first, (size_t)n, out);
    for (int i = 0; rc == CALLS_OK && i < n; i++)
        calls_reply_clear(&out[i]);
    return rc;
}

static budget snapshot(const calls *c)
{
    budget b;
    calls_budget_snapshot(c, &b);
    return b;
}

static calls *open_with_limits(fixture *f, budget_limits limits)
{
    calls_options o = base_options(f);
    o.cache = f->cache;
    o.limits = limits;
    calls *c;
    char err[256];
    assert_int_equal(calls_new(&o, &c, err, sizeof err), 0);
    return c;
}

static budget_limits subcall_limit(long n)
{
    budget_limits l = budget_no_limits();
    l.max_subcalls = n;
    return l;
}

static void test_child_share_of_subcalls(void **state)
{
    fixture *f = *state;
    calls *parent = open_with_limits(f, subcall_limit(10));
    prompts p;
    prompts_seed(f, parent, &p);
    calls *child = calls_child(parent, 0.5);
    assert_non_null(child);
    assert_int_equal(snapshot(child).limits.max_subcalls, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(sub_batch(child, &p, i, 1), CALLS_OK);
    /* Its share is spent: the child stops, the parent does not. */
    assert_int_equal(sub_batch(child, &p, 5, 1), CALLS_BUDGET);
    assert_int_equal(calls_exhausted(child), BUDGET_SUBCALLS);
    assert_string_equal(calls_budget_message(child),
                        "max_subcalls: 5 of this child's share of 5 sub-calls used");
    assert_true(calls_budget_limit(child) == 5);
    assert_int_equal(calls_exhausted(parent), BUDGET_NONE);
    assert_true(calls_budget_limit(parent) == -1);
    assert_int_equal(snapshot(parent).subcalls, 5);
    assert_int_equal(snapshot(child).subcalls, 5);
    /* The child's last best-answer request still goes, charged to both. */
    seed_cache(f, parent, &p.req[0], 0, "best");
    calls_reply r;
    assert_int_equal(calls_root(child, &p.req[0], 0, &r), CALLS_BUDGET);
    assert_int_equal(calls_root(child, &p.req[0], 1, &r), CALLS_OK);
    assert_string_equal(r.r.content, "best");
    calls_reply_clear(&r);
    assert_int_equal(snapshot(child).root_calls, 1);
    assert_int_equal(snapshot(parent).subcalls, 6);
    calls_free(child);
    /* The parent goes on with what is left of the run's 10: 4, not 5. */
    assert_int_equal(sub_batch(parent, &p, 10, 5), CALLS_BUDGET);
    assert_int_equal(calls_exhausted(parent), BUDGET_SUBCALLS);
    calls_free(parent);

    parent = open_with_limits(f, subcall_limit(10));
    child = calls_child(parent, 0.5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(sub_batch(child, &p, i, 1), CALLS_OK);
    assert_int_equal(sub_batch(child, &p, 5, 1), CALLS_BUDGET);
    assert_int_equal(sub_batch(parent, &p, 10, 5), CALLS_OK);
    assert_int_equal(calls_exhausted(parent), BUDGET_NONE);
    assert_int_equal(sub_batch(parent, &p, 15, 1), CALLS_BUDGET);
    assert_string_equal(calls_budget_message(parent), "max_subcalls: 10 sub-calls made of 10");
    /* The run's limit now stops the child too, and says so. */
    assert_int_equal(calls_exhausted(child), BUDGET_SUBCALLS);
    assert_true(calls_budget_limit(child) == 10);
    assert_string_equal(calls_budget_message(child),
                        "max_subcalls: 10 of the whole run's limit of 10 sub-calls used");
    calls_free(child);
    calls_free(parent);
}

/* A child made later gets a share of what is left, at its parent and above. */
static void test_share_of_what_is_left(void **state)
{
    fixture *f = *state;
    budget_limits l = {.max_cost = 2.0, .max_tokens = 1000, .max_time = 60, .max_subcalls = 20};
    calls *root = open_with_limits(f, l);
    prompts p;
    prompts_seed(f, root, &p);
    calls *a = calls_child(root, 1.0);
    budget s = snapshot(a);
    assert_int_equal(s.limits.max_subcalls, 20);
    assert_int_equal(s.limits.max_tokens, 1000);
    assert_true(fabs(s.limits.max_cost - 2.0) < 1e-12);
    assert_true(s.limits.max_time < 0);   /* the run's deadline, not shared out */
    /* The root spends 12 itself: a's own budget still says 20, but a child of
     * a gets a share of the 8 the run has left. */
    assert_int_equal(sub_batch(root, &p, 0, 12), CALLS_OK);
    calls *g = calls_child(a, 0.5);
    assert_int_equal(snapshot(g).limits.max_subcalls, 4);
    calls_free(g);
    calls_free(a);
    calls_free(root);
    /* Without a limit at the top, a child has none either. */
    root = open_with_limits(f, budget_no_limits());
    a = calls_child(root, 0.25);
    s = snapshot(a);
    assert_true(s.limits.max_subcalls < 0 && s.limits.max_tokens < 0 && s.limits.max_cost < 0);
    assert_int_equal(sub_batch(a, &p, 0, 40), CALLS_OK);
    calls_free(a);
    calls_free(root);
}

typedef struct spender {
    calls *c;
    const prompts *p;
    pthread_barrier_t *start;
    int admitted;       /* sub-calls this thread had admitted */
    int last_rc;
} spender;

static void *spender_main(void *arg)
{
    spender *s = arg;
    pthread_barrier_wait(s->start);
    for (int i = 0;; i++) {
        s->last_rc = sub_batch(s->c, s->p, i % N_PROMPTS, 1);
        if (s->last_rc != CALLS_OK)
            break;
        s->admitted++;
    }
    return NULL;
}

/* Two children, each with a share of all of it, spend from two threads at
 * once until the run's limit refuses: never more than the limit in total. */
static void test_tree_limit_two_threads(void **state)
{
    fixture *f = *state;
    enum { LIMIT = 60 };
    calls *root = open_with_limits(f, subcall_limit(LIMIT));
    prompts p;
    prompts_seed(f, root, &p);
    calls *kids[2] = {calls_child(root, 1.0), calls_child(root, 1.0)};
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    spender sp[2];
    pthread_t th[2];
    for (int t = 0; t < 2; t++) {
        sp[t] = (spender){.c = kids[t], .p = &p, .start = &start};
        assert_int_equal(pthread_create(&th[t], NULL, spender_main, &sp[t]), 0);
    }
    for (int t = 0; t < 2; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&start);
    assert_int_equal(sp[0].last_rc, CALLS_BUDGET);
    assert_int_equal(sp[1].last_rc, CALLS_BUDGET);
    assert_int_equal(sp[0].admitted + sp[1].admitted, LIMIT);
    assert_int_equal(snapshot(root).subcalls, LIMIT);
    assert_int_equal(snapshot(kids[0]).subcalls + snapshot(kids[1]).subcalls, LIMIT);
    /* The run's limit: the root is exhausted, every handle says so, and any
     * later call anywhere in the tree is refused. */
    assert_int_equal(calls_exhausted(root), BUDGET_SUBCALLS);
    for (int t = 0; t < 2; t++) {
        assert_int_equal(calls_exhausted(kids[t]), BUDGET_SUBCALLS);
        assert_true(calls_budget_limit(kids[t]) == LIMIT);
        assert_non_null(strstr(calls_budget_message(kids[t]), "the whole run's limit"));
    }
    assert_int_equal(sub_batch(root, &p, 0, 1), CALLS_BUDGET);
    calls *late = calls_child(root, 1.0);
    assert_int_equal(snapshot(late).limits.max_subcalls, 0);
    assert_int_equal(sub_batch(late, &p, 0, 1), CALLS_BUDGET);
    calls_reply r;
    assert_int_equal(calls_root(late, &p.req[0], 0, &r), CALLS_BUDGET);
    calls_free(late);
    calls_free(kids[0]);
    calls_free(kids[1]);
    calls_free(root);
}

/* Every level is checked before any counts: a batch refused higher up leaves
 * nothing counted below it (nor above it). */
static void test_refusal_above_counts_nothing(void **state)
{
    fixture *f = *state;
    calls *root = open_with_limits(f, subcall_limit(10));
    prompts p;
    prompts_seed(f, root, &p);
    calls *child = calls_child(root, 1.0);
    assert_int_equal(sub_batch(root, &p, 0, 8), CALLS_OK);
    /* The child's share (10) admits 3; the run (2 left) refuses. */
    assert_int_equal(sub_batch(child, &p, 8, 3), CALLS_BUDGET);
    budget cs = snapshot(child);
    assert_int_equal(cs.subcalls, 0);
    assert_int_equal(cs.root_calls, 0);
    assert_int_equal(cs.exhausted, BUDGET_NONE);
    assert_int_equal(snapshot(root).subcalls, 8);
    assert_int_equal(calls_exhausted(root), BUDGET_SUBCALLS);
    assert_int_equal(calls_exhausted(child), BUDGET_SUBCALLS);
    assert_true(calls_budget_limit(child) == 10);
    assert_string_equal(calls_budget_message(child),
                        "max_subcalls: a batch of 3 sub-calls would go past the whole run's limit: "
                        "8 of the whole run's limit of 10 sub-calls used");
    calls_free(child);
    calls_free(root);

    /* Three levels: the middle one's share refuses a grandchild's batch; the
     * grandchild and the run count nothing, and the run goes on. */
    root = open_with_limits(f, subcall_limit(20));
    calls *mid = calls_child(root, 0.5);        /* 10 */
    calls *leaf = calls_child(mid, 1.0);        /* 10 */
    assert_int_equal(sub_batch(mid, &p, 0, 8), CALLS_OK);
    assert_int_equal(sub_batch(leaf, &p, 8, 3), CALLS_BUDGET);
    assert_int_equal(snapshot(leaf).subcalls, 0);
    assert_int_equal(snapshot(mid).subcalls, 8);
    assert_int_equal(snapshot(root).subcalls, 8);
    assert_int_equal(calls_exhausted(leaf), BUDGET_SUBCALLS);
    assert_string_equal(calls_budget_message(leaf),
                        "max_subcalls: a batch of 3 sub-calls would go past the parent RLM's share: "
                        "8 of the parent RLM's share of 10 sub-calls used");
    assert_int_equal(calls_exhausted(mid), BUDGET_SUBCALLS);
    assert_string_equal(calls_budget_message(mid),
                        "max_subcalls: 8 of this child's share of 10 sub-calls used");
    assert_int_equal(calls_exhausted(root), BUDGET_NONE);
    assert_int_equal(sub_batch(root, &p, 11, 12), CALLS_OK);
    calls_free(leaf);
    calls_free(mid);
    calls_free(root);

    /* Time is the run's: past its deadline a child is refused and the root
     * reports it too. */
    budget_limits l = budget_no_limits();
    l.max_time = 0;
    root = open_with_limits(f, l);
    child = calls_child(root, 0.5);
    assert_int_equal(sub_batch(child, &p, 0, 1), CALLS_BUDGET);
    assert_int_equal(calls_exhausted(child), BUDGET_TIME);
    assert_int_equal(calls_exhausted(root), BUDGET_TIME);
    assert_true(calls_budget_limit(child) == 0);
    assert_non_null(strstr(calls_budget_message(child), "max_time:"));
    calls_free(child);
    calls_free(root);
}

/* A child's root requests are sub-calls of the run, root requests of the child. */
static void test_child_root_requests_are_run_subcalls(void **state)
{
    fixture *f = *state;
    calls *root = open_with_limits(f, subcall_limit(3));
    lm_message m = {.role = "user", .content = "child question"};
    lm_request req = request(&m, "root-model");
    seed_cache(f, root, &req, 0, "child answer");
    calls *child = calls_child(root, 1.0);
    calls_reply r;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(calls_root(child, &req, 0, &r), CALLS_OK);
        assert_string_equal(r.r.content, "child answer");
        calls_reply_clear(&r);
    }
    budget cs = snapshot(child), rs = snapshot(root);
    assert_int_equal(cs.root_calls, 3);
    assert_int_equal(cs.subcalls, 0);           /* its own share of sub-calls is untouched */
    assert_int_equal(rs.subcalls, 3);
    assert_int_equal(rs.root_calls, 0);
    /* The run's sub-calls are spent: the next turn of the child is refused... */
    assert_int_equal(calls_root(child, &req, 0, &r), CALLS_BUDGET);
    assert_int_equal(calls_exhausted(root), BUDGET_SUBCALLS);
    assert_int_equal(calls_exhausted(child), BUDGET_SUBCALLS);
    /* ...and its last best-answer request is made and charged to the run. */
    assert_int_equal(calls_root(child, &req, 1, &r), CALLS_OK);
    calls_reply_clear(&r);
    assert_int_equal(snapshot(root).subcalls, 4);
    assert_int_equal(snapshot(child).root_calls, 4);
    calls_free(child);
    calls_free(root);
}

/* Writes a replay file answering `text` to model as a sub-call with usage. */
static void replay_line(FILE *out, calls *keyer, const char *model, const char *text)
{
    lm_message m = {.role = "user", .content = text};
    lm_request req = request(&m, model);
    char key[CACHE_KEY_LEN];
    assert_int_equal(calls_request_key(keyer, &req, 1, key), 0);
    fprintf(out,
            "{\"key\": \"%s\", \"response\": {\"content\": \"r\", \"finish_reason\": \"stop\","
            " \"prompt_tokens\": 1000, \"completion_tokens\": 500}}\n",
            key);
}

static double sub_cost(calls *c, const char *model, const char *text)
{
    lm_message m = {.role = "user", .content = text};
    lm_request req = request(&m, model);
    calls_reply r;
    assert_int_equal(calls_sub(c, &req, 1, &r), CALLS_OK);
    double cost = r.cost_usd;
    calls_reply_clear(&r);
    return cost;
}

/* What children spend is in the cost of every ancestor; the usage table is
 * the whole tree's from any handle. */
static void test_child_cost_and_usage_reach_the_root(void **state)
{
    fixture *f = *state;
    calls_options o = base_options(f);
    calls *keyer;
    char err[256];
    assert_int_equal(calls_new(&o, &keyer, err, sizeof err), 0);
    FILE *rf = fopen(f->replay, "w");
    assert_non_null(rf);
    replay_line(rf, keyer, "sub-model", "a");
    replay_line(rf, keyer, "mystery-model", "b");
    fclose(rf);
    calls_free(keyer);

    o.replay_path = f->replay;
    calls *root;
    assert_int_equal(calls_new(&o, &root, err, sizeof err), 0);
    calls *child = calls_child(root, 1.0);
    calls *grandchild = calls_child(child, 0.5);
    /* 1000 x 100 + 500 x 100 per million: $0.15 a call. */
    assert_true(fabs(sub_cost(child, "sub-model", "a") - 0.15) < 1e-12);
    assert_true(fabs(sub_cost(child, "sub-model", "a") - 0.15) < 1e-12);
    assert_true(fabs(sub_cost(grandchild, "sub-model", "a") - 0.15) < 1e-12);
    assert_true(fabs(sub_cost(root, "sub-model", "a") - 0.15) < 1e-12);
    assert_true(fabs(calls_cost(grandchild) - 0.15) < 1e-12);
    assert_true(fabs(calls_cost(child) - 0.45) < 1e-12);
    assert_true(fabs(calls_cost(root) - 0.60) < 1e-12);
    assert_int_equal(snapshot(root).tokens, 6000);
    assert_int_equal(snapshot(child).tokens, 4500);
    for (calls *h = grandchild; h; h = h == grandchild ? root : NULL) {
        json_t *u = calls_usage_json(h);
        json_t *sm = json_object_get(u, "sub-model");
        assert_int_equal(json_integer_value(json_object_get(sm, "calls")), 4);
        assert_int_equal(json_integer_value(json_object_get(sm, "prompt_tokens")), 4000);
        assert_true(fabs(json_real_value(json_object_get(sm, "cost_usd")) - 0.60) < 1e-12);
        json_decref(u);
    }
    /* An unknown price below makes the cost unknown up the path, not beside it. */
    assert_true(sub_cost(grandchild, "mystery-model", "b") < 0);
    assert_true(calls_cost(grandchild) < 0);
    assert_true(calls_cost(child) < 0);
    assert_true(calls_cost(root) < 0);
    calls *sibling = calls_child(root, 0.5);
    assert_true(calls_cost(sibling) == 0);
    calls_free(sibling);
    calls_free(grandchild);
    calls_free(child);
    calls_free(root);
}

/* ---- children on threads against the fake server ------------------------ */

/* Starts fakelm with script and waits for its port (the child gets SIGTERM
 * if this process dies; teardown stops it otherwise). */
static void server_start(fixture *f, const char *script)
{
    char script_path[128], port_path[128], log_path[128];
    snprintf(script_path, sizeof script_path, "%s/script.json", f->dir);
    snprintf(port_path, sizeof port_path, "%s/port", f->dir);
    snprintf(log_path, sizeof log_path, "%s/fakelm.stderr", f->dir);
    FILE *s = fopen(script_path, "w");
    assert_non_null(s);
    fputs(script, s);
    fclose(s);
    const char *argv[] = {FAKELM, "--script", script_path, "--port", "0", "--port-file", port_path, NULL};
    f->server_pid = fakelm_spawn(argv, port_path, log_path, &f->server_port);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    return buf_append(userdata, data, size * nmemb) == 0 ? size * nmemb : 0;
}

/* One of fakelm's /counters. */
static long server_counter(const fixture *f, const char *name)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/counters", f->server_port);
    buf body;
    buf_init(&body, 1 << 20);
    CURL *easy = curl_easy_init();
    assert_non_null(easy);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    assert_int_equal(curl_easy_perform(easy), CURLE_OK);
    curl_easy_cleanup(easy);
    json_t *root = json_loadb(body.data, body.len, 0, NULL);
    buf_free(&body);
    json_t *v = json_object_get(root, name);
    assert_true(json_is_integer(v));
    long n = (long)json_integer_value(v);
    json_decref(root);
    return n;
}

/* The run's one usage ledger: per model, calls and errors counted and the
 * tokens each reply reported summed, batch after batch, against the fake
 * server (the dispatcher keeps none of its own). */
static void test_usage_per_model(void **state)
{
    fixture *f = *state;
    server_start(f, "{\"rules\": [{\"model\": \"^beta$\", \"match\": \"fail\", \"status\": 400,"
                    " \"reply\": \"bad\"}, {\"match\": \"\", \"reply\": \"twelve chars\"}]}");
    char base[128], err[256] = "";
    snprintf(base, sizeof base, "http://127.0.0.1:%d/v1", f->server_port);
    lm_options lo = {.base_url = base, .concurrency = 4, .timeout = 30, .max_retries = -1};
    lm *m = lm_new(&lo, err, sizeof err);
    if (!m)
        fail_msg("lm_new: %s", err);
    calls_options o = base_options(f);
    o.root_base_url = base;
    o.root_lm = m;
    calls *c;
    assert_int_equal(calls_new(&o, &c, err, sizeof err), 0);
    lm_message msgs[5] = {{.role = "user", .content = "one"}, {.role = "user", .content = "two two two"},
                          {.role = "user", .content = "three"}, {.role = "user", .content = "four"},
                          {.role = "user", .content = "fail"}};
    lm_request reqs[5] = {request(&msgs[0], "alpha"), request(&msgs[1], "alpha"), request(&msgs[2], "alpha"),
                          request(&msgs[3], "beta"), request(&msgs[4], "beta")};
    calls_reply out[5];
    assert_int_equal(calls_sub(c, reqs, 5, out), CALLS_OK);
    long alpha_prompt = 0, alpha_completion = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(out[i].r.error, LM_OK);
        assert_true(out[i].r.prompt_tokens > 0 && out[i].r.completion_tokens > 0);
        alpha_prompt += out[i].r.prompt_tokens;
        alpha_completion += out[i].r.completion_tokens;
    }
    assert_int_equal(out[3].r.error, LM_OK);
    assert_int_equal(out[4].r.error, LM_ERR_HTTP);

    json_t *usage = calls_usage_json(c);
    json_t *alpha = json_object_get(usage, "alpha");
    json_t *beta = json_object_get(usage, "beta");
    assert_int_equal(json_object_size(usage), 2);
    assert_int_equal(json_integer_value(json_object_get(alpha, "calls")), 3);
    assert_int_equal(json_integer_value(json_object_get(alpha, "errors")), 0);
    assert_int_equal(json_integer_value(json_object_get(alpha, "prompt_tokens")), alpha_prompt);
    assert_int_equal(json_integer_value(json_object_get(alpha, "completion_tokens")), alpha_completion);
    assert_int_equal(json_integer_value(json_object_get(beta, "calls")), 2);
    assert_int_equal(json_integer_value(json_object_get(beta, "errors")), 1);
    assert_int_equal(json_integer_value(json_object_get(beta, "prompt_tokens")), out[3].r.prompt_tokens);
    json_decref(usage);
    for (int i = 0; i < 5; i++)
        calls_reply_clear(&out[i]);

    /* A second batch adds to the first. */
    assert_int_equal(calls_sub(c, reqs, 1, out), CALLS_OK);
    calls_reply_clear(&out[0]);
    usage = calls_usage_json(c);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(usage, "alpha"), "calls")), 4);
    json_decref(usage);
    calls_free(c);
    lm_free(m);
}

enum { N_THREADS = 4, N_BATCHES = 3, BATCH = 2, LATENCY_MS = 300 };

typedef struct worker {
    calls *c;
    int id;
    pthread_barrier_t *start;
    int failures;       /* batches not CALLS_OK, replies not the expected text */
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    pthread_barrier_wait(w->start);
    for (int b = 0; b < N_BATCHES; b++) {
        char text[BATCH][32];
        lm_message msg[BATCH];
        lm_request req[BATCH];
        calls_reply out[BATCH];
        for (int i = 0; i < BATCH; i++) {
            snprintf(text[i], sizeof text[i], "q%d", (w->id * N_BATCHES + b) * BATCH + i);
            msg[i] = (lm_message){.role = "user", .content = text[i]};
            req[i] = request(&msg[i], "sub-model");
        }
        if (calls_sub(w->c, req, BATCH, out) != CALLS_OK) {
            w->failures++;
            continue;
        }
        for (int i = 0; i < BATCH; i++) {
            char want[32];
            snprintf(want, sizeof want, "a%s", text[i] + 1);
            if (out[i].r.error != LM_OK || strcmp(out[i].r.content, want) != 0)
                w->failures++;
            calls_reply_clear(&out[i]);
        }
    }
    return NULL;
}

/* Children on their own threads, each making batches through its own handle
 * against the real dispatcher: their requests are in flight together (the
 * lock is not held while replies are awaited), every record line is whole,
 * and the run's cost and usage add up. */
static void test_children_calls_overlap(void **state)
{
    fixture *f = *state;
    char script[256];
    snprintf(script, sizeof script,
             "{\"latency_ms\": %d, \"rules\": [{\"match\": \"^q(\\\\d+)$\", \"reply\": \"a$1\"}]}",
             LATENCY_MS);
    server_start(f, script);
    char base[128];
    snprintf(base, sizeof base, "http://127.0.0.1:%d/v1", f->server_port);
    lm_options lo = {.base_url = base, .concurrency = 64, .timeout = 30, .connect_timeout = 5,
                     .max_retries = -1};
    char err[256] = "";
    lm *m = lm_new(&lo, err, sizeof err);
    if (!m)
        fail_msg("lm_new: %s", err);
    calls_options o = base_options(f);
    o.root_base_url = base;
    o.root_lm = m;
    o.record_path = f->record;
    o.limits.max_subcalls = 1000;
    calls *root;
    assert_int_equal(calls_new(&o, &root, err, sizeof err), 0);

    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N_THREADS);
    worker w[N_THREADS];
    pthread_t th[N_THREADS];
    double t0 = clock_now();
    for (int t = 0; t < N_THREADS; t++) {
        w[t] = (worker){.c = calls_child(root, 1.0 / N_THREADS), .id = t, .start = &start};
        assert_non_null(w[t].c);
        assert_int_equal(pthread_create(&th[t], NULL, worker_main, &w[t]), 0);
    }
    for (int t = 0; t < N_THREADS; t++)
        pthread_join(th[t], NULL);
    double wall = clock_now() - t0;
    pthread_barrier_destroy(&start);
    double serial = N_THREADS * N_BATCHES * LATENCY_MS / 1000.0;
    long peak = server_counter(f, "max_in_flight");
    print_message("%d threads x %d batches of %d at %d ms: %.2f s wall (serial %.2f s), "
                  "%ld in flight at most\n",
                  N_THREADS, N_BATCHES, BATCH, LATENCY_MS, wall, serial, peak);
    double child_cost = 0;
    for (int t = 0; t < N_THREADS; t++) {
        assert_int_equal(w[t].failures, 0);
        budget s = snapshot(w[t].c);
        assert_int_equal(s.subcalls, N_BATCHES * BATCH);
        double cc = calls_cost(w[t].c);
        assert_true(cc > 0);
        child_cost += cc;
    }
    /* Held across the wait, the lock would keep one batch (BATCH requests) in
     * flight at a time; the wall-time bound is loose on purpose (a loaded
     * machine) but far below the serial sum. */
    assert_true(peak > BATCH);
    assert_true(wall < 0.6 * serial);
    assert_int_equal(server_counter(f, "requests"), N_THREADS * N_BATCHES * BATCH);
    assert_int_equal(snapshot(root).subcalls, N_THREADS * N_BATCHES * BATCH);
    assert_true(fabs(calls_cost(root) - child_cost) < 1e-12);
    json_t *u = calls_usage_json(root);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(u, "sub-model"), "calls")),
                     N_THREADS * N_BATCHES * BATCH);
    json_decref(u);
    for (int t = 0; t < N_THREADS; t++)
        calls_free(w[t].c);
    calls_free(root);
    lm_free(m);

    /* Every line of the record file is one whole request and its reply. */
    FILE *rf = fopen(f->record, "r");
    assert_non_null(rf);
    char line[8192];
    int lines = 0;
    while (fgets(line, sizeof line, rf)) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        if (!j)
            fail_msg("record line %d is not JSON: %s", lines + 1, jerr.text);
        const char *q = json_string_value(
            json_object_get(json_array_get(json_object_get(json_object_get(j, "request"), "messages"), 0),
                            "content"));
        const char *a = json_string_value(json_object_get(json_object_get(j, "response"), "content"));
        assert_non_null(q);
        assert_non_null(a);
        assert_string_equal(a + 1, q + 1);
        json_decref(j);
        lines++;
    }
    fclose(rf);
    assert_int_equal(lines, N_THREADS * N_BATCHES * BATCH);
}

/* ---- identical sub-calls sent once ---------------------------------------- */

/* A dispatcher and a deduplicating handle against a fresh fakelm. */
static calls *dedupe_start(fixture *f, const char *script, lm **m)
{
    server_start(f, script);
    char err[256] = "";
    /* calls_new borrows the URL: it lives in the fixture. */
    snprintf(f->base, sizeof f->base, "http://127.0.0.1:%d/v1", f->server_port);
    lm_options lo = {.base_url = f->base, .concurrency = 16, .timeout = 30, .max_retries = -1};
    *m = lm_new(&lo, err, sizeof err);
    if (!*m)
        fail_msg("lm_new: %s", err);
    calls_options o = base_options(f);
    o.root_base_url = f->base;
    o.root_lm = *m;
    o.dedupe = 1;
    calls *c;
    assert_int_equal(calls_new(&o, &c, err, sizeof err), 0);
    return c;
}

static long usage_field(calls *c, const char *model, const char *key)
{
    json_t *u = calls_usage_json(c);
    long v = (long)json_integer_value(json_object_get(json_object_get(u, model), key));
    json_decref(u);
    return v;
}

/* In one batch and across batches: each distinct prompt is sent once, every
 * prompt gets its own reply, the copies cost nothing and are counted; the
 * same prompt to another model is another request; after
 * calls_forget_answers (an unrelated run) it is sent again. */
static void test_dedupe_batches_and_models(void **state)
{
    fixture *f = *state;
    lm *m;
    calls *c = dedupe_start(f, "{\"rules\": [{\"match\": \"^q(\\\\d+)$\", \"reply\": \"a$1\"}]}", &m);
    const char *texts[10] = {"q1", "q2", "q1", "q3", "q1", "q2", "q4", "q3", "q1", "q4"};
    lm_message msgs[10];
    lm_request reqs[10];
    calls_reply out[10];
    for (int i = 0; i < 10; i++) {
        msgs[i] = (lm_message){.role = "user", .content = texts[i]};
        reqs[i] = request(&msgs[i], "sub-model");
    }
    if (calls_sub(c, reqs, 10, out) != CALLS_OK)
        fail_msg("calls_sub: %s", calls_errmsg(c));
    int copies = 0;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(out[i].r.error, LM_OK);
        assert_int_equal(out[i].r.content[0], 'a');
        assert_string_equal(out[i].r.content + 1, texts[i] + 1);
        if (out[i].deduplicated) {
            copies++;
            assert_true(out[i].cost_usd == 0);
            assert_int_equal(out[i].r.prompt_tokens, -1);
        } else {
            assert_true(out[i].cost_usd > 0);
        }
        calls_reply_clear(&out[i]);
    }
    assert_int_equal(copies, 6);
    assert_int_equal(server_counter(f, "requests"), 4);
    assert_int_equal(usage_field(c, "sub-model", "calls"), 10);
    assert_int_equal(usage_field(c, "sub-model", "deduplicated"), 6);
    budget b = snapshot(c);
    assert_int_equal(b.subcalls, 10);   /* the program asked for ten */

    /* The next batch repeats two and adds one; another model is another request. */
    lm_request more[3] = {request(&msgs[0], "sub-model"), request(&msgs[3], "sub-model"),
                          request(&msgs[0], "other-model")};
    assert_int_equal(calls_sub(c, more, 3, out), CALLS_OK);
    assert_true(out[0].deduplicated && out[1].deduplicated && !out[2].deduplicated);
    assert_string_equal(out[2].r.content, "a1");
    for (int i = 0; i < 3; i++)
        calls_reply_clear(&out[i]);
    assert_int_equal(server_counter(f, "requests"), 5);

    calls_forget_answers(c);
    assert_int_equal(calls_sub(c, reqs, 1, out), CALLS_OK);
    assert_false(out[0].deduplicated);
    calls_reply_clear(&out[0]);
    assert_int_equal(server_counter(f, "requests"), 6);
    calls_free(c);
    lm_free(m);
}

/* A failed call is not an answer: the identical request of the same batch is
 * sent again (here it succeeds), and the success is what later batches get;
 * a prompt that always fails is sent every time. */
static void test_dedupe_failures_are_not_shared(void **state)
{
    fixture *f = *state;
    lm *m;
    calls *c = dedupe_start(f, "{\"rules\": [{\"match\": \"^flaky$\", \"times\": 1, \"status\": 400,"
                               " \"reply\": \"no\"}, {\"match\": \"^flaky$\", \"reply\": \"yes\"},"
                               " {\"match\": \"^broken$\", \"status\": 400, \"reply\": \"never\"}]}", &m);
    lm_message flaky = {.role = "user", .content = "flaky"}, broken = {.role = "user", .content = "broken"};
    lm_request reqs[4] = {request(&flaky, "sub-model"), request(&flaky, "sub-model"),
                          request(&broken, "sub-model"), request(&broken, "sub-model")};
    calls_reply out[4];
    assert_int_equal(calls_sub(c, reqs, 4, out), CALLS_OK);
    assert_int_equal(out[0].r.error, LM_ERR_HTTP);
    assert_int_equal(out[1].r.error, LM_OK);
    assert_string_equal(out[1].r.content, "yes");
    assert_false(out[1].deduplicated);
    assert_int_equal(out[2].r.error, LM_ERR_HTTP);
    assert_int_equal(out[3].r.error, LM_ERR_HTTP);
    assert_false(out[2].deduplicated || out[3].deduplicated);
    for (int i = 0; i < 4; i++)
        calls_reply_clear(&out[i]);
    assert_int_equal(server_counter(f, "requests"), 4);
    assert_int_equal(calls_sub(c, reqs, 1, out), CALLS_OK);
    assert_true(out[0].deduplicated);
    assert_string_equal(out[0].r.content, "yes");
    calls_reply_clear(&out[0]);
    assert_int_equal(server_counter(f, "requests"), 4);
    calls_free(c);
    lm_free(m);
}

typedef struct same_worker {
    calls *c;
    pthread_barrier_t *start;
    calls_reply out;
    int rc;
} same_worker;

static void *same_worker_main(void *arg)
{
    same_worker *w = arg;
    lm_message msg = {.role = "user", .content = "q7"};
    lm_request req = request(&msg, "sub-model");
    pthread_barrier_wait(w->start);
    w->rc = calls_sub(w->c, &req, 1, &w->out);
    return NULL;
}

/* Two RLMs on two threads ask the same thing while it is in flight: one
 * request goes out, the other waits for its reply. */
static void test_dedupe_in_flight_across_threads(void **state)
{
    fixture *f = *state;
    lm *m;
    calls *root = dedupe_start(f, "{\"latency_ms\": 300, \"rules\": [{\"match\": \"^q(\\\\d+)$\","
                                  " \"reply\": \"a$1\"}]}", &m);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    same_worker w[2];
    pthread_t th[2];
    for (int t = 0; t < 2; t++) {
        w[t] = (same_worker){.c = calls_child(root, 0.5), .start = &start};
        assert_int_equal(pthread_create(&th[t], NULL, same_worker_main, &w[t]), 0);
    }
    for (int t = 0; t < 2; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&start);
    for (int t = 0; t < 2; t++) {
        assert_int_equal(w[t].rc, CALLS_OK);
        assert_string_equal(w[t].out.r.content, "a7");
    }
    assert_int_equal(w[0].out.deduplicated + w[1].out.deduplicated, 1);
    assert_int_equal(server_counter(f, "requests"), 1);
    for (int t = 0; t < 2; t++) {
        calls_reply_clear(&w[t].out);
        calls_free(w[t].c);
    }
    calls_free(root);
    lm_free(m);
}

/* Off, every request is sent. */
static void test_dedupe_off(void **state)
{
    fixture *f = *state;
    server_start(f, "{\"rules\": [{\"match\": \"\", \"reply\": \"same\"}]}");
    char base[128], err[256] = "";
    snprintf(base, sizeof base, "http://127.0.0.1:%d/v1", f->server_port);
    lm_options lo = {.base_url = base, .concurrency = 4, .timeout = 30, .max_retries = -1};
    lm *m = lm_new(&lo, err, sizeof err);
    assert_non_null(m);
    calls_options o = base_options(f);
    o.root_base_url = base;
    o.root_lm = m;
    calls *c;
    assert_int_equal(calls_new(&o, &c, err, sizeof err), 0);
    lm_message msg = {.role = "user", .content = "again"};
    lm_request reqs[3] = {request(&msg, "sub-model"), request(&msg, "sub-model"), request(&msg, "sub-model")};
    calls_reply out[3];
    assert_int_equal(calls_sub(c, reqs, 3, out), CALLS_OK);
    for (int i = 0; i < 3; i++) {
        assert_false(out[i].deduplicated);
        calls_reply_clear(&out[i]);
    }
    assert_int_equal(server_counter(f, "requests"), 3);
    calls_free(c);
    lm_free(m);
}

/* A root request whose provider said it caches (the last reply reported
 * cache reads) has its resent prefix estimated at the cached price: a cost
 * budget the full price would refuse admits it. */
static void test_root_estimate_prices_the_cached_prefix(void **state)
{
    fixture *f = *state;
    lm *m;
    calls *probe = dedupe_start(f, "{\"rules\": [{\"match\": \"\", \"reply\": \"ok\"}]}", &m);
    calls_free(probe);
    FILE *pf = fopen(f->prices, "w");
    fputs("{\"root-model\": {\"input\": 1000, \"cached_input\": 100, \"output\": 1000}}", pf);
    fclose(pf);
    pricing *prices = pricing_new();
    char err[256];
    assert_int_equal(pricing_load_file(prices, f->prices, err, sizeof err), 0);
    char *system = malloc(6001);
    assert_non_null(system);
    memset(system, 's', 6000);
    system[6000] = '\0';
    lm_message msgs[2] = {{.role = "system", .content = system}, {.role = "user", .content = "q"}};
    lm_request req = {.model = "root-model", .messages = msgs, .n_messages = 2};
    /* Pass 0 measures two requests; pass 1 (another prefix, so the same
     * costs) allows that plus $1 and asks a third time. */
    double spent_two = 0;
    for (int pass = 0; pass < 2; pass++) {
        system[0] = (char)('a' + pass);
        calls_options o = base_options(f);
        o.root_base_url = f->base;
        o.root_lm = m;
        o.prices = prices;
        if (pass == 1)
            o.limits.max_cost = spent_two + 1.0;
        calls *c;
        assert_int_equal(calls_new(&o, &c, err, sizeof err), 0);
        calls_reply out;
        for (int k = 0; k < 2 + pass; k++) {
            assert_int_equal(calls_root(c, &req, 0, &out), CALLS_OK);
            assert_int_equal(out.r.error, LM_OK);
            if (k == 1)
                assert_true(out.r.cached_tokens > 0);   /* the server cached the prefix */
            calls_reply_clear(&out);
        }
        /* The third request's input is about 1,700 estimated tokens: $1.7 at
         * the full price, about $0.37 with its 1,500-token prefix cached. */
        if (pass == 0)
            spent_two = calls_cost(c);
        else
            assert_int_equal(calls_exhausted(c), BUDGET_NONE);
        calls_free(c);
    }
    free(system);
    pricing_free(prices);
    lm_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keys_differ_by_what_changes_replies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_hit_record_and_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_without_cache_goes_to_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_replay_and_record_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_budget_refuses_whole_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_cost_with_unknown_price, setup, teardown),
        cmocka_unit_test_setup_teardown(test_child_share_of_subcalls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_share_of_what_is_left, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tree_limit_two_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusal_above_counts_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_child_root_requests_are_run_subcalls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_child_cost_and_usage_reach_the_root, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_per_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_children_calls_overlap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedupe_batches_and_models, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedupe_failures_are_not_shared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedupe_in_flight_across_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedupe_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_root_estimate_prices_the_cached_prefix, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
