/* util — small shared pieces: a bounded growable byte buffer, clocks, checked
 * number parsing. Every module may use these; they depend on nothing but libc.
 *
 * Ownership: a buf owns its bytes; buf_free releases them, buf_take hands them
 * to the caller (who frees with free()). */
#ifndef RLM_UTIL_H
#define RLM_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* A byte buffer that refuses to grow past `max` bytes. data is always
 * NUL-terminated (when non-NULL) so it can be used as a C string. */
typedef struct buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max;
} buf;

void buf_init(buf *b, size_t max);
/* 0 on success, -1 if growing would pass b->max or memory ran out. */
int buf_append(buf *b, const void *data, size_t len);
int buf_puts(buf *b, const char *s);
/* Room for extra more bytes (and the NUL) past b->len, for writing into
 * b->data directly: 0, or -1 as buf_append. */
int buf_reserve(buf *b, size_t extra);
int buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(buf *b, const char *fmt, va_list ap);
void buf_reset(buf *b);
/* Appends n with thousands separators ("1,234,567"): easier for a model to
 * read. 0, or -1 past the limit. */
int buf_put_count(buf *b, size_t n);
/* Returns the bytes (NUL-terminated, never NULL: "" when empty) and leaves b empty. */
char *buf_take(buf *b);
void buf_free(buf *b);

/* Seconds on the monotonic clock, and on the wall clock (Unix epoch). */
double clock_now(void);
double clock_wall(void);

/* Strict decimal parsing of a whole string: 0 on success, -1 on junk or overflow. */
int parse_long(const char *s, long *out);
int parse_double(const char *s, double *out);
/* Sizes with an optional K/M/G suffix (powers of 1024): "4G", "512M", "1000". */
int parse_size(const char *s, size_t *out);

/* malloc'd copy of s[0..len) with a NUL added; NULL only when out of memory. */
char *str_dup_len(const char *s, size_t len);

/* 1 when name is 1 to max characters, each of [A-Za-z0-9._-]: the names
 * rlm keeps in files and tables (sessions, a pool's named inputs). */
int str_name_valid(const char *name, size_t max);

/* Writes all of len bytes / reads exactly len bytes, retrying on EINTR.
 * 0 on success, -1 on error (errno set); read_full returns -1 with errno 0 on EOF. */
int write_full(int fd, const void *data, size_t len);

/* $XDG_<kind>_HOME/rlm/leaf (xdg_var names the variable), else
 * $HOME/<home_fallback>/rlm/leaf; leaf "" names the directory itself.
 * malloc'd; NULL when neither variable is set (or out of memory). */
char *user_file_path(const char *xdg_var, const char *home_fallback, const char *leaf);
int read_full(int fd, void *data, size_t len);

/* mkdir -p: creates dir and the directories above it (mode 0700) as needed.
 * 0 when dir is a directory afterwards, or -1 with errno set. */
int dir_make_all(const char *dir);

/* Reads the whole file at path into a malloc'd, NUL-terminated buffer of at
 * most max bytes; *len (may be NULL) gets its length. NULL with errno set when
 * it cannot be opened or read, or with errno EFBIG when it is larger than max. */
char *file_read(const char *path, size_t max, size_t *len);

#endif
