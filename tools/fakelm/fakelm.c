/* fakelm — a fake OpenAI-compatible chat-completions (and Anthropic Messages)
 * server for offline tests and benchmarks. Replies come from a JSON script of
 * regex rules; latency, error statuses, raw bodies, dropped connections, SSE
 * streams, stalls, resets mid-body, truncated streams and a seeded random
 * fault rate are scriptable. It binds 127.0.0.1 only. docs/fakelm.md is the manual.
 * This file is the server: matching a request to its rule, faults, counters,
 * the endpoints and main; the script, the oracle, the wire formats and the
 * timer that parks waiting connections are their own files (fakelm.h). */

#include "fakelm.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ server */

typedef struct server {
    script script;
    char *auth;            /* expected Authorization value, or NULL */
    FILE *log;
    double started;
    timer timer;
    pthread_mutex_t lock;  /* everything below, and writes to log */
    long requests, in_flight, max_in_flight, unmatched;
    long *hits;            /* per rule: requests it answered (also its use count) */
    unsigned long next_id;
    uint64_t fault_seq;    /* normal answers so far, the faults' random sequence */
    long fault_hits[FAULT_KINDS];
    long prompt_tokens, cached_tokens, cache_write_tokens;   /* of the normal answers */
    prompt_cache cache;    /* its own lock */
} server;

typedef enum { EP_NONE, EP_CHAT, EP_MESSAGES, EP_MODELS, EP_COUNTERS, EP_RESET, EP_BAD_METHOD } endpoint;

typedef struct request {
    endpoint endpoint;
    buf body;
    bool too_large;
    bool counted;          /* entered in_flight */
    bool prepared;         /* response decided; queue it on the next call */
    bool drop;
    unsigned status;
    long latency_ms;
    double arrived;        /* clock_now() when the headers came in */
    struct MHD_Response *response;
} request;

static void counters_enter(server *s, request *req)
{
    pthread_mutex_lock(&s->lock);
    s->requests++;
    if (++s->in_flight > s->max_in_flight)
        s->max_in_flight = s->in_flight;
    pthread_mutex_unlock(&s->lock);
    req->counted = true;
}

static void counters_leave(server *s)
{
    pthread_mutex_lock(&s->lock);
    s->in_flight--;
    pthread_mutex_unlock(&s->lock);
}

/* Takes one use of rule i if it has uses left; false if `times` is spent. */
static bool rule_take(server *s, size_t i)
{
    bool ok;
    pthread_mutex_lock(&s->lock);
    ok = s->script.rules[i].times < 0 || s->hits[i] < s->script.rules[i].times;
    if (ok)
        s->hits[i]++;
    pthread_mutex_unlock(&s->lock);
    return ok;
}

/* Length of the longest prefix of s holding at most n UTF-8 code points. */
static size_t utf8_prefix(const char *s, size_t len, size_t n)
{
    size_t i = 0, points = 0;
    for (; i < len; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80 && points++ == n)
            break;
    }
    return i;
}

