/* budget — run limits (dollars, tokens, wall time, sub-calls) and the
 * arithmetic that decides whether the next call may be issued. Pure: the
 * caller passes the clock and the estimates, so every rule is unit-tested.
 *
 * Ownership: a budget is a plain struct the caller owns. Not thread-safe: the
 * call path (calls.h) serialises every check, count and charge of a tree.
 *
 * Design, the rules in one place (docs/budgets.md says the same to users):
 *   - A limit below 0 is "no limit". Root turns and sub-calls both count
 *     toward cost, tokens and time; only sub-calls count toward max_subcalls.
 *   - Before a call or a batch is issued, budget_admit refuses it when what is
 *     already spent has reached a limit, or when the batch would go past one
 *     by what can be known in advance: its number of sub-calls, and the input
 *     side of its tokens and dollars (estimated from the prompt bytes). Output
 *     cannot be known before the reply, so a call admitted with budget left
 *     may end a little over it; the next admit then refuses.
 *   - A batch is admitted whole or refused whole: a batch of 100 with 30
 *     sub-calls left is refused, and nothing of it is sent. Sending the first
 *     30 would hand the model a list with holes that silently skews whatever
 *     it aggregates, and spend money on results it cannot use.
 *   - The first refusal marks the budget exhausted (which limit, kept for the
 *     report); from then on every admit is refused. The one last "best answer"
 *     request the engine then makes is issued with budget_admit_final, which
 *     always admits it: it may go over cost and tokens by that one call, and
 *     over max_time by at most that request's own timeout (an answer from
 *     what the run already paid for is worth one bounded request).
 *   - A tree of RLMs is a tree of budgets, one per RLM (calls.h keeps it):
 *     the run's limits at the top, and for each child a share of what its
 *     parent had left (budget_limit_to_left, budget_share). A call is admitted
 *     only if every budget from its RLM up to the top admits it, so the call
 *     path checks them all first (budget_check, which counts nothing) and only
 *     then counts it in all (budget_count): a refusal high up must not leave
 *     a count in a budget below it. The budget that refused is marked
 *     exhausted (budget_exhaust). budget_admit is check, then count or exhaust,
 *     on one budget. */
#ifndef RLM_BUDGET_H
#define RLM_BUDGET_H

#include <stddef.h>

typedef enum budget_kind {
    BUDGET_NONE = 0,
    BUDGET_COST,
    BUDGET_TOKENS,
    BUDGET_TIME,
    BUDGET_SUBCALLS,
} budget_kind;

typedef struct budget_limits {
    double max_cost;     /* USD; < 0 = no limit */
    long max_tokens;     /* prompt + completion tokens; < 0 = no limit */
    double max_time;     /* wall seconds from budget_init; < 0 = no limit */
    long max_subcalls;   /* sub-call prompts sent; < 0 = no limit */
} budget_limits;

/* budget_limits with every limit off. */
budget_limits budget_no_limits(void);

typedef struct budget {
    budget_limits limits;
    double start;        /* clock at budget_init */
    double cost;         /* USD spent by calls whose cost is known */
    long tokens;         /* prompt + completion tokens reported */
    long subcalls;       /* sub-call prompts admitted */
    long root_calls;     /* root requests admitted */
    long unknown_cost_calls;  /* calls whose cost could not be computed */
    long cached_tokens;       /* of tokens: prompt tokens read from the provider's cache */
    long cache_write_tokens;  /* of tokens: prompt tokens written to it */
    double cost_no_cache;     /* what the known-cost calls would have cost without it */
    budget_kind exhausted;    /* the limit that stopped this budget's RLM, or BUDGET_NONE */
} budget;

void budget_init(budget *b, const budget_limits *limits, double now);

/* May a batch of n_subcalls sub-calls (0 for a root request) be issued at
 * time now? est_tokens / est_cost are the input side of the batch (use 0 when
 * unknown). Returns BUDGET_NONE and counts the calls when admitted; otherwise
 * the limit that refuses it, which is now b->exhausted. */
budget_kind budget_admit(budget *b, size_t n_subcalls, long est_tokens, double est_cost, double now);

/* The last "best answer" request after the turns or a budget ran out:
 * always admitted (BUDGET_NONE) and counted; see the design note above. */
budget_kind budget_admit_final(budget *b, double now);

/* What budget_admit would answer, counting nothing and marking nothing:
 * BUDGET_NONE, or the limit that refuses (b->exhausted once b is exhausted). */
budget_kind budget_check(const budget *b, size_t n_subcalls, long est_tokens, double est_cost, double now);

/* Counts an admitted batch of n_subcalls sub-calls, or one root request when
 * n_subcalls is 0, whatever the limits say (the caller checked them). */
void budget_count(budget *b, size_t n_subcalls);

/* Marks b exhausted by kind, unless it already is (the first reason stays). */
void budget_exhaust(budget *b, budget_kind kind);

/* Counts what one finished call spent. tokens < 0 = not reported (nothing
 * added); cost < 0 = unknown (counted in unknown_cost_calls). */
void budget_charge(budget *b, long tokens, double cost);

/* Counts the prompt-cache side of one finished call: tokens read from and
 * written to the provider's cache (< 0: not reported) and what the call
 * would have cost without the cache (< 0: unknown, nothing added). The
 * limits are held against `cost` and `tokens` (budget_charge): cached tokens
 * are in both, at their own price in `cost`. */
void budget_charge_cache(budget *b, long cached_tokens, long cache_write_tokens, double cost_no_cache);

/* Lowers each of the cost, token and sub-call limits in *limits to what b has
 * left of its own (limit - spent, never below 0). A limit b does not have
 * changes nothing; max_time is left alone. Applied from budget_no_limits() to
 * every budget from a parent up to the top, it gives what the tree still
 * allows below that parent. */
void budget_limit_to_left(const budget *b, budget_limits *limits);

/* A child's limits: share (0 < share <= 1) of each of left's cost, token and
 * sub-call limits (tokens and sub-calls rounded down); no limit stays no
 * limit, and max_time is none (the tree's deadline is its top budget's). */
budget_limits budget_share(const budget_limits *left, double share);

/* Seconds left before max_time (a large number without a limit; 0 when past it). */
double budget_time_left(const budget *b, double now);

/* "max_cost", "max_tokens", "max_time", "max_subcalls", or NULL for BUDGET_NONE. */
const char *budget_kind_name(budget_kind k);

/* A one-line description of why kind stopped the run, e.g. "max_cost: $0.0213
 * spent of $0.02" into out (always NUL-terminated). */
void budget_describe(const budget *b, budget_kind kind, double now, char *out, size_t outlen);

/* The same, naming whose limit b holds as seen by the reader, e.g. with whose
 * = "this child's share": "max_subcalls: 3 of this child's share of 3
 * sub-calls used". whose = NULL is budget_describe. */
void budget_describe_as(const budget *b, budget_kind kind, double now, const char *whose, char *out,
                        size_t outlen);

/* Why budget_check refused a call of n_subcalls sub-calls (0: one root
 * request) with these input estimates, as kind. When what was spent had
 * already reached the limit this is budget_describe_as; otherwise the call
 * itself would have gone past it, and the sentence says so, e.g.
 * "max_cost: a batch of 17 sub-calls (estimated $0.012 of input) would go
 * past the limit: $0.00055 spent of $0.01". */
void budget_describe_refusal(const budget *b, budget_kind kind, size_t n_subcalls, long est_tokens,
                             double est_cost, double now, const char *whose, char *out, size_t outlen);

#endif
