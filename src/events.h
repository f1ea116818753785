/* events — the library's event callback (rlm_set_event_callback): each event
 * of the trace (trace.h), recorded or only notified, seen through the public
 * struct rlm_event. The struct is a view on the trace's JSON object: the two
 * never hold different facts, and nothing is built twice. A sub-call's
 * event, recorded late (trace_event_later), is filled from what it was
 * gathered from, its JSON written only when asked (rlm_event_json).
 *
 * Ownership: every string of an rlm_event is borrowed from the event it was
 * filled from, valid while that event lives (the listener's call). */
#ifndef RLM_EVENTS_H
#define RLM_EVENTS_H

#include <jansson.h>

#include "rlm.h"
#include "trace.h"

/* The user's callback; the trace's listener context. */
typedef struct events {
    rlm_event_fn fn;
    void *userdata;
} events;

/* Fills *out from a trace event of the given type (pure). */
void events_fill(rlm_event *out, const char *type, json_t *event);

/* A trace_listener_fn: fills an rlm_event and calls ctx's callback. */
void events_listener(void *ctx, const char *type, json_t *event, const trace_late *late);

#endif
