/* serve_flags — what `rlm serve` and `rlm mcp` share around their runs:
 * their own flags (those `rlm ask` does not have), taken out of the command
 * line before the rest goes to cli_flags_parse (the model, endpoint, budget
 * and sandbox flags every run shares); a request's budgets capped by the
 * server's; the stopping signals.
 *
 * Ownership: *rest is malloc'd (the caller frees it); its strings are
 * argv's. */
#ifndef RLM_SERVE_FLAGS_H
#define RLM_SERVE_FLAGS_H

#include <signal.h>

#include "rlm.h"

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

/* Sets the budget key of cfg to what a request asks for (asked < 0: not
 * asked, nothing changes), never more than cfg's own value, which is the
 * server's cap. whole: a whole number. 0, or -1 when cfg refuses the value
 * (rlm_config_errmsg says why). */
int serve_cap_budget(rlm_config *cfg, const char *key, double asked, int whole);

/* Blocks SIGTERM, SIGINT and SIGHUP in the calling thread, and so in every
 * thread it starts from now on (set: those three, for sigwait), and ignores
 * SIGPIPE (a client gone is seen where it is written to). */
void serve_block_stop_signals(sigset_t *set);

#endif
