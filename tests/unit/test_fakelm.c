/* test_fakelm — the fake OpenAI-compatible server, end to end: each test starts
 * the built fakelm on a free port with a script from tests/data/fakelm/, talks
 * to it with libcurl, and its teardown stops the server even when a check fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define FAKELM RLM_BUILD_DIR "/fakelm"
#define SCRIPTS RLM_TEST_DATA "/fakelm/"
#define KEY "sk-fakelm-test"

typedef struct server {
    pid_t pid;
    long port;
    char dir[64];
    char port_file[128];
    char log_file[128];
} server;

typedef struct reply {
    long status;
    int curl_code;
    buf body;
    buf headers;
    json_t *json; /* body parsed, or NULL */
} reply;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static pid_t spawn(char **argv, int err_fd)
{
    pid_t pid = fork();
    if (pid == 0) {
        int null_fd = open("/dev/null", O_WRONLY);
        dup2(null_fd, STDOUT_FILENO);
        if (err_fd >= 0)
            dup2(err_fd, STDERR_FILENO);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Starts fakelm and waits (up to 20 s) for its port file. */
static server *server_start(const char *script, const char *key)
{
    server *s = calloc(1, sizeof *s);
    char script_path[512];
    assert_non_null(s);
    snprintf(s->dir, sizeof s->dir, "/tmp/test_fakelm.XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    snprintf(s->port_file, sizeof s->port_file, "%s/port", s->dir);
    snprintf(s->log_file, sizeof s->log_file, "%s/log.jsonl", s->dir);
    snprintf(script_path, sizeof script_path, SCRIPTS "%s", script);
    char *argv[] = {FAKELM, "--script", script_path, "--port-file", s->port_file,
                    "--log", s->log_file, key ? "--require-key" : NULL, (char *)key, NULL};
    s->pid = spawn(argv, -1);
    assert_true(s->pid > 0);
    for (int i = 0; i < 2000; i++) {
        FILE *f = fopen(s->port_file, "r");
        if (f) {
            char line[32] = "";
            if (fgets(line, sizeof line, f))
                line[strcspn(line, "\n")] = '\0';
            fclose(f);
            if (parse_long(line, &s->port) == 0)
                return s;
        }
        assert_int_equal(waitpid(s->pid, NULL, WNOHANG), 0); /* still alive */
        sleep_ms(10);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    fail_msg("fakelm did not write %s", s->port_file);
    return NULL;
}

/* SIGTERM, then SIGKILL if it has not exited within 5 s; returns the exit status. */
static int server_stop(server *s)
{
    int status = -1;
    if (!s)
        return -1;
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        for (int i = 0; i < 500 && waitpid(s->pid, &status, WNOHANG) == 0; i++)
            sleep_ms(10);
        if (kill(s->pid, 0) == 0) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &status, 0);
        }
        s->pid = 0;
    }
    unlink(s->port_file);
    unlink(s->log_file);
    rmdir(s->dir);
    return status;
}

static int setup_basic(void **state)
{
    *state = server_start("basic.json", NULL);
    return 0;
}

static int setup_oracle(void **state)
{
    *state = server_start("oracle.json", NULL);
    return 0;
}

static int setup_key(void **state)
{
    *state = server_start("basic.json", KEY);
    return 0;
}

static int teardown(void **state)
{
    server_stop(*state);
    free(*state);
    *state = NULL;
    return 0;
}

static const char *str_of(json_t *object, const char *key)
{
    return json_string_value(json_object_get(object, key));
}

static size_t collect(char *data, size_t size, size_t n, void *userdata)
{
    return buf_append(userdata, data, size * n) == 0 ? size * n : 0;
}

static void reply_free(reply *r)
{
    buf_free(&r->body);
    buf_free(&r->headers);
    json_decref(r->json);
}

/* One HTTP request; body NULL means GET. */
static reply request(const server *s, const char *path, const char *body, const char *auth)
{
    reply r = {0};
    char url[256], auth_header[128];
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    CURL *curl = curl_easy_init();
    assert_non_null(curl);
    buf_init(&r.body, 1 << 20);
    buf_init(&r.headers, 1 << 16);
    snprintf(url, sizeof url, "http://127.0.0.1:%ld%s", s->port, path);
    if (auth) {
        snprintf(auth_header, sizeof auth_header, "Authorization: Bearer %s", auth);
        headers = curl_slist_append(headers, auth_header);
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r.body);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &r.headers);
    if (body)
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    r.curl_code = (int)curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_cleanup(curl);
    curl_slist_free_all(headers);
    if (r.body.data)
        r.json = json_loads(r.body.data, 0, NULL);
    return r;
}

