/* test_lm — the dispatcher end to end against the real fake server (fakelm):
 * ordering and the concurrency bound, retries (5xx, 429 with Retry-After,
 * dropped connections, timeouts), errors without retry,
 * cancellation on lm_free, the http layer's body cap; streaming from both
 * providers (truncated, stalled and reset streams retried), Anthropic
 * Messages, rate-limit pacing, failover and draining of a dead URL and a
 * seeded fault mix. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdatomic.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "lm.h"
#include "util.h"

#include "fakelm_spawn.h"


#define FAKELM RLM_BUILD_DIR "/fakelm"

/* ---- the fake server ------------------------------------------------- */

typedef struct server {
    pid_t pid;
    int port;
    char dir[64];
    char base[128]; /* http://127.0.0.1:PORT/v1 */
} server;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* Starts fakelm with the given script (and --require-key when key != NULL)
 * and waits until it has written its port. The child gets SIGTERM if this
 * process dies, so a crashed test leaves no server behind; its stderr goes to
 * a file that is shown when it fails to start. */
static void server_start_on(server *s, const char *script, const char *key, int port);

static void server_start(server *s, const char *script, const char *key)
{
    server_start_on(s, script, key, 0);
}

/* The same on a given port (0: any free one). */
static void server_start_on(server *s, const char *script, const char *key, int port)
{
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "/tmp/rlm-test-lm-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    char script_path[128], port_path[128], log_path[128], request_log[128];
    snprintf(script_path, sizeof script_path, "%s/script.json", s->dir);
    snprintf(port_path, sizeof port_path, "%s/port", s->dir);
    snprintf(log_path, sizeof log_path, "%s/stderr", s->dir);
    snprintf(request_log, sizeof request_log, "%s/requests.log", s->dir);
    write_file(script_path, script);

    char port_text[16];
    snprintf(port_text, sizeof port_text, "%d", port);
    const char *argv[] = {FAKELM, "--script", script_path, "--port", port_text, "--port-file", port_path,
                          "--log", request_log, key ? "--require-key" : NULL, key, NULL};
    s->pid = fakelm_spawn(argv, port_path, log_path, &s->port);
    snprintf(s->base, sizeof s->base, "http://127.0.0.1:%d/v1", s->port);
}

static void server_stop(server *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
    if (!s->dir[0])
        return;
    static const char *const files[] = {"script.json", "port", "stderr", "requests.log"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", s->dir, files[i]);
        unlink(path);
    }
    rmdir(s->dir);
    s->dir[0] = '\0';
}

/* Each test gets a server slot that teardown stops even when an assertion
 * failed half-way. */
static int setup_server(void **state)
{
    server *s = calloc(1, sizeof *s);
    *state = s;
    return s ? 0 : -1;
}

static int teardown_server(void **state)
{
    server_stop(*state);
    free(*state);
    return 0;
}

static size_t on_counters(char *data, size_t size, size_t nmemb, void *userdata)
{
    return buf_append(userdata, data, size * nmemb) == 0 ? size * nmemb : 0;
}

/* GET /counters, as JSON (the caller decrefs). */
static json_t *server_counters(const server *s)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/counters", s->port);
    buf body;
    buf_init(&body, 1 << 20);
    CURL *easy = curl_easy_init();
    assert_non_null(easy);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_counters);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    assert_int_equal(curl_easy_perform(easy), CURLE_OK);
    curl_easy_cleanup(easy);
    json_t *root = json_loadb(body.data, body.len, 0, NULL);
    buf_free(&body);
    assert_non_null(root);
    return root;
}

static long counter(const server *s, const char *name)
{
    json_t *root = server_counters(s);
    json_t *v = json_object_get(root, name);
    assert_true(json_is_integer(v));
    long n = (long)json_integer_value(v);
    json_decref(root);
    return n;
}

static lm *lm_open(const char *base, const char *key, int concurrency, double timeout, int retries)
{
    lm_options o = {
        .base_url = base,
        .api_key = key,
        .concurrency = concurrency,
        .timeout = timeout,
        .connect_timeout = 5,
        .max_retries = retries,
    };
    char err[256] = "";
    lm *m = lm_new(&o, err, sizeof err);
    if (!m)
        fail_msg("lm_new: %s", err);
    return m;
}

static void call_one(lm *m, const char *model, const char *text, lm_response *out)
{
    lm_message msg = {.role = "user", .content = text};
    lm_request req = {.model = model, .messages = &msg, .n_messages = 1};
    lm_call(m, &req, out);
}

/* ---- tests ----------------------------------------------------------- */

#define N_MANY 100

static void test_many_in_order_bounded(void **state)
{
    server *s = *state;
    server_start(s, "{\"latency_ms\": 50, \"rules\": [{\"match\": \"^q(\\\\d+)$\", \"reply\": \"a$1\"}]}", NULL);
    lm *m = lm_open(s->base, NULL, 16, 30, -1);

    static char texts[N_MANY][16];
    lm_message msgs[N_MANY];
    lm_request reqs[N_MANY];
    lm_response out[N_MANY];
    for (int i = 0; i < N_MANY; i++) {
        snprintf(texts[i], sizeof texts[i], "q%d", i);
        msgs[i] = (lm_message){.role = "user", .content = texts[i]};
        reqs[i] = (lm_request){.model = "m-small", .messages = &msgs[i], .n_messages = 1};
    }
    lm_call_many(m, reqs, N_MANY, out);
    for (int i = 0; i < N_MANY; i++) {
        char want[16];
        snprintf(want, sizeof want, "a%d", i);
        if (out[i].error != LM_OK)
            fail_msg("request %d: %s: %s", i, lm_error_name(out[i].error), out[i].error_message);
        assert_string_equal(out[i].content, want);
        assert_int_equal(out[i].http_status, 200);
        assert_int_equal(out[i].attempts, 1);
        assert_string_equal(out[i].finish_reason, "stop");
        assert_true(out[i].prompt_tokens > 0);
        lm_response_clear(&out[i]);
    }
    int peak = lm_max_in_flight(m);
    assert_true(peak > 1);
    assert_true(peak <= 16);
    long server_peak = counter(s, "max_in_flight");
    assert_true(server_peak > 1);
    assert_true(server_peak <= 16);
    assert_int_equal(counter(s, "requests"), N_MANY);
    lm_free(m);
    }

