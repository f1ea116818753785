/* rlm — the public API (include/rlm.h): configuration by key and value, run
 * handles that own a dispatcher, a trace and a context, and rlm_ask. */
#include "rlm.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "context.h"
#include "engine.h"
#include "lm.h"
#include "trace.h"
#include "util.h"

#ifndef RLM_SANDBOX_BUILD_PATH
#define RLM_SANDBOX_BUILD_PATH ""
#endif
#ifndef RLM_SANDBOX_INSTALL_PATH
#define RLM_SANDBOX_INSTALL_PATH ""
#endif

const char *rlm_version(void)
{
    return RLM_VERSION;
}

const char *rlm_status_name(rlm_status status)
{
    switch (status) {
    case RLM_OK: return "ok";
    case RLM_NO_ANSWER: return "no answer";
    case RLM_ERR_USAGE: return "usage error";
    case RLM_ERR_INPUT: return "input error";
    case RLM_ERR_MODEL: return "model error";
    case RLM_ERR_SANDBOX: return "sandbox error";
    case RLM_ERR_NOMEM: return "out of memory";
    case RLM_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

void rlm_string_free(char *s)
{
    free(s);
}

/* ---- configuration --------------------------------------------------------- */

typedef enum option_kind { OPT_TEXT, OPT_URL, OPT_INT, OPT_SECONDS, OPT_SIZE, OPT_BOOL } option_kind;

typedef struct option_spec {
    const char *key;
    option_kind kind;
    const char *fallback;   /* default; NULL = unset */
    long min, max;          /* for OPT_INT */
} option_spec;

enum {
    OPT_BASE_URL, OPT_API_KEY, OPT_MODEL, OPT_SUB_MODEL, OPT_MAX_ITERATIONS, OPT_CONCURRENCY,
    OPT_CELL_TIMEOUT, OPT_OUTPUT_LIMIT, OPT_REQUEST_TIMEOUT, OPT_MAX_RETRIES, OPT_SANDBOX_MEMORY,
    OPT_SANDBOX_EXE, OPT_UNSAFE_NO_SANDBOX, OPT_TRACE, OPT_COUNT
};

static const option_spec option_specs[OPT_COUNT] = {
    [OPT_BASE_URL] = {"base_url", OPT_URL, "https://api.openai.com/v1", 0, 0},
    [OPT_API_KEY] = {"api_key", OPT_TEXT, "", 0, 0},
    [OPT_MODEL] = {"model", OPT_TEXT, "gpt-5-mini", 0, 0},
    [OPT_SUB_MODEL] = {"sub_model", OPT_TEXT, NULL, 0, 0},
    [OPT_MAX_ITERATIONS] = {"max_iterations", OPT_INT, "30", 1, 10000},
    [OPT_CONCURRENCY] = {"concurrency", OPT_INT, "64", 1, 4096},
    [OPT_CELL_TIMEOUT] = {"cell_timeout", OPT_SECONDS, "120", 0, 0},
    [OPT_OUTPUT_LIMIT] = {"output_limit", OPT_INT, "20000", 100, 100000000},
    [OPT_REQUEST_TIMEOUT] = {"request_timeout", OPT_SECONDS, "600", 0, 0},
    [OPT_MAX_RETRIES] = {"max_retries", OPT_INT, "3", 0, 100},
    [OPT_SANDBOX_MEMORY] = {"sandbox_memory", OPT_SIZE, NULL, 0, 0},
    [OPT_SANDBOX_EXE] = {"sandbox_exe", OPT_TEXT, NULL, 0, 0},
    [OPT_UNSAFE_NO_SANDBOX] = {"unsafe_no_sandbox", OPT_BOOL, "0", 0, 0},
    [OPT_TRACE] = {"trace", OPT_TEXT, NULL, 0, 0},
};

struct rlm_config {
    char *values[OPT_COUNT];   /* NULL = the default */
    char errmsg[512];
};

rlm_config *rlm_config_new(void)
{
    return calloc(1, sizeof(rlm_config));
}

void rlm_config_free(rlm_config *cfg)
{
    if (!cfg)
        return;
    for (int i = 0; i < OPT_COUNT; i++)
        free(cfg->values[i]);
    free(cfg);
}

static int option_find(const char *key)
{
    for (int i = 0; i < OPT_COUNT; i++)
        if (strcmp(option_specs[i].key, key) == 0)
            return i;
    return -1;
}

/* Checks value against the option's kind. 0 if valid, else -1 with why. */
static int option_check(const option_spec *spec, const char *value, char *why, size_t whylen)
{
    long n;
    double d;
    size_t size;
    switch (spec->kind) {
    case OPT_TEXT:
        return 0;
    case OPT_URL:
        if (strncmp(value, "http://", 7) == 0 || strncmp(value, "https://", 8) == 0)
            return 0;
        snprintf(why, whylen, "%s must start with http:// or https:// (got '%s')", spec->key, value);
        return -1;
    case OPT_INT:
        if (parse_long(value, &n) == 0 && n >= spec->min && n <= spec->max)
            return 0;
        snprintf(why, whylen, "%s must be a whole number from %ld to %ld (got '%s')", spec->key,
                 spec->min, spec->max, value);
        return -1;
    case OPT_SECONDS:
        if (parse_double(value, &d) == 0 && d > 0 && d <= 86400 * 7)
            return 0;
        snprintf(why, whylen, "%s must be a positive number of seconds (got '%s')", spec->key, value);
        return -1;
    case OPT_SIZE:
        if (parse_size(value, &size) == 0 && size >= (64u << 20))
            return 0;
        snprintf(why, whylen, "%s must be a size of at least 64M, like 4G or 512M (got '%s')",
                 spec->key, value);
        return -1;
    case OPT_BOOL:
        if (strcmp(value, "0") == 0 || strcmp(value, "1") == 0)
            return 0;
        snprintf(why, whylen, "%s must be 0 or 1 (got '%s')", spec->key, value);
        return -1;
    }
    return -1;
}

rlm_status rlm_config_set(rlm_config *cfg, const char *key, const char *value)
{
    cfg->errmsg[0] = '\0';
    int i = key ? option_find(key) : -1;
    if (i < 0) {
        snprintf(cfg->errmsg, sizeof cfg->errmsg, "unknown option '%s'", key ? key : "(null)");
        return RLM_ERR_USAGE;
    }
    if (!value) {
        free(cfg->values[i]);
        cfg->values[i] = NULL;
        return RLM_OK;
    }
    if (option_check(&option_specs[i], value, cfg->errmsg, sizeof cfg->errmsg) != 0)
        return RLM_ERR_USAGE;
    char *copy = strdup(value);
    if (!copy) {
        snprintf(cfg->errmsg, sizeof cfg->errmsg, "out of memory");
        return RLM_ERR_NOMEM;
    }
    free(cfg->values[i]);
    cfg->values[i] = copy;
    return RLM_OK;
}

const char *rlm_config_get(const rlm_config *cfg, const char *key)
{
    int i = key ? option_find(key) : -1;
    if (i < 0)
        return NULL;
    if (cfg->values[i])
        return cfg->values[i];
    if (i == OPT_SUB_MODEL)
        return rlm_config_get(cfg, "model");
    return option_specs[i].fallback ? option_specs[i].fallback : "";
}

const char *rlm_config_errmsg(const rlm_config *cfg)
{
    return cfg->errmsg;
}

/* ---- run handles ------------------------------------------------------------ */

struct rlm {
    rlm_config *cfg;           /* our copy */
    lm *lm;
    trace *trace;
    context *ctx;
    char *sandbox_exe;
    engine_params params;
    rlm_progress_fn progress;
    void *progress_data;
    char *report;
    char errmsg[2048];
};

static rlm_status rlm_error(rlm *r, rlm_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static rlm_status rlm_error(rlm *r, rlm_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->errmsg, sizeof r->errmsg, fmt, ap);
    va_end(ap);
    return status;
}

static int is_executable(const char *path)
{
    return path && path[0] && access(path, X_OK) == 0;
}

/* The sandbox executable: the configured path, else next to the running
 * program (an installed or built `rlm`), else ../libexec/rlm beside it, else
 * this build's own, else the install prefix. */
static char *find_sandbox_exe(const char *configured)
{
    if (configured && configured[0])
        return strdup(configured);
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            buf b;
            buf_init(&b, PATH_MAX * 2);
            buf_printf(&b, "%s/rlm-sandbox", self);
            if (is_executable(b.data))
                return buf_take(&b);
            buf_reset(&b);
            buf_printf(&b, "%s/../libexec/rlm/rlm-sandbox", self);
            if (is_executable(b.data))
                return buf_take(&b);
            buf_free(&b);
        }
    }
    if (is_executable(RLM_SANDBOX_BUILD_PATH))
        return strdup(RLM_SANDBOX_BUILD_PATH);
    return strdup(RLM_SANDBOX_INSTALL_PATH);
}

