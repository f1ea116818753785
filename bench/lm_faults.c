/* lm_faults — one measured batch through the LM dispatcher against fakelm:
 * N requests at a given concurrency, optionally paced (requests/min) and
 * streamed, reporting wall time, CPU time of this process (the whole LM
 * layer: encoding, the I/O thread, parsing) and retries. One key=value per
 * line so bench/lm_faults.sh can take medians. */
#include "lm.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    long n, concurrency, stream;
    double rpm;
    if (argc != 6 || parse_long(argv[2], &n) != 0 || parse_long(argv[3], &concurrency) != 0 ||
        parse_double(argv[4], &rpm) != 0 || parse_long(argv[5], &stream) != 0 || n <= 0 || concurrency <= 0) {
        fprintf(stderr, "usage: lm_faults BASE_URL N CONCURRENCY REQUESTS_PER_MINUTE STREAM\n");
        return 2;
    }
    lm_options o = {.base_url = argv[1], .concurrency = (int)concurrency, .timeout = 60, .max_retries = 6,
                    .requests_per_minute = rpm, .retry_bad_replies = 1};
    char err[256];
    lm *m = lm_new(&o, err, sizeof err);
    if (!m) {
        fprintf(stderr, "lm_new: %s\n", err);
        return 1;
    }
    lm_message *msgs = calloc((size_t)n, sizeof *msgs);
    lm_request *reqs = calloc((size_t)n, sizeof *reqs);
    lm_response *out = calloc((size_t)n, sizeof *out);
    char (*texts)[32] = calloc((size_t)n, sizeof *texts);
    if (!msgs || !reqs || !out || !texts)
        return 1;
    for (long i = 0; i < n; i++) {
        snprintf(texts[i], sizeof texts[i], "question %ld", i);
        msgs[i] = (lm_message){.role = "user", .content = texts[i]};
        reqs[i] = (lm_request){.model = "bench-model", .messages = &msgs[i], .n_messages = 1,
                               .stream = (int)stream};
    }
    double cpu0 = cpu_seconds();
    double t0 = clock_now();
    lm_call_many(m, reqs, (size_t)n, out);
    double wall = clock_now() - t0;
    double cpu = cpu_seconds() - cpu0;

    long ok = 0, correct = 0, retries = 0;
    for (long i = 0; i < n; i++) {
        char want[40];
        snprintf(want, sizeof want, "answer %ld", i);
        if (out[i].error == LM_OK) {
            ok++;
            correct += strcmp(out[i].content, want) == 0;
        } else if (n - ok <= 3) {
            fprintf(stderr, "request %ld: %s\n", i, out[i].error_message);
        }
        retries += out[i].attempts - 1;
        lm_response_clear(&out[i]);
    }
    printf("requests=%ld\nok=%ld\ncorrect=%ld\nretries=%ld\nwall=%.3f\ncpu=%.3f\ncpu_percent=%.2f\n", n, ok,
           correct, retries, wall, cpu, wall > 0 ? 100.0 * cpu / wall : 0.0);
    lm_free(m);
    free(msgs);
    free(reqs);
    free(out);
    free(texts);
    return correct == n ? 0 : 1;
}
