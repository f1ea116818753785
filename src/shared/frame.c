/* frame — length-prefixed JSON frames between the host and the sandbox child:
 * bounded incremental reading, writing without SIGPIPE, and a lossy UTF-8
 * repair so that anything we send is a valid JSON string. */
#include "frame.h"

#include "utf8.h"
#include "util.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* Frames may carry U+0000 inside strings (model output can contain it). */
#define FRAME_JSON_LOAD_FLAGS (JSON_ALLOW_NUL)
#define FRAME_JSON_DUMP_FLAGS (JSON_COMPACT)

void frame_reader_init(frame_reader *r, size_t max)
{
    memset(r, 0, sizeof *r);
    r->max = max;
}

void frame_reader_reset(frame_reader *r)
{
    free(r->body);
    size_t max = r->max;
    frame_reader_init(r, max);
}

static int read_error(char *err, size_t errlen, const char *what)
{
    snprintf(err, errlen, "%s", what);
    return FRAME_ERROR;
}

static int io_error(char *err, size_t errlen)
{
    if (errno == EINTR || errno == EAGAIN)
        return FRAME_MORE;
    snprintf(err, errlen, "read: %s", strerror(errno));
    return FRAME_IO_ERROR;
}

int frame_parse(const char *data, size_t len, json_t **out, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *obj = json_loadb(data, len, FRAME_JSON_LOAD_FLAGS, &jerr);
    if (!obj) {
        snprintf(err, errlen, "garbled frame: %s at byte %d", jerr.text, jerr.position);
        return -1;
    }
    if (!json_is_object(obj)) {
        json_decref(obj);
        snprintf(err, errlen, "garbled frame: payload is not a JSON object");
        return -1;
    }
    *out = obj;
    return 0;
}

static int step_head(frame_reader *r, int fd, char *err, size_t errlen)
{
    ssize_t n = read(fd, r->head + r->head_len, sizeof r->head - r->head_len);
    if (n < 0)
        return io_error(err, errlen);
    if (n == 0)
        return r->head_len == 0 ? FRAME_EOF
                                : read_error(err, errlen, "truncated frame: end of stream in length prefix");
    r->head_len += (size_t)n;
    if (r->head_len < sizeof r->head)
        return FRAME_MORE;
    uint32_t len = ((uint32_t)r->head[0] << 24) | ((uint32_t)r->head[1] << 16) |
                   ((uint32_t)r->head[2] << 8) | (uint32_t)r->head[3];
    if ((size_t)len > r->max) {
        snprintf(err, errlen, "oversized frame: %lu bytes announced, the limit is %zu",
                 (unsigned long)len, r->max);
        return FRAME_ERROR;
    }
    if (len == 0)
        return read_error(err, errlen, "garbled frame: empty payload");
    r->body = malloc(len);
    if (!r->body)
        return read_error(err, errlen, "out of memory for a frame");
    r->body_len = len;
    r->body_have = 0;
    return FRAME_MORE;
}

/* Reads once into the body; FRAME_READY when the body is complete. */
static int step_body(frame_reader *r, int fd, char *err, size_t errlen)
{
    if (!r->body)
        return step_head(r, fd, err, errlen);
    ssize_t n = read(fd, r->body + r->body_have, r->body_len - r->body_have);
    if (n < 0)
        return io_error(err, errlen);
    if (n == 0) {
        snprintf(err, errlen, "truncated frame: end of stream after %zu of %zu bytes",
                 r->body_have, r->body_len);
        return FRAME_ERROR;
    }
    r->body_have += (size_t)n;
    return r->body_have < r->body_len ? FRAME_MORE : FRAME_READY;
}

int frame_reader_step(frame_reader *r, int fd, json_t **out, char *err, size_t errlen)
{
    *out = NULL;
    int rc = step_body(r, fd, err, errlen);
    if (rc != FRAME_READY)
        return rc;
    rc = frame_parse(r->body, r->body_len, out, err, errlen);
    frame_reader_reset(r);
    return rc == 0 ? FRAME_READY : FRAME_ERROR;
}

