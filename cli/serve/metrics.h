/* metrics — what `rlm serve` counts for GET /metrics, in Prometheus's text
 * format: runs in flight and queued, runs by status, HTTP replies by code,
 * refusals by reason, sub-calls, tokens and cost from each run's report, and
 * histograms of run and queue-wait seconds.
 *
 * Ownership: metrics_new's set is freed by metrics_free; metrics_text's
 * result is the caller's. Thread-safe: every function may be called from
 * any thread. */
#ifndef RLM_SERVE_METRICS_H
#define RLM_SERVE_METRICS_H

#include <stddef.h>

typedef struct metrics metrics;

metrics *metrics_new(void);
void metrics_free(metrics *m);

/* A reply went out with HTTP status code. */
void metrics_http(metrics *m, int code);
/* A request was refused before it ran: reason is "auth", "queue_full",
 * "queue_timeout", "draining", "body_too_large", "bad_request",
 * "conflict" (a static string). */
void metrics_refused(metrics *m, const char *reason);
/* Runs in flight and waiting for a slot, as the runner sees them. */
void metrics_gauges(metrics *m, int in_flight, int queued);
/* A run ended with status (rlm_status_name), after waited seconds in the
 * queue and seconds running; report is its rlm_report_json (may be NULL). */
void metrics_run(metrics *m, const char *status, double waited, double seconds, const char *report);
/* Connections open now (MHD's count). */
void metrics_connections(metrics *m, int delta);

/* The whole set as Prometheus text (version 0.0.4). */
char *metrics_text(metrics *m);

#endif
