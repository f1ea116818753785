/* Unit tests for session: what one process writes, the next one reads back,
 * including after a crash mid-question; compaction; bad names and files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "session.h"
#include "util.h"

static char db_path[128];

static int setup(void **state)
{
    char dir[] = "/tmp/rlm-session-XXXXXX";
    assert_non_null(mkdtemp(dir));
    snprintf(db_path, sizeof db_path, "%s/sub/sessions.sqlite", dir);
    return 0;
}

static int teardown(void **state)
{
    char path[160];
    static const char *const suffixes[] = {"", "-wal", "-shm", "-lock"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s%s", db_path, suffixes[i]);
        unlink(path);
    }
    char *slash = strrchr(db_path, '/');
    *slash = '\0';
    rmdir(db_path);
    slash = strrchr(db_path, '/');
    *slash = '\0';
    rmdir(db_path);
    return 0;
}

typedef struct collected {
    buf text;
} collected;

static int collect_message(void *userdata, long seq, const char *role, const char *content)
{
    collected *c = userdata;
    buf_printf(&c->text, "%s:%s|", role, content);
    return 0;
}

static int collect_cell(void *userdata, const char *code, const json_t *replies)
{
    collected *c = userdata;
    buf_printf(&c->text, "%s[", code);
    size_t i;
    json_t *r;
    json_array_foreach(replies, i, r)
        buf_printf(&c->text, "%s;", json_string_value(r));
    buf_puts(&c->text, "]|");
    return 0;
}

static int collect_answer(void *userdata, int number, const char *question, const char *answer)
{
    collected *c = userdata;
    buf_printf(&c->text, "%d:%s=%s|", number, question, answer ? answer : "(none)");
    return 0;
}

static int collect_history(void *userdata, int number, const json_t *messages)
{
    collected *c = userdata;
    char *text = json_dumps(messages, JSON_COMPACT);
    buf_printf(&c->text, "%d=%s|", number, text ? text : "?");
    free(text);
    return 0;
}

static char *messages_of(session *s)
{
    collected c;
    buf_init(&c.text, 1 << 20);
    assert_int_equal(session_each_message(s, collect_message, &c), 0);
    return buf_take(&c.text);
}

static void test_a_later_process_continues(void **state)
{
    char err[512];
    session *s;
    assert_int_equal(session_open(db_path, "logs-q1", &s, err, sizeof err), 0);
    assert_true(session_is_new(s));
    assert_null(session_config(s));
    json_t *cfg = json_pack("{s:s,s:[s]}", "model", "m", "contexts", "big.txt");
    assert_int_equal(session_set_config(s, cfg), 0);
    int n;
    assert_int_equal(session_begin_question(s, "how many?", &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(session_add_message(s, "system", "sys"), 0);
    assert_int_equal(session_add_message(s, "user", "q1"), 0);
    assert_int_equal(session_add_message(s, "assistant", "a1"), 0);
    json_t *replies = json_pack("[s,s]", "r1", "r2");
    assert_int_equal(session_add_cell(s, "x = 1", replies), 0);
    assert_int_equal(session_add_cell(s, "y = 2", NULL), 0);
    json_decref(replies);
    json_t *history = json_pack("[{s:s,s:s}]", "role", "user", "content", "q1");
    assert_int_equal(session_add_history(s, 1, history), 0);
    assert_int_equal(session_add_history(s, 1, history), 0);   /* replaced, not doubled */
    json_decref(history);
    assert_int_equal(session_end_question(s, "42"), 0);
    assert_int_equal(session_end_question(s, "again"), -1);
    session_free(s);

    assert_int_equal(session_open(db_path, "logs-q1", &s, err, sizeof err), 0);
    assert_false(session_is_new(s));
    assert_true(json_equal((json_t *)session_config(s), cfg));
    json_decref(cfg);
    char *m = messages_of(s);
    assert_string_equal(m, "system:sys|user:q1|assistant:a1|");
    free(m);
    collected c;
    buf_init(&c.text, 1 << 20);
    assert_int_equal(session_each_cell(s, collect_cell, &c), 0);
    assert_string_equal(c.text.data, "x = 1[r1;r2;]|y = 2[]|");
    buf_reset(&c.text);
    assert_int_equal(session_each_history(s, collect_history, &c), 0);
    assert_string_equal(c.text.data, "1=[{\"role\":\"user\",\"content\":\"q1\"}]|");
    buf_reset(&c.text);
    assert_int_equal(session_begin_question(s, "and now?", &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(session_add_message(s, "user", "q2"), 0);
    /* The process "crashes" here: the question stays open. */
    session_free(s);

    assert_int_equal(session_open(db_path, "logs-q1", &s, err, sizeof err), 0);
    assert_int_equal(session_each_answer(s, collect_answer, &c), 0);
    assert_string_equal(c.text.data, "1:how many?=42|2:and now?=(none)|");
    buf_free(&c.text);
    m = messages_of(s);
    assert_string_equal(m, "system:sys|user:q1|assistant:a1|user:q2|");
    free(m);
    session_free(s);

    /* Another session in the same file is separate. */
    assert_int_equal(session_open(db_path, "other", &s, err, sizeof err), 0);
    assert_true(session_is_new(s));
    m = messages_of(s);
    assert_string_equal(m, "");
    free(m);
    session_free(s);
}

static void test_compaction_hides_old_turns(void **state)
{
    char err[512];
    session *s;
    assert_int_equal(session_open(db_path, "long", &s, err, sizeof err), 0);
    assert_int_equal(session_add_message(s, "system", "sys"), 0);       /* seq 1 */
    for (int i = 0; i < 3; i++) {
        char text[32];
        snprintf(text, sizeof text, "u%d", i);
        assert_int_equal(session_add_message(s, "user", text), 0);       /* 2, 4, 6 */
        snprintf(text, sizeof text, "a%d", i);
        assert_int_equal(session_add_message(s, "assistant", text), 0);  /* 3, 5, 7 */
    }
    assert_int_equal(session_compact(s, 6, "summary of turns 0-1"), 4);
    char *m = messages_of(s);
    assert_string_equal(m, "system:sys|user:u2|assistant:a2|user:summary of turns 0-1|");
    free(m);
    session_free(s);
}

static void test_bad_names_and_files(void **state)
{
    char err[512];
    session *s;
    assert_int_equal(session_open(db_path, "", &s, err, sizeof err), -1);
    assert_int_equal(session_open(db_path, "../etc", &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "bad session name"));
    assert_int_equal(session_open(db_path, ".hidden", &s, err, sizeof err), -1);
    assert_null(s);

    /* A file that is not a database. */
    assert_int_equal(session_open(db_path, "ok", &s, err, sizeof err), 0);
    session_free(s);
    char garbage[160];
    snprintf(garbage, sizeof garbage, "%s.garbage", db_path);
    FILE *f = fopen(garbage, "w");
    for (int i = 0; i < 1000; i++)
        fputs("this is not sqlite ", f);
    fclose(f);
    assert_int_equal(session_open(garbage, "ok", &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "damaged"));
    assert_non_null(strstr(err, "rlm sessions recover"));
    unlink(garbage);
    assert_int_equal(session_open("/proc/no/such/place.sqlite", "ok", &s, err, sizeof err), -1);
}

/* One handle holds a session: a second, even in the same process, is told
 * who holds it; once the first is freed the session is free again. */
static void test_one_holder_at_a_time(void **state)
{
    char err[1024];
    session *a, *b, *other;
    assert_int_equal(session_open(db_path, "held", &a, err, sizeof err), 0);
    assert_true(session_created(a));
    assert_int_equal(session_open(db_path, "held", &b, err, sizeof err), -1);
    char want[128];
    snprintf(want, sizeof want, "session 'held' is in use by pid %ld", (long)getpid());
    assert_non_null(strstr(err, want));
    /* Another session of the same file is not held. */
    assert_int_equal(session_open(db_path, "other", &other, err, sizeof err), 0);
    json_t *list;
    assert_int_equal(session_list(db_path, &list, err, sizeof err), 0);
    assert_int_equal(json_array_size(list), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "name")), "held");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(list, 0), "in_use_by")), getpid());
    json_decref(list);
    assert_int_equal(session_remove(db_path, "held", err, sizeof err), -1);
    assert_non_null(strstr(err, "in use"));
    session_free(a);
    session_free(other);
    assert_int_equal(session_open(db_path, "held", &b, err, sizeof err), 0);
    assert_false(session_created(b));
    session_free(b);
    assert_int_equal(session_remove(db_path, "held", err, sizeof err), 0);
    assert_int_equal(session_remove(db_path, "held", err, sizeof err), -1);
    assert_non_null(strstr(err, "no session 'held'"));
    assert_int_equal(session_list(db_path, &list, err, sizeof err), 0);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);
}

