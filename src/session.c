/* session — conversations on disk in SQLite: questions, root messages,
 * cells (their code), answers, and the data the last question left (a
 * snapshot blob), appended and committed as they happen. */
#include "session.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define SCHEMA_VERSION "1"
#define NAME_MAX_CHARS 100
/* Longest database path handled (the lock file's name adds a suffix). */
#define DB_PATH_MAX 4000

struct session {
    sqlite3 *db;
    long long id;
    int is_new;
    int created;            /* this open made the session */
    int lock_fd;            /* holds the session's lock (see session_lock), -1 when none */
    json_t *config;
    long next_message, next_cell;
    int question;           /* current question number, 0 when none is open */
    char errmsg[1024];
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);"
    "CREATE TABLE IF NOT EXISTS sessions(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,"
    "  created REAL NOT NULL, config TEXT);"
    "CREATE TABLE IF NOT EXISTS questions(session INTEGER NOT NULL, number INTEGER NOT NULL,"
    "  question TEXT NOT NULL, answer TEXT, started REAL, ended REAL, PRIMARY KEY(session, number));"
    "CREATE TABLE IF NOT EXISTS messages(session INTEGER NOT NULL, seq INTEGER NOT NULL,"
    "  role TEXT NOT NULL, content TEXT NOT NULL, hidden INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY(session, seq));"
    "CREATE TABLE IF NOT EXISTS cells(session INTEGER NOT NULL, seq INTEGER NOT NULL,"
    "  code TEXT NOT NULL, replies TEXT, PRIMARY KEY(session, seq));"
    /* Added without a new schema version: older rlm ignore the table. */
    "CREATE TABLE IF NOT EXISTS histories(session INTEGER NOT NULL, number INTEGER NOT NULL,"
    "  messages TEXT NOT NULL, PRIMARY KEY(session, number));"
    /* Who holds a session's lock (the lock itself is in the lock file). */
    /* The data the last question left (docs/internals/snapshot-format.md):
     * one row per session, its rowid the session's id. */
    "CREATE TABLE IF NOT EXISTS snapshots(session INTEGER PRIMARY KEY, question INTEGER NOT NULL,"
    "  data BLOB NOT NULL, not_carried TEXT);"
    "CREATE TABLE IF NOT EXISTS holders(session INTEGER PRIMARY KEY, pid INTEGER NOT NULL,"
    "  since REAL NOT NULL);";

/* The advice every message about a damaged database ends with. */
#define RECOVER_ADVICE "'rlm sessions recover' copies what can still be read into a new file"


static int session_fail(session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int session_fail(session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->errmsg, sizeof s->errmsg, fmt, ap);
    va_end(ap);
    return -1;
}

/* 1 when SQLite's last error on db says the file is damaged. */
static int damaged(sqlite3 *db)
{
    int code = sqlite3_errcode(db) & 0xff;
    return code == SQLITE_CORRUPT || code == SQLITE_NOTADB;
}

static int session_db_fail(session *s, const char *what)
{
    if (damaged(s->db))
        return session_fail(s, "the session database is damaged (%s: %s); " RECOVER_ADVICE, what,
                            sqlite3_errmsg(s->db));
    return session_fail(s, "session database: %s: %s", what, sqlite3_errmsg(s->db));
}

int session_name_valid(const char *name)
{
    return str_name_valid(name, NAME_MAX_CHARS) && name[0] != '.';
}

/* Creates the directories above path (like mkdir -p of its dirname). */
static void make_parents(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return;
    for (char *p = copy + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        mkdir(copy, 0700);
        *p = '/';
    }
    free(copy);
}

/* Runs one statement with text/int bindings given as a format: 't' text
 * (NULL binds NULL), 'i' long long, 'd' double. Returns SQLITE_DONE or
 * SQLITE_ROW on success; the row is not kept. */
static int exec_bound(session *s, const char *sql, const char *types, ...)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    va_list ap;
    va_start(ap, types);
    /* A bind can fail (a text past SQLite's length limit is SQLITE_TOOBIG):
     * the row is then not written, and the caller hears of it. */
    int bound = SQLITE_OK;
    for (int i = 0; types[i] && bound == SQLITE_OK; i++) {
        if (types[i] == 't') {
            const char *v = va_arg(ap, const char *);
            bound = v ? sqlite3_bind_text(st, i + 1, v, -1, SQLITE_TRANSIENT)
                      : sqlite3_bind_null(st, i + 1);
        } else if (types[i] == 'i') {
            bound = sqlite3_bind_int64(st, i + 1, va_arg(ap, long long));
        } else {
            bound = sqlite3_bind_double(st, i + 1, va_arg(ap, double));
        }
    }
    va_end(ap);
    if (bound != SQLITE_OK) {
        sqlite3_finalize(st);
        return -1;
    }
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? rc : -1;
}