static void log_request(server *s, long rule_index, const char *model, const char *last_user,
                        size_t last_user_len, unsigned status, const char *fault)
{
    if (!s->log)
        return;
    size_t n = last_user ? utf8_prefix(last_user, last_user_len, FAKELM_LOG_PREVIEW) : 0;
    json_t *line = json_pack("{s:f, s:I, s:s?, s:s%, s:i}", "t", clock_now() - s->started,
                             "rule", (json_int_t)rule_index, "model", model,
                             "last_user", last_user ? last_user : "", n, "status", (int)status);
    if (line && fault)
        json_object_set_new(line, "fault", json_string(fault));
    char *text = line ? json_dumps(line, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    if (text) {
        pthread_mutex_lock(&s->lock);
        fputs(text, s->log);
        fputc('\n', s->log);
        fflush(s->log);
        pthread_mutex_unlock(&s->lock);
    }
    free(text);
    json_decref(line);
}

static bool authorized(const server *s, struct MHD_Connection *conn)
{
    const char *got = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    return !s->auth || (got && strcmp(got, s->auth) == 0);
}

/* --------------------------------------------------------- chat completions */

typedef struct chat {
    json_t *root;
    const char *model;
    buf last_user, system, any;
    bool has_user;
    size_t content_bytes;  /* all message contents, for prompt_tokens */
    bool stream, include_usage;
    bool anthropic;        /* a Messages request (POST /v1/messages) */
} chat;

static void chat_free(chat *c)
{
    json_decref(c->root);
    buf_free(&c->last_user);
    buf_free(&c->system);
    buf_free(&c->any);
}

/* A message's content as text: a string, an array of parts whose "text"
 * fields are concatenated, or null/absent (e.g. an assistant tool call). */
static int content_text(json_t *content, buf *out)
{
    size_t i;
    json_t *part;
    if (!content || json_is_null(content))
        return 0;
    if (json_is_string(content))
        return buf_append(out, json_string_value(content), json_string_length(content));
    if (!json_is_array(content))
        return -1;
    json_array_foreach(content, i, part) {
        if (!json_is_object(part))
            return -1;
        json_t *text = json_object_get(part, "text");
        if (json_is_string(text) &&
            buf_append(out, json_string_value(text), json_string_length(text)) != 0)
            return -1;
    }
    return 0;
}

static int chat_message(chat *c, size_t index, json_t *message, buf *text)
{
    const char *role = json_string_value(json_object_get(message, "role"));
    if (!json_is_object(message) || !role)
        return -1;
    buf_reset(text);
    if (content_text(json_object_get(message, "content"), text) != 0)
        return -1;
    c->content_bytes += text->len;
    if (index > 0 && buf_puts(&c->any, "\n") != 0)
        return -1;
    if (buf_append(&c->any, text->data, text->len) != 0)
        return -1;
    if (strcmp(role, "user") == 0) {
        buf_reset(&c->last_user);
        c->has_user = true;
        return buf_append(&c->last_user, text->data, text->len);
    }
    if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
        if (c->system.len > 0 && buf_puts(&c->system, "\n") != 0)
            return -1;
        return buf_append(&c->system, text->data, text->len);
    }
    return 0;
}

/* Parses a request body; on error fills *message and *param for a 400. */
static int chat_parse(chat *c, const char *body, size_t len, const char **message,
                      const char **param)
{
    json_error_t jerr;
    json_t *messages, *message_json, *options;
    buf text;
    size_t i;
    int rc = -1;

    buf_init(&c->last_user, FAKELM_MAX_BODY);
    buf_init(&c->system, FAKELM_MAX_BODY);
    buf_init(&c->any, FAKELM_MAX_BODY);
    buf_init(&text, FAKELM_MAX_BODY);
    *param = NULL;
    c->root = json_loadb(body ? body : "", len, JSON_ALLOW_NUL, &jerr);
    if (!json_is_object(c->root)) {
        *message = "We could not parse the JSON body of your request. (HINT: This likely means "
                   "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                   "payload, but what was sent was not valid JSON.)";
        goto fail;
    }
    c->model = json_string_value(json_object_get(c->root, "model"));
    if (!c->model) {
        *message = "you must provide a model parameter";
        *param = "model";
        goto fail;
    }
    messages = json_object_get(c->root, "messages");
    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        *message = "'messages' must be a non-empty array";
        *param = "messages";
        goto fail;
    }
    if (c->anthropic) {
        /* The system prompt is a top-level string or array of text blocks. */
        json_t *system = json_object_get(c->root, "system");
        if (system && content_text(system, &c->system) != 0) {
            *message = "system: Input should be a valid string or a list of text blocks";
            goto fail;
        }
        c->content_bytes += c->system.len;
        if (buf_append(&c->any, c->system.data ? c->system.data : "", c->system.len) != 0)
            goto fail;
        if (!json_is_integer(json_object_get(c->root, "max_tokens"))) {
            *message = "max_tokens: Field required";
            goto fail;
        }
    }
    json_array_foreach(messages, i, message_json) {
        if (chat_message(c, i + (c->anthropic && c->any.len ? 1 : 0), message_json, &text) != 0) {
            *message = "each message needs a string 'role' and a 'content' that is a string, "
                       "an array of content parts or null";
            *param = "messages";
            goto fail;
        }
    }
    c->stream = json_is_true(json_object_get(c->root, "stream"));
    options = json_object_get(c->root, "stream_options");
    c->include_usage = json_is_true(json_object_get(options, "include_usage"));
    rc = 0;
fail:
    buf_free(&text);
    return rc;
}

static const char *chat_subject(const chat *c, rule_on on, size_t *len)
{
    const buf *b = on == ON_SYSTEM ? &c->system : on == ON_ANY ? &c->any : &c->last_user;
    *len = b->len;
    return b->data ? b->data : "";
}