int frame_reader_step_raw(frame_reader *r, int fd, char **data, size_t *len, char *err,
                          size_t errlen)
{
    *data = NULL;
    *len = 0;
    int rc = step_body(r, fd, err, errlen);
    if (rc == FRAME_EOF) {
        snprintf(err, errlen, "truncated frame: end of stream before a raw frame");
        return FRAME_ERROR;
    }
    if (rc != FRAME_READY)
        return rc;
    *data = r->body; /* handed over whole: no copy of a large payload */
    *len = r->body_len;
    r->body = NULL;
    frame_reader_reset(r);
    return FRAME_READY;
}

int frame_pieces_init(frame_pieces *p, const size_t *lens, size_t n, size_t max, char *err,
                      size_t errlen)
{
    memset(p, 0, sizeof *p);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] >= max || total > max - lens[i] - 1) {
            snprintf(err, errlen, "oversized frame: the pieces announced exceed %zu bytes", max);
            return -1;
        }
        total += lens[i] + 1;
    }
    if (n == 0 || total == 0) {
        snprintf(err, errlen, "garbled frame: no pieces announced");
        return -1;
    }
    p->data = calloc(n, sizeof *p->data);
    if (!p->data) {
        snprintf(err, errlen, "out of memory for a frame");
        return -1;
    }
    p->lens = lens;
    p->n = n;
    p->total = total;
    return 0;
}

int frame_pieces_step(frame_pieces *p, int fd, char *err, size_t errlen)
{
    if (p->cur == p->n)
        return FRAME_READY;
    if (p->head_len < sizeof p->head) {
        ssize_t n = read(fd, p->head + p->head_len, sizeof p->head - p->head_len);
        if (n < 0)
            return io_error(err, errlen);
        if (n == 0)
            return read_error(err, errlen, "truncated frame: end of stream before a raw frame");
        p->head_len += (size_t)n;
        if (p->head_len < sizeof p->head)
            return FRAME_MORE;
        uint32_t len = ((uint32_t)p->head[0] << 24) | ((uint32_t)p->head[1] << 16) |
                       ((uint32_t)p->head[2] << 8) | (uint32_t)p->head[3];
        if ((size_t)len != p->total) {
            snprintf(err, errlen, "garbled frame: %lu bytes of pieces, %zu announced",
                     (unsigned long)len, p->total);
            return FRAME_ERROR;
        }
        return FRAME_MORE;
    }
    size_t want = p->lens[p->cur] + 1; /* the piece and its NUL */
    if (!p->data[p->cur]) {
        p->data[p->cur] = malloc(want);
        if (!p->data[p->cur])
            return read_error(err, errlen, "out of memory for a frame");
        p->have = 0;
    }
    ssize_t n = read(fd, p->data[p->cur] + p->have, want - p->have);
    if (n < 0)
        return io_error(err, errlen);
    if (n == 0) {
        snprintf(err, errlen, "truncated frame: end of stream in piece %zu of %zu", p->cur + 1, p->n);
        return FRAME_ERROR;
    }
    p->have += (size_t)n;
    if (p->have < want)
        return FRAME_MORE;
    if (p->data[p->cur][want - 1] != '\0') {
        snprintf(err, errlen, "garbled frame: piece %zu does not end where announced", p->cur + 1);
        return FRAME_ERROR;
    }
    p->cur++;
    p->have = 0;
    return p->cur == p->n ? FRAME_READY : FRAME_MORE;
}

void frame_pieces_free(frame_pieces *p)
{
    for (size_t i = 0; p->data && i < p->n; i++)
        free(p->data[i]);
    free(p->data);
    memset(p, 0, sizeof *p);
}

int frame_read(int fd, size_t max, json_t **out, char *err, size_t errlen)
{
    frame_reader r;
    frame_reader_init(&r, max);
    int rc;
    do
        rc = frame_reader_step(&r, fd, out, err, errlen);
    while (rc == FRAME_MORE);
    frame_reader_reset(&r);
    return rc;
}