/* A chat request whose only message is one user turn. */
static reply chat(const server *s, const char *model, const char *user)
{
    json_t *req = json_pack("{s:s, s:[{s:s, s:s}]}", "model", model, "messages", "role", "user",
                            "content", user);
    char *body = json_dumps(req, JSON_COMPACT);
    reply r = request(s, "/v1/chat/completions", body, NULL);
    free(body);
    json_decref(req);
    return r;
}

static json_t *message_of(json_t *completion)
{
    return json_object_get(json_array_get(json_object_get(completion, "choices"), 0), "message");
}

static const char *content_of(const reply *r)
{
    return str_of(message_of(r->json), "content");
}

static void assert_content(const server *s, const char *user, const char *expected)
{
    reply r = chat(s, "test-model", user);
    assert_int_equal(r.status, 200);
    assert_non_null(r.json);
    assert_non_null(content_of(&r));
    assert_string_equal(content_of(&r), expected);
    reply_free(&r);
}

static json_int_t counter(const server *s, const char *name)
{
    reply r = request(s, "/counters", NULL, NULL);
    assert_int_equal(r.status, 200);
    json_t *v = json_object_get(r.json, name);
    assert_true(json_is_integer(v));
    json_int_t n = json_integer_value(v);
    reply_free(&r);
    return n;
}

/* ---- tests ---------------------------------------------------------- */

static void test_completion_shape_and_captures(void **state)
{
    server *s = *state;
    reply r = chat(s, "my-model", "ping abc 42");
    assert_int_equal(r.status, 200);
    assert_non_null(r.json);
    assert_string_equal(str_of(r.json, "object"), "chat.completion");
    assert_string_equal(str_of(r.json, "model"), "my-model");
    assert_true(json_is_string(json_object_get(r.json, "id")));
    assert_true(json_is_integer(json_object_get(r.json, "created")));
    json_t *choice = json_array_get(json_object_get(r.json, "choices"), 0);
    assert_int_equal(json_integer_value(json_object_get(choice, "index")), 0);
    assert_string_equal(str_of(choice, "finish_reason"), "stop");
    assert_string_equal(str_of(json_object_get(choice, "message"), "role"), "assistant");
    /* $1 $2 $0 substituted, $$ is a dollar, $7 names no group and stays. */
    assert_string_equal(content_of(&r), "pong abc x42 [ping abc 42] $5 $7");
    /* "ping abc 42" is 11 bytes -> 3 tokens; the 32-byte reply -> 8. */
    json_t *usage = json_object_get(r.json, "usage");
    assert_int_equal(json_integer_value(json_object_get(usage, "prompt_tokens")), 3);
    assert_int_equal(json_integer_value(json_object_get(usage, "completion_tokens")), 8);
    assert_int_equal(json_integer_value(json_object_get(usage, "total_tokens")), 11);
    reply_free(&r);
}

