/* sandbox_bench — start-up, memory and round-trip times of the Python sandbox:
 * what a child RLM's sandbox costs (a 4 KB context: time to ready, resident
 * and proportional memory idle and after one cell), spawned and forked by a
 * sandbox factory; 64 of them started at once from 8 threads; time to a
 * ready child with a 40 MB context; a conversation's question start over it
 * (forked from a zygote holding it, and spawned); an empty cell, a cell with
 * one sub-call, and a regex over 100 MB. Prints medians; built and run by
 * bench/sandbox_bench.sh. */
#include "sandbox.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, compare);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int echo_call(void *userdata, int kind, const char *model, const char *const *prompts,
                     const size_t *prompt_lens, const char *const *contexts,
                     const size_t *context_lens, size_t n, char **results, size_t *result_lens)
{
    (void)userdata, (void)kind, (void)model, (void)contexts, (void)prompt_lens,
        (void)context_lens, (void)result_lens;
    for (size_t i = 0; i < n; i++)
        results[i] = strdup(prompts[i]);
    return 0;
}

static int make_context(size_t len)
{
    int fd = memfd_create("bench-context", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)len) != 0)
        return -1;
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return -1;
    const char line[] = "2024-01-01 12:00:00 INFO request served in 12 ms from 10.0.0.1\n";
    for (size_t i = 0; i < len; i++)
        p[i] = line[i % (sizeof line - 1)];
    munmap(p, len);
    return fd;
}

/* A field of /proc/PID/smaps_rollup in kB ("Rss", "Pss", ...), or -1;
 * "Private" is Private_Clean + Private_Dirty: what the process alone holds. */