typedef struct caller_arg {
    lm *m;
    int first;
    int n;
    int failures;
} caller_arg;

static void *caller_main(void *p)
{
    caller_arg *a = p;
    char texts[32][16];
    lm_message msgs[32];
    lm_request reqs[32];
    lm_response out[32];
    for (int i = 0; i < a->n; i++) {
        snprintf(texts[i], sizeof texts[i], "q%d", a->first + i);
        msgs[i] = (lm_message){.role = "user", .content = texts[i]};
        reqs[i] = (lm_request){.model = "m", .messages = &msgs[i], .n_messages = 1};
    }
    lm_call_many(a->m, reqs, (size_t)a->n, out);
    for (int i = 0; i < a->n; i++) {
        char want[16];
        snprintf(want, sizeof want, "a%d", a->first + i);
        if (out[i].error != LM_OK || strcmp(out[i].content, want) != 0)
            a->failures++;
        lm_response_clear(&out[i]);
    }
    return NULL;
}

/* Several threads share one dispatcher and one bound. */
static void test_threads_share_bound(void **state)
{
    server *s = *state;
    server_start(s, "{\"latency_ms\": 30, \"rules\": [{\"match\": \"^q(\\\\d+)$\", \"reply\": \"a$1\"}]}", NULL);
    lm *m = lm_open(s->base, NULL, 8, 30, -1);
    pthread_t threads[4];
    caller_arg args[4];
    for (int t = 0; t < 4; t++) {
        args[t] = (caller_arg){m, t * 100, 25, 0};
        assert_int_equal(pthread_create(&threads[t], NULL, caller_main, &args[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(threads[t], NULL);
        assert_int_equal(args[t].failures, 0);
    }
    assert_true(lm_max_in_flight(m) <= 8);
    assert_true(counter(s, "max_in_flight") <= 8);
    assert_int_equal(counter(s, "requests"), 100);
    lm_free(m);
    }

/* A port nobody listens on: refused at once, no waiting for timeouts. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    socklen_t len = sizeof addr;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    close(fd);
    return ntohs(addr.sin_port);
}

static void test_connect_refused(void **state)
{
    (void)state;
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d/v1/", closed_port());
    lm *m = lm_open(base, NULL, 4, 30, -1);
    lm_response r;
    call_one(m, "m", "hello", &r);
    assert_int_equal(r.error, LM_ERR_CONNECT);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(r.http_status, 0);
    assert_null(r.content);
    assert_non_null(strstr(r.error_message, "/v1/chat/completions"));
    assert_true(r.seconds < 5.0); /* far below both timeouts: it did not wait for them */
    lm_response_clear(&r);
    lm_free(m);

    /* Connection errors are retried. */
    m = lm_open(base, NULL, 4, 30, 1);
    call_one(m, "m", "hello", &r);
    assert_int_equal(r.error, LM_ERR_CONNECT);
    assert_int_equal(r.attempts, 2);
    assert_non_null(strstr(r.error_message, "after 2 attempts"));
    lm_response_clear(&r);
    lm_free(m);
}

static void test_unauthorized_no_retry(void **state)
{
    server *s = *state;
    server_start(s, "{\"rules\": [{\"match\": \"\", \"reply\": \"welcome\"}]}", "sk-right");
    lm *m = lm_open(s->base, "sk-wrong", 4, 30, 3);
    lm_response r;
    call_one(m, "m", "hello", &r);
    assert_int_equal(r.error, LM_ERR_HTTP);
    assert_int_equal(r.http_status, 401);
    assert_int_equal(r.attempts, 1);
    assert_non_null(strstr(r.error_message, "401"));
    assert_non_null(strstr(r.error_message, "Incorrect API key provided"));
    assert_int_equal(counter(s, "requests"), 1);
    lm_response_clear(&r);
    lm_free(m);

    m = lm_open(s->base, NULL, 4, 30, 3);
    call_one(m, "m", "hello", &r);
    assert_int_equal(r.http_status, 401); /* no key, no header */
    lm_response_clear(&r);
    lm_free(m);

    m = lm_open(s->base, "sk-right", 4, 30, 3);
    call_one(m, "m", "hello", &r);
    assert_int_equal(r.error, LM_OK);
    assert_string_equal(r.content, "welcome");
    lm_response_clear(&r);
    lm_free(m);
    }

static void test_not_found_message(void **state)
{
    server *s = *state;
    server_start(s,
                 "{\"rules\": [{\"match\": \"\", \"status\": 404, \"error_code\": \"model_not_found\","
                 " \"reply\": \"The model `nope` does not exist\"}]}",
                 NULL);
    lm *m = lm_open(s->base, NULL, 4, 30, 3);
    lm_response r;
    call_one(m, "nope", "hello", &r);
    assert_int_equal(r.error, LM_ERR_HTTP);
    assert_int_equal(r.http_status, 404);
    assert_int_equal(r.attempts, 1);
    assert_string_equal(r.error_message, "HTTP 404 Not Found: The model `nope` does not exist (model_not_found)");
    lm_response_clear(&r);
    lm_free(m);
    }

static void test_server_error_then_ok(void **state)
{
    server *s = *state;
    server_start(s,
                 "{\"rules\": [{\"match\": \"flaky\", \"status\": 500, \"times\": 2, \"reply\": \"boom\"},"
                 " {\"match\": \"flaky\", \"reply\": \"fine\"}]}",
                 NULL);
    lm *m = lm_open(s->base, NULL, 4, 30, 0 /* default: 3 */);
    lm_response r;
    call_one(m, "m", "flaky", &r);
    if (r.error != LM_OK)
        fail_msg("%s: %s", lm_error_name(r.error), r.error_message);
    assert_string_equal(r.content, "fine");
    assert_int_equal(r.attempts, 3);
    assert_int_equal(r.http_status, 200);
    assert_int_equal(counter(s, "requests"), 3);
    lm_response_clear(&r);
    lm_free(m);
    }

static void test_rate_limit_retry_after(void **state)
{
    server *s = *state;
    server_start(s,
                 "{\"rules\": [{\"match\": \"limited\", \"status\": 429, \"times\": 1,"
                 " \"headers\": {\"Retry-After\": \"1\"}, \"reply\": \"slow down\"},"
                 " {\"match\": \"limited\", \"reply\": \"ok now\"},"
                 " {\"match\": \"always\", \"status\": 429, \"headers\": {\"Retry-After\": \"0\"},"
                 " \"error_code\": \"rate_limit_exceeded\", \"reply\": \"Rate limit reached\"}]}",
                 NULL);
    lm *m = lm_open(s->base, NULL, 4, 30, 2);
    lm_response r;
    call_one(m, "m", "limited", &r);
    assert_int_equal(r.error, LM_OK);
    assert_string_equal(r.content, "ok now");
    assert_int_equal(r.attempts, 2);
    /* The default first backoff is at most 0.5 s; waiting a second means the header won. */
    assert_true(r.seconds >= 0.95);
    lm_response_clear(&r);

    call_one(m, "m", "always", &r);
    assert_int_equal(r.error, LM_ERR_HTTP);
    assert_int_equal(r.http_status, 429);
    assert_int_equal(r.attempts, 3);
    assert_string_equal(r.error_message,
                        "HTTP 429 Too Many Requests: Rate limit reached (rate_limit_exceeded) (after 3 attempts)");
    lm_response_clear(&r);
    lm_free(m);
    }

static void test_retry_after_parse(void **state)
{
    (void)state;
    time_t now = 1445412450; /* Wed, 21 Oct 2015 07:27:30 GMT */
    assert_true(http_parse_retry_after("120", now) == 120.0);
    assert_true(http_parse_retry_after(" 3 \r\n", now) == 3.0);
    assert_true(http_parse_retry_after("1.5", now) == 1.5);
    assert_true(http_parse_retry_after("0", now) == 0.0);
    assert_true(http_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == 30.0);
    assert_true(http_parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now) == 0.0);
    assert_true(http_parse_retry_after("-1", now) < 0);
    assert_true(http_parse_retry_after("soon", now) < 0);
    assert_true(http_parse_retry_after("12abc", now) < 0);
    assert_true(http_parse_retry_after("", now) < 0);
    assert_true(http_parse_retry_after(NULL, now) < 0);
}

static void test_timeout(void **state)
{
    server *s = *state;
    server_start(s, "{\"rules\": [{\"match\": \"slow\", \"latency_ms\": 5000, \"reply\": \"late\"}]}", NULL);
    lm *m = lm_open(s->base, NULL, 4, 0.3, 1);
    lm_response r;
    call_one(m, "m", "slow", &r);
    assert_int_equal(r.error, LM_ERR_TIMEOUT);
    assert_int_equal(r.attempts, 2);
    assert_null(r.content);
    assert_non_null(strstr(r.error_message, "0.3s"));
    assert_true(r.seconds < 4.0); /* gave up long before the server answered */
    lm_response_clear(&r);
    lm_free(m);
    }

static void test_dropped_connection(void **state)
{
    server *s = *state;
    server_start(s, "{\"rules\": [{\"match\": \"drop\", \"drop\": true}]}", NULL);
    lm *m = lm_open(s->base, NULL, 4, 30, 1);
    lm_response r;
    call_one(m, "m", "drop", &r);
    assert_int_equal(r.error, LM_ERR_CONNECT);
    assert_int_equal(r.attempts, 2);
    assert_int_equal(counter(s, "requests"), 2);
    lm_response_clear(&r);
    lm_free(m);
    }

static void test_non_json_ok_body(void **state)
{
    server *s = *state;
    server_start(s,
                 "{\"rules\": [{\"match\": \"garbage\", \"body\": \"<html>oops</html>\", \"content_type\": \"text/html\"},"
                 " {\"match\": \"think\", \"content_null\": true, \"reasoning\": \"hmm\"}]}",
                 NULL);
    lm *m = lm_open(s->base, NULL, 4, 30, 3);
    lm_response r;
    call_one(m, "m", "garbage", &r);
    assert_int_equal(r.error, LM_ERR_PARSE);
    assert_int_equal(r.http_status, 200);
    assert_int_equal(r.attempts, 1);
    assert_non_null(strstr(r.error_message, "not valid JSON"));
    lm_response_clear(&r);

    call_one(m, "m", "think", &r);
    assert_int_equal(r.error, LM_OK);
    assert_string_equal(r.content, "");
    assert_string_equal(r.reasoning, "hmm");
    lm_response_clear(&r);
    lm_free(m);
    }

typedef struct pending_arg {
    lm *m;
    lm_response out[6];
} pending_arg;

static void *pending_main(void *p)
{
    pending_arg *a = p;
    lm_message msg = {.role = "user", .content = "wait"};
    lm_request reqs[6];
    for (int i = 0; i < 6; i++)
        reqs[i] = (lm_request){.model = "m", .messages = &msg, .n_messages = 1};
    lm_call_many(a->m, reqs, 6, a->out);
    return NULL;
}

/* lm_free ends requests on the wire and those still queued behind the bound. */
static void test_free_cancels(void **state)
{
    server *s = *state;
    server_start(s, "{\"rules\": [{\"match\": \"\", \"latency_ms\": 20000, \"reply\": \"never\"}]}", NULL);
    pending_arg a = {.m = lm_open(s->base, NULL, 2, 60, 3)};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, pending_main, &a), 0);
    for (int i = 0; i < 500 && counter(s, "in_flight") < 2; i++)
        sleep_ms(10);
    assert_int_equal(counter(s, "in_flight"), 2);
    lm_free(a.m);
    pthread_join(thread, NULL);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(a.out[i].error, LM_ERR_CANCELLED);
        assert_null(a.out[i].content);
        lm_response_clear(&a.out[i]);
    }
    }

