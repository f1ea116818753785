/* sink_bench — the CPU the run log spends on a trace, measured on one
 * thread without the noise of a whole run: every event of a trace (the
 * demo's, 17 MB) is turned into its line and compressed, as the trace's
 * sink thread does for the log, the way rlm did it before (json_dumps,
 * zlib level 1 deflate) and the way it does now (trace_json_line, the
 * run log's zstd capture). Medians of N passes, in CPU milliseconds.
 * Usage (bench/sink_bench.sh builds it): sink_bench TRACE.jsonl [passes] */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "runlog.h"
#include "trace.h"

static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, by_value);
    return v[n / 2];
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs("usage: sink_bench TRACE.jsonl [passes]\n", stderr);
        return 2;
    }
    int passes = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 9;
    if (passes < 1 || passes > 100)
        passes = 9;
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    size_t n = 0, cap = 1024, bytes = 0;
    json_t **events = malloc(cap * sizeof *events);
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t got;
    while (events && (got = getline(&line, &line_cap, f)) > 0) {
        json_t *e = json_loadb(line, (size_t)got, 0, NULL);
        if (!e)
            continue;
        if (n == cap) {
            json_t **grown = realloc(events, (cap *= 2) * sizeof *events);
            if (!grown)
                return 1;
            events = grown;
        }
        events[n++] = e;
        bytes += (size_t)got;
    }
    free(line);
    fclose(f);
    printf("trace: %zu events, %.1f MB\n", n, bytes / 1e6);

    double *dump = calloc((size_t)passes, sizeof *dump), *write = calloc((size_t)passes, sizeof *write);
    double *deflate_ms = calloc((size_t)passes, sizeof *deflate_ms), *zstd_ms = calloc((size_t)passes, sizeof *zstd_ms);
    size_t deflated = 0;
    runlog_capture *capture = runlog_capture_new();
    unsigned char *zout = malloc(1 << 20);
    if (!dump || !write || !deflate_ms || !zstd_ms || !capture || !zout)
        return 1;
    for (int p = 0; p < passes; p++) {
        /* Before: json_dumps and deflate (level 1), line by line. */
        z_stream z;
        memset(&z, 0, sizeof z);
        deflateInit(&z, 1);
        deflated = 0;
        double t_dump = 0, t_z = 0;
        for (size_t i = 0; i < n; i++) {
            double t0 = cpu_ms();
            char *text = json_dumps(events[i], JSON_COMPACT);
            double t1 = cpu_ms();
            z.next_in = (Bytef *)text;
            z.avail_in = (uInt)strlen(text);
            do {
                z.next_out = zout;
                z.avail_out = 1 << 20;
                deflate(&z, Z_NO_FLUSH);
                deflated += (1 << 20) - z.avail_out;
            } while (z.avail_out == 0);
            t_z += cpu_ms() - t1;
            t_dump += t1 - t0;
            free(text);
        }
        double t0 = cpu_ms();
        z.next_in = NULL;
        z.avail_in = 0;
        int rc;
        do {
            z.next_out = zout;
            z.avail_out = 1 << 20;
            rc = deflate(&z, Z_FINISH);
            deflated += (1 << 20) - z.avail_out;
        } while (rc == Z_OK);
        deflateEnd(&z);
        dump[p] = t_dump;
        deflate_ms[p] = t_z + cpu_ms() - t0;

        /* Now: trace_json_line and the run log's capture (zstd). */
        runlog_capture_reset(capture, NULL, 0);
        double t_write = 0, t_zstd = 0;
        for (size_t i = 0; i < n; i++) {
            size_t len;
            double a = cpu_ms();
            char *text = trace_json_line(events[i], &len);
            double b = cpu_ms();
            runlog_capture_line(capture, text, len);
            t_zstd += cpu_ms() - b;
            t_write += b - a;
            free(text);
        }
        write[p] = t_write;
        zstd_ms[p] = t_zstd;
    }
    double d = median(dump, passes), w = median(write, passes);
    double zl = median(deflate_ms, passes), zs = median(zstd_ms, passes);
    printf("before: json_dumps %.1f ms + zlib deflate %.1f ms = %.1f ms CPU (%.2f MB compressed)\n", d, zl,
           d + zl, deflated / 1e6);
    printf("now:    trace_json_line %.1f ms + zstd %.1f ms = %.1f ms CPU (zstd's frame is finished at the run's "
           "end)\n", w, zs, w + zs);
    for (size_t i = 0; i < n; i++)
        json_decref(events[i]);
    free(events);
    free(dump);
    free(write);
    free(deflate_ms);
    free(zstd_ms);
    free(zout);
    runlog_capture_free(capture);
    return 0;
}
