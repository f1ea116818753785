/* Unit tests for cli/batch_tasks.c: every kind of bad line reported with
 * its number and the good tasks kept, duplicate ids naming the first,
 * inputs resolved from the task file's directory (a missing one marks the
 * task, it does not drop it), shards from the flag and from each
 * scheduler's environment, and the answer-against-gold comparison. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batch.h"

static char dir[64];

static int make_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/rlm-test-batch-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    (void)state;
    char path[128];
    static const char *const files[] = {"tasks.jsonl", "doc.txt"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    return 0;
}

static const char *write_file(const char *name, const char *text)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static const batch_line_error *error_of_line(const batch_taskfile *tf, long line)
{
    for (size_t i = 0; i < tf->n_errors; i++)
        if (tf->errors[i].line == line)
            return &tf->errors[i];
    return NULL;
}

static void test_bad_lines_and_good_tasks(void **state)
{
    (void)state;
    write_file("doc.txt", "text\n");
    const char *path = write_file("tasks.jsonl",
        "{\"id\": \"a\", \"question\": \"q a\", \"inputs\": \"doc.txt\"}\n"        /* 1 good */
        "\n"                                                                     /* 2 blank */
        "{\"id\": \"b\", \"question\": \"q b\"\n"                                 /* 3 not JSON */
        "[1, 2]\n"                                                               /* 4 not an object */
        "{\"id\": \"a\", \"question\": \"again\"}\n"                               /* 5 duplicate */
        "{\"id\": 7, \"question\": \"q 7\", \"gold\": 42, \"meta\": {\"k\": 1}}\n"  /* 6 good, integer id */
        "{\"id\": \"c\", \"question\": \"  \"}\n"                                  /* 7 blank question */
        "{\"id\": \"d\", \"question\": \"q\", \"colour\": 1}\n"                     /* 8 unknown key */
        "{\"id\": \"e\", \"question\": \"q\", \"options\": {\"rpm\": 5}}\n"          /* 9 process option */
        "{\"id\": \"f\", \"question\": \"q\", \"options\": {\"max-iterations\": 0}}\n" /* 10 bad value */
        "{\"id\": \"g\", \"question\": \"q\", \"inputs\": [\"nope.txt\"]}\n"        /* 11 missing input */
        "{\"id\": \"h\", \"question\": \"q\", \"inputs\": [{\"text\": \"hi\"}],"
        " \"options\": {\"max_iterations\": 4, \"strict\": true}}\n"               /* 12 good */
        "{\"question\": \"no id\"}\n");                                          /* 13 no id */
    batch_taskfile tf;
    char err[256];
    assert_int_equal(batch_taskfile_read(path, &tf, err, sizeof err), 0);
    assert_int_equal(tf.n_tasks, 4);
    assert_string_equal(tf.tasks[0].id, "a");
    assert_int_equal(tf.tasks[0].line, 1);
    assert_int_equal(tf.tasks[0].ordinal, 0);
    char want[128];
    snprintf(want, sizeof want, "%s/doc.txt", dir);
    assert_string_equal(tf.tasks[0].inputs[0].arg, want);
    assert_null(tf.tasks[0].input_error);
    assert_string_equal(tf.tasks[1].id, "7");
    assert_int_equal(tf.tasks[1].ordinal, 4);   /* the blank line does not count */
    assert_int_equal(json_integer_value(tf.tasks[1].gold), 42);
    assert_string_equal(tf.tasks[2].id, "g");
    assert_non_null(strstr(tf.tasks[2].input_error, "nope.txt"));
    assert_string_equal(tf.tasks[3].id, "h");
    assert_string_equal(tf.tasks[3].inputs[0].text, "hi");
    assert_string_equal(json_string_value(json_object_get(tf.tasks[3].options, "max_iterations")), "4");
    assert_string_equal(json_string_value(json_object_get(tf.tasks[3].options, "strict")), "1");

    assert_int_equal(tf.n_errors, 8);
    assert_non_null(strstr(error_of_line(&tf, 3)->message, "not JSON"));
    assert_non_null(strstr(error_of_line(&tf, 4)->message, "JSON object"));
    assert_non_null(strstr(error_of_line(&tf, 5)->message, "duplicate id \"a\" (first on line 1"));
    assert_non_null(strstr(error_of_line(&tf, 7)->message, "\"question\""));
    assert_non_null(strstr(error_of_line(&tf, 8)->message, "unknown key \"colour\""));
    assert_non_null(strstr(error_of_line(&tf, 9)->message, "\"rpm\" is the whole batch's"));
    assert_non_null(strstr(error_of_line(&tf, 10)->message, "max_iterations"));
    assert_non_null(strstr(error_of_line(&tf, 13)->message, "no \"id\""));
    assert_int_equal(error_of_line(&tf, 13)->ordinal, 11);
    batch_taskfile_free(&tf);

    assert_int_equal(batch_taskfile_read("-", &tf, err, sizeof err), -1);
    assert_non_null(strstr(err, "stdin"));
    assert_int_equal(batch_taskfile_read("/nonexistent/t.jsonl", &tf, err, sizeof err), -1);
}

