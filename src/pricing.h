/* pricing — what a model call costs: a built-in table of list prices (USD per
 * million input, cached-input and output tokens) for common models, which a
 * JSON prices file can extend or override, and the cost of one call.
 *
 * Ownership: pricing_new returns a table freed by pricing_free. Lookups copy
 * the price out; model names passed in are borrowed. Not thread-safe while a
 * file is being loaded; lookups on a loaded table may run from any thread.
 *
 * An unknown model has an unknown cost: callers report null, never 0. */
#ifndef RLM_PRICING_H
#define RLM_PRICING_H

#include <stddef.h>

typedef struct pricing pricing;

/* USD per million tokens. */
typedef struct price {
    double input;
    double cached_input;   /* prompt tokens the provider served from its prompt cache */
    double output;         /* completion tokens, reasoning included */
    double cache_write;    /* prompt tokens written to the provider's prompt cache (Anthropic
                              bills them at 1.25x input; others at the input price) */
} price;

/* The built-in table. NULL only when out of memory. */
pricing *pricing_new(void);

/* Adds or replaces entries from a JSON file shaped
 *     {"MODEL": {"input": 3, "cached_input": 0.3, "cache_write": 3.75, "output": 15}, ...}
 * ("cached_input" and "cache_write" are optional and default to "input"; every number must be
 * finite and >= 0; other keys are errors so a typo fails loudly). Entries from
 * the file win over built-in ones of the same name. 0 on success, -1 with a
 * message in err (missing file, bad JSON, bad entry); the table is unchanged
 * on failure. */
int pricing_load_file(pricing *p, const char *path, char *err, size_t errlen);

/* Finds model's price: an exact name first, else the longest entry that is a
 * prefix of model followed by a dated suffix ("-2024-08-06", "-20250514") or
 * "-latest". 1 with *out filled, 0 when the model is unknown. */
int pricing_lookup(const pricing *p, const char *model, price *out);

/* USD for one call: (prompt - cached - written) x input + cached x
 * cached_input + written x cache_write + completion x output, per million.
 * prompt_tokens counts every input token, the cache's included (as
 * lm_response does). cached_tokens and cache_write_tokens may be 0 or -1 (not
 * reported) and are clamped to what the prompt holds. Returns -1 when prompt
 * or completion tokens are unknown (< 0). The same call without a prompt
 * cache costs pricing_cost(pr, prompt, 0, 0, completion). */
double pricing_cost(const price *pr, long prompt_tokens, long cached_tokens, long cache_write_tokens,
                    long completion_tokens);

/* The entries of the table, for tests and `--help`-style listings. */
size_t pricing_count(const pricing *p);

void pricing_free(pricing *p);

#endif