static rlm_config *config_copy(const rlm_config *cfg)
{
    rlm_config *copy = rlm_config_new();
    if (!copy)
        return NULL;
    for (int i = 0; i < OPT_COUNT; i++) {
        if (cfg && cfg->values[i] && !(copy->values[i] = strdup(cfg->values[i]))) {
            rlm_config_free(copy);
            return NULL;
        }
    }
    return copy;
}

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

/* The run's configuration for the trace, without the key. */
static json_t *config_json(const rlm_config *cfg)
{
    json_t *j = json_object();
    for (int i = 0; i < OPT_COUNT; i++) {
        const char *key = option_specs[i].key;
        const char *value = rlm_config_get(cfg, key);
        if (i == OPT_API_KEY)
            json_object_set_new(j, key, json_string(value[0] ? "(set)" : "(none)"));
        else
            json_object_set_new(j, key, value[0] ? json_string(value) : json_null());
    }
    return j;
}

rlm_status rlm_new(const rlm_config *cfg, rlm **out)
{
    rlm *r = calloc(1, sizeof *r);
    *out = r;
    if (!r)
        return RLM_ERR_NOMEM;
    r->cfg = config_copy(cfg);
    if (!r->cfg)
        return rlm_error(r, RLM_ERR_NOMEM, "out of memory");
    r->sandbox_exe = find_sandbox_exe(rlm_config_get(r->cfg, "sandbox_exe"));
    if (!r->sandbox_exe)
        return rlm_error(r, RLM_ERR_NOMEM, "out of memory");

    engine_params *p = &r->params;
    p->model = rlm_config_get(r->cfg, "model");
    p->sub_model = rlm_config_get(r->cfg, "sub_model");
    p->max_iterations = (int)config_long(r->cfg, "max_iterations");
    p->output_limit = (size_t)config_long(r->cfg, "output_limit");
    p->cell_timeout = config_double(r->cfg, "cell_timeout");
    p->sandbox_exe = r->sandbox_exe;
    p->unsafe_no_sandbox = config_long(r->cfg, "unsafe_no_sandbox") != 0;
    const char *mem = rlm_config_get(r->cfg, "sandbox_memory");
    if (mem[0])
        parse_size(mem, &p->sandbox_memory);

    char err[1024];
    const char *trace_path = rlm_config_get(r->cfg, "trace");
    if (trace_path[0]) {
        r->trace = trace_open(trace_path, err, sizeof err);
        if (!r->trace)
            return rlm_error(r, RLM_ERR_INPUT, "%s", err);
    }

    lm_options lo = {
        .base_url = rlm_config_get(r->cfg, "base_url"),
        .api_key = rlm_config_get(r->cfg, "api_key"),
        .concurrency = (int)config_long(r->cfg, "concurrency"),
        .timeout = config_double(r->cfg, "request_timeout"),
        .max_retries = (int)config_long(r->cfg, "max_retries"),
    };
    if (lo.max_retries == 0)
        lo.max_retries = -1;   /* lm_options: 0 means "default", -1 "none" */
    r->lm = lm_new(&lo, err, sizeof err);
    if (!r->lm)
        return rlm_error(r, RLM_ERR_INTERNAL, "cannot start the model dispatcher: %s", err);

    json_t *start = json_pack("{s:s,s:o,s:s}", "version", RLM_VERSION, "config", config_json(r->cfg),
                              "sandbox_exe", r->sandbox_exe);
    trace_event(r->trace, "run_start", start);
    return RLM_OK;
}

