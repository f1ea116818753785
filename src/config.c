/* config — rlm_config (include/rlm.h): the table of options (key, kind,
 * default, range), checking a value against its kind, and resolving the
 * defaults that depend on other options (the provider and base URLs, from the
 * provider table). The API (rlm.c) reads a configuration through
 * rlm_config_get and the helpers in config.h. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "endpoint.h"
#include "session.h"
#include "util.h"

/* Most base URLs in one comma-separated base_url. */
#define MAX_BASE_URLS ENDPOINT_MAX_URLS

typedef enum option_kind {
    OPT_TEXT, OPT_URLS, OPT_INT, OPT_SECONDS, OPT_SIZE, OPT_BOOL, OPT_NUMBER, OPT_DOLLARS,
    OPT_BYTES,          /* a size, 0 and up: 300, 64K, 256M */
    OPT_PROVIDER, OPT_MODE_NAME,
    OPT_SHARE,          /* a number in (0, 1] */
    OPT_FRACTION,       /* a number > 0 */
    OPT_SESSION_NAME,   /* 1-100 of [A-Za-z0-9._-], not starting with '.' */
} option_kind;

typedef struct option_spec {
    const char *key;
    option_kind kind;
    const char *fallback;   /* default; NULL = unset */
    long min, max;          /* for OPT_INT */
} option_spec;

enum {
    OPT_BASE_URL, OPT_API_KEY, OPT_MODEL, OPT_SUB_MODEL, OPT_MAX_ITERATIONS, OPT_CONCURRENCY,
    OPT_CELL_TIMEOUT, OPT_OUTPUT_LIMIT, OPT_REQUEST_TIMEOUT, OPT_MAX_RETRIES, OPT_SANDBOX_MEMORY,
    OPT_SANDBOX_EXE, OPT_UNSAFE_NO_SANDBOX, OPT_TRACE, OPT_MAX_COST, OPT_MAX_TOKENS, OPT_MAX_TIME,
    OPT_MAX_SUBCALLS, OPT_CACHE, OPT_CACHE_DIR, OPT_PRICES, OPT_RECORD, OPT_REPLAY, OPT_SUB_BASE_URL,
    OPT_PROVIDER_KEY, OPT_RPM, OPT_TPM, OPT_MAX_OUTPUT_TOKENS, OPT_REASONING_EFFORT, OPT_TEMPERATURE,
    OPT_STREAM, OPT_STALL_TIMEOUT, OPT_INCLUDE, OPT_EXCLUDE, OPT_JSONL_FIELD, OPT_JSON_INPUT,
    OPT_SYSTEM_PROMPT, OPT_MODE,
    OPT_DIRECT_THRESHOLD, OPT_MAX_DEPTH, OPT_MAX_CHILDREN, OPT_CHILD_SHARE, OPT_CONTEXT_WINDOW,
    OPT_COMPACT_AT, OPT_SESSION, OPT_SESSION_DB, OPT_SUB_PROVIDER, OPT_SUB_API_KEY, OPT_STRICT,
    OPT_CELL_WALL, OPT_MAX_SANDBOXES, OPT_MAX_CHILD_BATCH, OPT_SNAPSHOT_MAX, OPT_LOG, OPT_LOG_DB,
    OPT_LOG_MAX, OPT_LOG_COMMAND, OPT_ROOTS, OPT_PROMPT_CACHE, OPT_DEDUPE,
    OPT_COUNT
};