/* Writes every byte of the iovecs; send() on sockets for MSG_NOSIGNAL, writev()
 * on anything else (tests use pipes). */
static int write_iov_full(int fd, struct iovec *iov, int iovcnt)
{
    int use_send = 1;
    while (iovcnt > 0) {
        ssize_t n;
        if (use_send) {
            struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
            n = sendmsg(fd, &msg, MSG_NOSIGNAL);
            if (n < 0 && errno == ENOTSOCK) {
                use_send = 0;
                continue;
            }
        } else {
            n = writev(fd, iov, iovcnt);
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        size_t done = (size_t)n;
        while (iovcnt > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + done;
            iov->iov_len -= done;
        }
    }
    return 0;
}

/* Gathered writes go out in groups of this many pieces (below IOV_MAX). */
#define FRAME_IOV_GROUP FRAME_IOV_GROUP_MAX

int frame_write_raw_from(int fd, size_t total, size_t max, frame_parts_fn next, void *ctx, char *err,
                         size_t errlen)
{
    if (total == 0 || total > max || total > UINT32_MAX) {
        snprintf(err, errlen, "raw frame of %zu bytes is empty or exceeds the limit of %zu", total, max);
        return -1;
    }
    unsigned char head[4] = {(unsigned char)(total >> 24), (unsigned char)(total >> 16),
                             (unsigned char)(total >> 8), (unsigned char)total};
    struct iovec group[FRAME_IOV_GROUP];
    group[0] = (struct iovec){head, sizeof head};
    size_t written = 0;
    for (size_t used = 1;; used = 0) {
        size_t got = 0;
        next(ctx, group + used, FRAME_IOV_GROUP - used, &got);
        for (size_t i = used; i < used + got; i++)
            written += group[i].iov_len;
        if (written > total) {
            snprintf(err, errlen, "raw frame longer than announced");
            return -1;
        }
        if (used + got > 0 && write_iov_full(fd, group, (int)(used + got)) != 0) {
            snprintf(err, errlen, "cannot write frame: %s", strerror(errno));
            return -1;
        }
        if (got == 0)
            break;
    }
    if (written != total) {
        snprintf(err, errlen, "raw frame shorter than announced");
        return -1;
    }
    return 0;
}

size_t frame_encoded_size(const json_t *obj)
{
    size_t n = json_dumpb(obj, NULL, 0, FRAME_JSON_DUMP_FLAGS);
    return n == 0 ? 0 : n + 4;
}

int frame_write(int fd, const json_t *obj, size_t max, char *err, size_t errlen)
{
    int rc = -1;
    char *text = json_dumps(obj, FRAME_JSON_DUMP_FLAGS);
    if (!text) {
        snprintf(err, errlen, "cannot encode frame (out of memory or invalid value)");
        goto fail;
    }
    size_t len = strlen(text); /* NUL in strings is escaped as \u0000 */
    if (len == 0 || len > max || len > UINT32_MAX) {
        snprintf(err, errlen, "frame of %zu bytes exceeds the limit of %zu", len, max);
        goto fail;
    }
    unsigned char head[4] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16),
                             (unsigned char)(len >> 8), (unsigned char)len};
    struct iovec iov[2] = {{head, sizeof head}, {text, len}};
    if (write_iov_full(fd, iov, 2) != 0) {
        snprintf(err, errlen, "cannot write frame: %s", strerror(errno));
        goto fail;
    }
    rc = 0;
fail:
    free(text);
    return rc;
}

json_t *frame_string(const char *s, size_t len)
{
    json_t *str = json_stringn(s, len);
    if (str)
        return str;
    /* Invalid UTF-8: rebuild with U+FFFD for each bad byte. */
    size_t clean_len;
    char *clean = utf8_sanitize(s, len, &clean_len);
    if (!clean)
        return NULL;
    str = json_stringn(clean, clean_len);
    free(clean);
    return str;
}
