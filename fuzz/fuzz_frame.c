/* fuzz_frame — libFuzzer harness for the frame reader, which reads what the
 * sandbox child sends (a hostile child controls every byte): the input after
 * a two-byte header is a byte stream fed through a non-blocking pipe in
 * chunks of 1 to 256 bytes, so lengths and bodies arrive split anywhere.
 * Bit i of the first byte reads frame i as a raw frame (the prompts after a
 * call frame) instead of JSON; the second byte picks the reader's limit
 * (small, to reach the oversized path). Every frame read is released; the
 * reader must end in READY, EOF or an error, never loop or over-read. */
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
        if ((mask >> (*frame % 8)) & 1) {
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