/* One integer from a query with a single bound session id; dflt when no row. */
static long long query_long(session *s, const char *sql, long long dflt)
{
    sqlite3_stmt *st;
    long long v = dflt;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return dflt;
    sqlite3_bind_int64(st, 1, s->id);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int session_schema(session *s)
{
    if (sqlite3_exec(s->db, "PRAGMA journal_mode=WAL;", NULL, NULL, NULL) != SQLITE_OK)
        return session_db_fail(s, "not a session database, or not writable");
    if (sqlite3_exec(s->db, schema, NULL, NULL, NULL) != SQLITE_OK)
        return session_db_fail(s, "cannot create the tables");
    sqlite3_stmt *st;
    const char *version = NULL;
    if (sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key='version'", -1, &st, NULL) != SQLITE_OK)
        return session_db_fail(s, "cannot read the schema version");
    int row = sqlite3_step(st) == SQLITE_ROW;
    if (row)
        version = (const char *)sqlite3_column_text(st, 0);
    int mismatch = row && (!version || strcmp(version, SCHEMA_VERSION) != 0);
    char seen[32];
    snprintf(seen, sizeof seen, "%s", version ? version : "?");
    sqlite3_finalize(st);
    if (mismatch)
        return session_fail(s, "session database has schema version %s; this rlm writes %s", seen,
                            SCHEMA_VERSION);
    if (!row && exec_bound(s, "INSERT INTO meta(key, value) VALUES('version', ?)", "t", SCHEMA_VERSION) < 0)
        return session_db_fail(s, "cannot write the schema version");
    return 0;
}

static int session_find_or_create(session *s, const char *name)
{
    if (exec_bound(s, "INSERT OR IGNORE INTO sessions(name, created) VALUES(?, ?)", "td", name,
                   clock_wall()) < 0)
        return session_db_fail(s, "cannot create the session");
    s->created = sqlite3_changes(s->db) > 0;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT id, config FROM sessions WHERE name=?", -1, &st, NULL) != SQLITE_OK)
        return session_db_fail(s, "cannot read the session");
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return session_db_fail(s, "session vanished");
    }
    s->id = sqlite3_column_int64(st, 0);
    const char *cfg = (const char *)sqlite3_column_text(st, 1);
    if (cfg)
        s->config = json_loads(cfg, 0, NULL);
    sqlite3_finalize(st);
    s->next_message = (long)query_long(s, "SELECT MAX(seq) FROM messages WHERE session=?", 0) + 1;
    s->next_cell = (long)query_long(s, "SELECT MAX(seq) FROM cells WHERE session=?", 0) + 1;
    s->is_new = query_long(s, "SELECT COUNT(*) FROM questions WHERE session=?", 0) == 0;
    if (damaged(s->db))
        return session_db_fail(s, "cannot read the session");
    return 0;
}

/* ---- the lock ---------------------------------------------------------------
 *
 * Design note. Two processes on one session would both append to it and one
 * question's rows would collide with the other's (UNIQUE failures, a
 * question lost). So a session is held by one handle at a time: an
 * open-file-description lock (F_OFD_SETLK) on the byte at the session's id
 * in a lock file next to the database ("DB-lock"). Such a lock belongs to
 * the descriptor, so it also keeps apart two handles of one process, and the
 * kernel drops it when the holder exits, however it exits: no stale lock is
 * ever left. It is not on the database file itself, whose POSIX locks
 * SQLite owns (closing any other descriptor of that file would drop them).
 * The holders table says which pid holds it, for the message; a row whose
 * lock is free is stale and ignored. */

static int lock_path(const char *db_path, char *out, size_t outlen)
{
    return (size_t)snprintf(out, outlen, "%s-lock", db_path) < outlen ? 0 : -1;
}

/* -1 on error, 0 when the byte of id is free, 1 when another descriptor holds it. */
static int lock_probe(int fd, long long id)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = (off_t)id, .l_len = 1};
    if (fcntl(fd, F_OFD_GETLK, &fl) != 0)
        return -1;
    return fl.l_type != F_UNLCK;
}

static long long holder_pid(sqlite3 *db, long long id)
{
    sqlite3_stmt *st;
    long long pid = 0;
    if (sqlite3_prepare_v2(db, "SELECT pid FROM holders WHERE session=?", -1, &st, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_int64(st, 1, id);
    if (sqlite3_step(st) == SQLITE_ROW)
        pid = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return pid;
}

static int session_lock(session *s, const char *db_path, const char *name)
{
    char path[DB_PATH_MAX + 16];
    if (lock_path(db_path, path, sizeof path) != 0)
        return session_fail(s, "session database path too long");
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lock_fd < 0)
        return session_fail(s, "cannot open the lock file '%s': %s", path, strerror(errno));
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = (off_t)s->id, .l_len = 1};
    if (fcntl(s->lock_fd, F_OFD_SETLK, &fl) != 0) {
        int busy = errno == EAGAIN || errno == EACCES;
        int e = errno;
        close(s->lock_fd);
        s->lock_fd = -1;
        if (!busy)
            return session_fail(s, "cannot lock the session: %s", strerror(e));
        long long pid = holder_pid(s->db, s->id);
        if (pid > 0)
            return session_fail(s, "session '%s' is in use by pid %lld: one process at a time may "
                                "hold a session", name, pid);
        return session_fail(s, "session '%s' is in use by another process: one process at a time "
                            "may hold a session", name);
    }
    if (exec_bound(s, "INSERT OR REPLACE INTO holders(session, pid, since) VALUES(?, ?, ?)", "iid",
                   s->id, (long long)getpid(), clock_wall()) < 0)
        return session_db_fail(s, "cannot record the session's holder");
    return 0;
}

