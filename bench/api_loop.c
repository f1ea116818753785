/* api_loop — the C side of bench/python_bench.py: the same runs as the
 * Python binding's, through librlm directly, to measure what Python adds.
 * usage: api_loop BASE_URL RUNS MODE ; prints one wall time in ms per run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rlm.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    int runs = (int)strtol(argv[2], NULL, 10);
    static const char text[] = "alpha\nbeta\ngamma\n";
    for (int i = 0; i < runs; i++) {
        double t0 = now_ms();
        rlm_config *cfg = rlm_config_new();
        rlm_config_set(cfg, "base_url", argv[1]);
        rlm_config_set(cfg, "model", "root");
        rlm_config_set(cfg, "mode", argv[3]);
        rlm *r = NULL;
        char *answer = NULL;
        size_t len = 0;
        if (rlm_new(cfg, &r) != RLM_OK || rlm_set_context_text(r, text, sizeof text - 1) != RLM_OK ||
            rlm_ask_len(r, "How many lines?", &answer, &len) != RLM_OK) {
            fprintf(stderr, "run failed: %s\n", r ? rlm_errmsg(r) : "?");
            return 1;
        }
        (void)rlm_report_json(r);
        rlm_string_free(answer);
        rlm_free(r);
        rlm_config_free(cfg);
        printf("%.3f\n", now_ms() - t0);
    }
    return 0;
}
