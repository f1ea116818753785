/* dedupe — the answers of a run's sub-calls by request key, so that an
 * identical sub-call (same model, messages and options: calls.h's key) is
 * sent once and its reply shared. A key is claimed by the first caller, which
 * sends the request and settles the key with the reply; a caller that finds
 * the key claimed but not settled waits for it (calls.c does the waiting);
 * one that finds it settled takes a copy. A failed reply is never kept: the
 * key is released, and the next caller claims it and sends the request again.
 *
 * Ownership: the table owns copies of the replies it keeps; dedupe_take
 * fills a response the caller then owns (lm_response_clear). Keys are
 * copied. Not thread-safe: the caller serialises every call (calls.c holds
 * its tree's lock).
 *
 * Bounds: at most DEDUPE_MAX_KEYS keys and DEDUPE_MAX_BYTES of kept text;
 * past either, new keys are not claimed (DEDUPE_FULL: send without sharing),
 * and the keys already held keep working. */
#ifndef RLM_DEDUPE_H
#define RLM_DEDUPE_H

#include <stddef.h>

#include "cache.h"
#include "lm_wire.h"

#define DEDUPE_MAX_KEYS ((size_t)1 << 20)
#define DEDUPE_MAX_BYTES ((size_t)256 << 20)

typedef struct dedupe dedupe;

typedef enum dedupe_state {
    DEDUPE_LEAD,      /* the key was free: the caller now holds it, must send the request
                         and then dedupe_settle it */
    DEDUPE_PENDING,   /* another caller holds it and has not settled it yet */
    DEDUPE_ANSWERED,  /* settled with a reply: dedupe_take copies it */
    DEDUPE_FULL,      /* not held and no room to hold it: send without sharing */
} dedupe_state;

/* 1 when r may answer an identical request: LM_OK with content, not cut
 * at the token limit (another call may be given room for a whole one). */
int dedupe_shareable(const lm_response *r);

/* An empty table; NULL when out of memory. */
dedupe *dedupe_new(void);

/* What key stands at; DEDUPE_LEAD also claims it for the caller. -1 out of
 * memory (treat as DEDUPE_FULL). */
dedupe_state dedupe_claim(dedupe *d, const char key[CACHE_KEY_LEN]);

/* What key stands at, claiming nothing: DEDUPE_PENDING, DEDUPE_ANSWERED, or
 * DEDUPE_LEAD when it is free (never claimed, or released after a failure). */
dedupe_state dedupe_state_of(const dedupe *d, const char key[CACHE_KEY_LEN]);

/* Settles a key the caller claimed: a usable reply (LM_OK with content, not
 * cut at the token limit) is kept; anything else releases the key. */
void dedupe_settle(dedupe *d, const char key[CACHE_KEY_LEN], const lm_response *r);

/* A copy of key's reply into out (zeroed first): content, reasoning and
 * finish reason; token counts -1 (nothing was billed for it); no attempts.
 * 0, or -1 when the key is not answered or out of memory. */
int dedupe_take(const dedupe *d, const char key[CACHE_KEY_LEN], lm_response *out);

/* Forgets every settled reply (a new, unrelated run). Keys still claimed
 * stay claimed. */
void dedupe_forget(dedupe *d);

void dedupe_free(dedupe *d);

#endif