static void test_rule_order_and_times(void **state)
{
    server *s = *state;
    assert_content(s, "once", "first");
    assert_content(s, "once", "later");
    assert_content(s, "once", "later");
    /* The model regex decides between two rules with the same match. */
    reply r = chat(s, "fake-large", "big model please");
    assert_string_equal(content_of(&r), "large");
    reply_free(&r);
    r = chat(s, "fake-small", "big model please");
    assert_string_equal(content_of(&r), "small");
    reply_free(&r);
    /* After a reset, `times` allows the first rule again. */
    r = request(s, "/reset", "", NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    assert_content(s, "once", "first");
}

static void test_on_system_any_and_parts(void **state)
{
    server *s = *state;
    const char *body =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"you are the judge\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hello \"},"
        "{\"type\":\"text\",\"text\":\"there\"}]}]}";
    reply r = request(s, "/v1/chat/completions", body, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(content_of(&r), "judge here");
    reply_free(&r);
    /* "any" sees every message, one per line; /chat/completions works too. */
    body = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"sys\"},"
           "{\"role\":\"user\",\"content\":\"both halves\"},"
           "{\"role\":\"assistant\",\"content\":null}]}";
    r = request(s, "/chat/completions", body, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(content_of(&r), "saw:halves");
    reply_free(&r);
}

static void test_error_statuses(void **state)
{
    server *s = *state;
    reply r = chat(s, "m", "rate limit me");
    assert_int_equal(r.status, 429);
    assert_non_null(r.json);
    json_t *error = json_object_get(r.json, "error");
    assert_string_equal(str_of(error, "message"), "Rate limit reached");
    assert_string_equal(str_of(error, "code"), "rate_limit_exceeded");
    assert_true(json_is_string(json_object_get(error, "type")));
    assert_true(json_is_null(json_object_get(error, "param")));
    assert_non_null(strstr(r.headers.data, "Retry-After: 1"));
    reply_free(&r);

    r = chat(s, "m", "break");
    assert_int_equal(r.status, 500);
    error = json_object_get(r.json, "error");
    assert_string_equal(str_of(error, "message"), "The server had an error");
    assert_string_equal(str_of(error, "type"), "server_error");
    reply_free(&r);
}

static void test_raw_body_and_drop(void **state)
{
    server *s = *state;
    reply r = chat(s, "m", "raw body");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body.data, "this is {not json");
    assert_null(r.json);
    reply_free(&r);
    r = chat(s, "m", "drop");
    assert_int_equal(r.curl_code, CURLE_GOT_NOTHING);
    reply_free(&r);
    /* The server survives both. */
    assert_content(s, "once", "first");
}

static void test_content_null_and_reasoning(void **state)
{
    server *s = *state;
    reply r = chat(s, "m", "think");
    assert_int_equal(r.status, 200);
    json_t *message = message_of(r.json);
    assert_non_null(message);
    json_t *content = json_object_get(message, "content");
    assert_non_null(content); /* present, and null */
    assert_true(json_is_null(content));
    assert_string_equal(str_of(message, "reasoning_content"),
                        "I thought hard");
    reply_free(&r);
    assert_content(s, "code", "Let me look.\n```repl\nprint(len(context))\n```\n");
}

static void test_require_key(void **state)
{
    server *s = *state;
    const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"once\"}]}";
    const char *wrong[] = {NULL, "sk-wrong"};
    for (size_t i = 0; i < 2; i++) {
        reply r = request(s, "/v1/chat/completions", body, wrong[i]);
        assert_int_equal(r.status, 401);
        json_t *error = json_object_get(r.json, "error");
        assert_string_equal(str_of(error, "message"),
                            "Incorrect API key provided");
        assert_string_equal(str_of(error, "type"), "invalid_request_error");
        assert_string_equal(str_of(error, "code"), "invalid_api_key");
        reply_free(&r);
    }
    reply r = request(s, "/v1/chat/completions", body, KEY);
    assert_int_equal(r.status, 200);
    assert_string_equal(content_of(&r), "first");
    reply_free(&r);
    r = request(s, "/v1/models", NULL, KEY);
    assert_int_equal(r.status, 200);
    assert_string_equal(str_of(r.json, "object"), "list");
    json_t *models = json_object_get(r.json, "data");
    assert_string_equal(str_of(json_array_get(models, 1), "id"), "fake-large");
    reply_free(&r);
}

static void test_counters_and_reset(void **state)
{
    server *s = *state;
    assert_content(s, "once", "first");
    assert_content(s, "once", "later");
    assert_content(s, "no such rule", "fakelm: no rule matched");
    reply r = request(s, "/counters", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "requests")), 3);
    assert_int_equal(json_integer_value(json_object_get(r.json, "in_flight")), 0);
    assert_int_equal(json_integer_value(json_object_get(r.json, "max_in_flight")), 1);
    assert_int_equal(json_integer_value(json_object_get(r.json, "unmatched")), 1);
    json_t *rules = json_object_get(r.json, "rules");
    assert_int_equal(json_array_size(rules), 15);
    assert_int_equal(json_integer_value(json_array_get(rules, 0)), 0);
    assert_int_equal(json_integer_value(json_array_get(rules, 1)), 1);
    assert_int_equal(json_integer_value(json_array_get(rules, 2)), 1);
    reply_free(&r);
    r = request(s, "/reset", "", NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    assert_int_equal(counter(s, "requests"), 0);
    assert_int_equal(counter(s, "unmatched"), 0);
    r = request(s, "/counters", NULL, NULL);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(r.json, "rules"), 1)), 0);
    reply_free(&r);
}

