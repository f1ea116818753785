/* cost — `rlm cost TRACE|ID [--json]`: what a run cost, from its trace (a
 * file, or a run of the run log): by phase (root turns, sub-calls, child
 * RLMs), by model and by call-tree node, the prompt tokens the providers'
 * caches served or were written apart from the rest, and what the same calls
 * would have cost without prompt caching. Every figure comes from the
 * trace's call events (root_reply, compaction, sub_call), as the run priced
 * them (docs/costs.md). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "rlm.h"
#include "util.h"
#include "view.h"

/* One line of the breakdown. */
typedef struct cost_row {
    long calls;          /* model calls the run made (each sub-call prompt counts) */
    long deduplicated;   /* of calls: answered by an identical sub-call, not sent */
    long response_cache; /* of calls: answered from the response cache (--cache), not sent */
    long prompt, cached, written, completion;
    double cost, no_cache;
    long unknown;        /* calls whose price was unknown */
} cost_row;

static void row_add(cost_row *r, json_t *ev)
{
    json_t *usage = json_object_get(ev, "usage");
    long v;
    r->calls++;
    r->deduplicated += json_is_true(json_object_get(ev, "deduplicated"));
    r->response_cache += json_is_true(json_object_get(ev, "cached"));
    if ((v = (long)json_integer_value(json_object_get(usage, "prompt_tokens"))) > 0)
        r->prompt += v;
    if ((v = (long)json_integer_value(json_object_get(usage, "cached_tokens"))) > 0)
        r->cached += v;
    if ((v = (long)json_integer_value(json_object_get(usage, "cache_write_tokens"))) > 0)
        r->written += v;
    if ((v = (long)json_integer_value(json_object_get(usage, "completion_tokens"))) > 0)
        r->completion += v;
    json_t *cost = json_object_get(ev, "cost_usd");
    json_t *no_cache = json_object_get(ev, "cost_no_cache_usd");
    if (!json_is_number(cost)) {
        r->unknown++;
        return;
    }
    r->cost += json_number_value(cost);
    /* A trace written before rlm priced the cache has no counterfactual: the
     * call cost what it would have without. */
    r->no_cache += json_is_number(no_cache) ? json_number_value(no_cache) : json_number_value(cost);
}

static json_t *row_json(const cost_row *r)
{
    json_t *j = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "calls", (json_int_t)r->calls, "sent",
                          (json_int_t)(r->calls - r->deduplicated - r->response_cache), "deduplicated",
                          (json_int_t)r->deduplicated, "response_cache", (json_int_t)r->response_cache,
                          "prompt_tokens", (json_int_t)r->prompt, "cached_tokens", (json_int_t)r->cached,
                          "cache_write_tokens", (json_int_t)r->written, "completion_tokens",
                          (json_int_t)r->completion);
    if (j) {
        json_object_set_new(j, "uncached_tokens", json_integer(r->prompt - r->cached - r->written));
        json_object_set_new(j, "cost_usd", r->unknown ? json_null() : json_real(r->cost));
        json_object_set_new(j, "cost_no_cache_usd", r->unknown ? json_null() : json_real(r->no_cache));
        json_object_set_new(j, "unknown_cost_calls", json_integer(r->unknown));
    }
    return j;
}

/* Rows by name, in the order first seen: a run's models and nodes. */
typedef struct named_rows {
    char **names;
    cost_row *rows;
    size_t n;
} named_rows;

static cost_row *named(named_rows *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->names[i], name) == 0)
            return &t->rows[i];
    char **names = realloc(t->names, (t->n + 1) * sizeof *names);
    if (!names)
        return NULL;
    t->names = names;
    cost_row *rows = realloc(t->rows, (t->n + 1) * sizeof *rows);
    if (!rows)
        return NULL;
    t->rows = rows;
    if (!(t->names[t->n] = strdup(name)))
        return NULL;
    memset(&t->rows[t->n], 0, sizeof t->rows[t->n]);
    return &t->rows[t->n++];
}

static void named_free(named_rows *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->names[i]);
    free(t->names);
    free(t->rows);
}

static json_t *named_json(const named_rows *t)
{
    json_t *j = json_object();
    for (size_t i = 0; j && i < t->n; i++)
        json_object_set_new(j, t->names[i], row_json(&t->rows[i]));
    return j;
}

