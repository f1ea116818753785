/* Pools (rlm_pool): handles made from one pool share its dispatcher (the
 * bound on requests in flight holds for all of them together), its zygote
 * and its named inputs (loaded once, forked into every run that uses them);
 * a handle cannot ask for another endpoint; rlm_cancel works from another
 * thread; rlm_describe says what the root would be told. Real runs against
 * the fake model server and the real sandbox. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <ftw.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rlm.h"
#include "util.h"

#include "fakelm_spawn.h"

#define FAKELM RLM_BUILD_DIR "/fakelm"

typedef struct fixture {
    char dir[64];
    char base_url[128];
    pid_t server;
    int port;
    rlm_pool *pool;
} fixture;

/* The fake root model: each question names its test, the reply is code. */
static const char script[] =
    "{\"rules\": ["
    " {\"match\": \"^sub ping$\", \"reply\": \"pong\", \"latency_ms\": 300},"
    " {\"match\": \"^sub slow$\", \"reply\": \"late\", \"latency_ms\": 60000},"
    " {\"match\": \"pooltest-direct\", \"reply\": \"direct ok\"},"
    " {\"match\": \"pooltest-batch\", \"reply\": \"```repl\\nr = llm_query_batched(['sub ping'] * 4)\\n"
    "FINAL(str(len(r)))\\n```\"},"
    " {\"match\": \"pooltest-named\", \"reply\": \"```repl\\nFINAL(context[:8])\\n```\"},"
    " {\"match\": \"pooltest-both\", \"reply\": \"```repl\\nFINAL(context[:8] + '|' + context_1)\\n```\"},"
    " {\"match\": \"pooltest-slow\", \"reply\": \"```repl\\nFINAL(llm_query('sub slow'))\\n```\"},"
    " {\"match\": \"pooltest-conv\", \"reply\": \"```repl\\nFINAL('ok')\\n```\"}"
    "]}";

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/rlm-test-pool-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    char path[256], port_file[256], log[256];
    snprintf(path, sizeof path, "%s/script.json", f->dir);
    write_file(path, script);
    snprintf(port_file, sizeof port_file, "%s/port", f->dir);
    snprintf(log, sizeof log, "%s/fakelm.log", f->dir);
    const char *argv[] = {FAKELM, "--script", path, "--port", "0", "--port-file", port_file, NULL};
    f->server = fakelm_spawn(argv, port_file, log, &f->port);
    snprintf(f->base_url, sizeof f->base_url, "http://127.0.0.1:%d/v1", f->port);
    /* Nothing of the user's: prices, run log, cache. */
    char xdg[256];
    snprintf(xdg, sizeof xdg, "%s/xdg", f->dir);
    setenv("XDG_CONFIG_HOME", xdg, 1);
    setenv("XDG_DATA_HOME", xdg, 1);
    setenv("XDG_CACHE_HOME", xdg, 1);
    *state = f;
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rlm_pool_free(f->pool);
    if (f->server > 0) {
        kill(f->server, SIGTERM);
        waitpid(f->server, NULL, 0);
    }
    nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static rlm_config *base_config(const fixture *f, const char *concurrency)
{
    rlm_config *cfg = rlm_config_new();
    assert_non_null(cfg);
    assert_int_equal(rlm_config_set(cfg, "base_url", f->base_url), RLM_OK);
    assert_int_equal(rlm_config_set(cfg, "model", "root-model"), RLM_OK);
    assert_int_equal(rlm_config_set(cfg, "sub_model", "sub-model"), RLM_OK);
    assert_int_equal(rlm_config_set(cfg, "mode", "rlm"), RLM_OK);
    assert_int_equal(rlm_config_set(cfg, "concurrency", concurrency), RLM_OK);
    return cfg;
}

static rlm_pool *new_pool(fixture *f, const char *concurrency)
{
    rlm_config *cfg = base_config(f, concurrency);
    assert_int_equal(rlm_pool_new(cfg, &f->pool), RLM_OK);
    rlm_config_free(cfg);
    return f->pool;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    return buf_append(userdata, data, size * nmemb) == 0 ? size * nmemb : 0;
}

static long fakelm_counter(const fixture *f, const char *name)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/counters", f->port);
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
    assert_non_null(root);
    long n = (long)json_integer_value(json_object_get(root, name));
    json_decref(root);
    return n;
}