/* Sixteen requests parked on a 1 s rule at once: all must be in flight
 * together, which a server answering one request at a time cannot do. */
static void test_concurrent_latency(void **state)
{
    server *s = *state;
    enum { N = 16 };
    CURL *easy[N];
    buf bodies[N];
    char url[128];
    const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"wait\"}]}";
    CURLM *multi = curl_multi_init();
    int running = 0;
    snprintf(url, sizeof url, "http://127.0.0.1:%ld/v1/chat/completions", s->port);
    for (int i = 0; i < N; i++) {
        buf_init(&bodies[i], 1 << 16);
        easy[i] = curl_easy_init();
        curl_easy_setopt(easy[i], CURLOPT_URL, url);
        curl_easy_setopt(easy[i], CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(easy[i], CURLOPT_TIMEOUT, 60L);
        curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(easy[i], CURLOPT_WRITEDATA, &bodies[i]);
        curl_multi_add_handle(multi, easy[i]);
    }
    do {
        assert_int_equal(curl_multi_perform(multi, &running), CURLM_OK);
        if (running)
            curl_multi_poll(multi, NULL, 0, 100, NULL);
    } while (running);
    for (int i = 0; i < N; i++) {
        long status = 0;
        curl_easy_getinfo(easy[i], CURLINFO_RESPONSE_CODE, &status);
        assert_int_equal(status, 200);
        assert_non_null(strstr(bodies[i].data, "\"content\":\"waited\""));
        curl_multi_remove_handle(multi, easy[i]);
        curl_easy_cleanup(easy[i]);
        buf_free(&bodies[i]);
    }
    curl_multi_cleanup(multi);
    assert_int_equal(counter(s, "max_in_flight"), N);
    assert_int_equal(counter(s, "in_flight"), 0);
}

static void test_malformed_requests(void **state)
{
    server *s = *state;
    const char *bodies[] = {
        "{\"model\":\"m\",\"messages\":[",                      /* not JSON */
        "[1,2]",                                                /* not an object */
        "{\"model\":\"m\"}",                                    /* no messages */
        "{\"model\":\"m\",\"messages\":[]}",                    /* empty */
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", /* no model */
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":5}]}",
        "{\"model\":\"m\",\"messages\":[{\"content\":\"no role\"}]}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        reply r = request(s, "/v1/chat/completions", bodies[i], NULL);
        assert_int_equal(r.status, 400);
        json_t *error = json_object_get(r.json, "error");
        assert_true(json_is_string(json_object_get(error, "message")));
        assert_string_equal(str_of(error, "type"), "invalid_request_error");
        assert_non_null(json_object_get(error, "param"));
        assert_non_null(json_object_get(error, "code"));
        reply_free(&r);
    }
    reply r = request(s, "/v1/nothing", NULL, NULL);
    assert_int_equal(r.status, 404);
    assert_non_null(json_object_get(r.json, "error"));
    reply_free(&r);
    assert_content(s, "once", "first");
}

static void test_stream(void **state)
{
    server *s = *state;
    const char *body = "{\"model\":\"m\",\"stream\":true,"
                       "\"stream_options\":{\"include_usage\":true},\"messages\":"
                       "[{\"role\":\"user\",\"content\":\"code\"}]}";
    reply r = request(s, "/v1/chat/completions", body, NULL);
    buf content;
    bool finished = false, usage = false, done = false;
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers.data, "text/event-stream"));
    buf_init(&content, 1 << 16);
    for (char *line = r.body.data, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (*line == '\0')
            continue;
        assert_true(strncmp(line, "data: ", 6) == 0);
        assert_false(done); /* nothing after [DONE] */
        if (strcmp(line + 6, "[DONE]") == 0) {
            done = true;
            continue;
        }
        json_t *chunk = json_loads(line + 6, 0, NULL);
        assert_non_null(chunk);
        assert_string_equal(str_of(chunk, "object"), "chat.completion.chunk");
        json_t *choice = json_array_get(json_object_get(chunk, "choices"), 0);
        const char *piece = str_of(json_object_get(choice, "delta"), "content");
        if (piece)
            assert_int_equal(buf_puts(&content, piece), 0);
        if (json_is_string(json_object_get(choice, "finish_reason")))
            finished = true;
        json_t *u = json_object_get(chunk, "usage");
        if (json_is_object(u)) {
            assert_true(finished);
            assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), 13);
            usage = true;
        }
        json_decref(chunk);
    }
    assert_true(finished && usage && done);
    assert_string_equal(content.data, "Let me look.\n```repl\nprint(len(context))\n```\n");
    buf_free(&content);
    reply_free(&r);
}

