/* ask — the smallest useful program on librlm: answers a question about a
 * file with a Recursive Language Model, then prints what the run cost.
 *
 *     cc ask.c $(pkg-config --cflags --libs rlm) -o ask
 *     ./ask big.txt "How many users reported a crash?" model=gpt-5-mini
 *
 * Every KEY=VALUE argument after the question is an option of
 * rlm_config_set (include/rlm.h lists them): base_url=..., api_key=...,
 * max_cost=0.50. Exit status: 0 answered, 1 no answer, 2 anything else. */
#include <stdio.h>
#include <string.h>

#include <rlm.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s FILE QUESTION [KEY=VALUE ...]\n", argv[0]);
        return 2;
    }
    int status = 2;
    rlm *r = NULL;
    rlm_config *cfg = rlm_config_new();
    if (!cfg) {
        fputs("out of memory\n", stderr);
        return 2;
    }
    for (int i = 3; i < argc; i++) {
        char key[64];
        const char *eq = strchr(argv[i], '=');
        if (!eq || (size_t)(eq - argv[i]) >= sizeof key) {
            fprintf(stderr, "not KEY=VALUE: %s\n", argv[i]);
            goto done;
        }
        snprintf(key, sizeof key, "%.*s", (int)(eq - argv[i]), argv[i]);
        if (rlm_config_set(cfg, key, eq + 1) != RLM_OK) {
            fprintf(stderr, "%s\n", rlm_config_errmsg(cfg));
            goto done;
        }
    }
    if (rlm_new(cfg, &r) != RLM_OK) {
        fprintf(stderr, "%s\n", r ? rlm_errmsg(r) : "out of memory");
        goto done;
    }
    if (rlm_set_context_file(r, argv[1]) != RLM_OK) {
        fprintf(stderr, "%s\n", rlm_errmsg(r));
        goto done;
    }
    char *answer = NULL;
    rlm_status st = rlm_ask(r, argv[2], &answer);
    if (st == RLM_OK) {
        printf("%s\n", answer);
        status = 0;
    } else {
        fprintf(stderr, "%s: %s\n", rlm_status_name(st), rlm_errmsg(r));
        status = st == RLM_NO_ANSWER ? 1 : 2;
    }
    rlm_string_free(answer);
    /* The report is JSON: iterations, sub_calls, usage per model, cost_usd... */
    const char *report = rlm_report_json(r);
    if (report)
        fprintf(stderr, "rlm %s report: %s\n", rlm_version(), report);
done:
    rlm_free(r);
    rlm_config_free(cfg);
    return status;
}