/* One run on its own thread. */
typedef struct run {
    rlm_pool *pool;
    const char *question;
    const char *input;          /* a named input to use, or NULL */
    const char *own_text;       /* an input of the handle's own, or NULL */
    rlm_status status;
    char answer[256];
    char errmsg[512];
    int forked_sandboxes;       /* sandbox_ready events with "forked": true */
    int sandboxes;
    int requests_first;         /* root requests sent before the first sandbox_ready */
} run;

static void on_event(void *userdata, const rlm_event *ev)
{
    run *r = userdata;
    if (strcmp(ev->type, "root_request") == 0 && r->sandboxes == 0)
        r->requests_first++;
    if (strcmp(ev->type, "sandbox_ready") != 0)
        return;
    r->sandboxes++;
    char *json = rlm_event_json(ev);
    if (json && strstr(json, "\"forked\":true"))
        r->forked_sandboxes++;
    rlm_string_free(json);
}

static void *run_thread(void *arg)
{
    run *r = arg;
    rlm *h = NULL;
    r->status = rlm_new_in(r->pool, NULL, &h);
    if (r->status == RLM_OK && r->input)
        r->status = rlm_use_input(h, r->input);
    if (r->status == RLM_OK && r->own_text)
        r->status = rlm_set_context_text(h, r->own_text, strlen(r->own_text));
    if (r->status == RLM_OK) {
        rlm_set_event_callback(h, on_event, r);
        char *answer = NULL;
        r->status = rlm_ask(h, r->question, &answer);
        snprintf(r->answer, sizeof r->answer, "%s", answer ? answer : "");
        rlm_string_free(answer);
    }
    snprintf(r->errmsg, sizeof r->errmsg, "%s", rlm_errmsg(h));
    rlm_free(h);
    return NULL;
}

/* Two runs of one pool with concurrency 2, each sending 4 sub-calls that
 * the server holds 300 ms: never more than 2 requests in flight at once,
 * where two handles on their own would have had 2 each. */
static void test_shared_dispatcher_bound(void **state)
{
    fixture *f = *state;
    rlm_pool *pool = new_pool(f, "2");
    run runs[2] = {{.pool = pool, .question = "pooltest-batch"},
                   {.pool = pool, .question = "pooltest-batch"}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, run_thread, &runs[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(runs[i].status, RLM_OK);
        assert_string_equal(runs[i].answer, "4");
        /* The top sandbox came from the pool's zygote, not a spawn, and
         * was forked while the root model thought: the first request did
         * not wait for it, the first code block did. */
        assert_int_equal(runs[i].forked_sandboxes, 1);
        assert_int_equal(runs[i].requests_first, 1);
    }
    assert_int_equal(fakelm_counter(f, "max_in_flight"), 2);
}

/* A named input is loaded once; runs that use it fork from its zygote and
 * find it as `context`; the handle's own input comes after it, context_1. */
static void test_named_input(void **state)
{
    fixture *f = *state;
    rlm_pool *pool = new_pool(f, "8");
    char path[256];
    snprintf(path, sizeof path, "%s/docs.txt", f->dir);
    write_file(path, "MAGIC-42 and the rest of the document\n");
    assert_int_equal(rlm_pool_add_input(pool, "docs", path), RLM_OK);
    char *list = NULL;
    assert_int_equal(rlm_pool_inputs(pool, &list), RLM_OK);
    assert_non_null(strstr(list, "\"name\":\"docs\""));
    assert_non_null(strstr(list, "\"direct\":true"));
    rlm_string_free(list);

    run runs[3] = {{.pool = pool, .question = "pooltest-named", .input = "docs"},
                   {.pool = pool, .question = "pooltest-named", .input = "docs"},
                   {.pool = pool, .question = "pooltest-both", .input = "docs", .own_text = "OWN-7"}};
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&t[i], NULL, run_thread, &runs[i]), 0);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(runs[i].status, RLM_OK);
        assert_string_equal(runs[i].answer, "MAGIC-42");
        assert_int_equal(runs[i].forked_sandboxes, 1);
        /* Alone, the named input's run forks while the root thinks. */
        assert_int_equal(runs[i].requests_first, 1);
    }
    assert_int_equal(runs[2].status, RLM_OK);
    assert_string_equal(runs[2].answer, "MAGIC-42|OWN-7");

    /* Small enough: auto mode answers it with one call holding the text. */
    rlm_config *cfg = base_config(f, "8");
    rlm_config_set(cfg, "mode", "auto");
    rlm *h = NULL;
    /* The mode is the handle's own: only endpoint and sandbox are the pool's. */
    assert_int_equal(rlm_new_in(pool, cfg, &h), RLM_OK);
    assert_int_equal(rlm_use_input(h, "docs"), RLM_OK);
    char *answer = NULL;
    assert_int_equal(rlm_ask(h, "pooltest-direct", &answer), RLM_OK);
    assert_string_equal(answer, "direct ok");
    assert_non_null(strstr(rlm_report_json(h), "\"how\":\"direct\""));
    rlm_string_free(answer);

    /* What the root is told, without a model. */
    char *d = NULL;
    assert_int_equal(rlm_describe(h, &d), RLM_OK);
    assert_non_null(strstr(d, "str"));
    rlm_string_free(d);
    rlm_free(h);
    rlm_config_free(cfg);
}