/* ---- the http layer directly ---------------------------------------- */

typedef struct sync_result {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    http_outcome outcome;
    long status;
    size_t body_len;
} sync_result;

static void on_sync_done(void *ctx, http_result *res)
{
    sync_result *r = ctx;
    pthread_mutex_lock(&r->lock);
    r->outcome = res->outcome;
    r->status = res->status;
    r->body_len = res->body_len;
    r->done = 1;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    free(res->body);
}

static void test_http_body_cap(void **state)
{
    server *s = *state;
    server_start(s, "{\"rules\": [{\"match\": \"\", \"reply\": \"0123456789012345678901234567890123456789"
                     "0123456789012345678901234567890123456789\"}]}", NULL);
    http_options o = {.max_transfers = 2, .max_body = 64};
    char err[128];
    http_client *c = http_client_new(&o, err, sizeof err);
    assert_non_null(c);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/chat/completions", s->port);
    static const char body[] = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    static const char *const headers[] = {"Content-Type: application/json", NULL};
    sync_result r = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    http_request req = {.url = url, .headers = headers, .body = body, .body_len = sizeof body - 1,
                        .timeout = 10, .done = on_sync_done, .ctx = &r};
    assert_int_equal(http_submit(c, &req), 0);
    pthread_mutex_lock(&r.lock);
    while (!r.done)
        pthread_cond_wait(&r.cond, &r.lock);
    pthread_mutex_unlock(&r.lock);
    assert_int_equal(r.outcome, HTTP_ERR_TOO_LARGE);
    assert_true(r.body_len <= 64);

    http_client_free(c);

    /* GET works too, and a delayed submission still completes. */
    c = http_client_new(NULL, err, sizeof err);
    assert_non_null(c);
    r.done = 0;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/counters", s->port);
    http_request get = {.url = url, .delay = 0.05, .done = on_sync_done, .ctx = &r};
    assert_int_equal(http_submit(c, &get), 0);
    pthread_mutex_lock(&r.lock);
    while (!r.done)
        pthread_cond_wait(&r.cond, &r.lock);
    pthread_mutex_unlock(&r.lock);
    assert_int_equal(r.outcome, HTTP_OK);
    assert_int_equal(r.status, 200);
    http_client_free(c);
    }

