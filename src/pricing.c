/* pricing — the price table: built-in list prices for common models, entries
 * from a user's prices file on top, and the dollar cost of one call from the
 * token usage the provider reported. */
#include "pricing.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Largest prices file read: a table of a few hundred models is a few KB. */
#define MAX_PRICES_FILE_BYTES (4u << 20)
#define MAX_MODEL_NAME 256

typedef struct price_entry {
    char *model;
    price pr;
} price_entry;

struct pricing {
    price_entry *entries;
    size_t n, cap;
};

/* List prices in USD per million tokens (input, cached input, output), taken
 * from the providers' public pricing pages as of November 2025. A cache write
 * costs the input price, except for Anthropic's models, which bill the
 * 5-minute cache writes at 1.25x input (cache_write_of). Prices change
 * and this table is not updated automatically: figures may be out of date,
 * which is why a prices file can override any of them (docs/budgets.md).
 * OpenRouter names ("vendor/model") carry the vendor's list price. */
static const struct {
    const char *model;
    double input, cached_input, output;
} builtin_prices[] = {
    {"gpt-5", 1.25, 0.125, 10.00},
    {"gpt-5-mini", 0.25, 0.025, 2.00},
    {"gpt-5-nano", 0.05, 0.005, 0.40},
    {"gpt-4.1", 2.00, 0.50, 8.00},
    {"gpt-4.1-mini", 0.40, 0.10, 1.60},
    {"gpt-4.1-nano", 0.10, 0.025, 0.40},
    {"gpt-4o", 2.50, 1.25, 10.00},
    {"gpt-4o-mini", 0.15, 0.075, 0.60},
    {"o3", 2.00, 0.50, 8.00},
    {"o3-mini", 1.10, 0.55, 4.40},
    {"o4-mini", 1.10, 0.275, 4.40},
    {"claude-opus-4", 15.00, 1.50, 75.00},
    {"claude-opus-4-0", 15.00, 1.50, 75.00},
    {"claude-opus-4-1", 15.00, 1.50, 75.00},
    {"claude-opus-4-5", 5.00, 0.50, 25.00},
    {"claude-sonnet-4", 3.00, 0.30, 15.00},
    {"claude-sonnet-4-0", 3.00, 0.30, 15.00},
    {"claude-sonnet-4-5", 3.00, 0.30, 15.00},
    {"claude-haiku-4-5", 1.00, 0.10, 5.00},
    {"claude-3-5-haiku", 0.80, 0.08, 4.00},
    {"gemini-2.5-pro", 1.25, 0.31, 10.00},
    {"gemini-2.5-flash", 0.30, 0.075, 2.50},
    {"openai/gpt-5", 1.25, 0.125, 10.00},
    {"openai/gpt-5-mini", 0.25, 0.025, 2.00},
    {"openai/gpt-5-nano", 0.05, 0.005, 0.40},
    {"openai/gpt-4.1", 2.00, 0.50, 8.00},
    {"openai/gpt-4.1-mini", 0.40, 0.10, 1.60},
    {"openai/gpt-4o", 2.50, 1.25, 10.00},
    {"openai/gpt-4o-mini", 0.15, 0.075, 0.60},
    {"openai/o3", 2.00, 0.50, 8.00},
    {"openai/o4-mini", 1.10, 0.275, 4.40},
    {"anthropic/claude-opus-4.1", 15.00, 1.50, 75.00},
    {"anthropic/claude-opus-4.5", 5.00, 0.50, 25.00},
    {"anthropic/claude-sonnet-4", 3.00, 0.30, 15.00},
    {"anthropic/claude-sonnet-4.5", 3.00, 0.30, 15.00},
    {"anthropic/claude-haiku-4.5", 1.00, 0.10, 5.00},
    {"google/gemini-2.5-pro", 1.25, 0.31, 10.00},
    {"google/gemini-2.5-flash", 0.30, 0.075, 2.50},
};

/* What writing a prompt to the provider's cache costs per million tokens:
 * Anthropic bills its 5-minute cache writes at 1.25x the input price; OpenAI
 * and the OpenAI-compatible servers cache on their own, at no surcharge. */
static double cache_write_of(const char *model, double input)
{
    int anthropic = strncmp(model, "claude-", 7) == 0 || strncmp(model, "anthropic/", 10) == 0;
    return anthropic ? input * 1.25 : input;
}

static price_entry *pricing_find_exact(const pricing *p, const char *model)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->entries[i].model, model) == 0)
            return &p->entries[i];
    return NULL;
}

/* Adds or replaces one entry. 0, or -1 when out of memory. */
static int pricing_set(pricing *p, const char *model, const price *pr)
{
    price_entry *e = pricing_find_exact(p, model);
    if (e) {
        e->pr = *pr;
        return 0;
    }
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        price_entry *grown = realloc(p->entries, cap * sizeof *grown);
        if (!grown)
            return -1;
        p->entries = grown;
        p->cap = cap;
    }
    char *name = strdup(model);
    if (!name)
        return -1;
    p->entries[p->n].model = name;
    p->entries[p->n].pr = *pr;
    p->n++;
    return 0;
}

pricing *pricing_new(void)
{
    pricing *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    for (size_t i = 0; i < sizeof builtin_prices / sizeof builtin_prices[0]; i++) {
        price pr = {builtin_prices[i].input, builtin_prices[i].cached_input, builtin_prices[i].output,
                    cache_write_of(builtin_prices[i].model, builtin_prices[i].input)};
        if (pricing_set(p, builtin_prices[i].model, &pr) != 0) {
            pricing_free(p);
            return NULL;
        }
    }
    return p;
}

