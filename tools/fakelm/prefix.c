/* prefix — the fake server's prompt cache, which reports cached prompt
 * tokens for a repeated prefix the way the providers do. OpenAI-compatible
 * requests are cached automatically: every prefix of 1024 tokens or more, in
 * steps of 128 tokens, is remembered, and a later request that starts with
 * one reports it as prompt_tokens_details.cached_tokens. Anthropic requests
 * are cached only where asked: the prefix up to a block marked
 * cache_control is written (cache_creation_input_tokens) when it is long
 * enough, and a later request whose blocks, up to 20 before one of its own
 * breakpoints, end an already written prefix reads it
 * (cache_read_input_tokens). Tokens are the server's usual bytes / 4 of the
 * contents; roles and block boundaries are part of what must match (a
 * string content is one text block, as the APIs take it). */
#include "fakelm.h"

#include <stdlib.h>
#include <string.h>

/* Anthropic looks back this many blocks from a breakpoint for a written prefix. */
#define LOOKBACK_BLOCKS 20
/* Bytes per token, as prompt_tokens counts them. */
#define TOKEN_BYTES 4

int prompt_cache_init(prompt_cache *pc, size_t slots_log2)
{
    memset(pc, 0, sizeof *pc);
    pc->enabled = true;
    pc->min_tokens = 1024;
    pc->step_tokens = 128;
    pc->mask = ((size_t)1 << slots_log2) - 1;
    pc->slots = calloc(pc->mask + 1, sizeof *pc->slots);
    if (!pc->slots || pthread_mutex_init(&pc->lock, NULL) != 0) {
        free(pc->slots);
        pc->slots = NULL;
        return -1;
    }
    return 0;
}

void prompt_cache_free(prompt_cache *pc)
{
    if (!pc->slots)
        return;
    pthread_mutex_destroy(&pc->lock);
    free(pc->slots);
    pc->slots = NULL;
}

/* FNV-1a, 64 bits: the prefix hash grows byte by byte along the request. */
static uint64_t hash_bytes(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001B3ULL;
    }
    return h;
}

#define HASH_START 0xCBF29CE484222325ULL

/* Under the lock. 0 is the empty slot, so a hash of 0 is stored as 1. */
static bool cache_has(const prompt_cache *pc, uint64_t h)
{
    h = h ? h : 1;
    for (size_t i = (size_t)h & pc->mask;; i = (i + 1) & pc->mask) {
        if (pc->slots[i] == h)
            return true;
        if (pc->slots[i] == 0)
            return false;
    }
}

/* Under the lock. A full table is emptied, as a provider evicts entries. */
static void cache_put(prompt_cache *pc, uint64_t h)
{
    h = h ? h : 1;
    if (cache_has(pc, h))
        return;
    if (pc->count >= (pc->mask + 1) / 2) {
        memset(pc->slots, 0, (pc->mask + 1) * sizeof *pc->slots);
        pc->count = 0;
    }
    size_t i = (size_t)h & pc->mask;
    while (pc->slots[i])
        i = (i + 1) & pc->mask;
    pc->slots[i] = h;
    pc->count++;
}

/* The end of one block of the request: content bytes up to it and the hash
 * of everything up to it. */
typedef struct boundary {
    size_t bytes;
    uint64_t hash;
    bool breakpoint;
} boundary;

typedef struct walk {
    uint64_t hash;
    size_t bytes;
    boundary *ends;
    size_t n, cap;
    bool anthropic;
    size_t min_bytes, step_bytes;
} walk;

static int walk_mark(walk *w, bool breakpoint)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        boundary *grown = realloc(w->ends, cap * sizeof *grown);
        if (!grown)
            return -1;
        w->ends = grown;
        w->cap = cap;
    }
    w->ends[w->n++] = (boundary){w->bytes, w->hash, breakpoint};
    return 0;
}

/* Adds text to the prefix. OpenAI's automatic cache has a boundary every
 * step past the minimum, inside the text too. */
