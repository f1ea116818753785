/* budget — the arithmetic of whole-run limits: what has been spent, and
 * whether the next call or batch may be issued. The rules are written out
 * once, in budget.h. */
#include "budget.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

budget_limits budget_no_limits(void)
{
    budget_limits l = {.max_cost = -1, .max_tokens = -1, .max_time = -1, .max_subcalls = -1};
    return l;
}

void budget_init(budget *b, const budget_limits *limits, double now)
{
    *b = (budget){.limits = limits ? *limits : budget_no_limits(), .start = now};
}

budget_kind budget_check(const budget *b, size_t n_subcalls, long est_tokens, double est_cost, double now)
{
    const budget_limits *l = &b->limits;
    if (b->exhausted != BUDGET_NONE)
        return b->exhausted;
    if (est_tokens < 0)
        est_tokens = 0;
    if (est_cost < 0)
        est_cost = 0;
    /* Time first: once it is up, it is the reason, whatever else is left. */
    if (l->max_time >= 0 && now - b->start >= l->max_time)
        return BUDGET_TIME;
    if (l->max_subcalls >= 0 && n_subcalls > 0 &&
        (long)n_subcalls > l->max_subcalls - b->subcalls)
        return BUDGET_SUBCALLS;
    if (l->max_tokens >= 0 && (b->tokens >= l->max_tokens || est_tokens > l->max_tokens - b->tokens))
        return BUDGET_TOKENS;
    if (l->max_cost >= 0 && (b->cost >= l->max_cost || b->cost + est_cost > l->max_cost))
        return BUDGET_COST;
    return BUDGET_NONE;
}

void budget_count(budget *b, size_t n_subcalls)
{
    b->subcalls += (long)n_subcalls;
    if (n_subcalls == 0)
        b->root_calls++;
}

void budget_exhaust(budget *b, budget_kind kind)
{
    if (b->exhausted == BUDGET_NONE)
        b->exhausted = kind;
}

budget_kind budget_admit(budget *b, size_t n_subcalls, long est_tokens, double est_cost, double now)
{
    budget_kind k = budget_check(b, n_subcalls, est_tokens, est_cost, now);
    if (k != BUDGET_NONE) {
        budget_exhaust(b, k);
        return k;
    }
    budget_count(b, n_subcalls);
    return BUDGET_NONE;
}

budget_kind budget_admit_final(budget *b, double now)
{
    (void)now;
    budget_count(b, 0);
    return BUDGET_NONE;
}

void budget_charge(budget *b, long tokens, double cost)
{
    if (tokens > 0)
        b->tokens += tokens;
    if (cost >= 0)
        b->cost += cost;
    else
        b->unknown_cost_calls++;
}

void budget_charge_cache(budget *b, long cached_tokens, long cache_write_tokens, double cost_no_cache)
{
    if (cached_tokens > 0)
        b->cached_tokens += cached_tokens;
    if (cache_write_tokens > 0)
        b->cache_write_tokens += cache_write_tokens;
    if (cost_no_cache > 0)
        b->cost_no_cache += cost_no_cache;
}

void budget_limit_to_left(const budget *b, budget_limits *limits)
{
    const budget_limits *l = &b->limits;
    if (l->max_cost >= 0) {
        double left = l->max_cost > b->cost ? l->max_cost - b->cost : 0;
        if (limits->max_cost < 0 || left < limits->max_cost)
            limits->max_cost = left;
    }
    if (l->max_tokens >= 0) {
        long left = l->max_tokens > b->tokens ? l->max_tokens - b->tokens : 0;
        if (limits->max_tokens < 0 || left < limits->max_tokens)
            limits->max_tokens = left;
    }
    if (l->max_subcalls >= 0) {
        long left = l->max_subcalls > b->subcalls ? l->max_subcalls - b->subcalls : 0;
        if (limits->max_subcalls < 0 || left < limits->max_subcalls)
            limits->max_subcalls = left;
    }
}

/* share x n rounded down; the slack keeps 0.3 x 10 at 3 despite binary fractions. */
static long share_of_count(long n, double share)
{
    return (long)floor((double)n * share + 1e-9);
}

budget_limits budget_share(const budget_limits *left, double share)
{
    if (!(share > 0))
        share = 0;
    if (share > 1)
        share = 1;
    budget_limits l = budget_no_limits();
    if (left->max_cost >= 0)
        l.max_cost = left->max_cost * share;
    if (left->max_tokens >= 0)
        l.max_tokens = share_of_count(left->max_tokens, share);
    if (left->max_subcalls >= 0)
        l.max_subcalls = share_of_count(left->max_subcalls, share);
    return l;
}