/* Waits for one sync_result and returns its status (0 if no response). */
static long sync_wait(sync_result *r)
{
    pthread_mutex_lock(&r->lock);
    while (!r->done)
        pthread_cond_wait(&r->cond, &r->lock);
    long status = r->outcome == HTTP_OK ? r->status : 0;
    pthread_mutex_unlock(&r->lock);
    return status;
}

/* The http layer reuses header lists across transfers: it must go by their
 * content, not by the caller's array (here one array whose line changes),
 * keep GET and POST apart, and stay right past its cache's size. Delayed
 * submissions that arrive out of order all complete. */
static void test_http_header_reuse(void **state)
{
    server *s = *state;
    server_start(s, "{\"rules\": [{\"match\": \"\", \"reply\": \"ok\"}]}", "sk-right");
    char err[128];
    http_client *c = http_client_new(NULL, err, sizeof err);
    assert_non_null(c);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/chat/completions", s->port);
    static const char body[] = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    char auth[64], extra[64];
    const char *headers[] = {"Content-Type: application/json", auth, extra, NULL};

    for (int round = 0; round < 12; round++) {
        /* 12 distinct header sets: more than the cache holds. */
        snprintf(extra, sizeof extra, "X-Round: %d", round);
        for (int good = 0; good < 2; good++) {
            snprintf(auth, sizeof auth, "Authorization: Bearer %s", good ? "sk-right" : "sk-wrong");
            sync_result r = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
            http_request req = {.url = url, .headers = headers, .body = body, .body_len = sizeof body - 1,
                                .timeout = 10, .done = on_sync_done, .ctx = &r};
            assert_int_equal(http_submit(c, &req), 0);
            assert_int_equal(sync_wait(&r), good ? 200 : 401);
        }
    }

    /* Delays submitted out of order: the timed queue keeps them sorted. */
    snprintf(auth, sizeof auth, "Authorization: Bearer sk-right");
    static const double delays[] = {0.3, 0.1, 0.2, 0.1, 0.0, 0.25};
    enum { N_DELAYED = sizeof delays / sizeof delays[0] };
    sync_result rs[N_DELAYED];
    for (int i = 0; i < N_DELAYED; i++) {
        rs[i] = (sync_result){.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
        http_request req = {.url = url, .headers = headers, .body = body, .body_len = sizeof body - 1,
                            .timeout = 10, .delay = delays[i], .done = on_sync_done, .ctx = &rs[i]};
        assert_int_equal(http_submit(c, &req), 0);
    }
    for (int i = 0; i < N_DELAYED; i++)
        assert_int_equal(sync_wait(&rs[i]), 200);
    http_client_free(c);
}

/* Bodies built by make_body as transfers start: never more alive than
 * transfers on the wire, whatever the queue holds; a builder that fails ends
 * its transfer alone. */
enum { N_BODIES = 8 };

typedef struct body_maker {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int live, max_live, made, done, ok, failed_as_said;
    int fail_at;                /* the made-th call (1-based) fails; 0: none */
    char *bodies[N_BODIES];     /* freed by the test: the callback gets no pointer to them */
} body_maker;

static const char made_body[] = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";

static int make_counted_body(void *ctx, const char **body, size_t *len)
{
    body_maker *bm = ctx;
    pthread_mutex_lock(&bm->lock);
    int n = ++bm->made;
    int fail = n == bm->fail_at;
    if (!fail && ++bm->live > bm->max_live)
        bm->max_live = bm->live;
    pthread_mutex_unlock(&bm->lock);
    if (fail || n > N_BODIES)
        return -1;
    bm->bodies[n - 1] = strdup(made_body);
    *body = bm->bodies[n - 1];
    *len = sizeof made_body - 1;
    return *body ? 0 : -1;
}

static void on_counted_done(void *ctx, http_result *res)
{
    body_maker *bm = ctx;
    pthread_mutex_lock(&bm->lock);
    if (res->outcome == HTTP_OK && res->status == 200) {
        bm->ok++;
        bm->live--;
    } else if (res->outcome == HTTP_ERR_OTHER && strcmp(res->error, "cannot build the request body") == 0) {
        bm->failed_as_said++;
    }
    bm->done++;
    pthread_cond_signal(&bm->cond);
    pthread_mutex_unlock(&bm->lock);
    free(res->body);
}

static void test_http_body_at_start(void **state)
{
    server *s = *state;
    server_start(s, "{\"latency_ms\": 50, \"rules\": [{\"match\": \"\", \"reply\": \"ok\"}]}", NULL);
    http_options o = {.max_transfers = 2};
    char err[128];
    http_client *c = http_client_new(&o, err, sizeof err);
    assert_non_null(c);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/chat/completions", s->port);
    static const char *const headers[] = {"Content-Type: application/json", NULL};
    body_maker bm = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, .fail_at = 3};
    for (int i = 0; i < N_BODIES; i++) {
        http_request req = {.url = url, .headers = headers, .make_body = make_counted_body,
                            .timeout = 10, .done = on_counted_done, .ctx = &bm};
        assert_int_equal(http_submit(c, &req), 0);
    }
    pthread_mutex_lock(&bm.lock);
    while (bm.done < N_BODIES)
        pthread_cond_wait(&bm.cond, &bm.lock);
    pthread_mutex_unlock(&bm.lock);
    assert_int_equal(bm.made, N_BODIES);
    assert_int_equal(bm.ok, N_BODIES - 1);
    assert_int_equal(bm.failed_as_said, 1);
    assert_true(bm.max_live >= 1);
    assert_true(bm.max_live <= 2);
    assert_int_equal(counter(s, "requests"), N_BODIES - 1);
    http_client_free(c);
    for (int i = 0; i < N_BODIES; i++)
        free(bm.bodies[i]);
}

