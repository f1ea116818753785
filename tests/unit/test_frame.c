/* test_frame — the sandbox wire format: round trips, incremental reads, and
 * every way a peer can send a bad frame (oversized, truncated, not JSON). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "frame.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void make_pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
}

static void write_raw(int fd, const void *data, size_t len)
{
    assert_int_equal(write(fd, data, len), (ssize_t)len);
}

static void write_header(int fd, uint32_t len)
{
    unsigned char head[4] = {len >> 24, len >> 16, len >> 8, len};
    write_raw(fd, head, 4);
}

static void test_round_trip(void **state)
{
    (void)state;
    int sv[2];
    make_pair(sv);
    /* Non-ASCII text and an embedded NUL must survive. */
    json_t *obj = json_pack("{s:s, s:s%, s:i, s:[s,s]}", "type", "exec", "code",
                            "a\0b", (size_t)3, "n", 42, "list", "\xc3\xa9t\xc3\xa9", "x");
    assert_non_null(obj);
    char err[256];
    assert_int_equal(frame_write(sv[0], obj, FRAME_MAX, err, sizeof err), 0);
    json_t *back = NULL;
    assert_int_equal(frame_read(sv[1], FRAME_MAX, &back, err, sizeof err), FRAME_READY);
    assert_true(json_equal(obj, back));
    json_t *code = json_object_get(back, "code");
    assert_int_equal(json_string_length(code), 3);
    assert_memory_equal(json_string_value(code), "a\0b", 3);
    json_decref(obj);
    json_decref(back);
    /* A clean close between frames is EOF, not an error. */
    close(sv[0]);
    assert_int_equal(frame_read(sv[1], FRAME_MAX, &back, err, sizeof err), FRAME_EOF);
    close(sv[1]);
}

static void test_incremental(void **state)
{
    (void)state;
    int sv[2];
    make_pair(sv);
    const char *payload = "{\"type\":\"ready\"}";
    size_t len = strlen(payload);
    frame_reader r;
    frame_reader_init(&r, 1024);
    json_t *out = NULL;
    char err[256];
    unsigned char head[4] = {0, 0, 0, (unsigned char)len};
    /* Header in two pieces, then the body in two pieces. */
    write_raw(sv[0], head, 2);
    assert_int_equal(frame_reader_step(&r, sv[1], &out, err, sizeof err), FRAME_MORE);
    write_raw(sv[0], head + 2, 2);
    assert_int_equal(frame_reader_step(&r, sv[1], &out, err, sizeof err), FRAME_MORE);
    write_raw(sv[0], payload, 5);
    assert_int_equal(frame_reader_step(&r, sv[1], &out, err, sizeof err), FRAME_MORE);
    assert_null(out);
    write_raw(sv[0], payload + 5, len - 5);
    assert_int_equal(frame_reader_step(&r, sv[1], &out, err, sizeof err), FRAME_READY);
    assert_non_null(out);
    assert_string_equal(json_string_value(json_object_get(out, "type")), "ready");
    json_decref(out);
    frame_reader_reset(&r);
    close(sv[0]);
    close(sv[1]);
}

static void test_oversized_rejected(void **state)
{
    (void)state;
    int sv[2];
    make_pair(sv);
    char err[256];
    json_t *out = NULL;
    write_header(sv[0], 0xFFFFFFFFu);
    assert_int_equal(frame_read(sv[1], FRAME_MAX, &out, err, sizeof err), FRAME_ERROR);
    assert_null(out);
    assert_non_null(strstr(err, "oversized"));
    /* Just over a small limit is rejected as well, before any body is read. */
    write_header(sv[0], 101);
    assert_int_equal(frame_read(sv[1], 100, &out, err, sizeof err), FRAME_ERROR);
    assert_non_null(strstr(err, "oversized"));
    /* The writer refuses to produce one. */
    json_t *big = json_pack("{s:s}", "code", "0123456789012345678901234567890123456789");
    assert_int_equal(frame_write(sv[0], big, 16, err, sizeof err), -1);
    assert_non_null(strstr(err, "exceeds"));
    json_decref(big);
    close(sv[0]);
    close(sv[1]);
}

static void test_truncated(void **state)
{
    (void)state;
    char err[256];
    json_t *out = NULL;
    int sv[2];
    /* Body cut short. */
    make_pair(sv);
    write_header(sv[0], 100);
    write_raw(sv[0], "{\"type\":", 8);
    close(sv[0]);
    assert_int_equal(frame_read(sv[1], FRAME_MAX, &out, err, sizeof err), FRAME_ERROR);
    assert_non_null(strstr(err, "truncated"));
    close(sv[1]);
    /* Length prefix cut short. */
    make_pair(sv);
    write_raw(sv[0], "\0\0", 2);
    close(sv[0]);
    assert_int_equal(frame_read(sv[1], FRAME_MAX, &out, err, sizeof err), FRAME_ERROR);
    assert_non_null(strstr(err, "truncated"));
    close(sv[1]);
}

static void expect_garbled(const char *payload, size_t len)
{
    int sv[2];
    make_pair(sv);
    char err[256];
    json_t *out = NULL;
    write_header(sv[0], (uint32_t)len);
    write_raw(sv[0], payload, len);
    assert_int_equal(frame_read(sv[1], FRAME_MAX, &out, err, sizeof err), FRAME_ERROR);
    assert_null(out);
    assert_non_null(strstr(err, "garbled"));
    close(sv[0]);
    close(sv[1]);
}

static void test_garbage(void **state)
{
    (void)state;
    expect_garbled("this is not json", 16);
    expect_garbled("[1,2,3]", 7);               /* JSON, but not an object */
    expect_garbled("{\"a\":\"\xff\xfe\"}", 10); /* invalid UTF-8 */
    expect_garbled("{\"a\":1} trailing", 16);
    /* A zero length is garbage too. */
    int sv[2];
    make_pair(sv);
    char err[256];
    json_t *out = NULL;
    write_header(sv[0], 0);
    assert_int_equal(frame_read(sv[1], FRAME_MAX, &out, err, sizeof err), FRAME_ERROR);
    close(sv[0]);
    close(sv[1]);
}

static void test_write_to_closed_peer(void **state)
{
    (void)state;
    /* No SIGPIPE: the write fails and the process lives on. */
    int sv[2];
    make_pair(sv);
    close(sv[1]);
    json_t *obj = json_pack("{s:s}", "type", "exec");
    char err[256];
    assert_int_equal(frame_write(sv[0], obj, FRAME_MAX, err, sizeof err), -1);
    json_decref(obj);
    close(sv[0]);
}

static void test_frame_string_repairs_utf8(void **state)
{
    (void)state;
    json_t *s = frame_string("ok \xff\xc3 \xc3\xa9 \xed\xa0\x80!", 14);
    assert_non_null(s);
    /* Each bad byte became U+FFFD; the valid é stayed. */
    assert_string_equal(json_string_value(s),
                        "ok \xef\xbf\xbd\xef\xbf\xbd \xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd!");
    json_decref(s);
    s = frame_string("plain", 5);
    assert_string_equal(json_string_value(s), "plain");
    json_decref(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_incremental),
        cmocka_unit_test(test_oversized_rejected),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_write_to_closed_peer),
        cmocka_unit_test(test_frame_string_repairs_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