/* The data a question leaves: written from a memfd in chunks, read back
 * byte for byte into a sealed memfd, replaced by the next question's; one
 * past SQLite's length limit is an error, and the earlier one stays. */
static void test_snapshot_blob(void **state)
{
    (void)state;
    session *s = NULL;
    char err[256];
    assert_int_equal(session_open(db_path, "snap", &s, err, sizeof err), 0);
    int question, fd;
    size_t len;
    json_t *listed;
    assert_int_equal(session_load_snapshot(s, &question, &fd, &len, &listed), 1);
    size_t size = (3u << 20) + 123; /* more than one chunk */
    int in = memfd_create("snap", MFD_CLOEXEC);
    unsigned char *bytes = malloc(size);
    assert_non_null(bytes);
    for (size_t i = 0; i < size; i++)
        bytes[i] = (unsigned char)(i * 7 + (i >> 9));
    assert_int_equal(write(in, bytes, size), (ssize_t)size);
    json_t *not_carried = json_pack("[{s:s,s:i,s:[s]}]", "reason", "not_data", "count", 1,
                                    "names", "f");
    assert_int_equal(session_save_snapshot(s, 1, in, size, not_carried), 0);
    assert_int_equal(session_load_snapshot(s, &question, &fd, &len, &listed), 0);
    assert_int_equal(question, 1);
    assert_int_equal(len, size);
    assert_true(json_equal(listed, not_carried));
    unsigned char *back = malloc(size);
    assert_int_equal(pread(fd, back, size, 0), (ssize_t)size);
    assert_memory_equal(back, bytes, size);
    assert_int_equal(write(fd, "x", 1), -1); /* sealed */
    close(fd);
    json_decref(listed);
    /* The next question's replaces it. */
    assert_int_equal(session_save_snapshot(s, 2, in, 10, NULL), 0);
    assert_int_equal(session_load_snapshot(s, &question, &fd, &len, &listed), 0);
    assert_int_equal(question, 2);
    assert_int_equal(len, 10);
    assert_null(listed);
    close(fd);
    /* Past SQLite's limit (a sparse file: nothing is read): refused, and
     * what was saved stays. */
    assert_int_equal(ftruncate(in, (off_t)2 << 30), 0);
    assert_int_equal(session_save_snapshot(s, 3, in, (size_t)2 << 30, NULL), -1);
    assert_non_null(strstr(session_errmsg(s), "larger than the session database holds"));
    assert_int_equal(session_load_snapshot(s, &question, &fd, &len, &listed), 0);
    assert_int_equal(question, 2);
    close(fd);
    close(in);
    json_decref(not_carried);
    free(bytes);
    free(back);
    session_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_later_process_continues, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_hides_old_turns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_names_and_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_holder_at_a_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_blob, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