static void test_log_lines(void **state)
{
    server *s = *state;
    assert_content(s, "once", "first");
    assert_content(s, "unknown", "fakelm: no rule matched");
    FILE *f = fopen(s->log_file, "r");
    char line[1024];
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    json_t *entry = json_loads(line, 0, NULL);
    assert_non_null(entry);
    assert_true(json_is_number(json_object_get(entry, "t")));
    assert_int_equal(json_integer_value(json_object_get(entry, "rule")), 1);
    assert_string_equal(str_of(entry, "model"), "test-model");
    assert_string_equal(str_of(entry, "last_user"), "once");
    assert_int_equal(json_integer_value(json_object_get(entry, "status")), 200);
    json_decref(entry);
    assert_non_null(fgets(line, sizeof line, f));
    entry = json_loads(line, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(entry, "rule")), -1);
    json_decref(entry);
    fclose(f);
}

/* Posts body (a JSON value, consumed) to path and returns the reply's "usage". */
static json_t *usage_of_post(const server *s, const char *path, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    reply r = request(s, path, text, NULL);
    free(text);
    assert_int_equal(r.status, 200);
    json_t *u = json_incref(json_object_get(r.json, "usage"));
    reply_free(&r);
    assert_non_null(u);
    return u;
}

static json_int_t int_at(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        fail_msg("no integer \"%s\"", key);
    return json_integer_value(v);
}

/* OpenAI's automatic prompt cache: a prefix of 1024 tokens or more, in steps
 * of 128, repeated byte for byte, is reported as cached_tokens. */
static void test_prompt_cache_openai(void **state)
{
    server *s = *state;
    char *system = malloc(6001);
    assert_non_null(system);
    memset(system, 'o', 6000);   /* 1500 tokens at 4 bytes each */
    system[6000] = '\0';
    json_t *first = json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:s}]}", "model", "m", "messages", "role", "system",
                              "content", system, "role", "user", "content", "ping a 1");
    json_t *u = usage_of_post(s, "/v1/chat/completions", json_deep_copy(first));
    assert_int_equal(int_at(json_object_get(u, "prompt_tokens_details"), "cached_tokens"), 0);
    json_decref(u);
    /* The next turn resends it and adds to the end: the prefix up to the last
     * 128-token step inside the old request is cached. */
    json_t *messages = json_object_get(first, "messages");
    json_array_append_new(messages, json_pack("{s:s, s:s}", "role", "assistant", "content", "pong a x1"));
    json_array_append_new(messages, json_pack("{s:s, s:s}", "role", "user", "content", "ping b 2"));
    u = usage_of_post(s, "/v1/chat/completions", json_deep_copy(first));
    assert_int_equal(int_at(u, "prompt_tokens"), (6000 + 8 + 9 + 8 + 3) / 4);
    assert_int_equal(int_at(json_object_get(u, "prompt_tokens_details"), "cached_tokens"), 1408);
    json_decref(u);
    /* One byte changed at the start: nothing matches any more. */
    system[0] = 'X';
    json_object_set_new(json_array_get(messages, 0), "content", json_string(system));
    u = usage_of_post(s, "/v1/chat/completions", first);
    assert_int_equal(int_at(json_object_get(u, "prompt_tokens_details"), "cached_tokens"), 0);
    json_decref(u);
    /* Below 1024 tokens nothing is cached. */
    json_t *small = json_pack("{s:s, s:[{s:s, s:s}]}", "model", "m", "messages", "role", "user", "content",
                              system + 2000);
    json_decref(usage_of_post(s, "/v1/chat/completions", json_deep_copy(small)));
    u = usage_of_post(s, "/v1/chat/completions", small);
    assert_int_equal(int_at(json_object_get(u, "prompt_tokens_details"), "cached_tokens"), 0);
    json_decref(u);
    assert_true(counter(s, "cached_tokens") == 1408);
    free(system);
}

