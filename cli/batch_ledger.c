/* batch_ledger — the SQLite ledger of rlm batch, next to its output: each
 * task's state, attempts and result line, committed as the task finishes.
 *
 * Design note. The ledger is the truth and the output file a view of it.
 * A result is committed first and appended to the output second, so a
 * crash (kill -9, a node lost) can leave the output one line short, or with
 * a torn last line, but never with a line the ledger lacks. Opening the
 * ledger compares the output with the done rows (in the order they
 * finished) and, when they differ, writes the output again from the ledger
 * into a temporary file renamed over it: a rerun therefore sees every done
 * task exactly once, whatever moment the last run died at. WAL with
 * synchronous=NORMAL: a commit survives the process being killed (not a
 * power cut, for which the cost of an fsync per task is not worth it:
 * rerunning the few lost tasks is the remedy). */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch.h"
#include "util.h"

/* Busy wait for a ledger another process holds (the same shard started
 * twice): long enough for a commit, short enough to say so. */
#define LEDGER_BUSY_MS 5000

struct batch_ledger {
    sqlite3 *db;
    char *out_path;
    int out_fd;                  /* O_APPEND */
    sqlite3_stmt *get, *put, *forget;
    long long next_seq;
    double seconds;
    size_t records;
};

static const char schema[] =
        "PRAGMA journal_mode=WAL;"
        "PRAGMA synchronous=NORMAL;"
        "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS tasks("
        "  id TEXT PRIMARY KEY,"
        "  state TEXT NOT NULL CHECK (state IN ('done', 'failed')),"
        "  status TEXT NOT NULL,"            /* the result's: answered, no_answer, error */
        "  attempts INTEGER NOT NULL,"
        "  digest TEXT NOT NULL,"
        "  line TEXT NOT NULL,"            /* the result line (done) or the last error (failed) */
        "  seq INTEGER,"                   /* order of finishing, for the output */
        "  updated REAL NOT NULL);"
        "CREATE INDEX IF NOT EXISTS tasks_seq ON tasks(seq) WHERE state = 'done';";

static void db_error(sqlite3 *db, const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "ledger: %s: %s", what, db ? sqlite3_errmsg(db) : "out of memory");
}

/* The meta value of key, or NULL (malloc'd). */
static char *meta_get(sqlite3 *db, const char *key)
{
    sqlite3_stmt *st = NULL;
    char *v = NULL;
    if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = ?", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            const char *t = (const char *)sqlite3_column_text(st, 0);
            v = t ? str_dup_len(t, strlen(t)) : NULL;
        }
    }
    sqlite3_finalize(st);
    return v;
}

/* Calls fn with each done task's line, in the order they finished, until
 * fn returns nonzero. 0 when all were seen, 1 when fn stopped, -1 with err
 * when the ledger cannot be read. */
static int each_done_line(sqlite3 *db, int (*fn)(void *ctx, const char *line), void *ctx, char *err,
                          size_t errlen)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT line FROM tasks WHERE state = 'done' ORDER BY seq", -1, &st,
                           NULL) != SQLITE_OK) {
        db_error(db, "cannot read", err, errlen);
        return -1;
    }
    int step, rc = 0;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (fn(ctx, (const char *)sqlite3_column_text(st, 0)) != 0) {
            rc = 1;
            break;
        }
    }
    if (rc == 0 && step != SQLITE_DONE) {
        db_error(db, "cannot read", err, errlen);
        rc = -1;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Compares the output's next line with a done line: 0 while they match. */
typedef struct line_reader {
    FILE *f;
    char *line;
    size_t cap;
} line_reader;

static int line_differs(void *ctx, const char *want)
{
    line_reader *r = ctx;
    ssize_t got = getline(&r->line, &r->cap, r->f);
    return got < 0 || r->line[got - 1] != '\n' || (size_t)got - 1 != strlen(want) ||
           memcmp(r->line, want, (size_t)got - 1) != 0;
}

/* Whether the output file holds exactly the done lines, in order. */
static int output_matches(sqlite3 *db, const char *path, int *matches, char *err, size_t errlen)
{
    *matches = 0;
    line_reader r = {.f = fopen(path, "r")};
    if (!r.f) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot read the output '%s': %s", path, strerror(errno));
        return -1;
    }
    int rc = each_done_line(db, line_differs, &r, err, errlen);
    /* Lines past the ledger's (a torn one, or a stray) differ too. */
    if (rc == 0)
        *matches = getline(&r.line, &r.cap, r.f) < 0;
    free(r.line);
    fclose(r.f);
    return rc < 0 ? -1 : 0;
}

