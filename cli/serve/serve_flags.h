/* serve_flags — the flags of `rlm serve` and `rlm mcp` that `rlm ask` does
 * not have, taken out of the command line before the rest goes to
 * cli_flags_parse (the model, endpoint, budget and sandbox flags every run
 * shares).
 *
 * Ownership: *rest is malloc'd (the caller frees it); its strings are
 * argv's. */
#ifndef RLM_SERVE_FLAGS_H
#define RLM_SERVE_FLAGS_H

typedef struct serve_flag {
    const char *name;          /* without the leading "--"; NULL ends a table */
    int id;
    int has_arg;
} serve_flag;

/* Called for each flag of the table found: -1 to go on, else the exit code
 * the command ends with (after --help, or a bad value it explained). */
typedef int (*serve_flag_fn)(void *ctx, int id, const char *name, const char *value);

/* Gives fn every "--NAME VALUE", "--NAME=VALUE" or "--NAME" of table in
 * argv (argv[0] is the command; "-h" counts as "--help" when the table has
 * it) and keeps the other arguments, in order, in *rest (argv[0] first,
 * NULL-terminated, *rest_argc of them). Returns -1 to go on, else the exit
 * code: fn's, or 2 after saying a flag lacks its value. */
int serve_flags_split(int argc, char **argv, const serve_flag *table, serve_flag_fn fn, void *ctx,
                      int *rest_argc, char ***rest);

#endif
