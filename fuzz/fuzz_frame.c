/* fuzz_frame — libFuzzer harness for the frame reader, which reads what the
 * sandbox child sends (a hostile child controls every byte): the input after
 * a two-byte header is a byte stream fed through a non-blocking pipe in
 * chunks of 1 to 256 bytes, so lengths and bodies arrive split anywhere.
 * Bit i of the first byte (i < 7) reads frame i as a raw frame (the prompts
 * after a call frame) instead of JSON; the second byte picks the reader's
 * limit (small, to reach the oversized path). Every frame read is released;
 * the reader must end in READY, EOF or an error, never loop or over-read.
 * Bit 7 set reads a streamed batch instead (frame_pieces): the third byte
 * gives 1 to 8 pieces, the next ones their announced lengths (0-255), and
 * the stream is their raw frame; pieces that are complete are freed at once
 * every other step, as the host frees a prompt whose request is over. */
#include "frame.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

/* Steps until the reader wants more bytes than the pipe holds. Returns the
 * last result that was not FRAME_MORE, or FRAME_MORE. */
static int drain(frame_reader *r, int fd, unsigned mask, unsigned *frame, size_t budget)
{
    char err[256];
    for (size_t i = 0; i < budget; i++) {
        int rc;
        if ((mask >> (*frame % 7)) & 1) {
            char *data;
            size_t len;
            rc = frame_reader_step_raw(r, fd, &data, &len, err, sizeof err);
            if (rc == FRAME_READY && (!data || len == 0 || len > r->max))
                abort();
            free(data);
        } else {
            json_t *obj;
            rc = frame_reader_step(r, fd, &obj, err, sizeof err);
            if (rc == FRAME_READY && !json_is_object(obj))
                abort();
            json_decref(obj);
        }
        if (rc == FRAME_READY)
            (*frame)++;
        else if (rc != FRAME_MORE)
            return rc;
    }
    return FRAME_MORE;
}

/* Steps a pieces reader until it wants more bytes than the pipe holds (as
 * drain), freeing complete pieces on every other step. */
static int drain_pieces(frame_pieces *p, int fd, size_t budget, size_t *freed)
{
    char err[256];
    for (size_t i = 0; i < budget; i++) {
        size_t before = p->cur;
        int rc = frame_pieces_step(p, fd, err, sizeof err);
        if (p->cur < before || p->cur > p->n)
            abort();
        for (size_t k = *freed; k < p->cur; k++)
            if (!p->data[k] || p->data[k][p->lens[k]] != '\0')
                abort(); /* a complete piece ends in its NUL */
        if (i % 2)
            for (; *freed < p->cur; (*freed)++) {
                free(p->data[*freed]);
                p->data[*freed] = NULL;
            }
        if (rc == FRAME_READY && p->cur != p->n)
            abort();
        if (rc != FRAME_MORE)
            return rc;
    }
    return FRAME_MORE;
}

static int fuzz_pieces(const uint8_t *data, size_t size, size_t max, size_t chunk, int fds[2])
{
    if (size < 1)
        return 0;
    size_t n = 1 + data[0] % 8, lens[8];
    if (size < 1 + n)
        return 0;
    for (size_t i = 0; i < n; i++)
        lens[i] = data[1 + i];
    data += 1 + n;
    size -= 1 + n;
    frame_pieces p;
    char err[256];
    if (frame_pieces_init(&p, lens, n, max, err, sizeof err) != 0)
        return 0;
    size_t freed = 0;
    int rc = FRAME_MORE;
    for (size_t at = 0; at < size && rc == FRAME_MORE;) {
        size_t k = size - at < chunk ? size - at : chunk;
        if (write(fds[1], data + at, k) != (ssize_t)k)
            abort();
        at += k;
        rc = drain_pieces(&p, fds[0], 2 * k + 4, &freed);
    }
    close(fds[1]);
    if (rc == FRAME_MORE)
        rc = drain_pieces(&p, fds[0], 2 * size + 8, &freed);
    if (rc == FRAME_MORE)
        abort();
    frame_pieces_free(&p);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 60000) /* the whole stream fits in a pipe's buffer */
        return 0;
    unsigned mask = data[0];
    size_t max = (size_t)16 << (data[1] % 16); /* 16 bytes to 512 KiB */
    size_t chunk = 1 + data[1] % 256;
    data += 2;
    size -= 2;
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
        return 0;
    if (mask & 0x80) {
        fuzz_pieces(data, size, max, chunk, fds);
        close(fds[0]);
        return 0;
    }
    frame_reader r;
    frame_reader_init(&r, max);
    unsigned frame = 0;
    int rc = FRAME_MORE;
    for (size_t at = 0; at < size && rc == FRAME_MORE;) {
        size_t n = size - at < chunk ? size - at : chunk;
        if (write(fds[1], data + at, n) != (ssize_t)n)
            abort();
        at += n;
        /* Each productive step consumes a byte: n + 2 steps drain the chunk. */
        rc = drain(&r, fds[0], mask, &frame, n + 2);
    }
    close(fds[1]);
    if (rc == FRAME_MORE)
        rc = drain(&r, fds[0], mask, &frame, size + 4);
    if (rc == FRAME_MORE) /* the writer is gone: the reader must have ended */
        abort();
    frame_reader_reset(&r);
    close(fds[0]);
    return 0;
}
