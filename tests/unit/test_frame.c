/* test_frame — the sandbox wire format: round trips, incremental reads, and
 * every way a peer can send a bad frame (oversized, truncated, not JSON);
 * descriptors passed after a frame (fdpass). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fdpass.h"
#include "frame.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
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

/* The descriptor received is a copy of the one sent: same open file. */
static void assert_same_file(int a, int b)
{
    assert_true(a >= 0 && b >= 0 && a != b);
    assert_int_equal(lseek(a, 7, SEEK_SET), 7);
    assert_int_equal(lseek(b, 0, SEEK_CUR), 7);
}

static void test_fdpass_round_trip(void **state)
{
    (void)state;
    int sv[2];
    make_pair(sv);
    int fds[2] = {memfd_create("a", 0), memfd_create("b", 0)};
    char err[128];
    /* A frame, then its byte with the descriptors, on one socket. */
    json_t *obj = json_pack("{s:s}", "type", "add_input");
    assert_int_equal(frame_write(sv[0], obj, FRAME_MAX, err, sizeof err), 0);
    json_decref(obj);
    assert_int_equal(fd_send(sv[0], 1, fds, 2, err, sizeof err), 0);
    json_t *got = NULL;
    assert_int_equal(frame_read(sv[1], FRAME_MAX, &got, err, sizeof err), FRAME_READY);
    json_decref(got);
    char tag = 0;
    int in[2] = {-1, -1};
    assert_int_equal(fd_recv(sv[1], &tag, in, 2), 2);
    assert_int_equal(tag, 1);
    assert_same_file(fds[0], in[0]);
    assert_same_file(fds[1], in[1]);
    assert_int_equal(fcntl(in[0], F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    /* No descriptor: the byte alone (a status). */
    assert_int_equal(fd_send(sv[0], 0, NULL, 0, err, sizeof err), 0);
    assert_int_equal(fd_recv(sv[1], &tag, in, 2), 0);
    assert_int_equal(tag, 0);
    for (int i = 0; i < 2; i++) {
        close(fds[i]);
        close(in[i]);
    }
    close(sv[0]);
    close(sv[1]);
}

/* Open descriptors of this process. */
static int open_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++)
        n += fcntl(fd, F_GETFD) != -1;
    return n;
}

/* More descriptors than asked for: the first ones are the caller's, the
 * others are closed rather than leaked. */
static void test_fdpass_extra_closed(void **state)
{
    (void)state;
    int sv[2];
    make_pair(sv);
    int fds[3] = {open("/dev/null", O_RDONLY), open("/dev/null", O_RDONLY),
                  open("/dev/null", O_RDONLY)};
    char err[128];
    assert_int_equal(fd_send(sv[0], 0, fds, 3, err, sizeof err), 0);
    int before = open_fds();
    int in = -1;
    assert_int_equal(fd_recv(sv[1], NULL, &in, 1), 1);
    assert_true(in >= 0);
    assert_int_equal(open_fds(), before + 1);
    close(in);
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    close(sv[0]);
    close(sv[1]);
}

