/* Unit tests for util (bounded buffers, parsing), trace (JSONL lines) and the
 * configuration half of the public API. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rlm.h"
#include "trace.h"
#include "utf8.h"
#include "util.h"

static void test_buf_refuses_to_grow_past_max(void **state)
{
    buf b;
    buf_init(&b, 8);
    assert_int_equal(buf_puts(&b, "12345"), 0);
    assert_int_equal(buf_puts(&b, "678"), 0);
    assert_string_equal(b.data, "12345678");
    assert_int_equal(buf_puts(&b, "9"), -1);
    assert_int_equal(b.len, 8);
    assert_int_equal(buf_printf(&b, "%d", 1), -1);
    char *s = buf_take(&b);
    assert_string_equal(s, "12345678");
    assert_null(b.data);
    free(s);
}

static void test_buf_printf_and_take_empty(void **state)
{
    buf b;
    buf_init(&b, 1 << 20);
    char *empty = buf_take(&b);
    assert_string_equal(empty, "");
    free(empty);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(buf_printf(&b, "%04d,", i), 0);
    assert_int_equal(b.len, 5000);
    assert_memory_equal(b.data + 4995, "0999,", 5);
    buf_free(&b);
}

static void test_parse_numbers(void **state)
{
    long l;
    double d;
    size_t s;
    assert_int_equal(parse_long("42", &l), 0);
    assert_int_equal(l, 42);
    assert_int_equal(parse_long("42x", &l), -1);
    assert_int_equal(parse_long("", &l), -1);
    assert_int_equal(parse_long("99999999999999999999999", &l), -1);
    assert_int_equal(parse_double("1.5", &d), 0);
    assert_true(d == 1.5);
    assert_int_equal(parse_double("nan", &d), -1);
    assert_int_equal(parse_double("1e999", &d), -1);
    assert_int_equal(parse_size("4G", &s), 0);
    assert_true(s == (size_t)4 << 30);
    assert_int_equal(parse_size("512MB", &s), 0);
    assert_true(s == (size_t)512 << 20);
    assert_int_equal(parse_size("1000", &s), 0);
    assert_true(s == 1000);
    assert_int_equal(parse_size("-1G", &s), -1);
    assert_int_equal(parse_size("4T", &s), -1);
    assert_int_equal(parse_size("G", &s), -1);
}

/* The one rule for names rlm keeps (sessions, a pool's named inputs). */
static void test_str_name_valid(void **state)
{
    (void)state;
    assert_int_equal(str_name_valid("work-2026_12.v1", 64), 1);
    assert_int_equal(str_name_valid(".hidden", 64), 1); /* sessions refuse it themselves */
    assert_int_equal(str_name_valid("", 64), 0);
    assert_int_equal(str_name_valid("a/b", 64), 0);
    assert_int_equal(str_name_valid("a b", 64), 0);
    assert_int_equal(str_name_valid("caf\xc3\xa9", 64), 0);
    assert_int_equal(str_name_valid("abcd", 4), 1);
    assert_int_equal(str_name_valid("abcde", 4), 0);
}

static void test_config_validates_values(void **state)
{
    rlm_config *cfg = rlm_config_new();
    assert_non_null(cfg);
    assert_string_equal(rlm_config_get(cfg, "max_iterations"), "30");
    assert_string_equal(rlm_config_get(cfg, "model"), "gpt-5-mini");
    /* sub_model follows model until set */
    assert_int_equal(rlm_config_set(cfg, "model", "m1"), RLM_OK);
    assert_string_equal(rlm_config_get(cfg, "sub_model"), "m1");
    assert_int_equal(rlm_config_set(cfg, "sub_model", "m2"), RLM_OK);
    assert_string_equal(rlm_config_get(cfg, "sub_model"), "m2");

    assert_int_equal(rlm_config_set(cfg, "max_iterations", "0"), RLM_ERR_USAGE);
    assert_non_null(strstr(rlm_config_errmsg(cfg), "max_iterations"));
    assert_int_equal(rlm_config_set(cfg, "max_iterations", "abc"), RLM_ERR_USAGE);
    assert_string_equal(rlm_config_get(cfg, "max_iterations"), "30");
    assert_int_equal(rlm_config_set(cfg, "base_url", "localhost:8080"), RLM_ERR_USAGE);
    assert_int_equal(rlm_config_set(cfg, "base_url", "http://localhost:8080/v1"), RLM_OK);
    assert_int_equal(rlm_config_set(cfg, "cell_timeout", "-1"), RLM_ERR_USAGE);
    assert_int_equal(rlm_config_set(cfg, "cell_timeout", "0.5"), RLM_OK);
    assert_int_equal(rlm_config_set(cfg, "sandbox_memory", "1M"), RLM_ERR_USAGE);
    assert_int_equal(rlm_config_set(cfg, "sandbox_memory", "2G"), RLM_OK);
    assert_int_equal(rlm_config_set(cfg, "unsafe_no_sandbox", "yes"), RLM_ERR_USAGE);
    assert_int_equal(rlm_config_set(cfg, "no_such_key", "1"), RLM_ERR_USAGE);
    assert_non_null(strstr(rlm_config_errmsg(cfg), "no_such_key"));
    assert_null(rlm_config_get(cfg, "no_such_key"));
    rlm_config_free(cfg);
    rlm_config_free(NULL);
}