int session_open(const char *db_path, const char *name, session **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!name || !session_name_valid(name)) {
        snprintf(err, errlen, "bad session name '%s': use 1-%d characters of letters, digits, '.', "
                 "'_' and '-', not starting with '.'", name ? name : "", NAME_MAX_CHARS);
        return -1;
    }
    session *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->lock_fd = -1;
    if (strlen(db_path) > DB_PATH_MAX) {
        snprintf(err, errlen, "session database path too long");
        free(s);
        return -1;
    }
    make_parents(db_path);
    if (sqlite3_open_v2(db_path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open session database '%s': %s", db_path,
                 s->db ? sqlite3_errmsg(s->db) : "out of memory");
        session_free(s);
        return -1;
    }
    sqlite3_busy_timeout(s->db, 5000);
    if (session_schema(s) != 0 || session_find_or_create(s, name) != 0 ||
        session_lock(s, db_path, name) != 0) {
        snprintf(err, errlen, "%s ('%s')", s->errmsg, db_path);
        session_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

int session_is_new(const session *s)
{
    return s->is_new;
}

int session_created(const session *s)
{
    return s->created;
}

const json_t *session_config(const session *s)
{
    return s->config;
}

int session_set_config(session *s, const json_t *cfg)
{
    char *text = json_dumps(cfg, JSON_COMPACT);
    if (!text)
        return session_fail(s, "out of memory");
    int rc = exec_bound(s, "UPDATE sessions SET config=? WHERE id=?", "ti", text, s->id);
    free(text);
    if (rc < 0)
        return session_db_fail(s, "cannot save the configuration");
    json_decref(s->config);
    s->config = json_deep_copy(cfg);
    return 0;
}

int session_begin_question(session *s, const char *question, int *number)
{
    int n = (int)query_long(s, "SELECT MAX(number) FROM questions WHERE session=?", 0) + 1;
    if (exec_bound(s, "INSERT INTO questions(session, number, question, started) VALUES(?, ?, ?, ?)",
                   "iitd", s->id, (long long)n, question, clock_wall()) < 0)
        return session_db_fail(s, "cannot record the question");
    s->question = n;
    if (number)
        *number = n;
    return 0;
}

int session_end_question(session *s, const char *answer)
{
    if (!s->question)
        return session_fail(s, "no question is open");
    if (exec_bound(s, "UPDATE questions SET answer=?, ended=? WHERE session=? AND number=?", "tdii",
                   answer, clock_wall(), s->id, (long long)s->question) < 0)
        return session_db_fail(s, "cannot record the answer");
    s->question = 0;
    return 0;
}

int session_add_message(session *s, const char *role, const char *content)
{
    if (exec_bound(s, "INSERT INTO messages(session, seq, role, content) VALUES(?, ?, ?, ?)", "iitt",
                   s->id, (long long)s->next_message, role, content ? content : "") < 0)
        return session_db_fail(s, "cannot record a message");
    s->next_message++;
    return 0;
}

int session_add_cell(session *s, const char *code, const json_t *replies)
{
    char *text = replies ? json_dumps(replies, JSON_COMPACT) : NULL;
    if (replies && !text)
        return session_fail(s, "out of memory");
    int rc = exec_bound(s, "INSERT INTO cells(session, seq, code, replies) VALUES(?, ?, ?, ?)", "iitt",
                        s->id, (long long)s->next_cell, code, text);
    free(text);
    if (rc < 0)
        return session_db_fail(s, "cannot record a cell");
    s->next_cell++;
    return 0;
}

int session_compact(session *s, long before_seq, const char *summary)
{
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return session_db_fail(s, "cannot start compaction");
    if (exec_bound(s, "UPDATE messages SET hidden=1 WHERE session=? AND seq<? AND hidden=0 AND role<>'system'",
                   "ii", s->id, (long long)before_seq) < 0)
        goto fail;
    int hidden = sqlite3_changes(s->db);
    if (session_add_message(s, "user", summary) != 0)
        goto fail;
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    return hidden;
fail:
    session_db_fail(s, "compaction failed");
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* After a loop over rows: rc when it ran to the end (or the callback
 * stopped it), -1 when SQLite stopped it with an error. */
static int rows_end(session *s, sqlite3_stmt *st, int step, int rc, const char *what)
{
    int failed = rc == 0 && step != SQLITE_DONE;
    if (failed)
        session_db_fail(s, what);
    sqlite3_finalize(st);
    return failed ? -1 : rc;
}

int session_each_message(session *s, session_message_fn fn, void *userdata)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT seq, role, content FROM messages WHERE session=? AND hidden=0 "
                           "ORDER BY seq", -1, &st, NULL) != SQLITE_OK)
        return session_db_fail(s, "cannot read messages");
    sqlite3_bind_int64(st, 1, s->id);
    int rc = 0, step;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW)
        rc = fn(userdata, (long)sqlite3_column_int64(st, 0), (const char *)sqlite3_column_text(st, 1),
                (const char *)sqlite3_column_text(st, 2));
    return rows_end(s, st, step, rc, "cannot read messages");
}