/* Each line belongs to exactly one shard. */
static void test_in_shard(void **state)
{
    (void)state;
    for (int n = 1; n <= 5; n++) {
        for (size_t ord = 0; ord < 40; ord++) {
            int owners = 0;
            for (int i = 0; i < n; i++)
                owners += batch_in_shard(ord, i, n);
            assert_int_equal(owners, 1);
        }
    }
}

static void clear_env(void)
{
    static const char *const vars[] = {"RLM_SHARD", "RLM_SHARDS", "SLURM_ARRAY_TASK_ID",
                                       "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT",
                                       "JOB_COMPLETION_INDEX"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
}

static void expect_shard(const char *spec, long count, int index, int total)
{
    int i = -1, n = -1;
    const char *source;
    char err[256] = "";
    assert_int_equal(batch_shard_resolve(spec, count, &i, &n, &source, err, sizeof err), 0);
    assert_int_equal(i, index);
    assert_int_equal(n, total);
}

static void expect_bad_shard(const char *spec, long count, const char *needle)
{
    int i, n;
    const char *source;
    char err[256] = "";
    assert_int_equal(batch_shard_resolve(spec, count, &i, &n, &source, err, sizeof err), -1);
    assert_non_null(strstr(err, needle));
}

static void test_shard_sources(void **state)
{
    (void)state;
    clear_env();
    expect_shard(NULL, 0, 0, 1);
    expect_shard("2/4", 0, 2, 4);
    expect_bad_shard("4/4", 0, "index must be");
    expect_bad_shard("x/4", 0, "I/N");
    expect_bad_shard("3", 0, "I/N");
    expect_bad_shard(NULL, 3, "without an index");

    setenv("RLM_SHARD", "1/2", 1);
    expect_shard(NULL, 0, 1, 2);
    expect_shard("0/3", 0, 0, 3);   /* the flag wins */
    clear_env();

    /* A Slurm array 10-13: its own count and minimum... */
    setenv("SLURM_ARRAY_TASK_ID", "12", 1);
    setenv("SLURM_ARRAY_TASK_MIN", "10", 1);
    setenv("SLURM_ARRAY_TASK_COUNT", "4", 1);
    expect_shard(NULL, 0, 2, 4);
    /* ...or, with --shards, the index itself: shard 2 resubmitted alone
     * (--array=2, so MIN 2 and COUNT 1) is still shard 2. */
    setenv("SLURM_ARRAY_TASK_ID", "2", 1);
    setenv("SLURM_ARRAY_TASK_MIN", "2", 1);
    setenv("SLURM_ARRAY_TASK_COUNT", "1", 1);
    expect_shard(NULL, 4, 2, 4);
    unsetenv("SLURM_ARRAY_TASK_COUNT");
    expect_bad_shard(NULL, 0, "SLURM_ARRAY_TASK_COUNT");
    clear_env();

    setenv("JOB_COMPLETION_INDEX", "5", 1);
    expect_bad_shard(NULL, 0, "number of shards");
    expect_shard(NULL, 8, 5, 8);
    setenv("RLM_SHARDS", "6", 1);
    expect_shard(NULL, 0, 5, 6);
    clear_env();
}

static void test_answer_correct(void **state)
{
    (void)state;
    json_t *gold = json_string("Paris");
    assert_true(batch_answer_correct("Paris", gold));
    assert_true(batch_answer_correct("  paris. ", gold));
    assert_true(batch_answer_correct("The answer is PARIS!", gold));
    assert_false(batch_answer_correct("Parisian", gold));
    assert_false(batch_answer_correct("", gold));
    assert_false(batch_answer_correct(NULL, gold));
    json_decref(gold);
    gold = json_string("New  York");
    assert_true(batch_answer_correct("new york, of course", gold));
    json_decref(gold);
    gold = json_integer(42);
    assert_true(batch_answer_correct("42", gold));
    assert_true(batch_answer_correct("there are 42 of them", gold));
    assert_false(batch_answer_correct("420", gold));
    json_decref(gold);
    gold = json_string("...");   /* nothing left to compare */
    assert_false(batch_answer_correct("...", gold));
    json_decref(gold);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_lines_and_good_tasks, make_dir, remove_dir),
        cmocka_unit_test(test_in_shard),
        cmocka_unit_test(test_shard_sources),
        cmocka_unit_test(test_answer_correct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
