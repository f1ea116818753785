/* dedupe — a table of sub-call keys and the replies they were settled with:
 * open addressing on the key's leading hex digits, entries never removed
 * (a released key is reused by its next claim), bounded in keys and bytes. */
#include "dedupe.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef enum { SLOT_FREE = 0, SLOT_PENDING, SLOT_ANSWERED } slot_state;

typedef struct entry {
    char key[CACHE_KEY_LEN];
    slot_state state;
    char *content;
    size_t content_len;
    char *reasoning;
    char *finish_reason;
} entry;

struct dedupe {
    entry *entries;     /* in claim order */
    size_t n, cap;
    size_t *index;      /* entry number + 1 per slot; 0 is empty */
    size_t mask;
    size_t bytes;       /* kept text */
};

int dedupe_shareable(const lm_response *r)
{
    return r->error == LM_OK && r->content && lm_content_len(r) > 0 &&
           !(r->finish_reason && strcmp(r->finish_reason, "length") == 0);
}

dedupe *dedupe_new(void)
{
    dedupe *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->mask = 1023;
    d->index = calloc(d->mask + 1, sizeof *d->index);
    if (!d->index) {
        free(d);
        return NULL;
    }
    return d;
}

/* The key is a SHA-256 in hex: its first 16 digits are already a good hash. */
static size_t key_hash(const char *key)
{
    size_t h = 0;
    for (int i = 0; i < 16 && key[i]; i++)
        h = (h << 4) | (size_t)(key[i] <= '9' ? key[i] - '0' : key[i] - 'a' + 10);
    return h;
}

/* The slot holding key, or the empty slot where it would go. */
static size_t slot_of(const dedupe *d, const char *key)
{
    size_t i = key_hash(key) & d->mask;
    while (d->index[i] && strcmp(d->entries[d->index[i] - 1].key, key) != 0)
        i = (i + 1) & d->mask;
    return i;
}

static entry *find(const dedupe *d, const char *key)
{
    size_t i = slot_of(d, key);
    return d->index[i] ? &d->entries[d->index[i] - 1] : NULL;
}

/* Doubles the index when half full. -1 out of memory. */
static int grow_index(dedupe *d)
{
    if ((d->n + 1) * 2 <= d->mask + 1)
        return 0;
    size_t old_mask = d->mask;
    size_t *old = d->index;
    d->mask = old_mask * 2 + 1;
    d->index = calloc(d->mask + 1, sizeof *d->index);
    if (!d->index) {
        d->index = old;
        d->mask = old_mask;
        return -1;
    }
    for (size_t i = 0; i <= old_mask; i++)
        if (old[i])
            d->index[slot_of(d, d->entries[old[i] - 1].key)] = old[i];
    free(old);
    return 0;
}

dedupe_state dedupe_claim(dedupe *d, const char key[CACHE_KEY_LEN])
{
    entry *e = find(d, key);
    if (e && e->state != SLOT_FREE)
        return e->state == SLOT_PENDING ? DEDUPE_PENDING : DEDUPE_ANSWERED;
    if (e) {
        e->state = SLOT_PENDING;
        return DEDUPE_LEAD;
    }
    if (d->n >= DEDUPE_MAX_KEYS || d->bytes >= DEDUPE_MAX_BYTES || grow_index(d) != 0)
        return DEDUPE_FULL;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 256;
        entry *grown = realloc(d->entries, cap * sizeof *grown);
        if (!grown)
            return DEDUPE_FULL;
        d->entries = grown;
        d->cap = cap;
    }
    e = &d->entries[d->n];
    memset(e, 0, sizeof *e);
    memcpy(e->key, key, CACHE_KEY_LEN);
    e->state = SLOT_PENDING;
    d->index[slot_of(d, key)] = ++d->n;
    return DEDUPE_LEAD;
}

dedupe_state dedupe_state_of(const dedupe *d, const char key[CACHE_KEY_LEN])
{
    const entry *e = find(d, key);
    if (!e || e->state == SLOT_FREE)
        return DEDUPE_LEAD;
    return e->state == SLOT_PENDING ? DEDUPE_PENDING : DEDUPE_ANSWERED;
}

/* Frees an entry's strings and frees the key; `counted`: their bytes were
 * added to the table's total. */
static void entry_release(dedupe *d, entry *e, int counted)
{
    if (counted)
        d->bytes -= e->content_len + (e->reasoning ? strlen(e->reasoning) : 0);
    free(e->content);
    free(e->reasoning);
    free(e->finish_reason);
    e->content = e->reasoning = e->finish_reason = NULL;
    e->content_len = 0;
    e->state = SLOT_FREE;
}

void dedupe_settle(dedupe *d, const char key[CACHE_KEY_LEN], const lm_response *r)
{
    entry *e = find(d, key);
    if (!e || e->state != SLOT_PENDING)
        return;
    size_t len = lm_content_len(r);
    if (dedupe_shareable(r)) {
        e->content = str_dup_len(r->content, len);
        e->content_len = len;
        e->reasoning = r->reasoning ? strdup(r->reasoning) : NULL;
        e->finish_reason = r->finish_reason ? strdup(r->finish_reason) : NULL;
        if (e->content && (!r->reasoning || e->reasoning) && (!r->finish_reason || e->finish_reason)) {
            e->state = SLOT_ANSWERED;
            d->bytes += len + (e->reasoning ? strlen(e->reasoning) : 0);
            return;
        }
    }
    entry_release(d, e, 0);
}

int dedupe_take(const dedupe *d, const char key[CACHE_KEY_LEN], lm_response *out)
{
    memset(out, 0, sizeof *out);
    out->prompt_tokens = out->completion_tokens = out->cached_tokens = out->cache_write_tokens = -1;
    const entry *e = find(d, key);
    if (!e || e->state != SLOT_ANSWERED)
        return -1;
    out->content = str_dup_len(e->content, e->content_len);
    out->content_len = e->content_len;
    out->reasoning = e->reasoning ? strdup(e->reasoning) : NULL;
    out->finish_reason = e->finish_reason ? strdup(e->finish_reason) : NULL;
    out->http_status = 200;
    if (!out->content || (e->reasoning && !out->reasoning) || (e->finish_reason && !out->finish_reason)) {
        lm_response_clear(out);
        out->prompt_tokens = out->completion_tokens = out->cached_tokens = out->cache_write_tokens = -1;
        return -1;
    }
    return 0;
}

void dedupe_forget(dedupe *d)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->entries[i].state == SLOT_ANSWERED)
            entry_release(d, &d->entries[i], 1);
}

void dedupe_free(dedupe *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++) {
        free(d->entries[i].content);
        free(d->entries[i].reasoning);
        free(d->entries[i].finish_reason);
    }
    free(d->entries);
    free(d->index);
    free(d);
}