static const option_spec option_specs[OPT_COUNT] = {
    /* base_url, provider, sub_base_url and sub_provider have no fixed
     * default: rlm_config_get resolves them (config_resolved). */
    [OPT_BASE_URL] = {"base_url", OPT_URLS, NULL, 0, 0},
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
    [OPT_SNAPSHOT_MAX] = {"snapshot_max", OPT_SIZE, "256M", 1024, 0},
    [OPT_SANDBOX_EXE] = {"sandbox_exe", OPT_TEXT, NULL, 0, 0},
    [OPT_UNSAFE_NO_SANDBOX] = {"unsafe_no_sandbox", OPT_BOOL, "0", 0, 0},
    [OPT_TRACE] = {"trace", OPT_TEXT, NULL, 0, 0},
    [OPT_MAX_COST] = {"max_cost", OPT_DOLLARS, NULL, 0, 0},
    [OPT_MAX_TOKENS] = {"max_tokens", OPT_INT, NULL, 1, 1000000000000000L},
    [OPT_MAX_TIME] = {"max_time", OPT_SECONDS, NULL, 0, 0},
    [OPT_MAX_SUBCALLS] = {"max_subcalls", OPT_INT, "10000", 0, 1000000000000L},
    [OPT_CACHE] = {"cache", OPT_BOOL, "0", 0, 0},
    [OPT_CACHE_DIR] = {"cache_dir", OPT_TEXT, NULL, 0, 0},
    [OPT_PRICES] = {"prices", OPT_TEXT, NULL, 0, 0},
    [OPT_RECORD] = {"record", OPT_TEXT, NULL, 0, 0},
    [OPT_REPLAY] = {"replay", OPT_TEXT, NULL, 0, 0},
    [OPT_SUB_BASE_URL] = {"sub_base_url", OPT_URLS, NULL, 0, 0},
    [OPT_PROVIDER_KEY] = {"provider", OPT_PROVIDER, NULL, 0, 0},
    [OPT_RPM] = {"rpm", OPT_NUMBER, "0", 0, 0},
    [OPT_TPM] = {"tpm", OPT_NUMBER, "0", 0, 0},
    [OPT_MAX_OUTPUT_TOKENS] = {"max_output_tokens", OPT_INT, NULL, 1, 10000000},
    [OPT_REASONING_EFFORT] = {"reasoning_effort", OPT_TEXT, NULL, 0, 0},
    [OPT_TEMPERATURE] = {"temperature", OPT_NUMBER, NULL, 0, 0},
    [OPT_STREAM] = {"stream", OPT_BOOL, NULL, 0, 0},   /* unset: stream when progress is shown */
    [OPT_STALL_TIMEOUT] = {"stall_timeout", OPT_SECONDS, NULL, 0, 0},
    [OPT_INCLUDE] = {"include", OPT_TEXT, NULL, 0, 0},
    [OPT_EXCLUDE] = {"exclude", OPT_TEXT, NULL, 0, 0},
    [OPT_JSONL_FIELD] = {"jsonl_field", OPT_TEXT, NULL, 0, 0},
    [OPT_JSON_INPUT] = {"json_input", OPT_BOOL, "0", 0, 0},
    [OPT_SYSTEM_PROMPT] = {"system_prompt", OPT_TEXT, NULL, 0, 0},
    /* "rlm" until the bench runner and the attack tests ask for the RLM
     * loop themselves: auto would answer their small inputs directly. */
    [OPT_MODE] = {"mode", OPT_MODE_NAME, "auto", 0, 0},
    [OPT_DIRECT_THRESHOLD] = {"direct_threshold", OPT_INT, "32000", 0, 1000000000L},
    [OPT_MAX_DEPTH] = {"max_depth", OPT_INT, "1", 1, 16},
    [OPT_MAX_CHILDREN] = {"max_children", OPT_INT, "8", 1, 256},
    [OPT_CHILD_SHARE] = {"child_share", OPT_SHARE, "0.5", 0, 0},
    [OPT_CONTEXT_WINDOW] = {"context_window", OPT_INT, "128000", 1000, 100000000L},
    [OPT_COMPACT_AT] = {"compact_at", OPT_FRACTION, "0.85", 0, 0},
    [OPT_SESSION] = {"session", OPT_SESSION_NAME, NULL, 0, 0},
    [OPT_SESSION_DB] = {"session_db", OPT_TEXT, NULL, 0, 0},
    [OPT_SUB_PROVIDER] = {"sub_provider", OPT_PROVIDER, NULL, 0, 0},
    [OPT_SUB_API_KEY] = {"sub_api_key", OPT_TEXT, NULL, 0, 0},
    [OPT_STRICT] = {"strict", OPT_BOOL, "0", 0, 0},
    /* Bounds a cell cannot escape (docs/sandbox.md, "Bounds"). */
    [OPT_CELL_WALL] = {"cell_wall", OPT_SECONDS, "1800", 0, 0},
    [OPT_MAX_SANDBOXES] = {"max_sandboxes", OPT_INT, "32", 1, 4096},
    [OPT_MAX_CHILD_BATCH] = {"max_child_batch", OPT_INT, "256", 1, 65536},
    /* The run log (src/runlog.c): off in the library, on in the rlm command. */
    [OPT_LOG] = {"log", OPT_BOOL, "0", 0, 0},
    [OPT_LOG_DB] = {"log_db", OPT_TEXT, NULL, 0, 0},
    [OPT_LOG_MAX] = {"log_max", OPT_BYTES, "256M", 0, 0},
    [OPT_LOG_COMMAND] = {"log_command", OPT_TEXT, "library", 0, 0},
    /* Inputs confined to these directories (ingest.h, "roots"). */
    [OPT_ROOTS] = {"roots", OPT_TEXT, NULL, 0, 0},
    /* What a run costs (docs/costs.md). */
    [OPT_PROMPT_CACHE] = {"prompt_cache", OPT_BOOL, "1", 0, 0},
    [OPT_DEDUPE] = {"dedupe", OPT_BOOL, NULL, 0, 0},   /* unset: on unless temperature > 0 */
};