/* Writes tmpl to out with $0..$9 replaced by capture groups of the match in
 * md ("" for a group that did not take part); "$$" is one dollar; a $N naming
 * a group the pattern lacks stays as written. */
static int reply_expand(const char *tmpl, const char *subject, pcre2_match_data *md,
                        uint32_t groups, buf *out)
{
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    uint32_t pairs = pcre2_get_ovector_count(md);
    for (const char *p = tmpl; *p; p++) {
        if (p[0] == '$' && p[1] == '$') {
            p++;
        } else if (p[0] == '$' && p[1] >= '0' && p[1] <= '9' && (uint32_t)(p[1] - '0') <= groups) {
            uint32_t g = (uint32_t)(p[1] - '0');
            p++;
            if (g < pairs && ov[2 * g] != PCRE2_UNSET &&
                buf_append(out, subject + ov[2 * g], ov[2 * g + 1] - ov[2 * g]) != 0)
                return -1;
            continue;
        }
        if (buf_append(out, p, 1) != 0)
            return -1;
    }
    return 0;
}

/* First rule, in script order, whose model and match regexes accept the
 * request and that has uses left; its reply is expanded into reply. -1: none. */
static long chat_match(server *s, const chat *c, buf *reply)
{
    pcre2_match_data *md = pcre2_match_data_create(FAKELM_CAPTURES, NULL);
    pcre2_match_context *mc = s->script.match_context;
    long found = -1;
    if (!md)
        return -1;
    for (size_t i = 0; i < s->script.nrules && found < 0; i++) {
        const rule *r = &s->script.rules[i];
        size_t len;
        const char *subject = chat_subject(c, r->on, &len);
        if (r->model &&
            pcre2_match(r->model, (PCRE2_SPTR)c->model, strlen(c->model), 0, 0, md, mc) < 0)
            continue;
        if (pcre2_match(r->match, (PCRE2_SPTR)subject, len, 0, 0, md, mc) < 0)
            continue;
        if (!rule_take(s, i))
            continue;
        found = (long)i;
        int rc = r->oracle == ORACLE_LABELS  ? oracle_labels(&s->script.oracle, subject, len, reply)
                 : r->oracle == ORACLE_FACTS ? oracle_facts(&s->script.oracle, subject, len, md, reply)
                                             : reply_expand(r->reply, subject, md, r->groups, reply);
        if (rc != 0)
            buf_reset(reply);
    }
    pcre2_match_data_free(md);
    return found;
}

static void add_rule_headers(struct MHD_Response *resp, const rule *r)
{
    const char *name;
    json_t *value;
    if (!resp || !r || !r->headers)
        return;
    json_object_foreach(r->headers, name, value)
        MHD_add_response_header(resp, name, json_string_value(value));
}

static size_t tokens_of(size_t bytes)
{
    return (bytes + 3) / 4;
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* The fault for the next normal answer, or -1 for none. */
static int fault_pick(server *s)
{
    const faults *f = &s->script.faults;
    if (f->rate <= 0 || f->nkinds == 0)
        return -1;
    pthread_mutex_lock(&s->lock);
    uint64_t n = ++s->fault_seq;
    pthread_mutex_unlock(&s->lock);
    uint64_t h = splitmix64(f->seed * 0x100000001B3ULL + n);
    if ((double)(h >> 11) / 9007199254740992.0 >= f->rate)
        return -1;
    int kind = (int)f->kinds[(h & 0xFFFF) % f->nkinds];
    pthread_mutex_lock(&s->lock);
    s->fault_hits[kind]++;
    pthread_mutex_unlock(&s->lock);
    return kind;
}

static bool authorized_anthropic(const server *s, struct MHD_Connection *conn)
{
    const char *got = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "x-api-key");
    return !s->auth || (got && strcmp(got, s->auth + 7) == 0); /* s->auth is "Bearer KEY" */
}

/* An error in the endpoint's own shape. */
static struct MHD_Response *chat_error(const chat *c, unsigned status, const char *message, const rule *r,
                                       const char *param)
{
    if (c->anthropic)
        return response_anthropic_error(status, message, r ? r->error_type : NULL);
    return response_error(message, r && r->error_type ? r->error_type : error_type_for(status), param,
                          r ? r->error_code : NULL);
}

/* The normal answer (status 200) to a parsed request, with the rule's
 * delivery and the fault, if one was drawn, applied. */