void rlm_free(rlm *r)
{
    if (!r)
        return;
    lm_free(r->lm);
    trace_close(r->trace);
    context_free(r->ctx);
    rlm_config_free(r->cfg);
    free(r->sandbox_exe);
    free(r->report);
    free(r);
}

const char *rlm_errmsg(const rlm *r)
{
    return r ? r->errmsg : "out of memory";
}

rlm_status rlm_set_context_file(rlm *r, const char *path)
{
    char err[1024];
    context *c;
    if (!path)
        return rlm_error(r, RLM_ERR_USAGE, "no context path given");
    if (context_open_file(path, &c, err, sizeof err) != 0)
        return rlm_error(r, RLM_ERR_INPUT, "%s", err);
    context_free(r->ctx);
    r->ctx = c;
    return RLM_OK;
}

rlm_status rlm_set_context_text(rlm *r, const char *text, size_t len)
{
    char err[1024];
    context *c;
    if (!text && len)
        return rlm_error(r, RLM_ERR_USAGE, "context text is NULL");
    if (context_open_text(text ? text : "", len, &c, err, sizeof err) != 0)
        return rlm_error(r, RLM_ERR_INPUT, "%s", err);
    context_free(r->ctx);
    r->ctx = c;
    return RLM_OK;
}

void rlm_set_progress(rlm *r, rlm_progress_fn fn, void *userdata)
{
    r->progress = fn;
    r->progress_data = userdata;
}

