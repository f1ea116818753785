/* utf8 — one validator for every place rlm turns bytes into JSON text. */
#include "utf8.h"

#include <stdint.h>
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