static long smaps_kb(int pid, const char *field)
{
    if (strcmp(field, "Private") == 0) {
        long clean = smaps_kb(pid, "Private_Clean"), dirty = smaps_kb(pid, "Private_Dirty");
        return clean < 0 || dirty < 0 ? -1 : clean + dirty;
    }
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            kb = strtol(line + n + 1, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* What a child RLM's sandbox costs: a few KB of context, started, idle, and
 * after one trivial cell; spawned (factory NULL) or forked. Medians over
 * `starts`. */
static int bench_small_child(const char *exe, int starts, sandbox_factory *factory)
{
    size_t len = 4096;
    int fd = make_context(len);
    if (fd < 0) {
        perror("context");
        return -1;
    }
    sandbox_options opts = {.exe_path = exe, .context_fd = fd, .context_len = len,
                            .data_fd = -1, .factory = factory};
    enum { FIELDS = 3 };
    static const char *const fields[FIELDS] = {"Rss", "Pss", "Private"};
    double t[64], idle[FIELDS][64], used[FIELDS][64];
    char err[512];
    int forked = 0;
    for (int i = 0; i < starts; i++) {
        sandbox *sb;
        double t0 = clock_now();
        if (sandbox_start(&opts, &sb, err, sizeof err) != 0) {
            fprintf(stderr, "start: %s\n", err);
            close(fd);
            return -1;
        }
        t[i] = clock_now() - t0;
        forked += sandbox_forked(sb);
        for (int f = 0; f < FIELDS; f++)
            idle[f][i] = (double)smaps_kb(sandbox_pid(sb), fields[f]);
        sandbox_cell cell;
        sandbox_exec(sb, "x = len(context)\nprint(x)", NULL, NULL, &cell, err, sizeof err);
        sandbox_cell_clear(&cell);
        for (int f = 0; f < FIELDS; f++)
            used[f][i] = (double)smaps_kb(sandbox_pid(sb), fields[f]);
        sandbox_free(sb);
    }
    printf("child sandbox (4 KB context), %s: start to ready median %.1f ms over %d\n",
           factory ? "forked by a factory" : "spawned", median(t, (size_t)starts) * 1e3, starts);
    if (factory && forked != starts)
        printf("  (only %d of them were forked)\n", forked);
    for (int f = 0; f < FIELDS; f++)
        printf("  %-7s idle after start %.1f MB, after one cell %.1f MB (medians)\n", fields[f],
               median(idle[f], (size_t)starts) / 1024, median(used[f], (size_t)starts) / 1024);
    close(fd);
    return 0;
}

typedef struct starter {
    const sandbox_options *opts;
    sandbox **out;
    int from, to, failed;
} starter;

static void *start_range(void *arg)
{
    starter *st = arg;
    char err[512];
    for (int i = st->from; i < st->to; i++)
        if (sandbox_start(st->opts, &st->out[i], err, sizeof err) != 0) {
            fprintf(stderr, "start: %s\n", err);
            st->out[i] = NULL;
            st->failed++;
        }
    return NULL;
}

/* n children with a 4 KB context started at once from `threads` threads, as
 * a root's rlm_query_batched does: the wall time until the last is ready,
 * median over `runs`; and, all n alive and idle, the median child's
 * proportional and private memory. */
static int bench_concurrent(const char *exe, sandbox_factory *factory, int n, int threads,
                            int runs)
{
    size_t len = 4096;
    int fd = make_context(len);
    if (fd < 0 || n > 256 || threads > 16 || runs > 64) {
        perror("context");
        return -1;
    }
    sandbox_options opts = {.exe_path = exe, .context_fd = fd, .context_len = len,
                            .data_fd = -1, .factory = factory};
    sandbox *sb[256];
    double t[64], pss[256], private_kb[256];
    for (int r = 0; r < runs; r++) {
        starter st[16];
        pthread_t tid[16];
        double t0 = clock_now();
        for (int k = 0; k < threads; k++) {
            st[k] = (starter){.opts = &opts, .out = sb, .from = n * k / threads,
                              .to = n * (k + 1) / threads};
            pthread_create(&tid[k], NULL, start_range, &st[k]);
        }
        int failed = 0;
        for (int k = 0; k < threads; k++) {
            pthread_join(tid[k], NULL);
            failed += st[k].failed;
        }
        t[r] = clock_now() - t0;
        for (int i = 0; i < n && r == runs - 1 && !failed; i++) {
            pss[i] = (double)smaps_kb(sandbox_pid(sb[i]), "Pss");
            private_kb[i] = (double)smaps_kb(sandbox_pid(sb[i]), "Private");
        }
        for (int i = 0; i < n; i++)
            sandbox_free(sb[i]);
        if (failed) {
            close(fd);
            return -1;
        }
    }
    printf("%d children (4 KB context) started at once from %d threads, %s: all ready after "
           "%.2f s (median over %d)\n",
           n, threads, factory ? "forked by a factory" : "spawned", median(t, (size_t)runs), runs);
    printf("  with all %d alive: Pss %.1f MB, Private %.1f MB per child (medians)\n", n,
           median(pss, (size_t)n) / 1024, median(private_kb, (size_t)n) / 1024);
    close(fd);
    return 0;
}

/* A question of a conversation over a 40 MB input: a fresh sandbox with the
 * input and the data the question before left (a list of 100,000 ints and a
 * dict of 10,000 entries), forked from a zygote that holds the input, or
 * spawned and loading it (the fallback). Also the time to write that data.
 * Medians over `runs`. */
static int bench_question_start(const char *exe, int fd, size_t len, int runs)
{
    char err[512];
    sandbox_factory *f = NULL;
    sandbox_options fopts = {.exe_path = exe};
    sandbox_input in = {.context_fd = fd, .context_len = len, .data_fd = -1};
    if (sandbox_factory_new(&fopts, &f, err, sizeof err) != 0 ||
        sandbox_factory_add_input(f, NULL, &in, err, sizeof err) != 0) {
        fprintf(stderr, "factory: %s\n", err);
        return -1;
    }
    sandbox_options forked = {.exe_path = exe, .context_fd = -1, .data_fd = -1, .factory = f,
                              .factory_inputs = 1};
    sandbox_options spawned = {.exe_path = exe, .context_fd = fd, .context_len = len,
                               .data_fd = -1};
    sandbox *sb;
    sandbox_cell cell;
    sandbox_snapshot snap;
    double take[64], t_fork[64], t_spawn[64];
    if (runs > 64 || sandbox_start(&forked, &sb, err, sizeof err) != 0) {
        fprintf(stderr, "start: %s\n", err);
        return -1;
    }
    sandbox_exec(sb, "nums = list(range(100000))\ntable = {str(i): i for i in range(10000)}",
                 NULL, NULL, &cell, err, sizeof err);
    sandbox_cell_clear(&cell);
    for (int i = 0; i < runs; i++) {
        double t0 = clock_now();
        if (sandbox_take_snapshot(sb, (size_t)256 << 20, &snap, err, sizeof err) != 0) {
            fprintf(stderr, "snapshot: %s\n", err);
            return -1;
        }
        take[i] = clock_now() - t0;
        if (i + 1 < runs)
            sandbox_snapshot_clear(&snap);
    }
    sandbox_free(sb);
    for (int config = 0; config < 2; config++) {
        for (int i = 0; i < runs; i++) {
            double t0 = clock_now();
            if (sandbox_start(config ? &spawned : &forked, &sb, err, sizeof err) != 0 ||
                sandbox_load_snapshot(sb, snap.fd, snap.len, NULL, err, sizeof err) != 0) {
                fprintf(stderr, "question start: %s\n", err);
                return -1;
            }
            (config ? t_spawn : t_fork)[i] = clock_now() - t0;
            sandbox_free(sb);
        }
    }
    printf("conversation question start (40 MB input, %zu bytes of data carried): forked from "
           "the conversation's zygote %.1f ms, spawned %.1f ms; writing the data %.1f ms "
           "(medians over %d)\n",
           snap.len, median(t_fork, (size_t)runs) * 1e3, median(t_spawn, (size_t)runs) * 1e3,
           median(take, (size_t)runs) * 1e3, runs);
    sandbox_snapshot_clear(&snap);
    sandbox_factory_free(f);
    return 0;
}

int main(int argc, char **argv)
{
    const char *exe = argc > 1 ? argv[1] : "build/rlm-sandbox";
    sandbox_options factory_opts = {.exe_path = exe};
    sandbox_factory *factory = NULL;
    char err[512];
    if (sandbox_factory_new(&factory_opts, &factory, err, sizeof err) != 0) {
        fprintf(stderr, "factory: %s\n", err);
        return 1;
    }
    if (bench_small_child(exe, 20, NULL) != 0 || bench_small_child(exe, 20, factory) != 0 ||
        bench_concurrent(exe, factory, 64, 8, 20) != 0 ||
        bench_concurrent(exe, NULL, 64, 8, 20) != 0)
        return 1;
    if (argc > 2 && strcmp(argv[2], "--small") == 0) {
        sandbox_factory_free(factory);
        return 0;
    }
    size_t context_len = (size_t)40 << 20;
    int fd = make_context(context_len);
    if (fd < 0) {
        perror("context");
        return 1;
    }
    sandbox_options opts = {.exe_path = exe, .context_fd = fd, .context_len = context_len,
                            .data_fd = -1};
    enum { STARTS = 15, CELLS = 2000, CALLS = 500 };
    static double t[CELLS];

    /* Every layer, without namespaces (the cost of the clone path), and
     * forked by the factory (every layer). */
    static const char *const configs[] = {", all layers", ", no namespaces", ", forked"};
    for (int config = 0; config < 3; config++) {
        opts.no_namespaces = config == 1;
        opts.factory = config == 2 ? factory : NULL;
        for (int i = 0; i < STARTS; i++) {
            sandbox *sb;
            double t0 = clock_now();
            if (sandbox_start(&opts, &sb, err, sizeof err) != 0) {
                fprintf(stderr, "start: %s\n", err);
                return 1;
            }
            t[i] = clock_now() - t0;
            sandbox_free(sb);
        }
        printf("start to ready (40 MB context%s): median %.1f ms over %d\n", configs[config],
               median(t, STARTS) * 1e3, STARTS);
    }
    opts.no_namespaces = 0;
    opts.factory = NULL;
    sandbox_factory_free(factory);
    if (bench_question_start(exe, fd, context_len, 15) != 0)
        return 1;

    sandbox *sb;
    if (sandbox_start(&opts, &sb, err, sizeof err) != 0) {
        fprintf(stderr, "start: %s\n", err);
        return 1;
    }
    printf("layers: %s\n", sandbox_layers(sb));
    sandbox_cell cell;
    for (int i = 0; i < CELLS; i++) {
        double t0 = clock_now();
        sandbox_exec(sb, "", NULL, NULL, &cell, err, sizeof err);
        t[i] = clock_now() - t0;
        sandbox_cell_clear(&cell);
    }
    printf("empty cell round trip: median %.3f ms over %d\n", median(t, CELLS) * 1e3, CELLS);
    for (int i = 0; i < CELLS; i++) {
        double t0 = clock_now();
        sandbox_exec(sb, "x = len(context)\nx", NULL, NULL, &cell, err, sizeof err);
        t[i] = clock_now() - t0;
        sandbox_cell_clear(&cell);
    }
    printf("small cell with output: median %.3f ms over %d\n", median(t, CELLS) * 1e3, CELLS);
    for (int i = 0; i < CALLS; i++) {
        double t0 = clock_now();
        sandbox_exec(sb, "llm_query('ping')", echo_call, NULL, &cell, err, sizeof err);
        t[i] = clock_now() - t0;
        sandbox_cell_clear(&cell);
    }
    printf("cell with one sub-call (instant callback): median %.3f ms over %d\n",
           median(t, CALLS) * 1e3, CALLS);
    double t0 = clock_now();
    sandbox_exec(sb, "n = context.count('\\n')", NULL, NULL, &cell, err, sizeof err);
    printf("context.count over 40 MB: %.1f ms\n", (clock_now() - t0) * 1e3);
    sandbox_cell_clear(&cell);
    sandbox_free(sb);
    close(fd);

    /* The same regex as bench/sandbox_bench.sh runs in plain python3. */
    size_t big_len = (size_t)100 << 20;
    int big = make_context(big_len);
    sandbox_options big_opts = {.exe_path = exe, .context_fd = big, .context_len = big_len,
                                .data_fd = -1};
    if (big < 0 || sandbox_start(&big_opts, &sb, err, sizeof err) != 0) {
        fprintf(stderr, "start: %s\n", err);
        return 1;
    }
    enum { REGEX_RUNS = 5 };
    for (int i = 0; i < REGEX_RUNS; i++) {
        sandbox_exec(sb, "import re\nn = len(re.findall(r'served in (\\d+) ms', context))",
                     NULL, NULL, &cell, err, sizeof err);
        t[i] = cell.seconds;
        sandbox_cell_clear(&cell);
    }
    printf("regex findall over 100 MB in the sandbox: median %.1f ms over %d\n",
           median(t, REGEX_RUNS) * 1e3, REGEX_RUNS);
    sandbox_free(sb);
    close(big);
    return 0;
}
