/* Unit tests for calls, the path every model call takes, offline: cache hits
 * (no request, cost 0), recording them, replaying a record file (same
 * replies, prices from usage, a missing request named), budget refusals of
 * whole batches, and a dollar budget that cannot be enforced. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "calls.h"
#include "pricing.h"

typedef struct fixture {
    char dir[64];
    char record[128], replay[128], prices[128];
    pricing *prices_table;
    cache *cache;
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
    cache_close(f->cache);
    pricing_free(f->prices_table);
    char cmd[256];
    const char *names[] = {"record.jsonl", "replay.jsonl", "prices.json", "cache/cache.sqlite",
                           "cache/cache.sqlite-wal", "cache/cache.sqlite-shm"};
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
    lm_message m1 = {"user", "hello"}, m2 = {"user", "hello!"};
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
    lm_message m = {"user", "what is 6 x 7?"};
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
    lm_message other = {"user", "not cached"};
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
    lm_message m[3] = {{"user", "a"}, {"user", "b"}, {"user", "c"}};
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
    lm_message m[4] = {{"user", "p0"}, {"user", "p1"}, {"user", "p2"}, {"user", "p3"}};
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
    assert_string_equal(calls_budget_message(c), "max_subcalls: 2 sub-calls made of 3");
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
    lm_message m = {"user", "x"};
    lm_request req = request(&m, "mystery-model");
    calls_reply out;
    assert_int_equal(calls_sub(c, &req, 1, &out), CALLS_REFUSED);
    assert_non_null(strstr(calls_errmsg(c), "mystery-model"));
    assert_int_equal(calls_exhausted(c), BUDGET_NONE);
    calls_free(c);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