int session_each_cell(session *s, session_cell_fn fn, void *userdata)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT code, replies FROM cells WHERE session=? ORDER BY seq", -1, &st,
                           NULL) != SQLITE_OK)
        return session_db_fail(s, "cannot read cells");
    sqlite3_bind_int64(st, 1, s->id);
    int rc = 0, step;
    long n = 0;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        n++;
        const char *text = (const char *)sqlite3_column_text(st, 1);
        json_error_t jerr;
        json_t *replies = text ? json_loads(text, 0, &jerr) : NULL;
        if (text && !json_is_array(replies)) {
            /* Replayed without them, the cell's sub-calls would get other
             * results than the model's code had: never silently. */
            session_fail(s, "the recorded replies of cell %ld cannot be read (%s); " RECOVER_ADVICE,
                         n, replies ? "not a list" : jerr.text);
            json_decref(replies);
            sqlite3_finalize(st);
            return -1;
        }
        rc = fn(userdata, (const char *)sqlite3_column_text(st, 0), replies);
        json_decref(replies);
    }
    return rows_end(s, st, step, rc, "cannot read cells");
}

int session_each_answer(session *s, session_answer_fn fn, void *userdata)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT number, question, answer FROM questions WHERE session=? "
                           "ORDER BY number", -1, &st, NULL) != SQLITE_OK)
        return session_db_fail(s, "cannot read answers");
    sqlite3_bind_int64(st, 1, s->id);
    int rc = 0, step;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW)
        rc = fn(userdata, sqlite3_column_int(st, 0), (const char *)sqlite3_column_text(st, 1),
                (const char *)sqlite3_column_text(st, 2));
    return rows_end(s, st, step, rc, "cannot read answers");
}

int session_add_history(session *s, int number, const json_t *messages)
{
    char *text = json_dumps(messages, JSON_COMPACT);
    if (!text)
        return session_fail(s, "out of memory");
    int rc = exec_bound(s, "INSERT OR REPLACE INTO histories(session, number, messages) "
                        "VALUES(?, ?, ?)", "iit", s->id, (long long)number, text);
    free(text);
    if (rc < 0)
        return session_db_fail(s, "cannot record a question's history");
    return 0;
}

int session_each_history(session *s, session_history_fn fn, void *userdata)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT number, messages FROM histories WHERE session=? "
                           "ORDER BY number", -1, &st, NULL) != SQLITE_OK)
        return session_db_fail(s, "cannot read histories");
    sqlite3_bind_int64(st, 1, s->id);
    int rc = 0, step;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(st, 1);
        json_t *messages = text ? json_loads(text, 0, NULL) : NULL;
        rc = fn(userdata, sqlite3_column_int(st, 0), messages);
        json_decref(messages);
    }
    return rows_end(s, st, step, rc, "cannot read histories");
}

/* ---- the database as a whole: listing, removing, recovering ------------- */

/* Opens an existing database (no creation): 0, 1 when there is none, -1 on error. */
static int open_existing(const char *db_path, int flags, sqlite3 **db, char *err, size_t errlen)
{
    struct stat st;
    *db = NULL;
    if (stat(db_path, &st) != 0)
        return errno == ENOENT ? 1 : (snprintf(err, errlen, "'%s': %s", db_path, strerror(errno)), -1);
    if (sqlite3_open_v2(db_path, db, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open session database '%s': %s", db_path,
                 *db ? sqlite3_errmsg(*db) : "out of memory");
        sqlite3_close(*db);
        *db = NULL;
        return -1;
    }
    sqlite3_busy_timeout(*db, 5000);
    return 0;
}

/* err for a failure reading db, with the recovery advice when it is damaged. */
static int read_failed(sqlite3 *db, const char *db_path, const char *what, char *err, size_t errlen)
{
    if (damaged(db))
        snprintf(err, errlen, "session database '%s' is damaged (%s: %s); " RECOVER_ADVICE, db_path,
                 what, sqlite3_errmsg(db));
    else
        snprintf(err, errlen, "session database '%s': %s: %s", db_path, what, sqlite3_errmsg(db));
    return -1;
}

/* The lock file of db_path, opened without creating it; -1 when there is none. */
static int lock_open(const char *db_path)
{
    char path[DB_PATH_MAX + 16];
    if (lock_path(db_path, path, sizeof path) != 0)
        return -1;
    return open(path, O_RDWR | O_CLOEXEC);
}

