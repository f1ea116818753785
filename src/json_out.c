/* json_out — compact JSON straight into a buf (json_out.h). */
#include "json_out.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "utf8.h"

/* Design note. The trace's bulk is strings: the demo's 4,935 sub-call
 * events are 17 MB of prompt and reply excerpts, with a newline every few
 * bytes in the replies (a label per line). jansson's dump, which hands its
 * output on piece by piece and decodes every character, took ~90 ms of CPU
 * for them. Here the room for a piece of the string is made once (six bytes
 * out per byte in at most), then eight bytes are copied at a time while none
 * of them needs an escape, and the rest byte by byte through a table. */

/* What follows the backslash for each byte that needs one: 'u' for \u00XX. */
static const char escape_after[256] = {
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b', 't', 'n', 'u', 'f', 'r', 'u', 'u',
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
    ['"'] = '"', ['\\'] = '\\',
};

/* Input bytes escaped per round: the room for six times as many is made
 * at once. */
#define ESCAPE_ROUND 1024

/* 1 when a byte of the eight needs an escape: one below 0x20, a quote or a
 * backslash (the tests for a byte below n, and for a zero byte after an
 * XOR, are exact for "any of the eight"). */
static int word_needs_escape(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t quote = w ^ (ones * '"'), backslash = w ^ (ones * '\\');
    return (((w - ones * 0x20) & ~w & highs) | ((quote - ones) & ~quote & highs) |
            ((backslash - ones) & ~backslash & highs)) != 0;
}

/* The exact bytes s[0..n) takes escaped: for a buffer too near its limit
 * to make room for the worst case. */
static size_t escaped_len(const unsigned char *s, size_t n)
{
    size_t len = n;
    for (size_t i = 0; i < n; i++)
        len += escape_after[s[i]] == 'u' ? 5 : escape_after[s[i]] != 0;
    return len;
}

int json_out_string(buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *u = (const unsigned char *)s;
    if (buf_append(b, "\"", 1) != 0)
        return -1;
    for (size_t at = 0; at < n;) {
        size_t round = n - at < ESCAPE_ROUND ? n - at : ESCAPE_ROUND;
        if (buf_reserve(b, round * 6) != 0 && buf_reserve(b, escaped_len(u + at, round)) != 0)
            return -1;
        char *o = b->data + b->len;
        const unsigned char *p = u + at, *end = p + round;
        while (p < end) {
            while (end - p >= 8) {
                uint64_t w;
                memcpy(&w, p, 8);
                if (word_needs_escape(w))
                    break;
                memcpy(o, p, 8);
                p += 8;
                o += 8;
            }
            /* Byte by byte up to and with the next escape. */
            while (p < end) {
                unsigned char c = *p++;
                char e = escape_after[c];
                if (!e) {
                    *o++ = (char)c;
                    continue;
                }
                *o++ = '\\';
                if (e == 'u') {
                    memcpy(o, "u00", 3);
                    o[3] = hex[c >> 4];
                    o[4] = hex[c & 15];
                    o += 5;
                } else {
                    *o++ = e;
                }
                break;
            }
        }
        b->len = (size_t)(o - b->data);
        b->data[b->len] = '\0';
        at += round;
    }
    return buf_append(b, "\"", 1);
}

int json_out_text(buf *b, const char *s, size_t n)
{
    if (!s || !utf8_valid(s, n))
        return buf_append(b, "null", 4);
    return json_out_string(b, s, n);
}

/* Digits by hand: a printf per number (ten an event) cost as much as the
 * strings. */
int json_out_integer(buf *b, long long v)
{
    char text[24];
    size_t at = sizeof text;
    /* In unsigned arithmetic: the most negative value has no positive twin. */
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        text[--at] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        text[--at] = '-';
    return buf_append(b, text + at, sizeof text - at);
}

int json_out_real(buf *b, double v)
{
    if (!isfinite(v))   /* JSON has no NaN or infinity (jansson refuses to hold them) */
        return buf_append(b, "null", 4);
    char text[40];
    int n = snprintf(text, sizeof text, "%.17g", v);
    if (n <= 0 || (size_t)n >= sizeof text - 2)
        return -1;
    char *e = strchr(text, 'e');
    if (!e && !strchr(text, '.')) {
        memcpy(text + n, ".0", 3);
    } else if (e) {
        char *digits = e + 1 + (e[1] == '-'), *from = e + 1 + (e[1] == '-' || e[1] == '+');
        while (*from == '0' && from[1])
            from++;
        memmove(digits, from, strlen(from) + 1);
    }
    return buf_puts(b, text);
}

int json_out_bool(buf *b, int v)
{
    return v ? buf_append(b, "true", 4) : buf_append(b, "false", 5);
}

int json_out_key(buf *b, const char *key)
{
    size_t n = strlen(key);
    if (buf_reserve(b, n + 4) != 0)
        return -1;
    char *o = b->data + b->len;
    o[0] = ',';
    o[1] = '"';
    memcpy(o + 2, key, n);
    o[n + 2] = '"';
    o[n + 3] = ':';
    b->len += n + 4;
    b->data[b->len] = '\0';
    return 0;
}

/* Nesting deeper than jansson's parser takes is refused. */
#define JSON_OUT_MAX_DEPTH 2048

static int out_value(buf *b, json_t *j, int depth)
{
    if (depth > JSON_OUT_MAX_DEPTH)
        return -1;
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *v;
        int first = 1;
        if (buf_append(b, "{", 1) != 0)
            return -1;
        json_object_foreach(j, key, v) {
            if ((!first && buf_append(b, ",", 1) != 0) || json_out_string(b, key, strlen(key)) != 0 ||
                buf_append(b, ":", 1) != 0 || out_value(b, v, depth + 1) != 0)
                return -1;
            first = 0;
        }
        return buf_append(b, "}", 1);
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *v;
        if (buf_append(b, "[", 1) != 0)
            return -1;
        json_array_foreach(j, i, v) {
            if ((i > 0 && buf_append(b, ",", 1) != 0) || out_value(b, v, depth + 1) != 0)
                return -1;
        }
        return buf_append(b, "]", 1);
    }
    case JSON_STRING: return json_out_string(b, json_string_value(j), json_string_length(j));
    case JSON_INTEGER: return json_out_integer(b, json_integer_value(j));
    case JSON_REAL: return json_out_real(b, json_real_value(j));
    case JSON_TRUE: return buf_append(b, "true", 4);
    case JSON_FALSE: return buf_append(b, "false", 5);
    default: return buf_append(b, "null", 4);
    }
}

int json_out_value(buf *b, json_t *j)
{
    return out_value(b, j, 0);
}
