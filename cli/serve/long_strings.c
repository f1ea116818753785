/* long_strings — long JSON string values decoded apart from jansson (see
 * long_strings.h for why). The decoder copies runs of plain bytes at once
 * and validates the UTF-8 of the whole result in one pass at the end: an
 * escape's output is always a complete sequence, so the result is valid
 * exactly when the raw bytes were. */
#include "long_strings.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "utf8.h"
#include "util.h"

#define PLACEHOLDER_PREFIX "rlm-long-string-"
#define NONCE_BYTES 16

typedef struct long_string {
    char *text;     /* decoded, NUL-terminated; NULL once taken */
    size_t len;
} long_string;

struct long_strings {
    char nonce[2 * NONCE_BYTES + 1];
    long_string *items;
    size_t n, cap;
};

size_t long_strings_token_end(const char *body, size_t len, size_t start)
{
    /* memchr finds the next quote many bytes at a time; it closes the
     * token unless an odd run of backslashes escapes it. */
    size_t i = start + 1;
    while (i < len) {
        const char *q = memchr(body + i, '"', len - i);
        if (!q)
            return len;
        size_t at = (size_t)(q - body), slashes = 0;
        while (at - slashes > start + 1 && body[at - slashes - 1] == '\\')
            slashes++;
        if (slashes % 2 == 0)
            return at;
        i = at + 1;
    }
    return len;
}

/* 1 when none of the 8 bytes of w is a control character (< 0x20) or a
 * backslash: a run the decoder copies as it is. */
static int word_plain(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t low = (w - ones * 0x20) & ~w & highs;   /* bytes < 0x20 (bytes >= 0x80 excluded) */
    uint64_t x = w ^ (ones * '\\');
    uint64_t slash = (x - ones) & ~x & highs;         /* bytes == '\\' (may flag a byte after one) */
    return (low | slash) == 0;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 16u;
        if (d == 16)
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes the inside of a string token, s[0..n), into out (room for n
 * bytes: decoding never grows). Returns the decoded length, or SIZE_MAX
 * when jansson would refuse the string. */
static size_t decode(const char *s, size_t n, char *out)
{
    size_t i = 0, o = 0;
    while (i < n) {
        size_t run = i;
        while (run + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + run, 8);
            if (!word_plain(w))
                break;
            run += 8;
        }
        while (run < n && (unsigned char)s[run] >= 0x20 && s[run] != '\\')
            run++;
        memcpy(out + o, s + i, run - i);
        o += run - i;
        i = run;
        if (i == n)
            break;
        if (s[i] != '\\' || i + 1 == n)
            return SIZE_MAX;   /* a control character, or a cut escape */
        char c = s[i + 1];
        i += 2;
        switch (c) {
        case '"': out[o++] = '"'; break;
        case '\\': out[o++] = '\\'; break;
        case '/': out[o++] = '/'; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u': {
            unsigned cp, low;
            if (i + 4 > n || hex4(s + i, &cp) != 0 || cp == 0)
                return SIZE_MAX;   /* \u0000 is refused without JSON_ALLOW_NUL */
            i += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return SIZE_MAX;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (i + 6 > n || s[i] != '\\' || s[i + 1] != 'u' || hex4(s + i + 2, &low) != 0 ||
                    low < 0xDC00 || low > 0xDFFF)
                    return SIZE_MAX;
                i += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            }
            o += put_utf8(out + o, cp);
            break;
        }
        default:
            return SIZE_MAX;
        }
    }
    return o;
}

static int add_item(long_strings *ls, char *text, size_t len)
{
    if (ls->n == ls->cap) {
        size_t cap = ls->cap ? 2 * ls->cap : 4;
        long_string *items = realloc(ls->items, cap * sizeof *items);
        if (!items)
            return -1;
        ls->items = items;
        ls->cap = cap;
    }
    ls->items[ls->n++] = (long_string){.text = text, .len = len};
    return 0;
}

