/* script — fakelm's script: regex rules, their replies and deliveries, and
 * the injected faults, loaded and checked at start-up. */
#include "fakelm.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *const fault_names[FAULT_KINDS] = {
    "429", "500", "503", "reset", "truncated", "malformed", "empty_reasoning", "stall",
};

static const struct {
    const char *key;
    size_t offset;
} rule_strings[] = {
    {"reply", offsetof(rule, reply)},
    {"reasoning", offsetof(rule, reasoning)},
    {"content_type", offsetof(rule, content_type)},
    {"error_type", offsetof(rule, error_type)},
    {"error_code", offsetof(rule, error_code)},
};

static const struct {
    const char *key;
    size_t offset;
    long min, max;
} rule_numbers[] = {
    {"times", offsetof(rule, times), 0, LONG_MAX},
    {"latency_ms", offsetof(rule, latency_ms), 0, FAKELM_MAX_LATENCY_MS},
    {"status", offsetof(rule, status), 100, 599},
    {"stall_ms", offsetof(rule, stall_ms), 1, FAKELM_MAX_LATENCY_MS},
    {"stall_after", offsetof(rule, stall_after), 0, LONG_MAX},
    {"keepalive_ms", offsetof(rule, keepalive_ms), 1, FAKELM_MAX_LATENCY_MS},
    {"reset_after", offsetof(rule, reset_after), 0, LONG_MAX},
};

static const struct {
    const char *key;
    size_t offset;
} rule_flags[] = {
    {"content_null", offsetof(rule, content_null)},
    {"drop", offsetof(rule, drop)},
    {"truncate", offsetof(rule, truncate)},
};

static void rule_free(rule *r)
{
    pcre2_code_free(r->match);
    pcre2_code_free(r->model);
    free(r->reply);
    free(r->body);
    free(r->content_type);
    free(r->reasoning);
    free(r->error_type);
    free(r->error_code);
    json_decref(r->headers);
}

void script_free(script *sc)
{
    for (size_t i = 0; i < sc->nrules; i++)
        rule_free(&sc->rules[i]);
    free(sc->rules);
    json_decref(sc->models);
    pcre2_match_context_free(sc->match_context);
    free(sc->faults.retry_after);
    free(sc->oracle_key);
    oracle_free(&sc->oracle);
    memset(sc, 0, sizeof *sc);
}

/* UTF mode with invalid-UTF tolerance: requests are valid UTF-8 (jansson checks),
 * but a rule must never fail at match time because of what a client sent. */
static pcre2_code *regex_compile(const char *pattern, size_t len, char *err, size_t errlen)
{
    int code;
    PCRE2_SIZE offset;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, len, PCRE2_UTF | PCRE2_MATCH_INVALID_UTF,
                                   &code, &offset, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        snprintf(err, errlen, "regex error at offset %zu: %s", (size_t)offset, (const char *)msg);
        return NULL;
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* the interpreter is the fallback */
    return re;
}

static int rule_set_string(rule *r, const char *key, json_t *v, bool *known)
{
    for (size_t i = 0; i < sizeof rule_strings / sizeof rule_strings[0]; i++) {
        if (strcmp(key, rule_strings[i].key) != 0)
            continue;
        *known = true;
        if (!json_is_string(v))
            return -1;
        char **slot = (char **)((char *)r + rule_strings[i].offset);
        *slot = str_dup_len(json_string_value(v), json_string_length(v));
        return *slot ? 0 : -1;
    }
    return 0;
}

static int rule_set_number(rule *r, const char *key, json_t *v, bool *known)
{
    for (size_t i = 0; i < sizeof rule_numbers / sizeof rule_numbers[0]; i++) {
        if (strcmp(key, rule_numbers[i].key) != 0)
            continue;
        *known = true;
        if (!json_is_integer(v))
            return -1;
        json_int_t n = json_integer_value(v);
        if (n < rule_numbers[i].min || n > rule_numbers[i].max)
            return -1;
        *(long *)((char *)r + rule_numbers[i].offset) = (long)n;
        return 0;
    }
    for (size_t i = 0; i < sizeof rule_flags / sizeof rule_flags[0]; i++) {
        if (strcmp(key, rule_flags[i].key) != 0)
            continue;
        *known = true;
        if (!json_is_boolean(v))
            return -1;
        *(int *)((char *)r + rule_flags[i].offset) = json_is_true(v);
        return 0;
    }
    return 0;
}