int session_list(const char *db_path, json_t **out, char *err, size_t errlen)
{
    *out = NULL;
    sqlite3 *db;
    int rc = open_existing(db_path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, &db, err, errlen);
    if (rc != 0) {
        *out = rc > 0 ? json_array() : NULL;
        return rc > 0 ? (*out ? 0 : -1) : -1;
    }
    sqlite3_stmt *st = NULL;
    json_t *list = json_array();
    int lock_fd = lock_open(db_path);
    rc = -1;
    if (!list)
        goto done;
    if (sqlite3_prepare_v2(db,
                           "SELECT s.id, s.name, s.created, s.config, "
                           "(SELECT COUNT(*) FROM questions q WHERE q.session=s.id), "
                           "(SELECT MAX(started) FROM questions q WHERE q.session=s.id) "
                           "FROM sessions s ORDER BY s.name", -1, &st, NULL) != SQLITE_OK) {
        read_failed(db, db_path, "cannot list the sessions", err, errlen);
        goto done;
    }
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        long long id = sqlite3_column_int64(st, 0);
        const char *cfg_text = (const char *)sqlite3_column_text(st, 3);
        json_t *cfg = cfg_text ? json_loads(cfg_text, 0, NULL) : NULL;
        json_t *inputs = json_object_get(cfg, "inputs");
        int held = lock_fd >= 0 ? lock_probe(lock_fd, id) : 0;
        long long pid = held > 0 ? holder_pid(db, id) : 0;
        json_t *row = json_pack("{s:s,s:f,s:I,s:o,s:O?,s:O?,s:I,s:o}", "name",
                                (const char *)sqlite3_column_text(st, 1), "created",
                                sqlite3_column_double(st, 2), "questions",
                                (json_int_t)sqlite3_column_int64(st, 4), "last_question",
                                sqlite3_column_type(st, 5) == SQLITE_NULL
                                    ? json_null() : json_real(sqlite3_column_double(st, 5)),
                                "model", json_object_get(cfg, "model"), "sub_model",
                                json_object_get(cfg, "sub_model"), "inputs",
                                (json_int_t)json_array_size(inputs), "in_use_by",
                                held > 0 ? (pid > 0 ? json_integer(pid) : json_true()) : json_null());
        json_decref(cfg);
        if (!row || json_array_append_new(list, row) != 0) {
            snprintf(err, errlen, "out of memory");
            goto done;
        }
    }
    if (step != SQLITE_DONE) {
        read_failed(db, db_path, "cannot list the sessions", err, errlen);
        goto done;
    }
    *out = list;
    list = NULL;
    rc = 0;
done:
    sqlite3_finalize(st);
    json_decref(list);
    if (lock_fd >= 0)
        close(lock_fd);
    sqlite3_close(db);
    return rc;
}

int session_remove(const char *db_path, const char *name, char *err, size_t errlen)
{
    sqlite3 *db;
    int rc = open_existing(db_path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, &db, err, errlen);
    if (rc > 0)
        snprintf(err, errlen, "no session '%s': there is no session database at '%s'", name, db_path);
    if (rc != 0)
        return -1;
    /* A session's rows go with the handle that would write them: ask it through
     * the same lock a process holding the session keeps. */
    session *s = calloc(1, sizeof *s);
    rc = -1;
    if (!s) {
        snprintf(err, errlen, "out of memory");
        sqlite3_close(db);
        return -1;
    }
    s->db = db;
    s->lock_fd = -1;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT id FROM sessions WHERE name=?", -1, &st, NULL) != SQLITE_OK) {
        read_failed(db, db_path, "cannot read the sessions", err, errlen);
        goto done;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        s->id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (step != SQLITE_ROW) {
        if (step == SQLITE_DONE)
            snprintf(err, errlen, "no session '%s' in '%s' ('rlm sessions' lists them)", name, db_path);
        else
            read_failed(db, db_path, "cannot read the sessions", err, errlen);
        goto done;
    }
    if (session_lock(s, db_path, name) != 0) {
        snprintf(err, errlen, "%s", s->errmsg);
        goto done;
    }
    static const char *const tables[] = {"questions", "messages", "cells", "histories",
                                         "snapshots", "holders"};
    int ok = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
    for (size_t i = 0; ok && i < sizeof tables / sizeof tables[0]; i++) {
        char sql[128];
        snprintf(sql, sizeof sql, "DELETE FROM %s WHERE session=?", tables[i]);
        ok = exec_bound(s, sql, "i", s->id) >= 0;
    }
    ok = ok && exec_bound(s, "DELETE FROM sessions WHERE id=?", "i", s->id) >= 0 &&
         sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
    if (!ok) {
        read_failed(db, db_path, "cannot remove the session", err, errlen);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        goto done;
    }
    rc = 0;
done:
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    sqlite3_close(db);
    free(s);
    return rc;
}

/* What recovery read of one table. */
typedef struct table_copy {
    const char *name;
    long rows, dropped;
    int cut;                 /* the scan stopped at damage: later rows are lost */
} table_copy;

/* Copies the rows of one table from `from` to `to`, in rowid order, until
 * the first row that cannot be read. Cells whose replies are not a JSON
 * list are dropped (counted) and their session noted in lost. */