static struct MHD_Response *chat_answer(server *s, request *req, struct MHD_Connection *conn,
                                        const chat *c, const rule *r, const char *reply,
                                        size_t reply_len, int fault)
{
    delivery d = {.reset_at = r ? r->reset_after : -1};
    bool truncate = r && r->truncate;
    if (r && r->stall_ms > 0) {
        d.stall_ms = r->stall_ms;
        d.stall_at = (size_t)r->stall_after;
        d.keepalive_ms = r->keepalive_ms;
    }
    completion out = {.created = (long)clock_wall(), .model = c->model};
    pthread_mutex_lock(&s->lock);
    unsigned long id = ++s->next_id;
    pthread_mutex_unlock(&s->lock);
    snprintf(out.id, sizeof out.id, c->anthropic ? "msg_fakelm%lu" : "chatcmpl-fakelm%lu", id);
    out.content = r && r->content_null ? NULL : reply;
    out.content_len = out.content ? reply_len : 0;
    out.reasoning = r ? r->reasoning : NULL;
    switch (fault) {
    case FAULT_TRUNCATED:
        truncate = true;
        break;
    case FAULT_EMPTY_REASONING:
        out.content = NULL;
        out.content_len = 0;
        out.reasoning = "fakelm: thought about it but wrote no answer";
        break;
    case FAULT_STALL:
        d.stall_ms = s->script.faults.stall_ms;
        d.stall_at = 0;
        break;
    case FAULT_MALFORMED: {
        static const char bad[] = "{\"id\":\"fakelm-malformed\",\"choices\":[{\"message\":";
        return response_body(str_dup_len(bad, sizeof bad - 1), sizeof bad - 1, "application/json", &d,
                             conn, &s->timer);
    }
    default:
        break;
    }
    out.usage.prompt = tokens_of(c->content_bytes);
    out.usage.completion = tokens_of(out.content_len +
                                     (out.reasoning ? strlen(out.reasoning) : 0));
    prompt_cache_account(&s->cache, c->root, c->anthropic, &out.usage);
    pthread_mutex_lock(&s->lock);
    s->prompt_tokens += (long)out.usage.prompt;
    s->cached_tokens += (long)out.usage.cached;
    s->cache_write_tokens += (long)out.usage.cache_write;
    pthread_mutex_unlock(&s->lock);
    if (c->stream) {
        sse_body *sse = c->anthropic ? stream_anthropic(&out, truncate)
                                     : stream_openai(&out, c->include_usage, truncate);
        if (!sse)
            return NULL;
        if (fault == FAULT_RESET)
            d.reset_at = (long)(sse->data.len / 2);
        return response_paced(sse, "text/event-stream", &d, conn, &s->timer);
    }
    char *text = c->anthropic ? anthropic_text(&out) : completion_text(&out);
    size_t len = text ? strlen(text) : 0;
    if (fault == FAULT_RESET)
        d.reset_at = (long)(len / 2);
    if (truncate)
        len /= 2; /* a body cut short but ended cleanly: malformed JSON */
    return response_body(text, len, "application/json", &d, conn, &s->timer);
}

/* Decides the answer to one chat request: sets req->status, latency and drop,
 * and returns the response (NULL only when dropping or out of memory). */
static struct MHD_Response *chat_respond(server *s, request *req, struct MHD_Connection *conn)
{
    chat c = {.anthropic = req->endpoint == EP_MESSAGES};
    buf reply;
    const char *message = "out of memory", *param = NULL;
    const rule *r = NULL;
    struct MHD_Response *resp = NULL;
    long index = -1;
    int fault = -1;

    buf_init(&reply, FAKELM_MAX_BODY);
    req->latency_ms = 0;
    if (c.anthropic ? !authorized_anthropic(s, conn) : !authorized(s, conn)) {
        req->status = MHD_HTTP_UNAUTHORIZED;
        resp = c.anthropic ? response_anthropic_error(401, "invalid x-api-key", NULL)
                           : response_unauthorized();
        goto done;
    }
    if (req->too_large) {
        req->status = 413;
        resp = chat_error(&c, 413, "request body too large", NULL, NULL);
        goto done;
    }
    if (chat_parse(&c, req->body.data, req->body.len, &message, &param) != 0) {
        req->status = MHD_HTTP_BAD_REQUEST;
        resp = chat_error(&c, 400, message, NULL, param);
        goto done;
    }

