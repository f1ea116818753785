/* utf8 — one validator for every place rlm turns bytes into JSON text. */
#include "utf8.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

size_t utf8_sequence_length(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t n;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

char *utf8_sanitize(const char *s, size_t len, size_t *out_len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        size_t n = utf8_sequence_length(p + i, len - i);
        if (n == 0)
            break;
        i += n;
    }
    if (i == len) {
        if (out_len)
            *out_len = len;
        return str_dup_len(s, len);
    }
    /* Each bad byte grows to three; the bound is checked, not assumed. */
    if (len > (SIZE_MAX - 1) / 3)
        return NULL;
    buf out;
    buf_init(&out, len * 3 + 1);
    if (buf_append(&out, s, i) != 0)
        goto fail;
    while (i < len) {
        size_t n = utf8_sequence_length(p + i, len - i);
        int rc = n ? buf_append(&out, p + i, n) : buf_append(&out, "\xEF\xBF\xBD", 3);
        if (rc != 0)
            goto fail;
        i += n ? n : 1;
    }
    if (out_len)
        *out_len = out.len;
    return buf_take(&out);
fail:
    buf_free(&out);
    return NULL;
}

/* The code point of the valid n-byte sequence at p. */
static uint32_t code_point(const unsigned char *p, size_t n)
{
    static const unsigned char lead_mask[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
    uint32_t cp = p[0] & lead_mask[n];
    for (size_t i = 1; i < n; i++)
        cp = (cp << 6) | (p[i] & 0x3F);
    return cp;
}

static int acted_on_by_terminals(uint32_t cp)
{
    return (cp < 0x20 && cp != '\n' && cp != '\t') || (cp >= 0x7F && cp <= 0x9F) ||
           (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

char *utf8_escape_terminal(const char *s, size_t len, size_t *out_len)
{
    const unsigned char *p = (const unsigned char *)s;
    if (len > (SIZE_MAX - 1) / 6)
        return NULL;
    buf out;
    buf_init(&out, len * 6 + 1);
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0;) {
        size_t run = i;
        while (run < len && p[run] >= 0x20 && p[run] < 0x7F)
            run++;
        if (run > i) {
            rc = buf_append(&out, s + i, run - i);
            i = run;
            continue;
        }
        size_t n = utf8_sequence_length(p + i, len - i);
        uint32_t cp = n ? code_point(p + i, n) : 0;
        if (n == 0 || (n == 1 && acted_on_by_terminals(cp)))
            rc = buf_printf(&out, "\\x%02x", p[i]);
        else if (acted_on_by_terminals(cp))
            rc = buf_printf(&out, "\\u%04x", (unsigned)cp);
        else
            rc = buf_append(&out, s + i, n);
        i += n ? n : 1;
    }
    if (rc != 0) {
        buf_free(&out);
        return NULL;
    }
    if (out_len)
        *out_len = out.len;
    return buf_take(&out);
}

size_t utf8_complete_prefix(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    /* A sequence is at most 4 bytes: its lead is among the last 3. */
    for (size_t back = 1; back <= 3 && back <= len; back++) {
        unsigned char c = p[len - back];
        if ((c & 0xC0) == 0x80)
            continue;   /* a continuation byte: the lead is further back */
        size_t need = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 1;
        if (need <= back)
            return len;   /* complete (or ASCII, or an invalid lead): nothing held back */
        /* Cut short: hold it back if what is there could still become valid,
         * which utf8_sequence_length tells when given the missing bytes. */
        unsigned char probe[4] = {0};
        memcpy(probe, p + len - back, back);
        /* The smallest continuation each lead allows: E0 needs A0.., F0 90... */
        for (size_t k = back; k < need; k++)
            probe[k] = k == 1 && c == 0xE0 ? 0xA0 : k == 1 && c == 0xF0 ? 0x90 : 0x80;
        return utf8_sequence_length(probe, need) == need ? len - back : len;
    }
    return len;
}

size_t utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

/* ---- characters, cuts and display ----------------------------------- */

/* The end of the ASCII run of p[i..len) that starts at i, skipped eight
 * bytes at a time (most text is ASCII); it may stop early, before the word
 * that holds the first byte >= 0x80. */
static size_t ascii_run_end(const unsigned char *p, size_t i, size_t len)
{
    while (i + 8 <= len) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w & 0x8080808080808080ULL)
            break;
        i += 8;
    }
    return i;
}

int utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        i = ascii_run_end(p, i, len);
        if (i >= len)
            break;
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = utf8_sequence_length(p + i, len - i);
        if (n == 0)
            return 0;
        i += n;
    }
    return 1;
}

void utf8_count(const char *data, size_t len, size_t *chars, size_t *invalid)
{
    const unsigned char *p = (const unsigned char *)data;
    size_t i = 0, c = 0, bad = 0;
    while (i < len) {
        size_t run = ascii_run_end(p, i, len);
        c += run - i;
        i = run;
        if (i >= len)
            break;
        size_t n = utf8_sequence_length(p + i, len - i);
        if (n == 0) {
            bad++;
            n = 1;
        }
        i += n;
        c++;
    }
    *chars = c;
    *invalid = bad;
}