/* Reads one number field of a price object: 0 when valid (or absent and
 * optional), -1 with err set. */
static int price_field(json_t *obj, const char *model, const char *key, int required, double *out,
                       char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (!required)
            return 0;
        snprintf(err, errlen, "price of '%s' has no \"%s\"", model, key);
        return -1;
    }
    if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) < 0) {
        snprintf(err, errlen, "price of '%s': \"%s\" must be a number >= 0", model, key);
        return -1;
    }
    *out = json_number_value(v);
    return 0;
}

/* Checks one "MODEL": {...} entry and converts it. 0, or -1 with err set. */
static int price_parse(const char *model, json_t *obj, price *out, char *err, size_t errlen)
{
    if (!model[0] || strlen(model) > MAX_MODEL_NAME) {
        snprintf(err, errlen, "model names must have 1 to %d characters", MAX_MODEL_NAME);
        return -1;
    }
    if (!json_is_object(obj)) {
        snprintf(err, errlen,
                 "price of '%s' must be an object {\"input\", \"output\", \"cached_input\", \"cache_write\"}",
                 model);
        return -1;
    }
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value) {
        if (strcmp(key, "input") != 0 && strcmp(key, "output") != 0 && strcmp(key, "cached_input") != 0 &&
            strcmp(key, "cache_write") != 0) {
            snprintf(err, errlen,
                     "price of '%s': unknown key \"%s\" (known: input, cached_input, cache_write, output)",
                     model, key);
            return -1;
        }
    }
    if (price_field(obj, model, "input", 1, &out->input, err, errlen) != 0 ||
        price_field(obj, model, "output", 1, &out->output, err, errlen) != 0)
        return -1;
    out->cached_input = out->input;
    out->cache_write = out->input;
    if (price_field(obj, model, "cached_input", 0, &out->cached_input, err, errlen) != 0)
        return -1;
    return price_field(obj, model, "cache_write", 0, &out->cache_write, err, errlen);
}

int pricing_load_file(pricing *p, const char *path, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf(err, errlen, "prices file '%s': %s (line %d)", path, jerr.text, jerr.line);
        return -1;
    }
    int rc = -1;
    char why[512];
    const char *model;
    json_t *value;
    if (!json_is_object(root)) {
        snprintf(err, errlen, "prices file '%s': must be a JSON object of model -> price", path);
        goto done;
    }
    /* Check everything first, so a bad file leaves the table as it was. */
    json_object_foreach(root, model, value) {
        price pr;
        if (price_parse(model, value, &pr, why, sizeof why) != 0) {
            snprintf(err, errlen, "prices file '%s': %s", path, why);
            goto done;
        }
    }
    json_object_foreach(root, model, value) {
        price pr;
        price_parse(model, value, &pr, why, sizeof why);
        if (pricing_set(p, model, &pr) != 0) {
            snprintf(err, errlen, "out of memory");
            goto done;
        }
    }
    rc = 0;
done:
    json_decref(root);
    return rc;
}

/* 1 if s is a dated-version suffix: "-latest", or '-' then only digits and
 * dashes with at least four digits ("-2024-08-06", "-20250514", "-0613"). A
 * version like "-5" is not a date, so "claude-opus-4-5" never takes the price
 * of "claude-opus-4". */
static int is_dated_suffix(const char *s)
{
    if (strcmp(s, "-latest") == 0)
        return 1;
    if (s[0] != '-')
        return 0;
    int digits = 0;
    for (const char *c = s + 1; *c; c++) {
        if (isdigit((unsigned char)*c))
            digits++;
        else if (*c != '-')
            return 0;
    }
    return digits >= 4;
}

int pricing_lookup(const pricing *p, const char *model, price *out)
{
    if (!p || !model)
        return 0;
    const price_entry *best = pricing_find_exact(p, model);
    if (!best) {
        size_t best_len = 0;
        for (size_t i = 0; i < p->n; i++) {
            size_t len = strlen(p->entries[i].model);
            if (len > best_len && strncmp(model, p->entries[i].model, len) == 0 &&
                is_dated_suffix(model + len)) {
                best_len = len;
                best = &p->entries[i];
            }
        }
    }
    if (!best)
        return 0;
    *out = best->pr;
    return 1;
}

double pricing_cost(const price *pr, long prompt_tokens, long cached_tokens, long cache_write_tokens,
                    long completion_tokens)
{
    if (prompt_tokens < 0 || completion_tokens < 0)
        return -1;
    if (cached_tokens < 0)
        cached_tokens = 0;
    if (cached_tokens > prompt_tokens)
        cached_tokens = prompt_tokens;
    if (cache_write_tokens < 0)
        cache_write_tokens = 0;
    if (cache_write_tokens > prompt_tokens - cached_tokens)
        cache_write_tokens = prompt_tokens - cached_tokens;
    double usd = (double)(prompt_tokens - cached_tokens - cache_write_tokens) * pr->input +
                 (double)cached_tokens * pr->cached_input + (double)cache_write_tokens * pr->cache_write +
                 (double)completion_tokens * pr->output;
    return usd / 1e6;
}

size_t pricing_count(const pricing *p)
{
    return p ? p->n : 0;
}

void pricing_free(pricing *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        free(p->entries[i].model);
    free(p->entries);
    free(p);
}