static void test_bad_options(void **state)
{
    (void)state;
    char err[128] = "";
    lm_options o = {.base_url = NULL};
    assert_null(lm_new(&o, err, sizeof err));
    assert_true(err[0] != '\0');
    o.base_url = "http://127.0.0.1:1/v1";
    o.api_key = "sk-abc\r\nX-Evil: 1";
    err[0] = '\0';
    assert_null(lm_new(&o, err, sizeof err));
    assert_non_null(strstr(err, "api_key"));
    lm_free(NULL);
    lm_call_many(NULL, NULL, 0, NULL); /* nothing to do, nothing touched */
}

/* ---- streaming, providers, pacing, failover, faults ------------------ */

typedef struct progress_seen {
    int calls;
    size_t content_chars, reasoning_chars;
} progress_seen;

static void on_progress(void *ctx, const lm_progress *p)
{
    progress_seen *seen = ctx;
    seen->calls++;
    seen->content_chars = p->content_chars;
    seen->reasoning_chars = p->reasoning_chars;
}

static lm *lm_open_with(lm_options *o)
{
    char err[256] = "";
    if (!o->connect_timeout)
        o->connect_timeout = 5;
    lm *m = lm_new(o, err, sizeof err);
    if (!m)
        fail_msg("lm_new: %s", err);
    return m;
}

static void call_stream(lm *m, const char *text, progress_seen *seen, lm_response *out)
{
    lm_message msg = {.role = "user", .content = text};
    lm_request req = {.model = "m", .messages = &msg, .n_messages = 1, .stream = 1,
                      .progress = seen ? on_progress : NULL, .progress_ctx = seen};
    lm_call(m, &req, out);
}

static void expect_ok(const lm_response *r, const char *content)
{
    if (r->error != LM_OK)
        fail_msg("%s: %s", lm_error_name(r->error), r->error_message);
    assert_string_equal(r->content, content);
}