/* Bytes of a UTF-8 text that start a character: everything but continuation
 * bytes (10xxxxxx). */
static int is_char_start(unsigned char c)
{
    return (c & 0xC0) != 0x80;
}

/* Counting eight bytes at a time in a 64-bit word (the compiler does not
 * vectorise the byte loop at -O2): 3x faster, which keeps a 40 MB context,
 * and every run's inline input, cheap to describe. */
#define BYTES_01 0x0101010101010101ULL
#define BYTES_80 0x8080808080808080ULL

/* How many bytes of m (only 0x80 bits set) are set. */
static size_t bytes_set(uint64_t m)
{
    return (size_t)(((m >> 7) * BYTES_01) >> 56);
}

size_t utf8_count_chars_newlines(const char *data, size_t len, size_t *newlines)
{
    const unsigned char *p = (const unsigned char *)data;
    size_t chars = 0, lines = 0, i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        chars += 8 - bytes_set(w & ~(w << 1) & BYTES_80);   /* bit 7 set, bit 6 clear */
        uint64_t x = w ^ (BYTES_01 * '\n');                 /* newline bytes become 0 */
        lines += bytes_set(~(((x & ~BYTES_80) + ~BYTES_80) | x) & BYTES_80);
    }
    for (; i < len; i++) {
        chars += is_char_start(p[i]);
        lines += p[i] == '\n';
    }
    if (newlines)
        *newlines = lines;
    return chars;
}

size_t utf8_count_chars(const char *data, size_t len)
{
    return utf8_count_chars_newlines(data, len, NULL);
}

size_t utf8_head_end(const char *data, size_t len, size_t chars)
{
    const unsigned char *p = (const unsigned char *)data;
    size_t i = 0, seen = 0;
    while (i < len) {
        if (is_char_start(p[i])) {
            if (seen == chars)
                break;
            seen++;
        }
        i++;
    }
    return i;
}

size_t utf8_tail_start(const char *data, size_t len, size_t chars)
{
    const unsigned char *p = (const unsigned char *)data;
    size_t i = len, seen = 0;
    if (chars == 0)
        return len;
    while (i > 0) {
        i--;
        if (is_char_start(p[i]) && ++seen == chars)
            break;
    }
    return i;
}

int utf8_append_clean(buf *out, const char *data, size_t len)
{
    static const char replacement[] = "\xEF\xBF\xBD";
    const unsigned char *p = (const unsigned char *)data;
    size_t i = 0;
    while (i < len) {
        size_t run = i;
        while (run < len && p[run] >= 0x20 && p[run] < 0x7F)
            run++;
        if (run > i && buf_append(out, data + i, run - i) != 0)
            return -1;
        i = run;
        if (i >= len)
            break;
        size_t n = utf8_sequence_length(p + i, len - i);
        int ok = n > 1 || p[i] == '\n' || p[i] == '\t' || p[i] == '\r';
        if (n == 1 && p[i] == 0x7F)
            ok = 0;
        if (ok) {
            if (buf_append(out, data + i, n) != 0)
                return -1;
            i += n;
        } else {
            if (buf_append(out, replacement, 3) != 0)
                return -1;
            i++;
        }
    }
    return 0;
}

char *utf8_bound(const char *text, size_t len, size_t max_chars)
{
    size_t ignored;
    return utf8_bound_n(text, len, max_chars, &ignored);
}

char *utf8_bound_n(const char *text, size_t len, size_t max_chars, size_t *out_len)
{
    if (!text)
        len = 0;
    /* Never more characters than bytes: a short text needs no count. */
    size_t chars = len <= max_chars ? len : utf8_count_chars(text, len);
    *out_len = len;
    if (chars <= max_chars)
        return str_dup_len(len ? text : "", len);

    /* The marker is sized for the largest possible count (every character
     * cut), so the result stays within max_chars whatever is actually cut. */
    char marker[96];
    int marker_len = snprintf(marker, sizeof marker, "\n[... %zu characters cut ...]\n", chars);
    if (marker_len <= 0 || (size_t)marker_len >= sizeof marker)
        return NULL;
    if ((size_t)marker_len >= max_chars) { /* no room to say it: a plain head cut */
        *out_len = utf8_head_end(text, len, max_chars);
        return str_dup_len(text, *out_len);
    }

    size_t keep = max_chars - (size_t)marker_len;
    size_t head_chars = keep - keep / 2, tail_chars = keep / 2;
    size_t head = utf8_head_end(text, len, head_chars);
    size_t tail = utf8_tail_start(text, len, tail_chars);
    size_t cut = chars - head_chars - tail_chars;
    marker_len = snprintf(marker, sizeof marker, "\n[... %zu characters cut ...]\n", cut);

    buf out;
    buf_init(&out, head + (len - tail) + (size_t)marker_len);
    if (buf_append(&out, text, head) != 0 || buf_append(&out, marker, (size_t)marker_len) != 0 ||
        buf_append(&out, text + tail, len - tail) != 0) {
        buf_free(&out);
        return NULL;
    }
    *out_len = out.len;
    return buf_take(&out);
}