    index = chat_match(s, &c, &reply);
    if (index < 0) {
        pthread_mutex_lock(&s->lock);
        s->unmatched++;
        pthread_mutex_unlock(&s->lock);
        buf_puts(&reply, "fakelm: no rule matched");
    } else {
        r = &s->script.rules[index];
    }
    req->latency_ms = r && r->latency_ms >= 0 ? r->latency_ms : s->script.latency_ms;
    req->status = r ? (unsigned)r->status : MHD_HTTP_OK;
    req->drop = r && r->drop;
    if (req->drop) {
        req->status = 0; /* logged as 0: no response was sent */
        goto done;
    } else if (r && r->body) {
        const char *type = r->content_type ? r->content_type
                           : c.stream      ? "text/event-stream"
                                           : "application/json";
        delivery d = {.reset_at = r->reset_after, .stall_ms = r->stall_ms,
                      .stall_at = (size_t)r->stall_after, .keepalive_ms = r->keepalive_ms};
        resp = response_body(str_dup_len(r->body, r->body_len), r->body_len, type, &d, conn, &s->timer);
    } else if (req->status != MHD_HTTP_OK) {
        resp = chat_error(&c, req->status, reply.data ? reply.data : "", r, NULL);
    } else {
        fault = fault_pick(s);
        if (fault == FAULT_429 || fault == FAULT_500 || fault == FAULT_503) {
            req->status = fault == FAULT_429 ? 429 : fault == FAULT_500 ? 500 : 503;
            resp = chat_error(&c, req->status, "fakelm: injected fault", NULL, NULL);
            if (resp && fault == FAULT_429)
                MHD_add_response_header(resp, "Retry-After", s->script.faults.retry_after);
            goto done;
        }
        resp = chat_answer(s, req, conn, &c, r, reply.data ? reply.data : "", reply.len, fault);
    }
    add_rule_headers(resp, r);
done:
    log_request(s, index, c.model, c.has_user ? c.last_user.data : NULL, c.last_user.len,
                req->status, fault >= 0 ? fault_names[fault] : NULL);
    chat_free(&c);
    buf_free(&reply);
    return resp;
}

/* ------------------------------------------------------- other endpoints */

static struct MHD_Response *models_respond(server *s, struct MHD_Connection *conn, unsigned *status)
{
    size_t i;
    json_t *id, *data;
    if (!authorized(s, conn)) {
        *status = MHD_HTTP_UNAUTHORIZED;
        return response_unauthorized();
    }
    *status = MHD_HTTP_OK;
    data = json_array();
    json_array_foreach(s->script.models, i, id) {
        json_array_append_new(data, json_pack("{s:O, s:s, s:I, s:s}", "id", id, "object", "model",
                                              "created", (json_int_t)0, "owned_by", "fakelm"));
    }
    return response_json(json_pack("{s:s, s:o}", "object", "list", "data", data));
}

static struct MHD_Response *counters_respond(server *s)
{
    json_t *hits = json_array();
    json_t *out;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->script.nrules; i++)
        json_array_append_new(hits, json_integer(s->hits[i]));
    json_t *fault_counts = json_object();
    for (size_t k = 0; k < FAULT_KINDS; k++)
        json_object_set_new(fault_counts, fault_names[k], json_integer(s->fault_hits[k]));
    out = json_pack("{s:I, s:I, s:I, s:o, s:I, s:o, s:I, s:I, s:I}", "requests", (json_int_t)s->requests,
                    "in_flight", (json_int_t)s->in_flight, "max_in_flight",
                    (json_int_t)s->max_in_flight, "rules", hits, "unmatched",
                    (json_int_t)s->unmatched, "faults", fault_counts, "prompt_tokens",
                    (json_int_t)s->prompt_tokens, "cached_tokens", (json_int_t)s->cached_tokens,
                    "cache_write_tokens", (json_int_t)s->cache_write_tokens);
    pthread_mutex_unlock(&s->lock);
    return response_json(out);
}

/* in_flight is live state, not a counter: requests still being answered keep
 * it, and max_in_flight restarts from it. */
static struct MHD_Response *reset_respond(server *s)
{
    pthread_mutex_lock(&s->lock);
    s->requests = 0;
    s->unmatched = 0;
    s->max_in_flight = s->in_flight;
    memset(s->hits, 0, s->script.nrules * sizeof *s->hits);
    memset(s->fault_hits, 0, sizeof s->fault_hits);
    s->fault_seq = 0;
    s->prompt_tokens = s->cached_tokens = s->cache_write_tokens = 0;
    pthread_mutex_unlock(&s->lock);
    return response_json(json_pack("{s:b}", "reset", 1));
}