static void test_stream_both_providers(void **state)
{
    server *s = *state;
    server_start(s, "{\"rules\": [{\"match\": \"^think$\", \"reasoning\": \"let me see\", \"reply\": \"streamed wörds\"},"
                    " {\"match\": \"\", \"reply\": \"plain\"}]}", "sk-k");
    for (int anthropic = 0; anthropic <= 1; anthropic++) {
        lm_options o = {.base_url = s->base, .api_key = "sk-k", .max_retries = -1,
                        .provider = anthropic ? "anthropic" : NULL};
        lm *m = lm_open_with(&o);
        progress_seen seen = {0};
        lm_response r;
        call_stream(m, "think", &seen, &r);
        expect_ok(&r, "streamed wörds");
        assert_string_equal(r.reasoning, "let me see");
        assert_string_equal(r.finish_reason, "stop");
        assert_true(r.prompt_tokens > 0); /* OpenAI: the include_usage chunk */
        assert_true(r.completion_tokens > 0);
        assert_int_equal(r.attempts, 1);
        assert_true(seen.calls >= 2);
        assert_int_equal(seen.content_chars, 14);
        assert_int_equal(seen.reasoning_chars, 10);
        lm_response_clear(&r);
        /* The same endpoint without streaming. */
        call_one(m, "m", "think", &r);
        expect_ok(&r, "streamed wörds");
        assert_string_equal(r.reasoning, "let me see");
        lm_response_clear(&r);
        lm_free(m);
    }
    /* A wrong key, in each provider's words. */
    lm_options o = {.base_url = s->base, .api_key = "sk-wrong", .provider = "anthropic"};
    lm *m = lm_open_with(&o);
    lm_response r;
    call_stream(m, "think", NULL, &r);
    assert_int_equal(r.error, LM_ERR_HTTP);
    assert_int_equal(r.http_status, 401);
    assert_int_equal(r.attempts, 1);
    assert_string_equal(r.error_message, "HTTP 401 Unauthorized: invalid x-api-key (authentication_error)");
    lm_response_clear(&r);
    lm_free(m);
    assert_int_equal(counter(s, "requests"), 5);
}

static void test_stream_faults_retried(void **state)
{
    server *s = *state;
    server_start(s,
                 "{\"rules\": [{\"match\": \"^cut$\", \"truncate\": true, \"times\": 1, \"reply\": \"partial\"},"
                 " {\"match\": \"^cut$\", \"reply\": \"whole\"},"
                 " {\"match\": \"^always cut$\", \"truncate\": true, \"reply\": \"never\"},"
                 " {\"match\": \"^stall$\", \"stall_ms\": 20000, \"stall_after\": 0, \"times\": 1, \"reply\": \"x\"},"
                 " {\"match\": \"^stall$\", \"reply\": \"after the stall\"},"
                 " {\"match\": \"^reset$\", \"reset_after\": 40, \"times\": 1, \"reply\": \"x\"},"
                 " {\"match\": \"^reset$\", \"reply\": \"after the reset\"}]}",
                 NULL);
    for (int anthropic = 0; anthropic <= 1; anthropic++) {
        lm_options o = {.base_url = s->base, .max_retries = 1, .stall_timeout = 1,
                        .provider = anthropic ? "anthropic" : "openai"};
        lm *m = lm_open_with(&o);
        lm_response r;
        call_stream(m, "cut", NULL, &r);
        expect_ok(&r, "whole");
        assert_int_equal(r.attempts, 2);
        lm_response_clear(&r);

        call_stream(m, "always cut", NULL, &r);
        assert_int_equal(r.error, LM_ERR_TRUNCATED);
        assert_int_equal(r.attempts, 2);
        assert_non_null(strstr(r.error_message, "truncated"));
        assert_null(r.content);
        lm_response_clear(&r);

        call_stream(m, "stall", NULL, &r);
        expect_ok(&r, "after the stall");
        assert_int_equal(r.attempts, 2);
        lm_response_clear(&r);

        call_stream(m, "reset", NULL, &r);
        expect_ok(&r, "after the reset");
        assert_int_equal(r.attempts, 2);
        lm_response_clear(&r);
        lm_free(m);
        char reset[64];
        snprintf(reset, sizeof reset, "http://127.0.0.1:%d/reset", s->port);
        CURL *easy = curl_easy_init();
        curl_easy_setopt(easy, CURLOPT_URL, reset);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_counters);
        buf sink;
        buf_init(&sink, 4096);
        curl_easy_setopt(easy, CURLOPT_WRITEDATA, &sink);
        assert_int_equal(curl_easy_perform(easy), CURLE_OK);
        curl_easy_cleanup(easy);
        buf_free(&sink);
    }
}

/* Seconds since fakelm started at which each request arrived, from its log. */
static size_t arrival_times(const server *s, double *t, size_t max)
{
    char path[128];
    snprintf(path, sizeof path, "%s/requests.log", s->dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[1024];
    size_t n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j);
        t[n++] = json_number_value(json_object_get(j, "t"));
        json_decref(j);
    }
    fclose(f);
    for (size_t i = 1; i < n; i++) /* insertion sort: a handful of entries */
        for (size_t k = i; k > 0 && t[k] < t[k - 1]; k--) {
            double tmp = t[k];
            t[k] = t[k - 1];
            t[k - 1] = tmp;
        }
    return n;
}

/* 120 requests/min: one every 0.5 s after a burst of about one second's
 * worth. Pacing only ever delays, so the arrival gaps the server saw have a
 * lower bound however slow the machine is. */
static void test_rate_limit_pacing(void **state)
{
    server *s = *state;
    server_start(s, "{\"rules\": [{\"match\": \"\", \"reply\": \"ok\"}]}", NULL);
    lm_options o = {.base_url = s->base, .requests_per_minute = 120, .concurrency = 16};
    lm *m = lm_open_with(&o);
    lm_message msg = {.role = "user", .content = "hi"};
    lm_request reqs[6];
    lm_response out[6];
    for (int i = 0; i < 6; i++)
        reqs[i] = (lm_request){.model = "m", .messages = &msg, .n_messages = 1};
    lm_call_many(m, reqs, 6, out);
    double waited = 0;
    for (int i = 0; i < 6; i++) {
        expect_ok(&out[i], "ok");
        waited += out[i].wait_seconds;
        lm_response_clear(&out[i]);
    }
    double t[6];
    assert_int_equal(arrival_times(s, t, 6), 6);
    for (int k = 2; k < 6; k++)
        if (t[k] - t[0] < (k - 1) * 0.5 - 0.02)
            fail_msg("request %d arrived %.3fs after the first; pacing allows %.3fs", k, t[k] - t[0], (k - 1) * 0.5);
    assert_true(waited >= 0.5 + 1.0 + 1.5 + 2.0 - 0.1);
    assert_int_equal(counter(s, "requests"), 6);
    lm_free(m);

    /* Tokens per minute: each request is ~14 estimated tokens (55 bytes / 4);
     * at 600/min the second waits ~0.4 s and the third ~1.75 s. */
    lm_options o2 = {.base_url = s->base, .tokens_per_minute = 600};
    m = lm_open_with(&o2);
    lm_call_many(m, reqs, 3, out);
    waited = 0;
    for (int i = 0; i < 3; i++) {
        expect_ok(&out[i], "ok");
        waited += out[i].wait_seconds;
        lm_response_clear(&out[i]);
    }
    assert_true(waited > 1.0);
    lm_free(m);
}