/* Writes a done line to the rebuilt output: 0, or 1 with errno set. */
static int line_write(void *ctx, const char *line)
{
    int fd = *(int *)ctx;
    return write_full(fd, line, strlen(line)) != 0 || write_full(fd, "\n", 1) != 0;
}

/* Writes the output again from the ledger: a temporary file beside it,
 * synced, renamed over it. */
static int output_rebuild(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    buf tmp;
    buf_init(&tmp, strlen(path) + 32);
    buf_printf(&tmp, "%s.tmp%ld", path, (long)getpid());
    int fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = -1;
    if (fd < 0) {
        snprintf(err, errlen, "cannot write '%s': %s", tmp.data, strerror(errno));
        goto done;
    }
    int each = each_done_line(db, line_write, &fd, err, errlen);
    if (each != 0) {
        if (each > 0)
            snprintf(err, errlen, "cannot write '%s': %s", tmp.data, strerror(errno));
        goto done;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        snprintf(err, errlen, "cannot write '%s': %s", tmp.data, strerror(errno));
        goto done;
    }
    fd = -1;
    if (rename(tmp.data, path) != 0) {
        snprintf(err, errlen, "cannot replace '%s': %s", path, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    if (fd >= 0)
        close(fd);
    if (rc != 0)
        unlink(tmp.data);
    buf_free(&tmp);
    return rc;
}

batch_ledger *batch_ledger_open(const char *out, const char *shard, char *err, size_t errlen)
{
    batch_ledger *l = calloc(1, sizeof *l);
    buf path;
    buf_init(&path, strlen(out) + 16);
    buf_printf(&path, "%s.ledger", out);
    if (!l || !path.data) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    l->out_fd = -1;
    l->out_path = str_dup_len(out, strlen(out));
    struct stat st;
    int had_ledger = stat(path.data, &st) == 0;
    if (!had_ledger && stat(out, &st) == 0 && st.st_size > 0) {
        snprintf(err, errlen, "the output '%s' exists without its ledger '%s': it is not a batch "
                 "this command can resume (move it away, or choose another --out)", out, path.data);
        goto fail;
    }
    if (sqlite3_open_v2(path.data, &l->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                        SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "ledger: cannot open '%s': %s", path.data,
                 l->db ? sqlite3_errmsg(l->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(l->db, LEDGER_BUSY_MS);
    char *msg = NULL;
    if (sqlite3_exec(l->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "ledger '%s': %s", path.data, msg ? msg : sqlite3_errmsg(l->db));
        sqlite3_free(msg);
        goto fail;
    }
    char *was = meta_get(l->db, "shard");
    if (was && strcmp(was, shard) != 0) {
        snprintf(err, errlen, "the ledger '%s' is shard %s's, not %s's: give each shard its own "
                 "--out (e.g. results.{shard}.jsonl)", path.data, was, shard);
        free(was);
        goto fail;
    }
    free(was);
    sqlite3_stmt *ins = NULL;
    if (sqlite3_prepare_v2(l->db, "INSERT OR IGNORE INTO meta(key, value) VALUES ('shard', ?)", -1,
                           &ins, NULL) != SQLITE_OK) {
        db_error(l->db, "cannot write", err, errlen);
        goto fail;
    }
    sqlite3_bind_text(ins, 1, shard, -1, SQLITE_STATIC);
    int step = sqlite3_step(ins);
    sqlite3_finalize(ins);
    if (step != SQLITE_DONE) {
        db_error(l->db, "cannot write", err, errlen);
        goto fail;
    }
    if (sqlite3_prepare_v2(l->db, "SELECT state, attempts, digest, status FROM tasks WHERE id = ?", -1,
                           &l->get, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(l->db, "INSERT INTO tasks(id, state, attempts, digest, line, seq, updated, status) "
                           "VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(id) DO UPDATE SET "
                           "state = ?2, attempts = attempts + 1, digest = ?3, line = ?4, seq = ?5, "
                           "updated = ?6, status = ?7", -1, &l->put, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(l->db, "DELETE FROM tasks WHERE id = ?", -1, &l->forget, NULL) != SQLITE_OK) {
        db_error(l->db, "cannot prepare", err, errlen);
        goto fail;
    }
    sqlite3_stmt *seq = NULL;
    if (sqlite3_prepare_v2(l->db, "SELECT coalesce(max(seq), 0) FROM tasks", -1, &seq, NULL) == SQLITE_OK &&
        sqlite3_step(seq) == SQLITE_ROW)
        l->next_seq = sqlite3_column_int64(seq, 0) + 1;
    sqlite3_finalize(seq);

    int same;
    if (output_matches(l->db, out, &same, err, errlen) != 0)
        goto fail;
    if (!same && output_rebuild(l->db, out, err, errlen) != 0)
        goto fail;
    l->out_fd = open(out, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (l->out_fd < 0) {
        snprintf(err, errlen, "cannot write the output '%s': %s", out, strerror(errno));
        goto fail;
    }
    buf_free(&path);
    return l;
fail:
    buf_free(&path);
    batch_ledger_close(l);
    return NULL;
}

void batch_ledger_close(batch_ledger *l)
{
    if (!l)
        return;
    sqlite3_finalize(l->get);
    sqlite3_finalize(l->put);
    sqlite3_finalize(l->forget);
    sqlite3_close(l->db);
    if (l->out_fd >= 0)
        close(l->out_fd);
    free(l->out_path);
    free(l);
}

batch_state batch_ledger_state(batch_ledger *l, const char *id, int *attempts, char *digest,
                               size_t digestlen, char *status, size_t statuslen)
{
    batch_state s = BATCH_PENDING;
    *attempts = 0;
    if (digestlen)
        digest[0] = '\0';
    if (statuslen)
        status[0] = '\0';
    sqlite3_reset(l->get);
    sqlite3_bind_text(l->get, 1, id, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(l->get) == SQLITE_ROW) {
        const char *state = (const char *)sqlite3_column_text(l->get, 0);
        s = state && strcmp(state, "done") == 0 ? BATCH_DONE : BATCH_FAILED;
        *attempts = sqlite3_column_int(l->get, 1);
        const char *d = (const char *)sqlite3_column_text(l->get, 2);
        if (digestlen)
            snprintf(digest, digestlen, "%s", d ? d : "");
        const char *st = (const char *)sqlite3_column_text(l->get, 3);
        if (statuslen)
            snprintf(status, statuslen, "%s", st ? st : "");
    }
    sqlite3_reset(l->get);
    return s;
}

int batch_ledger_record(batch_ledger *l, const char *id, const char *digest, int final,
                        const char *status, const char *line, char *err, size_t errlen)
{
    double t0 = clock_now();
    int rc = -1;
    sqlite3_reset(l->put);
    sqlite3_bind_text(l->put, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(l->put, 2, final ? "done" : "failed", -1, SQLITE_STATIC);
    sqlite3_bind_text(l->put, 3, digest, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(l->put, 4, line, -1, SQLITE_TRANSIENT);
    if (final)
        sqlite3_bind_int64(l->put, 5, l->next_seq);
    else
        sqlite3_bind_null(l->put, 5);
    sqlite3_bind_double(l->put, 6, clock_wall());
    sqlite3_bind_text(l->put, 7, status, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(l->put) != SQLITE_DONE) {
        db_error(l->db, "cannot record a task", err, errlen);
        sqlite3_reset(l->put);
        goto done;
    }
    sqlite3_reset(l->put);
    if (final) {
        l->next_seq++;
        /* One write(2) per line with O_APPEND: a crash tears at most the
         * last line, which the next open rewrites from the ledger. */
        size_t n = strlen(line);
        char *with_nl = malloc(n + 1);
        if (!with_nl) {
            snprintf(err, errlen, "out of memory");
            goto done;
        }
        memcpy(with_nl, line, n);
        with_nl[n] = '\n';
        int w = write_full(l->out_fd, with_nl, n + 1);
        int saved = errno;
        free(with_nl);
        if (w != 0) {
            snprintf(err, errlen, "cannot append to the output '%s': %s (the ledger has the result: "
                     "a rerun writes it)", l->out_path, strerror(saved));
            goto done;
        }
    }
    rc = 0;
done:
    l->seconds += clock_now() - t0;
    l->records++;
    return rc;
}

int batch_ledger_forget(batch_ledger *l, const char *id, char *err, size_t errlen)
{
    sqlite3_reset(l->forget);
    sqlite3_bind_text(l->forget, 1, id, -1, SQLITE_TRANSIENT);
    int step = sqlite3_step(l->forget);
    sqlite3_reset(l->forget);
    if (step != SQLITE_DONE) {
        db_error(l->db, "cannot forget a task", err, errlen);
        return -1;
    }
    /* Its line may be in the output: the output follows the ledger. */
    if (sqlite3_changes(l->db) == 0)
        return 0;
    if (output_rebuild(l->db, l->out_path, err, errlen) != 0)
        return -1;
    close(l->out_fd);
    l->out_fd = open(l->out_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (l->out_fd < 0) {
        snprintf(err, errlen, "cannot write the output '%s': %s", l->out_path, strerror(errno));
        return -1;
    }
    return 0;
}

void batch_ledger_cost(const batch_ledger *l, double *seconds, size_t *records)
{
    *seconds = l->seconds;
    *records = l->records;
}