/* ----------------------------------------------------------- MHD callbacks */

static endpoint route(const char *url, const char *method)
{
    static const struct {
        const char *url, *method;
        endpoint endpoint;
    } routes[] = {
        {"/v1/chat/completions", "POST", EP_CHAT}, {"/chat/completions", "POST", EP_CHAT},
        {"/v1/messages", "POST", EP_MESSAGES},     {"/messages", "POST", EP_MESSAGES},
        {"/v1/models", "GET", EP_MODELS},          {"/models", "GET", EP_MODELS},
        {"/counters", "GET", EP_COUNTERS},         {"/reset", "POST", EP_RESET},
    };
    endpoint found = EP_NONE;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(url, routes[i].url) != 0)
            continue;
        if (strcmp(method, routes[i].method) == 0)
            return routes[i].endpoint;
        found = EP_BAD_METHOD;
    }
    return found;
}

static void request_prepare(server *s, request *req, struct MHD_Connection *conn)
{
    req->status = MHD_HTTP_OK;
    switch (req->endpoint) {
    case EP_CHAT:
    case EP_MESSAGES:
        req->response = chat_respond(s, req, conn);
        break;
    case EP_MODELS:
        req->response = models_respond(s, conn, &req->status);
        break;
    case EP_COUNTERS:
        req->response = counters_respond(s);
        break;
    case EP_RESET:
        req->response = reset_respond(s);
        break;
    case EP_BAD_METHOD:
        req->status = MHD_HTTP_METHOD_NOT_ALLOWED;
        req->response = response_error("method not allowed", "invalid_request_error", NULL, NULL);
        break;
    case EP_NONE:
        req->status = MHD_HTTP_NOT_FOUND;
        req->response = response_error("unknown URL", "invalid_request_error", NULL, NULL);
        break;
    }
    req->prepared = true;
}

/* MHD calls this once when headers arrive, once per body piece, once when the
 * body is complete, and once more after a resume. The answer is decided when
 * the body is complete; with latency the connection is parked in the timer. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    server *s = cls;
    request *req = *con_cls;
    enum MHD_Result ret;

    if (!req) {
        if (!(req = calloc(1, sizeof *req)))
            return MHD_NO;
        buf_init(&req->body, FAKELM_MAX_BODY);
        req->arrived = clock_now();
        req->endpoint = route(url, method);
        *con_cls = req;
        if (req->endpoint == EP_CHAT || req->endpoint == EP_MESSAGES)
            counters_enter(s, req);
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (!req->too_large && buf_append(&req->body, upload, *upload_size) != 0)
            req->too_large = true;
        *upload_size = 0;
        return MHD_YES;
    }
    if (!req->prepared) {
        request_prepare(s, req, conn);
        /* Latency counts from arrival, like a real server's time to answer:
         * the time spent preparing the answer (oracle lookups) and waiting
         * behind other requests on this one thread is part of it, so the fake
         * adds exactly the configured latency and no queueing of its own. */
        double due = req->arrived + (double)req->latency_ms / 1000.0;
        if (req->latency_ms > 0 && due > clock_now()) {
            MHD_suspend_connection(conn);
            if (timer_add(&s->timer, conn, due) != 0)
                MHD_resume_connection(conn);
            return MHD_YES;
        }
    }
    if (req->drop || !req->response)
        return MHD_NO;
    ret = MHD_queue_response(conn, req->status, req->response);
    MHD_destroy_response(req->response);
    req->response = NULL;
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    server *s = cls;
    request *req = *con_cls;
    if (!req)
        return;
    if (req->counted)
        counters_leave(s);
    if (req->response)
        MHD_destroy_response(req->response);
    buf_free(&req->body);
    free(req);
    *con_cls = NULL;
}

/* -------------------------------------------------------------------- main */

typedef struct options {
    const char *script, *port_file, *log, *key, *oracle_key;
    long port, latency_ms;
} options;

