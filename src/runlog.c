/* runlog — one SQLite row per run, its trace compressed with zstd as it is
 * written (the demo's 17 MB trace takes about 2.6 MB), the traces' total
 * (kept by triggers) capped by dropping the oldest ones. Logs written before
 * kept their traces deflated (zlib): those still read, told apart by their
 * first bytes. Writers take the database for one short transaction at the
 * end of a run; WAL and a busy timeout let two runs finish at the same
 * moment. A log already set up opens with no write, and a close leaves the
 * WAL as it is, checkpointed by the record that takes it past 1 MB: a short
 * run syncs nothing. */
#include "runlog.h"

#include <errno.h>
#include <libgen.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>
#include <zstd.h>

#include "config.h"
#include "rlm.h"
#include "util.h"

#define RUNLOG_SCHEMA "1"
#define RUNLOG_BUSY_MS 5000

/* WAL pages past which a run's record ends with a checkpoint: see the
 * design note in runlog_open. */
#define RUNLOG_WAL_CHECKPOINT_PAGES 256

struct runlog {
    sqlite3 *db;
    char *path;
    int wal_pages;           /* in the WAL after the last commit (note_wal) */
};

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);"
    "INSERT OR IGNORE INTO meta(key, value) VALUES('schema', '" RUNLOG_SCHEMA "');"
    "CREATE TABLE IF NOT EXISTS runs("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " started REAL NOT NULL,"
    " command TEXT, question TEXT, inputs TEXT, model TEXT, sub_model TEXT,"
    " answer TEXT, status TEXT, how TEXT, error TEXT, session TEXT,"
    " turns INTEGER, sub_calls INTEGER, prompt_tokens INTEGER, completion_tokens INTEGER,"
    " cost_usd REAL, elapsed REAL,"
    " trace BLOB, trace_bytes INTEGER NOT NULL DEFAULT 0, trace_note TEXT,"
    " cached_tokens INTEGER, cache_write_tokens INTEGER, cost_no_cache_usd REAL,"
    " sub_calls_deduplicated INTEGER);"
    "CREATE INDEX IF NOT EXISTS runs_started ON runs(started);";

/* The traces' total, kept by triggers as rows come, lose their trace and
 * go (any writer's, an older rlm's too): the cap is checked at every run's
 * end, and summing the traces read a page per row (a served log holds tens
 * of thousands). Set up once on a log that had none, from the rows it has. */
static const char totals_sql[] =
    "CREATE TABLE IF NOT EXISTS totals(id INTEGER PRIMARY KEY CHECK (id = 1), traces INTEGER NOT NULL);"
    "INSERT OR IGNORE INTO totals(id, traces) SELECT 1, COALESCE(SUM(length(trace)), 0) FROM runs;"
    "CREATE TRIGGER IF NOT EXISTS runs_total_insert AFTER INSERT ON runs BEGIN"
    " UPDATE totals SET traces = traces + COALESCE(length(NEW.trace), 0); END;"
    "CREATE TRIGGER IF NOT EXISTS runs_total_update AFTER UPDATE OF trace ON runs BEGIN"
    " UPDATE totals SET traces = traces - COALESCE(length(OLD.trace), 0) + COALESCE(length(NEW.trace), 0);"
    " END;"
    "CREATE TRIGGER IF NOT EXISTS runs_total_delete AFTER DELETE ON runs BEGIN"
    " UPDATE totals SET traces = traces - COALESCE(length(OLD.trace), 0); END;";

/* The log's user_version once set up by this rlm: every column, the totals.
 * A log at it (or past it) opens with no set-up statement, each a write. */
#define RUNLOG_USER_VERSION 2

/* Columns added after the first schema, which a log written by an older rlm
 * lacks: runlog_open adds them (NULL in the old rows). */
static const char *const added_columns[][2] = {
    {"cached_tokens", "INTEGER"},
    {"cache_write_tokens", "INTEGER"},
    {"cost_no_cache_usd", "REAL"},
    {"sub_calls_deduplicated", "INTEGER"},
};

/* How many of added_columns the runs table lacks; -1 on a database error. */
static int missing_columns(sqlite3 *db, int *missing)
{
    for (size_t i = 0; i < sizeof added_columns / sizeof added_columns[0]; i++) {
        sqlite3_stmt *s = NULL;
        if (sqlite3_prepare_v2(db, "SELECT 1 FROM pragma_table_info('runs') WHERE name = ?", -1, &s, NULL) !=
            SQLITE_OK)
            return -1;
        sqlite3_bind_text(s, 1, added_columns[i][0], -1, SQLITE_STATIC);
        int step = sqlite3_step(s);
        sqlite3_finalize(s);
        if (step != SQLITE_ROW && step != SQLITE_DONE)
            return -1;
        missing[i] = step == SQLITE_DONE;
    }
    return 0;
}