static int walk_text(walk *w, const char *text, size_t len)
{
    if (w->anthropic) {
        w->hash = hash_bytes(w->hash, text, len);
        w->bytes += len;
        return 0;
    }
    while (len > 0) {
        size_t next = w->bytes < w->min_bytes ? w->min_bytes
                                              : (w->bytes / w->step_bytes + 1) * w->step_bytes;
        size_t take = next - w->bytes < len ? next - w->bytes : len;
        w->hash = hash_bytes(w->hash, text, take);
        w->bytes += take;
        text += take;
        len -= take;
        if (w->bytes == next && walk_mark(w, true) != 0)
            return -1;
    }
    return 0;
}

/* One content (a string or an array of blocks) after a tag naming where it
 * sits (role, or "system"). Each Anthropic block ends at a boundary. */
static int walk_content(walk *w, const char *tag, json_t *content)
{
    w->hash = hash_bytes(w->hash, tag, strlen(tag) + 1);
    if (json_is_string(content)) {
        /* A string is one text block, as the APIs read it. */
        w->hash = hash_bytes(w->hash, "\x1f", 1);
        if (walk_text(w, json_string_value(content), json_string_length(content)) != 0)
            return -1;
        return w->anthropic ? walk_mark(w, false) : 0;
    }
    size_t i;
    json_t *block;
    json_array_foreach(content, i, block) {
        json_t *text = json_object_get(block, "text");
        w->hash = hash_bytes(w->hash, "\x1f", 1);
        if (json_is_string(text) && walk_text(w, json_string_value(text), json_string_length(text)) != 0)
            return -1;
        if (w->anthropic && walk_mark(w, json_is_object(json_object_get(block, "cache_control"))) != 0)
            return -1;
    }
    return 0;
}

void prompt_cache_account(prompt_cache *pc, json_t *request, bool anthropic, usage *u)
{
    u->cached = u->cache_write = 0;
    if (!pc->slots || !pc->enabled)
        return;
    walk w = {.hash = HASH_START, .anthropic = anthropic, .min_bytes = pc->min_tokens * TOKEN_BYTES,
              .step_bytes = pc->step_tokens * TOKEN_BYTES};
    json_t *model = json_object_get(request, "model");
    w.hash = hash_bytes(w.hash, json_string_value(model) ? json_string_value(model) : "",
                        json_string_length(model) + 1);
    size_t i;
    json_t *m;
    int rc = 0;
    if (anthropic && json_object_get(request, "system"))
        rc = walk_content(&w, "system", json_object_get(request, "system"));
    json_array_foreach(json_object_get(request, "messages"), i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (rc == 0)
            rc = walk_content(&w, role ? role : "", json_object_get(m, "content"));
    }
    if (rc != 0) {
        free(w.ends);
        return;
    }
    size_t read = 0, written = 0;
    pthread_mutex_lock(&pc->lock);
    for (size_t k = 0; k < w.n; k++) {
        if (!w.ends[k].breakpoint)
            continue;
        /* A hit at a boundary within the lookback of this breakpoint
         * (OpenAI: at the boundary itself). */
        size_t lookback = anthropic ? LOOKBACK_BLOCKS : 1;
        for (size_t back = 0; back < lookback && back <= k; back++) {
            const boundary *b = &w.ends[k - back];
            if (b->bytes > read && b->bytes >= w.min_bytes && cache_has(pc, b->hash)) {
                read = b->bytes;
                break;
            }
        }
    }
    for (size_t k = 0; k < w.n; k++) {
        const boundary *b = &w.ends[k];
        if (!b->breakpoint || b->bytes < w.min_bytes)
            continue;
        if (b->bytes > written)
            written = b->bytes;
        cache_put(pc, b->hash);
    }
    pthread_mutex_unlock(&pc->lock);
    free(w.ends);
    u->cached = read / TOKEN_BYTES;
    /* Only Anthropic bills the writing; OpenAI's cache is free to fill. */
    if (anthropic && written > read)
        u->cache_write = (written - read + TOKEN_BYTES - 1) / TOKEN_BYTES;
    if (u->cached > u->prompt)
        u->cached = u->prompt;
    if (u->cache_write > u->prompt - u->cached)
        u->cache_write = u->prompt - u->cached;
}