static int rule_set_other(rule *r, const char *key, json_t *v, bool *known)
{
    if (strcmp(key, "on") == 0) {
        *known = true;
        const char *on = json_string_value(v);
        if (!on)
            return -1;
        if (strcmp(on, "last_user") == 0)
            r->on = ON_LAST_USER;
        else if (strcmp(on, "system") == 0)
            r->on = ON_SYSTEM;
        else if (strcmp(on, "any") == 0)
            r->on = ON_ANY;
        else
            return -1;
    } else if (strcmp(key, "body") == 0) {
        *known = true;
        if (!json_is_string(v))
            return -1;
        r->body_len = json_string_length(v);
        r->body = str_dup_len(json_string_value(v), r->body_len);
        return r->body ? 0 : -1;
    } else if (strcmp(key, "headers") == 0) {
        *known = true;
        const char *name;
        json_t *value;
        if (!json_is_object(v))
            return -1;
        json_object_foreach(v, name, value) {
            if (!json_is_string(value))
                return -1;
        }
        r->headers = json_incref(v);
    } else if (strcmp(key, "oracle") == 0) {
        *known = true;
        const char *kind = json_string_value(v);
        if (!kind)
            return -1;
        if (strcmp(kind, "labels") == 0)
            r->oracle = ORACLE_LABELS;
        else if (strcmp(kind, "facts") == 0)
            r->oracle = ORACLE_FACTS;
        else
            return -1;
    }
    return 0;
}

static int rule_load(rule *r, size_t index, json_t *obj, char *err, size_t errlen)
{
    const char *match = "", *model = NULL, *key;
    size_t match_len = 0, model_len = 0;
    json_t *v;
    char detail[300];

    r->times = -1;
    r->latency_ms = -1;
    r->reset_after = -1;
    r->status = 200;
    r->on = ON_LAST_USER;
    if (!json_is_object(obj)) {
        snprintf(err, errlen, "rules[%zu] is not an object", index);
        return -1;
    }
    json_object_foreach(obj, key, v) {
        bool known = false;
        int rc;
        if (strcmp(key, "match") == 0 || strcmp(key, "model") == 0) {
            known = true;
            rc = json_is_string(v) ? 0 : -1;
            if (key[1] == 'a') {
                match = json_string_value(v);
                match_len = json_string_length(v);
            } else {
                model = json_string_value(v);
                model_len = json_string_length(v);
            }
        } else {
            rc = rule_set_string(r, key, v, &known);
            if (!known)
                rc = rule_set_number(r, key, v, &known);
            if (!known)
                rc = rule_set_other(r, key, v, &known);
        }
        if (!known) {
            snprintf(err, errlen, "rules[%zu]: unknown key \"%s\"", index, key);
            return -1;
        }
        if (rc != 0) {
            snprintf(err, errlen, "rules[%zu].%s: wrong type or out of range", index, key);
            return -1;
        }
    }
    if (!r->reply && !(r->reply = str_dup_len("", 0)))
        return -1;
    r->match = regex_compile(match, match_len, detail, sizeof detail);
    if (!r->match) {
        snprintf(err, errlen, "rules[%zu].match: %s", index, detail);
        return -1;
    }
    pcre2_pattern_info(r->match, PCRE2_INFO_CAPTURECOUNT, &r->groups);
    if (model && !(r->model = regex_compile(model, model_len, detail, sizeof detail))) {
        snprintf(err, errlen, "rules[%zu].model: %s", index, detail);
        return -1;
    }
    return 0;
}

static int faults_parse(faults *f, json_t *v, char *err, size_t errlen)
{
    const char *key;
    json_t *item;
    f->stall_ms = 60000;
    if (!json_is_object(v)) {
        snprintf(err, errlen, "faults: not an object");
        return -1;
    }
    json_object_foreach(v, key, item) {
        if (strcmp(key, "rate") == 0 && json_is_number(item) && json_number_value(item) >= 0 &&
            json_number_value(item) <= 1) {
            f->rate = json_number_value(item);
        } else if (strcmp(key, "seed") == 0 && json_is_integer(item)) {
            f->seed = (uint64_t)json_integer_value(item);
        } else if (strcmp(key, "retry_after") == 0 && json_is_string(item)) {
            free(f->retry_after);
            f->retry_after = str_dup_len(json_string_value(item), json_string_length(item));
        } else if (strcmp(key, "stall_ms") == 0 && json_is_integer(item) && json_integer_value(item) > 0 &&
                   json_integer_value(item) <= FAKELM_MAX_LATENCY_MS) {
            f->stall_ms = (long)json_integer_value(item);
        } else if (strcmp(key, "kinds") == 0 && json_is_array(item) && json_array_size(item) > 0 &&
                   json_array_size(item) <= FAULT_KINDS) {
            size_t i;
            json_t *name;
            json_array_foreach(item, i, name) {
                size_t k = 0;
                while (k < FAULT_KINDS && (!json_is_string(name) ||
                                           strcmp(json_string_value(name), fault_names[k]) != 0))
                    k++;
                if (k == FAULT_KINDS) {
                    snprintf(err, errlen, "faults.kinds[%zu]: unknown fault (429, 500, 503, reset, "
                             "truncated, malformed, empty_reasoning, stall)", i);
                    return -1;
                }
                f->kinds[f->nkinds++] = (fault_kind)k;
            }
        } else {
            snprintf(err, errlen, "faults.%s: unknown key, wrong type or out of range", key);
            return -1;
        }
    }
    if (f->nkinds == 0) {
        for (size_t k = 0; k < FAULT_KINDS; k++)
            f->kinds[f->nkinds++] = (fault_kind)k;
    }
    if (!f->retry_after && !(f->retry_after = str_dup_len("1", 1)))
        return -1;
    return 0;
}

