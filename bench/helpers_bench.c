/* helpers_bench — medians of the issue-5 helpers on generated inputs: ingest
 * of a 50,000-file tree and its description, ingest of 40 MB and 1 GB files,
 * grep over 400 MB (collected, and scanned alone), BM25 index build over
 * 400 MB and query latency.
 * Usage: helpers_bench WORKDIR [MB_FOR_GREP_AND_SEARCH]  (prints, asserts nothing) */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "describe.h"
#include "grep.h"
#include "ingest.h"
#include "search.h"
#include "util.h"

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, compare_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Log-like text: timestamps, levels, words; a rare "needle" line. */
static void write_corpus(const char *path, size_t bytes)
{
    static const char *const words[] = {"alpha", "beta", "gamma", "delta", "request", "user",
                                        "timeout", "cache", "disk", "session", "token", "query",
                                        "retry", "server", "client", "update", "commit", "index"};
    FILE *f = fopen(path, "wb");
    if (!f)
        exit(1);
    size_t done = 0, line = 0;
    unsigned x = 12345;
    while (done < bytes) {
        char l[256];
        int n = snprintf(l, sizeof l, "2024-01-%02zu 12:%02zu:%02zu %s id=%zu", line % 28 + 1,
                         line % 60, line % 59, line % 97 == 0 ? "ERROR" : "INFO", line);
        for (int k = 0; k < 8; k++) {
            x = x * 1103515245u + 12345u;
            n += snprintf(l + n, sizeof l - (size_t)n, " %s%u", words[(x >> 16) % 18],
                          (x >> 8) % 1000);
        }
        if (line == 777777)
            n += snprintf(l + n, sizeof l - (size_t)n, " needle-in-haystack");
        l[n++] = '\n';
        fwrite(l, 1, (size_t)n, f);
        done += (size_t)n;
        line++;
    }
    fclose(f);
}

static void write_tree(const char *root, size_t files)
{
    char path[512];
    mkdir(root, 0755);
    for (size_t i = 0; i < files; i++) {
        if (i % 100 == 0) {
            snprintf(path, sizeof path, "%s/pkg%03zu", root, i / 100);
            mkdir(path, 0755);
        }
        snprintf(path, sizeof path, "%s/pkg%03zu/mod%05zu.py", root, i / 100, i);
        FILE *f = fopen(path, "wb");
        if (!f)
            exit(1);
        fprintf(f, "def f%zu(x):\n    return x * %zu\n\nclass C%zu:\n    pass\n", i, i, i);
        fclose(f);
    }
}

static ingest_set *ingest_one(const char *path)
{
    char err[512];
    ingest_set *s;
    const char *args[] = {path};
    if (ingest_open(args, 1, NULL, &s, err, sizeof err) != 0) {
        fprintf(stderr, "ingest: %s\n", err);
        exit(1);
    }
    return s;
}

static void bench_tree(const char *work)
{
    char root[512];
    snprintf(root, sizeof root, "%s/tree", work);
    struct stat st;
    if (stat(root, &st) != 0)
        write_tree(root, 50000);
    double t[5];
    size_t desc_len = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = clock_now();
        ingest_set *s = ingest_one(root);
        char *d = describe_docset(ingest_kind_of(s), ingest_docs(s), ingest_count(s));
        t[r] = clock_now() - t0;
        desc_len = strlen(d);
        free(d);
        ingest_free(s);
    }
    printf("tree of 50,000 files: ingest + describe median %.3f s (target < 3 s), description %zu bytes\n",
           median(t, 5), desc_len);
}

static void bench_file(const char *work, size_t mb, int runs)
{
    char path[512];
    snprintf(path, sizeof path, "%s/corpus-%zu.txt", work, mb);
    struct stat st;
    if (stat(path, &st) != 0)
        write_corpus(path, mb << 20);
    double t[5], tp[5];
    for (int r = 0; r < runs; r++) {
        double t0 = clock_now();
        ingest_set *s = ingest_one(path);
        t[r] = clock_now() - t0;
        int fd, data_fd;
        size_t len;
        char err[256];
        t0 = clock_now();
        ingest_pack(s, &fd, &len, &data_fd, err, sizeof err);
        tp[r] = clock_now() - t0;
        close(fd);
        close(data_fd);
        ingest_free(s);
    }
    printf("ingest of a %zu MB file (scan + map): median %.3f s; pack (index only, file fd passed): %.6f s\n",
           mb, median(t, (size_t)runs), median(tp, (size_t)runs));
}