static void test_refusals(void **state)
{
    fixture *f = *state;
    rlm_pool *pool = new_pool(f, "8");
    /* A handle cannot point the pool elsewhere. */
    rlm_config *cfg = base_config(f, "8");
    rlm_config_set(cfg, "base_url", "http://127.0.0.1:1/v1");
    rlm *h = NULL;
    assert_int_equal(rlm_new_in(pool, cfg, &h), RLM_ERR_USAGE);
    assert_non_null(strstr(rlm_errmsg(h), "base_url"));
    rlm_free(h);
    rlm_config_free(cfg);

    assert_int_equal(rlm_pool_add_input(pool, "bad name!", "/etc/hostname"), RLM_ERR_USAGE);
    assert_int_equal(rlm_pool_add_input(pool, "stdin", "-"), RLM_ERR_USAGE);
    assert_int_equal(rlm_pool_add_input(pool, "gone", "/nonexistent/file"), RLM_ERR_INPUT);
    assert_non_null(strstr(rlm_pool_errmsg(pool), "/nonexistent/file"));
    char path[256];
    snprintf(path, sizeof path, "%s/docs.txt", f->dir);
    write_file(path, "text\n");
    assert_int_equal(rlm_pool_add_input(pool, "docs", path), RLM_OK);
    assert_int_equal(rlm_pool_add_input(pool, "docs", path), RLM_ERR_USAGE);

    assert_int_equal(rlm_new_in(pool, NULL, &h), RLM_OK);
    assert_int_equal(rlm_use_input(h, "nope"), RLM_ERR_USAGE);
    rlm_free(h);
    /* A handle of its own has no pool to take inputs from. */
    cfg = base_config(f, "8");
    assert_int_equal(rlm_new(cfg, &h), RLM_OK);
    assert_int_equal(rlm_use_input(h, "docs"), RLM_ERR_USAGE);
    rlm_free(h);
    rlm_config_free(cfg);
}

typedef struct canceller {
    rlm *h;
    double after;
} canceller;

static void *cancel_later(void *arg)
{
    canceller *c = arg;
    nanosleep(&(struct timespec){.tv_sec = (time_t)c->after,
                                 .tv_nsec = (long)((c->after - (double)(time_t)c->after) * 1e9)}, NULL);
    rlm_cancel(c->h);
    return NULL;
}

/* Another thread cancels a run waiting on a sub-call: it ends at once,
 * "cancelled", the sub-call abandoned. The pool outlives its creator's
 * reference while the handle holds one. */
/* One run with the log on, through its own config: the log id its report
 * names (0 when none). */
typedef struct logged_run {
    rlm_pool *pool;
    rlm_config *cfg;   /* the pool's endpoint, the log on */
    long long log_id;
    rlm_status status;
} logged_run;

static void *logged_run_thread(void *arg)
{
    logged_run *lr = arg;
    rlm *h = NULL;
    lr->status = rlm_new_in(lr->pool, lr->cfg, &h);
    rlm_config_free(lr->cfg);
    char *answer = NULL;
    if (lr->status == RLM_OK)
        lr->status = rlm_ask(h, "pooltest-conv", &answer);
    rlm_string_free(answer);
    json_t *report = lr->status == RLM_OK ? json_loads(rlm_report_json(h), 0, NULL) : NULL;
    lr->log_id = (long long)json_integer_value(json_object_get(report, "log_id"));
    json_decref(report);
    rlm_free(h);
    return NULL;
}

static long long logged_runs(const char *log_db)
{
    rlm_config *cfg = rlm_config_new();
    assert_int_equal(rlm_config_set(cfg, "log_db", log_db), RLM_OK);
    char *json = NULL;
    assert_int_equal(rlm_logs_list(cfg, NULL, &json), RLM_OK);
    json_t *list = json_loads(json, 0, NULL);
    long long n = (long long)json_array_size(list);
    json_decref(list);
    rlm_string_free(json);
    rlm_config_free(cfg);
    return n;
}