enum { PHASE_ROOT, PHASE_SUB, PHASE_CHILDREN, PHASES };
static const char *const phase_names[PHASES] = {"root turns", "sub-calls", "child RLMs"};

/* The breakdown of a trace's events, as JSON; NULL out of memory. */
static json_t *cost_breakdown(json_t *events)
{
    cost_row total = {0}, phases[PHASES] = {{0}};
    named_rows models = {0}, nodes = {0};
    size_t i;
    json_t *ev;
    json_t *out = NULL;
    /* Each node's root model, from its root requests: older traces' root
     * replies and compactions do not name it. */
    json_t *node_model = json_object();
    if (!node_model)
        return NULL;
    json_array_foreach(events, i, ev) {
        const char *type = json_string_value(json_object_get(ev, "type"));
        const char *node = json_string_value(json_object_get(ev, "node"));
        json_t *model = json_object_get(ev, "model");
        if (type && strcmp(type, "root_request") == 0 && node && json_is_string(model))
            json_object_set(node_model, node, model);
    }
    json_array_foreach(events, i, ev) {
        const char *type = json_string_value(json_object_get(ev, "type"));
        if (!type)
            continue;
        const char *node = json_string_value(json_object_get(ev, "node"));
        const char *model = json_string_value(json_object_get(ev, "model"));
        int root = strcmp(type, "root_reply") == 0 || strcmp(type, "compaction") == 0;
        if (!root && strcmp(type, "sub_call") != 0)
            continue;
        if (!node)
            node = "0";
        if (!model)
            model = json_string_value(json_object_get(node_model, node));
        if (!model)
            model = "unknown";
        int phase = strcmp(node, "0") != 0 ? PHASE_CHILDREN : root ? PHASE_ROOT : PHASE_SUB;
        cost_row *m = named(&models, model), *n = named(&nodes, node);
        if (!m || !n)
            goto done;
        row_add(&total, ev);
        row_add(&phases[phase], ev);
        row_add(m, ev);
        row_add(n, ev);
    }
    json_t *by_phase = json_object();
    for (int p = 0; by_phase && p < PHASES; p++)
        json_object_set_new(by_phase, phase_names[p], row_json(&phases[p]));
    out = json_pack("{s:o,s:o,s:o,s:o}", "total", row_json(&total), "phases", by_phase, "models",
                    named_json(&models), "nodes", named_json(&nodes));
    if (out) {
        int known = total.unknown == 0;
        json_object_set_new(out, "saved_usd", known ? json_real(total.no_cache - total.cost) : json_null());
        json_object_set_new(out, "saved_share", known && total.no_cache > 0
                                                    ? json_real(1 - total.cost / total.no_cache)
                                                    : json_null());
    }
done:
    named_free(&models);
    named_free(&nodes);
    json_decref(node_model);
    return out;
}

static void print_money(json_t *v)
{
    if (json_is_number(v))
        printf(" %11.6f", json_number_value(v));
    else
        printf(" %11s", "unknown");
}

static void print_row(const char *label, json_t *r)
{
    printf("  %-22.22s %6lld %6lld %10lld %10lld %9lld %9lld", label,
           (long long)json_integer_value(json_object_get(r, "calls")),
           (long long)json_integer_value(json_object_get(r, "sent")),
           (long long)json_integer_value(json_object_get(r, "uncached_tokens")),
           (long long)json_integer_value(json_object_get(r, "cached_tokens")),
           (long long)json_integer_value(json_object_get(r, "cache_write_tokens")),
           (long long)json_integer_value(json_object_get(r, "completion_tokens")));
    print_money(json_object_get(r, "cost_usd"));
    print_money(json_object_get(r, "cost_no_cache_usd"));
    putchar('\n');
}

static void print_group(const char *title, json_t *group)
{
    const char *name;
    json_t *r;
    printf("%s\n", title);
    json_object_foreach(group, name, r)
        print_row(name, r);
}