static void rlm_build_report(rlm *r, const engine_outcome *o)
{
    json_t *j = json_pack("{s:s?,s:s,s:s?,s:i,s:I,s:I,s:I,s:o,s:f,s:s?,s:s,s:s,s:i}",
                          "answer", o->answer, "status", rlm_status_name(o->status),
                          "error", o->error, "iterations", o->iterations,
                          "blocks", (json_int_t)o->blocks, "sub_calls", (json_int_t)o->sub_calls,
                          "sub_call_errors", (json_int_t)o->sub_call_errors,
                          "usage", lm_usage_json(r->lm), "elapsed_seconds", o->elapsed,
                          "sandbox_layers", o->sandbox_layers, "model", r->params.model,
                          "sub_model", r->params.sub_model, "max_in_flight", lm_max_in_flight(r->lm));
    free(r->report);
    r->report = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
}

rlm_status rlm_ask(rlm *r, const char *question, char **answer)
{
    *answer = NULL;
    r->errmsg[0] = '\0';
    if (!question || !question[0])
        return rlm_error(r, RLM_ERR_USAGE, "the question is empty");
    if (!r->lm)
        return rlm_error(r, RLM_ERR_USAGE, "this handle failed to open: %s", r->errmsg);

    engine_outcome o;
    rlm_status st = engine_run(&r->params, r->lm, r->trace, r->ctx, question, r->progress,
                               r->progress_data, &o);
    rlm_build_report(r, &o);
    if (st == RLM_OK) {
        *answer = o.answer;
        o.answer = NULL;
    } else if (o.error) {
        rlm_error(r, st, "%s", o.error);
    }
    engine_outcome_clear(&o);
    return st;
}

const char *rlm_report_json(rlm *r)
{
    return r->report;
}