static void print_usage(FILE *out)
{
    fputs("usage: fakelm --script FILE [--port N] [--port-file FILE] [--latency-ms N]\n"
          "              [--log FILE] [--require-key KEY] [--oracle-key FILE]\n"
          "\n"
          "A fake OpenAI-compatible chat-completions server on 127.0.0.1 for tests.\n"
          "\n"
          "  --script FILE      JSON rules deciding each reply (see docs/fakelm.md)\n"
          "  --port N           port to listen on; 0 (default) picks a free one\n"
          "  --port-file FILE   write the chosen port to FILE (atomically) once listening\n"
          "  --latency-ms N     delay before every answer; overrides the script's\n"
          "                     latency_ms (a rule's own latency_ms still wins)\n"
          "  --log FILE         append one JSON line per chat request\n"
          "  --require-key KEY  answer 401 unless 'Authorization: Bearer KEY'\n"
          "  --oracle-key FILE  answer key (taskgen's key.jsonl) for \"oracle\" rules;\n"
          "                     overrides the script's \"oracle\": {\"key\": FILE}\n"
          "  --help             this text\n"
          "\n"
          "Endpoints: POST /v1/chat/completions (and /chat/completions), GET /v1/models,\n"
          "GET /counters, POST /reset.\n"
          "Prints 'listening on 127.0.0.1:PORT' when ready; exits 0 on SIGTERM/SIGINT,\n"
          "1 if it cannot serve, 2 on a bad command line or script.\n",
          out);
}

/* 0 to run, 1 when --help was printed, -1 on a usage error (message printed). */
static int options_parse(options *o, int argc, char **argv)
{
    memset(o, 0, sizeof *o);
    o->latency_ms = -1;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_usage(stdout);
            return 1;
        }
        if (!value) {
            fprintf(stderr, "fakelm: %s: unknown option or missing value\n", arg);
            return -1;
        }
        i++;
        if (strcmp(arg, "--script") == 0) {
            o->script = value;
        } else if (strcmp(arg, "--port-file") == 0) {
            o->port_file = value;
        } else if (strcmp(arg, "--log") == 0) {
            o->log = value;
        } else if (strcmp(arg, "--require-key") == 0) {
            o->key = value;
        } else if (strcmp(arg, "--oracle-key") == 0) {
            o->oracle_key = value;
        } else if (strcmp(arg, "--port") == 0) {
            if (parse_long(value, &o->port) != 0 || o->port < 0 || o->port > 65535) {
                fprintf(stderr, "fakelm: --port: not a port number: %s\n", value);
                return -1;
            }
        } else if (strcmp(arg, "--latency-ms") == 0) {
            if (parse_long(value, &o->latency_ms) != 0 || o->latency_ms < 0 ||
                o->latency_ms > FAKELM_MAX_LATENCY_MS) {
                fprintf(stderr, "fakelm: --latency-ms: expected 0..%ld: %s\n",
                        FAKELM_MAX_LATENCY_MS, value);
                return -1;
            }
        } else {
            fprintf(stderr, "fakelm: unknown option %s\n", arg);
            return -1;
        }
    }
    if (!o->script) {
        fputs("fakelm: --script FILE is required (try --help)\n", stderr);
        return -1;
    }
    return 0;
}

/* Loads the answer key named by --oracle-key or the script (a relative path
 * in the script is taken from the script's directory). A rule with "oracle"
 * and no key is an error, so a misnamed key never turns into "unknown" labels. */
static int oracle_prepare(script *sc, const char *script_path, const char *override, char *err,
                          size_t errlen)
{
    bool needed = false;
    for (size_t i = 0; i < sc->nrules; i++)
        needed = needed || sc->rules[i].oracle != ORACLE_NONE;
    const char *key = override ? override : sc->oracle_key;
    if (!key) {
        if (needed)
            snprintf(err, errlen, "a rule uses \"oracle\" but no answer key was given "
                     "(script \"oracle\": {\"key\": FILE} or --oracle-key FILE)");
        return needed ? -1 : 0;
    }
    buf path;
    buf_init(&path, PATH_MAX);
    const char *slash = strrchr(script_path, '/');
    int rc = override || key[0] == '/' || !slash
                 ? buf_puts(&path, key)
                 : buf_printf(&path, "%.*s/%s", (int)(slash - script_path), script_path, key);
    if (rc == 0) {
        double started = clock_now();
        rc = oracle_load(&sc->oracle, path.data, err, errlen);
        if (rc == 0)
            fprintf(stderr, "fakelm: oracle key %s: %zu entries in %.3f s\n", path.data,
                    sc->oracle.count, clock_now() - started);
    } else {
        snprintf(err, errlen, "oracle key path too long");
    }
    buf_free(&path);
    return rc;
}

/* Temp file + rename so a waiting test never reads a half-written number. */
static int port_file_write(const char *path, unsigned port)
{
    buf tmp, text;
    int fd = -1, rc = -1;
    buf_init(&tmp, PATH_MAX);
    buf_init(&text, 32);
    if (buf_printf(&tmp, "%s.tmp.%ld", path, (long)getpid()) != 0 ||
        buf_printf(&text, "%u\n", port) != 0)
        goto fail;
    fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write_full(fd, text.data, text.len) != 0 || close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp.data, path) != 0)
        goto fail;
    rc = 0;
