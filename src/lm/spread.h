/* spread — which of an endpoint's base URLs a request goes to, and which
 * are healthy. Requests go to the live URL with the fewest requests
 * outstanding (ties in turn), so a slow server gets fewer and a fast one
 * more. A URL that fails — at once when nobody answers there, after a few
 * failures in a row for timeouts and 5xx — is drained: no new request goes
 * there while another URL is live, and the dispatcher probes it (GET
 * /models) after a backoff that doubles up to a limit; the first answer,
 * to a probe or to a request still in flight, brings it back.
 *
 * Pure: no clock, lock or socket of its own. The dispatcher (lm.c) holds
 * its lock around every call and does the probing.
 *
 * Ownership: spread_init allocates the per-URL table, spread_free releases
 * it; nothing else is allocated. */
#ifndef RLM_SPREAD_H
#define RLM_SPREAD_H

#include <stddef.h>

/* Timeouts and 5xx in a row that drain a URL (a refused connection drains
 * at once), and the first and longest waits before a drained URL is
 * probed. */
#define SPREAD_FAILURES_TO_DRAIN 3
#define SPREAD_PROBE_FIRST 1.0
#define SPREAD_PROBE_MAX 30.0

/* What one attempt on a URL said about it. */
typedef enum spread_signal {
    SPREAD_ALIVE,        /* the server answered (any 2xx-4xx, a stream) */
    SPREAD_NEUTRAL,      /* says nothing (cancelled, never sent) */
    SPREAD_FAILED,       /* a timeout or a 5xx */
    SPREAD_UNREACHABLE,  /* nobody answered: connection refused or reset */
} spread_signal;

typedef struct spread_url {
    int outstanding;     /* attempts assigned and not yet ended */
    int failures;        /* SPREAD_FAILED in a row */
    int drained;
    int probing;         /* a probe is scheduled or on the wire */
    double backoff;      /* seconds before the next probe */
    long long requests;  /* attempts assigned so far */
} spread_url;

typedef struct spread {
    spread_url *urls;
    size_t n;
    size_t rotor;        /* where ties start, moved on each pick */
} spread;

/* 0, or -1 when out of memory. */
int spread_init(spread *s, size_t n);
void spread_free(spread *s);

/* The URL for the next attempt, counted as outstanding there: the live one
 * with the fewest outstanding, not `avoid` (the one that just failed; n or
 * more for none) when another is live. When every URL is drained, still
 * the one with the fewest outstanding: the request then fails with what
 * that server says, and an answer brings the URL back. */
size_t spread_pick(spread *s, size_t avoid);

/* An attempt on URL i ended with signal sig. Returns 1 when this drained
 * the URL: the caller then probes it in *probe_in seconds. */
int spread_end(spread *s, size_t i, spread_signal sig, double *probe_in);

/* A probe of drained URL i answered (alive 1) or not. Returns 1 when the
 * URL stays drained and is to be probed again in *probe_in seconds. */
int spread_probed(spread *s, size_t i, int alive, double *probe_in);

/* URLs not drained. */
size_t spread_live(const spread *s);

#endif