/* The runs of a pool that end together share its connection to the run
 * log: each is recorded once, with an id of its own; a handle with another
 * log_db writes there. */
static void test_runs_share_the_log(void **state)
{
    fixture *f = *state;
    rlm_pool *pool = new_pool(f, "8");
    char shared_db[256], own_db[256];
    snprintf(shared_db, sizeof shared_db, "%s/shared.db", f->dir);
    snprintf(own_db, sizeof own_db, "%s/own.db", f->dir);
    enum { RUNS = 6 };
    logged_run runs[RUNS + 1];
    pthread_t t[RUNS + 1];
    for (int i = 0; i <= RUNS; i++) {
        runs[i] = (logged_run){.pool = pool, .cfg = base_config(f, "8")};
        assert_int_equal(rlm_config_set(runs[i].cfg, "log", "1"), RLM_OK);
        assert_int_equal(rlm_config_set(runs[i].cfg, "log_db", i < RUNS ? shared_db : own_db), RLM_OK);
        assert_int_equal(pthread_create(&t[i], NULL, logged_run_thread, &runs[i]), 0);
    }
    for (int i = 0; i <= RUNS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i <= RUNS; i++) {
        assert_int_equal(runs[i].status, RLM_OK);
        assert_true(runs[i].log_id > 0);
        for (int j = 0; j < i && j < RUNS; j++)
            assert_true(i == RUNS || runs[i].log_id != runs[j].log_id);
    }
    assert_int_equal(logged_runs(shared_db), RUNS);
    assert_int_equal(logged_runs(own_db), 1);
}

static void test_cancel_from_another_thread(void **state)
{
    fixture *f = *state;
    rlm_pool *pool = new_pool(f, "8");
    rlm *h = NULL;
    assert_int_equal(rlm_new_in(pool, NULL, &h), RLM_OK);
    rlm_pool_free(pool);   /* the handle keeps it alive */
    f->pool = NULL;
    canceller c = {.h = h, .after = 1.0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, cancel_later, &c), 0);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    char *answer = NULL;
    assert_int_equal(rlm_ask(h, "pooltest-slow", &answer), RLM_NO_ANSWER);
    clock_gettime(CLOCK_MONOTONIC, &b);
    pthread_join(t, NULL);
    assert_null(answer);
    assert_non_null(strstr(rlm_errmsg(h), "cancelled"));
    /* Well before the sub-call's 60 s. */
    assert_true((double)(b.tv_sec - a.tv_sec) < 20);
    rlm_free(h);
}

/* A conversation is new until it answered a question, in this process or
 * an earlier one (a session). */
static void test_conversation_is_new(void **state)
{
    fixture *f = *state;
    rlm_pool *pool = new_pool(f, "8");
    rlm_config *cfg = base_config(f, "8");
    char db[256];
    snprintf(db, sizeof db, "%s/xdg/sessions.db", f->dir);
    assert_int_equal(rlm_config_set(cfg, "session_db", db), RLM_OK);
    assert_int_equal(rlm_config_set(cfg, "session", "conv1"), RLM_OK);
    rlm *h = NULL;
    assert_int_equal(rlm_new_in(pool, cfg, &h), RLM_OK);
    assert_int_equal(rlm_conversation_is_new(h), 1);
    char *answer = NULL;
    assert_int_equal(rlm_ask(h, "pooltest-conv", &answer), RLM_OK);
    rlm_string_free(answer);
    assert_int_equal(rlm_conversation_is_new(h), 0);
    rlm_free(h);
    assert_int_equal(rlm_new_in(pool, cfg, &h), RLM_OK);
    assert_int_equal(rlm_conversation_is_new(h), 0);   /* continued from disk */
    rlm_free(h);
    rlm_config_free(cfg);
    cfg = base_config(f, "8");
    assert_int_equal(rlm_new_in(pool, cfg, &h), RLM_OK);
    assert_int_equal(rlm_conversation_is_new(h), 0);   /* no conversation at all */
    assert_int_equal(rlm_begin_conversation(h), RLM_OK);
    assert_int_equal(rlm_conversation_is_new(h), 1);
    rlm_free(h);
    rlm_config_free(cfg);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_shared_dispatcher_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_named_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_from_another_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runs_share_the_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conversation_is_new, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
