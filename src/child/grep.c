/* grep — PCRE2 (JIT when available) over mapped documents. Line numbers and
 * character offsets are counted incrementally between hits, so a whole pass
 * costs one scan of the bytes whatever the number of hits. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "grep.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    DEFAULT_MATCH_LIMIT = 10000000,
    DEFAULT_DEPTH_LIMIT = 10000,
    JIT_STACK_MIN = 32 * 1024,
    JIT_STACK_MAX = 4 * 1024 * 1024,
};

struct grep {
    pcre2_code *code;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
    int jit;
};

static int parse_flags(const char *flags, uint32_t *options, char *err, size_t errlen)
{
    /* Unicode properties for \w, \d, \b are opt-in ('u'): with them PCRE2's
     * JIT ran 10-25 times slower on our benchmark, losing to Python's re. */
    *options = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
    for (const char *f = flags ? flags : ""; *f; f++) {
        switch (*f) {
        case 'i': *options |= PCRE2_CASELESS; break;
        case 'm': *options |= PCRE2_MULTILINE; break;
        case 's': *options |= PCRE2_DOTALL; break;
        case 'x': *options |= PCRE2_EXTENDED; break;
        case 'u': *options |= PCRE2_UCP; break;
        default:
            snprintf(err, errlen, "unknown regex flag '%c' (use i, m, s, x, u)", *f);
            return -1;
        }
    }
    return 0;
}

int grep_compile(const char *pattern, size_t len, const char *flags, const grep_limits *limits,
                 grep **out, char *err, size_t errlen)
{
    *out = NULL;
    uint32_t options;
    if (parse_flags(flags, &options, err, errlen) != 0)
        return -1;
    grep *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int code;
    PCRE2_SIZE at;
    g->code = pcre2_compile((PCRE2_SPTR)pattern, len, options, &code, &at, NULL);
    if (!g->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        snprintf(err, errlen, "bad regex at offset %zu: %.160s", (size_t)at, (const char *)msg);
        goto fail;
    }
    g->mctx = pcre2_match_context_create(NULL);
    if (!g->mctx) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    uint32_t match_limit = limits && limits->match_limit ? limits->match_limit : DEFAULT_MATCH_LIMIT;
    uint32_t depth_limit = limits && limits->depth_limit ? limits->depth_limit : DEFAULT_DEPTH_LIMIT;
    pcre2_set_match_limit(g->mctx, match_limit);
    pcre2_set_depth_limit(g->mctx, depth_limit);
    /* JIT is an optimisation: a platform without it still matches. */
    if (pcre2_jit_compile(g->code, PCRE2_JIT_COMPLETE) == 0) {
        g->jit_stack = pcre2_jit_stack_create(JIT_STACK_MIN, JIT_STACK_MAX, NULL);
        if (g->jit_stack) {
            pcre2_jit_stack_assign(g->mctx, NULL, g->jit_stack);
            g->jit = 1;
        }
    }
    *out = g;
    return 0;
fail:
    grep_free(g);
    return -1;
}

void grep_free(grep *g)
{
    if (!g)
        return;
    pcre2_jit_stack_free(g->jit_stack);
    pcre2_match_context_free(g->mctx);
    pcre2_code_free(g->code);
    free(g);
}

/* Where a pass over one document stands: line and character counts are
 * carried forward from the previous hit. */
typedef struct cursor {
    size_t pos, line_no, chars, line_start;
    int ascii;   /* the document is all ASCII: characters are bytes */
} cursor;

/* The walk between hits counts newlines and characters (bytes that are not
 * UTF-8 continuation bytes, 10xxxxxx) with the compiler's portable vectors:
 * a comparison gives all ones (255) in each matching byte lane, and
 * subtracting that modulo 256 adds one to the lane's counter; counters are
 * summed every 255 vectors, before any can wrap. It covers every byte before
 * the last hit, so it must cost well under PCRE2's own scan. Sixteen bytes
 * at a time is SSE2 on x86-64 and NEON on arm64; on x86-64 CPUs with AVX2
 * a second copy takes 32 (wider vectors without AVX enabled compile to slow
 * piecewise code, hence a separate function chosen at run time). Counting
 * 400 MB in 4 KB gaps just scanned by PCRE2 (so in cache) took ~10 ms with
 * 16 bytes and ~3 ms with 32; 8-byte words took far longer. */