static int copy_table(sqlite3 *from, sqlite3 *to, table_copy *t, json_t *lost)
{
    char sql[160];
    sqlite3_stmt *in = NULL, *out = NULL;
    snprintf(sql, sizeof sql, "SELECT * FROM %s ORDER BY rowid", t->name);
    if (sqlite3_prepare_v2(from, sql, -1, &in, NULL) != SQLITE_OK) {
        t->cut = 1;
        return 0;
    }
    int cols = sqlite3_column_count(in);
    char insert[512] = "";
    size_t used = (size_t)snprintf(insert, sizeof insert, "INSERT OR IGNORE INTO %s VALUES(", t->name);
    for (int i = 0; i < cols && used < sizeof insert; i++)
        used += (size_t)snprintf(insert + used, sizeof insert - used, "%s?", i ? "," : "");
    snprintf(insert + used, used < sizeof insert ? sizeof insert - used : 0, ")");
    if (sqlite3_prepare_v2(to, insert, -1, &out, NULL) != SQLITE_OK) {
        sqlite3_finalize(in);
        return -1;
    }
    int is_cells = strcmp(t->name, "cells") == 0;
    int step;
    while ((step = sqlite3_step(in)) == SQLITE_ROW) {
        if (is_cells) {
            const char *text = (const char *)sqlite3_column_text(in, 3);
            json_t *replies = text ? json_loads(text, 0, NULL) : NULL;
            int bad = text && !json_is_array(replies);
            json_decref(replies);
            if (bad) {
                t->dropped++;
                json_array_append_new(lost, json_integer(sqlite3_column_int64(in, 0)));
                continue;
            }
        }
        for (int i = 0; i < cols; i++)
            sqlite3_bind_value(out, i + 1, sqlite3_column_value(in, i));
        if (sqlite3_step(out) != SQLITE_DONE) {
            sqlite3_finalize(in);
            sqlite3_finalize(out);
            return -1;
        }
        sqlite3_reset(out);
        t->rows++;
    }
    t->cut = step != SQLITE_DONE;
    sqlite3_finalize(in);
    sqlite3_finalize(out);
    return 0;
}

/* 1 when the rows of `table` for session id do not run 1, 2, ... without a gap. */
static int has_gap(sqlite3 *db, const char *table, const char *column, long long id)
{
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT COUNT(*), COALESCE(MAX(%s), 0) FROM %s WHERE session=?", column,
             table);
    sqlite3_stmt *st;
    int gap = 1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return 1;
    sqlite3_bind_int64(st, 1, id);
    if (sqlite3_step(st) == SQLITE_ROW)
        gap = sqlite3_column_int64(st, 0) != sqlite3_column_int64(st, 1);
    sqlite3_finalize(st);
    return gap;
}

