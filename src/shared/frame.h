/* frame — the sandbox wire format: a 4-byte big-endian length followed by that
 * many bytes of UTF-8 JSON (one object per frame). Shared by the host
 * (sandbox.c) and the child (rlm-sandbox); docs/internals/sandbox-protocol.md.
 *
 * Ownership: frame_write borrows the object; readers hand back a new json_t
 * reference the caller json_decref()s. A frame_reader owns its partial body
 * until frame_reader_reset. Every frame is bounded by a maximum given by the
 * caller: a longer length prefix is an error before any byte of it is read. */
#ifndef RLM_FRAME_H
#define RLM_FRAME_H

#include <jansson.h>
#include <stddef.h>

/* Largest frame either side accepts: room for a few large sub-call prompts or
 * a big final answer, small enough that a hostile length cannot hurt. */
#define FRAME_MAX ((size_t)64 * 1024 * 1024)

/* Results of frame_reader_step / frame_read. */
enum {
    FRAME_MORE = 0,  /* part of a frame arrived; call again when readable */
    FRAME_READY = 1, /* *out holds a complete frame */
    FRAME_EOF = 2,   /* the peer closed cleanly between frames */
    FRAME_ERROR = -1,   /* oversized, truncated, not JSON, not an object */
    FRAME_IO_ERROR = -2 /* read() failed, e.g. ECONNRESET from a peer that died */
};

/* Incremental reader for a poll() loop: each step does at most one read(). */
typedef struct frame_reader {
    unsigned char head[4];
    size_t head_len;
    char *body;
    size_t body_len;
    size_t body_have;
    size_t max;
} frame_reader;

void frame_reader_init(frame_reader *r, size_t max);
/* Drops any partial frame (frees the body). */
void frame_reader_reset(frame_reader *r);
/* Reads once from fd (which poll() reported readable, or a blocking fd).
 * Returns FRAME_READY with *out set, FRAME_MORE, FRAME_EOF, or FRAME_ERROR /
 * FRAME_IO_ERROR with a message in err. EINTR is FRAME_MORE so callers can look at signals. */
int frame_reader_step(frame_reader *r, int fd, json_t **out, char *err, size_t errlen);

/* Like frame_reader_step for a raw frame: the payload is bytes, not JSON.
 * On FRAME_READY *data (malloc'd, the caller frees it) and *len hold the
 * payload; a clean end of stream is FRAME_ERROR here (a raw frame is always
 * announced by the JSON frame before it). */
int frame_reader_step_raw(frame_reader *r, int fd, char **data, size_t *len, char *err,
                          size_t errlen);

/* Incremental reader of a raw frame made of announced pieces (a batch's
 * prompts: docs/internals/sandbox-protocol.md): each piece is lens[i] bytes
 * then a NUL, back to back, and the frame's length prefix must equal their
 * sum. Each piece is read into a malloc'd buffer of its own (data[i], its
 * NUL kept) as it comes, so the caller can use piece i while later ones are
 * still on the way, and free it (setting data[i] to NULL) when done. cur:
 * how many pieces are complete. */
typedef struct frame_pieces {
    const size_t *lens;  /* borrowed: the announced byte lengths */
    size_t n;
    size_t total;        /* the raw frame's length: each piece + 1 */
    unsigned char head[4];
    size_t head_len;
    size_t cur;          /* pieces complete */
    size_t have;         /* bytes of piece cur read so far */
    char **data;         /* n entries, owned; data[i] for i < cur unless the caller took it */
} frame_pieces;

/* 0, or -1 with err when the pieces cannot make one frame under max (or
 * there are none) or out of memory. */
int frame_pieces_init(frame_pieces *p, const size_t *lens, size_t n, size_t max, char *err,
                      size_t errlen);
/* Reads once from fd (as frame_reader_step): FRAME_MORE (cur may have
 * grown), FRAME_READY once every piece is in, FRAME_ERROR (a length prefix
 * that is not the announced total, a piece not followed by its NUL, the end
 * of the stream) or FRAME_IO_ERROR, with err set. */
int frame_pieces_step(frame_pieces *p, int fd, char *err, size_t errlen);
/* Frees every piece still held and the table. */
void frame_pieces_free(frame_pieces *p);

/* Blocking read of one whole frame (retries EINTR). Same results as a step,
 * never FRAME_MORE. */
int frame_read(int fd, size_t max, json_t **out, char *err, size_t errlen);

/* Parses one payload (without the length prefix): 0 with *out set, or -1 with
 * a message when it is not a UTF-8 JSON object. */
int frame_parse(const char *data, size_t len, json_t **out, char *err, size_t errlen);

/* Encodes obj as compact JSON and writes prefix + payload. Sockets are written
 * with MSG_NOSIGNAL so a dead peer is an error (EPIPE), not a SIGPIPE.
 * Returns 0, or -1 with err set (payload over max, encoding failed, I/O). */
int frame_write(int fd, const json_t *obj, size_t max, char *err, size_t errlen);

struct iovec;

/* Most parts frame_write_raw_from asks for at once. */
#define FRAME_IOV_GROUP_MAX 512

/* Fills up to cap parts of a raw frame (*n of them; 0 at the end); the parts
 * of the previous call have been written when it is called again. */
typedef void (*frame_parts_fn)(void *ctx, struct iovec *parts, size_t cap, size_t *n);

/* Writes one raw frame of `total` bytes (a batch's prompts:
 * docs/internals/sandbox-protocol.md): the length prefix, then the parts,
 * asked for a group at a time as the previous group is written, straight
 * from the caller's memory — a sender can encode a piece just before it goes
 * and drop it after. Returns 0, or -1 with err set: empty, over max, parts
 * that do not add up to total (the peer then sees a broken frame), I/O. */
int frame_write_raw_from(int fd, size_t total, size_t max, frame_parts_fn next, void *ctx, char *err,
                         size_t errlen);

/* Bytes frame_write would put on the wire for obj (prefix included), or 0 if
 * it cannot be encoded. Lets a sender refuse an oversized frame gracefully. */
size_t frame_encoded_size(const json_t *obj);

/* A JSON string from arbitrary bytes: valid UTF-8 is kept as is, every
 * invalid byte becomes U+FFFD. NULL only when out of memory. */
json_t *frame_string(const char *s, size_t len);

#endif