fail:
    if (fd >= 0)
        close(fd);
    if (rc != 0 && tmp.data)
        unlink(tmp.data);
    buf_free(&tmp);
    buf_free(&text);
    return rc;
}

/* Many concurrent clients need many descriptors; take what the hard limit allows. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static struct MHD_Daemon *daemon_start(server *s, long port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    /* One event-loop thread: answers are computed in microseconds and waiting
     * happens in the timer, so more threads would only add locking. */
    return MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG,
        (uint16_t)port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)FAKELM_MAX_CONNECTIONS,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_CONNECTION_TIMEOUT, 300u,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
}

static int serve(server *s, const options *o)
{
    sigset_t stop_signals;
    struct MHD_Daemon *daemon = NULL;
    const union MHD_DaemonInfo *info;
    int sig, rc = 1;

    /* Blocked before any thread starts, so only sigwait below sees them. */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    if (timer_start(&s->timer, FAKELM_MAX_CONNECTIONS + 16) != 0) {
        fputs("fakelm: cannot start the timer thread\n", stderr);
        goto fail;
    }
    daemon = daemon_start(s, o->port);
    if (!daemon) {
        fprintf(stderr, "fakelm: cannot listen on 127.0.0.1:%ld\n", o->port);
        goto fail;
    }
    info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (!info || info->port == 0) {
        fputs("fakelm: cannot learn the bound port\n", stderr);
        goto fail;
    }
    if (o->port_file && port_file_write(o->port_file, info->port) != 0) {
        fprintf(stderr, "fakelm: cannot write %s: %s\n", o->port_file, strerror(errno));
        goto fail;
    }
    printf("listening on 127.0.0.1:%u\n", (unsigned)info->port);
    fflush(stdout);
    while (sigwait(&stop_signals, &sig) != 0)
        ;
    rc = 0;
fail:
    timer_stop(&s->timer); /* resumes every parked connection first */
    if (daemon)
        MHD_stop_daemon(daemon);
    return rc;
}

int main(int argc, char **argv)
{
    options o;
    server s;
    char err[512];
    int rc;

    memset(&s, 0, sizeof s);
    rc = options_parse(&o, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    if (script_load(&s.script, o.script, err, sizeof err) != 0) {
        fprintf(stderr, "fakelm: bad script %s: %s\n", o.script, err);
        return 2;
    }
    if (oracle_prepare(&s.script, o.script, o.oracle_key, err, sizeof err) != 0) {
        fprintf(stderr, "fakelm: %s\n", err);
        script_free(&s.script);
        return 2;
    }
    rc = 2;
    if (o.latency_ms >= 0)
        s.script.latency_ms = o.latency_ms;
    s.hits = calloc(s.script.nrules + 1, sizeof *s.hits);
    /* 2^20 prefixes (8 MiB): a long benchmark's worth before the first eviction. */
    if (!s.hits || prompt_cache_init(&s.cache, 20) != 0)
        goto done;
    s.cache.enabled = !s.script.prompt_cache.off;
    if (s.script.prompt_cache.min_tokens > 0)
        s.cache.min_tokens = (size_t)s.script.prompt_cache.min_tokens;
    if (s.script.prompt_cache.step_tokens > 0)
        s.cache.step_tokens = (size_t)s.script.prompt_cache.step_tokens;
    if (o.key) {
        buf auth;
        buf_init(&auth, 4096);
        if (buf_printf(&auth, "Bearer %s", o.key) != 0) {
            fputs("fakelm: --require-key: key too long\n", stderr);
            buf_free(&auth);
            goto done;
        }
        s.auth = buf_take(&auth);
    }
    if (o.log && !(s.log = fopen(o.log, "ae"))) {
        fprintf(stderr, "fakelm: cannot open log %s: %s\n", o.log, strerror(errno));
        goto done;
    }
    pthread_mutex_init(&s.lock, NULL);
    s.started = clock_now();
    rc = serve(&s, &o);
    pthread_mutex_destroy(&s.lock);
done:
    if (s.log)
        fclose(s.log);
    free(s.auth);
    free(s.hits);
    prompt_cache_free(&s.cache);
    script_free(&s.script);
    return rc;
}