static void test_trace_writes_one_flushed_line_per_event(void **state)
{
    char path[] = "/tmp/rlm-trace-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char err[256];
    trace *t = trace_open(path, err, sizeof err);
    assert_non_null(t);
    trace_event(t, "first", json_pack("{s:s}", "text", "line one\nline two"));
    /* Flushed as it happens: readable before the trace is closed. */
    FILE *f = fopen(path, "r");
    char line[4096];
    assert_non_null(fgets(line, sizeof line, f));
    json_error_t jerr;
    json_t *ev = json_loads(line, 0, &jerr);
    assert_non_null(ev);
    assert_string_equal(json_string_value(json_object_get(ev, "type")), "first");
    assert_string_equal(json_string_value(json_object_get(ev, "text")), "line one\nline two");
    assert_int_equal(json_integer_value(json_object_get(ev, "v")), TRACE_SCHEMA_VERSION);
    assert_true(json_is_real(json_object_get(ev, "t")));
    json_decref(ev);
    trace_event(t, "second", NULL);
    assert_non_null(fgets(line, sizeof line, f));
    assert_non_null(strstr(line, "\"second\""));
    assert_null(fgets(line, sizeof line, f));
    fclose(f);
    assert_int_equal(trace_failed(t), 0);
    trace_close(t);
    /* A NULL trace drops events without complaint. */
    assert_int_equal(trace_event(NULL, "x", json_object()), 0);
    unlink(path);
    assert_null(trace_open("/nonexistent-dir/trace.jsonl", err, sizeof err));
    assert_non_null(strstr(err, "nonexistent-dir"));
}

static void test_file_read_bounds_and_errors(void **state)
{
    char path[] = "/tmp/rlm-file-read-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write_full(fd, "hello\0world", 11), 0);
    close(fd);
    size_t len = 0;
    char *text = file_read(path, 11, &len);
    assert_non_null(text);
    assert_int_equal(len, 11);
    assert_memory_equal(text, "hello\0world", 12);
    free(text);
    errno = 0;
    assert_null(file_read(path, 10, &len));
    assert_int_equal(errno, EFBIG);
    unlink(path);
    assert_null(file_read(path, 100, NULL));
    assert_int_equal(errno, ENOENT);
}

static void test_utf8_complete_prefix(void **state)
{
    /* Cut sequences are held back; complete, ASCII and invalid tails are not. */
    assert_int_equal(utf8_complete_prefix("ab", 2), 2);
    assert_int_equal(utf8_complete_prefix("a\xc3", 2), 1);
    assert_int_equal(utf8_complete_prefix("a\xc3\xa9", 3), 3);
    assert_int_equal(utf8_complete_prefix("a\xe2\x82", 3), 1);
    assert_int_equal(utf8_complete_prefix("a\xe2", 2), 1);
    assert_int_equal(utf8_complete_prefix("a\xf0\x9f\x98", 4), 1);
    assert_int_equal(utf8_complete_prefix("a\xf0\x9f\x98\x80", 5), 5);
    assert_int_equal(utf8_complete_prefix("a\xe0\x80", 3), 3);   /* overlong: invalid anyway */
    assert_int_equal(utf8_complete_prefix("a\xc0", 2), 2);        /* never a lead */
    assert_int_equal(utf8_complete_prefix("a\xff", 2), 2);
    assert_int_equal(utf8_complete_prefix("a\x80\x80\x80", 4), 4);
    assert_int_equal(utf8_complete_prefix("", 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_refuses_to_grow_past_max),
        cmocka_unit_test(test_str_name_valid),
        cmocka_unit_test(test_buf_printf_and_take_empty),
        cmocka_unit_test(test_parse_numbers),
        cmocka_unit_test(test_config_validates_values),
        cmocka_unit_test(test_trace_writes_one_flushed_line_per_event),
        cmocka_unit_test(test_file_read_bounds_and_errors),
        cmocka_unit_test(test_utf8_complete_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