static void test_fdpass_errors(void **state)
{
    (void)state;
    int sv[2];
    make_pair(sv);
    int fds[5] = {0, 0, 0, 0, 0};
    char err[128] = "";
    assert_int_equal(fd_send(sv[0], 0, fds, 5, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot pass 5 descriptors"));
    close(sv[0]);
    int in = -1;
    assert_int_equal(fd_recv(sv[1], NULL, &in, 1), -1); /* the peer is gone */
    assert_int_equal(in, -1);
    signal(SIGPIPE, SIG_DFL); /* a closed peer is an error, never SIGPIPE */
    int pair2[2];
    make_pair(pair2);
    close(pair2[1]);
    assert_int_equal(fd_send(pair2[0], 0, NULL, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot pass descriptors"));
    close(pair2[0]);
    close(sv[1]);
}

/* Steps a pieces reader until it is not FRAME_MORE or `steps` ran out. */
static int pieces_steps(frame_pieces *p, int fd, size_t steps, char *err, size_t errlen)
{
    int rc = FRAME_MORE;
    for (size_t i = 0; i < steps && rc == FRAME_MORE; i++)
        rc = frame_pieces_step(p, fd, err, errlen);
    return rc;
}

/* A batch's prompts arrive one by one, each usable (and freeable) before the
 * next is in: piece 0 is complete while piece 1 is half sent. */
static void test_pieces_arrive_one_by_one(void **state)
{
    (void)state;
    int sv[2];
    make_pair(sv);
    int flags = fcntl(sv[1], F_GETFL);
    assert_int_equal(fcntl(sv[1], F_SETFL, flags | O_NONBLOCK), 0);
    const size_t lens[3] = {5, 3, 0};
    frame_pieces p;
    char err[256];
    assert_int_equal(frame_pieces_init(&p, lens, 3, FRAME_MAX, err, sizeof err), 0);
    write_header(sv[0], 5 + 1 + 3 + 1 + 0 + 1);
    write_raw(sv[0], "hello\0ab", 8);
    assert_int_equal(pieces_steps(&p, sv[1], 10, err, sizeof err), FRAME_MORE);
    assert_int_equal(p.cur, 1);
    assert_memory_equal(p.data[0], "hello", 6);
    free(p.data[0]);   /* the caller's to free early */
    p.data[0] = NULL;
    write_raw(sv[0], "c\0\0", 3);
    assert_int_equal(pieces_steps(&p, sv[1], 10, err, sizeof err), FRAME_READY);
    assert_int_equal(p.cur, 3);
    assert_memory_equal(p.data[1], "abc", 4);
    assert_memory_equal(p.data[2], "", 1);
    frame_pieces_free(&p);
    close(sv[0]);
    close(sv[1]);
}

/* Hands out pieces[] one part per call to frame_write_raw_from, counting
 * the calls (each after the previous group was written). */
typedef struct parts_source {
    const char *const *texts;
    size_t n, next, calls;
    size_t extra;   /* bytes of junk after the last piece: a sender that lies */
} parts_source;

static void next_parts(void *ctx, struct iovec *parts, size_t cap, size_t *n)
{
    parts_source *src = ctx;
    src->calls++;
    *n = 0;
    while (src->next < src->n && *n < cap && *n < 3) {
        /* the NUL that ends each text goes with it */
        parts[(*n)++] = (struct iovec){(void *)src->texts[src->next], strlen(src->texts[src->next]) + 1};
        src->next++;
    }
    if (*n == 0 && src->extra) {
        parts[(*n)++] = (struct iovec){(void *)"junk", src->extra};
        src->extra = 0;
    }
}

/* The sender's side: pieces asked for a group at a time make exactly the
 * frame the reader expects; parts that do not add up are refused. */
static void test_write_raw_from(void **state)
{
    (void)state;
    int sv[2];
    make_pair(sv);
    const char *texts[7] = {"one", "", "three", "four", "five", "six", "seven"};
    size_t lens[7], total = 0;
    for (size_t i = 0; i < 7; i++)
        total += (lens[i] = strlen(texts[i])) + 1;
    parts_source src = {.texts = texts, .n = 7};
    char err[256];
    assert_int_equal(frame_write_raw_from(sv[0], total, FRAME_MAX, next_parts, &src, err, sizeof err), 0);
    assert_int_equal(src.calls, 4);   /* three groups of at most three, then the end */
    frame_pieces p;
    assert_int_equal(frame_pieces_init(&p, lens, 7, FRAME_MAX, err, sizeof err), 0);
    assert_int_equal(pieces_steps(&p, sv[1], 100, err, sizeof err), FRAME_READY);
    for (size_t i = 0; i < 7; i++)
        assert_string_equal(p.data[i], texts[i]);
    frame_pieces_free(&p);

    src = (parts_source){.texts = texts, .n = 7};
    assert_int_equal(frame_write_raw_from(sv[0], total + 1, FRAME_MAX, next_parts, &src, err, sizeof err), -1);
    assert_non_null(strstr(err, "shorter"));
    src = (parts_source){.texts = texts, .n = 7, .extra = 2};
    assert_int_equal(frame_write_raw_from(sv[0], total + 1, FRAME_MAX, next_parts, &src, err, sizeof err), -1);
    assert_non_null(strstr(err, "longer"));
    assert_int_equal(frame_write_raw_from(sv[0], 0, FRAME_MAX, next_parts, &src, err, sizeof err), -1);
    assert_int_equal(frame_write_raw_from(sv[0], 65, 64, next_parts, &src, err, sizeof err), -1);
    close(sv[0]);
    close(sv[1]);
}

/* Everything a hostile child can do wrong with the pieces of a batch. */
static void test_pieces_rejected(void **state)
{
    (void)state;
    char err[256];
    frame_pieces p;
    /* Announced lengths that could not fit in one frame, or none at all. */
    const size_t big[2] = {40, 40};
    assert_int_equal(frame_pieces_init(&p, big, 2, 64, err, sizeof err), -1);
    assert_non_null(strstr(err, "oversized"));
    const size_t huge[2] = {SIZE_MAX - 1, 5};
    assert_int_equal(frame_pieces_init(&p, huge, 2, FRAME_MAX, err, sizeof err), -1);
    assert_int_equal(frame_pieces_init(&p, big, 0, FRAME_MAX, err, sizeof err), -1);

    const size_t lens[2] = {2, 2};
    struct {
        const char *name;
        uint32_t head;
        const char *body;
        size_t body_len;
        int close_after;
        const char *why;
    } cases[] = {
        {"length prefix other than the announced total", 7, "ab\0cd\0", 6, 0, "announced"},
        {"a piece without its NUL", 6, "abXcd\0", 6, 0, "does not end"},
        {"the stream ends inside a piece", 6, "ab\0c", 4, 1, "truncated"},
        {"the stream ends before the length prefix", 0, "", 0, 1, "truncated"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int sv[2];
        make_pair(sv);
        assert_int_equal(frame_pieces_init(&p, lens, 2, FRAME_MAX, err, sizeof err), 0);
        if (cases[i].head)
            write_header(sv[0], cases[i].head);
        if (cases[i].body_len)
            write_raw(sv[0], cases[i].body, cases[i].body_len);
        if (cases[i].close_after)
            shutdown(sv[0], SHUT_WR);
        err[0] = '\0';
        int rc = pieces_steps(&p, sv[1], 20, err, sizeof err);
        if (rc != FRAME_ERROR || !strstr(err, cases[i].why))
            fail_msg("%s: rc %d, err '%s'", cases[i].name, rc, err);
        frame_pieces_free(&p);
        close(sv[0]);
        close(sv[1]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_pieces_arrive_one_by_one),
        cmocka_unit_test(test_pieces_rejected),
        cmocka_unit_test(test_write_raw_from),
        cmocka_unit_test(test_incremental),
        cmocka_unit_test(test_oversized_rejected),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_write_to_closed_peer),
        cmocka_unit_test(test_frame_string_repairs_utf8),
        cmocka_unit_test(test_fdpass_round_trip),
        cmocka_unit_test(test_fdpass_extra_closed),
        cmocka_unit_test(test_fdpass_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
