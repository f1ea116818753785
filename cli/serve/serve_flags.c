/* serve_flags — what rlm serve and rlm mcp share around their runs
 * (serve_flags.h). */
#include "serve_flags.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

int serve_flags_split(int argc, char **argv, const serve_flag *table, serve_flag_fn fn, void *ctx,
                      int *rest_argc, char ***rest)
{
    *rest_argc = 0;
    *rest = calloc((size_t)argc + 1, sizeof **rest);
    if (!*rest) {
        fputs("rlm: out of memory\n", stderr);
        return 4;
    }
    (*rest)[(*rest_argc)++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *name = strncmp(a, "--", 2) == 0 ? a + 2 : strcmp(a, "-h") == 0 ? "help" : NULL;
        const serve_flag *flag = NULL;
        size_t len = name ? strcspn(name, "=") : 0;
        for (const serve_flag *t = table; name && t->name && !flag; t++)
            if (strlen(t->name) == len && strncmp(t->name, name, len) == 0)
                flag = t;
        if (!flag) {
            (*rest)[(*rest_argc)++] = argv[i];
            continue;
        }
        const char *value = NULL;
        if (flag->has_arg) {
            if (name[len] == '=') {
                value = name + len + 1;
            } else if (i + 1 < argc) {
                value = argv[++i];
            } else {
                fprintf(stderr, "rlm %s: --%s needs a value\n", argv[0], flag->name);
                return 2;
            }
        } else if (name[len] == '=') {
            fprintf(stderr, "rlm %s: --%s takes no value\n", argv[0], flag->name);
            return 2;
        }
        int rc = fn(ctx, flag->id, flag->name, value);
        if (rc >= 0)
            return rc;
    }
    (*rest)[*rest_argc] = NULL;
    return -1;
}

int serve_cap_budget(rlm_config *cfg, const char *key, double asked, int whole)
{
    if (asked < 0)
        return 0;
    double cap = -1;
    const char *text = rlm_config_get(cfg, key);
    if (!text[0] || strcmp(text, "none") == 0 || parse_double(text, &cap) != 0)
        cap = -1;
    double v = cap >= 0 && cap < asked ? cap : asked;
    char value[64];
    snprintf(value, sizeof value, whole ? "%.0f" : "%.6f", v);
    return rlm_config_set(cfg, key, value) == RLM_OK ? 0 : -1;
}

void serve_block_stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
}