/* A URL that stops answering is drained; once a server answers there
 * again, a probe brings it back and requests go to it again. */
static void test_drained_url_comes_back(void **state)
{
    server *s = *state;
    static const char script[] = "{\"rules\": [{\"match\": \"\", \"reply\": \"ok\"}]}";
    server_start(s, script, NULL);
    server back;
    server_start(&back, script, NULL);
    int port = back.port;
    char base[sizeof back.base];
    snprintf(base, sizeof base, "%s", back.base);
    server_stop(&back);
    const char *extra[] = {base};
    lm_options o = {.base_url = s->base, .extra_base_urls = extra, .n_extra_base_urls = 1, .max_retries = 2};
    lm *m = lm_open_with(&o);
    lm_message msg = {.role = "user", .content = "q"};
    lm_request reqs[4];
    lm_response out[4];
    for (int i = 0; i < 4; i++)
        reqs[i] = (lm_request){.model = "m", .messages = &msg, .n_messages = 1};
    lm_call_many(m, reqs, 4, out);
    for (int i = 0; i < 4; i++) {
        expect_ok(&out[i], "ok");
        lm_response_clear(&out[i]);
    }
    server_start_on(&back, script, NULL, port);
    /* Probes start SPREAD_PROBE_FIRST seconds after the drain: wait for
     * the revived server's first request, a batch at a time. */
    long revived = 0;
    for (int round = 0; round < 100 && revived == 0; round++) {
        nanosleep(&(struct timespec){.tv_nsec = 100 * 1000000L}, NULL);
        lm_call_many(m, reqs, 4, out);
        for (int i = 0; i < 4; i++) {
            expect_ok(&out[i], "ok");
            lm_response_clear(&out[i]);
        }
        revived = counter(&back, "requests");
    }
    assert_true(revived > 0);
    lm_free(m);
    server_stop(&back);
}

static void test_round_robin_failover(void **state)
{
    server *s = *state;
    server_start(s, "{\"rules\": [{\"match\": \"^q(\\\\d)$\", \"reply\": \"a$1\"}]}", NULL);
    char dead[64];
    snprintf(dead, sizeof dead, "http://127.0.0.1:%d/v1", closed_port());
    const char *extra[] = {s->base};
    lm_options o = {.base_url = dead, .extra_base_urls = extra, .n_extra_base_urls = 1, .max_retries = 2};
    lm *m = lm_open_with(&o);
    char texts[4][16];
    lm_message msgs[4];
    lm_request reqs[4];
    lm_response out[4];
    for (int i = 0; i < 4; i++) {
        snprintf(texts[i], sizeof texts[i], "q%d", i);
        msgs[i] = (lm_message){.role = "user", .content = texts[i]};
        reqs[i] = (lm_request){.model = "m", .messages = &msgs[i], .n_messages = 1};
    }
    lm_call_many(m, reqs, 4, out);
    int attempts = 0;
    for (int i = 0; i < 4; i++) {
        char want[16];
        snprintf(want, sizeof want, "a%d", i);
        expect_ok(&out[i], want);
        /* Spread in turn when none is outstanding yet: 0 and 2 met the
         * dead URL first. */
        assert_int_equal(out[i].attempts, i % 2 == 0 ? 2 : 1);
        attempts += out[i].attempts;
        lm_response_clear(&out[i]);
    }
    assert_int_equal(attempts, 6);
    assert_int_equal(counter(s, "requests"), 4);
    /* Nobody answered there: the URL is drained, and the next batch goes
     * to the live one alone, each request at its first attempt. */
    lm_call_many(m, reqs, 4, out);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(out[i].attempts, 1);
        lm_response_clear(&out[i]);
    }
    assert_int_equal(counter(s, "requests"), 8);
    lm_free(m);

    char err[128];
    lm_options bad = {.base_url = s->base, .provider = "gemini"};
    assert_null(lm_new(&bad, err, sizeof err));
    assert_non_null(strstr(err, "unknown provider"));
}

/* Every fault at once on 30% of answers: each call still ends with the
 * right answer, and the server saw exactly one request per attempt. */
static void test_fault_mix(void **state)
{
    server *s = *state;
    server_start(s,
                 "{\"faults\": {\"rate\": 0.3, \"seed\": 7, \"retry_after\": \"0\", \"stall_ms\": 20000,"
                 " \"kinds\": [\"429\", \"500\", \"503\", \"reset\", \"truncated\", \"malformed\","
                 " \"empty_reasoning\", \"stall\"]},"
                 " \"rules\": [{\"match\": \"^q(\\\\d+)$\", \"reply\": \"a$1\"}]}",
                 NULL);
    for (int anthropic = 0; anthropic <= 1; anthropic++) {
        lm_options o = {.base_url = s->base, .max_retries = 8, .retry_bad_replies = 1, .stall_timeout = 1,
                        .timeout = 3, .provider = anthropic ? "anthropic" : "openai"};
        lm *m = lm_open_with(&o);
        enum { N = 40 };
        char texts[N][16];
        lm_message msgs[N];
        lm_request reqs[N];
        lm_response out[N];
        for (int i = 0; i < N; i++) {
            snprintf(texts[i], sizeof texts[i], "q%d", i);
            msgs[i] = (lm_message){.role = "user", .content = texts[i]};
            reqs[i] = (lm_request){.model = "m", .messages = &msgs[i], .n_messages = 1, .stream = i % 2};
        }
        long before = counter(s, "requests");
        lm_call_many(m, reqs, N, out);
        long attempts = 0;
        int retried = 0;
        for (int i = 0; i < N; i++) {
            char want[16];
            snprintf(want, sizeof want, "a%d", i);
            expect_ok(&out[i], want);
            attempts += out[i].attempts;
            retried += out[i].attempts > 1;
            lm_response_clear(&out[i]);
        }
        assert_true(retried > 0);
        assert_int_equal(counter(s, "requests") - before, attempts);
        lm_free(m);
    }
}

