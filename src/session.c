/* session — conversations on disk in SQLite: questions, root messages and
 * cells with their sub-call replies, appended and committed as they happen. */
#include "session.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

#define SCHEMA_VERSION "1"
#define NAME_MAX_CHARS 100

struct session {
    sqlite3 *db;
    long long id;
    int is_new;
    json_t *config;
    long next_message, next_cell;
    int question;           /* current question number, 0 when none is open */
    char errmsg[512];
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
    "  messages TEXT NOT NULL, PRIMARY KEY(session, number));";

static int session_fail(session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int session_fail(session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->errmsg, sizeof s->errmsg, fmt, ap);
    va_end(ap);
    return -1;
}

static int session_db_fail(session *s, const char *what)
{
    return session_fail(s, "session database: %s: %s", what, sqlite3_errmsg(s->db));
}

static int valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > NAME_MAX_CHARS)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return name[0] != '.';
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
    for (int i = 0; types[i]; i++) {
        if (types[i] == 't') {
            const char *v = va_arg(ap, const char *);
            if (v)
                sqlite3_bind_text(st, i + 1, v, -1, SQLITE_TRANSIENT);
            else
                sqlite3_bind_null(st, i + 1);
        } else if (types[i] == 'i') {
            sqlite3_bind_int64(st, i + 1, va_arg(ap, long long));
        } else {
            sqlite3_bind_double(st, i + 1, va_arg(ap, double));
        }
    }
    va_end(ap);
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
    return 0;
}

int session_open(const char *db_path, const char *name, session **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!name || !valid_name(name)) {
        snprintf(err, errlen, "bad session name '%s': use 1-%d characters of letters, digits, '.', "
                 "'_' and '-', not starting with '.'", name ? name : "", NAME_MAX_CHARS);
        return -1;
    }
    session *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
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
    if (session_schema(s) != 0 || session_find_or_create(s, name) != 0) {
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
    sqlite3_finalize(st);
    return rc;
}

int session_each_cell(session *s, session_cell_fn fn, void *userdata)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT code, replies FROM cells WHERE session=? ORDER BY seq", -1, &st,
                           NULL) != SQLITE_OK)
        return session_db_fail(s, "cannot read cells");
    sqlite3_bind_int64(st, 1, s->id);
    int rc = 0;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(st, 1);
        json_t *replies = text ? json_loads(text, 0, NULL) : NULL;
        rc = fn(userdata, (const char *)sqlite3_column_text(st, 0), replies);
        json_decref(replies);
    }
    sqlite3_finalize(st);
    return rc;
}

int session_each_answer(session *s, session_answer_fn fn, void *userdata)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT number, question, answer FROM questions WHERE session=? "
                           "ORDER BY number", -1, &st, NULL) != SQLITE_OK)
        return session_db_fail(s, "cannot read answers");
    sqlite3_bind_int64(st, 1, s->id);
    int rc = 0;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW)
        rc = fn(userdata, sqlite3_column_int(st, 0), (const char *)sqlite3_column_text(st, 1),
                (const char *)sqlite3_column_text(st, 2));
    sqlite3_finalize(st);
    return rc;
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
    int rc = 0;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(st, 1);
        json_t *messages = text ? json_loads(text, 0, NULL) : NULL;
        rc = fn(userdata, sqlite3_column_int(st, 0), messages);
        json_decref(messages);
    }
    sqlite3_finalize(st);
    return rc;
}

const char *session_errmsg(const session *s)
{
    return s->errmsg;
}

void session_free(session *s)
{
    if (!s)
        return;
    sqlite3_close(s->db);
    json_decref(s->config);
    free(s);
}