/* Anthropic caches only at cache_control breakpoints: the first request
 * writes the prefix, a repeat reads it, and a later turn reads the old
 * breakpoint (looking back over its blocks) and writes the new one. Without
 * a breakpoint nothing is cached. */
static void test_prompt_cache_anthropic(void **state)
{
    server *s = *state;
    char *system = malloc(8001);
    assert_non_null(system);
    memset(system, 'a', 8000);   /* 2000 tokens */
    system[8000] = '\0';
    json_t *req = json_pack("{s:s, s:i, s:[{s:s, s:s, s:{s:s}}], s:[{s:s, s:[{s:s, s:s, s:{s:s}}]}]}",
                            "model", "claude-x", "max_tokens", 64, "system", "type", "text", "text", system,
                            "cache_control", "type", "ephemeral", "messages", "role", "user", "content",
                            "type", "text", "text", "ping a 1", "cache_control", "type", "ephemeral");
    json_t *u = usage_of_post(s, "/v1/messages", json_deep_copy(req));
    assert_int_equal(int_at(u, "cache_creation_input_tokens"), 2002);
    assert_int_equal(int_at(u, "cache_read_input_tokens"), 0);
    assert_int_equal(int_at(u, "input_tokens"), 0);
    json_decref(u);
    u = usage_of_post(s, "/v1/messages", json_deep_copy(req));
    assert_int_equal(int_at(u, "cache_creation_input_tokens"), 0);
    assert_int_equal(int_at(u, "cache_read_input_tokens"), 2002);
    json_decref(u);
    /* Next turn: the breakpoint moves to the new last message. */
    json_t *messages = json_object_get(req, "messages");
    json_object_del(json_array_get(json_object_get(json_array_get(messages, 0), "content"), 0), "cache_control");
    json_array_append_new(messages, json_pack("{s:s, s:s}", "role", "assistant", "content", "pong a x1"));
    json_array_append_new(messages, json_pack("{s:s, s:[{s:s, s:s, s:{s:s}}]}", "role", "user", "content",
                                              "type", "text", "text", "ping b 2", "cache_control", "type",
                                              "ephemeral"));
    u = usage_of_post(s, "/v1/messages", json_deep_copy(req));
    assert_int_equal(int_at(u, "cache_read_input_tokens"), 2002);
    assert_int_equal(int_at(u, "cache_creation_input_tokens"), (8000 + 8 + 9 + 8 + 3) / 4 - 2002);
    json_decref(u);
    /* The same prompt without any breakpoint: no cache at all. */
    json_t *plain = json_pack("{s:s, s:i, s:s, s:[{s:s, s:s}]}", "model", "claude-x", "max_tokens", 64,
                              "system", system, "messages", "role", "user", "content", "ping c 3");
    json_decref(usage_of_post(s, "/v1/messages", json_deep_copy(plain)));
    u = usage_of_post(s, "/v1/messages", plain);
    assert_int_equal(int_at(u, "cache_read_input_tokens"), 0);
    assert_int_equal(int_at(u, "cache_creation_input_tokens"), 0);
    assert_int_equal(int_at(u, "input_tokens"), (8000 + 8 + 3) / 4);
    json_decref(u);
    json_decref(req);
    free(system);
}

/* A bad script is a start-up error: exit 2 and a message naming the fault. */
static void check_bad_script(const char *script, const char *expected)
{
    char path[512], err_path[] = "/tmp/test_fakelm_err.XXXXXX";
    int err_fd = mkstemp(err_path), status = 0;
    char message[1024] = "";
    snprintf(path, sizeof path, SCRIPTS "%s", script);
    assert_true(err_fd >= 0);
    char *argv[] = {FAKELM, "--script", path, NULL};
    pid_t pid = spawn(argv, err_fd);
    assert_true(pid > 0);
    int i = 0;
    for (; i < 1000 && waitpid(pid, &status, WNOHANG) == 0; i++)
        sleep_ms(10);
    if (i == 1000) { /* it started serving: stop it before failing */
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("fakelm accepted %s", script);
    }
    ssize_t n = pread(err_fd, message, sizeof message - 1, 0);
    close(err_fd);
    unlink(err_path);
    assert_true(n > 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 2);
    if (!strstr(message, expected))
        fail_msg("stderr \"%s\" lacks \"%s\"", message, expected);
}