int session_recover(const char *db_path, json_t **report, char *err, size_t errlen)
{
    *report = NULL;
    sqlite3 *from = NULL, *to = NULL;
    char tmp[DB_PATH_MAX + 32], lockp[DB_PATH_MAX + 16];
    int lock_fd = -1, rc = -1;
    json_t *lost_cells = json_array(), *sessions = json_array();
    table_copy tables[] = {{"sessions", 0, 0, 0}, {"questions", 0, 0, 0}, {"messages", 0, 0, 0},
                           {"cells", 0, 0, 0}, {"histories", 0, 0, 0}, {"snapshots", 0, 0, 0}};
    if (!lost_cells || !sessions) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (strlen(db_path) > DB_PATH_MAX) {
        snprintf(err, errlen, "session database path too long");
        goto done;
    }
    int found = open_existing(db_path, SQLITE_OPEN_READONLY, &from, err, errlen);
    if (found > 0)
        snprintf(err, errlen, "there is no session database at '%s'", db_path);
    if (found != 0)
        goto done;
    /* No process may hold a session while its file is replaced: the whole
     * lock file is taken, which every session's lock conflicts with. */
    lock_path(db_path, lockp, sizeof lockp);
    lock_fd = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (lock_fd < 0 || fcntl(lock_fd, F_OFD_SETLK, &fl) != 0) {
        snprintf(err, errlen, "a session of '%s' is in use by another process: recover it once that "
                 "process has ended", db_path);
        goto done;
    }
    if (sqlite3_exec(from, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot recover '%s': nothing in it can be read (%s); the file is left "
                 "as it is", db_path, sqlite3_errmsg(from));
        goto done;
    }
    snprintf(tmp, sizeof tmp, "%s.recovering", db_path);
    unlink(tmp);
    if (sqlite3_open_v2(tmp, &to, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK ||
        sqlite3_exec(to, schema, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(to, "INSERT INTO meta(key, value) VALUES('version', '" SCHEMA_VERSION "');"
                     "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot create '%s': %s", tmp, to ? sqlite3_errmsg(to) : "out of memory");
        goto done;
    }
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        if (copy_table(from, to, &tables[i], lost_cells) != 0) {
            snprintf(err, errlen, "cannot write '%s': %s", tmp, sqlite3_errmsg(to));
            goto done;
        }
    }
    /* Each session learns what it lost, for when it is continued. */
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(to, "SELECT id, name, config FROM sessions ORDER BY name", -1, &st, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "cannot read '%s': %s", tmp, sqlite3_errmsg(to));
        goto done;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        long long id = sqlite3_column_int64(st, 0);
        const char *name = (const char *)sqlite3_column_text(st, 1);
        const char *cfg_text = (const char *)sqlite3_column_text(st, 2);
        int cells = tables[3].cut || has_gap(to, "cells", "seq", id);
        for (size_t k = 0; !cells && k < json_array_size(lost_cells); k++)
            cells = json_integer_value(json_array_get(lost_cells, k)) == id;
        int messages = tables[2].cut || has_gap(to, "messages", "seq", id);
        int questions = tables[1].cut || has_gap(to, "questions", "number", id);
        int data = tables[5].cut; /* which session's row went is not known: each may have */
        json_t *entry = json_pack("{s:s,s:b,s:b,s:b,s:b}", "name", name ? name : "?", "cells_lost",
                                  cells, "messages_lost", messages, "questions_lost", questions,
                                  "data_lost", data);
        json_array_append_new(sessions, entry);
        if (!cells && !messages && !questions && !data)
            continue;
        json_t *cfg = cfg_text ? json_loads(cfg_text, 0, NULL) : json_object();
        if (!json_is_object(cfg)) {
            json_decref(cfg);
            cfg = json_object();
        }
        json_object_set_new(cfg, "recovered", json_pack("{s:b,s:b,s:b,s:b}", "cells_lost", cells,
                                                        "messages_lost", messages, "questions_lost",
                                                        questions, "data_lost", data));
        char *text = json_dumps(cfg, JSON_COMPACT);
        json_decref(cfg);
        sqlite3_stmt *up;
        if (text && sqlite3_prepare_v2(to, "UPDATE sessions SET config=? WHERE id=?", -1, &up, NULL) ==
            SQLITE_OK) {
            sqlite3_bind_text(up, 1, text, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(up, 2, id);
            sqlite3_step(up);
            sqlite3_finalize(up);
        }
        free(text);
    }
    sqlite3_finalize(st);
    if (sqlite3_exec(to, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot write '%s': %s", tmp, sqlite3_errmsg(to));
        goto done;
    }
    sqlite3_close(to);
    to = NULL;
    sqlite3_close(from);
    from = NULL;
    /* The damaged file is kept beside, never deleted. */
    char kept[DB_PATH_MAX + 64], side[DB_PATH_MAX + 96], stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", localtime_r(&now, &tm));
    snprintf(kept, sizeof kept, "%s.damaged-%s", db_path, stamp);
    if (rename(db_path, kept) != 0) {
        snprintf(err, errlen, "cannot move '%s' aside: %s", db_path, strerror(errno));
        goto done;
    }
    static const char *const suffixes[] = {"-wal", "-shm"};
    for (size_t i = 0; i < 2; i++) {
        char from_side[DB_PATH_MAX + 16];
        snprintf(from_side, sizeof from_side, "%s%s", db_path, suffixes[i]);
        snprintf(side, sizeof side, "%s%s", kept, suffixes[i]);
        rename(from_side, side);
    }
    if (rename(tmp, db_path) != 0) {
        snprintf(err, errlen, "cannot put the recovered file in place: %s (it is '%s'; the damaged "
                 "one is '%s')", strerror(errno), tmp, kept);
        goto done;
    }
    json_t *rows = json_object(), *cut = json_array();
    for (size_t i = 0; rows && cut && i < sizeof tables / sizeof tables[0]; i++) {
        json_object_set_new(rows, tables[i].name, json_integer(tables[i].rows));
        if (tables[i].cut)
            json_array_append_new(cut, json_string(tables[i].name));
    }
    *report = json_pack("{s:s,s:s,s:O,s:o*,s:o*,s:I}", "database", db_path, "damaged_copy", kept,
                        "sessions", sessions, "rows", rows, "cut_tables", cut, "cells_dropped",
                        (json_int_t)tables[3].dropped);
    rc = *report ? 0 : -1;
    if (rc != 0)
        snprintf(err, errlen, "out of memory");
done:
    if (to) {
        sqlite3_close(to);
        unlink(tmp);
    }
    sqlite3_close(from);
    if (lock_fd >= 0)
        close(lock_fd);
    json_decref(lost_cells);
    json_decref(sessions);
    return rc;
}

/* ---- the data the last question left ---- */

#define SNAPSHOT_CHUNK ((size_t)1 << 20)

int session_save_snapshot(session *s, int question, int fd, size_t len, const json_t *not_carried)
{
    int limit = sqlite3_limit(s->db, SQLITE_LIMIT_LENGTH, -1);
    if (len == 0 || len > (size_t)limit)
        return session_fail(s, "the data of question %d (%zu bytes) is larger than the session "
                            "database holds in one value (%d bytes)", question, len, limit);
    char *text = not_carried ? json_dumps(not_carried, JSON_COMPACT) : NULL;
    unsigned char *chunk = malloc(SNAPSHOT_CHUNK);
    sqlite3_blob *blob = NULL;
    const char *what = "cannot save the data of the question";
    int ok = chunk && (!not_carried || text) &&
             sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
    int began = ok;
    sqlite3_stmt *st = NULL;
    /* The row first, with room for the bytes; then the bytes, a chunk at a
     * time, straight from the memfd: never all of it in memory. */
    ok = ok && sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO snapshots(session, question, data, "
                                  "not_carried) VALUES(?, ?, zeroblob(?), ?)", -1, &st, NULL) ==
                   SQLITE_OK;
    ok = ok && sqlite3_bind_int64(st, 1, s->id) == SQLITE_OK &&
         sqlite3_bind_int64(st, 2, question) == SQLITE_OK &&
         sqlite3_bind_int64(st, 3, (sqlite3_int64)len) == SQLITE_OK &&
         (text ? sqlite3_bind_text(st, 4, text, -1, SQLITE_TRANSIENT)
               : sqlite3_bind_null(st, 4)) == SQLITE_OK &&
         sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    ok = ok && sqlite3_blob_open(s->db, "main", "snapshots", "data", s->id, 1, &blob) == SQLITE_OK;
    for (size_t off = 0; ok && off < len;) {
        size_t want = len - off < SNAPSHOT_CHUNK ? len - off : SNAPSHOT_CHUNK;
        ssize_t got = pread(fd, chunk, want, (off_t)off);
        if (got <= 0) {
            what = "cannot read the data of the question";
            ok = 0;
            break;
        }
        ok = sqlite3_blob_write(blob, chunk, (int)got, (int)off) == SQLITE_OK;
        off += (size_t)got;
    }
    if (blob && sqlite3_blob_close(blob) != SQLITE_OK)
        ok = 0;
    ok = ok && sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
    int rc = ok ? 0 : session_db_fail(s, what);
    if (!ok && began)
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    free(chunk);
    free(text);
    return rc;
}

int session_load_snapshot(session *s, int *question, int *fd, size_t *len, json_t **not_carried)
{
    *fd = -1;
    *len = 0;
    *question = 0;
    *not_carried = NULL;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT question, length(data), not_carried FROM snapshots "
                           "WHERE session=?", -1, &st, NULL) != SQLITE_OK)
        return session_db_fail(s, "cannot read the data of the last question");
    sqlite3_bind_int64(st, 1, s->id);
    int step = sqlite3_step(st);
    if (step != SQLITE_ROW) {
        sqlite3_finalize(st);
        return step == SQLITE_DONE ? 1 : session_db_fail(s, "cannot read the data of the last question");
    }
    *question = sqlite3_column_int(st, 0);
    sqlite3_int64 size = sqlite3_column_int64(st, 1);
    const char *text = (const char *)sqlite3_column_text(st, 2);
    *not_carried = text ? json_loads(text, 0, NULL) : NULL;
    sqlite3_finalize(st);
    unsigned char *chunk = malloc(SNAPSHOT_CHUNK);
    sqlite3_blob *blob = NULL;
    int out = memfd_create("rlm-snapshot", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    int ok = chunk && out >= 0 && size > 0 && ftruncate(out, (off_t)size) == 0 &&
             sqlite3_blob_open(s->db, "main", "snapshots", "data", s->id, 0, &blob) == SQLITE_OK &&
             sqlite3_blob_bytes(blob) == size;
    for (sqlite3_int64 off = 0; ok && off < size;) {
        int want = size - off < (sqlite3_int64)SNAPSHOT_CHUNK ? (int)(size - off) : (int)SNAPSHOT_CHUNK;
        ok = sqlite3_blob_read(blob, chunk, want, (int)off) == SQLITE_OK &&
             pwrite(out, chunk, (size_t)want, (off_t)off) == want;
        off += want;
    }
    if (blob)
        sqlite3_blob_close(blob);
    free(chunk);
    if (ok && fcntl(out, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0)
        ok = 0;
    if (!ok) {
        if (out >= 0)
            close(out);
        json_decref(*not_carried);
        *not_carried = NULL;
        return session_db_fail(s, "cannot read the data of the last question");
    }
    *fd = out;
    *len = (size_t)size;
    return 0;
}

int session_recorded_replies(session *s)
{
    return query_long(s, "SELECT COUNT(*) FROM cells WHERE session=? AND replies IS NOT NULL", 0) > 0;
}

const char *session_errmsg(const session *s)
{
    return s->errmsg;
}

void session_free(session *s)
{
    if (!s)
        return;
    if (s->lock_fd >= 0) {
        exec_bound(s, "DELETE FROM holders WHERE session=? AND pid=?", "ii", s->id, (long long)getpid());
        close(s->lock_fd);   /* releases the lock */
    }
    sqlite3_close(s->db);
    json_decref(s->config);
    free(s);
}
