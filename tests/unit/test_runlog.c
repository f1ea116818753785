/* test_runlog — opening the run log while another process holds the file:
 * the set-up waits for it as the busy timeout promises instead of failing
 * with "database is locked" (two runs that create the log at once); a
 * request refused before its run (rlm_logs_refused) is a row without a
 * trace, and nothing at all with the log off. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_waits_for_a_writer),
        cmocka_unit_test(test_refused_request_is_a_row_without_trace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