/* Oracle mode: labels for every Instance line from the key (escaped lines
 * too), "unknown" for the rest; facts only when their sentence is in the prompt. */
static void test_oracle_labels_and_facts(void **state)
{
    server *s = *state;
    reply r = chat(s, "m", "Label each instance below.\n\n"
                           "Date: Jan 01, 2022 || User: 10000 || Instance: Who founded the city of Velmora?\n"
                           "no instance on this line\n"
                           "Date: Jan 02, 2022 || User: 10007 || Instance: What does NASA stand for?\n"
                           "Date: Jan 03, 2022 || User: 10007 || Instance: Where is \"Kitanor\" located?\n"
                           "Date: Jan 04, 2022 || User: 10014 || Instance: Not in the key at all?");
    assert_int_equal(r.status, 200);
    assert_string_equal(content_of(&r), "human\nabbreviation\nlocation\nunknown");
    reply_free(&r);

    r = chat(s, "m", "Question: what is the founder of Velmora? Using only the documents below.\n\n"
                     "=== Document 9 ===\nThe founder of Velmoran is Zelpim.\n"
                     "=== Document 3 ===\nThe founder of Velmora is Radu.\n");
    assert_string_equal(content_of(&r), "Radu");
    reply_free(&r);
    /* The lookalike's document alone is not evidence for Velmora. */
    r = chat(s, "m", "Question: what is the founder of Velmora? Using only the documents below.\n\n"
                     "The founder of Velmoran is Zelpim.\n");
    assert_string_equal(content_of(&r), "NOT FOUND");
    reply_free(&r);
    r = chat(s, "m", "Question: what is the mentor of Velmora? Using only the documents below.\n\n"
                     "The founder of Velmora is Radu.\n");
    assert_string_equal(content_of(&r), "NOT FOUND");
    reply_free(&r);
    r = chat(s, "m", "anything else");
    assert_string_equal(content_of(&r), "plain");
    reply_free(&r);
}

/* An oracle rule without a key is refused at start-up. */
static void test_oracle_needs_a_key(void **state)
{
    (void)state;
    char *argv[] = {FAKELM, "--script", SCRIPTS "oracle_nokey.json", "--port", "0", NULL};
    int null_fd = open("/dev/null", O_WRONLY);
    pid_t pid = spawn(argv, null_fd);
    int status = 0;
    waitpid(pid, &status, 0);
    close(null_fd);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 2);
}

static void test_bad_script(void **state)
{
    check_bad_script("bad_regex.json", "rules[1].match");
    check_bad_script("bad_key.json", "repy");
    check_bad_script("no_such_file.json", "no_such_file.json");
}

static void test_sigterm_exits_zero(void **state)
{
    server *s = *state;
    assert_content(s, "once", "first");
    int status = server_stop(s);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_completion_shape_and_captures, setup_basic, teardown),
        cmocka_unit_test_setup_teardown(test_rule_order_and_times, setup_basic, teardown),
        cmocka_unit_test_setup_teardown(test_on_system_any_and_parts, setup_basic, teardown),
        cmocka_unit_test_setup_teardown(test_error_statuses, setup_basic, teardown),
        cmocka_unit_test_setup_teardown(test_raw_body_and_drop, setup_basic, teardown),
        cmocka_unit_test_setup_teardown(test_content_null_and_reasoning, setup_basic, teardown),
        cmocka_unit_test_setup_teardown(test_require_key, setup_key, teardown),
        cmocka_unit_test_setup_teardown(test_counters_and_reset, setup_basic, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_latency, setup_basic, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_requests, setup_basic, teardown),
        cmocka_unit_test_setup_teardown(test_stream, setup_basic, teardown),
        cmocka_unit_test_setup_teardown(test_log_lines, setup_basic, teardown),
        cmocka_unit_test_setup_teardown(test_prompt_cache_openai, setup_basic, teardown),
        cmocka_unit_test_setup_teardown(test_prompt_cache_anthropic, setup_basic, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_exits_zero, setup_basic, teardown),
        cmocka_unit_test(test_bad_script),
        cmocka_unit_test_setup_teardown(test_oracle_labels_and_facts, setup_oracle, teardown),
        cmocka_unit_test(test_oracle_needs_a_key),
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
