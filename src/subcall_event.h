/* subcall_event — the trace's "sub_call" event (docs/trace.md), one per
 * sub-call of a batch: gathered as copies on the engine's thread when the
 * batch is over, written out as its JSON line on the trace's sink thread
 * (trace_event_later), so a batch's answers go back to the sandbox without
 * waiting for thousands of events to be built.
 *
 * Ownership: subcall_event_emit takes the event and everything it points to
 * (malloc'd), and frees them once written, or at once when nothing listens. */
#ifndef RLM_SUBCALL_EVENT_H
#define RLM_SUBCALL_EVENT_H

#include <stddef.h>

#include "trace.h"

typedef struct subcall_event {
    char *node, *parent;                /* the call-tree node; parent NULL for the root */
    int turn;
    const char *kind;                   /* "llm_query" or "rlm_query" (a literal) */
    char *model;
    size_t index, batch;
    /* Excerpts, already cut (engine_excerpt_cut); NULL, or not valid UTF-8:
     * written as null. */
    char *prompt, *reply;
    size_t prompt_len, reply_len;
    const char *error;                  /* lm_error_name, or NULL when it succeeded */
    char *finish_reason;
    long http_status;
    double seconds;
    int attempts;
    long prompt_tokens, cached_tokens, cache_write_tokens, completion_tokens;
    double cost_usd, cost_no_cache_usd; /* < 0: unknown, written as null */
    int cached, deduplicated;
    int sent;                           /* 0: no request went out (sent_seconds null) */
    double sent_seconds;                /* since the batch started */
} subcall_event;

/* Records ev (taken) in t. Returns as trace_event does. */
int subcall_event_emit(trace *t, subcall_event *ev);

/* The sub-call a late event (a listener's trace_late) was gathered from;
 * NULL when late is some other event. */
const subcall_event *subcall_event_from(const trace_late *late);

#endif