static int count_hit(void *ctx, const grep_hit *hit)
{
    (void)hit;
    (*(size_t *)ctx)++;
    return 0;
}

static void bench_grep_search(const char *work, size_t mb)
{
    char path[512];
    snprintf(path, sizeof path, "%s/corpus-%zu.txt", work, mb);
    struct stat st;
    if (stat(path, &st) != 0)
        write_corpus(path, mb << 20);
    ingest_set *s = ingest_one(path);
    const ingest_doc *docs = ingest_docs(s);
    static const char *const patterns[] = {"needle-\\w+", "ERROR id=\\d+7 ", "timeout\\d+ retry"};
    char err[256];
    for (size_t p = 0; p < 3; p++) {
        grep *g;
        if (grep_compile(patterns[p], strlen(patterns[p]), "", NULL, &g, err, sizeof err) != 0)
            exit(1);
        double t[5], ts[5];
        size_t hits = 0, counted = 0;
        for (int r = 0; r < 5; r++) {
            grep_result res;
            double t0 = clock_now();
            grep_run(g, docs, 1, SIZE_MAX, 1000000, &res, err, sizeof err);
            t[r] = clock_now() - t0;
            hits = res.n;
            grep_result_free(&res);
            counted = 0;
            t0 = clock_now();
            grep_scan(g, docs, 1, SIZE_MAX, 1000000, count_hit, &counted, NULL, err, sizeof err);
            ts[r] = clock_now() - t0;
        }
        printf("grep %-20s over %zu MB: median %.3f s (grep_run), %.3f s (grep_scan, no hit "
               "array), %zu hits\n", patterns[p], mb, median(t, 5), median(ts, 5), hits);
        if (counted != hits)
            exit(1);
        grep_free(g);
    }
    double tb[3];
    search_index *ix = NULL;
    for (int r = 0; r < 3; r++) {
        search_free(ix);
        double t0 = clock_now();
        if (search_build(docs, 1, 2000, 0, NULL, &ix, err, sizeof err) != 0)
            exit(1);
        tb[r] = clock_now() - t0;
    }
    printf("search index build over %zu MB (2,000-char chunks): median %.2f s (target < 20 s), %zu chunks, %zu terms\n",
           mb, median(tb, 3), search_chunk_count(ix), search_term_count(ix));
    static const char *const queries[] = {"needle haystack", "timeout123 retry55 server9", "error",
                                          "info user1", "alpha1 beta2 gamma3 delta4"};
    double tq[50];
    size_t nq = 0;
    search_hit hits[10];
    size_t n;
    for (int r = 0; r < 10; r++)
        for (size_t q = 0; q < 5; q++) {
            double t0 = clock_now();
            search_query(ix, queries[q], strlen(queries[q]), 10, hits, &n);
            tq[nq++] = clock_now() - t0;
        }
    search_query(ix, "needle haystack", 15, 1, hits, &n);
    double q_median = median(tq, nq);   /* sorts tq: the maximum is last */
    printf("search query (top 10, 5 queries x 10): median %.2f ms, max %.2f ms (target < 10 ms); needle found: %s\n",
           q_median * 1e3, tq[nq - 1] * 1e3,
           n && memmem(docs[0].data + hits[0].off, hits[0].len, "needle", 6) ? "yes" : "no");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/cache", work);
    mkdir(dir, 0755);
    int from_cache;
    search_free(ix);
    double t0 = clock_now();
    search_open_cached(dir, docs, 1, 2000, &ix, &from_cache, err, sizeof err);
    double first = clock_now() - t0;
    search_free(ix);
    t0 = clock_now();
    search_open_cached(dir, docs, 1, 2000, &ix, &from_cache, err, sizeof err);
    printf("search cache: first open %.2f s, reopen from cache %.3f s (hash + map + validate; from cache: %d)\n",
           first, clock_now() - t0, from_cache);
    search_free(ix);
    ingest_free(s);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: helpers_bench WORKDIR [MB]\n");
        return 2;
    }
    size_t mb = argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) : 400;
    bench_tree(argv[1]);
    bench_file(argv[1], 40, 5);
    bench_grep_search(argv[1], mb);
    if (getenv("RLM_BENCH_1GB"))
        bench_file(argv[1], 1024, 3);
    return 0;
}