typedef struct tally {
    size_t lines, continuations;
} tally;

typedef unsigned char bytes16 __attribute__((vector_size(16)));

static size_t lanes_sum16(bytes16 counts)
{
    size_t sum = 0;
    for (int k = 0; k < 16; k++)
        sum += counts[k];
    return sum;
}

/* Tallies p[0..n) in whole vectors; returns the bytes covered (n rounded
 * down to a multiple of 16). Continuations are counted unless ascii. */
static size_t tally16(const unsigned char *p, size_t n, int ascii, tally *t)
{
    const bytes16 newline = (bytes16){0} + '\n';
    const bytes16 top2 = (bytes16){0} + 0xC0;
    const bytes16 continuation = (bytes16){0} + 0x80;
    size_t i = 0;
    while (i + 16 <= n) {
        bytes16 nl_count = {0}, cont_count = {0};
        size_t vectors = (n - i) / 16;
        if (vectors > 255)
            vectors = 255;
        if (ascii) {
            for (size_t k = 0; k < vectors; k++, i += 16) {
                bytes16 v;
                memcpy(&v, p + i, 16);
                nl_count -= (bytes16)(v == newline);
            }
        } else {
            for (size_t k = 0; k < vectors; k++, i += 16) {
                bytes16 v;
                memcpy(&v, p + i, 16);
                nl_count -= (bytes16)(v == newline);
                cont_count -= (bytes16)((v & top2) == continuation);
            }
        }
        t->lines += lanes_sum16(nl_count);
        t->continuations += ascii ? 0 : lanes_sum16(cont_count);
    }
    return i;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GREP_HAVE_AVX2 1
typedef unsigned char bytes32 __attribute__((vector_size(32)));

__attribute__((target("avx2"))) static size_t lanes_sum32(bytes32 counts)
{
    size_t sum = 0;
    for (int k = 0; k < 32; k++)
        sum += counts[k];
    return sum;
}

/* tally16 with 32-byte vectors; call only where AVX2 is available. */
__attribute__((target("avx2"))) static size_t tally32(const unsigned char *p, size_t n, int ascii,
                                                      tally *t)
{
    const bytes32 newline = (bytes32){0} + '\n';
    const bytes32 top2 = (bytes32){0} + 0xC0;
    const bytes32 continuation = (bytes32){0} + 0x80;
    size_t i = 0;
    while (i + 32 <= n) {
        bytes32 nl_count = {0}, cont_count = {0};
        size_t vectors = (n - i) / 32;
        if (vectors > 255)
            vectors = 255;
        if (ascii) {
            for (size_t k = 0; k < vectors; k++, i += 32) {
                bytes32 v;
                memcpy(&v, p + i, 32);
                nl_count -= (bytes32)(v == newline);
            }
        } else {
            for (size_t k = 0; k < vectors; k++, i += 32) {
                bytes32 v;
                memcpy(&v, p + i, 32);
                nl_count -= (bytes32)(v == newline);
                cont_count -= (bytes32)((v & top2) == continuation);
            }
        }
        t->lines += lanes_sum32(nl_count);
        t->continuations += ascii ? 0 : lanes_sum32(cont_count);
    }
    return i;
}
#endif

static void cursor_advance(cursor *c, const char *d, size_t to)
{
    const unsigned char *p = (const unsigned char *)d + c->pos;
    size_t n = to - c->pos, i;
    tally t = {0};
#ifdef GREP_HAVE_AVX2
    if (__builtin_cpu_supports("avx2"))
        i = tally32(p, n, c->ascii, &t);
    else
#endif
        i = tally16(p, n, c->ascii, &t);
    for (; i < n; i++) {
        t.lines += p[i] == '\n';
        t.continuations += (p[i] & 0xC0) == 0x80;
    }
    c->chars += n - t.continuations;
    if (t.lines) {
        const char *last = memrchr(d + c->pos, '\n', n);
        c->line_start = (size_t)(last - d) + 1;
        c->line_no += t.lines;
    }
    c->pos = to;
}

static int match_error(int rc, char *err, size_t errlen)
{
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    snprintf(err, errlen, "regex failed: %s", (const char *)msg);
    return -1;
}

/* One pass over the documents: what grep_scan was asked, and the hits so far. */
typedef struct scan {
    const grep *g;
    pcre2_match_data *md;
    size_t max_hits, n_hits;
    int truncated;
    grep_hit_fn on_hit;
    void *ctx;
    char *err;
    size_t errlen;
} scan;

/* 0 at the end of the document or at max_hits, 1 when the callback stopped
 * the pass, -1 with err set when PCRE2 failed. */
static int scan_doc(scan *s, const ingest_doc *doc, size_t index)
{
    const grep *g = s->g;
    const char *d = doc->data ? doc->data : "";
    size_t len = doc->data ? doc->len : 0;
    /* ingest counted the characters: equal to the bytes means ASCII */
    cursor c = {.line_no = 1, .ascii = doc->chars == len};
    size_t start = 0;
    while (start <= len) {
        int rc = g->jit ? pcre2_jit_match(g->code, (PCRE2_SPTR)d, len, start, 0, s->md, g->mctx)
                        : pcre2_match(g->code, (PCRE2_SPTR)d, len, start, 0, s->md, g->mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
            return 0;
        if (rc < 0)
            return match_error(rc, s->err, s->errlen);
        if (s->n_hits >= s->max_hits) {
            s->truncated = 1;
            return 0;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
        size_t ms = ov[0], me = ov[1];
        if (me < ms)
            me = ms;   /* \K can put the end before the start */
        cursor_advance(&c, d, ms);
        const char *nl = memchr(d + ms, '\n', len - ms);
        size_t line_end = nl ? (size_t)(nl - d) : len;
        grep_hit h = {.doc = index, .name = doc->name, .line_no = c.line_no, .offset = ms,
                      .char_offset = c.chars, .match_len = me - ms, .line = d + c.line_start,
                      .line_len = line_end - c.line_start};
        s->n_hits++;
        if (s->on_hit(s->ctx, &h) != 0)
            return 1;
        if (me > ms) {
            start = me;
        } else {
            /* an empty match: step one character, as finditer does */
            start = ms + 1;
            while (start < len && ((unsigned char)d[start] & 0xC0) == 0x80)
                start++;
        }
    }
    return 0;
}

int grep_scan(const grep *g, const ingest_doc *docs, size_t n_docs, size_t only, size_t max_hits,
              grep_hit_fn on_hit, void *ctx, int *truncated, char *err, size_t errlen)
{
    if (truncated)
        *truncated = 0;
    if (only != SIZE_MAX && only >= n_docs) {
        snprintf(err, errlen, "no document %zu (there are %zu)", only, n_docs);
        return -1;
    }
    scan s = {.g = g, .max_hits = max_hits, .on_hit = on_hit, .ctx = ctx, .err = err,
              .errlen = errlen};
    s.md = pcre2_match_data_create_from_pattern(g->code, NULL);
    if (!s.md) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n_docs && !s.truncated; i++)
        if (only == SIZE_MAX || i == only)
            rc = scan_doc(&s, &docs[i], i);
    pcre2_match_data_free(s.md);
    if (truncated)
        *truncated = s.truncated;
    return rc;
}

/* grep_run's callback: appends the hit to the result's growing array. */
typedef struct collect {
    grep_result *out;
    size_t cap;
} collect;

static int collect_hit(void *ctx, const grep_hit *h)
{
    collect *c = ctx;
    grep_result *r = c->out;
    if (r->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        grep_hit *grown = realloc(r->hits, cap * sizeof *grown);
        if (!grown)
            return 1;
        r->hits = grown;
        c->cap = cap;
    }
    r->hits[r->n++] = *h;
    return 0;
}

int grep_run(const grep *g, const ingest_doc *docs, size_t n_docs, size_t only, size_t max_hits,
             grep_result *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    collect c = {.out = out};
    int rc = grep_scan(g, docs, n_docs, only, max_hits, collect_hit, &c, &out->truncated, err,
                       errlen);
    if (rc == 1) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return rc;
}

void grep_result_free(grep_result *r)
{
    if (!r)
        return;
    free(r->hits);
    memset(r, 0, sizeof *r);
}
