/* pool — what the handles of one process share: the dispatchers built from a
 * config, a sandbox zygote, named inputs in zygotes of their own, and the
 * reference count that keeps them alive until the last handle is gone. */
#include "pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "endpoint.h"
#include "runlog.h"
#include "sandbox.h"
#include "util.h"

/* Most named inputs of a pool: each is a zygote process. */
#define POOL_MAX_INPUTS 256
/* Bytes of warnings a pool keeps. */
#define POOL_WARNINGS_MAX (64 * 1024)

const char *const pool_fixed_keys[] = {
    "base_url", "api_key", "provider", "sub_base_url", "sub_api_key", "sub_provider",
    "concurrency", "request_timeout", "max_retries", "rpm", "tpm", "stall_timeout",
    "max_output_tokens", "reasoning_effort", "temperature", "sandbox_exe", "unsafe_no_sandbox",
    NULL,
};

typedef struct pool_input_rec {
    engine_preloaded pre;
    char *arg;
} pool_input_rec;

struct rlm_pool {
    pthread_mutex_t lock;      /* guards refs, inputs and the messages */
    int refs;
    rlm_config *cfg;           /* our copy */
    char *sandbox_exe;
    lm *root, *sub;
    sandbox_factory *factory;
    pool_input_rec inputs[POOL_MAX_INPUTS];
    size_t n_inputs;
    buf warnings;
    char errmsg[2048];
    /* The run log the handles share (pool_log_acquire): one connection,
     * one writer at a time, opened by the first run that ends. */
    pthread_mutex_t log_lock;
    runlog *log;
    char *log_path;
};

/* ---- dispatchers ---------------------------------------------------------- */

static long config_long(const rlm_config *cfg, const char *key)
{
    long v = 0;
    parse_long(rlm_config_get(cfg, key), &v);
    return v;
}

static double config_double(const rlm_config *cfg, const char *key)
{
    double v = 0;
    parse_double(rlm_config_get(cfg, key), &v);
    return v;
}

/* One dispatcher for a comma-separated list of base URLs (lm_new copies
 * what it keeps). */
static lm *start_lm(const lm_options *base, const char *urls_value, char *err, size_t errlen)
{
    lm_options lo = *base;
    const char *urls[ENDPOINT_MAX_URLS];
    char *storage = strdup(urls_value);
    if (!storage) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    size_t n = 0;
    for (char *p = storage; p && n < ENDPOINT_MAX_URLS;) {
        urls[n++] = p;
        char *comma = strchr(p, ',');
        if (comma)
            *comma++ = '\0';
        p = comma;
    }
    lo.base_url = urls[0];
    lo.extra_base_urls = n > 1 ? urls + 1 : NULL;
    lo.n_extra_base_urls = n - 1;
    lm *m = lm_new(&lo, err, errlen);
    free(storage);
    return m;
}

int pool_dispatchers_new(const rlm_config *cfg, lm **root, lm **sub, char *err, size_t errlen)
{
    *root = *sub = NULL;
    lm_options lo = {
        .api_key = rlm_config_get(cfg, "api_key"),
        .concurrency = (int)config_long(cfg, "concurrency"),
        .timeout = config_double(cfg, "request_timeout"),
        .max_retries = (int)config_long(cfg, "max_retries"),
        .provider = rlm_config_get(cfg, "provider"),
        .requests_per_minute = config_double(cfg, "rpm"),
        .tokens_per_minute = config_double(cfg, "tpm"),
        .stall_timeout = config_double(cfg, "stall_timeout"),
        /* A malformed or empty 2xx reply is retried like a 5xx: passing it on
         * would hand model code a non-answer as if it were one. */
        .retry_bad_replies = 1,
    };
    if (lo.max_retries == 0)
        lo.max_retries = -1;   /* lm_options: 0 means "default", -1 "none" */
    if (rlm_config_get(cfg, "max_output_tokens")[0])
        lo.max_tokens = config_long(cfg, "max_output_tokens");
    if (rlm_config_get(cfg, "reasoning_effort")[0])
        lo.reasoning_effort = rlm_config_get(cfg, "reasoning_effort");
    if (rlm_config_get(cfg, "temperature")[0]) {
        lo.send_temperature = 1;
        lo.temperature = config_double(cfg, "temperature");
    }
    const char *base_url = rlm_config_get(cfg, "base_url");
    const char *sub_base_url = rlm_config_get(cfg, "sub_base_url");
    const char *sub_provider = rlm_config_get(cfg, "sub_provider");
    const char *sub_key = rlm_config_get(cfg, "sub_api_key");
    char why[1024];
    *root = start_lm(&lo, base_url, why, sizeof why);
    if (!*root) {
        snprintf(err, errlen, "cannot start the model dispatcher: %s", why);
        return -1;
    }
    if (strcmp(sub_base_url, base_url) != 0 || strcmp(sub_provider, lo.provider) != 0 || sub_key[0]) {
        /* The root's key follows sub-calls only to the hosts it was given for. */
        lm_options so = lo;
        so.provider = sub_provider;
        so.api_key = sub_key[0] ? sub_key : endpoint_list_within(sub_base_url, base_url) ? lo.api_key : "";
        *sub = start_lm(&so, sub_base_url, why, sizeof why);
        if (!*sub) {
            snprintf(err, errlen, "cannot start the sub-call dispatcher: %s", why);
            lm_free(*root);
            *root = NULL;
            return -1;
        }
    }
    return 0;
}