static void print_breakdown(const char *source, json_t *b)
{
    printf("cost of %s (USD; tokens of prompt: fresh, read from the provider's cache, written to it)\n\n",
           source);
    printf("  %-22s %6s %6s %10s %10s %9s %9s %11s %11s\n", "", "calls", "sent", "fresh in", "cached in",
           "written", "out", "cost", "no caching");
    print_group("by phase", json_object_get(b, "phases"));
    print_group("by model", json_object_get(b, "models"));
    print_group("by node (0 is the top RLM; 0.1 its first child, ...)", json_object_get(b, "nodes"));
    putchar('\n');
    print_row("total", json_object_get(b, "total"));
    json_t *total = json_object_get(b, "total");
    long long dedup = json_integer_value(json_object_get(total, "deduplicated"));
    long long hits = json_integer_value(json_object_get(total, "response_cache"));
    printf("\n");
    if (dedup || hits)
        printf("not sent: %lld sub-calls deduplicated, %lld answered from the response cache\n", dedup, hits);
    json_t *saved = json_object_get(b, "saved_usd"), *share = json_object_get(b, "saved_share");
    if (json_is_number(saved))
        printf("prompt caching saved $%.6f (%.1f%% of $%.6f without it)\n", json_number_value(saved),
               json_is_number(share) ? 100 * json_number_value(share) : 0.0,
               json_number_value(json_object_get(total, "cost_no_cache_usd")));
    else
        printf("the cost is unknown: a model's price is missing (--prices FILE when running it)\n");
}

static int cost_usage(FILE *to)
{
    fputs("usage: rlm cost TRACE|ID [--json] [--log-db PATH]\n"
          "What a run cost, from its trace (a file written by --trace) or a run of the run log\n"
          "(rlm logs): by phase (root turns, sub-calls, child RLMs), by model and by call-tree\n"
          "node; the prompt tokens sent fresh, read from the provider's prompt cache and written\n"
          "to it; the cost as the run priced it and what the same calls would have cost without\n"
          "prompt caching; the sub-calls deduplicated or answered from the response cache\n"
          "(docs/costs.md).\n"
          "  --json         the breakdown as one JSON object\n"
          "  --log-db PATH  the run log to take ID from (default $XDG_DATA_HOME/rlm/logs.db)\n"
          "Exit codes: 0 done, 2 the trace cannot be read or is no trace.\n",
          to);
    return to == stdout ? EXIT_ANSWERED : EXIT_USAGE;
}

int cmd_cost(int argc, char **argv)
{
    const char *input = NULL, *log_db = NULL;
    int as_json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return cost_usage(stdout);
        if (strcmp(argv[i], "--json") == 0) {
            as_json = 1;
        } else if (strcmp(argv[i], "--log-db") == 0 && i + 1 < argc) {
            log_db = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "rlm cost: unknown option '%s'\n", argv[i]);
            return cost_usage(stderr);
        } else if (!input) {
            input = argv[i];
        } else {
            fprintf(stderr, "rlm cost: one trace at a time ('%s' is one too many)\n", argv[i]);
            return EXIT_USAGE;
        }
    }
    if (!input)
        return cost_usage(stderr);
    char *text = NULL, err[1024], label[64];
    size_t len = 0;
    json_t *events = NULL, *notes = NULL, *b = NULL;
    const char *format = "rlm", *source = input;
    int rc = EXIT_USAGE;
    long long id = 0;
    if (view_load("cost", input, log_db, &text, &len, &id) != 0)
        goto done;
    if (id > 0) {
        snprintf(label, sizeof label, "run %lld of the run log", id);
        source = label;
    }
    if (view_read(text, len, &events, &notes, &format, err, sizeof err) != 0) {
        fprintf(stderr, "rlm cost: '%s': %s\n", input, err);
        goto done;
    }
    if (!(b = cost_breakdown(events))) {
        fprintf(stderr, "rlm cost: out of memory\n");
        rc = EXIT_INTERNAL;
        goto done;
    }
    json_object_set_new(b, "source", json_string(source));
    if (as_json) {
        char *s = json_dumps(b, JSON_COMPACT);
        if (s)
            printf("%s\n", s);
        free(s);
    } else {
        print_breakdown(source, b);
    }
    for (size_t k = 0; k < json_array_size(notes); k++)
        fprintf(stderr, "rlm cost: note: %s\n", json_string_value(json_object_get(json_array_get(notes, k), "text")));
    rc = EXIT_ANSWERED;
done:
    free(text);
    json_decref(events);
    json_decref(notes);
    json_decref(b);
    return rc;
}
