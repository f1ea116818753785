/* lm_bench — measures the LM dispatcher against fakelm: N requests at a fixed
 * fake latency through lm_call_many, reporting wall time against the ideal
 * ceil(N / concurrency) x latency, the CPU time this process used and how
 * much its peak resident memory grew during the batch (the prompts are built
 * before, so the growth is the dispatcher's: requests, bodies, transfers,
 * replies). An optional PROMPT_BYTES pads every prompt to about that size.
 * Built and run by bench/lm_bench.sh. */
#include "lm.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* Peak resident set size so far, MiB. */
static double peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

int main(int argc, char **argv)
{
    long n, concurrency, latency_ms, prompt_bytes = 0;
    if ((argc != 5 && argc != 6) || parse_long(argv[2], &n) != 0 || parse_long(argv[3], &concurrency) != 0 ||
        parse_long(argv[4], &latency_ms) != 0 || n <= 0 || concurrency <= 0 || latency_ms < 0 ||
        (argc == 6 && (parse_long(argv[5], &prompt_bytes) != 0 || prompt_bytes < 0))) {
        fprintf(stderr, "usage: lm_bench BASE_URL N CONCURRENCY LATENCY_MS [PROMPT_BYTES]\n");
        return 2;
    }
    lm_options o = {.base_url = argv[1], .concurrency = (int)concurrency, .timeout = 60, .max_retries = -1};
    char err[256];
    lm *m = lm_new(&o, err, sizeof err);
    if (!m) {
        fprintf(stderr, "lm_new: %s\n", err);
        return 1;
    }
    lm_message *msgs = calloc((size_t)n, sizeof *msgs);
    lm_request *reqs = calloc((size_t)n, sizeof *reqs);
    lm_response *out = calloc((size_t)n, sizeof *out);
    /* One allocation for all prompts, each "question I\n" then filler:
     * what a batch of long sub-call prompts looks like to the dispatcher. */
    size_t stride = (size_t)prompt_bytes + 32;
    char *texts = malloc((size_t)n * stride);
    if (!msgs || !reqs || !out || !texts)
        return 1;
    for (long i = 0; i < n; i++) {
        char *text = texts + (size_t)i * stride;
        int len = snprintf(text, 32, "question %ld", i);
        if (prompt_bytes > len + 1) {
            text[len] = '\n';
            for (long k = len + 1; k < prompt_bytes; k++)
                text[k] = (char)('a' + k % 26);
            text[prompt_bytes] = '\0';
        }
        msgs[i] = (lm_message){.role = "user", .content = text};
        reqs[i] = (lm_request){.model = "bench-model", .messages = &msgs[i], .n_messages = 1};
    }

    double rss0 = peak_rss_mb();
    double cpu0 = cpu_seconds();
    double t0 = clock_now();
    lm_call_many(m, reqs, (size_t)n, out);
    double wall = clock_now() - t0;
    double cpu = cpu_seconds() - cpu0;
    double rss1 = peak_rss_mb();

    long ok = 0;
    for (long i = 0; i < n; i++) {
        if (out[i].error == LM_OK)
            ok++;
        else if (n - ok <= 3)
            fprintf(stderr, "request %ld: %s\n", i, out[i].error_message);
        lm_response_clear(&out[i]);
    }
    double ideal = ceil((double)n / (double)concurrency) * (double)latency_ms / 1000.0;
    printf("requests          %ld (%ld ok)\n", n, ok);
    printf("concurrency       %ld (peak in flight %d)\n", concurrency, lm_max_in_flight(m));
    printf("fake latency      %ld ms\n", latency_ms);
    printf("wall time         %.3f s\n", wall);
    printf("ideal             %.3f s  (ceil(%ld/%ld) x %.3f s)\n", ideal, n, concurrency, latency_ms / 1000.0);
    printf("ratio             %.3f  (target <= 1.30)\n", ideal > 0 ? wall / ideal : 0.0);
    printf("cpu time          %.3f s  (%.1f us per request)\n", cpu, cpu / (double)n * 1e6);
    printf("throughput        %.0f requests/s\n", (double)n / wall);
    if (prompt_bytes > 0)
        printf("prompts           %.1f MiB (%ld bytes each)\n", (double)n * (double)prompt_bytes / 1048576.0,
               prompt_bytes);
    printf("peak RSS          %.1f MiB before the batch, %.1f MiB after: +%.1f MiB in the dispatcher\n",
           rss0, rss1, rss1 - rss0);
    lm_free(m);
    free(msgs);
    free(reqs);
    free(out);
    free(texts);
    return ok == n && (ideal == 0 || wall / ideal <= 1.3) ? 0 : 1;
}