/* "prompt_cache": false, or {"min_tokens": N, "step_tokens": N} (1 to 1M each). */
static int prompt_cache_parse(prompt_cache_options *pc, json_t *v, char *err, size_t errlen)
{
    if (json_is_false(v) || json_is_true(v)) {
        pc->off = json_is_false(v);
        return 0;
    }
    if (!json_is_object(v)) {
        snprintf(err, errlen, "prompt_cache: false, true or {\"min_tokens\", \"step_tokens\"}");
        return -1;
    }
    const char *key;
    json_t *n;
    json_object_foreach(v, key, n) {
        long *into = strcmp(key, "min_tokens") == 0 ? &pc->min_tokens
                     : strcmp(key, "step_tokens") == 0 ? &pc->step_tokens : NULL;
        if (!into || !json_is_integer(n) || json_integer_value(n) < 1 || json_integer_value(n) > 1000000) {
            snprintf(err, errlen, "prompt_cache.%s: unknown key, or not an integer from 1 to 1000000", key);
            return -1;
        }
        *into = (long)json_integer_value(n);
    }
    return 0;
}

static int script_parse(script *sc, json_t *root, char *err, size_t errlen)
{
    const char *key;
    json_t *v, *rules = NULL;

    if (!json_is_object(root)) {
        snprintf(err, errlen, "the script must be a JSON object");
        return -1;
    }
    json_object_foreach(root, key, v) {
        if (strcmp(key, "rules") == 0 && json_is_array(v)) {
            rules = v;
        } else if (strcmp(key, "latency_ms") == 0 && json_is_integer(v) &&
                   json_integer_value(v) >= 0 && json_integer_value(v) <= FAKELM_MAX_LATENCY_MS) {
            sc->latency_ms = (long)json_integer_value(v);
        } else if (strcmp(key, "models") == 0 && json_is_array(v)) {
            size_t i;
            json_t *id;
            json_array_foreach(v, i, id) {
                if (!json_is_string(id)) {
                    snprintf(err, errlen, "models[%zu] is not a string", i);
                    return -1;
                }
            }
            json_decref(sc->models);
            sc->models = json_incref(v);
        } else if (strcmp(key, "faults") == 0) {
            if (faults_parse(&sc->faults, v, err, errlen) != 0)
                return -1;
        } else if (strcmp(key, "prompt_cache") == 0) {
            if (prompt_cache_parse(&sc->prompt_cache, v, err, errlen) != 0)
                return -1;
        } else if (strcmp(key, "oracle") == 0 && json_is_object(v) && json_object_size(v) == 1 &&
                   json_is_string(json_object_get(v, "key"))) {
            json_t *path = json_object_get(v, "key");
            free(sc->oracle_key);
            sc->oracle_key = str_dup_len(json_string_value(path), json_string_length(path));
            if (!sc->oracle_key)
                return -1;
        } else {
            snprintf(err, errlen, "\"%s\": unknown key, wrong type or out of range", key);
            return -1;
        }
    }
    if (!rules) {
        snprintf(err, errlen, "\"rules\" (an array) is required");
        return -1;
    }
    if (json_array_size(rules) > FAKELM_MAX_RULES) {
        snprintf(err, errlen, "more than %d rules", FAKELM_MAX_RULES);
        return -1;
    }
    sc->rules = calloc(json_array_size(rules) + 1, sizeof *sc->rules);
    if (!sc->rules) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < json_array_size(rules); i++) {
        sc->nrules = i + 1; /* so script_free releases a half-loaded rule */
        if (rule_load(&sc->rules[i], i, json_array_get(rules, i), err, errlen) != 0)
            return -1;
    }
    return 0;
}

int script_load(script *sc, const char *path, char *err, size_t errlen)
{
    struct stat st;
    json_error_t jerr;
    json_t *root = NULL;
    int rc = -1;

    memset(sc, 0, sizeof *sc);
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "%s", strerror(errno));
        goto fail;
    }
    if (st.st_size > FAKELM_MAX_SCRIPT) {
        snprintf(err, errlen, "larger than %lld bytes", (long long)FAKELM_MAX_SCRIPT);
        goto fail;
    }
    root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf(err, errlen, "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        goto fail;
    }
    sc->models = json_pack("[s]", "fakelm");
    sc->match_context = pcre2_match_context_create(NULL);
    if (!sc->models || !sc->match_context) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    pcre2_set_match_limit(sc->match_context, FAKELM_MATCH_LIMIT);
    if (script_parse(sc, root, err, errlen) != 0)
        goto fail;
    rc = 0;
fail:
    json_decref(root);
    if (rc != 0)
        script_free(sc);
    return rc;
}