/* ---- the pool --------------------------------------------------------------- */

rlm_status rlm_pool_new(const rlm_config *cfg, rlm_pool **out)
{
    rlm_pool *p = calloc(1, sizeof *p);
    *out = p;
    if (!p)
        return RLM_ERR_NOMEM;
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->log_lock, NULL);
    p->refs = 1;
    buf_init(&p->warnings, POOL_WARNINGS_MAX);
    p->cfg = rlm_config_copy(cfg);
    if (!p->cfg) {
        snprintf(p->errmsg, sizeof p->errmsg, "out of memory");
        return RLM_ERR_NOMEM;
    }
    p->sandbox_exe = sandbox_find_exe(rlm_config_get(p->cfg, "sandbox_exe"));
    if (!p->sandbox_exe) {
        snprintf(p->errmsg, sizeof p->errmsg, "out of memory");
        return RLM_ERR_NOMEM;
    }
    char err[1500];
    if (pool_dispatchers_new(p->cfg, &p->root, &p->sub, err, sizeof err) != 0) {
        snprintf(p->errmsg, sizeof p->errmsg, "%s", err);
        return RLM_ERR_USAGE;
    }
    sandbox_options so = {.exe_path = p->sandbox_exe,
                          .unsafe_no_sandbox = config_long(p->cfg, "unsafe_no_sandbox") != 0};
    if (sandbox_factory_new(&so, &p->factory, err, sizeof err) != 0) {
        p->factory = NULL;
        snprintf(p->errmsg, sizeof p->errmsg, "cannot start the sandbox zygote: %s", err);
        return RLM_ERR_SANDBOX;
    }
    return RLM_OK;
}

rlm_pool *pool_hold(rlm_pool *p)
{
    if (p) {
        pthread_mutex_lock(&p->lock);
        p->refs++;
        pthread_mutex_unlock(&p->lock);
    }
    return p;
}