int long_strings_split(const char *body, size_t len, size_t min_bytes, char **skeleton,
                       size_t *skeleton_len, long_strings **out)
{
    *skeleton = NULL;
    *skeleton_len = 0;
    *out = NULL;
    long_strings *ls = calloc(1, sizeof *ls);
    buf sk;
    /* The skeleton is never longer than the body plus a placeholder per
     * long string (each replaces at least min_bytes). */
    buf_init(&sk, len + 80 + len / (min_bytes ? min_bytes : 1) * 80);
    if (!ls)
        return -1;
    int rc = 0;
    unsigned char nonce[NONCE_BYTES];
    if (getrandom(nonce, sizeof nonce, 0) != (ssize_t)sizeof nonce)
        goto done;   /* no placeholder nobody can forge: parse as it is */
    for (size_t i = 0; i < NONCE_BYTES; i++)
        snprintf(ls->nonce + 2 * i, 3, "%02x", nonce[i]);
    size_t copied = 0;
    for (size_t i = 0; i < len; i++) {
        if (body[i] != '"')
            continue;
        size_t end = long_strings_token_end(body, len, i);
        if (end == len)
            goto done;   /* no closing quote: jansson's to report */
        size_t inner = end - i - 1;
        if (inner + 2 >= min_bytes) {
            char *text = malloc(inner + 1);
            size_t n = text ? decode(body + i + 1, inner, text) : 0;
            if (!text) {
                rc = -1;
                goto done;
            }
            if (n == SIZE_MAX || !utf8_valid(text, n)) {
                free(text);
                goto done;
            }
            text[n] = '\0';
            char *small = realloc(text, n + 1);
            if (add_item(ls, small ? small : text, n) != 0) {
                free(small ? small : text);
                rc = -1;
                goto done;
            }
            if (buf_append(&sk, body + copied, i - copied) != 0 ||
                buf_printf(&sk, "\"" PLACEHOLDER_PREFIX "%s-%zu\"", ls->nonce, ls->n - 1) != 0) {
                rc = -1;
                goto done;
            }
            copied = end + 1;
        }
        i = end;
    }
    if (ls->n == 0)
        goto done;
    if (buf_append(&sk, body + copied, len - copied) != 0 || buf_puts(&sk, "") != 0) {
        rc = -1;
        goto done;
    }
    *skeleton_len = sk.len;
    *skeleton = buf_take(&sk);
    *out = ls;
    return 1;
done:
    buf_free(&sk);
    long_strings_free(ls);
    return rc;
}

long long long_strings_find(const long_strings *ls, const char *s, size_t len)
{
    size_t prefix = sizeof PLACEHOLDER_PREFIX - 1;
    if (!ls || len < prefix + 2 * NONCE_BYTES + 2 || memcmp(s, PLACEHOLDER_PREFIX, prefix) != 0 ||
        memcmp(s + prefix, ls->nonce, 2 * NONCE_BYTES) != 0 || s[prefix + 2 * NONCE_BYTES] != '-')
        return -1;
    size_t index = 0;
    for (size_t i = prefix + 2 * NONCE_BYTES + 1; i < len; i++) {
        if (s[i] < '0' || s[i] > '9' || index > ls->n)
            return -1;
        index = index * 10 + (size_t)(s[i] - '0');
    }
    return index < ls->n ? (long long)index : -1;
}

const char *long_strings_text(const long_strings *ls, size_t i, size_t *len)
{
    *len = ls->items[i].len;
    return ls->items[i].text;
}

char *long_strings_take(long_strings *ls, size_t i, size_t *len)
{
    char *text = ls->items[i].text;
    *len = ls->items[i].len;
    ls->items[i].text = NULL;
    return text;
}

void long_strings_free(long_strings *ls)
{
    if (!ls)
        return;
    for (size_t i = 0; i < ls->n; i++)
        free(ls->items[i].text);
    free(ls->items);
    free(ls);
}