/* ---- cancellation through lm_request.cancel --------------------------- */

typedef struct cancel_arg {
    lm *m;
    const char *text;
    int n;
    const atomic_int *flag;
    lm_response out[4];
    double ended;               /* clock_now() when lm_call_many returned */
} cancel_arg;

static void *cancel_caller(void *p)
{
    cancel_arg *a = p;
    lm_message msg = {.role = "user", .content = a->text};
    lm_request reqs[4];
    for (int i = 0; i < a->n; i++)
        reqs[i] = (lm_request){.model = "m", .messages = &msg, .n_messages = 1, .cancel = a->flag};
    lm_call_many(a->m, reqs, (size_t)a->n, a->out);
    a->ended = clock_now();
    return NULL;
}

static void expect_cancelled(const lm_response *r, int attempts)
{
    assert_int_equal(r->error, LM_ERR_CANCELLED);
    assert_string_equal(r->error_message, "cancelled");
    assert_null(r->content);
    assert_int_equal(r->attempts, attempts);
}

/* A raised flag ends its caller's requests on the wire (5 s replies) and the
 * one queued behind the bound, promptly; another caller's request with a flag
 * of its own, queued behind them, is answered normally. */
static void test_cancel_in_flight(void **state)
{
    server *s = *state;
    server_start(s, "{\"rules\": [{\"match\": \"slow\", \"latency_ms\": 5000, \"reply\": \"late\"},"
                    " {\"match\": \"steady\", \"latency_ms\": 300, \"reply\": \"steady\"}]}", NULL);
    lm *m = lm_open(s->base, NULL, 3, 30, 3);
    atomic_int stop_a = 0, stop_b = 0;
    cancel_arg a = {.m = m, .text = "slow", .n = 4, .flag = &stop_a};
    cancel_arg b = {.m = m, .text = "steady", .n = 1, .flag = &stop_b};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, cancel_caller, &a), 0);
    for (int i = 0; i < 500 && counter(s, "in_flight") < 3; i++)
        sleep_ms(10);
    assert_int_equal(counter(s, "in_flight"), 3);
    assert_int_equal(pthread_create(&tb, NULL, cancel_caller, &b), 0);
    sleep_ms(200);
    double raised = clock_now();
    stop_a = 1;
    pthread_join(ta, NULL);
    assert_true(a.ended - raised < 1.0);
    for (int i = 0; i < 4; i++) {
        /* Three were on the wire; the fourth never left the queue. */
        expect_cancelled(&a.out[i], i < 3 ? 1 : 0);
        lm_response_clear(&a.out[i]);
    }
    pthread_join(tb, NULL);
    expect_ok(&b.out[0], "steady");
    lm_response_clear(&b.out[0]);
    assert_int_equal(counter(s, "requests"), 4);
    lm_free(m);
}

/* A request waiting out a 30 s Retry-After is cancelled from the timed
 * queue; a flag raised before the call sends nothing at all. */
static void test_cancel_waiting_retry(void **state)
{
    server *s = *state;
    server_start(s, "{\"rules\": [{\"match\": \"busy\", \"status\": 503,"
                    " \"headers\": {\"Retry-After\": \"30\"}, \"reply\": \"overloaded\"}]}", NULL);
    lm *m = lm_open(s->base, NULL, 4, 30, 3);
    atomic_int stop = 0;
    cancel_arg a = {.m = m, .text = "busy", .n = 2, .flag = &stop};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, cancel_caller, &a), 0);
    for (int i = 0; i < 500 && counter(s, "requests") < 2; i++)
        sleep_ms(10);
    assert_int_equal(counter(s, "requests"), 2);
    sleep_ms(200);
    double raised = clock_now();
    stop = 1;
    pthread_join(t, NULL);
    assert_true(a.ended - raised < 1.0);
    for (int i = 0; i < 2; i++) {
        expect_cancelled(&a.out[i], 1);
        lm_response_clear(&a.out[i]);
    }

    /* Already raised: nothing is sent. */
    a = (cancel_arg){.m = m, .text = "busy", .n = 3, .flag = &stop};
    cancel_caller(&a);
    for (int i = 0; i < 3; i++) {
        expect_cancelled(&a.out[i], 0);
        lm_response_clear(&a.out[i]);
    }
    assert_int_equal(counter(s, "requests"), 2);
    lm_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_many_in_order_bounded, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_threads_share_bound, setup_server, teardown_server),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test_setup_teardown(test_unauthorized_no_retry, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_not_found_message, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_server_error_then_ok, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_rate_limit_retry_after, setup_server, teardown_server),
        cmocka_unit_test(test_retry_after_parse),
        cmocka_unit_test_setup_teardown(test_timeout, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_dropped_connection, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_non_json_ok_body, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_free_cancels, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_cancel_in_flight, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_cancel_waiting_retry, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_http_body_at_start, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_http_body_cap, setup_server, teardown_server),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test_setup_teardown(test_stream_both_providers, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_stream_faults_retried, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_rate_limit_pacing, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_round_robin_failover, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_drained_url_comes_back, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_fault_mix, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_http_header_reuse, setup_server, teardown_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