/* Limits with a default that "none" switches off. */
static int none_allowed(const char *key)
{
    return strcmp(key, "max_subcalls") == 0 || strcmp(key, "cell_wall") == 0;
}

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

/* A comma-separated list of 1 to MAX_BASE_URLS http(s) URLs. */
static int urls_check(const char *key, const char *value, char *why, size_t whylen)
{
    endpoint_url *urls = calloc(MAX_BASE_URLS, sizeof *urls);
    char err[512];
    size_t n;
    int rc = urls ? endpoint_parse_list(value, urls, MAX_BASE_URLS, &n, err, sizeof err) : -1;
    if (rc != 0)
        snprintf(why, whylen, "%s: %.*s", key, (int)(whylen > 64 ? whylen - 64 : 0),
                 urls ? err : "out of memory");
    free(urls);
    return rc;
}

/* Checks value against the option's kind. 0 if valid, else -1 with why. */
static int option_check(const option_spec *spec, const char *value, char *why, size_t whylen)
{
    long n;
    double d;
    size_t size;
    if (strcmp(value, "none") == 0 && none_allowed(spec->key))
        return 0;
    switch (spec->kind) {
    case OPT_TEXT:
        return 0;
    case OPT_URLS:
        return urls_check(spec->key, value, why, whylen);
    case OPT_NUMBER:
        if (parse_double(value, &d) == 0 && d >= 0 && d <= 1e12)
            return 0;
        snprintf(why, whylen, "%s must be a number >= 0 (got '%s')", spec->key, value);
        return -1;
    case OPT_DOLLARS:
        if (parse_double(value, &d) == 0 && d > 0 && d <= 1e9)
            return 0;
        snprintf(why, whylen, "%s must be a positive number of US dollars, like 0.50 (got '%s')",
                 spec->key, value);
        return -1;
    case OPT_PROVIDER: {
        if (strcmp(value, "") == 0 || endpoint_provider_named(value))
            return 0;
        char names[128];
        endpoint_provider_names(names, sizeof names);
        snprintf(why, whylen, "%s must be %s (got '%s')", spec->key, names, value);
        return -1;
    }
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
    case OPT_SIZE: {
        /* min, when set, is in bytes; else 64M (a sandbox's address space) */
        size_t least = spec->min > 0 ? (size_t)spec->min : (size_t)64 << 20;
        if (parse_size(value, &size) == 0 && size >= least)
            return 0;
        snprintf(why, whylen, "%s must be a size of at least %s, like 4G or 512M (got '%s')",
                 spec->key, spec->min > 0 ? "1K" : "64M", value);
        return -1;
    }
    case OPT_BYTES:
        if (parse_size(value, &size) == 0)
            return 0;
        snprintf(why, whylen, "%s must be a size in bytes, like 300, 64K or 256M (got '%s')",
                 spec->key, value);
        return -1;
    case OPT_MODE_NAME:
        if (strcmp(value, "auto") == 0 || strcmp(value, "rlm") == 0 || strcmp(value, "direct") == 0)
            return 0;
        snprintf(why, whylen, "%s must be auto, rlm or direct (got '%s')", spec->key, value);
        return -1;
    case OPT_BOOL:
        if (strcmp(value, "0") == 0 || strcmp(value, "1") == 0)
            return 0;
        snprintf(why, whylen, "%s must be 0 or 1 (got '%s')", spec->key, value);
        return -1;
    case OPT_SHARE:
        if (parse_double(value, &d) == 0 && d > 0 && d <= 1)
            return 0;
        snprintf(why, whylen, "%s must be a number above 0 and at most 1, like 0.5 (got '%s')",
                 spec->key, value);
        return -1;
    case OPT_FRACTION:
        if (parse_double(value, &d) == 0 && d > 0 && d <= 1e6)
            return 0;
        snprintf(why, whylen, "%s must be a number above 0, like 0.85; 1 or more never compacts "
                 "(got '%s')", spec->key, value);
        return -1;
    case OPT_SESSION_NAME:
        if (session_name_valid(value))
            return 0;
        snprintf(why, whylen, "%s: bad name '%s': use 1-100 characters of letters, digits, '.', "
                 "'_' and '-', not starting with '.'", spec->key, value);
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

/* The provider the first URL of a list stands for (by its exact host). */
static const lm_provider *urls_provider(const char *list)
{
    char first[ENDPOINT_URL_MAX], err[512];
    endpoint_url u;
    size_t n = strcspn(list, ",");
    if (n >= sizeof first)
        return NULL;
    memcpy(first, list, n);
    first[n] = '\0';
    return endpoint_parse(first, &u, err, sizeof err) == 0 ? endpoint_host_provider(u.host) : NULL;
}

static const char *set_value(const rlm_config *cfg, int i)
{
    return cfg->values[i] && cfg->values[i][0] ? cfg->values[i] : NULL;
}

/* Design note: where requests go, and with which key. The provider is the
 * one said (provider); else the one the base URL's exact host stands for
 * (api.anthropic.com, api.openai.com; anything else speaks OpenAI's
 * protocol); else, when no URL is given, the one the model's name implies
 * (claude-* is Anthropic's); else OpenAI. With no base URL given, requests
 * go to that provider's own API. Sub-calls go to the root's endpoint unless
 * sub_base_url or sub_provider says otherwise, or, when the run names no
 * endpoint at all, a sub-model of another provider takes them to that
 * provider's API. A key goes only where it was given for (rlm_new):
 * api_key to base_url, sub_api_key to sub_base_url, and api_key to the
 * sub-call endpoint only when its URLs are on the hosts of base_url. */
static const lm_provider *root_provider(const rlm_config *cfg)
{
    const char *v;
    const lm_provider *p;
    if ((v = set_value(cfg, OPT_PROVIDER_KEY)))
        p = endpoint_provider_named(v);
    else if ((v = set_value(cfg, OPT_BASE_URL)))
        p = urls_provider(v);
    else
        p = endpoint_model_provider(rlm_config_get(cfg, "model"));
    return p ? p : endpoint_default_provider();
}

static const lm_provider *sub_provider(const rlm_config *cfg)
{
    const char *v;
    const lm_provider *p = NULL;
    if ((v = set_value(cfg, OPT_SUB_PROVIDER)))
        p = endpoint_provider_named(v);
    else if ((v = set_value(cfg, OPT_SUB_BASE_URL)))
        p = urls_provider(v);
    else if (!set_value(cfg, OPT_PROVIDER_KEY) && !set_value(cfg, OPT_BASE_URL))
        p = endpoint_model_provider(rlm_config_get(cfg, "sub_model"));
    return p ? p : root_provider(cfg);
}

const char *rlm_config_get(const rlm_config *cfg, const char *key)
{
    int i = key ? option_find(key) : -1;
    if (i < 0)
        return NULL;
    switch (i) {
    case OPT_PROVIDER_KEY:
        return root_provider(cfg)->name;
    case OPT_SUB_PROVIDER:
        return sub_provider(cfg)->name;
    case OPT_BASE_URL:
        return set_value(cfg, i) ? cfg->values[i] : root_provider(cfg)->default_url;
    case OPT_SUB_BASE_URL:
        if (set_value(cfg, i))
            return cfg->values[i];
        return sub_provider(cfg) != root_provider(cfg) ? sub_provider(cfg)->default_url
                                                       : rlm_config_get(cfg, "base_url");
    }
    if (cfg->values[i])
        return cfg->values[i];
    if (i == OPT_SUB_MODEL)
        return rlm_config_get(cfg, "model");
    return option_specs[i].fallback ? option_specs[i].fallback : "";
}

int rlm_config_url_within(const rlm_config *cfg, const char *key, const char *url)
{
    int i = key ? option_find(key) : -1;
    if (i < 0 || option_specs[i].kind != OPT_URLS || !url)
        return 0;
    return endpoint_list_within(rlm_config_get(cfg, key), url);
}

const char *rlm_config_errmsg(const rlm_config *cfg)
{
    return cfg->errmsg;
}

rlm_config *rlm_config_copy(const rlm_config *cfg)
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

long config_long(const rlm_config *cfg, const char *key)
{
    long v = 0;
    parse_long(rlm_config_get(cfg, key), &v);
    return v;
}

double config_double(const rlm_config *cfg, const char *key)
{
    double v = 0;
    parse_double(rlm_config_get(cfg, key), &v);
    return v;
}

json_t *config_json(const rlm_config *cfg)
{
    json_t *j = json_object();
    for (int i = 0; i < OPT_COUNT; i++) {
        const char *key = option_specs[i].key;
        const char *value = rlm_config_get(cfg, key);
        if (i == OPT_API_KEY || i == OPT_SUB_API_KEY)
            json_object_set_new(j, key, json_string(value[0] ? "(set)" : "(none)"));
        else
            json_object_set_new(j, key, value[0] ? json_string(value) : json_null());
    }
    return j;
}

double config_limit(const rlm_config *cfg, const char *key)
{
    const char *v = rlm_config_get(cfg, key);
    return v[0] && strcmp(v, "none") != 0 ? config_double(cfg, key) : -1;
}