/* Adds the columns an older log lacks; in the set-up's write transaction,
 * so two rlm processes opening the same old log do not both add them. 0, or
 * -1 (the db's error is set). */
static int add_missing_columns(sqlite3 *db)
{
    int missing[sizeof added_columns / sizeof added_columns[0]] = {0};
    if (missing_columns(db, missing) != 0)
        return -1;
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        char sql[160];
        snprintf(sql, sizeof sql, "ALTER TABLE runs ADD COLUMN %s %s", added_columns[i][0], added_columns[i][1]);
        if (missing[i] && sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
            return -1;
    }
    return 0;
}

/* Runs one set-up statement. SQLite does not call the busy handler for
 * every lock it meets here: two runs that create the log at the same moment
 * see PRAGMA journal_mode=WAL fail at once with SQLITE_BUSY ("database is
 * locked") while the other holds the file. So a busy set-up is retried every
 * 10 ms for as long as the busy timeout would have waited. */
static int exec_setup(runlog *l, const char *sql)
{
    double give_up = clock_now() + RUNLOG_BUSY_MS / 1000.0;
    for (;;) {
        int rc = sqlite3_exec(l->db, sql, NULL, NULL, NULL);
        if ((rc & 0xff) != SQLITE_BUSY || clock_now() >= give_up)
            return rc;
        struct timespec pause = {0, 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}

/* The WAL hook (it replaces SQLite's automatic checkpoint): how many pages
 * the WAL holds after a commit. */
static int note_wal(void *ctx, sqlite3 *db, const char *name, int pages)
{
    (void)db;
    (void)name;
    ((runlog *)ctx)->wal_pages = pages;
    return SQLITE_OK;
}

/* After a commit: a WAL past RUNLOG_WAL_CHECKPOINT_PAGES is copied into the
 * log and truncated. A reader holding it (rlm logs) may keep the checkpoint
 * from finishing: a later record tries again. */
static void checkpoint_if_big(runlog *l)
{
    if (l->wal_pages < RUNLOG_WAL_CHECKPOINT_PAGES)
        return;
    if (sqlite3_wal_checkpoint_v2(l->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL) == SQLITE_OK)
        l->wal_pages = 0;
}

/* The log's user_version; -1 when it cannot be read (no database). */
static int log_version(sqlite3 *db)
{
    sqlite3_stmt *s = NULL;
    int version = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        version = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return version;
}

/* Creates what the log lacks, in one write transaction. WAL lets a reader
 * (rlm logs) and a writer work at once; a file that is no database fails
 * here, before anything is written to it. 0, or -1 (the db's error set). */
static int set_up(runlog *l)
{
    if (exec_setup(l, "PRAGMA journal_mode=WAL;") != SQLITE_OK || exec_setup(l, "BEGIN IMMEDIATE") != SQLITE_OK)
        return -1;
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", RUNLOG_USER_VERSION);
    if (sqlite3_exec(l->db, schema_sql, NULL, NULL, NULL) == SQLITE_OK && add_missing_columns(l->db) == 0 &&
        sqlite3_exec(l->db, totals_sql, NULL, NULL, NULL) == SQLITE_OK &&
        sqlite3_exec(l->db, sql, NULL, NULL, NULL) == SQLITE_OK &&
        sqlite3_exec(l->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static void db_error(runlog *l, char *err, size_t errlen, const char *what)
{
    snprintf(err, errlen, "run log '%s': %s: %s", l->path, what, sqlite3_errmsg(l->db));
}

runlog *runlog_open(const char *path, char *err, size_t errlen)
{
    runlog *l = calloc(1, sizeof *l);
    char *dir_copy = path ? strdup(path) : NULL;
    if (!l || !dir_copy || !(l->path = strdup(path))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (dir_make_all(dirname(dir_copy)) != 0) {
        snprintf(err, errlen, "run log '%s': cannot create its directory: %s", path, strerror(errno));
        goto fail;
    }
    if (sqlite3_open_v2(path, &l->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK) {
        db_error(l, err, errlen, "cannot open it");
        goto fail;
    }
    sqlite3_busy_timeout(l->db, RUNLOG_BUSY_MS);
    /* Design note. A run's whole use of the log is one open, one short
     * transaction and a close, and the close of the last connection to a
     * WAL database checkpoints it and deletes the WAL, which the next run
     * then creates again: four syncs a run (the new WAL's header and its
     * directory, the checkpoint's WAL and database), most of what the log
     * cost a short run (~2 ms here, far more on a slow disk). So a close
     * leaves the WAL as it is, and the record that takes it past
     * RUNLOG_WAL_CHECKPOINT_PAGES (1 MB) checkpoints it and truncates it:
     * short runs share one checkpoint among dozens, a run with a big
     * trace pays its own. Not SQLite's automatic checkpoint: a process
     * that opens the log rebuilds the WAL's index from the file, counting
     * nothing in it as checkpointed, so with one commit per process a WAL
     * was never started again and grew run after run, each open reading it
     * whole. logs.db-wal and logs.db-shm stay next to the log. */
    sqlite3_db_config(l->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)NULL);
    sqlite3_wal_hook(l->db, note_wal, l);
    if ((log_version(l->db) < RUNLOG_USER_VERSION && set_up(l) != 0) ||
        /* A log survives a crash of rlm as it is (WAL); only a power cut
         * may lose its last runs, which is not worth an fsync per run. */
        exec_setup(l, "PRAGMA synchronous=NORMAL;") != SQLITE_OK) {
        db_error(l, err, errlen, "unusable (move it away, or remove it to start a new log)");
        goto fail;
    }
    free(dir_copy);
    return l;
fail:
    free(dir_copy);
    runlog_close(l);
    return NULL;
}

void runlog_close(runlog *l)
{
    if (!l)
        return;
    sqlite3_close(l->db);
    free(l->path);
    free(l);
}

/* ---- capture ------------------------------------------------------------------ */

/* The level of the run log's zstd: its fastest positive one. A run's trace
 * is mostly sub-call prompts; level 1 keeps the demo's 17 MB in 2.6 MB at
 * about 500 MB/s, where zlib's fastest took 3.1 MB at about 190 MB/s: the
 * log must cost a run next to nothing. */
#define RUNLOG_ZSTD_LEVEL 1

struct runlog_capture {
    ZSTD_CCtx *z;
    unsigned char *out;
    size_t len, cap;
    size_t raw;                /* bytes of trace given */
    int too_big;               /* past RUNLOG_MAX_TRACE_BYTES (or a zstd failure): no more kept */
    int finished;
};

runlog_capture *runlog_capture_new(void)
{
    runlog_capture *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->z = ZSTD_createCCtx();
    if (!c->z || ZSTD_isError(ZSTD_CCtx_setParameter(c->z, ZSTD_c_compressionLevel, RUNLOG_ZSTD_LEVEL))) {
        runlog_capture_free(c);
        return NULL;
    }
    runlog_capture_reset(c, NULL, 0);
    return c;
}

/* Runs zstd over in with mode (continue, or end the frame), growing the
 * output within its bound. */
static void capture_compress(runlog_capture *c, const void *data, size_t len, ZSTD_EndDirective mode)
{
    ZSTD_inBuffer in = {data, len, 0};
    for (;;) {
        if (c->cap - c->len < 64 * 1024) {
            size_t cap = c->cap ? c->cap * 2 : 256 * 1024;
            unsigned char *grown = cap <= RUNLOG_MAX_TRACE_BYTES + 128 * 1024 ? realloc(c->out, cap) : NULL;
            if (!grown) {
                c->too_big = 1;
                return;
            }
            c->out = grown;
            c->cap = cap;
        }
        ZSTD_outBuffer out = {c->out, c->cap, c->len};
        size_t left = ZSTD_compressStream2(c->z, &out, &in, mode);
        c->len = out.pos;
        if (ZSTD_isError(left)) {
            c->too_big = 1;
            return;
        }
        /* Done when the input is taken and, to end the frame, all flushed. */
        if (in.pos == in.size && (mode == ZSTD_e_continue ? out.pos < out.size : left == 0))
            return;
    }
}

void runlog_capture_reset(runlog_capture *c, const char *prologue, size_t len)
{
    if (!c)
        return;
    c->len = c->raw = 0;
    c->too_big = ZSTD_isError(ZSTD_CCtx_reset(c->z, ZSTD_reset_session_only));
    c->finished = 0;
    if (prologue && len)
        runlog_capture_line(c, prologue, len);
}

void runlog_capture_line(void *ctx, const char *line, size_t len)
{
    runlog_capture *c = ctx;
    if (!c || c->too_big || c->finished)
        return;
    capture_compress(c, line, len, ZSTD_e_continue);
    c->raw += len;
    if (c->len > RUNLOG_MAX_TRACE_BYTES)
        c->too_big = 1;
}

static void capture_finish(runlog_capture *c)
{
    if (!c || c->too_big || c->finished)
        return;
    capture_compress(c, NULL, 0, ZSTD_e_end);
    c->finished = 1;
}

void runlog_capture_free(runlog_capture *c)
{
    if (!c)
        return;
    ZSTD_freeCCtx(c->z);
    free(c->out);
    free(c);
}

/* ---- rows ------------------------------------------------------------------------ */

static void bind_text(sqlite3_stmt *s, int i, json_t *run, const char *key)
{
    json_t *v = json_object_get(run, key);
    if (json_is_string(v))
        sqlite3_bind_text(s, i, json_string_value(v), (int)json_string_length(v), SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, i);
}

static void bind_number(sqlite3_stmt *s, int i, json_t *run, const char *key)
{
    json_t *v = json_object_get(run, key);
    if (json_is_integer(v))
        sqlite3_bind_int64(s, i, json_integer_value(v));
    else if (json_is_real(v))
        sqlite3_bind_double(s, i, json_real_value(v));
    else
        sqlite3_bind_null(s, i);
}

/* Drops the oldest traces until those kept weigh at most max_bytes. */
static int apply_cap(runlog *l, size_t max_bytes)
{
    sqlite3_stmt *s = NULL;
    sqlite3_int64 total = 0;
    if (sqlite3_prepare_v2(l->db, "SELECT traces FROM totals WHERE id = 1", -1, &s, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(s) == SQLITE_ROW)
        total = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    if (total <= (sqlite3_int64)max_bytes)
        return 0;
    sqlite3_stmt *drop = NULL;
    if (sqlite3_prepare_v2(l->db, "SELECT id, length(trace) FROM runs WHERE trace IS NOT NULL ORDER BY id",
                           -1, &s, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(l->db, "UPDATE runs SET trace = NULL, trace_note = 'dropped: the log is over its "
                                  "size cap' WHERE id = ?", -1, &drop, NULL) != SQLITE_OK) {
        sqlite3_finalize(s);
        return -1;
    }
    int rc = 0;
    while (total > (sqlite3_int64)max_bytes && sqlite3_step(s) == SQLITE_ROW) {
        sqlite3_bind_int64(drop, 1, sqlite3_column_int64(s, 0));
        if (sqlite3_step(drop) != SQLITE_DONE)
            rc = -1;
        sqlite3_reset(drop);
        total -= sqlite3_column_int64(s, 1);
    }
    sqlite3_finalize(s);
    sqlite3_finalize(drop);
    return rc;
}

int runlog_record(runlog *l, json_t *run, runlog_capture *capture, size_t max_bytes, long long *id,
                  char *err, size_t errlen)
{
    static const char sql[] =
        "INSERT INTO runs(started, command, question, inputs, model, sub_model, answer, status, how,"
        " error, session, turns, sub_calls, prompt_tokens, completion_tokens, cost_usd, elapsed,"
        " trace, trace_bytes, trace_note, cached_tokens, cache_write_tokens, cost_no_cache_usd,"
        " sub_calls_deduplicated) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
    static const char *const texts[] = {"command", "question", NULL, "model", "sub_model", "answer",
                                        "status", "how", "error", "session"};
    static const char *const numbers[] = {"turns", "sub_calls", "prompt_tokens", "completion_tokens",
                                          "cost_usd", "elapsed"};
    static const char *const cache_numbers[] = {"cached_tokens", "cache_write_tokens", "cost_no_cache_usd",
                                                "sub_calls_deduplicated"};
    capture_finish(capture);
    sqlite3_stmt *s = NULL;
    if (sqlite3_exec(l->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        db_error(l, err, errlen, "cannot write");
        return -1;
    }
    if (sqlite3_prepare_v2(l->db, sql, -1, &s, NULL) != SQLITE_OK)
        goto fail;
    json_t *started = json_object_get(run, "started");
    sqlite3_bind_double(s, 1, json_is_number(started) ? json_number_value(started) : clock_wall());
    for (int i = 0; i < 10; i++)
        if (texts[i])
            bind_text(s, 2 + i, run, texts[i]);
    json_t *given = json_object_get(run, "inputs");
    char *inputs = given ? json_dumps(given, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    sqlite3_bind_text(s, 4, inputs ? inputs : "[]", -1, SQLITE_TRANSIENT);
    free(inputs);
    for (int i = 0; i < 6; i++)
        bind_number(s, 12 + i, run, numbers[i]);
    for (int i = 0; i < 4; i++)
        bind_number(s, 21 + i, run, cache_numbers[i]);
    const char *note = NULL;
    if (capture && !capture->too_big && capture->len > 0) {
        sqlite3_bind_blob(s, 18, capture->out, (int)capture->len, SQLITE_STATIC);
        sqlite3_bind_int64(s, 19, (sqlite3_int64)capture->raw);
    } else {
        sqlite3_bind_null(s, 18);
        sqlite3_bind_int64(s, 19, 0);
        const char *said = json_string_value(json_object_get(run, "trace_note"));
        note = said ? said
             : !capture ? "not captured"
             : capture->too_big ? "not kept: larger than the log keeps for a run" : "empty";
    }
    if (note)
        sqlite3_bind_text(s, 20, note, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 20);
    if (sqlite3_step(s) != SQLITE_DONE)
        goto fail;
    sqlite3_finalize(s);
    s = NULL;
    if (id)
        *id = (long long)sqlite3_last_insert_rowid(l->db);
    if (apply_cap(l, max_bytes) != 0 || sqlite3_exec(l->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    checkpoint_if_big(l);
    return 0;
fail:
    db_error(l, err, errlen, "cannot write");
    sqlite3_finalize(s);
    sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

int runlog_record_report(runlog *l, const char *command, const char *question, json_t *inputs,
                         double started, const char *report, runlog_capture *capture,
                         size_t max_bytes, long long *id, char *err, size_t errlen)
{
    json_t *rep = report ? json_loads(report, 0, NULL) : NULL;
    json_int_t prompt = 0, completion = 0;
    const char *model;
    json_t *u;
    json_object_foreach(json_object_get(rep, "usage"), model, u) {
        prompt += json_integer_value(json_object_get(u, "prompt_tokens"));
        completion += json_integer_value(json_object_get(u, "completion_tokens"));
    }
    json_t *run = json_pack("{s:s,s:s,s:O,s:f,s:I,s:I}", "command", command ? command : "library",
                            "question", question ? question : "", "inputs", inputs ? inputs : json_null(),
                            "started", started, "prompt_tokens", prompt, "completion_tokens", completion);
    static const char *const copied[] = {"model", "sub_model", "answer", "status", "how", "error",
                                         "session", "sub_calls", "cost_usd", "cached_tokens",
                                         "cache_write_tokens", "cost_no_cache_usd", "sub_calls_deduplicated"};
    for (size_t i = 0; run && i < sizeof copied / sizeof copied[0]; i++) {
        json_t *v = json_object_get(rep, copied[i]);
        if (v)
            json_object_set(run, copied[i], v);
    }
    if (run) {
        json_object_set(run, "turns", json_object_get(rep, "iterations"));
        json_object_set(run, "elapsed", json_object_get(rep, "elapsed_seconds"));
    }
    int rc = run ? runlog_record(l, run, capture, max_bytes, id, err, errlen) : -1;
    if (!run)
        snprintf(err, errlen, "out of memory");
    json_decref(run);
    json_decref(rep);
    return rc;
}

/* The columns every listing shows, in row_json's order. */
#define ROW_COLUMNS "id, started, command, question, inputs, model, sub_model, answer, status, how," \
                    " error, session, turns, sub_calls, prompt_tokens, completion_tokens, cost_usd," \
                    " elapsed, trace_bytes * (trace IS NOT NULL), trace_note, cached_tokens," \
                    " cache_write_tokens, cost_no_cache_usd, sub_calls_deduplicated"

static json_t *column_json(sqlite3_stmt *s, int i)
{
    switch (sqlite3_column_type(s, i)) {
    case SQLITE_INTEGER: return json_integer(sqlite3_column_int64(s, i));
    case SQLITE_FLOAT: return json_real(sqlite3_column_double(s, i));
    case SQLITE_TEXT:
        return json_stringn((const char *)sqlite3_column_text(s, i), (size_t)sqlite3_column_bytes(s, i));
    default: return json_null();
    }
}

static json_t *row_json(sqlite3_stmt *s)
{
    static const char *const names[] = {"id", "started", "command", "question", "inputs", "model",
                                        "sub_model", "answer", "status", "how", "error", "session",
                                        "turns", "sub_calls", "prompt_tokens", "completion_tokens",
                                        "cost_usd", "elapsed", "trace_bytes", "trace_note",
                                        "cached_tokens", "cache_write_tokens", "cost_no_cache_usd",
                                        "sub_calls_deduplicated"};
    json_t *row = json_object();
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++) {
        json_t *v = column_json(s, i);
        if (i == 4 && json_is_string(v)) {
            json_t *parsed = json_loads(json_string_value(v), 0, NULL);
            json_decref(v);
            v = parsed ? parsed : json_array();
        }
        json_object_set_new(row, names[i], v ? v : json_null());
    }
    return row;
}

int runlog_list(runlog *l, json_t *filter, json_t **out, char *err, size_t errlen)
{
    buf sql;
    buf_init(&sql, 4096);
    buf_puts(&sql, "SELECT " ROW_COLUMNS " FROM runs WHERE 1");
    const char *text = json_string_value(json_object_get(filter, "text"));
    const char *model = json_string_value(json_object_get(filter, "model"));
    const char *status = json_string_value(json_object_get(filter, "status"));
    json_t *since = json_object_get(filter, "since"), *until = json_object_get(filter, "until");
    json_int_t limit = json_integer_value(json_object_get(filter, "limit"));
    if (text)
        buf_puts(&sql, " AND (instr(lower(question), lower(?1)) > 0 OR instr(lower(answer), lower(?1)) > 0)");
    if (model)
        buf_puts(&sql, " AND (model = ?2 OR sub_model = ?2)");
    if (status)
        buf_puts(&sql, " AND status = ?3");
    if (json_is_number(since))
        buf_puts(&sql, " AND started >= ?4");
    if (json_is_number(until))
        buf_puts(&sql, " AND started < ?5");
    buf_printf(&sql, " ORDER BY id DESC LIMIT %lld", limit > 0 ? (long long)limit : -1LL);
    sqlite3_stmt *s = NULL;
    *out = NULL;
    if (!sql.data || sqlite3_prepare_v2(l->db, sql.data, -1, &s, NULL) != SQLITE_OK) {
        buf_free(&sql);
        db_error(l, err, errlen, "cannot read");
        return -1;
    }
    buf_free(&sql);
    if (text)
        sqlite3_bind_text(s, 1, text, -1, SQLITE_STATIC);
    if (model)
        sqlite3_bind_text(s, 2, model, -1, SQLITE_STATIC);
    if (status)
        sqlite3_bind_text(s, 3, status, -1, SQLITE_STATIC);
    if (json_is_number(since))
        sqlite3_bind_double(s, 4, json_number_value(since));
    if (json_is_number(until))
        sqlite3_bind_double(s, 5, json_number_value(until));
    json_t *rows = json_array();
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        json_array_append_new(rows, row_json(s));
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        json_decref(rows);
        db_error(l, err, errlen, "cannot read");
        return -1;
    }
    *out = rows;
    return 0;
}

json_t *runlog_get(runlog *l, long long id, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(l->db, "SELECT " ROW_COLUMNS " FROM runs WHERE id = ?", -1, &s, NULL) != SQLITE_OK) {
        db_error(l, err, errlen, "cannot read");
        return NULL;
    }
    sqlite3_bind_int64(s, 1, id);
    json_t *row = NULL;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        row = row_json(s);
    else if (rc == SQLITE_DONE)
        snprintf(err, errlen, "no run %lld in the run log '%s' (rlm logs lists them)", id, l->path);
    else
        db_error(l, err, errlen, "cannot read");
    sqlite3_finalize(s);
    return row;
}

/* A stored trace, raw bytes long, into out: a zstd frame, or a zlib stream
 * (logs written before rlm used zstd; zlib's first byte is never zstd's).
 * 0, or -1 when it is damaged or not raw bytes long. */
static int trace_inflate(const void *blob, size_t blob_len, char *out, size_t raw)
{
    static const unsigned char zstd_magic[4] = {0x28, 0xb5, 0x2f, 0xfd};
    if (blob_len >= 4 && memcmp(blob, zstd_magic, 4) == 0) {
        size_t got = ZSTD_decompress(out, raw, blob, blob_len);
        return !ZSTD_isError(got) && got == raw ? 0 : -1;
    }
    uLongf out_len = (uLongf)raw;
    return uncompress((Bytef *)out, &out_len, blob, (uLong)blob_len) == Z_OK && out_len == raw ? 0 : -1;
}

int runlog_trace(runlog *l, long long id, char **trace, size_t *len, char *err, size_t errlen)
{
    *trace = NULL;
    *len = 0;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(l->db, "SELECT trace, trace_bytes, trace_note FROM runs WHERE id = ?", -1, &s,
                           NULL) != SQLITE_OK) {
        db_error(l, err, errlen, "cannot read");
        return -1;
    }
    sqlite3_bind_int64(s, 1, id);
    int rc = -1;
    int step = sqlite3_step(s);
    if (step != SQLITE_ROW) {
        if (step == SQLITE_DONE)
            snprintf(err, errlen, "no run %lld in the run log '%s' (rlm logs lists them)", id, l->path);
        else
            db_error(l, err, errlen, "cannot read");
        goto done;
    }
    const void *blob = sqlite3_column_blob(s, 0);
    size_t blob_len = (size_t)sqlite3_column_bytes(s, 0);
    size_t raw = (size_t)sqlite3_column_int64(s, 1);
    if (!blob || raw == 0) {
        const char *note = (const char *)sqlite3_column_text(s, 2);
        snprintf(err, errlen, "run %lld keeps no trace (%s)", id, note ? note : "none");
        goto done;
    }
    char *out = malloc(raw + 1);
    if (!out) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (trace_inflate(blob, blob_len, out, raw) != 0) {
        snprintf(err, errlen, "run %lld: its trace in the log is damaged", id);
        free(out);
        goto done;
    }
    out[raw] = '\0';
    *trace = out;
    *len = raw;
    rc = 0;
done:
    sqlite3_finalize(s);
    return rc;
}

int runlog_remove(runlog *l, const long long *ids, size_t n, double before, int all, long *removed,
                  char *err, size_t errlen)
{
    *removed = 0;
    sqlite3_stmt *s = NULL;
    const char *sql = all ? "DELETE FROM runs" : before > 0 ? "DELETE FROM runs WHERE started < ?"
                                                            : "DELETE FROM runs WHERE id = ?";
    if (sqlite3_exec(l->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(l->db, sql, -1, &s, NULL) != SQLITE_OK)
        goto fail;
    size_t rounds = all || before > 0 ? 1 : n;
    for (size_t i = 0; i < rounds; i++) {
        if (before > 0 && !all)
            sqlite3_bind_double(s, 1, before);
        else if (!all)
            sqlite3_bind_int64(s, 1, ids[i]);
        if (sqlite3_step(s) != SQLITE_DONE)
            goto fail;
        *removed += sqlite3_changes(l->db);
        sqlite3_reset(s);
    }
    sqlite3_finalize(s);
    if (sqlite3_exec(l->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    /* The space of removed traces goes back to the file system. */
    sqlite3_exec(l->db, "PRAGMA wal_checkpoint(TRUNCATE); VACUUM;", NULL, NULL, NULL);
    return 0;
fail:
    db_error(l, err, errlen, "cannot remove");
    sqlite3_finalize(s);
    sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* ---- the public API (include/rlm.h) ------------------------------------------ */

/* cfg's log, opened; NULL with *out the reason (RLM_ERR_INPUT). */
static runlog *logs_open(const rlm_config *cfg, char **out, rlm_status *st)
{
    char err[1400];
    const char *db = cfg ? rlm_config_get(cfg, "log_db") : "";
    char *path = db && db[0] ? strdup(db) : user_file_path("XDG_DATA_HOME", ".local/share", "logs.db");
    runlog *l = path ? runlog_open(path, err, sizeof err) : NULL;
    if (!path)
        snprintf(err, sizeof err, "neither XDG_DATA_HOME nor HOME is set: give log_db");
    free(path);
    if (!l) {
        *out = strdup(err);
        *st = *out ? RLM_ERR_INPUT : RLM_ERR_NOMEM;
    }
    return l;
}

/* *out = j's text (stolen) on success, else err. */
static rlm_status logs_result(json_t *j, const char *err, rlm_status fail, char **out)
{
    *out = j ? json_dumps(j, JSON_COMPACT) : strdup(err);
    json_decref(j);
    if (!*out)
        return RLM_ERR_NOMEM;
    return j ? RLM_OK : fail;
}

rlm_status rlm_logs_list(const rlm_config *cfg, const char *filter, char **out)
{
    rlm_status st;
    json_t *f = filter && filter[0] ? json_loads(filter, 0, NULL) : json_object();
    if (!json_is_object(f)) {
        json_decref(f);
        *out = strdup("the filter is not a JSON object");
        return *out ? RLM_ERR_USAGE : RLM_ERR_NOMEM;
    }
    runlog *l = logs_open(cfg, out, &st);
    if (!l) {
        json_decref(f);
        return st;
    }
    char err[1400];
    json_t *rows = NULL;
    runlog_list(l, f, &rows, err, sizeof err);
    json_decref(f);
    runlog_close(l);
    return logs_result(rows, err, RLM_ERR_INPUT, out);
}

rlm_status rlm_logs_show(const rlm_config *cfg, long long id, char **out)
{
    rlm_status st;
    runlog *l = logs_open(cfg, out, &st);
    if (!l)
        return st;
    char err[1400];
    json_t *row = runlog_get(l, id, err, sizeof err);
    runlog_close(l);
    return logs_result(row, err, RLM_ERR_INPUT, out);
}

rlm_status rlm_logs_trace(const rlm_config *cfg, long long id, char **trace, size_t *len)
{
    rlm_status st;
    *len = 0;
    runlog *l = logs_open(cfg, trace, &st);
    if (!l)
        return st;
    char err[1400];
    int rc = runlog_trace(l, id, trace, len, err, sizeof err);
    runlog_close(l);
    if (rc == 0)
        return RLM_OK;
    *trace = strdup(err);
    return *trace ? RLM_ERR_INPUT : RLM_ERR_NOMEM;
}

rlm_status rlm_logs_remove(const rlm_config *cfg, const char *what, char **out)
{
    rlm_status st;
    json_t *w = what ? json_loads(what, 0, NULL) : NULL;
    json_t *ids = json_object_get(w, "ids");
    double before = json_number_value(json_object_get(w, "before"));
    int all = json_is_true(json_object_get(w, "all"));
    if (!json_is_object(w) || (!all && before <= 0 && json_array_size(ids) == 0)) {
        json_decref(w);
        *out = strdup("say which runs to remove: {\"ids\": [...]}, {\"before\": UNIX_TIME} or {\"all\": true}");
        return *out ? RLM_ERR_USAGE : RLM_ERR_NOMEM;
    }
    runlog *l = logs_open(cfg, out, &st);
    if (!l) {
        json_decref(w);
        return st;
    }
    size_t n = json_array_size(ids);
    long long *list = calloc(n ? n : 1, sizeof *list);
    for (size_t i = 0; list && i < n; i++)
        list[i] = (long long)json_integer_value(json_array_get(ids, i));
    char err[1400] = "out of memory";
    long removed = 0;
    int rc = list ? runlog_remove(l, list, n, before, all, &removed, err, sizeof err) : -1;
    free(list);
    json_decref(w);
    runlog_close(l);
    return logs_result(rc == 0 ? json_pack("{s:i}", "removed", (int)removed) : NULL, err, RLM_ERR_INPUT, out);
}

rlm_status rlm_logs_refused(const rlm_config *cfg, const char *model, const char *question,
                            const char *reason, char **err)
{
    if (err)
        *err = NULL;
    if (!cfg || !config_long(cfg, "log"))
        return RLM_OK;
    char *why = NULL;
    rlm_status st;
    runlog *l = logs_open(cfg, &why, &st);
    if (!l) {
        if (err)
            *err = why;
        else
            free(why);
        return st;
    }
    /* A refusal keeps no trace, so it costs the cap nothing: the cap is
     * applied as after any run, with the log's own setting. */
    size_t max = 0;
    parse_size(rlm_config_get(cfg, "log_max"), &max);
    json_t *run = json_pack("{s:s,s:s?,s:s?,s:s,s:s,s:f,s:s}", "command", rlm_config_get(cfg, "log_command"),
                            "model", model, "question", question, "status", "refused", "error",
                            reason && reason[0] ? reason : "refused", "started", clock_wall(),
                            "trace_note", "none: the request was refused before a run started");
    char msg[1400] = "out of memory";
    int rc = run ? runlog_record(l, run, NULL, max, NULL, msg, sizeof msg) : -1;
    json_decref(run);
    runlog_close(l);
    if (rc == 0)
        return RLM_OK;
    if (err)
        *err = strdup(msg);
    return RLM_ERR_INPUT;
}