double budget_time_left(const budget *b, double now)
{
    if (b->limits.max_time < 0)
        return 1e18;
    double left = b->limits.max_time - (now - b->start);
    return left > 0 ? left : 0;
}

const char *budget_kind_name(budget_kind k)
{
    switch (k) {
    case BUDGET_COST: return "max_cost";
    case BUDGET_TOKENS: return "max_tokens";
    case BUDGET_TIME: return "max_time";
    case BUDGET_SUBCALLS: return "max_subcalls";
    case BUDGET_NONE: break;
    }
    return NULL;
}

void budget_describe(const budget *b, budget_kind kind, double now, char *out, size_t outlen)
{
    budget_describe_as(b, kind, now, NULL, out, outlen);
}

void budget_describe_refusal(const budget *b, budget_kind kind, size_t n_subcalls, long est_tokens,
                             double est_cost, double now, const char *whose, char *out, size_t outlen)
{
    const budget_limits *l = &b->limits;
    int reached = kind == BUDGET_TIME || b->exhausted != kind ||
                  (kind == BUDGET_COST && b->cost >= l->max_cost) ||
                  (kind == BUDGET_TOKENS && b->tokens >= l->max_tokens) ||
                  (kind == BUDGET_SUBCALLS && b->subcalls >= l->max_subcalls);
    char spent[256];
    budget_describe_as(b, kind, now, whose, spent, sizeof spent);
    if (reached) {
        snprintf(out, outlen, "%s", spent);
        return;
    }
    char what[128], estimate[96] = "";
    if (n_subcalls)
        snprintf(what, sizeof what, "a batch of %zu sub-call%s", n_subcalls, n_subcalls == 1 ? "" : "s");
    else
        snprintf(what, sizeof what, "a root request");
    if (kind == BUDGET_COST)
        snprintf(estimate, sizeof estimate, " (estimated $%.6g of input)", est_cost);
    else if (kind == BUDGET_TOKENS)
        snprintf(estimate, sizeof estimate, " (about %ld input tokens)", est_tokens);
    const char *name = budget_kind_name(kind);
    size_t skip = strlen(name) + 2;   /* spent starts "NAME: " */
    snprintf(out, outlen, "%s: %s%s would go past %s: %s", name, what, estimate,
             whose ? whose : "the limit", strlen(spent) > skip ? spent + skip : spent);
}

void budget_describe_as(const budget *b, budget_kind kind, double now, const char *whose, char *out,
                        size_t outlen)
{
    const budget_limits *l = &b->limits;
    if (whose) {
        switch (kind) {
        case BUDGET_COST:
            snprintf(out, outlen, "max_cost: $%.6g of %s of $%.6g used", b->cost, whose, l->max_cost);
            return;
        case BUDGET_TOKENS:
            snprintf(out, outlen, "max_tokens: %ld of %s of %ld tokens used", b->tokens, whose,
                     l->max_tokens);
            return;
        case BUDGET_TIME:
            snprintf(out, outlen, "max_time: %.1f s of %s of %.6g s used", now - b->start, whose,
                     l->max_time);
            return;
        case BUDGET_SUBCALLS:
            snprintf(out, outlen, "max_subcalls: %ld of %s of %ld sub-calls used", b->subcalls, whose,
                     l->max_subcalls);
            return;
        case BUDGET_NONE:
            break;
        }
    }
    switch (kind) {
    case BUDGET_COST:
        snprintf(out, outlen, "max_cost: $%.6g spent of $%.6g", b->cost, l->max_cost);
        break;
    case BUDGET_TOKENS:
        snprintf(out, outlen, "max_tokens: %ld tokens spent of %ld", b->tokens, l->max_tokens);
        break;
    case BUDGET_TIME:
        snprintf(out, outlen, "max_time: %.1f s elapsed of %.6g s", now - b->start, l->max_time);
        break;
    case BUDGET_SUBCALLS:
        snprintf(out, outlen, "max_subcalls: %ld sub-calls made of %ld", b->subcalls, l->max_subcalls);
        break;
    case BUDGET_NONE:
        snprintf(out, outlen, "no budget exhausted");
        break;
    }
}
