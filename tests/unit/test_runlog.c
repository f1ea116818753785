/* test_runlog — opening the run log while another process holds the file:
 * the set-up waits for it as the busy timeout promises instead of failing
 * with "database is locked" (two runs that create the log at once). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "runlog.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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
    char file[160];
    snprintf(file, sizeof file, "%s/logs.db", dir);
    unlink(file);
    snprintf(file, sizeof file, "%s/logs.db-wal", dir);
    unlink(file);
    snprintf(file, sizeof file, "%s/logs.db-shm", dir);
    unlink(file);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_waits_for_a_writer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