void pool_release(rlm_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    int last = --p->refs == 0;
    pthread_mutex_unlock(&p->lock);
    if (!last)
        return;
    for (size_t i = 0; i < p->n_inputs; i++) {
        engine_preloaded_clear(&p->inputs[i].pre);
        free(p->inputs[i].arg);
    }
    runlog_close(p->log);
    free(p->log_path);
    pthread_mutex_destroy(&p->log_lock);
    sandbox_factory_free(p->factory);
    lm_free(p->sub);
    lm_free(p->root);
    free(p->sandbox_exe);
    rlm_config_free(p->cfg);
    buf_free(&p->warnings);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

void rlm_pool_free(rlm_pool *pool)
{
    pool_release(pool);
}

const char *rlm_pool_errmsg(const rlm_pool *pool)
{
    return pool ? pool->errmsg : "out of memory";
}

const char *rlm_pool_warnings(const rlm_pool *pool)
{
    return pool && pool->warnings.data ? pool->warnings.data : "";
}

void pool_set_error(rlm_pool *p, const char *message)
{
    pthread_mutex_lock(&p->lock);
    snprintf(p->errmsg, sizeof p->errmsg, "%s", message);
    pthread_mutex_unlock(&p->lock);
}

void pool_add_warnings(rlm_pool *p, const char *lines)
{
    pthread_mutex_lock(&p->lock);
    buf_puts(&p->warnings, lines);   /* past the bound, later ones are dropped */
    pthread_mutex_unlock(&p->lock);
}

const rlm_config *pool_config(const rlm_pool *p) { return p->cfg; }
lm *pool_root_lm(const rlm_pool *p) { return p->root; }
lm *pool_sub_lm(const rlm_pool *p) { return p->sub; }
struct sandbox_factory *pool_factory(const rlm_pool *p) { return p->factory; }
const char *pool_sandbox_exe(const rlm_pool *p) { return p->sandbox_exe; }

const engine_preloaded *pool_input(rlm_pool *p, const char *name, const char **arg)
{
    const engine_preloaded *found = NULL;
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < p->n_inputs && !found; i++) {
        if (strcmp(p->inputs[i].pre.name, name) == 0) {
            found = &p->inputs[i].pre;
            if (arg)
                *arg = p->inputs[i].arg;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return found;
}

int pool_add_input(rlm_pool *p, engine_preloaded *pre, const char *arg)
{
    char *copy = strdup(arg);
    pthread_mutex_lock(&p->lock);
    int ok = copy && p->n_inputs < POOL_MAX_INPUTS;
    if (ok) {
        p->inputs[p->n_inputs].pre = *pre;
        p->inputs[p->n_inputs].arg = copy;
        p->n_inputs++;
        memset(pre, 0, sizeof *pre);
    } else {
        snprintf(p->errmsg, sizeof p->errmsg, copy ? "a pool holds at most %d named inputs"
                                                   : "out of memory", POOL_MAX_INPUTS);
    }
    pthread_mutex_unlock(&p->lock);
    if (!ok) {
        free(copy);
        engine_preloaded_clear(pre);
        return -1;
    }
    return 0;
}

rlm_status rlm_pool_inputs(const rlm_pool *pool, char **out)
{
    rlm_pool *p = (rlm_pool *)pool;   /* the lock only */
    json_t *list = json_array();
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; list && i < p->n_inputs; i++) {
        const engine_preloaded *pre = &p->inputs[i].pre;
        json_array_append_new(list, json_pack("{s:s,s:I,s:I,s:I,s:b}", "name", pre->name,
                                              "documents", (json_int_t)pre->documents, "bytes",
                                              (json_int_t)pre->bytes, "tokens",
                                              (json_int_t)pre->tokens, "direct",
                                              pre->direct_text != NULL));
    }
    pthread_mutex_unlock(&p->lock);
    *out = list ? json_dumps(list, JSON_COMPACT) : NULL;
    json_decref(list);
    return *out ? RLM_OK : RLM_ERR_NOMEM;
}

/* One connection for all the handles: with one each, the runs that end
 * together wait for each other's write lock in SQLite's busy handler, which
 * sleeps 1, 2, 5, 10 ms... (1,000 short runs of one rlm batch slept ~4 times
 * each), where the next writer here wakes as soon as the lock is free. */
int pool_log_acquire(rlm_pool *p, const char *path, runlog **log, char *err, size_t errlen)
{
    *log = NULL;
    pthread_mutex_lock(&p->log_lock);
    if (p->log_path && strcmp(p->log_path, path) != 0) {
        pthread_mutex_unlock(&p->log_lock);
        return 0;
    }
    if (!p->log) {
        char *copy = strdup(path);
        p->log = copy ? runlog_open(path, err, errlen) : NULL;
        if (!copy)
            snprintf(err, errlen, "out of memory");
        if (!p->log) {
            free(copy);
            pthread_mutex_unlock(&p->log_lock);
            return -1;
        }
        p->log_path = copy;
    }
    *log = p->log;
    return 1;
}

void pool_log_release(rlm_pool *p)
{
    pthread_mutex_unlock(&p->log_lock);
}
