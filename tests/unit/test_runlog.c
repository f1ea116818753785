/* test_runlog — opening the run log while another process holds the file:
 * the set-up waits for it as the busy timeout promises instead of failing
 * with "database is locked" (two runs that create the log at once); a
 * request refused before its run (rlm_logs_refused) is a row without a
 * trace, and nothing at all with the log off; the WAL stays small when every
 * run is a process of its own: short runs leave it be, the run that takes
 * it past 1 MB empties it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "rlm.h"
#include "runlog.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

static void remove_log(const char *dir)
{
    static const char *const files[] = {"logs.db", "logs.db-wal", "logs.db-shm"};
    char file[160];
    for (size_t i = 0; i < 3; i++) {
        snprintf(file, sizeof file, "%s/%s", dir, files[i]);
        unlink(file);
    }
    rmdir(dir);
}

static void *commit_later(void *arg)
{
    struct timespec pause = {0, 300 * 1000 * 1000};
    nanosleep(&pause, NULL);
    sqlite3_exec(arg, "COMMIT;", NULL, NULL, NULL);
    return NULL;
}

/* A database still in rollback mode with a write transaction open in
 * another connection: SQLite refuses PRAGMA journal_mode=WAL at once, busy
 * handler or not. runlog_open must wait for the writer and succeed. */
static void test_open_waits_for_a_writer(void **state)
{
    (void)state;
    char dir[] = "/tmp/rlm-test-runlog-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/logs.db", dir);
    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open(path, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "CREATE TABLE t(x); BEGIN IMMEDIATE; INSERT INTO t VALUES(1);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, commit_later, other), 0);
    char err[512] = "";
    runlog *log = runlog_open(path, err, sizeof err);
    pthread_join(thread, NULL);
    if (!log)
        fail_msg("runlog_open: %s", err);
    runlog_close(log);
    sqlite3_close(other);
    remove_log(dir);
}

static void test_refused_request_is_a_row_without_trace(void **state)
{
    (void)state;
    char dir[] = "/tmp/rlm-test-runlog-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/logs.db", dir);
    rlm_config *cfg = rlm_config_new();
    assert_int_equal(rlm_config_set(cfg, "log_db", path), RLM_OK);
    char *err = NULL;
    /* The log off: nothing is written, not even the file. */
    assert_int_equal(rlm_logs_refused(cfg, "rlm", "q", "HTTP 429", &err), RLM_OK);
    assert_null(err);
    assert_int_not_equal(access(path, F_OK), 0);

    assert_int_equal(rlm_config_set(cfg, "log", "1"), RLM_OK);
    assert_int_equal(rlm_config_set(cfg, "log_command", "serve"), RLM_OK);
    assert_int_equal(rlm_logs_refused(cfg, "rlm:docs", "what?", "HTTP 429 rate_limit_exceeded: busy", &err),
                     RLM_OK);
    assert_int_equal(rlm_logs_refused(cfg, NULL, NULL, NULL, &err), RLM_OK);
    char *out = NULL;
    assert_int_equal(rlm_logs_list(cfg, "{\"status\": \"refused\"}", &out), RLM_OK);
    json_t *rows = json_loads(out, 0, NULL);
    rlm_string_free(out);
    assert_int_equal(json_array_size(rows), 2);
    json_t *row = json_array_get(rows, 1);
    assert_string_equal(json_string_value(json_object_get(row, "command")), "serve");
    assert_string_equal(json_string_value(json_object_get(row, "model")), "rlm:docs");
    assert_string_equal(json_string_value(json_object_get(row, "question")), "what?");
    assert_string_equal(json_string_value(json_object_get(row, "error")), "HTTP 429 rate_limit_exceeded: busy");
    assert_int_equal(json_integer_value(json_object_get(row, "trace_bytes")), 0);
    row = json_array_get(rows, 0);
    assert_true(json_is_null(json_object_get(row, "model")));
    assert_string_equal(json_string_value(json_object_get(row, "error")), "refused");
    json_decref(rows);
    char *trace = NULL;
    size_t len = 0;
    assert_int_equal(rlm_logs_trace(cfg, 1, &trace, &len), RLM_ERR_INPUT);
    assert_non_null(strstr(trace, "refused before a run started"));
    rlm_string_free(trace);

    /* A log that cannot be written: the reason, not silence. */
    assert_int_equal(rlm_config_set(cfg, "log_db", "/proc/rlm-no-such/logs.db"), RLM_OK);
    assert_int_equal(rlm_logs_refused(cfg, "rlm", "q", "x", &err), RLM_ERR_INPUT);
    assert_non_null(err);
    assert_non_null(strstr(err, "run log"));
    rlm_string_free(err);
    rlm_config_free(cfg);
    remove_log(dir);
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

/* One process's use of the log: open, one run recorded (its trace lines of
 * random, incompressible text), close. */
static void record_one_run(const char *path, size_t trace_bytes)
{
    char err[512] = "";
    runlog *log = runlog_open(path, err, sizeof err);
    if (!log)
        fail_msg("runlog_open: %s", err);
    runlog_capture *capture = runlog_capture_new();
    assert_non_null(capture);
    char line[1001];
    for (size_t done = 0; done < trace_bytes; done += sizeof line) {
        for (size_t i = 0; i + 1 < sizeof line; i++)
            line[i] = (char)('a' + rand() % 26);
        line[sizeof line - 1] = '\n';
        runlog_capture_line(capture, line, sizeof line);
    }
    json_t *run = json_pack("{s:s,s:s}", "command", "ask", "question", "q");
    long long id = 0;
    if (runlog_record(log, run, capture, (size_t)1 << 30, &id, err, sizeof err) != 0)
        fail_msg("runlog_record: %s", err);
    json_decref(run);
    runlog_capture_free(capture);
    runlog_close(log);
}

static void test_wal_stays_small(void **state)
{
    (void)state;
    char dir[] = "/tmp/rlm-test-runlog-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], wal[140];
    snprintf(path, sizeof path, "%s/logs.db", dir);
    snprintf(wal, sizeof wal, "%s-wal", path);
    /* Short runs: no checkpoint each (the WAL is kept), and none grows it
     * past the 1 MB at which a record empties it, plus that record. */
    off_t most = 0;
    int emptied = 0;
    for (int i = 0; i < 300; i++) {
        record_one_run(path, 2000);
        off_t size = file_size(wal);
        if (size < 0)
            fail_msg("run %d: no WAL", i);
        emptied += size == 0;
        if (size > most)
            most = size;
    }
    assert_true(most < 2 * 1024 * 1024);
    assert_true(emptied >= 2 && emptied <= 30);   /* every ~50 short runs, not each */
    /* A run with a big trace: its record checkpoints and truncates. */
    record_one_run(path, 3 * 1024 * 1024);
    assert_int_equal(file_size(wal), 0);
    record_one_run(path, 2000);
    assert_true(file_size(wal) > 0 && file_size(wal) < 256 * 1024);

    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*), (SELECT traces FROM totals), "
                                            "SUM(length(trace)) FROM runs", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 302);
    assert_int_equal(sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2));
    sqlite3_finalize(st);
    sqlite3_close(db);
    remove_log(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_waits_for_a_writer),
        cmocka_unit_test(test_refused_request_is_a_row_without_trace),
        cmocka_unit_test(test_wal_stays_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
