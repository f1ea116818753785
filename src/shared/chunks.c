/* chunks — boundaries of pieces of a document set, found by walking its
 * bytes once: offsets and lengths only, the text itself is never copied. */
#include "chunks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int is_char_start(unsigned char c)
{
    return (c & 0xC0) != 0x80;
}

/* The offset `n` characters after pos (or len), with the count reached. */
static size_t advance_chars(const char *d, size_t len, size_t pos, size_t n, size_t *got)
{
    size_t seen = 0;
    size_t i = pos;
    while (i < len) {
        if (is_char_start((unsigned char)d[i])) {
            if (seen == n)
                break;
            seen++;
        }
        i++;
    }
    *got = seen;
    return i;
}

/* The offset `n` characters before end (not before floor). */
static size_t back_chars(const char *d, size_t floor, size_t end, size_t n)
{
    size_t i = end, seen = 0;
    while (i > floor && seen < n) {
        i--;
        while (i > floor && !is_char_start((unsigned char)d[i]))
            i--;
        seen++;
    }
    return i;
}

static size_t count_chars(const char *d, size_t from, size_t to)
{
    size_t n = 0;
    for (size_t i = from; i < to; i++)
        n += is_char_start((unsigned char)d[i]);
    return n;
}

typedef struct splitter {
    chunk_list *out;
    size_t max_chunks;
    char *err;
    size_t errlen;
} splitter;

static int emit(splitter *sp, size_t doc, size_t off, size_t len, size_t chars)
{
    chunk_list *l = sp->out;
    if (l->n >= sp->max_chunks) {
        snprintf(sp->err, sp->errlen, "more than %zu chunks; use a larger max_chars", sp->max_chunks);
        return -1;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        chunk *grown = realloc(l->items, cap * sizeof *grown);
        if (!grown) {
            snprintf(sp->err, sp->errlen, "out of memory");
            return -1;
        }
        l->items = grown;
        l->cap = cap;
    }
    l->items[l->n++] = (chunk){.doc = doc, .off = off, .len = len, .chars = chars};
    return 0;
}

static int split_chars(splitter *sp, size_t doc, const char *d, size_t len, size_t max_chars,
                       size_t overlap)
{
    size_t pos = 0;
    while (pos < len) {
        size_t chars;
        size_t end = advance_chars(d, len, pos, max_chars, &chars);
        if (emit(sp, doc, pos, end - pos, chars) != 0)
            return -1;
        if (end >= len)
            break;
        size_t next = overlap ? back_chars(d, pos, end, overlap) : end;
        pos = next > pos ? next : end;
    }
    return 0;
}

static size_t line_end(const char *d, size_t len, size_t pos)
{
    const char *nl = memchr(d + pos, '\n', len - pos);
    return nl ? (size_t)(nl - d) + 1 : len;
}

static int split_lines(splitter *sp, size_t doc, const char *d, size_t len, size_t max_chars,
                       size_t overlap)
{
    size_t pos = 0;
    while (pos < len) {
        size_t end = pos, chars = 0;
        while (end < len) {
            size_t le = line_end(d, len, end);
            size_t lc = count_chars(d, end, le);
            if (chars + lc <= max_chars) {
                chars += lc;
                end = le;
                continue;
            }
            if (end == pos)   /* one line alone is too long: cut it by characters */
                end = advance_chars(d, len, pos, max_chars, &chars);
            break;
        }
        if (emit(sp, doc, pos, end - pos, chars) != 0)
            return -1;
        if (end >= len)
            break;
        size_t next = end;
        if (overlap) {
            size_t back = back_chars(d, pos, end, overlap);
            if (back > 0 && d[back - 1] != '\n')
                back = line_end(d, len, back);
            if (back > pos && back < end)
                next = back;
        }
        pos = next;
    }
    return 0;
}

int chunks_parse_by(const char *s, chunks_by *out)
{
    if (!strcmp(s, "lines"))
        *out = CHUNKS_BY_LINES;
    else if (!strcmp(s, "chars"))
        *out = CHUNKS_BY_CHARS;
    else if (!strcmp(s, "docs"))
        *out = CHUNKS_BY_DOCS;
    else
        return -1;
    return 0;
}

int chunks_split(const ingest_doc *docs, size_t n_docs, size_t max_chars, size_t overlap,
                 chunks_by by, size_t max_chunks, chunk_list *out, char *err, size_t errlen)
{
    if (max_chars == 0 || overlap >= max_chars) {
        snprintf(err, errlen, "chunks: need max_chars > 0 and overlap < max_chars");
        return -1;
    }
    splitter sp = {.out = out, .max_chunks = max_chunks, .err = err, .errlen = errlen};
    for (size_t i = 0; i < n_docs; i++) {
        const char *d = docs[i].data;
        size_t len = d ? docs[i].len : 0;
        int rc;
        if (by == CHUNKS_BY_DOCS) {
            size_t chars = count_chars(d, 0, len);
            if (chars <= max_chars)
                rc = emit(&sp, i, 0, len, chars);
            else
                rc = split_lines(&sp, i, d, len, max_chars, overlap);
        } else if (by == CHUNKS_BY_CHARS) {
            rc = split_chars(&sp, i, d, len, max_chars, overlap);
        } else {
            rc = split_lines(&sp, i, d, len, max_chars, overlap);
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

void chunk_list_free(chunk_list *list)
{
    if (!list)
        return;
    free(list->items);
    list->items = NULL;
    list->n = list->cap = 0;
}
